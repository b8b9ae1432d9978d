//! The processes of one benchmark trial (the load generator, conntrace, bpftrace) and
//! what is read about them from /proc. Every child is killed and reaped when its guard
//! drops, whatever happened; the load generator's network namespace goes with it.
use std::{
    fs,
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    os::fd::{FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::mpsc::{self, Receiver, RecvTimeoutError, Sender},
    thread::{self, JoinHandle},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use super::stats::parse_rfc3339_ns;

/// Latency samples kept per trial (8 bytes each); later records are not sampled.
const MAX_LATENCY_SAMPLES: usize = 4_000_000;
/// How long a tracer may take to attach.
const ATTACH_LIMIT: Duration = Duration::from_secs(90);
/// How long a tracer may take to drain and exit after SIGINT.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// A child that is killed and reaped on drop unless it was reaped already.
struct Guarded {
    child: Child,
    reaped: bool,
}

impl Guarded {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    /// Waits up to `limit` for the exit (then kills); returns the wait status and the
    /// child's resource usage. Having to kill it is an error.
    fn wait_rusage(&mut self, limit: Duration) -> anyhow::Result<(i32, libc::rusage)> {
        match self.wait_or_kill(limit)? {
            (status, usage, false) => Ok((status, usage)),
            (_, _, true) => bail!("did not exit within {limit:?} and was killed"),
        }
    }

    /// Like [`Guarded::wait_rusage`], but says whether it had to kill instead of failing.
    fn wait_or_kill(&mut self, limit: Duration) -> anyhow::Result<(i32, libc::rusage, bool)> {
        let deadline = Instant::now() + limit;
        let mut killed = false;
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is valid; wait4 fills it.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: our own child's pid and valid pointers.
            let r = unsafe { libc::wait4(self.pid(), &mut status, libc::WNOHANG, &mut usage) };
            if r == self.pid() {
                self.reaped = true;
                return Ok((status, usage, killed));
            }
            if r < 0 {
                return Err(std::io::Error::last_os_error()).context("wait4");
            }
            if !killed && Instant::now() > deadline {
                let _ = self.child.kill();
                killed = true;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn exit_code(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

fn proc_cpu_seconds(pid: i32) -> f64 {
    u32::try_from(pid).map_or(0.0, crate::os::proc_cpu_seconds)
}

/// Run time and run count of every BPF program a process holds, summed and by program
/// name (counted only while BPF statistics are enabled: see [`BpfStats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// Program name (as the kernel keeps it, at most 15 bytes) → (run time, run count).
    pub by_name: std::collections::BTreeMap<String, (u64, u64)>,
}

impl ProgStats {
    fn of(pid: i32) -> ProgStats {
        let mut total = ProgStats::default();
        let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            return total;
        };
        let mut seen = std::collections::BTreeSet::new();
        for entry in dir.filter_map(Result::ok) {
            let is_prog = fs::read_link(entry.path())
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog");
            if !is_prog {
                continue;
            }
            let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
            let Ok(text) = fs::read_to_string(info) else {
                continue;
            };
            let field = |key: &str| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == key).then(|| v.trim().parse::<u64>().ok())?
                })
            };
            let (Some(id), Some(time), Some(cnt)) =
                (field("prog_id"), field("run_time_ns"), field("run_cnt"))
            else {
                continue;
            };
            // One program may sit behind several descriptors: count it once.
            if !seen.insert(id) {
                continue;
            }
            total.run_time_ns += time;
            total.run_cnt += cnt;
            let name = prog_name(id).unwrap_or_else(|| format!("id {id}"));
            let slot = total.by_name.entry(name).or_default();
            slot.0 += time;
            slot.1 += cnt;
        }
        total
    }

    fn since(self, earlier: &ProgStats) -> ProgStats {
        let mut by_name = self.by_name;
        for (name, slot) in &mut by_name {
            if let Some(before) = earlier.by_name.get(name) {
                slot.0 = slot.0.saturating_sub(before.0);
                slot.1 = slot.1.saturating_sub(before.1);
            }
        }
        ProgStats {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
            by_name,
        }
    }
}

/// A BPF program's name, from its id (`BPF_PROG_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`).
fn prog_name(id: u64) -> Option<String> {
    const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    /// `struct bpf_prog_info::name` (after type, id, tag, four lengths and pointers, the
    /// load time, the uid, the map count and the map ids pointer).
    const NAME_OFFSET: usize = 64;
    let by_id: [u32; 3] = [u32::try_from(id).ok()?, 0, 0];
    // SAFETY: bpf() with an attribute of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_GET_FD_BY_ID,
            by_id.as_ptr(),
            size_of_val(&by_id),
        )
    };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: a new descriptor that nothing else owns; closed on drop.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut info = [0u64; 32];
    #[repr(C)]
    struct InfoByFd {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let attr = InfoByFd {
        bpf_fd: u32::try_from(std::os::fd::AsRawFd::as_raw_fd(&fd)).ok()?,
        info_len: u32::try_from(size_of_val(&info)).ok()?,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: bpf() with a valid attribute pointing at a buffer of `info_len` bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &raw const attr,
            size_of::<InfoByFd>(),
        )
    };
    if r != 0 {
        return None;
    }
    let bytes: Vec<u8> = info.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let name = bytes.get(NAME_OFFSET..NAME_OFFSET + 16)?;
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(String::from_utf8_lossy(&name[..end]).into_owned())
}

/// Other processes that hold BPF programs now, as `comm (pid)`: their programs may be
/// attached to the hooks we measure.
pub fn foreign_bpf_holders() -> Vec<String> {
    let me = std::process::id().to_string();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .filter_map(Result::ok)
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().into_owned();
            if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let holds = fs::read_dir(p.path().join("fd")).ok()?.any(|fd| {
                fd.is_ok_and(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy() == "anon_inode:bpf-prog")
                })
            });
            let comm = fs::read_to_string(p.path().join("comm")).ok()?;
            holds.then(|| format!("{} ({pid})", comm.trim()))
        })
        .collect()
}

/// Kernel-wide BPF run-time statistics, on while this lives (`BPF_ENABLE_STATS`: the
/// kernel turns them off again when the descriptor closes, even if we crash).
pub struct BpfStats(#[allow(dead_code, reason = "held for its Drop")] OwnedFd);

impl BpfStats {
    pub fn enable() -> anyhow::Result<BpfStats> {
        const BPF_ENABLE_STATS: libc::c_long = 32;
        const BPF_STATS_RUN_TIME: u32 = 0;
        let attr: [u32; 2] = [BPF_STATS_RUN_TIME, 0];
        // SAFETY: bpf(BPF_ENABLE_STATS) with a zero-padded attribute of the size given.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_ENABLE_STATS,
                attr.as_ptr(),
                size_of_val(&attr),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("bpf(BPF_ENABLE_STATS)");
        }
        // SAFETY: a new descriptor that nothing else owns.
        Ok(BpfStats(unsafe {
            OwnedFd::from_raw_fd(i32::try_from(fd).context("fd")?)
        }))
    }
}

/// Reads lines from a child's pipe on a thread, into a channel.
fn line_reader(pipe: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// What the load generator is asked to do.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadSpec {
    /// A `loadgen` mode.
    pub mode: &'static str,
    pub threads: usize,
    pub duration: f64,
    pub max_attempts: u64,
    pub dests: u32,
    pub rate: u64,
    /// `timeout`: connects in flight; `web`: requests in flight (0: the generator's
    /// default).
    pub inflight: u64,
}

impl LoadSpec {
    /// A load of connect() calls of our own (an event per attempt), not real software or
    /// a load that never connects.
    pub fn is_connect_storm(&self) -> bool {
        matches!(self.mode, "refused" | "success" | "timeout" | "distinct")
    }
}

/// The load generator's own count of what it did.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadResult {
    pub attempts: u64,
    pub ok: u64,
    pub refused: u64,
    pub timed_out: u64,
    pub other: u64,
    pub abandoned: u64,
    pub elapsed_s: f64,
    /// The generator's own CPU time during the load (its connect() calls, and the BPF
    /// programs that run inside them).
    pub cpu_s: f64,
    pub distinct_dests: u64,
    pub own_netns: bool,
    pub threads: usize,
}

impl LoadResult {
    pub fn rate(&self) -> f64 {
        self.attempts as f64 / self.elapsed_s.max(1e-9)
    }
}

/// A started load generator, set up in its namespace and waiting for the go.
pub struct Loadgen {
    proc: Guarded,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub netns: u64,
    pub own_netns: bool,
}

impl Loadgen {
    /// Starts the generator; whatever it writes (nginx's directory) goes below `scratch`.
    pub fn start(bin: &Path, spec: &LoadSpec, scratch: &Path) -> anyhow::Result<Loadgen> {
        let mut child = Command::new(bin)
            .env("TMPDIR", scratch)
            .arg(spec.mode)
            .args(["--threads", &spec.threads.to_string()])
            .args(["--duration", &spec.duration.to_string()])
            .args(["--max-attempts", &spec.max_attempts.to_string()])
            .args(["--dests", &spec.dests.to_string()])
            .args(["--rate", &spec.rate.to_string()])
            .args(
                (spec.inflight > 0)
                    .then(|| ["--inflight".to_owned(), spec.inflight.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .arg("--wait-go")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("start {}", bin.display()))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("loadgen stdout")?;
        let proc = Guarded {
            child,
            reaped: false,
        };
        let lines = line_reader(stdout);
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("loadgen {} did not get ready", spec.mode))?;
        let v: Value = serde_json::from_str(&ready).with_context(|| format!("loadgen: {ready}"))?;
        Ok(Loadgen {
            proc,
            stdin,
            lines,
            netns: v["netns"].as_u64().context("loadgen: no netns")?,
            own_netns: v["own_netns"].as_bool().unwrap_or(false),
        })
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("loadgen stdin")?;
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits for the result line (at most `limit`) and the exit.
    pub fn finish(mut self, limit: Duration) -> anyhow::Result<LoadResult> {
        let line = self
            .lines
            .recv_timeout(limit)
            .map_err(|_| anyhow!("loadgen gave no result within {limit:?}"))?;
        let (status, _) = self.proc.wait_rusage(Duration::from_secs(10))?;
        if exit_code(status) != Some(0) {
            bail!("loadgen failed (wait status {status})");
        }
        let v: Value = serde_json::from_str(&line).with_context(|| format!("loadgen: {line}"))?;
        let n = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(LoadResult {
            attempts: n("attempts"),
            ok: n("ok"),
            refused: n("refused"),
            timed_out: n("timed_out"),
            other: n("other"),
            abandoned: n("abandoned"),
            elapsed_s: v["elapsed_s"].as_f64().unwrap_or(0.0),
            cpu_s: v["cpu_s"].as_f64().unwrap_or(0.0),
            distinct_dests: n("distinct_dests"),
            own_netns: self.own_netns,
            threads: usize::try_from(n("threads")).unwrap_or(0),
        })
    }
}

/// Where conntrace's JSON goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// `/dev/null`: conntrace's cost alone (no stats record can be read back).
    Null,
    /// A file in the scratch directory.
    File,
    /// A pipe the harness reads, timing each record's arrival.
    Pipe,
}

/// Which conntrace binary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// The one under test (`--conntrace`, or built from this tree).
    After,
    /// The one to compare with (`--conntrace-before`).
    Before,
}

/// A tracer to run beside the load.
#[derive(Clone, Debug, PartialEq)]
pub enum TracerKind {
    Conntrace {
        build: Build,
        output: Output,
        /// `--all`: a record per outcome, successes included.
        all: bool,
        /// More `conntrace trace` arguments (ring-buffer size, wake-up batching).
        extra: Vec<String>,
    },
    Bpftrace,
}

/// Binaries and scratch space the tracers need.
pub struct Tools {
    pub conntrace: PathBuf,
    pub conntrace_before: Option<PathBuf>,
    pub bpftrace_script: Option<PathBuf>,
    pub scratch: PathBuf,
}

/// conntrace's final stats record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FinalStats {
    pub received: u64,
    pub submitted: u64,
    pub lost: u64,
    pub lost_per_cpu: Vec<u64>,
}

impl FinalStats {
    fn parse(line: &str) -> Option<FinalStats> {
        let v: Value = serde_json::from_str(line).ok()?;
        let c = &v["conntrace"];
        (c["final"] == true).then(|| FinalStats {
            received: c["received"].as_u64().unwrap_or(0),
            submitted: c["kernel_submitted"].as_u64().unwrap_or(0),
            lost: c["lost_events"].as_u64().unwrap_or(0),
            lost_per_cpu: c["lost_events_per_cpu"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_u64).collect())
                .unwrap_or_default(),
        })
    }
}

/// What a tracer cost and delivered in one trial.
#[derive(Clone, Debug, Default)]
pub struct TracerResult {
    /// CPU seconds from attached to the stop signal (start-up and shut-down excluded).
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), KiB.
    pub max_rss_kib: u64,
    /// conntrace's final stats, where its output could be read back.
    pub stats: Option<FinalStats>,
    /// Kernel timestamp → line read by the harness, ns (pipe only).
    pub latencies_ns: Vec<u64>,
    /// Lines read from the tracer's stdout (pipe and bpftrace).
    pub lines: u64,
    /// bpftrace's own "Lost N events".
    pub bpftrace_lost: Option<u64>,
    /// The tracer's BPF programs while attached (zero unless BPF stats were on).
    pub progs: ProgStats,
}

/// What a stdout-reading thread gathered.
#[derive(Default)]
struct PipeSummary {
    latencies_ns: Vec<u64>,
    lines: u64,
    stats: Option<FinalStats>,
}

pub struct Tracer {
    proc: Guarded,
    is_bpftrace: bool,
    attach_cpu: f64,
    progs_at_attach: ProgStats,
    stdout: Option<JoinHandle<PipeSummary>>,
    stderr: JoinHandle<Vec<String>>,
    file: Option<PathBuf>,
}

impl Tracer {
    /// Starts a tracer filtered to network namespace `netns` (or, where the generator
    /// has no namespace of its own, to its pid) and waits until it is attached.
    pub fn start(
        kind: &TracerKind,
        tools: &Tools,
        netns: u64,
        own_netns: bool,
        loadgen_pid: i32,
    ) -> anyhow::Result<Tracer> {
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let (mut cmd, file, is_bpftrace) = match kind {
            TracerKind::Conntrace {
                build,
                output,
                all,
                extra,
            } => {
                let bin = match build {
                    Build::After => &tools.conntrace,
                    Build::Before => tools
                        .conntrace_before
                        .as_ref()
                        .context("no --conntrace-before given")?,
                };
                let mut cmd = Command::new(bin);
                // The "attached" line at info level is how we know it is ready.
                cmd.env("RUST_LOG", "conntrace=info");
                cmd.args(["trace", "-o", "json", "--stats-interval", "0"]);
                if *all {
                    cmd.arg("--all");
                }
                if own_netns {
                    cmd.args(["--netns", &netns.to_string()]);
                } else {
                    cmd.args(["--pid", &loadgen_pid.to_string()]);
                }
                cmd.args(extra);
                let file = (*output == Output::File)
                    .then(|| tools.scratch.join(format!("conntrace-{loadgen_pid}.json")));
                match (output, &file) {
                    (Output::Null, _) => cmd.stdout(Stdio::null()),
                    (Output::File, Some(path)) => cmd.stdout(
                        fs::File::create(path)
                            .with_context(|| format!("create {}", path.display()))?,
                    ),
                    _ => cmd.stdout(Stdio::piped()),
                };
                (cmd, file, false)
            }
            TracerKind::Bpftrace => {
                let script = tools
                    .bpftrace_script
                    .as_ref()
                    .context("bpftrace is not available")?;
                let mut cmd = Command::new("bpftrace");
                // Without a namespace of our own, filter on the namespace we share.
                cmd.arg(script)
                    .arg(netns.to_string())
                    .arg(std::process::id().to_string());
                cmd.stdout(Stdio::piped());
                (cmd, None, true)
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start the tracer")?;
        let stderr_pipe = child.stderr.take().context("tracer stderr")?;
        let stdout_pipe = child.stdout.take();
        let proc = Guarded {
            child,
            reaped: false,
        };
        let stderr = {
            let tx = (!is_bpftrace).then(|| ready_tx.clone());
            thread::spawn(move || read_stderr(stderr_pipe, tx))
        };
        let stdout = stdout_pipe.map(|pipe| {
            let tx = ready_tx.clone();
            if is_bpftrace {
                thread::spawn(move || read_bpftrace(pipe, &tx))
            } else {
                thread::spawn(move || read_conntrace(pipe))
            }
        });
        drop(ready_tx);
        let ready = if is_bpftrace {
            bpftrace_canary(&ready_rx)
        } else {
            ready_rx.recv_timeout(ATTACH_LIMIT)
        };
        match ready {
            Ok(()) => {}
            Err(RecvTimeoutError::Timeout) => {
                bail!("the tracer did not attach in {ATTACH_LIMIT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => {
                drop(proc);
                let lines = stderr.join().unwrap_or_default();
                bail!("the tracer exited before attaching:\n{}", lines.join("\n"));
            }
        }
        let pid = proc.pid();
        Ok(Tracer {
            attach_cpu: proc_cpu_seconds(pid),
            progs_at_attach: ProgStats::of(pid),
            proc,
            is_bpftrace,
            stdout,
            stderr,
            file,
        })
    }

    /// SIGINT (conntrace drains and writes its final stats; bpftrace stops), then reaps.
    pub fn stop(mut self) -> anyhow::Result<TracerResult> {
        let pid = self.proc.pid();
        let progs = ProgStats::of(pid).since(&self.progs_at_attach);
        let cpu_s = (proc_cpu_seconds(pid) - self.attach_cpu).max(0.0);
        // SAFETY: kill() on our own unreaped child.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let (status, usage, killed) = self.proc.wait_or_kill(STOP_LIMIT)?;
        // bpftrace sometimes takes minutes to detach its probes after SIGINT (seen here,
        // stuck in uninterruptible sleep): its lines were already read, so killing it loses
        // nothing measured. conntrace must stop by itself.
        if killed && !self.is_bpftrace {
            bail!("did not exit within {STOP_LIMIT:?} and was killed");
        }
        if killed {
            eprintln!("bench: bpftrace did not stop within {STOP_LIMIT:?} of SIGINT; killed it");
        }
        let summary = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = std::mem::replace(&mut self.stderr, thread::spawn(Vec::new))
            .join()
            .unwrap_or_default();
        if !killed && exit_code(status) != Some(0) {
            bail!(
                "the tracer failed (wait status {status}):\n{}",
                stderr.join("\n")
            );
        }
        let stats = match &self.file {
            Some(path) => {
                let stats = final_stats_in_file(path);
                let _ = fs::remove_file(path);
                stats
            }
            None => summary.stats,
        };
        let bpftrace_lost = self.is_bpftrace.then(|| {
            stderr
                .iter()
                .filter_map(|l| {
                    let rest = l.split("Lost ").nth(1)?;
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
                .sum()
        });
        Ok(TracerResult {
            cpu_s,
            max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
            stats,
            latencies_ns: summary.latencies_ns,
            lines: summary.lines,
            bpftrace_lost,
            progs,
        })
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Some(path) = &self.file {
            let _ = fs::remove_file(path);
        }
    }
}

/// Connects to this namespace's loopback (port 9, refused or not) every 100 ms until
/// bpftrace's last probe reports it: then every probe is attached.
fn bpftrace_canary(ready: &Receiver<()>) -> Result<(), RecvTimeoutError> {
    let deadline = Instant::now() + ATTACH_LIMIT;
    let canary = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    while Instant::now() < deadline {
        let _ = std::net::TcpStream::connect_timeout(&canary, Duration::from_millis(100));
        match ready.recv_timeout(Duration::from_millis(100)) {
            Err(RecvTimeoutError::Timeout) => {}
            other => return other,
        }
    }
    Err(RecvTimeoutError::Timeout)
}

/// Keeps the last lines of a tracer's stderr; signals `ready` at conntrace's "attached".
fn read_stderr(pipe: impl std::io::Read, ready: Option<Sender<()>>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    let mut ready = ready;
    for line in BufReader::new(pipe).lines().map_while(Result::ok) {
        if line.contains("attached")
            && let Some(tx) = ready.take()
        {
            let _ = tx.send(());
        }
        if kept.len() >= 40 {
            kept.remove(0);
        }
        kept.push(line);
    }
    kept
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Reads conntrace's JSON lines as they arrive: the delay of every `LATENCY_SAMPLE`th
/// event record (sampling keeps this reader cheap: it shares the CPUs with what it
/// measures), and the final stats record.
fn read_conntrace(pipe: impl std::io::Read) -> PipeSummary {
    const KEY: &[u8] = b"{\"@timestamp\":\"";
    const EVENT: &[u8] = b"\"event\":{\"kind\":\"event\"";
    const LATENCY_SAMPLE: u64 = 8;
    let mut out = PipeSummary {
        latencies_ns: Vec::with_capacity(1 << 16),
        ..PipeSummary::default()
    };
    let mut reader = BufReader::with_capacity(1 << 20, pipe);
    let mut line = Vec::with_capacity(1024);
    let mut events = 0u64;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        out.lines += 1;
        // `{"@timestamp":"<30 bytes>","event":{"kind":"event"`: the kind sits at a fixed place.
        let is_event = line.get(KEY.len() + 32..KEY.len() + 32 + EVENT.len()) == Some(EVENT);
        if is_event {
            events += 1;
            if !events.is_multiple_of(LATENCY_SAMPLE)
                || out.latencies_ns.len() >= MAX_LATENCY_SAMPLES
            {
                continue;
            }
            let arrived = unix_now_ns();
            let ts = line
                .get(KEY.len()..KEY.len() + 30)
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(parse_rfc3339_ns);
            if let Some(ts) = ts {
                out.latencies_ns.push(arrived.saturating_sub(ts));
            }
        } else {
            let text = String::from_utf8_lossy(&line);
            if text.contains("\"final\":true") {
                out.stats = FinalStats::parse(&text);
            }
        }
    }
    out
}

/// Counts bpftrace's lines; signals `ready` at the script's `READY` line.
fn read_bpftrace(pipe: impl std::io::Read, ready: &Sender<()>) -> PipeSummary {
    let mut out = PipeSummary::default();
    let mut reader = BufReader::with_capacity(1 << 16, pipe);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        match line.trim_end() {
            "READY" => {
                let _ = ready.send(());
            }
            // Start-up chatter and the blank lines END prints.
            l if l.is_empty() || l.starts_with("Attaching") => {}
            _ => out.lines += 1,
        }
    }
    out
}

/// The final stats record near the end of a JSON-lines file.
fn final_stats_in_file(path: &Path) -> Option<FinalStats> {
    let mut f = fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)))
        .ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    String::from_utf8_lossy(&tail)
        .lines()
        .rev()
        .find(|l| l.contains("\"final\":true"))
        .and_then(FinalStats::parse)
}
