//! The commands, glued from the modules: validate, load, run, report.
use std::collections::BTreeMap;

use crate::{
    cli::TraceArgs,
    collector::{self, Schedule, TracePrinter, unix_now_ns},
    config::{Filters, TraceConfig},
    exit::Status,
    loader::{self, Emit, Tracer},
    output::{RunInfo, Sink},
};

/// `conntrace trace`.
pub fn trace(args: &TraceArgs) -> anyhow::Result<Status> {
    let config = TraceConfig::from_args(args)?;
    let emit = Emit {
        successes: config.all,
        closes: config.all,
        retransmits: config.retransmits,
    };
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
    };
    runtime()?.block_on(collector::run(
        tracer,
        &info,
        &schedule,
        config.args,
        &mut printer,
    ))
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
        "attached; tcp_connect hook: {} (kernel {})",
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
    out
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
