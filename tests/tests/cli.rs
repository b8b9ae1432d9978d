//! The binary's contract with its user: help that teaches, one clear line and a distinct
//! exit status for each kind of failure, and clean stops (signals, a closed pipe).
use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Output, Stdio},
    time::Duration,
};

use harness::{
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::conntrace_bin,
};

fn conntrace(args: &[&str]) -> Output {
    Command::new(conntrace_bin())
        .args(args)
        .output()
        .expect("run conntrace")
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn help_names_the_commands_filters_and_exit_statuses() {
    let out = conntrace(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["trace", "CAP_BPF", "Exit statuses", "3 not privileged"] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    let out = conntrace(&["trace", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--pid",
        "--comm",
        "--port",
        "--dest",
        "--netns",
        "--all",
        "--duration",
        "--stats-interval",
    ] {
        assert!(
            help.contains(needle),
            "trace --help lacks {needle}:\n{help}"
        );
    }
}

#[test]
fn bad_arguments_exit_2_with_one_line() {
    for args in [
        &["trace", "--port", "0"][..],
        &["trace", "--dest", "not-an-address"],
        &["trace", "--comm", "a-name-longer-than-fifteen"],
        &["trace", "--ring-buffer-size", "1000"],
        &["trace", "--duration", "-1"],
        &["trace", "--netns", "/no/such/namespace"],
        &["no-such-command"],
    ] {
        let out = conntrace(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr_of(&out));
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    }
    let out = conntrace(&["trace", "--port", "0"]);
    assert_eq!(
        stderr_of(&out).trim(),
        "conntrace: --port 0: give a port from 1 to 65535"
    );
}

#[test]
fn unprivileged_run_exits_3_naming_the_capabilities() {
    require_root();
    // Drop to nobody with no capabilities at all.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(conntrace_bin())
        .args(["trace", "--duration", "1"])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("CAP_BPF") && err.contains("CAP_PERFMON"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn missing_tracefs_exits_4() {
    require_root();
    // Only the syscall hooks need tracefs.
    let out = conntrace(&[
        "trace",
        "--duration",
        "1",
        "--connect-hook",
        "syscalls",
        "--tracefs",
        "/nonexistent-tracefs",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("not a tracefs mount"),
        "{}",
        stderr_of(&out)
    );
}

#[test]
fn sigterm_drains_and_prints_final_stats() {
    require_root();
    let pair = Pair::new("sigterm");
    let mut child = Command::new(conntrace_bin())
        .args(["trace", "-o", "json", "--stats-interval", "0", "--netns"])
        .arg(pair.client.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("\"start\""));
    pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
    // SAFETY: kill() with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert_eq!(
        rest.len(),
        2,
        "the refused connect, then the final stats: {rest:#?}"
    );
    assert!(rest[0].contains("\"refused\""));
    assert!(
        rest[1].contains("\"final\":true") && rest[1].contains("\"connect.refused\":1"),
        "{}",
        rest[1]
    );
}

#[test]
fn closed_stdout_is_a_quiet_exit_0() {
    require_root();
    let pair = Pair::new("pipe");
    let mut child = Command::new(conntrace_bin())
        .args(["trace", "-o", "json", "--netns"])
        .arg(pair.client.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("\"start\""));
    drop(stdout); // the reader goes away, like `conntrace trace | head -1`
    // Give conntrace something to write; it must notice the closed pipe and stop.
    for _ in 0..5 {
        pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
        std::thread::sleep(Duration::from_millis(300));
        if child.try_wait().unwrap().is_some() {
            break;
        }
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        !err.contains("error") && !err.contains("Broken pipe"),
        "quiet: {err}"
    );
}

#[test]
fn a_full_connect_map_is_counted_and_logged() {
    require_root();
    let pair = Pair::new("mapfull");
    // Three connects stay in flight together for a few seconds: their SYNs go unanswered.
    pair.server.nft(
        "table inet cttest {\n chain in {\n type filter hook input priority 0; policy accept;\n tcp dport 82 drop;\n }\n}\n",
    );
    pair.client.sysctl("net.ipv4.tcp_syn_retries=1");
    let mut child = Command::new(conntrace_bin())
        .args([
            "trace",
            "-o",
            "json",
            "--stats-interval",
            "0",
            "--max-connections",
            "1",
        ])
        .arg("--netns")
        .arg(pair.client.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert!(lines.next().unwrap().unwrap().contains("\"start\""));
    let client = pair.client(&[
        "connect",
        "--addr",
        SERVER_V4,
        "--port",
        "82",
        "--threads",
        "3",
    ]);
    assert_eq!(client.reports.len(), 3, "{:?}", client.reports);
    std::thread::sleep(Duration::from_millis(300)); // the counters are read every 200 ms
    // SAFETY: kill() with a valid pid and signal.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let records: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().unwrap();
    let last = records.last().expect("final stats");
    assert!(
        last.contains("\"final\":true") && last.contains("\"connects_unfollowed\":2"),
        "{last}"
    );
    assert_eq!(
        records.iter().filter(|r| r.contains("\"timeout\"")).count(),
        1,
        "the one followed connect: {records:?}"
    );
    let err = stderr_of(&out);
    assert!(
        err.contains("map full: 2 connects not followed so far (raise --max-connections)"),
        "{err}"
    );
}
