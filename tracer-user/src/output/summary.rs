//! Summary records (`event.kind: "metric"`, `event.action: "summary"`): one per (workload,
//! destination) entry of the aggregate, for the entries that changed in an interval and
//! for every entry at exit. The same counts object serves `diagnose --json`.
use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use super::{
    SCHEMA_VERSION, Sink,
    terminal::write_line,
    time::{clock_millis, human_duration, rfc3339_nanos},
};
use crate::{
    aggregate::{Aggregator, Entry, FailureStats, Key, Quantiles},
    cli::Format,
    collector::{Consumer, Flow, Starter},
    errno,
    model::{ConnEvent, Container, Pod},
    output::RunInfo,
    stats::Snapshot,
};

/// The numbers of one entry.
#[derive(Debug, Serialize)]
pub struct CountsObj {
    pub attempts: u64,
    pub successes: u64,
    pub failures: FailuresObj,
    pub resets: ResetsObj,
    /// Established connections the kernel killed with an error (timeout, unreachable).
    pub lost: u64,
    pub connections_ended: u64,
    /// Connections the peer closed before sending a single byte.
    pub closed_before_reply: u64,
    /// Failed attempts none of whose SYNs left this host.
    pub dropped_here: u64,
    pub syn_retransmits: u64,
    pub retransmits: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<QuantilesObj>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_fail: Option<QuantilesObj>,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastErrorObj>,
}

#[derive(Debug, Serialize)]
pub struct FailuresObj {
    pub total: u64,
    pub refused: u64,
    pub timeout: u64,
    pub unreachable: u64,
    pub abandoned: u64,
    pub local_error: u64,
    /// Unreachable attempts by errno name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable_errors: BTreeMap<String, u64>,
    /// Local errors by errno name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub local_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct ResetsObj {
    pub received: u64,
    pub sent: u64,
    /// Of those received, the ones after the peer had closed the connection (stale
    /// keep-alive reuse).
    pub after_peer_fin: u64,
}

/// Nanoseconds.
#[derive(Debug, Serialize)]
pub struct QuantilesObj {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Debug, Serialize)]
pub struct LastErrorObj {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub action: &'static str,
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

fn quantiles(q: Option<Quantiles>) -> Option<QuantilesObj> {
    q.map(|q| QuantilesObj {
        count: q.count,
        p50: q.p50,
        p90: q.p90,
        p99: q.p99,
        max: q.max,
    })
}

fn by_name(map: &BTreeMap<u32, u64>) -> BTreeMap<String, u64> {
    map.iter().map(|(n, c)| (errno::name(*n), *c)).collect()
}

pub fn counts(e: &Entry) -> CountsObj {
    CountsObj {
        attempts: e.attempts,
        successes: e.successes,
        failures: FailuresObj {
            total: e.failures(),
            refused: e.refused.count,
            timeout: e.timeout.count,
            unreachable: e.unreachable.count,
            abandoned: e.abandoned.count,
            local_error: e.local_error_count(),
            unreachable_errors: by_name(&e.unreachable_errnos),
            local_errors: by_name(&e.local_errors),
        },
        resets: ResetsObj {
            received: e.resets_received,
            sent: e.resets_sent,
            after_peer_fin: e.stale_reuse.count,
        },
        lost: e.lost_total(),
        connections_ended: e.connections_ended,
        closed_before_reply: e.closed_before_reply,
        dropped_here: e.dropped_here_count(),
        syn_retransmits: e.syn_retransmits,
        retransmits: e.retransmits,
        connect_time: quantiles(e.connect_time.quantiles()),
        time_to_fail: quantiles(e.time_to_fail.quantiles()),
        first_seen: rfc3339_nanos(e.first_seen_ns),
        last_seen: rfc3339_nanos(e.last_seen_ns),
        last_error: e.last_error.map(|l| LastErrorObj {
            timestamp: rfc3339_nanos(l.time_ns),
            action: l.action.as_str(),
            reason: l.reason.as_str(),
            code: l.errno.map(errno::name),
        }),
    }
}

/// ECS `process`, for an entry with a workload, with its container and pod.
#[derive(Debug, Serialize)]
pub struct ProcessObj {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerObj>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodObj>,
}

/// `process.container` (docs/schema.md).
#[derive(Debug, Serialize)]
pub struct ContainerObj {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `process.pod` (docs/schema.md).
#[derive(Debug, Serialize)]
pub struct PodObj {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadObj>,
}

#[derive(Debug, Serialize)]
pub struct WorkloadObj {
    pub kind: &'static str,
    pub name: String,
}

pub fn container_obj(c: &Container) -> ContainerObj {
    ContainerObj {
        id: c.id.clone(),
        runtime: c.runtime.clone(),
        name: c.name.clone(),
    }
}

pub fn pod_obj(p: &Pod) -> PodObj {
    PodObj {
        name: p.name.clone(),
        uid: p.uid.clone(),
        namespace: p.namespace.clone(),
        workload: p.workload.as_ref().map(|w| WorkloadObj {
            kind: w.kind.as_str(),
            name: w.name.clone(),
        }),
    }
}

/// ECS `destination`: `address` always (`other` for a folded entry), `ip` and `port` when
/// the entry has one destination.
#[derive(Debug, Serialize)]
pub struct DestinationObj {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

/// Who and where: the parts of a summary that name the entry.
#[derive(Debug, Serialize)]
pub struct SubjectObj {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessObj>,
    pub destination: DestinationObj,
}

pub fn subject(key: &Key, e: &Entry) -> SubjectObj {
    SubjectObj {
        process: key.workload.as_ref().map(|w| ProcessObj {
            name: w.name.clone(),
            executable: e.executable.clone(),
            container: w.container().map(container_obj),
            pod: w.pod().map(pod_obj),
        }),
        destination: DestinationObj {
            address: key
                .destination
                .map_or_else(|| "other".to_owned(), |d| d.ip().to_string()),
            ip: key.destination.map(|d| d.ip().to_string()),
            port: key.destination.map(|d| d.port()),
        },
    }
}

/// conntrace's own part of a summary record.
#[derive(Debug, Serialize)]
pub struct EntryObj {
    pub pids: Vec<u32>,
    /// More processes than `pids` lists were seen.
    pub more_pids: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_v1_id: Option<u64>,
    pub netns: u32,
    /// A folded entry: `destination` (and, for the catch-all, the workload) is `other`.
    pub folded: bool,
    /// `inbound` for connections the workload accepted (it listens on `destination`);
    /// absent for those it made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direction: Option<&'static str>,
    #[serde(flatten)]
    pub counts: CountsObj,
}

pub fn entry_obj(key: &Key, e: &Entry) -> EntryObj {
    EntryObj {
        pids: e.pids.pids.clone(),
        more_pids: e.pids.more,
        cgroup_id: key.workload.as_ref().map(|w| w.cgroup_id),
        cgroup_v1_id: key
            .workload
            .as_ref()
            .map(|w| w.cgroup_v1_id)
            .filter(|&id| id != 0),
        netns: e.netns,
        folded: key.destination.is_none(),
        direction: key.inbound.then_some("inbound"),
        counts: counts(e),
    }
}

#[derive(Serialize)]
struct SummaryRecord<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: SummaryEvent,
    #[serde(flatten)]
    subject: SubjectObj,
    host: HostObj<'a>,
    conntrace: SummaryConntrace,
}

#[derive(Serialize)]
struct SummaryEvent {
    kind: &'static str,
    category: [&'static str; 1],
    #[serde(rename = "type")]
    type_: [&'static str; 1],
    action: &'static str,
}

#[derive(Serialize)]
struct HostObj<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct SummaryConntrace {
    schema_version: u32,
    #[serde(rename = "final")]
    is_final: bool,
    /// Records folded into `other` entries so far (more destinations than --max-keys).
    folded_into_other: u64,
    #[serde(flatten)]
    entry: EntryObj,
}

/// When and where a batch of summaries is written.
pub struct Batch<'a> {
    pub time_ns: u64,
    pub host: &'a str,
    pub is_final: bool,
    /// Records folded into `other` entries so far.
    pub folded: u64,
}

pub fn write_json(
    out: &mut impl Write,
    key: &Key,
    e: &Entry,
    batch: &Batch<'_>,
) -> std::io::Result<()> {
    let record = SummaryRecord {
        timestamp: rfc3339_nanos(batch.time_ns),
        event: SummaryEvent {
            kind: "metric",
            category: ["network"],
            type_: ["connection"],
            action: "summary",
        },
        subject: subject(key, e),
        host: HostObj { name: batch.host },
        conntrace: SummaryConntrace {
            schema_version: SCHEMA_VERSION,
            is_final: batch.is_final,
            folded_into_other: batch.folded,
            entry: entry_obj(key, e),
        },
    };
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}

/// One line for people: `summary ct-peer → 10.0.0.2:81: 3 attempts, 3 failed (3 refused)…`.
pub fn write_text(
    out: &mut impl Write,
    key: &Key,
    e: &Entry,
    is_final: bool,
) -> std::io::Result<()> {
    let mut parts = vec![format!(
        "{} attempts, {} ok, {} failed{}",
        e.attempts,
        e.successes,
        e.failures(),
        failure_breakdown(e)
    )];
    if e.resets_received + e.resets_sent > 0 {
        parts.push(format!(
            "resets {} received, {} sent",
            e.resets_received, e.resets_sent
        ));
    }
    if e.retransmits > 0 {
        parts.push(format!("{} retransmits", e.retransmits));
    }
    if let Some(q) = e.connect_time.quantiles() {
        parts.push(format!("connect p99 {}", human_duration(q.p99)));
    }
    if let Some(last) = e.last_error {
        let code = last
            .errno
            .map_or_else(|| last.reason.as_str().to_owned(), errno::name);
        parts.push(format!("last {code} at {}", clock_millis(last.time_ns)));
    }
    write_line(
        out,
        format_args!(
            "conntrace: {}summary {} → {}: {}",
            if is_final { "final " } else { "" },
            key.workload_name(),
            key.destination_label(),
            parts.join(", ")
        ),
    )
}

/// ` (2 refused, 1 timeout)`, or nothing.
pub fn failure_breakdown(e: &Entry) -> String {
    let kinds: [(&str, &FailureStats); 4] = [
        ("refused", &e.refused),
        ("timeout", &e.timeout),
        ("unreachable", &e.unreachable),
        ("abandoned", &e.abandoned),
    ];
    let mut parts: Vec<String> = kinds
        .iter()
        .filter(|(_, s)| s.count > 0)
        .map(|(name, s)| format!("{} {name}", s.count))
        .collect();
    for (n, c) in &e.local_errors {
        parts.push(format!("{c} {}", errno::name(*n)));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// Entries in a stable order (by workload, then destination) for output.
pub fn sorted<'a>(
    entries: impl Iterator<Item = (&'a Key, &'a Entry)>,
) -> Vec<(&'a Key, &'a Entry)> {
    let mut all: Vec<_> = entries.collect();
    all.sort_by(|a, b| a.0.cmp(b.0));
    all
}

/// `trace --summary-interval`: the trace printer, plus an aggregate whose changed entries
/// are written every interval and whose every entry is written at exit, before the final
/// stats.
pub struct SummaryPrinter<C> {
    pub inner: C,
    pub aggregate: Aggregator,
}

impl<W: Write> SummaryPrinter<crate::collector::TracePrinter<W>> {
    fn write_batch(&mut self, is_final: bool) -> std::io::Result<()> {
        let sink: &mut Sink<W> = &mut self.inner.sink;
        let host = sink.host().to_owned();
        let batch = Batch {
            time_ns: crate::collector::unix_now_ns(),
            host: &host,
            is_final,
            folded: self.aggregate.folded(),
        };
        let entries = if is_final {
            sorted(self.aggregate.iter())
        } else {
            sorted(self.aggregate.changed())
        };
        let format = sink.format();
        for (key, e) in entries {
            match format {
                Format::Json => write_json(sink.writer(), key, e, &batch)?,
                Format::Text => write_text(&mut std::io::stderr(), key, e, is_final)?,
            }
        }
        self.aggregate.start_interval();
        Ok(())
    }
}

impl<W: Write> Consumer for SummaryPrinter<crate::collector::TracePrinter<W>> {
    fn event(&mut self, e: &ConnEvent) -> std::io::Result<()> {
        self.aggregate.record(e);
        self.inner.event(e)
    }

    fn stats(&mut self, s: &Snapshot) -> std::io::Result<()> {
        if s.is_final {
            self.write_batch(true)?;
        }
        self.inner.stats(s)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }

    fn tick(&mut self) -> std::io::Result<Flow> {
        self.write_batch(false)?;
        Ok(Flow::Continue)
    }
}

impl<W: Write> Starter for SummaryPrinter<crate::collector::TracePrinter<W>> {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        self.inner.start(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::tests::{connect, key, reset_received},
        collector::TracePrinter,
        model::Reason,
    };
    use serde_json::{Value, json};

    fn lines(out: Vec<u8>) -> Vec<Value> {
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn printer() -> SummaryPrinter<TracePrinter<Vec<u8>>> {
        SummaryPrinter {
            inner: TracePrinter {
                sink: Sink::new(Format::Json, Vec::new(), "node-1".into()),
                all: false,
            },
            aggregate: Aggregator::new(100),
        }
    }

    #[test]
    fn summary_record_shape() {
        let mut agg = Aggregator::new(10);
        agg.record(&connect(Reason::Refused, "10.0.0.2:80", 1));
        agg.record(&connect(Reason::Success, "10.0.0.2:80", 2));
        agg.record(&reset_received("10.0.0.2:80", 200));
        let k = key("10.0.0.2:80");
        let mut out = Vec::new();
        let batch = Batch {
            time_ns: 1_795_889_615_000_000_000,
            host: "node-1",
            is_final: true,
            folded: 0,
        };
        write_json(&mut out, &k, agg.get(&k).unwrap(), &batch).unwrap();
        let v = &lines(out)[0];
        let mut v = v.clone();
        // Histogram values are exact to their precision.
        for (field, ns) in [("connect_time", 2_000_000u64), ("time_to_fail", 1_000_000)] {
            let q = v["conntrace"][field].take();
            assert_eq!(q["count"], 1, "{q}");
            for p in ["p50", "p90", "p99", "max"] {
                let got = q[p].as_u64().unwrap();
                assert!(
                    got.abs_diff(ns) as f64 <= ns as f64 * crate::aggregate::HIST_PRECISION,
                    "{field}: {q}"
                );
            }
        }
        assert_eq!(
            v,
            json!({
                "@timestamp": "2026-11-28T18:13:35.000000000Z",
                "event": {"kind": "metric", "category": ["network"], "type": ["connection"], "action": "summary"},
                "process": {"name": "app", "executable": "/usr/bin/app"},
                "destination": {"address": "10.0.0.2", "ip": "10.0.0.2", "port": 80},
                "host": {"name": "node-1"},
                "conntrace": {
                    "schema_version": 2, "final": true, "folded_into_other": 0,
                    "pids": [100], "more_pids": false, "cgroup_id": 7, "netns": 4026531840u64,
                    "folded": false,
                    "attempts": 2, "successes": 1,
                    "failures": {"total": 1, "refused": 1, "timeout": 0, "unreachable": 0, "abandoned": 0, "local_error": 0},
                    "resets": {"received": 1, "sent": 0, "after_peer_fin": 0},
                    "lost": 0, "connections_ended": 0, "closed_before_reply": 0, "dropped_here": 0, "syn_retransmits": 0, "retransmits": 0,
                    "connect_time": null,
                    "time_to_fail": null,
                    "first_seen": "1970-01-01T00:16:40.000000000Z",
                    "last_seen": "1970-01-01T00:16:40.000000000Z",
                    "last_error": {"@timestamp": "1970-01-01T00:16:40.000000000Z", "action": "reset", "reason": "received"}
                }
            })
        );
    }

    #[test]
    fn folded_entries_say_other() {
        let mut agg = Aggregator::new(1);
        agg.record(&connect(Reason::Refused, "10.0.0.2:80", 1));
        agg.record(&connect(Reason::Refused, "10.0.0.3:80", 1));
        let folded = Key {
            destination: None,
            ..key("10.0.0.2:80")
        };
        let s = serde_json::to_value(subject(&folded, agg.get(&folded).unwrap())).unwrap();
        assert_eq!(s["destination"], json!({"address": "other"}));
        let mut text = Vec::new();
        write_text(&mut text, &folded, agg.get(&folded).unwrap(), false).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains("app → other: 1 attempts, 0 ok, 1 failed (1 refused)"),
            "{text}"
        );
    }

    #[test]
    fn ticks_write_what_changed_and_exit_writes_everything() {
        let mut p = printer();
        p.event(&connect(Reason::Refused, "10.0.0.2:80", 1))
            .unwrap();
        p.event(&connect(Reason::Success, "10.0.0.3:80", 1))
            .unwrap();
        assert_eq!(p.tick().unwrap(), Flow::Continue);
        p.tick().unwrap();
        p.event(&connect(Reason::Refused, "10.0.0.2:80", 1))
            .unwrap();
        p.tick().unwrap();
        p.stats(&Snapshot {
            is_final: true,
            ..Snapshot::default()
        })
        .unwrap();
        let all = lines(p.inner.sink.into_inner());
        let summary = |r: &Value| {
            (
                r["destination"]["address"].as_str().unwrap().to_owned(),
                r["conntrace"]["attempts"].as_u64().unwrap(),
                r["conntrace"]["final"].as_bool().unwrap(),
            )
        };
        let events: Vec<_> = all
            .iter()
            .filter(|r| r["event"]["kind"] == "event")
            .collect();
        assert_eq!(events.len(), 2, "the two refused connects, not the success");
        let summaries: Vec<_> = all
            .iter()
            .filter(|r| r["event"]["action"] == "summary")
            .map(summary)
            .collect();
        assert_eq!(
            summaries,
            [
                ("10.0.0.2".to_owned(), 1, false),
                ("10.0.0.3".to_owned(), 1, false),
                ("10.0.0.2".to_owned(), 2, false),
                ("10.0.0.2".to_owned(), 2, true),
                ("10.0.0.3".to_owned(), 1, true),
            ]
        );
        assert_eq!(
            all.last().unwrap()["event"]["action"],
            "stats",
            "stats come last"
        );
    }

    #[test]
    fn breakdown_names_each_failure_kind() {
        let mut agg = Aggregator::new(10);
        for r in [
            Reason::Refused,
            Reason::Refused,
            Reason::Timeout,
            Reason::LocalError,
        ] {
            agg.record(&connect(r, "10.0.0.2:80", 1));
        }
        let e = agg.get(&key("10.0.0.2:80")).unwrap();
        assert_eq!(
            failure_breakdown(e),
            " (2 refused, 1 timeout, 1 ENETUNREACH)"
        );
    }

    #[test]
    fn summary_text_escapes_hostile_names() {
        for (raw, escaped) in crate::output::terminal::tests::HOSTILE {
            let mut agg = Aggregator::new(10);
            let mut e = connect(Reason::Refused, "10.0.0.2:80", 1);
            e.process.name = (*raw).to_owned();
            agg.record(&e);
            let (k, entry) = agg.iter().next().unwrap();
            let mut out = Vec::new();
            write_text(&mut out, k, entry, true).unwrap();
            assert_eq!(
                crate::output::terminal::tests::raw_controls(&out),
                [] as [usize; 0],
                "{raw:?}"
            );
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.lines().count(), 1, "{text}");
            assert!(
                text.contains(&format!("summary {escaped} → 10.0.0.2:80")),
                "{text}"
            );
        }
    }
}
