//! The benchmark's sections: what is run, in which order, and what is kept. Rendering is
//! `report`'s business.
use std::collections::BTreeSet;

use super::{
    Ctx, Trial, Variant,
    proc::{Build, LoadSpec, Output, foreign_bpf_holders},
    with_bpf_stats,
};

/// One row of a comparison: a configuration and its trials, one per round.
#[derive(Clone, Debug)]
pub struct Row {
    pub variant: Variant,
    pub trials: Vec<Trial>,
    /// This configuration's rate over the untraced rate of the same round.
    pub ratios: Vec<f64>,
}

/// Configurations run interleaved on one load; the first row is always "none".
#[derive(Clone, Debug)]
pub struct Comparison {
    pub title: String,
    pub rows: Vec<Row>,
}

/// The cardinality run and a single-destination run of the same size, for its RSS.
#[derive(Clone, Debug)]
pub struct Cardinality {
    pub distinct: Trial,
    pub single: Trial,
}

/// The failure storm at one ring-buffer size.
#[derive(Clone, Debug)]
pub struct RingProbe {
    pub bytes: u32,
    pub trials: Vec<Trial>,
}

/// A load of the host sections (the web server, the loads that never connect) run once
/// more with BPF run-time statistics on: which of a conntrace's programs ran, how often,
/// for how long.
#[derive(Clone, Debug)]
pub struct KernelRun {
    /// The `loadgen` mode.
    pub load: &'static str,
    pub variant: Variant,
    pub trial: Trial,
}

#[derive(Clone, Debug, Default)]
pub struct Results {
    pub overhead: Vec<Comparison>,
    /// A getppid() loop: what a tracer costs every other system call on the host.
    pub syscalls: Option<Comparison>,
    /// nginx serving `ab`, a connect per request.
    pub web: Option<Comparison>,
    /// The loads that never connect but pass through conntrace's hooks.
    pub hooks: Vec<Comparison>,
    pub kernel_runs: Vec<KernelRun>,
    pub timeouts: Option<Comparison>,
    pub cardinality: Option<Cardinality>,
    pub ring: Vec<RingProbe>,
    pub wakeup: Vec<Comparison>,
    /// The refused storm traced by conntrace with one generator thread, then with all of
    /// them: does the time per program run grow when more CPUs write into the one ring
    /// buffer?
    pub contention: Vec<Trial>,
    /// Kernel BPF run-time statistics were on for the kernel-side sections.
    pub bpf_stats: bool,
    /// Other processes holding BPF programs while we measured (their programs may run on
    /// the same hooks and tax every configuration, the untraced one included).
    pub foreign: BTreeSet<String>,
    pub bpftrace: bool,
    pub wakeup_batch_supported: bool,
    /// An older conntrace ran beside this one (`--conntrace-before`).
    pub before: bool,
}

pub fn run_all(ctx: &Ctx) -> anyhow::Result<Results> {
    let mut r = Results {
        bpftrace: ctx.tools.bpftrace_script.is_some(),
        wakeup_batch_supported: ctx.has_wakeup_batch,
        before: ctx.tools.conntrace_before.is_some(),
        ..Results::default()
    };
    let p = &ctx.preset;
    for &load in p.overhead_loads {
        let mut variants = vec![
            Variant::none(),
            Variant::conntrace(Output::Null, &[]),
            Variant::conntrace(Output::File, &[]),
            Variant::conntrace(Output::Pipe, &[]),
        ];
        variants.extend(before(ctx, Variant::conntrace_before(Output::File)));
        let variants = with_bpftrace(ctx, variants);
        let spec = ctx.load(load);
        r.overhead.push(compare(
            ctx,
            &spec,
            &variants,
            p.rounds,
            describe_load(ctx, load),
        )?);
    }

    host_sections(ctx, &mut r)?;

    let mut spec = ctx.load("timeout");
    spec.inflight = p.timeout_inflight;
    let mut variants = vec![Variant::none(), Variant::conntrace(Output::File, &[])];
    if p.bpftrace_everywhere {
        variants = with_bpftrace(ctx, variants);
    }
    r.timeouts = Some(compare(
        ctx,
        &spec,
        &variants,
        p.timeout_rounds,
        describe_load(ctx, "timeout"),
    )?);

    r.cardinality = Some(cardinality(ctx)?);
    r.ring = ring_search(ctx)?;

    let wakeup_variants = {
        let mut v = vec![Variant::none(), Variant::conntrace(Output::Pipe, &[])];
        v.extend(before(ctx, Variant::conntrace_before(Output::Pipe)));
        if ctx.has_wakeup_batch {
            for &n in p.wakeup_batches {
                v.push(Variant::conntrace(
                    Output::Pipe,
                    &["--wakeup-batch".into(), n.to_string()],
                ));
            }
        }
        if p.bpftrace_everywhere {
            v = with_bpftrace(ctx, v);
        }
        v
    };
    let (stats_on, wakeup, contention) = with_bpf_stats(|on| {
        let mut out = Vec::new();
        let full = ctx.load("refused");
        out.push(compare(
            ctx,
            &full,
            &wakeup_variants,
            p.wakeup_rounds,
            describe_load(ctx, "refused"),
        )?);
        if p.steady_rate > 0 {
            let mut steady = ctx.load("refused");
            steady.rate = p.steady_rate;
            out.push(compare(
                ctx,
                &steady,
                &wakeup_variants,
                p.wakeup_rounds,
                format!(
                    "refused, at a steady {} connects/s ({} threads)",
                    p.steady_rate, ctx.threads
                ),
            )?);
        }
        let mut contention = Vec::new();
        let mut threads = vec![1];
        if ctx.threads > 1 {
            threads.push(ctx.threads);
        }
        for n in threads {
            let mut spec = ctx.load("refused");
            spec.threads = n;
            contention.push(ctx.trial(&spec, &Variant::conntrace(Output::Pipe, &[]))?);
        }
        Ok((on, out, contention))
    })?;
    r.bpf_stats = stats_on;
    r.wakeup = wakeup;
    r.contention = contention;
    r.foreign = ctx.foreign.borrow().clone();
    Ok(r)
}

/// `variant` if an older conntrace was given.
fn before(ctx: &Ctx, variant: Variant) -> Option<Variant> {
    ctx.tools.conntrace_before.is_some().then_some(variant)
}

/// What a tracer costs the host beyond its connects: the syscall tax, a web server that
/// connects and serves normally, the hooks that packets pass through.
fn host_sections(ctx: &Ctx, r: &mut Results) -> anyhow::Result<()> {
    let p = &ctx.preset;
    // conntrace as a user runs it (`trace -o json`, to a file), older and newer, and with
    // the syscall tracepoints asked for.
    let plain = |opt_in: bool, bpftrace: bool| {
        let mut v = vec![Variant::none()];
        v.extend(before(ctx, Variant::conntrace_plain(Build::Before, &[])));
        v.push(Variant::conntrace_plain(Build::After, &[]));
        if opt_in && ctx.has_connect_hook {
            v.push(Variant::conntrace_plain(
                Build::After,
                &["--connect-hook".into(), "syscalls".into()],
            ));
        }
        if bpftrace { with_bpftrace(ctx, v) } else { v }
    };
    r.syscalls = Some(compare(
        ctx,
        &ctx.load("syscalls"),
        &plain(true, p.host_everywhere),
        p.rounds,
        describe_load(ctx, "syscalls"),
    )?);
    let web = ctx.load("web");
    r.web = Some(compare(
        ctx,
        &web,
        &plain(p.host_everywhere, p.host_everywhere),
        p.rounds,
        describe_load(ctx, "web"),
    )?);
    // bpftrace's script has no hook on these paths: it would only show the noise.
    let hook_variants = plain(false, false);
    for &load in p.hook_loads {
        r.hooks.push(compare(
            ctx,
            &ctx.load(load),
            &hook_variants,
            p.rounds,
            describe_load(ctx, load),
        )?);
    }
    // Statistics cost every program run a little: apart from the comparisons.
    r.kernel_runs = with_bpf_stats(|on| {
        let mut out = Vec::new();
        if !on {
            return Ok(out);
        }
        for &load in std::iter::once(&"web").chain(p.hook_loads) {
            for variant in hook_variants.iter().filter(|v| v.tracer.is_some()) {
                out.push(KernelRun {
                    load,
                    variant: variant.clone(),
                    trial: ctx.trial(&ctx.load(load), variant)?,
                });
            }
        }
        Ok(out)
    })?;
    Ok(())
}

fn with_bpftrace(ctx: &Ctx, mut v: Vec<Variant>) -> Vec<Variant> {
    if ctx.tools.bpftrace_script.is_some() {
        v.push(Variant::bpftrace());
    }
    v
}

fn describe_load(ctx: &Ctx, load: &str) -> String {
    let what = match load {
        "refused" => "connects to a closed port on loopback (refused)",
        "success" => "connects to a listener that accepts and closes (success)",
        "timeout" => "non-blocking connects whose SYNs are dropped (timeout, tcp_syn_retries=1)",
        "distinct" => "refused connects to distinct loopback addresses",
        "syscalls" => "getppid() in a loop, no connect at all",
        "web" => "nginx serving a 612-byte file to ab over loopback, keep-alive off",
        "udp-closed" => "UDP to a closed port, each packet dropped on arrival (NO_SOCKET)",
        "udp-dropped" => "UDP dropped by an nftables output rule (NETFILTER_DROP, socket attached)",
        "udp-unroutable" => "UDP to an address without a route (failed route lookups)",
        _ => load,
    };
    format!("{load}: {what}, {} threads", ctx.threads)
}

/// Runs every variant once per round, in an order rotated by one each round.
fn compare(
    ctx: &Ctx,
    spec: &LoadSpec,
    variants: &[Variant],
    rounds: usize,
    title: String,
) -> anyhow::Result<Comparison> {
    let mut rows: Vec<Row> = variants
        .iter()
        .map(|v| Row {
            variant: v.clone(),
            trials: Vec::new(),
            ratios: Vec::new(),
        })
        .collect();
    let n = variants.len();
    for round in 0..rounds {
        eprintln!("bench: {title}: round {}/{rounds}", round + 1);
        ctx.foreign.borrow_mut().extend(foreign_bpf_holders());
        let mut rates = vec![0.0; n];
        for k in 0..n {
            let i = (k + round) % n;
            let trial = ctx.trial(spec, &variants[i])?;
            rates[i] = trial.load.rate();
            rows[i].trials.push(trial);
        }
        for (row, rate) in rows.iter_mut().zip(&rates) {
            if rates[0] > 0.0 {
                row.ratios.push(rate / rates[0]);
            }
        }
    }
    Ok(Comparison { title, rows })
}

fn cardinality(ctx: &Ctx) -> anyhow::Result<Cardinality> {
    let p = &ctx.preset;
    let attempts = u64::from(p.cardinality_dests) * p.cardinality_passes;
    let variant = Variant::conntrace(Output::File, &[]);
    let mut spec = ctx.load("distinct");
    spec.dests = p.cardinality_dests;
    spec.max_attempts = attempts;
    // Bounded by the attempt count; the time bound only guards against a stall.
    spec.duration = 300.0;
    let distinct = ctx.trial(&spec, &variant)?;
    let mut single = ctx.load("refused");
    single.max_attempts = attempts;
    single.duration = 300.0;
    let single = ctx.trial(&single, &variant)?;
    Ok(Cardinality { distinct, single })
}

/// The refused storm (the highest failure rate the generator makes) with ever larger ring
/// buffers, from one page up, until `ring_confirm` runs in a row lose nothing.
fn ring_search(ctx: &Ctx) -> anyhow::Result<Vec<RingProbe>> {
    let p = &ctx.preset;
    let spec = ctx.load("refused");
    let mut probes = Vec::new();
    let mut bytes: u32 = 4096;
    loop {
        let variant = Variant::conntrace(
            Output::File,
            &["--ring-buffer-size".into(), bytes.to_string()],
        );
        let mut trials = Vec::new();
        for _ in 0..p.ring_confirm {
            let t = ctx.trial(&spec, &variant)?;
            let lost = t
                .tracer
                .as_ref()
                .and_then(|r| r.stats.as_ref())
                .map_or(1, |s| s.lost);
            trials.push(t);
            if lost > 0 {
                break;
            }
        }
        let clean = trials.len() == p.ring_confirm
            && trials.iter().all(|t| {
                t.tracer
                    .as_ref()
                    .and_then(|r| r.stats.as_ref())
                    .is_some_and(|s| s.lost == 0)
            });
        probes.push(RingProbe { bytes, trials });
        if clean || bytes >= p.ring_max {
            break;
        }
        bytes = bytes.saturating_mul(2);
    }
    Ok(probes)
}
