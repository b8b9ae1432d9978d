//! `--on-verdict CMD`: runs a command for each new verdict, with the verdict's JSON record
//! on stdin and its essentials in environment variables. Off the event loop: a bounded
//! queue feeds a fixed number of worker threads (`--on-verdict-jobs`); each run has a
//! time limit, after which its process group is killed; its exit status and the tail of
//! its output are logged. The command is run directly (split like a shell would split
//! words, but without a shell) unless `--on-verdict-shell` asks for `sh -c`.
use std::{
    io::{Read as _, Write as _},
    os::unix::process::CommandExt as _,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// Verdicts waiting for a worker; past this, a verdict's command is not run (and said so).
const QUEUE: usize = 64;
/// Output kept from a run, from its end: enough for an error message, bounded.
const TAIL_BYTES: usize = 2048;
/// Between SIGTERM and SIGKILL for a run past its time.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// `--on-verdict` and its bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookOptions {
    /// The program and its arguments (`sh -c CMD` with `--on-verdict-shell`).
    pub argv: Vec<String>,
    pub timeout: Duration,
    pub jobs: usize,
}

impl HookOptions {
    /// Splits `cmd` into words (quotes and backslashes as in a shell, nothing else), or
    /// hands it to `sh -c` when asked.
    pub fn parse(cmd: &str, shell: bool, timeout: Duration, jobs: usize) -> Result<Self, String> {
        let argv = if shell {
            vec!["/bin/sh".into(), "-c".into(), cmd.into()]
        } else {
            shlex::split(cmd)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("--on-verdict {cmd:?}: unbalanced quotes, or empty"))?
        };
        if jobs == 0 {
            return Err("--on-verdict-jobs must be at least 1".into());
        }
        Ok(HookOptions {
            argv,
            timeout,
            jobs,
        })
    }
}

/// One run to make.
pub struct Job {
    /// What the log calls it: `failing curl → 10.0.0.2:80`.
    pub label: String,
    /// The verdict record, one JSON line.
    pub stdin: Vec<u8>,
    pub env: Vec<(&'static str, String)>,
}

/// The workers and their queue.
pub struct Hook {
    tx: Option<mpsc::SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    running: Arc<AtomicUsize>,
}

impl Hook {
    pub fn start(options: HookOptions) -> std::io::Result<Hook> {
        let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let options = Arc::new(options);
        let running = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for i in 0..options.jobs {
            let (rx, options, running) = (rx.clone(), options.clone(), running.clone());
            workers.push(
                std::thread::Builder::new()
                    .name(format!("conntrace-hook-{i}"))
                    .spawn(move || {
                        loop {
                            let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                            let Ok(job) = job else { break };
                            running.fetch_add(1, Ordering::SeqCst);
                            run(&options, &job);
                            running.fetch_sub(1, Ordering::SeqCst);
                        }
                    })?,
            );
        }
        Ok(Hook {
            tx: Some(tx),
            workers,
            running,
        })
    }

    /// Queues a run; a full queue drops it, saying so.
    pub fn submit(&self, job: Job) {
        let Some(tx) = &self.tx else { return };
        if let Err(mpsc::TrySendError::Full(job)) = tx.try_send(job) {
            tracing::warn!(
                "on-verdict: {} runs are waiting already; not running it for {}",
                QUEUE,
                job.label
            );
        }
    }

    /// No more runs; waits up to `grace` for the queued and running ones, then leaves
    /// whatever still runs to finish on its own (a restart half done is worse than one
    /// that finishes after conntrace).
    pub fn close(&mut self, grace: Duration) {
        self.tx = None;
        let deadline = Instant::now() + grace;
        while self.workers.iter().any(|w| !w.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.running.load(Ordering::SeqCst);
        if left > 0 {
            tracing::info!("on-verdict: {left} runs still going at exit, left to finish");
        }
    }
}

/// Runs the command once for a job and logs how it went.
fn run(options: &HookOptions, job: &Job) {
    let started = Instant::now();
    let (program, args) = match options.argv.split_first() {
        Some(p) => p,
        None => return,
    };
    let child = Command::new(program)
        .args(args)
        .envs(job.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("on-verdict: cannot run {program} for {}: {e}", job.label);
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its stdin is fine: a verdict fits in a pipe.
        let _ = stdin.write_all(&job.stdin);
    }
    let tails: Vec<_> = [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|r| std::thread::spawn(move || tail(r)))
    .collect();
    let status = wait(&mut child, options.timeout);
    let output: Vec<String> = tails
        .into_iter()
        .filter_map(|t| t.join().ok())
        .filter(|t| !t.is_empty())
        .collect();
    let took = started.elapsed().as_secs_f64();
    let output = output.join(" | ");
    match status {
        Some(s) if s.success() => tracing::info!(
            "on-verdict: {program} for {}: exit 0 after {took:.2}s; output: {output:?}",
            job.label
        ),
        Some(s) => tracing::warn!(
            "on-verdict: {program} for {}: {s} after {took:.2}s; output: {output:?}",
            job.label
        ),
        None => tracing::warn!(
            "on-verdict: {program} for {}: still running after {:.0}s, killed; output: {output:?}",
            job.label,
            options.timeout.as_secs_f64()
        ),
    }
}

/// Waits for the child up to `timeout`; past it, kills its process group.
fn wait(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let group = i32::try_from(child.id()).unwrap_or(0);
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break,
        }
    }
    for (sig, pause) in [(libc::SIGTERM, KILL_GRACE), (libc::SIGKILL, Duration::ZERO)] {
        // SAFETY: signalling the process group the child leads (process_group(0)).
        unsafe { libc::kill(-group, sig) };
        let until = Instant::now() + pause;
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.wait();
    None
}

/// The last [`TAIL_BYTES`] of a stream, as text on one line.
fn tail(mut r: Box<dyn std::io::Read + Send>) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf) {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * TAIL_BYTES {
            kept.drain(..kept.len() - TAIL_BYTES);
        }
    }
    let start = kept.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&kept[start..])
        .trim()
        .replace('\n', " / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_without_a_shell_unless_asked() {
        let o = HookOptions::parse(
            "/usr/local/bin/restart 'my service' --now",
            false,
            Duration::from_secs(1),
            1,
        )
        .unwrap();
        assert_eq!(o.argv, ["/usr/local/bin/restart", "my service", "--now"]);
        let o = HookOptions::parse("a | b", true, Duration::from_secs(1), 1).unwrap();
        assert_eq!(o.argv, ["/bin/sh", "-c", "a | b"]);
        assert!(HookOptions::parse("'open", false, Duration::from_secs(1), 1).is_err());
        assert!(HookOptions::parse("", false, Duration::from_secs(1), 1).is_err());
        assert!(HookOptions::parse("x", false, Duration::from_secs(1), 0).is_err());
    }

    #[test]
    fn runs_with_stdin_and_environment_and_kills_past_the_timeout() {
        let dir = std::env::temp_dir().join(format!("conntrace-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let script = format!(
            "cat > {0}.stdin; echo \"$CONNTRACE_VERDICT_STATE\" > {0}.env; sleep \"$SLEEP\"; \
             echo done > {0}.done",
            out.display()
        );
        let mut hook = Hook::start(HookOptions {
            argv: vec!["/bin/sh".into(), "-c".into(), script],
            timeout: Duration::from_millis(500),
            jobs: 1,
        })
        .unwrap();
        hook.submit(Job {
            label: "test".into(),
            stdin: b"{\"a\":1}\n".to_vec(),
            env: vec![
                ("CONNTRACE_VERDICT_STATE", "failing".into()),
                ("SLEEP", "0".into()),
            ],
        });
        hook.submit(Job {
            label: "slow".into(),
            stdin: Vec::new(),
            env: vec![
                ("CONNTRACE_VERDICT_STATE", "x".into()),
                ("SLEEP", "30".into()),
            ],
        });
        let started = Instant::now();
        hook.close(Duration::from_secs(10));
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "the slow one was killed"
        );
        let read = |ext: &str| std::fs::read_to_string(out.with_extension(ext)).unwrap_or_default();
        assert_eq!(read("stdin"), "");
        assert_eq!(read("env"), "x\n");
        assert_eq!(read("done"), "done\n", "the first run finished");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
