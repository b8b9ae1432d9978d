//! Clocks. The kernel stamps records with CLOCK_MONOTONIC (`bpf_ktime_get_ns`); records
//! carry wall-clock time. The offset between the two changes whenever the wall clock is
//! stepped (NTP, an operator's `date -s`), so it is read again for every batch of records.

/// Offset from CLOCK_MONOTONIC to wall-clock time, as of now.
pub fn monotonic_to_unix_ns() -> i128 {
    i128::from(read(libc::CLOCK_REALTIME)) - i128::from(read(libc::CLOCK_MONOTONIC))
}

/// CLOCK_MONOTONIC now, in nanoseconds: the kernel's timestamps compare with this.
pub fn monotonic_now_ns() -> u64 {
    u64::try_from(read(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// Wall-clock time now, nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn read(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid pointer to a local timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_turns_monotonic_time_into_now() {
        let wall = i128::from(monotonic_now_ns()) + monotonic_to_unix_ns();
        let now = i128::from(unix_now_ns());
        assert!((wall - now).abs() < 1_000_000_000, "{wall} vs {now}");
    }
}
