//! What a tracer costs the host beyond the connects it reports: the syscall tax (a
//! getppid() loop), a web server that connects and serves normally (nginx and `ab`), the
//! hooks that other traffic passes through (dropped packets, route lookups); and the
//! summary of every headline figure, before and after, side by side.
use std::fmt::Write as _;

use super::{
    Table, Verdict, cpu_us_per_event, find_row, generator_us, lost, median_rate, mib, opt,
    own_programs, pct, peak_rss_mib, sum_opt, thousands, us, vs_none,
};
use crate::bench::{
    Trial, Variant,
    proc::Output,
    sections::{Comparison, KernelRun, Results, Row},
    stats::median,
};

// ---- per-row figures ----

/// The load's own CPU per unit of work (a call, a packet, a request: an "attempt"), ns,
/// median over trials. For `web`, the server's and the clients' CPU together.
fn ns_per_unit(trials: &[Trial]) -> Option<f64> {
    generator_us(trials).map(|u| u * 1000.0)
}

/// What a tracer adds to each unit of the load's work, ns: this row against the untraced
/// row of the same comparison.
fn added_ns(c: &Comparison, row: &Row) -> Option<f64> {
    let none = c.rows.first().filter(|r| r.variant.tracer.is_none())?;
    Some(ns_per_unit(&row.trials)? - ns_per_unit(&none.trials)?)
}

fn signed_ns(x: f64) -> String {
    format!("{x:+.0} ns")
}

/// The tracer's CPU while attached, as a share of one CPU (median over trials): what it
/// costs where it has nothing to report.
fn tracer_share(trials: &[Trial]) -> Option<f64> {
    median(
        &trials
            .iter()
            .filter_map(|t| Some(t.tracer.as_ref()?.cpu_s / t.load.elapsed_s.max(1e-9)))
            .collect::<Vec<_>>(),
    )
}

/// The tracer's CPU per connect, µs (median over trials), whatever it wrote: `trace`
/// without `--all` writes nothing for a connect that succeeds, it only counts it.
fn tracer_us_per_attempt(trials: &[Trial]) -> Option<f64> {
    median(
        &trials
            .iter()
            .filter(|t| t.load.attempts > 0)
            .filter_map(|t| Some(t.tracer.as_ref()?.cpu_s * 1e6 / t.load.attempts as f64))
            .collect::<Vec<_>>(),
    )
}

/// In-kernel BPF time per attempt, ns, over the trials, for the programs that ran for
/// this load (0 where none did). Only meaningful for runs with BPF statistics on.
fn kernel_ns_per_attempt(trials: &[Trial]) -> Option<f64> {
    let (units, programs) = own_programs(trials)?;
    let time: u64 = programs.iter().map(|p| p.time_ns).sum();
    Some(time as f64 / units as f64)
}

// ---- tables ----

/// The loads that never connect: `unit` is what one iteration is ("call", "packet").
pub(super) fn quiet_table(c: &Comparison, unit: &str) -> String {
    let rate = format!("{unit}s/s (median)");
    let per = format!("load's CPU per {unit}");
    let added = format!("added per {unit}");
    let mut t = Table::new(vec![
        "tracer",
        "runs",
        &rate,
        "vs none (median of pairs)",
        &per,
        &added,
        "tracer CPU (share of one CPU)",
    ]);
    for row in &c.rows {
        let traced = row.variant.tracer.is_some();
        t.rows.push(vec![
            row.variant.label.clone(),
            row.trials.len().to_string(),
            opt(median_rate(row).map(|r| thousands(r as u64))),
            vs_none(row),
            opt(ns_per_unit(&row.trials).map(|x| format!("{x:.0} ns"))),
            opt(traced.then(|| added_ns(c, row).map(signed_ns)).flatten()),
            opt(tracer_share(&row.trials).map(pct)),
        ]);
    }
    t.render()
}

pub(super) fn web_table(c: &Comparison) -> String {
    let mut t = Table::new(vec![
        "tracer",
        "runs",
        "requests/s (median)",
        "vs none (median of pairs)",
        "failed",
        "nginx + ab CPU per request",
        "added per request",
        "tracer CPU per connect",
        "lost",
        "peak RSS",
    ]);
    for row in &c.rows {
        let traced = row.variant.tracer.is_some();
        let failed: u64 = row.trials.iter().map(|t| t.load.other).sum();
        t.rows.push(vec![
            row.variant.label.clone(),
            row.trials.len().to_string(),
            opt(median_rate(row).map(|r| thousands(r as u64))),
            vs_none(row),
            thousands(failed),
            opt(generator_us(&row.trials).map(us)),
            opt(traced
                .then(|| added_ns(c, row).map(|ns| format!("{:+.2} µs", ns / 1000.0)))
                .flatten()),
            opt(tracer_us_per_attempt(&row.trials).map(us)),
            opt(traced
                .then(|| sum_opt(&row.trials, lost).map(thousands))
                .flatten()),
            opt(peak_rss_mib(&row.trials).map(mib)),
        ]);
    }
    t.render()
}

/// Which programs ran for `load`s (a unit of work is a `unit`), how often and for how
/// long.
pub(super) fn kernel_table(
    runs: &[KernelRun],
    load: impl Fn(&str) -> bool,
    unit: &str,
) -> Option<String> {
    let runs: Vec<&KernelRun> = runs.iter().filter(|r| load(r.load)).collect();
    if runs.is_empty() {
        return None;
    }
    let per_unit = format!("runs per {unit}");
    let time_per_unit = format!("per {unit}");
    let mut t = Table::new(vec![
        "load",
        "tracer",
        "program",
        &per_unit,
        "per run",
        &time_per_unit,
    ]);
    for run in runs {
        let Some((units, programs)) = own_programs(std::slice::from_ref(&run.trial)) else {
            continue;
        };
        if programs.is_empty() {
            t.rows.push(vec![
                run.load.into(),
                run.variant.label.clone(),
                "none ran".into(),
                "0".into(),
                "—".into(),
                "0 ns".into(),
            ]);
        }
        for p in programs {
            t.rows.push(vec![
                run.load.into(),
                run.variant.label.clone(),
                format!("`{}`", p.name),
                format!("{:.2}", p.runs as f64 / units as f64),
                format!("{:.0} ns", p.time_ns as f64 / p.runs as f64),
                format!("{:.0} ns", p.time_ns as f64 / units as f64),
            ]);
        }
    }
    Some(t.render())
}

// ---- before and after ----

/// A column of the summary.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Col {
    Before,
    After,
    SyscallsOptIn,
    Bpftrace,
}

impl Col {
    fn heading(self) -> &'static str {
        match self {
            Col::Before => "conntrace before",
            Col::After => "conntrace",
            Col::SyscallsOptIn => "conntrace `--connect-hook syscalls`",
            Col::Bpftrace => "bpftrace peer",
        }
    }

    fn matches(self, v: &Variant) -> bool {
        match self {
            Col::Before => v.is_before(),
            Col::After => {
                v.is_default_conntrace(Output::File) || v.is_default_conntrace(Output::Pipe)
            }
            Col::SyscallsOptIn => v.is_syscalls_opt_in(),
            Col::Bpftrace => v.is_bpftrace(),
        }
    }

    /// This column's row of `c`: conntrace's to a file where there is one (else to the
    /// pipe), with default settings.
    fn row(self, c: &Comparison) -> Option<&Row> {
        match self {
            Col::After => find_row(c, |r| r.variant.is_default_conntrace(Output::File))
                .or_else(|| find_row(c, |r| self.matches(&r.variant))),
            _ => find_row(c, |r| self.matches(&r.variant)),
        }
    }
}

/// One line of the summary: a figure, for every column.
struct Line<'a> {
    figure: String,
    value: Box<dyn Fn(Col) -> Option<String> + 'a>,
}

impl<'a> Line<'a> {
    /// A figure of one row of a comparison.
    fn of(
        figure: String,
        c: &'a Comparison,
        value: fn(&Comparison, &Row) -> Option<String>,
    ) -> Line<'a> {
        Line {
            figure,
            value: Box::new(move |col| col.row(c).and_then(|row| value(c, row))),
        }
    }

    /// The in-kernel time per unit of `load`, from the runs with BPF statistics on.
    fn kernel(figure: String, runs: &'a [KernelRun], load: &'a str) -> Line<'a> {
        Line {
            figure,
            value: Box::new(move |col| {
                let run = runs
                    .iter()
                    .find(|k| k.load == load && col.matches(&k.variant))?;
                kernel_ns_per_attempt(std::slice::from_ref(&run.trial))
                    .map(|ns| format!("{ns:.0} ns"))
            }),
        }
    }
}

fn ratio(_: &Comparison, row: &Row) -> Option<String> {
    median(&row.ratios).map(pct)
}

fn added(c: &Comparison, row: &Row) -> Option<String> {
    added_ns(c, row).map(signed_ns)
}

fn added_us(c: &Comparison, row: &Row) -> Option<String> {
    added_ns(c, row).map(|ns| format!("{:+.2} µs", ns / 1000.0))
}

fn tracer_per_connect(_: &Comparison, row: &Row) -> Option<String> {
    tracer_us_per_attempt(&row.trials).map(us)
}

fn tracer_per_event(_: &Comparison, row: &Row) -> Option<String> {
    cpu_us_per_event(&row.trials).map(us)
}

fn kernel_per_connect(_: &Comparison, row: &Row) -> Option<String> {
    kernel_ns_per_attempt(&row.trials).map(|ns| format!("{ns:.0} ns"))
}

fn lines(r: &Results) -> Vec<Line<'_>> {
    let mut v = Vec::new();
    if let Some(c) = &r.syscalls {
        v.push(Line::of("getppid() loop: speed vs none".into(), c, ratio));
        v.push(Line::of(
            "getppid() loop: CPU added per call".into(),
            c,
            added,
        ));
    }
    if let Some(c) = &r.web {
        let what = "nginx + ab, a connect per request";
        v.push(Line::of(format!("{what}: speed vs none"), c, ratio));
        v.push(Line::of(
            format!("{what}: CPU added per request"),
            c,
            added_us,
        ));
        v.push(Line::of(
            format!("{what}: tracer CPU per connect"),
            c,
            tracer_per_connect,
        ));
        v.push(Line::kernel(
            format!("{what}: in-kernel BPF time per request"),
            &r.kernel_runs,
            "web",
        ));
    }
    for c in &r.overhead {
        let load = super::load_name(c);
        v.push(Line::of(format!("{load} storm: speed vs none"), c, ratio));
        v.push(Line::of(
            format!("{load} storm: generator CPU added per connect"),
            c,
            added_us,
        ));
        v.push(Line::of(
            format!("{load} storm: tracer CPU per event"),
            c,
            tracer_per_event,
        ));
    }
    if let Some(c) = r.wakeup.first().filter(|_| r.bpf_stats) {
        v.push(Line::of(
            "refused storm: in-kernel BPF time per connect".into(),
            c,
            kernel_per_connect,
        ));
    }
    for c in &r.hooks {
        let load = super::load_name(c);
        v.push(Line::of(format!("{load}: speed vs none"), c, ratio));
        v.push(Line::of(format!("{load}: CPU added per packet"), c, added));
        v.push(Line::kernel(
            format!("{load}: in-kernel BPF time per packet"),
            &r.kernel_runs,
            load,
        ));
    }
    v
}

/// Every headline figure, one column per tracer: the first table a reader needs.
pub(super) fn summary(r: &Results) -> String {
    let lines = lines(r);
    let cols: Vec<Col> = [Col::Before, Col::After, Col::SyscallsOptIn, Col::Bpftrace]
        .into_iter()
        .filter(|col| lines.iter().any(|l| (l.value)(*col).is_some()))
        .collect();
    let mut header = vec!["figure"];
    header.extend(cols.iter().map(|c| c.heading()));
    let mut t = Table::new(header);
    for l in &lines {
        let mut row = vec![l.figure.clone()];
        row.extend(cols.iter().map(|col| opt((l.value)(*col))));
        t.rows.push(row);
    }
    let mut s = t.render();
    s += "\nconntrace runs `trace -o json` to a file (`--all` in the storms, so that every \
          outcome is a record; without it in the other rows, as a user runs it); in the \
          storms bpftrace's column is its pipe output. \"Added\" is the load's own CPU per \
          unit of work with the tracer minus without it; \"speed vs none\" the median over \
          rounds of the ratio within a round; in-kernel times come from separate runs with \
          BPF statistics on (the refused storm's through the pipe).\n";
    s
}

// ---- targets ----

fn after_ratio(c: Option<&Comparison>) -> Option<f64> {
    median(&Col::After.row(c?)?.ratios)
}

/// The targets of the cost redesign (issue 9) that these sections measure.
pub(super) fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut v = Vec::new();
    let getppid = after_ratio(r.syscalls.as_ref());
    v.push(Verdict {
        target: "no tax on the host: a getppid() loop at ≥ 99 % of its speed with `conntrace \
                 trace` attached",
        measured: opt(getppid.map(pct)),
        met: getppid.map(|x| x >= 0.99),
    });
    let web = r.web.as_ref();
    let nginx = after_ratio(web);
    v.push(Verdict {
        target: "nginx serving ab (a connect per request) keeps ≥ 95 % of its throughput",
        measured: opt(nginx.map(pct)),
        met: nginx.map(|x| x >= 0.95),
    });
    let peer = web
        .and_then(|c| Col::Bpftrace.row(c))
        .and_then(|row| median(&row.ratios));
    v.push(Verdict {
        target: "conntrace costs nginx less than the bpftrace peer",
        measured: match (nginx, peer) {
            (Some(a), Some(b)) => format!("{} vs {}", pct(a), pct(b)),
            _ => "bpftrace: not measured".into(),
        },
        met: nginx.zip(peer).map(|(a, b)| a > b),
    });
    let refused = after_ratio(r.overhead.iter().find(|c| c.title.starts_with("refused")));
    v.push(Verdict {
        target: "refused storm at ≥ 90 % of its untraced speed (conntrace → file)",
        measured: opt(refused.map(pct)),
        met: refused.map(|x| x >= 0.90),
    });
    v
}

// ---- what it means ----

pub(super) fn interpretation(r: &Results) -> String {
    let mut s = String::new();
    let col = |c: &Comparison, col: Col| {
        let row = col.row(c)?;
        Some(format!(
            "{} ({})",
            opt(median(&row.ratios).map(pct)),
            opt(added_ns(c, row).map(|ns| format!("{} per call", signed_ns(ns))))
        ))
    };
    if let Some(c) = &r.syscalls {
        let _ = write!(
            s,
            "**The syscall tax.** A getppid() loop, which never connects, ran at {} of its \
             untraced speed with conntrace attached",
            opt(col(c, Col::After))
        );
        if let Some(before) = col(c, Col::Before) {
            let _ = write!(s, " (before: {before})");
        }
        if let Some(opt_in) = col(c, Col::SyscallsOptIn) {
            let _ = write!(s, ", and at {opt_in} with `--connect-hook syscalls`");
        }
        s += ". While any `syscalls:` tracepoint is attached, every system call of every \
              process on the host takes the kernel's syscall-tracing slow path, whether a \
              program runs or not: a tax on every process, not only on those that connect. \
              Tracepoints on socket and TCP events cost nothing where no such event \
              happens.\n\n";
    }
    if let Some(c) = &r.web {
        let per_connect = |col: Col| {
            col.row(c)
                .and_then(|row| tracer_us_per_attempt(&row.trials))
                .map(us)
        };
        let _ = write!(
            s,
            "**A web server.** nginx served {} requests/s to ab untraced (a connect per \
             request, nothing failing); with conntrace {} of that, conntrace spending {} of \
             its own CPU per connect",
            opt(c
                .rows
                .first()
                .and_then(median_rate)
                .map(|x| thousands(x as u64))),
            opt(after_ratio(Some(c)).map(pct)),
            opt(per_connect(Col::After)),
        );
        if let Some(row) = Col::Before.row(c) {
            let _ = write!(
                s,
                " (before: {}, {})",
                opt(median(&row.ratios).map(pct)),
                opt(per_connect(Col::Before))
            );
        }
        if let Some(row) = Col::Bpftrace.row(c) {
            let _ = write!(
                s,
                "; the bpftrace peer, which prints a line per connect: {}",
                opt(median(&row.ratios).map(pct))
            );
        }
        s += ".\n\n";
    }
    if !r.hooks.is_empty() {
        s += "**Other traffic.** Packets that conntrace does not follow still pass its \
              hooks on dropped packets and route lookups: ";
        let parts: Vec<String> = r
            .hooks
            .iter()
            .map(|c| {
                format!(
                    "{}: {} per packet ({} of the untraced speed)",
                    super::load_name(c),
                    opt(Col::After
                        .row(c)
                        .and_then(|row| added_ns(c, row))
                        .map(signed_ns)),
                    opt(after_ratio(Some(c)).map(pct)),
                )
            })
            .collect();
        s += &parts.join("; ");
        s += ". Each program returns at its first test for what it does not follow (a drop \
              reason it does not report, a route lookup that found its route, a packet \
              that is not TCP); the table of programs gives their time per run.\n\n";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::proc::{Build, LoadResult, TracerResult};

    /// A trial of `calls` calls in a second that cost the load `ns` each.
    fn trial(calls: u64, ns: f64, traced: bool) -> Trial {
        Trial {
            load: LoadResult {
                attempts: calls,
                ok: calls,
                elapsed_s: 1.0,
                cpu_s: calls as f64 * ns / 1e9,
                ..LoadResult::default()
            },
            tracer: traced.then(|| TracerResult {
                cpu_s: 0.01,
                ..TracerResult::default()
            }),
            expected_events: 0,
        }
    }

    fn row(variant: Variant, calls: u64, ns: f64) -> Row {
        let traced = variant.tracer.is_some();
        Row {
            variant,
            trials: vec![trial(calls, ns, traced)],
            ratios: vec![calls as f64 / 1_000_000.0],
        }
    }

    #[test]
    fn the_summary_puts_each_tracer_in_its_column() {
        let syscalls = Comparison {
            title: "syscalls: getppid()".into(),
            rows: vec![
                row(Variant::none(), 1_000_000, 100.0),
                row(Variant::conntrace_plain(Build::Before, &[]), 800_000, 124.0),
                row(Variant::conntrace_plain(Build::After, &[]), 995_000, 101.0),
                row(
                    Variant::conntrace_plain(
                        Build::After,
                        &["--connect-hook".into(), "syscalls".into()],
                    ),
                    790_000,
                    126.0,
                ),
            ],
        };
        let r = Results {
            syscalls: Some(syscalls),
            before: true,
            ..Results::default()
        };
        let text = summary(&r);
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no line {prefix:?} in\n{text}"))
                .to_owned()
        };
        assert!(
            line("| figure |")
                .contains("| conntrace before | conntrace | conntrace `--connect-hook syscalls` |")
        );
        assert!(!line("| figure |").contains("bpftrace"));
        assert_eq!(
            line("| getppid() loop: speed vs none"),
            "| getppid() loop: speed vs none | 80.0 % | 99.5 % | 79.0 % |"
        );
        assert_eq!(
            line("| getppid() loop: CPU added per call"),
            "| getppid() loop: CPU added per call | +24 ns | +1 ns | +26 ns |"
        );
        let verdicts = verdicts(&r);
        assert_eq!(verdicts[0].measured, "99.5 %");
        assert_eq!(verdicts[0].met, Some(true));
        assert_eq!(verdicts[1].met, None, "no web run: not measured");
    }
}
