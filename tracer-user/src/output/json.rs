//! JSON lines, ECS field names (docs/schema.md). One object per line; the schema version
//! rides in every record so that pipelines can route on it. The records' shape is defined
//! once, in [`super::schema`].
use std::{
    io::Write,
    net::{IpAddr, SocketAddr},
};

use serde::Serialize;

use super::{
    SCHEMA_VERSION,
    digits::{digits8, put_u64},
    schema::{BareEvent, HostObj, Kind, StartConntrace, StartRecord, StatsConntrace, StatsRecord},
    time::{Timestamps, rfc3339_nanos},
};
use crate::{
    errno,
    model::{ConnEvent, Details, Identity, RunInfo, tcp_state_name},
    stats::Snapshot,
};

/// Writes one connection record as a line.
///
/// Written by hand, not through serde: this runs for every event, and serde's call per
/// key and value plus the strings allocated for the timestamp, the addresses and the ids
/// cost several times the rest of conntrace's work per event (docs/benchmarks.md). The
/// bytes are the ones [`super::schema::EventRecord`] writes; a test keeps the two in
/// step. Fields in the order docs/schema.md lists them.
///
/// Straight into the record's `Vec`, not through `io::Write`: each literal below is then
/// copied by a few inlined moves instead of a call to `memcpy`, and numbers are built in
/// registers ([`super::digits`]). The dozens of such calls per record were the largest item in
/// a profile of a refused storm (docs/benchmarks.md).
pub fn write_event(
    out: &mut Vec<u8>,
    e: &ConnEvent,
    host: &str,
    stamps: &mut Timestamps,
) -> std::io::Result<()> {
    out.reserve(RECORD_BYTES_HINT);
    put(out, b"{\"@timestamp\":\"");
    stamps.put(out, e.time_ns);
    put(
        out,
        b"\",\"event\":{\"kind\":\"event\",\"category\":[\"network\"],\
          \"type\":[\"connection\"],\"action\":\"",
    );
    put(out, e.action.as_str().as_bytes());
    put(out, b"\",\"outcome\":\"");
    put(out, e.outcome.as_str().as_bytes());
    put(out, b"\",\"reason\":\"");
    put(out, e.reason.as_str().as_bytes());
    put(out, b"\"");
    if let Some(d) = e.duration_ns {
        put(out, b",\"duration\":");
        put_u64(out, d);
    }
    put(out, b"}");
    if let Some(n) = e.errno {
        put(out, b",\"error\":{\"code\":\"");
        match errno::known(n) {
            Some(name) => put(out, name.as_bytes()),
            None => {
                put(out, b"E");
                put_u64(out, u64::from(n));
            }
        }
        put(out, b"\"}");
    }
    write_process(out, &e.process)?;
    if let Some(source) = e.source {
        put(out, b",\"source\":");
        put_endpoint(out, source);
    }
    put(out, b",\"destination\":");
    put_endpoint(out, e.destination);
    put(out, b",\"network\":{\"type\":\"");
    put(out, e.network_type().as_bytes());
    put(out, b"\",\"transport\":\"tcp\"},\"host\":{\"name\":");
    write_str(out, host)?;
    put(out, b"},\"conntrace\":{\"schema_version\":");
    put_u64(out, u64::from(SCHEMA_VERSION));
    let p = &e.process;
    put(out, b",\"netns\":");
    put_u64(out, u64::from(e.netns));
    put(out, b",\"cgroup_id\":");
    put_u64(out, p.cgroup_id);
    put(out, b",\"syns_sent\":");
    put_u64(out, u64::from(e.syns_sent()));
    put(out, b",\"syn_retransmits\":");
    put_u64(out, u64::from(e.syn_retransmits));
    put(out, b",\"retransmits\":");
    put_u64(out, u64::from(e.retransmits));
    if let Some(state) = e.tcp_state.and_then(tcp_state_name) {
        put(out, b",\"tcp_state\":\"");
        put(out, state.as_bytes());
        put(out, b"\"");
    }
    if let Some(age) = e.age_ns {
        put(out, b",\"age\":");
        put_u64(out, age);
    }
    write_details(out, &e.details)?;
    if p.cgroup_v1_id != 0 {
        put(out, b",\"cgroup_v1_id\":");
        put_u64(out, p.cgroup_v1_id);
    }
    if p.args_truncated {
        put(out, b",\"args_truncated\":true");
    }
    if let Some(why) = p.details_missing {
        put(out, b",\"details_missing\":\"");
        put(out, why.as_str().as_bytes());
        put(out, b"\"");
    }
    put(out, b"}}\n");
    Ok(())
}

/// What most records take, so that one reservation covers the whole line.
const RECORD_BYTES_HINT: usize = 768;

/// `,"process":{…},"user":{…}`.
fn write_process(out: &mut Vec<u8>, p: &crate::model::Process) -> std::io::Result<()> {
    put(out, b",\"process\":{\"pid\":");
    put_u64(out, u64::from(p.pid));
    put(out, b",\"name\":");
    write_str(out, &p.name)?;
    put(out, b",\"thread\":{\"id\":");
    put_u64(out, u64::from(p.tid));
    put(out, b"}");
    if let Some(exe) = &p.executable {
        put(out, b",\"executable\":");
        write_str(out, exe)?;
    }
    if let Some(args) = &p.args {
        put(out, b",\"args\":[");
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                put(out, b",");
            }
            write_str(out, a)?;
        }
        put(out, b"]");
    }
    if let Some(identity) = &p.identity {
        write_identity(out, identity)?;
    }
    put(out, b"},\"user\":{\"id\":\"");
    put_u64(out, u64::from(p.uid));
    put(out, b"\"}");
    Ok(())
}

/// The rarer facts, each only when it says something.
fn write_details(out: &mut Vec<u8>, d: &Details) -> std::io::Result<()> {
    if d.accepted {
        put(out, b",\"direction\":\"inbound\"");
    }
    if d.closed_after_error {
        put(out, b",\"closed_by_application\":true");
    }
    if d.local_drops > 0 {
        put(out, b",\"local_drops\":");
        put_u64(out, u64::from(d.local_drops));
    }
    if let Some(reason) = &d.drop_reason {
        put(out, b",\"local_drop_reason\":");
        write_str(out, reason)?;
    }
    if let Some(bytes) = d.bytes {
        put(out, b",\"bytes_received\":");
        put_u64(out, bytes.received);
        put(out, b",\"bytes_sent\":");
        put_u64(out, bytes.sent);
    }
    if let Some(fin) = d.peer_fin {
        put(out, b",\"idle_before_peer_fin\":");
        put_u64(out, fin.idle_before_ns);
        put(out, b",\"since_peer_fin\":");
        put_u64(out, fin.since_ns);
    }
    Ok(())
}

/// `"container":{…},"pod":{…}` inside `process`: the traced process's own container and
/// pod (docs/schema.md says why not at the top level).
fn write_identity(out: &mut Vec<u8>, identity: &Identity) -> std::io::Result<()> {
    if let Some(c) = &identity.container {
        put(out, b",\"container\":{\"id\":");
        write_str(out, &c.id)?;
        write_opt(out, b",\"runtime\":", c.runtime.as_deref())?;
        write_opt(out, b",\"name\":", c.name.as_deref())?;
        put(out, b"}");
    }
    if let Some(pod) = &identity.pod {
        put(out, b",\"pod\":{");
        let mut sep: &[u8] = b"";
        for (key, value) in [
            (&b"\"name\":"[..], pod.name.as_deref()),
            (b"\"uid\":", pod.uid.as_deref()),
            (b"\"namespace\":", pod.namespace.as_deref()),
        ] {
            if let Some(v) = value {
                put(out, sep);
                put(out, key);
                write_str(out, v)?;
                sep = b",";
            }
        }
        if let Some(w) = &pod.workload {
            put(out, sep);
            put(out, b"\"workload\":{\"kind\":\"");
            put(out, w.kind.as_str().as_bytes());
            put(out, b"\",\"name\":");
            write_str(out, &w.name)?;
            put(out, b"}");
        }
        put(out, b"}");
    }
    Ok(())
}

fn write_opt(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) -> std::io::Result<()> {
    match value {
        Some(v) => {
            put(out, key);
            write_str(out, v)
        }
        None => Ok(()),
    }
}

/// A JSON string. Names, paths and arguments rarely need escaping: those that do go
/// through serde_json, which escapes them as it escapes everything else.
fn write_str(out: &mut Vec<u8>, s: &str) -> std::io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        put(out, b"\"");
        put(out, s.as_bytes());
        put(out, b"\"");
        Ok(())
    } else {
        serde_json::to_writer(&mut *out, s).map_err(std::io::Error::other)
    }
}

#[inline(always)]
fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
}

/// An IPv4 address's dotted octets; each with its dot in one word (see [`digits8`] for why).
fn put_ipv4(out: &mut Vec<u8>, ip: std::net::Ipv4Addr) {
    for (i, octet) in ip.octets().into_iter().enumerate() {
        let len = match octet {
            0..10 => 1,
            10..100 => 2,
            _ => 3,
        };
        let word = (digits8(u32::from(octet)) >> (8 * (8 - len))) | (u64::from(b'.') << (8 * len));
        let start = out.len();
        out.extend_from_slice(&word.to_le_bytes());
        // The last octet has no dot after it.
        out.truncate(start + len + usize::from(i < 3));
    }
}

/// `{"ip":"10.0.0.2","port":80}`.
fn put_endpoint(out: &mut Vec<u8>, addr: SocketAddr) {
    put(out, b"{\"ip\":\"");
    match addr.ip() {
        IpAddr::V4(v4) => put_ipv4(out, v4),
        IpAddr::V6(v6) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
    put(out, b"\",\"port\":");
    put_u64(out, u64::from(addr.port()));
    put(out, b"}");
}

/// The stream's first record: which attach path was chosen, on which kernel.
pub fn write_start(out: &mut impl Write, info: &RunInfo) -> std::io::Result<()> {
    let record = StartRecord {
        timestamp: rfc3339_nanos(info.start_ns),
        event: bare_event(Kind::State, "start"),
        host: HostObj {
            name: info.host.clone(),
        },
        conntrace: StartConntrace {
            schema_version: SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: info.kernel.clone(),
            connect_hook: info.connect_hook.clone(),
            filters: info
                .filters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        },
    };
    write_line(out, &record)
}

/// A stats record (`event.kind: "metric"`, `event.action: "stats"`).
pub fn write_stats(out: &mut impl Write, s: &Snapshot, host: &str) -> std::io::Result<()> {
    let record = StatsRecord {
        timestamp: rfc3339_nanos(s.time_ns),
        event: bare_event(Kind::Metric, "stats"),
        host: HostObj { name: host.into() },
        conntrace: StatsConntrace {
            schema_version: SCHEMA_VERSION,
            is_final: s.is_final,
            events: s.counts.by_kind_named(),
            received: s.counts.received,
            malformed: s.counts.malformed,
            kernel_submitted: s.kernel.submitted,
            lost_events: s.kernel.lost,
            lost_events_per_cpu: s.kernel.lost_per_cpu.clone(),
            connecting: s.kernel.connecting,
            established: s.kernel.established,
            connects_unfollowed: s.kernel.connects_unfollowed,
            established_unfollowed: s.kernel.established_unfollowed,
            connect_calls_unfollowed: s.kernel.calls_unfollowed,
            failed_sockets_unremembered: s.kernel.failed_unremembered,
            swept: s.kernel.swept,
            skipped_program_runs: s.kernel.skipped_total(),
            skipped_program_runs_by_program: s.kernel.skipped.clone(),
            kernel_read_errors: s.kernel.read_errors,
            filtered: s.counts.filtered,
            lookups_timed_out: s.counts.enrich.timed_out,
            lookups_refused: s.counts.enrich.busy,
            output_dropped: s.output.dropped.events,
            output_dropped_other: s.output.dropped.other,
        },
    };
    write_line(out, &record)
}

fn bare_event(kind: Kind, action: &str) -> BareEvent {
    BareEvent {
        kind,
        action: action.into(),
    }
}

pub fn write_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    //! The hand-written event writer against the schema's type.
    use super::*;
    use crate::{
        model::{Action, Container, DetailsMissing, Outcome, Pod, Reason, Workload, WorkloadKind},
        output::schema::EventRecord,
    };
    use std::sync::Arc;

    fn reference(e: &ConnEvent, host: &str) -> String {
        serde_json::to_string(&EventRecord::of(e, host)).unwrap() + "\n"
    }

    fn written(e: &ConnEvent, host: &str) -> String {
        let mut out = Vec::new();
        write_event(&mut out, e, host, &mut Timestamps::default()).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn base() -> ConnEvent {
        super::super::tests::refused()
    }

    #[test]
    fn numbers_and_addresses_are_written_as_std_formats_them() {
        let mut values: Vec<u64> = (0..100_000).collect();
        for digits in 1..=20u32 {
            let p = 10u64.saturating_pow(digits - 1);
            values.extend([p - 1, p, p + 1, p.saturating_mul(7).saturating_add(3)]);
        }
        values.extend([
            u64::from(u32::MAX),
            u64::MAX,
            u64::MAX - 1,
            99_999_999,
            100_000_000,
        ]);
        for v in values {
            let mut out = Vec::new();
            put_u64(&mut out, v);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
        for v in [0, 5, 9, 10, 42, 99, 100, 255, 1234, 99_999_999] {
            let word = digits8(v).to_le_bytes();
            assert_eq!(std::str::from_utf8(&word).unwrap(), format!("{v:08}"));
        }
        for ip in [
            "0.0.0.0",
            "255.255.255.255",
            "10.0.0.2",
            "127.0.0.1",
            "1.22.133.9",
        ] {
            let mut out = Vec::new();
            put_ipv4(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
    }

    #[test]
    fn same_bytes_as_serde() {
        let mut cases = vec![base()];
        let mut e = base();
        e.errno = Some(4095);
        e.duration_ns = None;
        e.source = None;
        e.reason = Reason::LocalError;
        e.process.executable = None;
        e.process.args = None;
        e.process.identity = Some(Arc::new(Identity {
            container: Some(Container {
                id: "0123abcd".into(),
                runtime: None,
                name: Some("app\n".into()),
            }),
            pod: None,
        }));
        e.process.details_missing = Some(DetailsMissing::Replaced);
        cases.push(e);
        let mut e = base();
        e.process.identity = Some(Arc::new(Identity {
            container: Some(Container {
                id: "f".repeat(64),
                runtime: Some("containerd".into()),
                name: Some("app".into()),
            }),
            pod: Some(Pod {
                uid: Some("1a2b3c4d-5e6f-4a8b-9c0d-112233445566".into()),
                name: Some("web-7d9f8b6c5d-x2k4p".into()),
                namespace: Some("shop".into()),
                workload: Some(Workload {
                    kind: WorkloadKind::Deployment,
                    name: "web".into(),
                }),
            }),
        }));
        e.process.cgroup_v1_id = 4242;
        e.process.args_truncated = true;
        cases.push(e);
        let mut e = base();
        e.process.identity = Some(Arc::new(Identity {
            container: None,
            pod: Some(Pod {
                uid: Some("6b6cf55d2f1e8c2d4e1f1d4e2b1c5a3f".into()),
                ..Pod::default()
            }),
        }));
        cases.push(e);
        let mut e = base();
        e.action = Action::Reset;
        e.reason = Reason::Received;
        e.outcome = Outcome::Unknown;
        e.errno = None;
        e.tcp_state = Some(1);
        e.age_ns = Some(u64::MAX);
        e.destination = "[fd00::2]:443".parse().unwrap();
        e.source = Some("[::ffff:10.0.0.1]:0".parse().unwrap());
        e.process.name = "we\"ird\\name\t".into();
        e.process.args = Some(vec![String::new(), "ünï\u{1}".into()]);
        e.time_ns = 0;
        e.details = crate::model::Details {
            local_drops: 2,
            drop_reason: Some("NEIGH_FAILED".into()),
            closed_after_error: true,
            bytes: Some(crate::model::Bytes {
                received: 0,
                sent: 17,
            }),
            peer_fin: Some(crate::model::PeerFin {
                idle_before_ns: 5,
                since_ns: 6,
            }),
            accepted: true,
        };
        cases.push(e);
        for e in &cases {
            assert_eq!(written(e, "node-1"), reference(e, "node-1"));
            assert_eq!(written(e, "h\"ost"), reference(e, "h\"ost"));
        }
    }
}
