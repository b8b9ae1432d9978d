//! A running conntrace whose stdout and stderr are kept byte for byte, for tests that assert
//! on exactly what reaches a terminal (text output, escapes) rather than on JSON records.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
};

use crate::tracer::start_timeout;

pub struct RawRun {
    child: Child,
    stdout: Option<thread::JoinHandle<Vec<u8>>>,
    stderr: Option<thread::JoinHandle<Vec<u8>>>,
}

/// How a run ended, and every byte it wrote.
#[derive(Debug)]
pub struct RawOutput {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl RawRun {
    /// Starts `cmd` (conntrace, or a wrapper such as setpriv that runs it) with colourless
    /// logs, and waits until a line of its stderr contains `ready` (the programs are
    /// attached by then).
    pub fn start(mut cmd: Command, ready: &str) -> RawRun {
        let mut child = cmd
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start conntrace");
        let mut out = child.stdout.take().expect("stdout");
        let stdout = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = out.read_to_end(&mut bytes);
            bytes
        });
        let err = child.stderr.take().expect("stderr");
        let (tx, started) = mpsc::channel();
        let ready = ready.as_bytes().to_vec();
        let stderr = thread::spawn(move || {
            let mut all = Vec::new();
            let mut reader = BufReader::new(err);
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                eprint!("[conntrace] {}", String::from_utf8_lossy(&line));
                if line.windows(ready.len()).any(|w| w == ready.as_slice()) {
                    let _ = tx.send(());
                }
                all.extend_from_slice(&line);
            }
            all
        });
        let limit = start_timeout();
        if started.recv_timeout(limit).is_err() {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "conntrace did not start within {limit:?}: {}",
                String::from_utf8_lossy(&err)
            );
        }
        RawRun {
            child,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    /// Stops it with SIGINT and returns everything it wrote.
    pub fn stop(self) -> RawOutput {
        // SAFETY: kill() with a valid pid and signal.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Waits for it to end by itself and returns everything it wrote.
    pub fn wait(mut self) -> RawOutput {
        let status = self.child.wait().expect("wait for conntrace");
        let join = |h: Option<thread::JoinHandle<Vec<u8>>>| {
            h.and_then(|h| h.join().ok()).unwrap_or_default()
        };
        RawOutput {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
        }
    }
}

impl Drop for RawRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `bytes` hold something a terminal would act on: a C0 control other than the
/// newline that ends a line, DEL, or a C1 control encoded as UTF-8 (`C2 80`–`C2 9F`).
pub fn raw_controls(bytes: &[u8]) -> Vec<usize> {
    (0..bytes.len())
        .filter(|&i| {
            let b = bytes[i];
            let c1 = b == 0xC2 && bytes.get(i + 1).is_some_and(|n| (0x80..=0x9F).contains(n));
            (b < 0x20 && b != b'\n') || b == 0x7F || c1
        })
        .collect()
}
