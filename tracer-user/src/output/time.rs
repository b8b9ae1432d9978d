//! Time formatting without a calendar crate: RFC 3339 in UTC with nanoseconds.

/// `2026-11-28T18:13:35.123456789Z` for nanoseconds since the Unix epoch.
pub fn rfc3339_nanos(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let nanos = unix_ns % 1_000_000_000;
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// [`rfc3339_nanos`] written into records without allocating: it runs for every record.
/// Records come in time order, many per second, so the date and time of day are formatted
/// once per second and only the nanoseconds per record.
#[derive(Debug, Default)]
pub struct Timestamps {
    /// The second [`Self::prefix`] was formatted for, plus one (0: none yet).
    second_plus_one: u64,
    /// `2026-11-28T18:13:35.`
    prefix: [u8; 20],
}

impl Timestamps {
    pub fn put(&mut self, out: &mut Vec<u8>, unix_ns: u64) {
        let secs = unix_ns / 1_000_000_000;
        if self.second_plus_one != secs.wrapping_add(1) {
            let Some(prefix) = date_and_time_prefix(secs) else {
                out.extend_from_slice(rfc3339_nanos(unix_ns).as_bytes());
                return;
            };
            self.prefix = prefix;
            self.second_plus_one = secs.wrapping_add(1);
        }
        let nanos = unix_ns % 1_000_000_000;
        out.extend_from_slice(&self.prefix);
        // Below 10, and below 10^8: the casts keep every bit.
        out.push(b'0' + (nanos / 100_000_000) as u8);
        super::digits::put_eight(out, (nanos % 100_000_000) as u32);
        out.push(b'Z');
    }
}

/// `2026-11-28T18:13:35.`, or `None` past year 9999.
fn date_and_time_prefix(secs: u64) -> Option<[u8; 20]> {
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    let Ok(y @ 0..=9999) = u64::try_from(y) else {
        return None;
    };
    let rem = secs % 86_400;
    let mut b = *b"0000-00-00T00:00:00.";
    for (range, value) in [
        (0..4, y),
        (5..7, u64::from(m)),
        (8..10, u64::from(d)),
        (11..13, rem / 3600),
        (14..16, rem / 60 % 60),
        (17..19, rem % 60),
    ] {
        let mut v = value;
        for slot in b[range].iter_mut().rev() {
            *slot = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    Some(b)
}

/// `18:13:35.123` (UTC), for the text view.
pub fn clock_millis(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000 % 86_400;
    let millis = unix_ns / 1_000_000 % 1000;
    format!(
        "{:02}:{:02}:{:02}.{millis:03}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A duration for people: `850µs`, `12.3ms`, `3.01s`, `2m05s`.
pub fn human_duration(ns: u64) -> String {
    match ns {
        0..1_000_000 => format!("{}µs", ns / 1000),
        1_000_000..10_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        10_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        1_000_000_000..60_000_000_000 => format!("{:.2}s", ns as f64 / 1e9),
        _ => format!("{}m{:02}s", ns / 60_000_000_000, ns / 1_000_000_000 % 60),
    }
}

/// Howard Hinnant's days-to-civil: the proleptic Gregorian date of a day number.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_the_epoch() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn formats_a_known_instant() {
        // date -u -d @1795889615 → Sat Nov 28 18:13:35 UTC 2026
        assert_eq!(
            rfc3339_nanos(1_795_889_615_123_456_789),
            "2026-11-28T18:13:35.123456789Z"
        );
        assert_eq!(clock_millis(1_795_889_615_123_456_789), "18:13:35.123");
    }

    #[test]
    fn handles_leap_days() {
        // 2024-02-29T00:00:00Z
        assert_eq!(
            rfc3339_nanos(1_709_164_800_000_000_000),
            "2024-02-29T00:00:00.000000000Z"
        );
        assert_eq!(
            rfc3339_nanos(1_709_251_200_000_000_000),
            "2024-03-01T00:00:00.000000000Z"
        );
    }

    #[test]
    fn written_without_allocating_as_formatted() {
        let mut stamps = Timestamps::default();
        for ns in [
            0,
            1_795_889_615_123_456_789,
            1_709_164_800_000_000_000,
            951_868_799_999_999_999,
            u64::MAX,
        ] {
            // Twice: formatted, then from the cached second (and again after a change).
            for _ in 0..2 {
                let mut out = Vec::new();
                stamps.put(&mut out, ns);
                assert_eq!(String::from_utf8(out).unwrap(), rfc3339_nanos(ns), "{ns}");
            }
        }
        // Within one second, and across the boundary to the next.
        for ns in [
            1_795_889_615_000_000_000,
            1_795_889_615_999_999_999,
            1_795_889_616_000_000_001,
            1_795_889_614_500_000_000,
        ] {
            let mut out = Vec::new();
            stamps.put(&mut out, ns);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339_nanos(ns), "{ns}");
        }
    }

    #[test]
    fn human_durations() {
        assert_eq!(human_duration(850_000), "850µs");
        assert_eq!(human_duration(1_234_567), "1.23ms");
        assert_eq!(human_duration(301_000_000), "301.0ms");
        assert_eq!(human_duration(3_010_000_000), "3.01s");
        assert_eq!(human_duration(125_000_000_000), "2m05s");
    }
}
