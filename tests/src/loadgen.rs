//! The benchmark's load generator (`xtask/src/bin/loadgen/`) as a storm for tests: it
//! makes its own network namespace, so a tracer filtered to that namespace counts exactly
//! the generator's own attempts.
use std::{
    io::{BufRead as _, BufReader, Lines, Write as _},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use serde_json::Value;

/// `LOADGEN_BIN`, else `loadgen` beside the test executable (`cargo build -p xtask --bin
/// loadgen`; `cargo xtask test` builds it).
pub fn loadgen_bin() -> PathBuf {
    crate::built_binary("loadgen", "LOADGEN_BIN")
}

/// A generator set up and waiting for its go.
pub struct Storm {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// The inode of its network namespace, for `--netns`.
    pub netns: u64,
}

impl Storm {
    /// `loadgen MODE ARGS... --wait-go`, ready.
    pub fn new(mode: &str, args: &[&str]) -> Storm {
        let mut child = Command::new(loadgen_bin())
            .arg(mode)
            .args(args)
            .arg("--wait-go")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start loadgen");
        let stdin = child.stdin.take();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(
            ready["own_netns"], true,
            "loadgen in its own namespace: {ready}"
        );
        Storm {
            child,
            stdin,
            lines,
            netns: ready["netns"].as_u64().unwrap(),
        }
    }

    /// Starts the load.
    pub fn go(&mut self) {
        let mut stdin = self.stdin.take().expect("go once");
        stdin.write_all(b"go\n").unwrap();
    }

    /// Waits for the end of the load; its own counts (`attempts`, `refused`, …).
    pub fn wait(mut self) -> Value {
        let line = self.lines.next().expect("loadgen's counts").unwrap();
        assert!(self.child.wait().unwrap().success());
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
