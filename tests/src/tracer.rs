//! A running `conntrace trace -o json --all`, filtered to one namespace, whose records a
//! test collects and asserts on.
use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    thread,
    time::Duration,
};

use serde_json::Value;

/// The conntrace binary: `CONNTRACE_BIN` (set by `cargo xtask test`), else the one cargo
/// built beside this test executable.
pub fn conntrace_bin() -> PathBuf {
    crate::built_binary("conntrace", "CONNTRACE_BIN")
}

pub struct Tracer {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub start: Value,
}

impl Tracer {
    /// Starts `conntrace trace -o json --all --stats-interval 0 --netns NETNS EXTRA...` and
    /// waits for its start record (the programs are attached by then).
    pub fn start(netns: &Path, extra: &[&str]) -> Tracer {
        Tracer::start_as(&[], netns, extra)
    }

    /// The same, run by `wrapper` (such as `setpriv` with a reduced capability set).
    pub fn start_as(wrapper: &[&str], netns: &Path, extra: &[&str]) -> Tracer {
        let mut child = crate::diagnose::wrapped(wrapper)
            .args([
                "trace",
                "-o",
                "json",
                "--all",
                "--stats-interval",
                "0",
                "--netns",
            ])
            .arg(netns)
            .args(forced_hook())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start conntrace");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let wait = start_timeout();
        let first = lines.recv_timeout(wait).unwrap_or_else(|_| {
            panic!("conntrace printed no start record in {} s", wait.as_secs())
        });
        let start = checked(&first);
        assert_eq!(start["event"]["action"], "start", "first record: {first}");
        check_expected_hook(&start);
        Tracer {
            child,
            lines,
            start,
        }
    }

    /// Stops conntrace with SIGINT (it drains and writes its final stats) and returns every
    /// record after the start record, the final stats last.
    ///
    /// Every line up to the end of its output, not just what the reader thread has passed
    /// on by the time conntrace exits: on a loaded machine that thread lags, and taking
    /// only what had arrived lost whole runs of records (the `ipv6_refused` flake).
    pub fn stop(mut self) -> Vec<Value> {
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait for conntrace");
        assert!(status.success(), "conntrace exited with {status}");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut all = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => all.push(checked(&l)),
                Err(mpsc::RecvTimeoutError::Disconnected) => break all,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("conntrace's output did not end within 30 s of its exit")
                }
            }
        }
    }

    /// conntrace's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops conntrace (SIGSTOP) with its programs attached: records wait in the ring
    /// buffer, and procfs is read only after [`Tracer::resume`] (a process can exit or
    /// `exec` in between, on purpose).
    pub fn pause(&self) {
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// The first connection record that `want` accepts, waiting at most `limit`; every
    /// record read on the way is returned too.
    pub fn wait_for(
        &mut self,
        limit: Duration,
        want: impl Fn(&Value) -> bool,
    ) -> (Option<Value>, Vec<Value>) {
        let deadline = std::time::Instant::now() + limit;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            let Some(r) = self.next_record(left) else {
                break;
            };
            if r["event"]["kind"] == "event" && want(&r) {
                return (Some(r), seen);
            }
            seen.push(r);
        }
        (None, seen)
    }

    /// The next record while conntrace runs, if one arrives within `wait`.
    pub fn next_record(&mut self, wait: Duration) -> Option<Value> {
        let line = self.lines.recv_timeout(wait).ok()?;
        Some(checked(&line))
    }

    /// Stops after giving late events (timeouts, keepalive losses) `settle` to arrive.
    pub fn stop_after(self, settle: Duration) -> Vec<Value> {
        thread::sleep(settle);
        self.stop()
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long conntrace may take to attach: 30 s, or `CONNTRACE_TEST_START_TIMEOUT_S` (the
/// VM tier runs under software emulation, where loading takes much longer).
pub fn start_timeout() -> Duration {
    let secs = std::env::var("CONNTRACE_TEST_START_TIMEOUT_S")
        .ok()
        .and_then(|s| s.parse().ok());
    Duration::from_secs(secs.unwrap_or(30))
}

/// `CONNTRACE_TEST_HOOK=kretprobe` (for example) runs the suite on one named connect hook.
fn forced_hook() -> Vec<String> {
    std::env::var("CONNTRACE_TEST_HOOK")
        .map(|h| vec!["--connect-hook".into(), h])
        .unwrap_or_default()
}

/// In the VM tier, `CONNTRACE_EXPECT_HOOK=fexit,kretprobe` says which connect hooks are
/// acceptable there: the test fails if conntrace fell back to another.
fn check_expected_hook(start: &Value) {
    if let Ok(expected) = std::env::var("CONNTRACE_EXPECT_HOOK") {
        let hook = start["conntrace"]["connect_hook"].as_str().unwrap_or("");
        assert!(
            expected.split(',').any(|h| h == hook),
            "connect hook is {hook:?}, expected one of {expected}"
        );
    }
}

/// One line of conntrace's JSON stream, checked against the records' one definition
/// (`conntrace::output::schema`): a field it does not define, or one of the wrong shape,
/// fails the test.
pub fn checked(line: &str) -> Value {
    if let Err(e) = conntrace::output::schema::parse(line) {
        panic!("a record outside the schema: {e}\n{line}");
    }
    serde_json::from_str(line).expect("JSON")
}

/// Connection records (not start or stats) with this action.
pub fn records<'a>(all: &'a [Value], action: &str) -> Vec<&'a Value> {
    all.iter()
        .filter(|r| r["event"]["kind"] == "event" && r["event"]["action"] == action)
        .collect()
}

/// The final stats record.
pub fn final_stats(all: &[Value]) -> &Value {
    all.iter()
        .rev()
        .find(|r| r["event"]["action"] == "stats")
        .expect("a final stats record")
}
