//! The commands, glued from the modules: validate, load, run, report.
use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
};

use crate::{
    aggregate::Aggregator,
    cli::{DiagnoseArgs, Format, HealthArgs, TopArgs, TraceArgs},
    collector::{self, Consumer, Schedule, Starter, TracePrinter, unix_now_ns},
    config::{self, Filters, TraceConfig, Tuning, interval},
    diagnose::{self, Context, host, report},
    enrich,
    exit::{StartError, Status},
    heartbeat,
    loader::{self, Emit, Tracer},
    model::ConnEvent,
    output::{RunInfo, Sink, summary::SummaryPrinter, time::human_duration},
    stats::Snapshot,
    top::{self, RestoreGuard, Top},
};

/// What the aggregating commands need from the kernel: every connect (successes too, for
/// failure rates and latencies), every close (for retransmit rates), and the connections
/// listeners on this host accept (for the resets services send and receive). What `trace`
/// prints is still filtered by its printer.
const AGGREGATE_EMIT: Emit = Emit {
    successes: true,
    closes: true,
    retransmits: false,
    accepted: true,
};

/// `conntrace trace`; with `--summary-interval`, summaries too.
pub fn trace(args: &TraceArgs) -> anyhow::Result<Status> {
    let config = TraceConfig::from_args(args)?;
    let summary_every = args
        .summary_interval
        .map(|s| interval("--summary-interval", s, false))
        .transpose()?
        .flatten();
    let max_keys = args.aggregate.max_keys;
    let emit = if summary_every.is_some() {
        Emit {
            retransmits: config.retransmits,
            accepted: config.accepted,
            ..AGGREGATE_EMIT
        }
    } else {
        Emit {
            successes: config.all,
            closes: config.all,
            retransmits: config.retransmits,
            accepted: config.accepted,
        }
    };
    if let Some(path) = &args.heartbeat {
        heartbeat::first_beat(path)?;
    }
    let tracer = start(&config.filters, &config.tuning, emit)?;
    let info = run_info(&tracer, &config.filters);
    let stdout = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut printer = TracePrinter {
        sink: Sink::new(config.format, stdout, info.host.clone()),
        all: config.all,
    };
    let schedule = Schedule {
        duration: config.duration,
        stats_interval: config.stats_interval,
        tick: summary_every,
    };
    let rt = runtime()?;
    // On the collector's own (current-thread) runtime: it beats only while the loop turns.
    if let Some(path) = args.heartbeat.clone() {
        rt.spawn(heartbeat::beat(path));
    }
    if summary_every.is_none() {
        return rt.block_on(collector::run(
            tracer,
            &info,
            &schedule,
            enrich_settings(&config.filters, config.args),
            &mut printer,
        ));
    }
    let mut summaries = SummaryPrinter {
        inner: printer,
        aggregate: Aggregator::new(max_keys),
    };
    rt.block_on(collector::run(
        tracer,
        &info,
        &schedule,
        enrich_settings(&config.filters, config.args),
        &mut summaries,
    ))
}

/// What the collector adds to records: arguments only where `trace --args` asks for
/// them (summaries, `top` and `diagnose` never show them).
fn enrich_settings(filters: &Filters, args: bool) -> enrich::Settings {
    enrich::Settings {
        args,
        filter: filters.identity.clone(),
        sources: None,
    }
}

/// `conntrace health`: is the heartbeat fresh? 1 (and why, on stderr) when it is not.
pub fn health(args: &HealthArgs) -> Status {
    match heartbeat::check(
        &args.heartbeat,
        std::time::Duration::from_secs(args.max_age),
    ) {
        Ok(status) => status,
        Err(why) => {
            let _ = crate::output::terminal::write_line(
                &mut std::io::stderr(),
                format_args!("conntrace: {why}"),
            );
            Status::FailuresFound
        }
    }
}

/// `conntrace top`.
pub fn top(args: &TopArgs) -> anyhow::Result<Status> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(StartError::Usage(
            "top needs a terminal (stdin and stdout); for a pipe or a file, use \
             `conntrace trace --summary-interval SECS` or `conntrace diagnose`"
                .into(),
        )
        .into());
    }
    let filters = Filters::from_args(&args.filters)?;
    let tuning = Tuning::from_args(&args.tuning)?;
    let max_keys = args.aggregate.max_keys;
    let tracer = start(&filters, &tuning, AGGREGATE_EMIT)?;
    let info = run_info(&tracer, &filters);
    let terminal = ratatui::try_init()?;
    let _restore = RestoreGuard;
    let mut view = Top::new(terminal, Aggregator::new(max_keys), info.host.clone());
    let schedule = Schedule {
        duration: None,
        stats_interval: Some(top::REFRESH),
        tick: Some(top::KEY_POLL),
    };
    let enrich = enrich_settings(&filters, false);
    runtime()?.block_on(collector::run(tracer, &info, &schedule, enrich, &mut view))
}

/// The `diagnose` consumer: aggregates, and keeps the last stats for the loss count.
struct Watch {
    aggregate: Aggregator,
    last: Option<Snapshot>,
}

impl Consumer for Watch {
    fn event(&mut self, e: &ConnEvent) -> std::io::Result<()> {
        self.aggregate.record(e);
        Ok(())
    }

    fn stats(&mut self, s: &Snapshot) -> std::io::Result<()> {
        self.last = Some(s.clone());
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Starter for Watch {
    fn start(&mut self, _info: &RunInfo) -> std::io::Result<()> {
        Ok(())
    }
}

/// `conntrace diagnose`: watch, then report; [`Status::FailuresFound`] when anything
/// failed.
pub fn diagnose(args: &DiagnoseArgs) -> anyhow::Result<Status> {
    let filters = Filters::from_args(&args.filters)?;
    let tuning = Tuning::from_args(&args.tuning)?;
    let duration = config::duration("--duration", args.duration)?;
    let max_keys = args.aggregate.max_keys;
    let tracer = start(&filters, &tuning, AGGREGATE_EMIT)?;
    let info = run_info(&tracer, &filters);
    // Before the window opens: what the listeners on this host had dropped so far.
    let drops_before = host::drops_snapshot();
    tracing::info!(
        "diagnose: watching for {}",
        human_duration(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    );
    let mut watch = Watch {
        aggregate: Aggregator::new(max_keys),
        last: None,
    };
    let schedule = Schedule {
        duration: Some(duration),
        stats_interval: None,
        tick: None,
    };
    let enrich = enrich_settings(&filters, false);
    runtime()?.block_on(collector::run(tracer, &info, &schedule, enrich, &mut watch))?;
    let end_ns = unix_now_ns();
    let facts = host::gather(&diagnose::questions(&watch.aggregate), &drops_before);
    let ctx = Context {
        aggregate: &watch.aggregate,
        facts: &facts,
        window_ns: end_ns.saturating_sub(info.start_ns),
    };
    let findings = diagnose::diagnose(&ctx);
    let kernel = watch.last.map(|s| s.kernel).unwrap_or_default();
    let run = report::RunSummary {
        info: &info,
        end_ns,
    };
    let totals = report::totals(&watch.aggregate, &kernel);
    let format = if args.json {
        Format::Json
    } else {
        Format::Text
    };
    match write_report(format, &run, &totals, &findings) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(StartError::Output(format!("writing the report failed: {e}")).into()),
        Ok(()) => {}
    }
    Ok(if findings.is_empty() {
        Status::Ok
    } else {
        Status::FailuresFound
    })
}

fn write_report(
    format: Format,
    run: &report::RunSummary<'_>,
    totals: &report::Totals,
    findings: &[diagnose::Finding<'_>],
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match format {
        Format::Json => report::write_json(&mut out, run, totals, findings)?,
        Format::Text => report::write_text(&mut out, run, totals, findings)?,
    }
    out.flush()
}

/// Loads the programs and says on stderr which `tcp_connect` hook was chosen, and why.
pub fn start(
    filters: &Filters,
    tuning: &crate::config::Tuning,
    emit: Emit,
) -> anyhow::Result<Tracer> {
    let tracer = loader::load(filters, tuning, emit)?;
    for why in &tracer.hook_fallbacks {
        tracing::debug!("{why}");
    }
    tracing::info!(
        "attached; connect hook: {} (kernel {})",
        tracer.hook,
        tracer.kernel_release
    );
    Ok(tracer)
}

pub fn run_info(tracer: &Tracer, filters: &Filters) -> RunInfo {
    RunInfo {
        start_ns: unix_now_ns(),
        host: hostname(),
        kernel: tracer.kernel_release.clone(),
        connect_hook: tracer.hook.as_str().to_owned(),
        filters: describe_filters(filters),
    }
}

fn describe_filters(f: &Filters) -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    if let Some(pid) = f.pid {
        out.insert("pid", pid.to_string());
    }
    if let Some(comm) = &f.comm {
        out.insert("comm", comm.clone());
    }
    if let Some(port) = f.port {
        out.insert("port", port.to_string());
    }
    if let Some(netns) = f.netns {
        out.insert("netns", netns.to_string());
    }
    if !f.dests.is_empty() {
        out.insert("dest", f.dests.len().to_string() + " prefixes");
    }
    let id = &f.identity;
    for (name, value) in [
        ("pod", &id.pod),
        ("namespace", &id.namespace),
        ("container", &id.container),
    ] {
        if let Some(v) = value {
            out.insert(name, v.clone());
        }
    }
    out
}

pub fn hostname() -> String {
    enrich::identity::node_name().unwrap_or_else(|| "unknown".into())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
