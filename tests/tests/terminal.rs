//! What reaches the operator's terminal when a process names itself with control
//! characters: a real python3, renamed through `/proc/self/comm` and run from a path with
//! an escape sequence in it, connects to a refused port; `trace -o text` and `diagnose`'s
//! text report must write no control byte but the newlines that end their lines, and show
//! the name and path escaped.
use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use harness::{
    netns::Pair,
    require_root,
    run::{RawOutput, RawRun, raw_controls},
    tracer::conntrace_bin,
};

/// The name the client gives itself (12 bytes, under comm's 15): erase the screen, then a
/// carriage return and newline to forge a row, a C1 CSI in UTF-8, DEL, and a byte that is
/// not UTF-8.
const HOSTILE_COMM: &[u8] = b"a\x1b[2J\r\n\xc2\x9b\x7f\xffz";
/// How conntrace must show it: the invalid byte decoded as U+FFFD, every control escaped.
const ESCAPED_COMM: &str = "a\\x1b[2J\\r\\n\\u{9b}\\x7f\u{fffd}z";
/// The client's executable file name: set the window title (OSC ... BEL), then a newline.
const HOSTILE_EXE: &str = "py\x1b]0;pwned\x07\nthon";
const ESCAPED_EXE: &str = "py\\x1b]0;pwned\\x07\\nthon";

/// A directory with a copy of python3 under a hostile name, removed on drop.
struct HostileBinary {
    dir: PathBuf,
    exe: PathBuf,
}

impl HostileBinary {
    fn new() -> HostileBinary {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ct-hostile-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        let guard = HostileBinary {
            exe: dir.join(HOSTILE_EXE),
            dir,
        };
        // A copy, not a symlink: /proc/PID/exe names the file that was executed.
        std::fs::copy(python3(), &guard.exe).expect("copy python3");
        guard
    }
}

impl Drop for HostileBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The python3 interpreter itself (`cargo xtask setup` installs Debian's), as an ELF file:
/// the `python3` first in PATH may be a shell-script shim (pyenv) that a copy would break,
/// so python3 is asked where its executable is.
fn python3() -> PathBuf {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; sys.stdout.write(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("python3 (install it: cargo xtask setup)");
    assert!(out.status.success(), "python3 -c failed");
    let python = PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path"));
    let mut magic = [0u8; 4];
    std::io::Read::read_exact(
        &mut std::fs::File::open(&python).expect("open python3"),
        &mut magic,
    )
    .expect("read python3");
    assert_eq!(
        &magic,
        b"\x7fELF",
        "{} is not an executable",
        python.display()
    );
    python
}

/// Renames itself, connects once to ADDR:81 (refused), and stays alive long enough for
/// conntrace to read its executable.
const CLIENT: &str = "
import socket, sys, time
open('/proc/self/comm', 'wb').write(bytes.fromhex(sys.argv[2]))
s = socket.socket()
try:
    s.connect((sys.argv[1], 81))
    sys.exit('connected: expected a refusal')
except ConnectionRefusedError:
    pass
time.sleep(1.5)
";

fn run_client(pair: &Pair, exe: &Path) {
    let hex: String = HOSTILE_COMM.iter().map(|b| format!("{b:02x}")).collect();
    let out = pair
        .client
        .command(&[])
        .arg(exe)
        .args(["-c", CLIENT, &pair.server_v4, &hex])
        .output()
        .expect("run the hostile python3");
    assert!(
        out.status.success(),
        "python3 client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn conntrace(args: &[&str], netns: &Path) -> Command {
    let mut cmd = Command::new(conntrace_bin());
    cmd.args(args).arg("--netns").arg(netns);
    cmd
}

/// No byte a terminal would act on, in either stream; the offsets and text if there is.
fn assert_terminal_safe(what: &str, out: &RawOutput) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let at = raw_controls(bytes);
        assert!(
            at.is_empty(),
            "{what} wrote raw control bytes to {stream} at {at:?}: {:?}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn hostile_names_and_paths_reach_the_terminal_escaped() {
    require_root();
    let pair = Pair::on_unique_subnet("hostile");
    let binary = HostileBinary::new();
    let netns = pair.client.path();
    let trace = RawRun::start(
        conntrace(
            &["trace", "-o", "text", "--all", "--stats-interval", "0"],
            &netns,
        ),
        "conntrace: tracing TCP connects",
    );
    let diagnose = RawRun::start(
        conntrace(&["diagnose", "--duration", "120"], &netns),
        "diagnose: watching",
    );
    run_client(&pair, &binary.exe);
    std::thread::sleep(Duration::from_millis(500));
    let traced = trace.stop();
    let diagnosed = diagnose.stop();

    assert!(traced.status.success(), "trace: {}", traced.status);
    assert_terminal_safe("trace -o text", &traced);
    let table = String::from_utf8(traced.stdout.clone()).expect("UTF-8 table");
    let rows: Vec<&str> = table.lines().filter(|l| l.contains("refused")).collect();
    assert_eq!(
        rows.len(),
        1,
        "one row for the one refused connect: {table}"
    );
    assert!(
        rows[0].contains(&format!(" {ESCAPED_COMM} ")),
        "the row shows the escaped name: {table}"
    );
    assert!(
        String::from_utf8_lossy(&traced.stderr).contains("conntrace: final stats"),
        "the stats line is on stderr"
    );

    assert_eq!(
        diagnosed.status.code(),
        Some(1),
        "diagnose found the failure"
    );
    assert_terminal_safe("diagnose", &diagnosed);
    let report = String::from_utf8(diagnosed.stdout.clone()).expect("UTF-8 report");
    let heading = format!("#1  {ESCAPED_COMM} → {}:81  (pid ", pair.server_v4);
    let line = report
        .lines()
        .find(|l| l.starts_with(&heading))
        .unwrap_or_else(|| panic!("no finding headed {heading:?}: {report}"));
    assert!(
        line.ends_with(&format!("/{ESCAPED_EXE})")),
        "the executable is shown escaped: {line}"
    );
}
