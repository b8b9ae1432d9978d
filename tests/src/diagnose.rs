//! A running `conntrace diagnose --json`, filtered to one namespace: started, given the
//! time to attach, then stopped (SIGINT, once the staged traffic is over) or left to reach
//! its `--duration`; its exit status and JSON report are what tests check.
use std::{path::Path, process::Command};

use serde_json::Value;

use crate::{
    run::{RawOutput, RawRun},
    tracer::conntrace_bin,
};

/// What `diagnose` logs once its programs are attached and the window has begun.
const WATCHING: &str = "diagnose: watching";

pub struct Diagnose {
    run: RawRun,
}

/// How a `diagnose` run ended.
#[derive(Debug)]
pub struct Report {
    pub status: i32,
    pub doc: Value,
}

impl Diagnose {
    /// Starts `conntrace diagnose --json --duration SECS --netns NETNS EXTRA...` and waits
    /// until it watches. Its stderr is passed through to the test's.
    pub fn start(netns: &Path, seconds: u32, extra: &[&str]) -> Diagnose {
        Diagnose::start_as(&[], netns, seconds, extra)
    }

    /// The same, run by `wrapper` (a command and its arguments, such as `setpriv` with a
    /// reduced capability set, that then runs conntrace).
    pub fn start_as(wrapper: &[&str], netns: &Path, seconds: u32, extra: &[&str]) -> Diagnose {
        let mut cmd = wrapped(wrapper);
        cmd.args([
            "diagnose",
            "--json",
            "--duration",
            &seconds.to_string(),
            "--netns",
        ])
        .arg(netns)
        .args(extra);
        Diagnose {
            run: RawRun::start(cmd, WATCHING),
        }
    }

    /// Ends the window now, as SIGINT does (records already in the ring buffer still
    /// count), and returns the report.
    pub fn stop(self) -> Report {
        report(self.run.stop())
    }

    /// Waits for the report (the window's end) and returns it.
    pub fn finish(self) -> Report {
        report(self.run.wait())
    }
}

fn report(out: RawOutput) -> Report {
    let text = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("diagnose --json printed no JSON document ({e}): {text}"));
    Report {
        status: out.status.code().expect("exited, not killed"),
        doc,
    }
}

/// `conntrace`, or `wrapper... conntrace`.
pub fn wrapped(wrapper: &[&str]) -> Command {
    match wrapper.split_first() {
        None => Command::new(conntrace_bin()),
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg(conntrace_bin());
            cmd
        }
    }
}

impl Report {
    pub fn findings(&self) -> &[Value] {
        self.doc["findings"].as_array().map_or(&[], Vec::as_slice)
    }

    /// The finding for this destination (`ip:port`), failing if there is none.
    pub fn finding(&self, dest: &str) -> &Value {
        self.findings()
            .iter()
            .find(|f| {
                format!(
                    "{}:{}",
                    f["destination"]["ip"].as_str().unwrap_or(""),
                    f["destination"]["port"]
                ) == dest
            })
            .unwrap_or_else(|| panic!("no finding for {dest}: {:#}", self.doc))
    }
}
