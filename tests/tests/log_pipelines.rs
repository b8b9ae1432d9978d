//! What log shippers consume: `--output-file`, rotated by Debian's logrotate (which moves
//! the file, then sends SIGHUP) and by size, with no record lost or written twice.
use std::{
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use harness::{
    TempDir,
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::{checked, conntrace_bin},
};
use serde_json::Value;

/// The complete records of a file (none if it does not exist): conntrace may be in the
/// middle of writing the last one.
fn records_in(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(checked).collect()
}

/// Waits until `path` holds `n` connect records; all its records.
fn wait_for_connects(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = records_in(path);
        let connects = all
            .iter()
            .filter(|r| r["event"]["action"] == "connect")
            .count();
        if connects >= n || Instant::now() > deadline {
            assert_eq!(connects, n, "{}: {all:#?}", path.display());
            return all;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn refused(pair: &Pair, count: u32) {
    let r = pair.client(&[
        "connect",
        "--addr",
        SERVER_V4,
        "--port",
        "81",
        "--count",
        &count.to_string(),
    ]);
    assert_eq!(r.reports.len(), count as usize);
}

/// A conntrace writing to a file, killed on drop.
struct Running(Option<Child>);

impl Running {
    fn start(pair: &Pair, args: &[&str]) -> Running {
        let child = Command::new(conntrace_bin())
            .args(["trace", "--all", "--stats-interval", "0", "--netns"])
            .arg(pair.client.path())
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Running(Some(child))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().unwrap().id()
    }

    /// SIGTERM; what it wrote on stdout.
    fn stop(mut self) -> String {
        let child = self.0.take().unwrap();
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    }

    fn alive(&mut self) -> bool {
        self.0.as_mut().unwrap().try_wait().unwrap().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn logrotate_moves_the_file_and_sighup_reopens_it() {
    require_root();
    let dir = TempDir::new("logrotate");
    let log = dir.path().join("conntrace.json");
    let pair = Pair::new("rotate");
    let mut tracer = Running::start(&pair, &["--output-file", log.to_str().unwrap()]);
    let first = wait_for_start(&log);
    assert_eq!(first["event"]["action"], "start");
    refused(&pair, 3);
    wait_for_connects(&log, 3);
    // Debian's logrotate, as a cron job would run it: move, then signal conntrace.
    let config = dir.path().join("logrotate.conf");
    std::fs::write(
        &config,
        format!(
            "{} {{\n  rotate 2\n  missingok\n  nocompress\n  postrotate\n    kill -HUP {}\n  \
             endscript\n}}\n",
            log.display(),
            tracer.pid()
        ),
    )
    .unwrap();
    let state = dir.path().join("logrotate.state");
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(&config)
        .output()
        .expect("logrotate (cargo xtask setup installs it)");
    assert!(out.status.success(), "logrotate: {out:?}");
    let rotated = dir.path().join("conntrace.json.1");
    assert!(rotated.exists(), "logrotate moved the file");
    refused(&pair, 2);
    wait_for_connects(&log, 2);
    assert!(
        tracer.alive(),
        "SIGHUP reopened the file, it did not end the run"
    );
    assert_eq!(tracer.stop(), "", "nothing on stdout");
    let before = records_in(&rotated);
    let after = records_in(&log);
    let connects = |all: &[Value]| {
        all.iter()
            .filter(|r| r["event"]["action"] == "connect")
            .count()
    };
    assert_eq!((connects(&before), connects(&after)), (3, 2));
    assert_eq!(before[0]["event"]["action"], "start");
    let last = after.last().unwrap();
    assert_eq!(last["conntrace"]["final"], true, "{last}");
    assert_eq!(last["conntrace"]["received"], 5, "{last}");
}

#[test]
fn size_rotation_keeps_n_files_and_loses_nothing_in_them() {
    require_root();
    let dir = TempDir::new("sizerotate");
    let log = dir.path().join("ct.json");
    let pair = Pair::new("size");
    let tracer = Running::start(
        &pair,
        &[
            "--output-file",
            log.to_str().unwrap(),
            "--output-file-max-size",
            "4K",
            "--output-file-keep",
            "9",
        ],
    );
    wait_for_start(&log);
    // About 20 KiB of records: four or five rotations, fewer than the nine kept.
    refused(&pair, 30);
    thread::sleep(Duration::from_millis(500));
    tracer.stop();
    let mut all = Vec::new();
    for n in (1..=9).rev() {
        all.extend(records_in(&dir.path().join(format!("ct.json.{n}"))));
    }
    all.extend(records_in(&log));
    assert!(dir.path().join("ct.json.3").exists(), "rotated by size");
    for n in 1..=9 {
        let size = std::fs::metadata(dir.path().join(format!("ct.json.{n}")))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size < 4096 + 2048, "ct.json.{n}: {size} bytes");
    }
    assert_eq!(all[0]["event"]["action"], "start", "oldest first");
    let connects = all
        .iter()
        .filter(|r| r["event"]["action"] == "connect")
        .count();
    assert_eq!(connects, 30);
    assert_eq!(all.last().unwrap()["conntrace"]["final"], true);
}

#[test]
fn an_output_file_that_cannot_be_opened_exits_5_before_loading() {
    let out = Command::new(conntrace_bin())
        .args(["trace", "--output-file", "/nonexistent-dir/ct.json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the output") && err.contains("No such file"),
        "{err}"
    );
}

/// The start record, once conntrace has written it to the file.
fn wait_for_start(path: &Path) -> Value {
    let deadline = Instant::now() + harness::tracer::start_timeout();
    loop {
        if let Some(first) = records_in(path).into_iter().next() {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "no start record in {}",
            path.display()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Debian's rsyslogd with a configuration of its own: TCP and UDP inputs on loopback, and
/// every message's RFC 5424 fields written to a file, one line each.
struct Rsyslog {
    _daemon: harness::Killed,
    tcp: u16,
    udp: u16,
    messages: std::path::PathBuf,
    _dir: TempDir,
}

impl Rsyslog {
    fn start() -> Rsyslog {
        let dir = TempDir::new("rsyslog");
        let (tcp, udp) = (harness::http::free_port(), harness::http::free_port());
        let messages = dir.path().join("messages");
        let config = dir.path().join("rsyslog.conf");
        std::fs::write(
            &config,
            format!(
                "global(workDirectory=\"{dir}\")\n\
                 module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{tcp}\")\n\
                 module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{udp}\")\n\
                 template(name=\"fields\" type=\"string\" string=\"%protocol-version%|%syslogseverity-text%|%app-name%|%procid%|%msgid%|%msg%\\n\")\n\
                 *.* action(type=\"omfile\" file=\"{messages}\" template=\"fields\")\n",
                dir = dir.path().display(),
                messages = messages.display()
            ),
        )
        .unwrap();
        let daemon = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&config)
            .arg("-i")
            .arg(dir.path().join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (cargo xtask setup installs Debian's rsyslog)");
        let r = Rsyslog {
            _daemon: harness::Killed(daemon),
            tcp,
            udp,
            messages,
            _dir: dir,
        };
        // Listening once a TCP connect succeeds.
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", r.tcp)).is_err() {
            assert!(Instant::now() < deadline, "rsyslogd does not listen");
            thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// The messages from conntrace process `pid`, as (severity, msgid, record), once one
    /// is the final stats.
    fn from(&self, pid: u32) -> Vec<(String, String, Value)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.messages).unwrap_or_default();
            let got: Vec<(String, String, Value)> = text
                .lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.splitn(6, '|').collect();
                    (f.len() == 6 && f[0] == "1" && f[2] == "conntrace" && f[3] == pid.to_string())
                        .then(|| (f[1].to_owned(), f[4].to_owned(), checked(f[5])))
                })
                .collect();
            if got.iter().any(|(_, _, r)| r["conntrace"]["final"] == true) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "no final stats from {pid}: {text}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn rsyslog_receives_one_rfc5424_message_per_record() {
    require_root();
    let rsyslog = Rsyslog::start();
    let pair = Pair::new("syslog");
    for address in [
        format!("tcp:127.0.0.1:{}", rsyslog.tcp),
        format!("udp:127.0.0.1:{}", rsyslog.udp),
    ] {
        let tracer = Running::start(&pair, &["--syslog", &address]);
        // The start record arrives once the programs are attached.
        let deadline = Instant::now() + harness::tracer::start_timeout();
        while !std::fs::read_to_string(&rsyslog.messages)
            .unwrap_or_default()
            .contains(&format!("|conntrace|{}|start|", tracer.pid()))
        {
            assert!(Instant::now() < deadline, "{address}: no start record");
            thread::sleep(Duration::from_millis(50));
        }
        refused(&pair, 3);
        thread::sleep(Duration::from_millis(300));
        let pid = tracer.pid();
        assert_eq!(tracer.stop(), "", "nothing on stdout");
        let got = rsyslog.from(pid);
        let connects: Vec<_> = got.iter().filter(|(_, id, _)| id == "connect").collect();
        assert_eq!(connects.len(), 3, "{address}: {got:#?}");
        for (severity, _, record) in &connects {
            assert_eq!(severity, "notice", "a failure: {record}");
            assert_eq!(record["event"]["reason"], "refused");
        }
        assert_eq!(got[0].1, "start", "{address}");
        let (severity, id, last) = got.last().unwrap();
        assert_eq!((severity.as_str(), id.as_str()), ("info", "stats"));
        assert_eq!(last["conntrace"]["received"], 3, "{address}");
    }
}
