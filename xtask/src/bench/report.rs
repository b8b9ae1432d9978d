//! The report: machine, command, tables, targets and what they mean, as a Markdown block
//! that replaces its own earlier version in the report file and leaves the rest alone.
//! The sections about the host beyond connects (the syscall tax, a web server, the hooks
//! of other traffic) and the before/after summary are in `host`.
mod host;

use std::{collections::BTreeMap, fmt::Write as _, path::Path, time::Duration};

use anyhow::Context as _;

use super::{
    Preset, Trial,
    proc::Output,
    sections::{Cardinality, Comparison, Results, RingProbe, Row},
    stats::{median, percentile},
};

/// Where and how the figures were made.
pub struct Machine {
    pub cpus: usize,
    pub model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub command: String,
    pub conntrace: String,
    /// `--conntrace-before`, described as `conntrace` is.
    pub conntrace_before: Option<String>,
    pub bpftrace: String,
    pub threads: usize,
    pub preset: Preset,
    pub date: String,
    pub wall: Duration,
    /// /proc/loadavg when the report was written.
    pub loadavg: String,
}

impl Machine {
    pub fn here(
        conntrace: &Path,
        conntrace_before: Option<&Path>,
        bpftrace: Option<&str>,
        threads: usize,
        preset: &Preset,
        wall: Duration,
    ) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map_or_else(|| "unknown".into(), |m| m.trim().to_owned()),
            memory_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
            kernel: super::kernel_release(),
            command: super::command_line(),
            conntrace: describe_binary(conntrace),
            conntrace_before: conntrace_before.map(describe_binary),
            bpftrace: bpftrace.map_or_else(|| "bpftrace: not available".into(), str::to_owned),
            threads,
            preset: preset.clone(),
            date: utc_date(),
            wall,
            loadavg: std::fs::read_to_string("/proc/loadavg")
                .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
                .unwrap_or_default(),
        }
    }
}

/// A conntrace binary's version, and the commit of the checkout it lies in (a build
/// directory is inside the checkout it was built from), so that a report says what was
/// compared.
fn describe_binary(bin: &Path) -> String {
    let version = crate::util::output(bin.to_str().unwrap_or_default(), &["--version"])
        .unwrap_or_else(|| "conntrace (version unknown)".into());
    let dir = bin.parent().and_then(Path::to_str).unwrap_or(".");
    match crate::util::output(
        "git",
        &[
            "-C",
            dir,
            "describe",
            "--always",
            "--dirty=, with local changes",
            "--abbrev=7",
        ],
    ) {
        Some(commit) => format!("{version} (checkout at {commit})"),
        None => version,
    }
}

fn utc_date() -> String {
    crate::util::output("date", &["-u", "+%Y-%m-%d"]).unwrap_or_else(|| "unknown".into())
}

// ---- what a row of trials adds up to ----

/// Events a trial's tracer delivered: conntrace's `received`, bpftrace's lines; `None`
/// where the output was discarded.
fn delivered(t: &Trial) -> Option<u64> {
    let r = t.tracer.as_ref()?;
    match (&r.stats, r.bpftrace_lost) {
        (Some(s), _) => Some(s.received),
        (None, Some(_)) => Some(r.lines),
        _ => None,
    }
}

fn lost(t: &Trial) -> Option<u64> {
    let r = t.tracer.as_ref()?;
    r.stats.as_ref().map(|s| s.lost).or(r.bpftrace_lost)
}

/// Events the tracer handled: what it delivered, else (output discarded) what the load
/// produced.
fn handled(t: &Trial) -> u64 {
    delivered(t).unwrap_or(t.expected_events)
}

fn sum_opt(trials: &[Trial], f: impl Fn(&Trial) -> Option<u64>) -> Option<u64> {
    trials.iter().map(f).sum()
}

fn cpu_us_per_event(trials: &[Trial]) -> Option<f64> {
    let per: Vec<f64> = trials
        .iter()
        .filter_map(|t| {
            let r = t.tracer.as_ref()?;
            let n = handled(t);
            (n > 0).then(|| r.cpu_s * 1e6 / n as f64)
        })
        .collect();
    median(&per)
}

fn peak_rss_mib(trials: &[Trial]) -> Option<f64> {
    trials
        .iter()
        .filter_map(|t| t.tracer.as_ref())
        .map(|r| r.max_rss_kib as f64 / 1024.0)
        .reduce(f64::max)
}

fn latency_ms(trials: &[Trial]) -> Option<(f64, f64)> {
    let mut all: Vec<u64> = trials
        .iter()
        .filter_map(|t| t.tracer.as_ref())
        .flat_map(|r| r.latencies_ns.iter().copied())
        .collect();
    let p50 = percentile(&mut all, 50.0)?;
    let p99 = percentile(&mut all, 99.0)?;
    Some((p50 as f64 / 1e6, p99 as f64 / 1e6))
}

/// Kernel-side BPF time per event and per program run, ns.
fn kernel_ns(trials: &[Trial]) -> Option<(f64, f64)> {
    let (mut time, mut runs, mut events) = (0u64, 0u64, 0u64);
    for t in trials {
        let r = t.tracer.as_ref()?;
        time += r.progs.run_time_ns;
        runs += r.progs.run_cnt;
        events += handled(t);
    }
    (runs > 0 && events > 0).then(|| (time as f64 / events as f64, time as f64 / runs as f64))
}

fn median_rate(row: &Row) -> Option<f64> {
    median(&row.trials.iter().map(|t| t.load.rate()).collect::<Vec<_>>())
}

/// The generator's own CPU per connect attempt, µs (median over trials): the kernel's
/// connect path plus every BPF program that runs inside it. CPU time, unlike the rate,
/// hardly depends on what else the machine runs.
fn generator_us(trials: &[Trial]) -> Option<f64> {
    median(
        &trials
            .iter()
            .filter(|t| t.load.attempts > 0 && t.load.cpu_s > 0.0)
            .map(|t| t.load.cpu_s * 1e6 / t.load.attempts as f64)
            .collect::<Vec<_>>(),
    )
}

// ---- formatting ----

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn opt(v: Option<String>) -> String {
    v.unwrap_or_else(|| "—".into())
}

fn pct(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

fn us(x: f64) -> String {
    format!("{x:.2} µs")
}

fn mib(x: f64) -> String {
    format!("{x:.1} MiB")
}

fn bytes(n: u32) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

fn delay(trials: &[Trial]) -> String {
    opt(latency_ms(trials).map(|(a, b)| format!("{a:.1} / {b:.1} ms")))
}

struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: Vec<&str>) -> Table {
        Table {
            header: header.into_iter().map(str::to_owned).collect(),
            rows: Vec::new(),
        }
    }

    fn render(&self) -> String {
        let mut s = format!("| {} |\n|", self.header.join(" | "));
        for i in 0..self.header.len() {
            s += if i == 0 { "---|" } else { "---:|" };
        }
        s += "\n";
        for r in &self.rows {
            s += &format!("| {} |\n", r.join(" | "));
        }
        s
    }
}

/// "100 %" for the untraced row, else the median of the per-round ratios.
fn vs_none(row: &Row) -> String {
    if row.variant.tracer.is_some() {
        opt(median(&row.ratios).map(pct))
    } else {
        "100 %".into()
    }
}

fn traced_sum(row: &Row, f: impl Fn(&Trial) -> Option<u64>) -> String {
    opt(row
        .variant
        .tracer
        .is_some()
        .then(|| sum_opt(&row.trials, f).map(thousands))
        .flatten())
}

fn overhead_table(c: &Comparison) -> String {
    let mut t = Table::new(vec![
        "tracer",
        "runs",
        "connects/s (median)",
        "vs none (median of pairs)",
        "generator CPU per connect",
        "events produced",
        "delivered",
        "lost",
        "tracer CPU per event",
        "peak RSS",
        "kernel→JSON delay p50 / p99",
    ]);
    for row in &c.rows {
        let trials = &row.trials;
        let produced: u64 = trials.iter().map(|t| t.expected_events).sum();
        let delivered = match (row.variant.tracer.is_some(), sum_opt(trials, delivered)) {
            (false, _) => "—".into(),
            (true, Some(d)) => thousands(d),
            (true, None) => "not read (discarded)".into(),
        };
        t.rows.push(vec![
            row.variant.label.clone(),
            trials.len().to_string(),
            opt(median_rate(row).map(|r| thousands(r as u64))),
            vs_none(row),
            opt(generator_us(trials).map(us)),
            thousands(produced),
            delivered,
            traced_sum(row, lost),
            opt(cpu_us_per_event(trials).map(us)),
            opt(peak_rss_mib(trials).map(mib)),
            delay(trials),
        ]);
    }
    t.render()
}

fn timeout_table(c: &Comparison) -> String {
    let mut t = Table::new(vec![
        "tracer",
        "runs",
        "connects",
        "timed out",
        "timeouts/s",
        "delivered",
        "lost",
        "tracer CPU per event",
        "peak RSS",
    ]);
    for row in &c.rows {
        let trials = &row.trials;
        let attempts: u64 = trials.iter().map(|t| t.load.attempts).sum();
        let timed_out: u64 = trials.iter().map(|t| t.load.timed_out).sum();
        let rate = median(
            &trials
                .iter()
                .map(|t| t.load.timed_out as f64 / t.load.elapsed_s.max(1e-9))
                .collect::<Vec<_>>(),
        );
        t.rows.push(vec![
            row.variant.label.clone(),
            trials.len().to_string(),
            thousands(attempts),
            thousands(timed_out),
            opt(rate.map(|r| thousands(r as u64))),
            traced_sum(row, delivered),
            traced_sum(row, lost),
            opt(cpu_us_per_event(trials).map(us)),
            opt(peak_rss_mib(trials).map(mib)),
        ]);
    }
    t.render()
}

fn cardinality_table(c: &Cardinality) -> String {
    let mut t = Table::new(vec![
        "load",
        "distinct destinations",
        "connects",
        "delivered",
        "lost",
        "tracer CPU per event",
        "peak RSS",
    ]);
    for (name, trial) in [("distinct", &c.distinct), ("one destination", &c.single)] {
        let trials = std::slice::from_ref(trial);
        t.rows.push(vec![
            name.into(),
            thousands(trial.load.distinct_dests),
            thousands(trial.load.attempts),
            opt(delivered(trial).map(thousands)),
            opt(lost(trial).map(thousands)),
            opt(cpu_us_per_event(trials).map(us)),
            opt(peak_rss_mib(trials).map(mib)),
        ]);
    }
    t.render()
}

fn ring_table(probes: &[RingProbe]) -> String {
    let mut t = Table::new(vec![
        "ring buffer",
        "runs",
        "connects/s (median)",
        "events submitted",
        "lost",
        "loss",
    ]);
    for p in probes {
        let stats: Vec<_> = p
            .trials
            .iter()
            .filter_map(|t| t.tracer.as_ref()?.stats.clone())
            .collect();
        let submitted: u64 = stats.iter().map(|s| s.submitted).sum();
        let lost: u64 = stats.iter().map(|s| s.lost).sum();
        let rate = median(&p.trials.iter().map(|t| t.load.rate()).collect::<Vec<_>>());
        t.rows.push(vec![
            bytes(p.bytes),
            p.trials.len().to_string(),
            opt(rate.map(|r| thousands(r as u64))),
            thousands(submitted),
            thousands(lost),
            format!(
                "{:.2} %",
                100.0 * lost as f64 / (submitted + lost).max(1) as f64
            ),
        ]);
    }
    t.render()
}

fn wakeup_table(c: &Comparison, bpf_stats: bool) -> String {
    let mut t = Table::new(vec![
        "tracer",
        "runs",
        "connects/s (median)",
        "vs none",
        "generator CPU per connect",
        "tracer CPU per event",
        "in-kernel BPF time per event",
        "per program run",
        "lost",
        "kernel→JSON delay p50 / p99",
    ]);
    for row in &c.rows {
        let trials = &row.trials;
        let kernel = if bpf_stats { kernel_ns(trials) } else { None };
        t.rows.push(vec![
            row.variant.label.clone(),
            trials.len().to_string(),
            opt(median_rate(row).map(|r| thousands(r as u64))),
            vs_none(row),
            opt(generator_us(trials).map(us)),
            opt(cpu_us_per_event(trials).map(us)),
            opt(kernel.map(|(e, _)| format!("{e:.0} ns"))),
            opt(kernel.map(|(_, r)| format!("{r:.0} ns"))),
            traced_sum(row, lost),
            delay(trials),
        ]);
    }
    t.render()
}

/// Programs that ran less often than once per hundred units of work ran for other
/// traffic on the host (every hook is host-wide), not for the load measured.
const MIN_RUNS_PER_UNIT: f64 = 0.01;

/// One of the tracer's programs, summed over trials.
struct ProgramRuns {
    name: String,
    time_ns: u64,
    runs: u64,
}

/// The units of work of `trials` (their attempts) and the tracer's programs that ran for
/// them, by name.
fn own_programs(trials: &[Trial]) -> Option<(u64, Vec<ProgramRuns>)> {
    let mut by_name: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let mut units = 0u64;
    for t in trials {
        let r = t.tracer.as_ref()?;
        units += t.load.attempts;
        for (name, (time, cnt)) in &r.progs.by_name {
            let slot = by_name.entry(name.as_str()).or_default();
            slot.0 += time;
            slot.1 += cnt;
        }
    }
    let programs = by_name
        .into_iter()
        .filter(|(_, (_, cnt))| *cnt > 0 && *cnt as f64 >= MIN_RUNS_PER_UNIT * units as f64)
        .map(|(name, (time_ns, runs))| ProgramRuns {
            name: name.to_owned(),
            time_ns,
            runs,
        })
        .collect();
    (units > 0).then_some((units, programs))
}

/// Where the in-kernel time goes: the tracer's programs, one by one.
fn programs_table(trials: &[Trial]) -> Option<String> {
    let (attempts, programs) = own_programs(trials)?;
    if programs.is_empty() {
        return None;
    }
    let mut t = Table::new(vec![
        "program",
        "runs per connect",
        "per run",
        "per connect",
    ]);
    let mut total = 0.0;
    for p in &programs {
        let per_connect = p.time_ns as f64 / attempts as f64;
        total += per_connect;
        t.rows.push(vec![
            format!("`{}`", p.name),
            format!("{:.2}", p.runs as f64 / attempts as f64),
            format!("{:.0} ns", p.time_ns as f64 / p.runs as f64),
            format!("{per_connect:.0} ns"),
        ]);
    }
    t.rows.push(vec![
        "all".into(),
        String::new(),
        String::new(),
        format!("**{total:.0} ns**"),
    ]);
    Some(t.render())
}

fn contention_table(trials: &[Trial], bpf_stats: bool) -> String {
    let mut t = Table::new(vec![
        "generator threads",
        "connects/s",
        "events",
        "lost",
        "in-kernel BPF time per event",
        "per program run",
    ]);
    for trial in trials {
        let kernel = if bpf_stats {
            kernel_ns(std::slice::from_ref(trial))
        } else {
            None
        };
        t.rows.push(vec![
            trial.load.threads.to_string(),
            thousands(trial.load.rate() as u64),
            opt(delivered(trial).map(thousands)),
            opt(lost(trial).map(thousands)),
            opt(kernel.map(|(e, _)| format!("{e:.0} ns"))),
            opt(kernel.map(|(_, r)| format!("{r:.0} ns"))),
        ]);
    }
    t.render()
}

// ---- rows the conclusions are drawn from ----

fn find_row(c: &Comparison, f: impl Fn(&Row) -> bool) -> Option<&Row> {
    c.rows.iter().find(|r| f(r))
}

/// The conntrace under test with this output and default settings.
fn is_plain_conntrace(row: &Row, output: Output) -> bool {
    row.variant.is_default_conntrace(output)
}

fn load_name(c: &Comparison) -> &str {
    c.title.split(':').next().unwrap_or("")
}

/// Rows of the kernel-side comparison at full rate: conntrace's default, and with one
/// wake-up per record.
fn wakeup_rows(r: &Results) -> Option<(&Row, Option<&Row>)> {
    let c = r.wakeup.first()?;
    let default = find_row(c, |row| is_plain_conntrace(row, Output::Pipe))?;
    let per_record = find_row(c, |row| row.variant.label.contains("--wakeup-batch 0"));
    Some((default, per_record))
}

/// (lost, delivered, peak connects/s) over conntrace runs with default settings whose
/// output is `output`.
fn loss_with(r: &Results, output: Output) -> (u64, u64, f64) {
    let (mut lost_n, mut delivered_n, mut peak) = (0, 0, 0.0f64);
    let comparisons = r.overhead.iter().chain(&r.timeouts).chain(&r.wakeup);
    for c in comparisons {
        for row in c.rows.iter().filter(|row| is_plain_conntrace(row, output)) {
            lost_n += sum_opt(&row.trials, lost).unwrap_or(0);
            delivered_n += sum_opt(&row.trials, delivered).unwrap_or(0);
            peak = row
                .trials
                .iter()
                .map(|t| t.load.rate())
                .fold(peak, f64::max);
        }
    }
    (lost_n, delivered_n, peak)
}

// ---- targets ----

/// One target, as measured.
struct Verdict {
    target: &'static str,
    measured: String,
    met: Option<bool>,
}

fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut v = host::verdicts(r);
    // 1. Throughput with conntrace ≥ 97 % of untraced, on every load, each output.
    let mut worst: Option<(f64, String)> = None;
    for c in &r.overhead {
        for row in c
            .rows
            .iter()
            .filter(|row| row.variant.is_conntrace() && !row.variant.is_before())
        {
            if let Some(m) = median(&row.ratios)
                && worst.as_ref().is_none_or(|(w, _)| m < *w)
            {
                worst = Some((m, format!("{}, {}", load_name(c), row.variant.label)));
            }
        }
    }
    v.push(Verdict {
        target: "connect() storm at ≥ 97 % of its untraced speed",
        measured: opt(worst
            .as_ref()
            .map(|(m, which)| format!("worst median {} ({which})", pct(*m)))),
        met: worst.as_ref().map(|(m, _)| *m >= 0.97),
    });
    // 2. conntrace cheaper than bpftrace doing the same (both read through a pipe).
    if r.bpftrace {
        let mut lines = Vec::new();
        let mut all_cheaper = true;
        for c in &r.overhead {
            let ct = find_row(c, |row| is_plain_conntrace(row, Output::Pipe));
            let bt = find_row(c, |row| row.variant.is_bpftrace());
            if let (Some(ct), Some(bt)) = (ct, bt) {
                let (cr, br) = (median(&ct.ratios), median(&bt.ratios));
                let (cc, bc) = (cpu_us_per_event(&ct.trials), cpu_us_per_event(&bt.trials));
                let (cg, bg) = (generator_us(&ct.trials), generator_us(&bt.trials));
                lines.push(format!(
                    "{}: speed {} vs {}, generator CPU per connect {} vs {}, tracer CPU per \
                     event {} vs {}",
                    load_name(c),
                    opt(cr.map(pct)),
                    opt(br.map(pct)),
                    opt(cg.map(us)),
                    opt(bg.map(us)),
                    opt(cc.map(us)),
                    opt(bc.map(us))
                ));
                all_cheaper &= cr.zip(br).is_some_and(|(a, b)| a >= b)
                    && cc.zip(bc).is_some_and(|(a, b)| a < b);
            }
        }
        v.push(Verdict {
            target: "conntrace costs less than bpftrace on the same tracepoints (both → pipe; \
                     conntrace vs bpftrace)",
            measured: lines.join("; "),
            met: (!lines.is_empty()).then_some(all_cheaper),
        });
    } else {
        v.push(Verdict {
            target: "conntrace costs less than bpftrace on the same tracepoints",
            measured: "bpftrace: not available".into(),
            met: None,
        });
    }
    // 3. No loss at the highest failure rate, default buffers: conntrace's own capacity
    // (output to a file); the pipe runs also depend on the harness reading them.
    let (file_lost, file_delivered, file_peak) = loss_with(r, Output::File);
    let (pipe_lost, pipe_delivered, _) = loss_with(r, Output::Pipe);
    v.push(Verdict {
        target: "0 lost events at the highest failure rate, default buffer sizes",
        measured: format!(
            "→ file: {} lost of {} delivered (up to {} connects/s); → pipe read by the \
             harness on the same CPUs: {} lost of {}",
            thousands(file_lost),
            thousands(file_delivered),
            thousands(file_peak as u64),
            thousands(pipe_lost),
            thousands(pipe_delivered),
        ),
        met: (file_delivered > 0).then_some(file_lost == 0),
    });
    // 4. ≤ 1 µs of conntrace's CPU per event.
    let mut cpu: Vec<(f64, String)> = Vec::new();
    for c in &r.overhead {
        for row in c.rows.iter().filter(|row| {
            is_plain_conntrace(row, Output::Null) || is_plain_conntrace(row, Output::File)
        }) {
            if let Some(x) = cpu_us_per_event(&row.trials) {
                cpu.push((x, format!("{}, {}", load_name(c), row.variant.label)));
            }
        }
    }
    let worst_cpu = cpu
        .iter()
        .cloned()
        .reduce(|a, b| if b.0 > a.0 { b } else { a });
    v.push(Verdict {
        target: "≤ 1 µs of conntrace's own CPU per event",
        measured: opt(worst_cpu
            .as_ref()
            .map(|(x, which)| format!("worst median {} ({which})", us(*x)))),
        met: worst_cpu.as_ref().map(|(x, _)| *x <= 1.0),
    });
    // 5. Peak RSS ≤ 64 MiB with 100 000 distinct destinations.
    if let Some(c) = &r.cardinality {
        let rss = peak_rss_mib(std::slice::from_ref(&c.distinct));
        v.push(Verdict {
            target: "peak RSS ≤ 64 MiB with 100 000 distinct destinations",
            measured: format!(
                "{} with {} distinct destinations",
                opt(rss.map(mib)),
                thousands(c.distinct.load.distinct_dests)
            ),
            met: rss.map(|m| m <= 64.0),
        });
    }
    v
}

// ---- what it means ----

/// What the figures mean for someone deciding whether to run conntrace.
fn interpretation(r: &Results, m: &Machine) -> String {
    let mut s = host::interpretation(r);
    let refused = r.overhead.iter().find(|c| c.title.starts_with("refused"));
    let none_cpu = refused.and_then(|c| generator_us(&c.rows[0].trials));
    let file_row = refused.and_then(|c| find_row(c, |row| is_plain_conntrace(row, Output::File)));
    let traced_cpu = file_row.and_then(|row| generator_us(&row.trials));
    let ratio = file_row.and_then(|row| median(&row.ratios));
    let user = file_row.and_then(|row| cpu_us_per_event(&row.trials));
    if let (Some(none), Some(traced), Some(ratio), Some(user)) = (none_cpu, traced_cpu, ratio, user)
    {
        let added = (traced - none).max(0.0);
        let _ = write!(
            s,
            "**Cost per event.** An untraced refused connect() (socket, SYN, RST, close over \
             loopback) took {} of the generator's CPU here; traced by conntrace it took {}: \
             conntrace adds about {} to every attempt inside the connecting process (its \
             programs, the tracepoints' own work, caches shared with conntrace). \
             conntrace itself then spends {} of its own CPU per record it formats and \
             writes. A storm that keeps every CPU busy pays for both, and for conntrace's \
             share of the CPUs: it ran at {} of its untraced speed with conntrace writing to \
             a file. ",
            us(none),
            us(traced),
            us(added),
            us(user),
            pct(ratio),
        );
        let _ = write!(
            s,
            "The kernel-side part alone caps a CPU-bound storm at {} of its speed ({} / {}), \
             whatever conntrace's userspace costs; 97 % would need at most {} added per \
             attempt, less than the {} conntrace's own programs take (see the table of \
             programs below; the rest is the hooks' own machinery, and caches shared with \
             conntrace). ",
            pct(none / traced),
            us(none),
            us(traced),
            us(none * 0.03),
            wakeup_rows(r)
                .and_then(|(d, _)| kernel_ns(&d.trials))
                .map_or_else(|| "time".into(), |(k, _)| us(k / 1000.0)),
        );
        let per_10k = (added + user) * 10_000.0 / 1e6 * 100.0;
        let _ = write!(
            s,
            "As a budget: 10 000 reported connects per second (where BCC says tcplife \
             becomes noticeable) cost about {per_10k:.1} % of one CPU on this machine, kernel \
             and userspace together; 1 000 per second a tenth of that. Successful connects \
             are only counted in the kernel, not written, unless `--all` is given (these \
             runs give it).\n\n"
        );
    }
    if let Some((default, Some(per_record))) = wakeup_rows(r) {
        let kernel = |row: &Row| {
            kernel_ns(&row.trials)
                .map(|(k, _)| format!(" and {} in the kernel", us(k / 1000.0)))
                .unwrap_or_default()
        };
        let _ = write!(
            s,
            "**Wake-up batching.** With a wake-up per record (`--wakeup-batch 0`, the \
             kernel's own policy) the storm ran at {} of its untraced speed, the generator \
             spent {} per connect and conntrace {} per event{}; with the default batch \
             (`--wakeup-batch` unset): {}, {} and {}{}. A wake-up is an inter-processor \
             interrupt raised from inside the connecting process (in a virtual machine it \
             traps to the hypervisor), and every one of them costs conntrace a trip through \
             epoll. \
             Records below the batch are read on a 20 ms timer, far below the 200 ms output \
             flush, so batching costs no visible delay.\n\n",
            opt(median(&per_record.ratios).map(pct)),
            opt(generator_us(&per_record.trials).map(us)),
            opt(cpu_us_per_event(&per_record.trials).map(us)),
            kernel(per_record),
            opt(median(&default.ratios).map(pct)),
            opt(generator_us(&default.trials).map(us)),
            opt(cpu_us_per_event(&default.trials).map(us)),
            kernel(default),
        );
    }
    if let [one, all] = r.contention.as_slice()
        && let (Some((_, run1)), Some((_, run_n))) = (
            kernel_ns(std::slice::from_ref(one)),
            kernel_ns(std::slice::from_ref(all)),
        )
    {
        let growth = run_n / run1;
        let _ = write!(
            s,
            "**More ring buffers.** Every CPU reserves its records in the one ring buffer \
             under a spinlock. A BPF program run took {run1:.0} ns on average with one \
             generator thread and {run_n:.0} ns with {} ({:+.0} %). {}\n\n",
            all.load.threads,
            (growth - 1.0) * 100.0,
            if growth < 1.25 {
                "That is no sign of contention on the lock at this CPU count: a ring buffer \
                 per CPU would add maps and readers and buy nothing measurable here."
            } else {
                "The growth is contention on the lock all CPUs share: a ring buffer per CPU \
                 (or per group of CPUs) would remove it, at the price of a reader per ring."
            }
        );
    }
    if let Some(c) = &r.cardinality
        && let (Some(d), Some(one)) = (
            peak_rss_mib(std::slice::from_ref(&c.distinct)),
            peak_rss_mib(std::slice::from_ref(&c.single)),
        )
    {
        let _ = write!(
            s,
            "**Memory.** Peak RSS was {} after {} distinct destinations and {} for as many \
             connects to one destination: `trace` keeps nothing per destination.\n\n",
            mib(d),
            thousands(c.distinct.load.distinct_dests),
            mib(one),
        );
    }
    if !r.foreign.is_empty() {
        let mut by_comm: BTreeMap<&str, usize> = BTreeMap::new();
        for holder in &r.foreign {
            *by_comm
                .entry(holder.split(" (").next().unwrap_or(""))
                .or_default() += 1;
        }
        let list: Vec<String> = by_comm
            .iter()
            .map(|(comm, n)| format!("{comm} ×{n}"))
            .collect();
        let _ = writeln!(
            s,
            "**Caveat.** Other processes held BPF programs while this ran ({}); load average \
             at the end: {}. Other tracers' programs on the same tracepoints run on every \
             connect, traced or not, and other work shares the CPUs: interleaving spreads \
             that over every configuration alike, but rates are lower, and ratios noisier, \
             than on an idle machine. CPU times per connect and per event depend least on it.",
            list.join(", "),
            m.loadavg
        );
    }
    s
}

/// The sections about the host beyond connects, each with what it measures.
fn host_sections(r: &Results) -> String {
    let mut s = String::new();
    if let Some(c) = &r.syscalls {
        let _ = writeln!(
            s,
            "### The syscall tax\n\n**{}**\n\nEvery other system call on the host: a \
             loop that never connects, so whatever a tracer adds to it is a toll on every \
             process. \"Load's CPU per call\" is the loop's own CPU time per call.\n",
            c.title
        );
        s += &host::quiet_table(c, "call");
        s += "\n";
    }
    if let Some(c) = &r.web {
        let _ = writeln!(
            s,
            "### A web server\n\n**{}**\n\nReal software that connects and serves \
             normally: every request is a connect (keep-alive off), nothing fails. \
             \"nginx + ab CPU per request\" is the server's and the clients' CPU time \
             per request; \"tracer CPU per connect\" is the tracer's CPU over the \
             requests (conntrace only counts a successful connect, it writes nothing for \
             it without `--all`).\n",
            c.title
        );
        s += &host::web_table(c);
        s += "\n";
        if let Some(table) = host::kernel_table(&r.kernel_runs, |l| l == "web", "request") {
            s += "**Which programs ran per request (one more run, BPF statistics on; \
                  program names as the kernel truncates them)**\n\n";
            s += &table;
            s += "\n";
        }
    }
    if !r.hooks.is_empty() {
        s += "### Hooks on traffic that is not a connect\n\nconntrace follows connects, \
              but its hooks on dropped packets (`kfree_skb`) and on route lookups \
              (`fib_table_lookup`, attached only where no fexit or kretprobe sees \
              connect()'s return) run for every packet dropped and every route looked up \
              on the host. These loads send UDP that conntrace never reports; the sender's \
              own CPU per packet shows what the hooks add to each one. bpftrace's script \
              has no hook on these paths and is left out.\n\n";
        for c in &r.hooks {
            let _ = writeln!(s, "**{}**\n", c.title);
            s += &host::quiet_table(c, "packet");
            s += "\n";
        }
        if let Some(table) = host::kernel_table(&r.kernel_runs, |l| l != "web", "packet") {
            s += "**Which programs ran for these packets (one more run of each, BPF \
                  statistics on)**\n\n";
            s += &table;
            s += "\n";
        }
    }
    s
}

// ---- the block ----

pub fn render(label: &str, m: &Machine, r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Run `{label}`: {} CPUs, {} generator threads\n",
        m.cpus, m.threads
    );
    let _ = writeln!(
        s,
        "- Machine: {} CPUs ({}), {:.0} GiB memory, load average {} at the end\n\
         - Kernel: {}\n- Command: `{}` ({} preset: {} interleaved rounds of {} s per \
         configuration; took {:.0} s)\n- conntrace: {}{}; {}\n- Date: {}\n",
        m.cpus,
        m.model,
        m.memory_gib,
        m.loadavg,
        m.kernel,
        m.command,
        m.preset.name,
        m.preset.rounds,
        m.preset.seconds,
        m.wall.as_secs_f64(),
        m.conntrace,
        m.conntrace_before
            .as_ref()
            .map_or_else(String::new, |b| format!("; before: {b}")),
        m.bpftrace,
        m.date,
    );
    s += "Traffic never leaves the load generator's own network namespace; conntrace runs \
          with `trace -o json --all --netns <that namespace>` (a record per outcome, \
          successes included; the sections about the host run it as a user would, without \
          `--all`); bpftrace runs `xtask/src/bench/equivalent.bt` on the socket and TCP \
          tracepoints with the same filter, printing a line per outcome (no syscall \
          tracepoint: the minimal peer). \"vs none\" is \
          the median over rounds of (connects/s with the tracer) / (connects/s without any \
          tracer in the same round). \"Generator CPU per connect\" is the load generator's \
          own user + system time per attempt, which includes every BPF program run inside \
          its connect() calls. \"Events produced\" is the generator's own count (one per \
          attempt, two per successful connect: established, then closed); \"delivered\" and \
          \"lost\" are conntrace's final stats (bpftrace: its lines and its \"Lost N \
          events\"). \"Tracer CPU per event\" is the CPU time of all the tracer's threads \
          from attach to the stop signal over the events it handled. The delay runs from \
          the kernel timestamp (`@timestamp`) to the moment the harness read the line from \
          the pipe (one record in eight sampled).\n\n";
    s += if r.before {
        "### Summary: before and after\n\n"
    } else {
        "### Summary\n\n"
    };
    s += &host::summary(r);
    s += "\n### Overhead\n\n";
    for c in &r.overhead {
        let _ = writeln!(s, "**{}**\n", c.title);
        s += &overhead_table(c);
        s += "\n";
    }
    s += &host_sections(r);
    if let Some(c) = &r.timeouts {
        let _ = writeln!(s, "### Timeouts\n\n**{}**\n", c.title);
        s += &timeout_table(c);
        s += "\n";
    }
    if let Some(c) = &r.cardinality {
        s += "### Cardinality\n\n";
        s += &cardinality_table(c);
        s += "\n";
    }
    if !r.ring.is_empty() {
        s += "### Smallest ring buffer without loss (refused storm, conntrace → file)\n\n";
        s += &ring_table(&r.ring);
        let clean = r.ring.last().filter(|p| {
            p.trials.iter().all(|t| {
                t.tracer
                    .as_ref()
                    .and_then(|x| x.stats.as_ref())
                    .is_some_and(|st| st.lost == 0)
            })
        });
        let _ = writeln!(
            s,
            "\nSmallest size with zero loss: **{}** (default: 1 MiB).\n",
            clean.map_or_else(|| "none tried".into(), |p| bytes(p.bytes))
        );
    }
    if !r.wakeup.is_empty() {
        s += "### Wake-up batching and in-kernel cost\n\n";
        if !r.wakeup_batch_supported {
            s += "This conntrace has no `--wakeup-batch`: only its default is measured.\n\n";
        }
        if !r.bpf_stats {
            s += "BPF run-time statistics could not be enabled: no in-kernel figures.\n\n";
        }
        for c in &r.wakeup {
            let _ = writeln!(s, "**{}**\n", c.title);
            s += &wakeup_table(c, r.bpf_stats);
            s += "\n";
        }
        if let Some(table) = wakeup_rows(r).and_then(|(d, _)| programs_table(&d.trials)) {
            s += "**Where the in-kernel time goes (refused storm, conntrace's default \
                  settings; program names as the kernel truncates them)**\n\n";
            s += &table;
            s += "\n";
        }
        let before = r
            .wakeup
            .first()
            .and_then(|c| find_row(c, |row| row.variant.is_before()))
            .and_then(|row| programs_table(&row.trials));
        if let Some(table) = before {
            s += "**The same, conntrace before**\n\n";
            s += &table;
            s += "\n";
        }
        if !r.contention.is_empty() {
            s += "**One ring buffer, one CPU or all of them writing (refused storm, \
                  conntrace → pipe, default settings)**\n\n";
            s += &contention_table(&r.contention, r.bpf_stats);
            s += "\n";
        }
        s += "In-kernel BPF time comes from the kernel's own run-time statistics \
              (`BPF_ENABLE_STATS`, on only for this section, which adds a little to every \
              program run): the sum of `run_time_ns` over the tracer's programs, per event \
              delivered and per program run.\n\n";
    }
    s += "### Targets\n\n";
    let mut t = Table::new(vec!["target", "measured", "met"]);
    for v in verdicts(r) {
        t.rows.push(vec![
            v.target.into(),
            v.measured,
            match v.met {
                Some(true) => "yes".into(),
                Some(false) => "**no**".into(),
                None => "not measured".into(),
            },
        ]);
    }
    s += &t.render();
    s += "\n### What this means for a user\n\n";
    s += &interpretation(r, m);
    s
}

/// Writes `block` between this label's markers in `path`: replaced if there, appended if
/// not, in a new file with a title if the file does not exist.
pub fn write_block(path: &Path, label: &str, block: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- bench:{label}:begin -->");
    let end = format!("<!-- bench:{label}:end -->");
    let fenced = format!("{begin}\n{}\n{end}", block.trim_end());
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{fenced}{}", &old[..b], &old[e + end.len()..])
        }
        _ if old.trim().is_empty() => format!(
            "# conntrace benchmarks\n\nGenerated by `cargo xtask bench` (see \
             xtask/src/bench.rs); text outside the `bench:` markers is kept on a rerun.\n\n\
             {fenced}\n"
        ),
        _ => format!("{}\n\n{fenced}\n", old.trim_end()),
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, new).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1\u{202f}234\u{202f}567");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(4096), "4 KiB");
        assert_eq!(bytes(1 << 20), "1 MiB");
        assert_eq!(bytes(1000), "1000 B");
    }

    #[test]
    fn a_block_replaces_only_itself() {
        let dir = std::env::temp_dir().join(format!("xtask-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("b.md");
        write_block(&path, "main", "first").unwrap();
        let with_title = std::fs::read_to_string(&path).unwrap();
        assert!(with_title.starts_with("# conntrace benchmarks"));
        std::fs::write(&path, with_title + "\nHand-written note.\n").unwrap();
        write_block(&path, "16-threads", "other").unwrap();
        write_block(&path, "main", "second").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("second") && !text.contains("first"));
        assert!(text.contains("Hand-written note.") && text.contains("other"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tables_have_a_separator_row() {
        let mut t = Table::new(vec!["a", "b"]);
        t.rows.push(vec!["x".into(), "1".into()]);
        assert_eq!(t.render(), "| a | b |\n|---|---:|\n| x | 1 |\n");
    }
}
