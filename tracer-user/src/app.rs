//! The commands, glued from the modules: validate, load, pick the sinks, run one loop,
//! report. Every command runs the same way (`run`); they differ in their sinks.
use std::{
    collections::BTreeMap,
    io::{IsTerminal as _, Write as _},
};

use crate::{
    cli::{DiagnoseArgs, Format, HealthArgs, TopArgs, TraceArgs},
    clock::unix_now_ns,
    collector::{self, Schedule},
    config::{self, Filters, MetricsConfig, TraceConfig, Tuning},
    diagnose::{self, Context, host, report},
    enrich,
    exit::{StartError, Status},
    heartbeat,
    loader::{self, Emit, Tracer},
    model::RunInfo,
    output::{hook::Hook, http, queue::Grace, stream::Stream, time::human_duration},
    sinks::{
        Sink, Tee,
        metrics::Metrics,
        stream::{Events, StreamSink},
        summaries::Summaries,
        verdicts::Verdicts,
        watch::Watch,
    },
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

/// `conntrace trace`: the record stream, and with `--summary-interval` summaries in it.
pub fn trace(args: &TraceArgs) -> anyhow::Result<Status> {
    let config = TraceConfig::from_args(args)?;
    let aggregating =
        config.summary_every.is_some() || config.metrics.is_some() || config.verdicts.is_some();
    let emit = if aggregating {
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
    // The output first: a file that cannot be opened is refused before anything loads.
    let stream = Stream::open(
        config.format,
        hostname(),
        &config.output.destination,
        config.output.budget_bytes,
        Grace::default(),
    )
    .map_err(|e| StartError::Output(format!("cannot open the output: {e}")))?
    .shared();
    let mut tee = Tee::new();
    let events = match (config.all, config.no_events) {
        (true, _) => Events::All,
        (false, true) => Events::None,
        (false, false) => Events::Failures,
    };
    tee.push(StreamSink::new(stream.clone(), events));
    if let Some(every) = config.summary_every {
        tee.push(Summaries::new(stream.clone(), config.max_keys, every));
    }
    if let Some(options) = config.verdicts {
        let hook = config
            .hook
            .clone()
            .map(Hook::start)
            .transpose()
            .map_err(|e| anyhow::anyhow!("start the --on-verdict workers: {e}"))?;
        tee.push(Verdicts::new(stream, options, hook));
    }
    if let Some(m) = &config.metrics {
        tee.push(serve_metrics(m)?);
    }
    if let Some(path) = &args.heartbeat {
        heartbeat::first_beat(path)?;
    }
    let tracer = start(&config.filters, &config.tuning, emit)?;
    let schedule = Schedule {
        duration: config.duration,
        stats_interval: config.stats_interval,
        ring_capacity: ring_capacity(&config.tuning),
    };
    run(
        tracer,
        &config.filters,
        &schedule,
        enrich_settings(&config.filters, config.args),
        args.heartbeat.clone(),
        &mut tee,
    )
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

/// What the collector adds to records: arguments only where `trace --args` asks for
/// them (summaries, `top` and `diagnose` never show them).
fn enrich_settings(filters: &Filters, args: bool) -> enrich::Settings {
    enrich::Settings {
        args,
        filter: filters.identity.clone(),
        sources: None,
    }
}

/// The metrics sink, and its server listening already (a taken port fails here, before
/// anything loads).
fn serve_metrics(config: &MetricsConfig) -> anyhow::Result<Metrics> {
    let metrics = Metrics::new(config.labels, config.max_series);
    let (bound, _server) = http::serve(config.address, metrics.registry()).map_err(|e| {
        StartError::Output(format!(
            "--metrics: cannot listen on {}: {e}",
            config.address
        ))
    })?;
    tracing::info!("metrics at http://{bound}/metrics");
    Ok(metrics)
}

/// Loads nothing more: runs the loop on one thread until it stops. With a heartbeat file,
/// it is rewritten from that same thread: it goes stale exactly when the loop stops turning.
fn run(
    tracer: Tracer,
    filters: &Filters,
    schedule: &Schedule,
    enrich: enrich::Settings,
    heartbeat: Option<std::path::PathBuf>,
    sink: &mut dyn Sink,
) -> anyhow::Result<Status> {
    let info = run_info(&tracer, filters);
    let rt = runtime()?;
    if let Some(path) = heartbeat {
        rt.spawn(heartbeat::beat(path));
    }
    rt.block_on(collector::run(tracer, &info, schedule, enrich, sink))
}

/// Records the ring buffer can hold at most: the final drain reads no more than this.
fn ring_capacity(tuning: &Tuning) -> usize {
    usize::try_from(u64::from(tuning.ring_buffer_bytes) / tracer_common::EVENT_RING_BYTES)
        .unwrap_or(usize::MAX)
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
    let terminal = ratatui::try_init()?;
    let _restore = RestoreGuard;
    let mut view = Top::new(
        terminal,
        crate::aggregate::Aggregator::new(max_keys),
        hostname(),
    );
    let schedule = Schedule {
        stats_interval: Some(top::REFRESH),
        ring_capacity: ring_capacity(&tuning),
        ..Schedule::default()
    };
    run(
        tracer,
        &filters,
        &schedule,
        enrich_settings(&filters, false),
        None,
        &mut view,
    )
}

/// `conntrace diagnose`: watch, then report; [`Status::FailuresFound`] when anything
/// failed.
pub fn diagnose(args: &DiagnoseArgs) -> anyhow::Result<Status> {
    let filters = Filters::from_args(&args.filters)?;
    let tuning = Tuning::from_args(&args.tuning)?;
    let duration = config::duration("--duration", args.duration)?;
    let mut watch = Watch::new(args.aggregate.max_keys);
    let tracer = start(&filters, &tuning, AGGREGATE_EMIT)?;
    // Before the window opens: what the listeners on this host had dropped so far.
    let drops_before = host::drops_snapshot();
    tracing::info!(
        "diagnose: watching for {}",
        human_duration(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX))
    );
    let info = run_info(&tracer, &filters);
    let schedule = Schedule {
        duration: Some(duration),
        ring_capacity: ring_capacity(&tuning),
        ..Schedule::default()
    };
    let enrich = enrich_settings(&filters, false);
    runtime()?.block_on(collector::run(tracer, &info, &schedule, enrich, &mut watch))?;
    report_diagnosis(args, &info, &watch, &drops_before)
}

fn report_diagnosis(
    args: &DiagnoseArgs,
    info: &RunInfo,
    watch: &Watch,
    drops_before: &host::DropsSnapshot,
) -> anyhow::Result<Status> {
    let end_ns = unix_now_ns();
    let facts = host::gather(&diagnose::questions(&watch.aggregate), drops_before);
    let ctx = Context {
        aggregate: &watch.aggregate,
        facts: &facts,
        window_ns: end_ns.saturating_sub(info.start_ns),
    };
    let findings = diagnose::diagnose(&ctx);
    let kernel = watch
        .last
        .as_ref()
        .map(|s| s.kernel.clone())
        .unwrap_or_default();
    let run = report::RunSummary { info, end_ns };
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

/// The name records carry as `host.name`: the node's, which in a pod without
/// hostNetwork is not the pod's own hostname (see [`crate::enrich::identity::node_name`]).
pub fn hostname() -> String {
    crate::enrich::identity::node_name().unwrap_or_else(|| "unknown".into())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
