//! Aligned columns for people at a terminal. Every line goes through
//! [`write_line`](super::terminal::write_line): a process's name cannot break the table.
use std::io::Write;

use super::{
    terminal::write_line,
    time::{clock_millis, human_duration},
};
use crate::{
    errno,
    model::{Action, ConnEvent, Reason, RunInfo, tcp_state_name},
    stats::Snapshot,
};

pub fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    write_line(
        out,
        format_args!(
            "{:<12} {:>7} {:<15} {:<24} {:<24} {:<17} DETAIL",
            "TIME", "PID", "COMM", "SOURCE", "DESTINATION", "EVENT"
        ),
    )
}

pub fn write_event(out: &mut impl Write, e: &ConnEvent) -> std::io::Result<()> {
    let source = e.source.map_or_else(|| "-".to_owned(), |s| s.to_string());
    write_line(
        out,
        format_args!(
            "{:<12} {:>7} {:<15} {:<24} {:<24} {:<17} {}",
            clock_millis(e.time_ns),
            e.process.pid,
            e.process.name,
            source,
            e.destination.to_string(),
            event_label(e),
            detail(e)
        ),
    )
}

/// `refused`, `reset received`, `lost (timeout)`, ...
fn event_label(e: &ConnEvent) -> String {
    match e.action {
        Action::Connect if e.reason == Reason::Success => "connected".into(),
        Action::Connect => e.reason.as_str().replace('_', " "),
        Action::Reset => format!("reset {}", e.reason.as_str()),
        Action::Lost => format!("lost ({})", e.reason.as_str()),
        Action::Close => "closed".into(),
        Action::Retransmit => "retransmit".into(),
    }
}

fn plural(n: u32, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn detail(e: &ConnEvent) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(n) = e.errno {
        parts.push(errno::name(n));
    }
    let d = &e.details;
    if d.closed_after_error {
        parts.push("then closed by the application".into());
    }
    match e.action {
        Action::Connect => {
            if let Some(ns) = e.duration_ns {
                let verb = if e.reason == Reason::Success {
                    "in"
                } else {
                    "after"
                };
                parts.push(format!("{verb} {}", human_duration(ns)));
            }
            if e.reason != Reason::Success && e.reason != Reason::LocalError {
                parts.push(plural(e.syns_sent(), "SYN"));
            }
        }
        _ => {
            if let Some(state) = e.tcp_state.and_then(tcp_state_name) {
                parts.push(format!("in {state}"));
            }
            if let Some(age) = e.age_ns {
                parts.push(format!("age {}", human_duration(age)));
            }
            if e.retransmits > 0 {
                parts.push(plural(e.retransmits, "retransmit"));
            }
            if let Some(fin) = d.peer_fin {
                parts.push(format!(
                    "{} after the peer's FIN (idle {} before it)",
                    human_duration(fin.since_ns),
                    human_duration(fin.idle_before_ns)
                ));
            }
            if let Some(b) = d.bytes {
                parts.push(format!("{} B in, {} B out", b.received, b.sent));
            }
        }
    }
    if d.local_drops > 0 {
        let reason = d.drop_reason.as_deref().unwrap_or("reason unknown");
        parts.push(format!(
            "{} dropped on this host ({reason})",
            plural(d.local_drops, "packet")
        ));
    }
    if d.accepted {
        parts.push("accepted here".into());
    }
    parts.join(", ")
}

/// Stats go to stderr in text mode, so that the table on stdout stays a table.
pub fn write_stats(out: &mut impl Write, s: &Snapshot) -> std::io::Result<()> {
    let kinds: Vec<String> = s
        .counts
        .by_kind_named()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    write_line(
        out,
        format_args!(
            "conntrace: {}stats: {} records ({}), {} lost, {} connecting, {} established, \
             {} not followed (map full), {} skipped by the kernel, {} not written (output \
             too slow){}",
            if s.is_final { "final " } else { "" },
            s.counts.received,
            if kinds.is_empty() {
                "none".into()
            } else {
                kinds.join(" ")
            },
            s.kernel.lost,
            s.kernel.connecting,
            s.kernel.established,
            s.kernel.connects_unfollowed + s.kernel.established_unfollowed,
            s.kernel.skipped_total(),
            s.output.dropped.events,
            match s.output.dropped.other {
                0 => String::new(),
                n => format!(" and {n} other records"),
            }
        ),
    )
}

pub fn write_start(out: &mut impl Write, info: &RunInfo) -> std::io::Result<()> {
    write_line(
        out,
        format_args!(
            "conntrace: tracing TCP connects on {} (kernel {}, connect hook: {})",
            info.host, info.kernel, info.connect_hook
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::terminal::tests::raw_controls;

    /// The lines on stderr escape what they quote too (a host name set inside a container's
    /// UTS namespace, for one).
    #[test]
    fn start_line_is_escaped() {
        let info = RunInfo {
            host: "node\x1b]0;x\x07\n".into(),
            kernel: "6.18.0".into(),
            connect_hook: "tracepoint".into(),
            ..RunInfo::default()
        };
        let mut out = Vec::new();
        write_start(&mut out, &info).unwrap();
        assert_eq!(raw_controls(&out), [] as [usize; 0]);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("node\\x1b]0;x\\x07\\n "), "{text}");
    }
}
