//! conntrace's output under pressure: readers that stall or crawl during a storm, signals
//! while the output is stuck, a stderr that fails, a wall clock that jumps. Every count is
//! exact: the storm runs in its own network namespace and conntrace is filtered to it, so
//! records written + records dropped by the output + records lost in the kernel must add
//! up to what the load generator made.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    os::unix::process::ExitStatusExt as _,
    process::{Child, ChildStdout, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use harness::{
    loadgen::Storm,
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::conntrace_bin,
};
use serde_json::Value;

/// A conntrace whose stdout the test reads (or not), and whose stderr is collected.
struct Traced {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    stderr: mpsc::Receiver<String>,
    /// When its start record was read.
    started: Instant,
}

impl Traced {
    /// `conntrace trace -o json --all --netns NETNS ARGS...`, once its start record is out.
    fn start(netns: &str, args: &[&str]) -> Traced {
        Traced::start_with(Command::new(conntrace_bin()), netns, args)
    }

    fn start_with(mut cmd: Command, netns: &str, args: &[&str]) -> Traced {
        let mut child = cmd
            .args(["trace", "-o", "json", "--all", "--netns", netns])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start conntrace");
        let (tx, stderr) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        assert!(first.contains("\"start\""), "first record: {first}");
        Traced {
            child,
            stdout: Some(stdout),
            stderr,
            started: Instant::now(),
        }
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Waits for the exit; how long it took from `since`.
    fn wait(&mut self, since: Instant) -> (std::process::ExitStatus, Duration) {
        let status = self.child.wait().unwrap();
        (status, since.elapsed())
    }

    /// Everything on stdout that is still to be read (after the exit: what the pipe held).
    fn rest_of_stdout(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.take_stdout().read_to_end(&mut out).unwrap();
        out
    }

    fn take_stdout(&mut self) -> BufReader<ChildStdout> {
        self.stdout.take().expect("stdout is read once")
    }

    fn stderr(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Complete lines (a record cut short at exit has no newline, and was not written).
fn complete_records(bytes: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(bytes);
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete.lines().map(harness::tracer::checked).collect()
}

fn connect_records(records: &[Value]) -> u64 {
    records
        .iter()
        .filter(|r| r["event"]["kind"] == "event" && r["event"]["action"] == "connect")
        .count() as u64
}

/// `N records (…), L lost, …, D not written (output too slow)` from the final stats line
/// that conntrace writes on stderr when its reader never took them.
fn stderr_final_stats(lines: &[String]) -> (u64, u64, u64) {
    let line = lines
        .iter()
        .find(|l| l.contains("final stats:"))
        .unwrap_or_else(|| panic!("no final stats on stderr: {lines:#?}"));
    let number_before = |word: &str| -> u64 {
        let head = &line[..line.find(word).unwrap_or_else(|| panic!("{word}: {line}"))];
        head.split_whitespace()
            .last()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no number before {word}: {line}"))
    };
    (
        number_before(" records ("),
        number_before(" lost,"),
        number_before(" not written"),
    )
}

fn netns_arg(storm: &Storm) -> String {
    storm.netns.to_string()
}

#[test]
fn a_stalled_reader_delays_neither_the_stop_nor_the_count() {
    require_root();
    let mut storm = Storm::new(
        "refused",
        &[
            "--threads",
            "2",
            "--max-attempts",
            "20000",
            "--rate",
            "20000",
            "--duration",
            "10",
        ],
    );
    let mut traced = Traced::start(
        &netns_arg(&storm),
        &["--stats-interval", "0.5", "--output-buffer", "256K"],
    );
    // From here on nobody reads conntrace's stdout.
    storm.go();
    let counts = storm.wait();
    let made = counts["attempts"].as_u64().unwrap();
    thread::sleep(Duration::from_millis(500));
    let stopped = Instant::now();
    traced.signal(libc::SIGTERM);
    let (status, took) = traced.wait(stopped);
    assert_eq!(status.code(), Some(0), "{:#?}", traced.stderr());
    // A second of no progress from the reader, then it is given up on.
    assert!(took < Duration::from_millis(2500), "exit took {took:?}");
    let stderr = traced.stderr();
    let (received, lost, not_written) = stderr_final_stats(&stderr);
    let records = complete_records(&traced.rest_of_stdout());
    let written = connect_records(&records);
    assert!(not_written > 0, "the reader stalled: records were dropped");
    assert_eq!(written + not_written, received, "{stderr:#?}");
    assert_eq!(received + lost, made, "{stderr:#?}\nloadgen: {counts}");
    assert!(
        stderr.iter().any(|l| l.contains("stopped reading")),
        "{stderr:#?}"
    );
}

#[test]
fn a_slow_reader_gets_stats_on_time_and_every_record_is_accounted_for() {
    require_root();
    let mut storm = Storm::new(
        "refused",
        &["--threads", "2", "--rate", "20000", "--duration", "2"],
    );
    let mut traced = Traced::start(
        &netns_arg(&storm),
        &[
            "--stats-interval",
            "0.5",
            "--duration",
            "4",
            "--output-buffer",
            "256K",
        ],
    );
    let started = traced.started;
    // A reader that takes a line every 100 µs or so: far slower than the storm.
    let stdout = traced.take_stdout();
    let reader = thread::spawn(move || {
        let mut records = Vec::new();
        for (i, line) in stdout.lines().map_while(Result::ok).enumerate() {
            if i % 20 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
            records.push(harness::tracer::checked(&line));
        }
        records
    });
    storm.go();
    let counts = storm.wait();
    let made = counts["attempts"].as_u64().unwrap();
    let (status, took) = traced.wait(started);
    assert_eq!(status.code(), Some(0), "{:#?}", traced.stderr());
    assert!(
        took < Duration::from_millis(4000 + 2500),
        "--duration 4 took {took:?}"
    );
    let records = reader.join().unwrap();
    let stats: Vec<&Value> = records
        .iter()
        .filter(|r| r["event"]["action"] == "stats")
        .collect();
    let last = *stats.last().expect("the final stats");
    assert_eq!(last["conntrace"]["final"], true, "{last}");
    let c = &last["conntrace"];
    let (received, lost, dropped) = (
        c["received"].as_u64().unwrap(),
        c["lost_events"].as_u64().unwrap(),
        c["output_dropped"].as_u64().unwrap(),
    );
    let written = connect_records(&records);
    assert!(dropped > 0, "the reader was slower than the storm: {last}");
    assert_eq!(written + dropped, received, "{last}");
    assert_eq!(received + lost, made, "{last}\nloadgen: {counts}");
    // Stats were made every half second during the storm, not held back by it.
    let times: Vec<f64> = stats
        .iter()
        .map(|r| seconds_of(r["@timestamp"].as_str().unwrap()))
        .collect();
    assert!(times.len() >= 7, "{} stats records", times.len());
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] < 1.2,
            "stats {:.2} s apart",
            pair[1] - pair[0]
        );
    }
}

/// Seconds of the day of an RFC 3339 timestamp (tests stay within a minute or so).
fn seconds_of(ts: &str) -> f64 {
    let time = &ts[11..ts.len() - 1];
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

#[test]
fn a_second_signal_ends_at_once() {
    require_root();
    let mut storm = Storm::new(
        "refused",
        &[
            "--threads",
            "1",
            "--max-attempts",
            "3000",
            "--duration",
            "10",
        ],
    );
    let mut traced = Traced::start(
        &netns_arg(&storm),
        &["--stats-interval", "0", "--output-buffer", "256K"],
    );
    storm.go();
    storm.wait();
    thread::sleep(Duration::from_millis(300));
    let stopped = Instant::now();
    // The first signal starts the stop, which waits up to a second for the stuck reader.
    traced.signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(200));
    traced.signal(libc::SIGTERM);
    let (status, took) = traced.wait(stopped);
    assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
    assert!(took < Duration::from_millis(900), "took {took:?}");
}

#[test]
fn sighup_without_an_output_file_ends_the_run_like_sigterm() {
    require_root();
    let pair = Pair::new("hup");
    let netns = pair.client.path();
    let mut traced = Traced::start(netns.to_str().unwrap(), &["--stats-interval", "0"]);
    pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
    thread::sleep(Duration::from_millis(100));
    traced.signal(libc::SIGHUP);
    let (status, _) = traced.wait(Instant::now());
    assert_eq!(status.code(), Some(0));
    let records = complete_records(&traced.rest_of_stdout());
    assert_eq!(connect_records(&records), 1, "{records:#?}");
    let last = records.last().unwrap();
    assert_eq!(last["conntrace"]["final"], true, "{last}");
    assert_eq!(last["conntrace"]["events"]["connect.refused"], 1, "{last}");
}

#[test]
fn a_failing_stderr_is_ignored_never_a_panic() {
    // Before anything loads: the usage error cannot be printed, the status still says it.
    let full = || {
        std::fs::File::options()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let out = Command::new(conntrace_bin())
        .args(["trace", "--port", "0"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    require_root();
    // A whole run with logs, text stats and summaries bound for a full stderr.
    let pair = Pair::new("devfull");
    let mut child = Command::new(conntrace_bin())
        .args(["-v", "trace", "-o", "text", "--duration", "30"])
        .args(["--summary-interval", "0.2", "--stats-interval", "0.2"])
        .arg("--netns")
        .arg(pair.client.path())
        .stdout(Stdio::piped())
        .stderr(full())
        .spawn()
        .unwrap();
    let (tx, table) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The start line went to the full stderr: connect until the table shows a record.
    let mut seen = Vec::new();
    let deadline = Instant::now() + harness::tracer::start_timeout();
    while Instant::now() < deadline && !seen.iter().any(|l: &String| l.contains("refused")) {
        pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
        thread::sleep(Duration::from_millis(200));
        seen.extend(table.try_iter());
    }
    // Summaries and stats are due every 0.2 s: let some fail to be written.
    thread::sleep(Duration::from_millis(500));
    // SAFETY: kill() with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(seen.iter().any(|l| l.contains("refused")), "{seen:#?}");
}

#[test]
fn log_colours_only_on_a_terminal() {
    require_root();
    let pair = Pair::new("colour");
    let netns = pair.client.path();
    let netns = netns.to_str().unwrap();
    let out = Command::new(conntrace_bin())
        .args(["trace", "--duration", "0.3", "--netns", netns])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("attached"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "no escape codes in a pipe: {err:?}"
    );
    // script(1) gives it a terminal.
    let command = format!(
        "{} trace --duration 0.3 --netns {netns} >/dev/null",
        conntrace_bin().display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .output()
        .expect("script (util-linux)");
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("attached"), "{err}");
    assert!(err.contains("\u{1b}["), "colours on a terminal: {err:?}");
}

#[test]
fn timestamps_follow_a_wall_clock_step() {
    require_root();
    let dir = harness::TempDir::new("clockstep");
    let spec = dir.path().join("faketime");
    std::fs::write(&spec, "+0\n").unwrap();
    let pair = Pair::new("clock");
    let netns = pair.client.path();
    // libfaketime shifts CLOCK_REALTIME only, as a step would, re-reading its spec file
    // at every read; CLOCK_MONOTONIC (the kernel's timestamps, tokio's timers) is real.
    let mut cmd = Command::new(conntrace_bin());
    cmd.env(
        "LD_PRELOAD",
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    )
    .env("FAKETIME_TIMESTAMP_FILE", &spec)
    .env("FAKETIME_NO_CACHE", "1")
    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    assert!(
        std::path::Path::new("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1").exists(),
        "libfaketime missing: cargo xtask setup installs faketime"
    );
    let mut traced = Traced::start_with(cmd, netns.to_str().unwrap(), &["--stats-interval", "0"]);
    let mut stdout = traced.take_stdout();
    let mut next_connect = || loop {
        let mut line = String::new();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "conntrace ended");
        let r = harness::tracer::checked(&line);
        if r["event"]["action"] == "connect" {
            return r["@timestamp"].as_str().unwrap().to_owned();
        }
    };
    pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
    let before = next_connect();
    // The clock jumps a day ahead (libfaketime reads the file again at every clock read).
    std::fs::write(&spec, "+1d\n").unwrap();
    thread::sleep(Duration::from_millis(100));
    pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
    let after = next_connect();
    traced.signal(libc::SIGINT);
    let (status, _) = traced.wait(Instant::now());
    assert_eq!(status.code(), Some(0));
    let day = |ts: &str| ts[..10].to_owned();
    assert_ne!(day(&before), day(&after), "a day later: {before}, {after}");
    let gap = seconds_of(&after) - seconds_of(&before);
    assert!(
        gap.abs() < 30.0,
        "the same time of day, a day later: {before}, {after}"
    );
}
