//! Facts about the running kernel that decide how conntrace loads: its layout from BTF,
//! tracefs (only for the syscall hooks), its tick rate, and whether we are privileged
//! enough.
pub mod btf;
pub mod privileges;
pub mod tracefs;

use std::time::Duration;

/// The kernel release (`uname -r`).
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// Finds the kernel's tick rate (`CONFIG_HZ`): TCP keeps some times in jiffies. From the
/// kernel's config where it can be read (`/boot/config-RELEASE`, `/proc/config.gz`);
/// else measured from `/proc/timer_list`, whose every read gives the jiffies and the
/// monotonic clock together, over the time conntrace takes to load (a second or so: exact
/// to a tick); else the most common value, 250, with a note in the log.
pub struct HzProbe {
    configured: Option<u32>,
    first: Option<TimerSample>,
}

/// One read of `/proc/timer_list`: the jiffies and the monotonic clock then.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TimerSample {
    now_ns: u64,
    jiffies: u64,
}

/// The least time between the two samples: ±1 jiffy must not be mistaken for another rate.
const MEASURE_AT_LEAST: Duration = Duration::from_millis(200);

impl HzProbe {
    pub fn start() -> HzProbe {
        let configured = configured_hz();
        HzProbe {
            configured,
            first: configured.is_none().then(timer_sample).flatten(),
        }
    }

    /// Nanoseconds per jiffy.
    pub fn ns_per_jiffy(self) -> u64 {
        1_000_000_000 / u64::from(self.hz().max(1))
    }

    fn hz(self) -> u32 {
        if let Some(hz) = self.configured {
            return hz;
        }
        let measured = self.first.and_then(|first| {
            let mut last = timer_sample()?;
            let elapsed = Duration::from_nanos(last.now_ns.saturating_sub(first.now_ns));
            if elapsed < MEASURE_AT_LEAST {
                std::thread::sleep(MEASURE_AT_LEAST - elapsed);
                last = timer_sample()?;
            }
            rate(first, last)
        });
        measured.unwrap_or_else(|| {
            tracing::debug!(
                "kernel tick rate unknown (no kernel config, no /proc/timer_list): assuming 250 Hz"
            );
            250
        })
    }
}

fn configured_hz() -> Option<u32> {
    if let Ok(text) = std::fs::read_to_string(format!("/boot/config-{}", release())) {
        return config_hz(&text);
    }
    let compressed = std::fs::File::open("/proc/config.gz").ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(compressed), &mut text).ok()?;
    config_hz(&text)
}

/// `CONFIG_HZ=250` in a kernel config.
fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

fn timer_sample() -> Option<TimerSample> {
    parse_timer_list(&std::fs::read_to_string("/proc/timer_list").ok()?)
}

/// `now at 8612495355141 nsecs` and the first `jiffies: 4295425785`.
fn parse_timer_list(text: &str) -> Option<TimerSample> {
    let now_ns = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("now at "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let jiffies = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("jiffies:"))?
        .trim()
        .parse()
        .ok()?;
    Some(TimerSample { now_ns, jiffies })
}

/// The tick rate between two samples, rounded to the nearest rate kernels are built with.
fn rate(first: TimerSample, last: TimerSample) -> Option<u32> {
    let seconds = last.now_ns.checked_sub(first.now_ns)? as f64 / 1e9;
    let ticks = last.jiffies.checked_sub(first.jiffies)? as f64;
    (seconds > 0.0).then_some(())?;
    nearest_hz(ticks / seconds)
}

fn nearest_hz(rate: f64) -> Option<u32> {
    [100u32, 250, 300, 1000]
        .into_iter()
        .min_by(|a, b| {
            (f64::from(*a) - rate)
                .abs()
                .total_cmp(&(f64::from(*b) - rate).abs())
        })
        .filter(|_| rate > 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hz_from_a_kernel_config() {
        assert_eq!(
            config_hz("# comment\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n"),
            Some(250)
        );
        assert_eq!(config_hz("CONFIG_HZ_1000=y\n"), None);
    }

    #[test]
    fn measures_the_rate_from_two_samples() {
        let text = "Timer List Version: v0.9\nHRTIMER_MAX_CLOCK_BASES: 8\nnow at 8612495355141 nsecs\n\ncpu: 0\n  jiffies: 4295425785\n";
        let first = parse_timer_list(text).unwrap();
        assert_eq!(
            first,
            TimerSample {
                now_ns: 8_612_495_355_141,
                jiffies: 4_295_425_785
            }
        );
        // 250 Hz over 0.2 s is 50 ticks; one tick either way still rounds to 250.
        for ticks in [49, 50, 51] {
            let last = TimerSample {
                now_ns: first.now_ns + 200_000_000,
                jiffies: first.jiffies + ticks,
            };
            assert_eq!(rate(first, last), Some(250), "{ticks} ticks");
        }
        // The real file, where this user may read it (root only on most kernels: a plain
        // `cargo test` as another user must pass too).
        let readable = std::fs::File::open("/proc/timer_list").is_ok();
        assert_eq!(timer_sample().is_some(), readable);
    }

    #[test]
    fn rounds_a_measured_rate_to_a_real_one() {
        assert_eq!(nearest_hz(247.0), Some(250));
        assert_eq!(nearest_hz(980.0), Some(1000));
        assert_eq!(nearest_hz(104.0), Some(100));
        assert_eq!(nearest_hz(0.0), None);
    }
}
