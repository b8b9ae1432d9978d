//! `cargo xtask bench`: what conntrace costs, measured side by side with no tracer and with
//! bpftrace doing the equivalent work, and written to docs/benchmarks.md.
//!
//! Every figure comes from a trial: the load generator (`loadgen`, in a network namespace
//! of its own) runs a load for a few seconds (a connect() storm, nginx serving `ab`, or a
//! load that never connects: a system-call loop, UDP packets dropped or unroutable) while
//! a tracer, or none, watches that namespace. Configurations are interleaved round by
//! round (A, B, C, A, B, C, ...) and compared within a round, so that drift on the machine
//! hits them alike. With `--conntrace-before`, an older conntrace runs in the same rounds,
//! so that every figure is shown before and after a change.
mod proc;
mod report;
mod sections;
mod stats;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{os::PrivateDir, setup, util};
use proc::{
    BpfStats, Build, LoadResult, LoadSpec, Loadgen, Tools, Tracer, TracerKind, TracerResult,
};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct Args {
    /// About a minute or two: fewer and shorter rounds.
    #[arg(long)]
    pub quick: bool,
    /// About half a minute: one tiny round of each section, to check that the harness works
    /// (its figures mean nothing).
    #[arg(long, conflicts_with = "quick")]
    pub smoke: bool,
    /// Load-generator threads [default: the number of CPUs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Interleaved rounds per comparison (overrides the preset).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds of load per trial (overrides the preset).
    #[arg(long)]
    pub seconds: Option<f64>,
    /// This conntrace binary instead of building one. With --loadgen, no cargo is needed.
    #[arg(long, value_name = "PATH")]
    pub conntrace: Option<PathBuf>,
    /// An older conntrace to compare with, in the same interleaved rounds: each section
    /// then shows none / before / after / bpftrace.
    #[arg(long, value_name = "PATH")]
    pub conntrace_before: Option<PathBuf>,
    /// This load generator binary instead of building one.
    #[arg(long, value_name = "PATH")]
    pub loadgen: Option<PathBuf>,
    /// Where to write the report [default: docs/benchmarks.md in the workspace; with
    /// --smoke, conntrace-bench-smoke.md in cargo's target directory].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Name of this run's block in the report file: a rerun replaces its own block and
    /// keeps the rest [default: "main", or "N-threads" with --threads].
    #[arg(long)]
    pub label: Option<String>,
    /// Leave bpftrace out even where it is installed.
    #[arg(long)]
    pub no_bpftrace: bool,
}

/// How much of everything to run.
#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub rounds: usize,
    pub seconds: f64,
    /// The loads of the overhead comparison.
    pub overhead_loads: &'static [&'static str],
    pub timeout_rounds: usize,
    /// `timeout`: connects in flight (the generator caps it by its descriptor limit).
    pub timeout_inflight: u64,
    pub cardinality_dests: u32,
    /// Passes over the destinations.
    pub cardinality_passes: u64,
    /// Zero-loss runs a ring-buffer size needs in a row to count as enough.
    pub ring_confirm: usize,
    pub ring_max: u32,
    pub wakeup_rounds: usize,
    /// Attempts per second of the steady (not saturating) load (0: no steady load).
    pub steady_rate: u64,
    /// `--wakeup-batch` values compared with the default (0: a wake-up per record).
    pub wakeup_batches: &'static [u32],
    /// bpftrace in the timeout and kernel-side sections too (its start-up takes seconds).
    pub bpftrace_everywhere: bool,
    /// The loads that never connect, for the hooks they pass through (`kfree_skb`,
    /// `fib_table_lookup`): `loadgen` modes.
    pub hook_loads: &'static [&'static str],
    /// bpftrace and `--connect-hook syscalls` in the web section too.
    pub host_everywhere: bool,
    /// Time given to a tracer after the load ends, before SIGINT (its flush tick is 200
    /// ms; the final drain reads the rest anyway).
    pub settle: Duration,
}

impl Preset {
    fn of(args: &Args) -> Preset {
        let mut p = if args.smoke {
            Preset {
                name: "smoke",
                rounds: 1,
                seconds: 0.3,
                overhead_loads: &["refused"],
                timeout_rounds: 1,
                timeout_inflight: 200,
                cardinality_dests: 2_000,
                cardinality_passes: 1,
                ring_confirm: 1,
                ring_max: 8 * 1024,
                wakeup_rounds: 1,
                steady_rate: 0,
                wakeup_batches: &[0],
                bpftrace_everywhere: false,
                hook_loads: &["udp-dropped"],
                host_everywhere: false,
                settle: Duration::from_millis(100),
            }
        } else if args.quick {
            Preset {
                name: "quick",
                rounds: 3,
                seconds: 1.0,
                overhead_loads: &["refused", "success"],
                timeout_rounds: 1,
                timeout_inflight: 16_384,
                cardinality_dests: 100_000,
                cardinality_passes: 1,
                ring_confirm: 1,
                ring_max: 64 << 20,
                wakeup_rounds: 1,
                steady_rate: 10_000,
                wakeup_batches: &[0],
                bpftrace_everywhere: false,
                hook_loads: HOOK_LOADS,
                host_everywhere: true,
                settle: SETTLE,
            }
        } else {
            Preset {
                name: "full",
                rounds: 7,
                seconds: 5.0,
                overhead_loads: &["refused", "success"],
                timeout_rounds: 3,
                timeout_inflight: 16_384,
                cardinality_dests: 100_000,
                cardinality_passes: 2,
                ring_confirm: 2,
                ring_max: 64 << 20,
                wakeup_rounds: 5,
                steady_rate: 10_000,
                wakeup_batches: &[0, 8, 32],
                bpftrace_everywhere: true,
                hook_loads: HOOK_LOADS,
                host_everywhere: true,
                settle: SETTLE,
            }
        };
        if let Some(r) = args.rounds {
            p.rounds = r.max(1);
            p.wakeup_rounds = r.max(1);
        }
        if let Some(s) = args.seconds {
            p.seconds = s;
        }
        p
    }
}

/// Packets dropped on arrival (NO_SOCKET) and on the way out (NETFILTER_DROP, the reason
/// conntrace looks at), and failed route lookups.
const HOOK_LOADS: &[&str] = &["udp-closed", "udp-dropped", "udp-unroutable"];

/// What every trial needs.
pub struct Ctx {
    pub loadgen: PathBuf,
    pub tools: Tools,
    pub threads: usize,
    pub preset: Preset,
    /// conntrace knows `--wakeup-batch`.
    pub has_wakeup_batch: bool,
    /// conntrace knows `--connect-hook` (and so can be asked for the syscall tracepoints).
    pub has_connect_hook: bool,
    /// Other processes seen holding BPF programs (see `sections::Results::foreign`).
    pub foreign: std::cell::RefCell<std::collections::BTreeSet<String>>,
}

/// One configuration in a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub label: String,
    /// `None`: no tracer.
    pub tracer: Option<TracerKind>,
}

impl Variant {
    pub fn none() -> Variant {
        Variant {
            label: "none".into(),
            tracer: None,
        }
    }

    /// The conntrace under test, with `--all` (a record per outcome, successes included).
    pub fn conntrace(output: proc::Output, extra: &[String]) -> Variant {
        Variant::conntrace_of(Build::After, output, true, extra)
    }

    /// The older conntrace (`--conntrace-before`), with `--all` and its default settings.
    pub fn conntrace_before(output: proc::Output) -> Variant {
        Variant::conntrace_of(Build::Before, output, true, &[])
    }

    /// `conntrace trace -o json` as a user runs it: failures written, successes counted.
    pub fn conntrace_plain(build: Build, extra: &[String]) -> Variant {
        Variant::conntrace_of(build, proc::Output::File, false, extra)
    }

    fn conntrace_of(build: Build, output: proc::Output, all: bool, extra: &[String]) -> Variant {
        let to = match output {
            proc::Output::Null => "/dev/null",
            proc::Output::File => "file",
            proc::Output::Pipe => "pipe",
        };
        let name = match build {
            Build::After => "conntrace",
            Build::Before => "conntrace before",
        };
        let mut label = format!("{name} → {to}");
        if !extra.is_empty() {
            label += &format!(" ({})", extra.join(" "));
        }
        Variant {
            label,
            tracer: Some(TracerKind::Conntrace {
                build,
                output,
                all,
                extra: extra.to_vec(),
            }),
        }
    }

    /// conntrace as built from this tree with `output` and its default settings.
    pub fn is_default_conntrace(&self, output: proc::Output) -> bool {
        matches!(&self.tracer, Some(TracerKind::Conntrace { build: Build::After, output: o, extra, .. })
            if *o == output && extra.is_empty())
    }

    /// The older conntrace (always with its default settings).
    pub fn is_before(&self) -> bool {
        matches!(
            self.tracer,
            Some(TracerKind::Conntrace {
                build: Build::Before,
                ..
            })
        )
    }

    /// conntrace asked for the syscall tracepoints (`--connect-hook syscalls`).
    pub fn is_syscalls_opt_in(&self) -> bool {
        matches!(&self.tracer, Some(TracerKind::Conntrace { extra, .. })
            if extra.iter().any(|a| a == "syscalls"))
    }

    pub fn is_bpftrace(&self) -> bool {
        self.tracer == Some(TracerKind::Bpftrace)
    }

    pub fn bpftrace() -> Variant {
        Variant {
            label: "bpftrace → pipe".into(),
            tracer: Some(TracerKind::Bpftrace),
        }
    }

    pub fn is_conntrace(&self) -> bool {
        matches!(self.tracer, Some(TracerKind::Conntrace { .. }))
    }
}

/// One run of the load with one tracer (or none).
#[derive(Clone, Debug)]
pub struct Trial {
    pub load: LoadResult,
    pub tracer: Option<TracerResult>,
    /// Events the load should have produced: a record per attempt, two per successful
    /// connect (`--all`: established, then closed); 0 for the loads that never connect.
    pub expected_events: u64,
}

/// Time given to a tracer after the load ends, before SIGINT: its flush tick is 200 ms.
const SETTLE: Duration = Duration::from_millis(400);

impl Ctx {
    pub fn load(&self, mode: &'static str) -> LoadSpec {
        LoadSpec {
            mode,
            threads: self.threads,
            duration: self.preset.seconds,
            max_attempts: 0,
            dests: 1,
            rate: 0,
            inflight: 0,
        }
    }

    pub fn trial(&self, spec: &LoadSpec, variant: &Variant) -> anyhow::Result<Trial> {
        let mut generator = Loadgen::start(&self.loadgen, spec, &self.tools.scratch)?;
        let tracer = variant
            .tracer
            .as_ref()
            .map(|kind| {
                Tracer::start(
                    kind,
                    &self.tools,
                    generator.netns,
                    generator.own_netns,
                    generator.pid(),
                )
            })
            .transpose()
            .with_context(|| format!("start {}", variant.label))?;
        generator.go()?;
        let bound = Duration::from_secs_f64(spec.duration) + Duration::from_secs(120);
        let load = generator.finish(bound)?;
        let tracer = match tracer {
            Some(t) => {
                std::thread::sleep(self.preset.settle);
                Some(
                    t.stop()
                        .with_context(|| format!("stop {}", variant.label))?,
                )
            }
            None => None,
        };
        let expected_events = if spec.is_connect_storm() {
            2 * load.ok + (load.attempts - load.ok.min(load.attempts))
        } else {
            0
        };
        eprintln!(
            "bench: {:>9} {:<42} {:>9.0}/s  {}",
            spec.mode,
            variant.label,
            load.rate(),
            tracer.as_ref().map_or_else(String::new, describe)
        );
        Ok(Trial {
            load,
            tracer,
            expected_events,
        })
    }
}

fn describe(t: &TracerResult) -> String {
    let mut s = format!("cpu {:.3}s rss {} KiB", t.cpu_s, t.max_rss_kib);
    if let Some(st) = &t.stats {
        let _ = write!(s, " received {} lost {}", st.received, st.lost);
    }
    if let Some(lost) = t.bpftrace_lost {
        let _ = write!(s, " lines {} lost {lost}", t.lines);
    }
    s
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    require_root()?;
    let preset = Preset::of(args);
    if !(preset.seconds > 0.0 && preset.seconds <= 600.0) {
        bail!("--seconds must be between 0 and 600");
    }
    let (conntrace, loadgen) = binaries(args)?;
    let conntrace_before = args.conntrace_before.as_deref().map(absolute).transpose()?;
    let scratch = PrivateDir::new("conntrace-bench").context("create a scratch directory")?;
    let bpftrace = if args.no_bpftrace {
        None
    } else {
        util::output("bpftrace", &["--version"])
    };
    let bpftrace_script = match &bpftrace {
        Some(_) => {
            let path = scratch.path().join("conntrace-equivalent.bt");
            std::fs::write(&path, include_str!("bench/equivalent.bt"))?;
            Some(path)
        }
        None => None,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let help = util::output(conntrace.to_str().unwrap_or_default(), &["trace", "--help"])
        .unwrap_or_default();
    let ctx = Ctx {
        loadgen,
        tools: Tools {
            conntrace: conntrace.clone(),
            conntrace_before: conntrace_before.clone(),
            bpftrace_script,
            scratch: scratch.path().to_path_buf(),
        },
        threads,
        preset,
        has_wakeup_batch: help.contains("--wakeup-batch"),
        has_connect_hook: help.contains("--connect-hook"),
        foreign: std::cell::RefCell::default(),
    };
    let started = std::time::Instant::now();
    let results = sections::run_all(&ctx)?;
    let machine = report::Machine::here(
        &conntrace,
        conntrace_before.as_deref(),
        bpftrace.as_deref(),
        threads,
        &ctx.preset,
        started.elapsed(),
    );
    let label = args.label.clone().unwrap_or_else(|| match args.threads {
        Some(n) => format!("{n}-threads"),
        None => "main".into(),
    });
    let block = report::render(&label, &machine, &results);
    let out = match &args.out {
        Some(p) => p.clone(),
        // Not in /tmp under a name anyone could guess (and plant a link at).
        None if args.smoke => util::target_dir()?.join("conntrace-bench-smoke.md"),
        None => util::workspace_root().join("docs/benchmarks.md"),
    };
    report::write_block(&out, &label, &block)?;
    eprintln!(
        "bench: wrote {} ({:.0} s)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The conntrace and loadgen binaries: the ones given, or release builds.
fn binaries(args: &Args) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(c), Some(l)) = (&args.conntrace, &args.loadgen) {
        return Ok((absolute(c)?, absolute(l)?));
    }
    setup::run(&setup::Args {
        toolchain: true,
        no_vm: true,
        bench: !args.no_bpftrace,
    })?;
    let release = util::target_dir()?.join("release");
    let conntrace = match &args.conntrace {
        Some(c) => absolute(c)?,
        None => util::build_release_conntrace()?,
    };
    let loadgen = match &args.loadgen {
        Some(l) => absolute(l)?,
        None => {
            util::cargo(&[
                "build",
                "--release",
                "--package",
                "xtask",
                "--bin",
                "loadgen",
            ])?;
            release.join("loadgen")
        }
    };
    Ok((conntrace, loadgen))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    if !abs.is_file() {
        bail!("{} is not a file", abs.display());
    }
    Ok(abs)
}

fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads eBPF programs and creates network namespaces: run as root");
    }
    Ok(())
}

/// The command line this run was started with, as a user would type it.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let prog = if std::env::var_os("CARGO").is_some() {
        "cargo xtask".to_owned()
    } else {
        std::env::args().next().unwrap_or_else(|| "xtask".into())
    };
    std::iter::once(prog)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `uname -r`, without a process.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// Runs `f` with kernel BPF statistics on (when the kernel allows it).
pub fn with_bpf_stats<T>(f: impl FnOnce(bool) -> anyhow::Result<T>) -> anyhow::Result<T> {
    match BpfStats::enable() {
        Ok(guard) => {
            let out = f(true);
            drop(guard);
            out
        }
        Err(e) => {
            eprintln!("bench: no BPF run-time statistics ({e:#}); kernel-side cost not measured");
            f(false)
        }
    }
}
