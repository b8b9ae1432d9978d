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
    schema::{BareEvent, HostObj, Kind, StartConntrace, StartRecord, StatsConntrace, StatsRecord},
    time::{rfc3339_nanos, write_rfc3339_nanos},
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
pub fn write_event(out: &mut impl Write, e: &ConnEvent, host: &str) -> std::io::Result<()> {
    out.write_all(b"{\"@timestamp\":\"")?;
    write_rfc3339_nanos(out, e.time_ns)?;
    out.write_all(
        b"\",\"event\":{\"kind\":\"event\",\"category\":[\"network\"],\
          \"type\":[\"connection\"],\"action\":\"",
    )?;
    out.write_all(e.action.as_str().as_bytes())?;
    out.write_all(b"\",\"outcome\":\"")?;
    out.write_all(e.outcome.as_str().as_bytes())?;
    out.write_all(b"\",\"reason\":\"")?;
    out.write_all(e.reason.as_str().as_bytes())?;
    out.write_all(b"\"")?;
    if let Some(d) = e.duration_ns {
        out.write_all(b",\"duration\":")?;
        write_u64(out, d)?;
    }
    out.write_all(b"}")?;
    if let Some(n) = e.errno {
        out.write_all(b",\"error\":{\"code\":\"")?;
        match errno::known(n) {
            Some(name) => out.write_all(name.as_bytes())?,
            None => {
                out.write_all(b"E")?;
                write_u64(out, u64::from(n))?;
            }
        }
        out.write_all(b"\"}")?;
    }
    let p = &e.process;
    out.write_all(b",\"process\":{\"pid\":")?;
    write_u64(out, u64::from(p.pid))?;
    out.write_all(b",\"name\":")?;
    write_str(out, &p.name)?;
    out.write_all(b",\"thread\":{\"id\":")?;
    write_u64(out, u64::from(p.tid))?;
    out.write_all(b"}")?;
    if let Some(exe) = &p.executable {
        out.write_all(b",\"executable\":")?;
        write_str(out, exe)?;
    }
    if let Some(args) = &p.args {
        out.write_all(b",\"args\":[")?;
        for (i, a) in args.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            write_str(out, a)?;
        }
        out.write_all(b"]")?;
    }
    if let Some(identity) = &p.identity {
        write_identity(out, identity)?;
    }
    out.write_all(b"},\"user\":{\"id\":\"")?;
    write_u64(out, u64::from(p.uid))?;
    out.write_all(b"\"}")?;
    if let Some(source) = e.source {
        out.write_all(b",\"source\":")?;
        write_endpoint(out, source)?;
    }
    out.write_all(b",\"destination\":")?;
    write_endpoint(out, e.destination)?;
    out.write_all(b",\"network\":{\"type\":\"")?;
    out.write_all(e.network_type().as_bytes())?;
    out.write_all(b"\",\"transport\":\"tcp\"},\"host\":{\"name\":")?;
    write_str(out, host)?;
    out.write_all(b"},\"conntrace\":{\"schema_version\":")?;
    write_u64(out, u64::from(SCHEMA_VERSION))?;
    for (key, value) in [
        (&b",\"netns\":"[..], u64::from(e.netns)),
        (b",\"cgroup_id\":", p.cgroup_id),
        (b",\"syns_sent\":", u64::from(e.syns_sent())),
        (b",\"syn_retransmits\":", u64::from(e.syn_retransmits)),
        (b",\"retransmits\":", u64::from(e.retransmits)),
    ] {
        out.write_all(key)?;
        write_u64(out, value)?;
    }
    if let Some(state) = e.tcp_state.and_then(tcp_state_name) {
        out.write_all(b",\"tcp_state\":\"")?;
        out.write_all(state.as_bytes())?;
        out.write_all(b"\"")?;
    }
    if let Some(age) = e.age_ns {
        out.write_all(b",\"age\":")?;
        write_u64(out, age)?;
    }
    write_details(out, &e.details)?;
    if p.cgroup_v1_id != 0 {
        out.write_all(b",\"cgroup_v1_id\":")?;
        write_u64(out, p.cgroup_v1_id)?;
    }
    if p.args_truncated {
        out.write_all(b",\"args_truncated\":true")?;
    }
    if let Some(why) = p.details_missing {
        out.write_all(b",\"details_missing\":\"")?;
        out.write_all(why.as_str().as_bytes())?;
        out.write_all(b"\"")?;
    }
    out.write_all(b"}}\n")
}

/// The rarer facts, each only when it says something.
fn write_details(out: &mut impl Write, d: &Details) -> std::io::Result<()> {
    if d.accepted {
        out.write_all(b",\"direction\":\"inbound\"")?;
    }
    if d.closed_after_error {
        out.write_all(b",\"closed_by_application\":true")?;
    }
    if d.local_drops > 0 {
        out.write_all(b",\"local_drops\":")?;
        write_u64(out, u64::from(d.local_drops))?;
    }
    if let Some(reason) = &d.drop_reason {
        out.write_all(b",\"local_drop_reason\":")?;
        write_str(out, reason)?;
    }
    if let Some(bytes) = d.bytes {
        out.write_all(b",\"bytes_received\":")?;
        write_u64(out, bytes.received)?;
        out.write_all(b",\"bytes_sent\":")?;
        write_u64(out, bytes.sent)?;
    }
    if let Some(fin) = d.peer_fin {
        out.write_all(b",\"idle_before_peer_fin\":")?;
        write_u64(out, fin.idle_before_ns)?;
        out.write_all(b",\"since_peer_fin\":")?;
        write_u64(out, fin.since_ns)?;
    }
    Ok(())
}

/// `"container":{…},"pod":{…}` inside `process`: the traced process's own container and
/// pod (docs/schema.md says why not at the top level).
fn write_identity(out: &mut impl Write, identity: &Identity) -> std::io::Result<()> {
    if let Some(c) = &identity.container {
        out.write_all(b",\"container\":{\"id\":")?;
        write_str(out, &c.id)?;
        write_opt(out, b",\"runtime\":", c.runtime.as_deref())?;
        write_opt(out, b",\"name\":", c.name.as_deref())?;
        out.write_all(b"}")?;
    }
    if let Some(pod) = &identity.pod {
        out.write_all(b",\"pod\":{")?;
        let mut sep: &[u8] = b"";
        for (key, value) in [
            (&b"\"name\":"[..], pod.name.as_deref()),
            (b"\"uid\":", pod.uid.as_deref()),
            (b"\"namespace\":", pod.namespace.as_deref()),
        ] {
            if let Some(v) = value {
                out.write_all(sep)?;
                out.write_all(key)?;
                write_str(out, v)?;
                sep = b",";
            }
        }
        if let Some(w) = &pod.workload {
            out.write_all(sep)?;
            out.write_all(b"\"workload\":{\"kind\":\"")?;
            out.write_all(w.kind.as_str().as_bytes())?;
            out.write_all(b"\",\"name\":")?;
            write_str(out, &w.name)?;
            out.write_all(b"}")?;
        }
        out.write_all(b"}")?;
    }
    Ok(())
}

fn write_opt(out: &mut impl Write, key: &[u8], value: Option<&str>) -> std::io::Result<()> {
    match value {
        Some(v) => {
            out.write_all(key)?;
            write_str(out, v)
        }
        None => Ok(()),
    }
}

/// A JSON string. Names, paths and arguments rarely need escaping: those that do go
/// through serde_json, which escapes them as it escapes everything else.
fn write_str(out: &mut impl Write, s: &str) -> std::io::Result<()> {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.write_all(b"\"")?;
        out.write_all(s.as_bytes())?;
        out.write_all(b"\"")
    } else {
        serde_json::to_writer(&mut *out, s).map_err(std::io::Error::other)
    }
}

fn write_u64(out: &mut impl Write, mut v: u64) -> std::io::Result<()> {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.write_all(&buf[i..])
}

/// `{"ip":"10.0.0.2","port":80}`.
fn write_endpoint(out: &mut impl Write, addr: SocketAddr) -> std::io::Result<()> {
    out.write_all(b"{\"ip\":\"")?;
    match addr.ip() {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.write_all(b".")?;
                }
                write_u64(out, u64::from(octet))?;
            }
        }
        IpAddr::V6(v6) => write!(out, "{v6}")?,
    }
    out.write_all(b"\",\"port\":")?;
    write_u64(out, u64::from(addr.port()))?;
    out.write_all(b"}")
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
            events: s.counts.by_kind.clone(),
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
        write_event(&mut out, e, host).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn base() -> ConnEvent {
        super::super::tests::refused()
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
