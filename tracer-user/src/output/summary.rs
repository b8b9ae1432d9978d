//! Summary records (`event.kind: "metric"`, `event.action: "summary"`): one per (workload,
//! destination) entry of the aggregate. Built here from an entry, in the shape
//! [`super::schema::SummaryRecord`] defines; the same counts object serves `diagnose
//! --json`.
use std::{collections::BTreeMap, io::Write};

use super::{
    SCHEMA_VERSION,
    json::write_line as write_json_line,
    schema::{
        ContainerObj, CountsObj, DestinationObj, EntryObj, FailuresObj, HostObj, Kind,
        LastErrorObj, PodObj, QuantilesObj, ResetsObj, SubjectObj, SummaryConntrace, SummaryEvent,
        SummaryProcess, SummaryRecord, WorkloadObj,
    },
    terminal::write_line,
    time::{clock_millis, human_duration, rfc3339_nanos},
};
use crate::{
    aggregate::{Entry, FailureStats, Key, Quantiles},
    errno,
    model::{Container, Pod},
};

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
            action: l.action,
            reason: l.reason,
            code: l.errno.map(errno::name),
        }),
    }
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
            kind: w.kind.as_str().into(),
            name: w.name.clone(),
        }),
    }
}

pub fn subject(key: &Key, e: &Entry) -> SubjectObj {
    SubjectObj {
        process: key.workload.as_ref().map(|w| SummaryProcess {
            name: w.name.clone(),
            executable: e.executable.as_deref().map(String::from),
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
        direction: key.inbound.then(|| "inbound".into()),
        counts: counts(e),
    }
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
            kind: Kind::Metric,
            category: vec!["network".into()],
            type_: vec!["connection".into()],
            action: "summary".into(),
        },
        subject: subject(key, e),
        host: HostObj {
            name: batch.host.into(),
        },
        conntrace: SummaryConntrace {
            schema_version: SCHEMA_VERSION,
            is_final: batch.is_final,
            folded_into_other: batch.folded,
            entry: entry_obj(key, e),
        },
    };
    write_json_line(out, &record)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{
            Aggregator,
            tests::{connect, key, reset_received},
        },
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
