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

/// The kernel's tick rate (`CONFIG_HZ`): TCP keeps some times in jiffies. From the
/// kernel's config where the distribution installs it; else measured from
/// `/proc/timer_list`; else the most common value, 250, with a note in the log.
pub fn hz() -> u32 {
    let from_config = std::fs::read_to_string(format!("/boot/config-{}", release()))
        .ok()
        .and_then(|text| config_hz(&text));
    if let Some(hz) = from_config {
        return hz;
    }
    measured_hz().unwrap_or_else(|| {
        tracing::debug!(
            "kernel tick rate unknown (no /boot/config, no /proc/timer_list): assuming 250 Hz"
        );
        250
    })
}

/// `CONFIG_HZ=250` in a kernel config.
fn config_hz(config: &str) -> Option<u32> {
    config
        .lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

/// Jiffies counted over a short sleep, rounded to the nearest rate kernels are built with.
fn measured_hz() -> Option<u32> {
    const SLEEP: Duration = Duration::from_millis(40);
    let j0 = timer_list_jiffies()?;
    let t0 = std::time::Instant::now();
    std::thread::sleep(SLEEP);
    let j1 = timer_list_jiffies()?;
    let rate = (j1.saturating_sub(j0)) as f64 / t0.elapsed().as_secs_f64();
    nearest_hz(rate)
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

fn timer_list_jiffies() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/timer_list").ok()?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("jiffies:"))
        .and_then(|v| v.trim().parse().ok())
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
    fn rounds_a_measured_rate_to_a_real_one() {
        assert_eq!(nearest_hz(247.0), Some(250));
        assert_eq!(nearest_hz(980.0), Some(1000));
        assert_eq!(nearest_hz(104.0), Some(100));
        assert_eq!(nearest_hz(0.0), None);
    }
}
