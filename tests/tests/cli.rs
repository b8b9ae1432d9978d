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

/// Runs conntrace with arguments it must refuse before loading anything; one that still
/// runs after 10 s accepted them (and is killed, so the test fails instead of hanging).
fn refused_at_once(args: &[&str]) -> Output {
    let child = Command::new(conntrace_bin())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run conntrace");
    let pid = child.id();
    let (done, finished) = std::sync::mpsc::channel();
    let watchdog = std::thread::spawn(move || {
        if finished.recv_timeout(Duration::from_secs(10)).is_err() {
            // SAFETY: kill() with a valid pid and signal.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return true;
        }
        false
    });
    let out = child.wait_with_output().expect("wait for conntrace");
    let _ = done.send(());
    assert!(
        !watchdog.join().unwrap(),
        "{args:?} was accepted: conntrace still ran after 10 s"
    );
    out
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

/// Every bad value is refused before anything is loaded: exit status 2, nothing on stdout,
/// one line on stderr that names the flag and, for numbers, the range.
#[test]
fn bad_arguments_exit_2_with_one_line() {
    let too_big = u64::MAX.to_string();
    let table: &[(&[&str], &str)] = &[
        (&["trace", "--port", "0"], "give a number from 1 to 65535"),
        (
            &["trace", "--port", "65536"],
            "give a number from 1 to 65535",
        ),
        (
            &["trace", "--dest", "not-an-address"],
            "--dest not-an-address",
        ),
        (&["trace", "--comm", "a-name-longer-than-fifteen"], "--comm"),
        (
            &["trace", "--ring-buffer-size", "1000"],
            "give a number from 4096 to 268435456",
        ),
        (
            &["trace", "--ring-buffer-size", "5000"],
            "power of two from 4096 to 268435456",
        ),
        (
            &["trace", "--ring-buffer-size", "536870912"],
            "give a number from 4096 to 268435456",
        ),
        (
            &["trace", "--ring-buffer-size", &too_big],
            "give a number from 4096 to 268435456",
        ),
        (
            &["trace", "--wakeup-batch", "256"],
            "give a number from 0 to 255",
        ),
        (
            &[
                "trace",
                "--ring-buffer-size",
                "8192",
                "--wakeup-batch",
                "23",
            ],
            "at most 22 records",
        ),
        (
            &["trace", "--max-connections", "0"],
            "give a number from 1 to 4194304",
        ),
        (
            &["trace", "--max-connections", "4194305"],
            "give a number from 1 to 4194304",
        ),
        (
            &["trace", "--max-connections", &too_big],
            "give a number from 1 to 4194304",
        ),
        (
            &["trace", "--max-established", "0"],
            "give a number from 1 to 16777216",
        ),
        (
            &["trace", "--max-established", "16777217"],
            "give a number from 1 to 16777216",
        ),
        (&["trace", "--rings", "0"], "give a number from 1 to 4"),
        (&["trace", "--rings", "5"], "give a number from 1 to 4"),
        (
            &["trace", "--max-keys", "0"],
            "give a number from 1 to 1000000",
        ),
        (
            &["trace", "--max-keys", "1000001"],
            "give a number from 1 to 1000000",
        ),
        (&["trace", "--pid", "0"], "give a number from 1 to 4194304"),
        (
            &["trace", "--pid", "4194305"],
            "give a number from 1 to 4194304",
        ),
        (
            &["trace", "--duration=-1"],
            "--duration -1.0: give 0.001 to 1000000000 seconds",
        ),
        (
            &["trace", "--duration", "0"],
            "--duration 0.0: give 0.001 to 1000000000 seconds",
        ),
        (
            &["trace", "--duration", "1e30"],
            "--duration 1e30: give 0.001 to 1000000000 seconds",
        ),
        (&["trace", "--duration", "NaN"], "--duration NaN"),
        (&["trace", "--duration", "inf"], "--duration inf"),
        (
            &["trace", "--stats-interval", "1e-9"],
            "--stats-interval 1e-9: give 0 (off) or 0.1 to 1000000000 seconds",
        ),
        (&["trace", "--stats-interval=-1"], "--stats-interval -1.0"),
        (
            &["trace", "--stats-interval", "1e10"],
            "--stats-interval 10000000000.0: give 0 (off)",
        ),
        (
            &["trace", "--summary-interval", "1e-10"],
            "--summary-interval 1e-10: give 0.1 to 1000000000 seconds",
        ),
        (
            &["trace", "--summary-interval", "0"],
            "--summary-interval 0.0",
        ),
        (
            &["trace", "--netns", "/no/such/namespace"],
            "--netns /no/such/namespace: no such file",
        ),
        (
            &["trace", "--netns", "0"],
            "--netns 0: not a namespace inode number",
        ),
        (
            &["trace", "--netns", "4294967296"],
            "--netns 4294967296: not a namespace inode number",
        ),
        (
            &["trace", "--netns", "/etc/passwd"],
            "--netns /etc/passwd: not a namespace file",
        ),
        (
            &["trace", "--netns", "/proc/self/ns/mnt"],
            "--netns /proc/self/ns/mnt: a namespace, but not a network namespace",
        ),
        (&["diagnose", "--duration", "0"], "--duration 0.0"),
        (&["diagnose", "--duration", "1e-9"], "--duration 1e-9"),
        (
            &["diagnose", "--max-connections", "0"],
            "give a number from 1 to 4194304",
        ),
        (&["diagnose", "--netns", "0"], "--netns 0"),
        (
            &["top", "--max-keys", "0"],
            "give a number from 1 to 1000000",
        ),
        (
            &["top", "--ring-buffer-size", "1"],
            "give a number from 4096 to 268435456",
        ),
        (&["trace", "-o", "xml"], "[possible values: json, text]"),
        (&["trace", "--bogus"], "unexpected argument '--bogus'"),
        (
            &["no-such-command"],
            "unrecognized subcommand 'no-such-command'",
        ),
    ];
    for (args, needle) in table {
        let out = refused_at_once(args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(
            err.starts_with("conntrace: ") && err.contains(needle),
            "{args:?}: {needle:?} in {err}"
        );
    }
    let out = conntrace(&["trace", "--port", "0"]);
    assert_eq!(
        stderr_of(&out).trim(),
        "conntrace: invalid value '0' for '--port <PORT>': give a number from 1 to 65535"
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
