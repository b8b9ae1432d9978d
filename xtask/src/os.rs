//! Small pieces of the operating system that xtask and the load generator both need (the
//! load generator includes this file with `#[path]`: it is a binary of its own).
use std::{
    ffi::{CString, OsString},
    os::unix::ffi::OsStringExt as _,
    path::{Path, PathBuf},
};

/// A private scratch directory: created by `mkdtemp(3)` (a fresh, unpredictable name,
/// mode 0700, so that no other user can read, plant or swap files in it while we run as
/// root), and removed with everything in it on drop.
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// `$TMPDIR/<prefix>-XXXXXX`.
    pub fn new(prefix: &str) -> std::io::Result<PrivateDir> {
        let template = std::env::temp_dir().join(format!("{prefix}-XXXXXX"));
        let template = CString::new(template.into_os_string().into_vec())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let raw = template.into_raw();
        // SAFETY: a NUL-terminated template that mkdtemp may rewrite in place; ownership
        // goes back to a CString right after.
        let made = unsafe { libc::mkdtemp(raw) };
        // SAFETY: `raw` came from `CString::into_raw` and mkdtemp kept its length.
        let path = unsafe { CString::from_raw(raw) };
        if made.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(PrivateDir(PathBuf::from(OsString::from_vec(
            path.into_bytes(),
        ))))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// CPU seconds a running process has used so far: the sum over its threads of the
/// scheduler's run time (/proc/PID/task/TID/schedstat, in ns; /proc/PID/stat counts in
/// 10 ms ticks, too coarse for a one-second trial). 0 for a process that is gone.
pub fn proc_cpu_seconds(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    let ns: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    ns as f64 / 1e9
}
