//! What procfs adds to a record, and when it must not (issue 8, part 3): arguments only
//! when asked for, with secrets redacted, decoded lossily, empty ones kept; nothing from
//! a pid that now runs another program; memory bounded however large the arguments.
use std::{
    collections::HashSet,
    ffi::OsString,
    os::unix::ffi::OsStringExt as _,
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use harness::{
    netns::{Netns, Pair, SERVER_V4},
    require_root,
    tracer::{Tracer, final_stats},
};
use serde_json::Value;

/// Connects once (refused: nothing listens on 8080), then waits for stdin to close.
const CONNECT_AND_WAIT: &str = "import socket, sys\nsocket.socket().connect_ex((sys.argv[1], int(sys.argv[2])))\nsys.stdin.read()\n";
/// Connects once, then becomes `sleep 30`.
const CONNECT_AND_EXEC: &str = "import os, socket, sys\nsocket.socket().connect_ex((sys.argv[1], int(sys.argv[2])))\nos.execvp('sleep', ['sleep', '30'])\n";

/// `python3 -c SCRIPT SERVER 8080 EXTRA...` in the client namespace.
fn python(ns: &Netns, script: &str, extra: &[OsString]) -> Child {
    let mut cmd = ns.command(&["python3", "-c", script, SERVER_V4, "8080"]);
    cmd.args(extra).stdin(Stdio::piped()).stdout(Stdio::piped());
    cmd.spawn().expect("run python3 (cargo xtask setup)")
}

struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn record_of(tracer: &mut Tracer, pid: u32) -> Value {
    let (found, seen) = tracer.wait_for(Duration::from_secs(20), |r| r["process"]["pid"] == pid);
    found.unwrap_or_else(|| panic!("no record from pid {pid}: {seen:#?}"))
}

/// The same client, traced twice: without `--args` no arguments; with it, the
/// arguments with every secret redacted, the empty one kept and the invalid UTF-8 byte
/// replaced, not the list dropped.
#[test]
fn arguments_only_when_asked_and_without_secrets() {
    require_root();
    let pair = Pair::new("args");
    let extra: Vec<OsString> = [
        &b"--password=hunter2"[..],
        b"-pSECRET",
        b"postgres://app:s3cret@db:5432/shop",
        b"",
        b"caf\xe9",
        b"Authorization: Bearer abc.def",
        b"--token",
        b"t0k3n",
    ]
    .iter()
    .map(|b| OsString::from_vec(b.to_vec()))
    .collect();
    for with_args in [false, true] {
        let mut tracer = Tracer::start(
            &pair.client.path(),
            if with_args { &["--args"] } else { &[] },
        );
        let child = Reaped(python(&pair.client, CONNECT_AND_WAIT, &extra));
        let r = record_of(&mut tracer, child.0.id());
        assert_eq!(r["process"]["name"], "python3", "{r}");
        assert!(
            r["process"]["executable"]
                .as_str()
                .is_some_and(|e| e.contains("python3")),
            "{r}"
        );
        assert!(r["conntrace"].get("details_missing").is_none(), "{r}");
        if !with_args {
            assert!(r["process"].get("args").is_none(), "{r}");
            continue;
        }
        // argv[0] as Python was started (a version manager may give a full path).
        let args = r["process"]["args"].as_array().expect("args");
        assert!(
            args[0].as_str().is_some_and(|a| a.ends_with("python3")),
            "{r}"
        );
        let want = [
            "-c",
            CONNECT_AND_WAIT,
            SERVER_V4,
            "8080",
            "--password=REDACTED",
            "-pREDACTED",
            "postgres://REDACTED:REDACTED@db:5432/shop",
            "",
            "caf\u{fffd}",
            "Authorization: REDACTED",
            "--token",
            "REDACTED",
        ];
        assert_eq!(args[1..], want.map(Value::from), "{r}");
        assert!(r["conntrace"].get("args_truncated").is_none(), "{r}");
        let line = r.to_string();
        for secret in ["hunter2", "SECRET", "s3cret", "abc.def", "t0k3n"] {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
    }
}

/// A process that connects and then `exec`s another program keeps its pid and start
/// time: conntrace (held with SIGSTOP until the exec is done) must not report the new
/// program's executable and arguments as the connecting one's.
#[test]
fn a_process_that_execs_after_connecting_is_not_described_by_its_new_program() {
    require_root();
    let pair = Pair::new("exec");
    let mut tracer = Tracer::start(&pair.client.path(), &["--args"]);
    tracer.pause();
    let child = Reaped(python(&pair.client, CONNECT_AND_EXEC, &[]));
    let pid = child.0.id();
    let start = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "python3 never became sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    tracer.resume();
    let r = record_of(&mut tracer, pid);
    assert_eq!(r["process"]["name"], "python3", "{r}");
    assert_eq!(r["conntrace"]["details_missing"], "replaced", "{r}");
    assert!(r["process"].get("executable").is_none(), "{r}");
    assert!(r["process"].get("args").is_none(), "{r}");
}

/// A process gone before conntrace looked: the record says so.
#[test]
fn a_process_gone_before_the_lookup_says_so() {
    require_root();
    let pair = Pair::new("gone");
    let mut tracer = Tracer::start(&pair.client.path(), &[]);
    tracer.pause();
    let client = pair.client(&["connect", "--addr", SERVER_V4, "--port", "8080"]);
    tracer.resume();
    let r = record_of(&mut tracer, client.pid);
    assert_eq!(r["conntrace"]["details_missing"], "exited", "{r}");
    assert!(r["process"].get("executable").is_none(), "{r}");
}

/// 1 000 live processes, each holding a megabyte of arguments (eight of 128 KiB, the
/// kernel's limit for one), each connecting once: with `--args`, conntrace's peak RSS
/// stays under 64 MiB, and no record carries more than the per-process bound.
#[test]
fn memory_stays_bounded_with_a_thousand_processes_of_a_megabyte_of_arguments() {
    require_root();
    const PROCESSES: usize = 1000;
    // Forked children share the parent's argument pages: a megabyte each, as procfs
    // shows them, for little memory on this host.
    const FORK: &str = "import os, socket, sys\naddr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])\nr, w = os.pipe()\nkids = []\nfor _ in range(n):\n    pid = os.fork()\n    if pid == 0:\n        os.close(w)\n        socket.socket().connect_ex((addr, port))\n        os.read(r, 1)\n        os._exit(0)\n    kids.append(pid)\nos.close(r)\nsys.stdin.read()\nos.close(w)\nfor k in kids:\n    os.waitpid(k, 0)\n";
    let pair = Pair::new("rss");
    let mut tracer = Tracer::start(&pair.client.path(), &["--args"]);
    let rss_before_kib = memory_kib(tracer.pid(), "VmRSS:");
    let mut extra = vec![OsString::from(PROCESSES.to_string())];
    extra.extend((0..8u8).map(|n| OsString::from_vec(vec![b'a' + n; 128 * 1024 - 1])));
    let mut parent = Reaped(python(&pair.client, FORK, &extra));
    let mut pids = HashSet::new();
    let mut with_args = 0;
    let mut missing = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while pids.len() < PROCESSES {
        let left = deadline
            .checked_duration_since(Instant::now())
            .expect("1000 records in 2 minutes");
        let (r, _) = tracer.wait_for(left, |r| r["process"]["name"] == "python3");
        let r = r.expect("a record from each child");
        pids.insert(r["process"]["pid"].as_u64().unwrap());
        *missing
            .entry(r["conntrace"]["details_missing"].to_string())
            .or_insert(0) += 1;
        if let Some(args) = r["process"]["args"].as_array() {
            with_args += 1;
            let bytes: usize = args.iter().map(|a| a.as_str().unwrap().len().max(1)).sum();
            assert!(bytes <= 4096, "{bytes} bytes of arguments in one record");
            assert_eq!(r["conntrace"]["args_truncated"], true, "{r}");
        }
    }
    let peak_kib = memory_kib(tracer.pid(), "VmHWM:");
    let grown_kib = memory_kib(tracer.pid(), "VmRSS:").saturating_sub(rss_before_kib);
    drop(parent.0.stdin.take());
    let _ = parent.0.wait();
    let all = tracer.stop();
    let stats = final_stats(&all);
    eprintln!(
        "peak RSS {peak_kib} KiB, grown by {grown_kib} KiB over the run; {with_args} of {PROCESSES} records with arguments; {missing:?}; lookups timed out: {}",
        stats["conntrace"]["lookups_timed_out"]
    );
    assert!(with_args > 0, "no record carried arguments");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB, over 64 MiB");
    // The caches are bounded at 8 MiB of process details; the rest of the growth is
    // allocator slack.
    assert!(grown_kib < 16 * 1024, "RSS grew by {grown_kib} KiB");
}

/// A `/proc/PID/status` memory line (`VmRSS:`, `VmHWM:`) in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}
