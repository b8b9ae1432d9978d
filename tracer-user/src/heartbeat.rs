//! A heartbeat for liveness probes. `trace --heartbeat FILE` rewrites FILE every
//! [`BEAT_EVERY`] from a task on the collector's own event loop (a current-thread
//! runtime), so the file goes stale exactly when that loop stops turning: a write that
//! blocks, a drain that never yields. `conntrace health --heartbeat FILE` says whether
//! it is fresh: an exec probe for an image that has no shell.
//!
//! The file holds the time of the beat on `CLOCK_BOOTTIME`, not its modification time,
//! so that a step of the wall clock (NTP, an operator) never makes a live collector look
//! dead. The probe runs in the same container, on the same clock.
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::exit::{StartError, Status};

/// How often the heartbeat is written.
pub const BEAT_EVERY: Duration = Duration::from_secs(5);

/// Writes the first beat now: a path that cannot be written is a usage error before
/// anything is loaded, not a probe that kills the agent later.
pub fn first_beat(path: &Path) -> Result<(), StartError> {
    write_beat(path).map_err(|e| {
        StartError::Usage(format!(
            "--heartbeat {}: cannot write it: {e}",
            path.display()
        ))
    })
}

/// Beats until the runtime stops. A failed write is logged once, then retried at every
/// beat: the probe will say the rest.
pub async fn beat(path: PathBuf) {
    let mut every = tokio::time::interval(BEAT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned = false;
    loop {
        every.tick().await;
        match write_beat(&path) {
            Ok(()) => warned = false,
            Err(e) if !warned => {
                tracing::warn!("could not write the heartbeat {}: {e}", path.display());
                warned = true;
            }
            Err(_) => {}
        }
    }
}

/// `conntrace health`: 0 when the heartbeat is at most `max_age` old, else 1 with one
/// line on stderr saying why.
pub fn check(path: &Path, max_age: Duration) -> Result<Status, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("no heartbeat at {}: {e}", path.display()))?;
    let then = parse_beat(&text)
        .ok_or_else(|| format!("{}: not a conntrace heartbeat", path.display()))?;
    let age = Duration::from_nanos(boottime_ns().saturating_sub(then));
    if age > max_age {
        return Err(format!(
            "heartbeat {} is {:.1}s old (more than {}s): the collector is stuck",
            path.display(),
            age.as_secs_f64(),
            max_age.as_secs()
        ));
    }
    Ok(Status::Ok)
}

/// Replaces the file whole (write, then rename), so that the probe never reads half a
/// beat.
fn write_beat(path: &Path) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format_beat(boottime_ns()))?;
    std::fs::rename(&tmp, path)
}

fn format_beat(ns: u64) -> String {
    format!("conntrace heartbeat {ns}\n")
}

fn parse_beat(text: &str) -> Option<u64> {
    text.trim()
        .strip_prefix("conntrace heartbeat ")?
        .parse()
        .ok()
}

fn boottime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("conntrace-heartbeat-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_fresh_beat_passes() {
        let path = temp_path("fresh");
        first_beat(&path).unwrap();
        assert_eq!(check(&path, Duration::from_secs(30)), Ok(Status::Ok));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_old_beat_fails_naming_its_age() {
        let path = temp_path("old");
        let then = boottime_ns() - 90 * 1_000_000_000;
        std::fs::write(&path, format_beat(then)).unwrap();
        let err = check(&path, Duration::from_secs(30)).unwrap_err();
        assert!(
            err.contains("s old (more than 30s): the collector is stuck"),
            "{err}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_missing_or_foreign_file_fails() {
        let path = temp_path("missing");
        let err = check(&path, Duration::from_secs(30)).unwrap_err();
        assert!(err.starts_with("no heartbeat at "), "{err}");
        std::fs::write(&path, "hello\n").unwrap();
        let err = check(&path, Duration::from_secs(30)).unwrap_err();
        assert!(err.ends_with("not a conntrace heartbeat"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_unwritable_path_is_a_usage_error() {
        let err = first_beat(Path::new("/nonexistent-dir/heartbeat")).unwrap_err();
        assert_eq!(err.status(), Status::Usage);
        assert!(
            err.to_string()
                .starts_with("--heartbeat /nonexistent-dir/heartbeat: cannot write it: ")
        );
    }

    #[test]
    fn beats_round_trip() {
        assert_eq!(parse_beat(&format_beat(42)), Some(42));
        assert_eq!(parse_beat("conntrace heartbeat x\n"), None);
    }
}
