//! A running `conntrace diagnose --json`, filtered to one namespace: started, given the
//! time to attach, then stopped (SIGINT, once the staged traffic is over) or left to reach
//! its `--duration`; its exit status and JSON report are what tests check.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
};

use serde_json::Value;

use crate::tracer::{conntrace_bin, start_timeout};

/// What `diagnose` logs once its programs are attached and the window has begun.
const WATCHING: &str = "diagnose: watching";

pub struct Diagnose {
    child: Child,
    stdout: Option<thread::JoinHandle<String>>,
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
        let mut child = wrapped(wrapper)
            .args([
                "diagnose",
                "--json",
                "--duration",
                &seconds.to_string(),
                "--netns",
            ])
            .arg(netns)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start conntrace diagnose");
        let mut out = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        });
        let err = child.stderr.take().expect("stderr");
        let (ready, watching) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[diagnose] {line}");
                if line.contains(WATCHING) {
                    let _ = ready.send(());
                }
            }
        });
        let limit = start_timeout();
        if watching.recv_timeout(limit).is_err() {
            let _ = child.kill();
            panic!("conntrace diagnose did not start watching within {limit:?}");
        }
        Diagnose {
            child,
            stdout: Some(stdout),
        }
    }

    /// Ends the window now, as SIGINT does (records already in the ring buffer still
    /// count), and returns the report.
    pub fn stop(self) -> Report {
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.finish()
    }

    /// Waits for the report (the window's end) and returns it.
    pub fn finish(mut self) -> Report {
        let status = self.child.wait().expect("wait for conntrace diagnose");
        let text = self
            .stdout
            .take()
            .and_then(|reader| reader.join().ok())
            .unwrap_or_default();
        let doc = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("diagnose --json printed no JSON document ({e}): {text}"));
        Report {
            status: status.code().expect("exited, not killed"),
            doc,
        }
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

impl Drop for Diagnose {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
