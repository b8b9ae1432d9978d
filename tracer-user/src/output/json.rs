//! JSON lines, ECS field names (docs/schema.md). One object per line; the schema version
//! rides in every record so that pipelines can route on it.
use std::{collections::BTreeMap, io::Write};

use serde::Serialize;

use super::{RunInfo, SCHEMA_VERSION, time::rfc3339_nanos};
use crate::{
    errno,
    model::{ConnEvent, tcp_state_name},
    stats::Snapshot,
};

#[derive(Serialize)]
struct Record<'a, C: Serialize> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    event: EventObj<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorObj>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<ProcessObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<UserObj>,
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<ContainerObj<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    destination: Option<Endpoint>,
    #[serde(skip_serializing_if = "Option::is_none")]
    network: Option<NetworkObj>,
    host: HostObj<'a>,
    conntrace: C,
}

#[derive(Serialize)]
struct EventObj<'a> {
    kind: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    category: &'a [&'a str],
    #[serde(rename = "type", skip_serializing_if = "<[_]>::is_empty")]
    type_: &'a [&'a str],
    action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<u64>,
}

#[derive(Serialize)]
struct ErrorObj {
    code: String,
}

#[derive(Serialize)]
struct ProcessObj<'a> {
    pid: u32,
    name: &'a str,
    thread: ThreadObj,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [String]>,
}

#[derive(Serialize)]
struct ThreadObj {
    id: u32,
}

#[derive(Serialize)]
struct UserObj {
    id: String,
}

#[derive(Serialize)]
struct ContainerObj<'a> {
    id: &'a str,
}

#[derive(Serialize)]
struct Endpoint {
    ip: String,
    port: u16,
}

#[derive(Serialize)]
struct NetworkObj {
    #[serde(rename = "type")]
    type_: &'static str,
    transport: &'static str,
}

#[derive(Serialize)]
struct HostObj<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct ConnObj {
    schema_version: u32,
    netns: u32,
    cgroup_id: u64,
    syns_sent: u32,
    syn_retransmits: u32,
    retransmits: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    tcp_state: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    age: Option<u64>,
}

const NETWORK: &[&str] = &["network"];
const CONNECTION: &[&str] = &["connection"];

/// Writes one connection record as a line.
pub fn write_event(out: &mut impl Write, e: &ConnEvent, host: &str) -> std::io::Result<()> {
    let record = Record {
        timestamp: rfc3339_nanos(e.time_ns),
        event: EventObj {
            kind: "event",
            category: NETWORK,
            type_: CONNECTION,
            action: e.action.as_str(),
            outcome: Some(e.outcome.as_str()),
            reason: Some(e.reason.as_str()),
            duration: e.duration_ns,
        },
        error: e.errno.map(|n| ErrorObj {
            code: errno::name(n),
        }),
        process: Some(ProcessObj {
            pid: e.process.pid,
            name: &e.process.name,
            thread: ThreadObj { id: e.process.tid },
            executable: e.process.executable.as_deref(),
            args: e.process.args.as_deref(),
        }),
        user: Some(UserObj {
            id: e.process.uid.to_string(),
        }),
        container: e
            .process
            .container_id
            .as_deref()
            .map(|id| ContainerObj { id }),
        source: e.source.map(|s| Endpoint {
            ip: s.ip().to_string(),
            port: s.port(),
        }),
        destination: Some(Endpoint {
            ip: e.destination.ip().to_string(),
            port: e.destination.port(),
        }),
        network: Some(NetworkObj {
            type_: e.network_type(),
            transport: "tcp",
        }),
        host: HostObj { name: host },
        conntrace: ConnObj {
            schema_version: SCHEMA_VERSION,
            netns: e.netns,
            cgroup_id: e.process.cgroup_id,
            syns_sent: e.syns_sent(),
            syn_retransmits: e.syn_retransmits,
            retransmits: e.retransmits,
            tcp_state: e.tcp_state.and_then(tcp_state_name),
            age: e.age_ns,
        },
    };
    write_line(out, &record)
}

#[derive(Serialize)]
struct StartObj<'a> {
    schema_version: u32,
    version: &'a str,
    kernel: &'a str,
    connect_hook: &'a str,
    filters: &'a BTreeMap<&'static str, String>,
}

/// The stream's first record: which attach path was chosen, on which kernel.
pub fn write_start(out: &mut impl Write, info: &RunInfo) -> std::io::Result<()> {
    let record = bare_record(
        info.start_ns,
        "state",
        "start",
        &info.host,
        StartObj {
            schema_version: SCHEMA_VERSION,
            version: env!("CARGO_PKG_VERSION"),
            kernel: &info.kernel,
            connect_hook: &info.connect_hook,
            filters: &info.filters,
        },
    );
    write_line(out, &record)
}

#[derive(Serialize)]
struct StatsObj<'a> {
    schema_version: u32,
    #[serde(rename = "final")]
    is_final: bool,
    events: &'a BTreeMap<String, u64>,
    received: u64,
    malformed: u64,
    kernel_submitted: u64,
    lost_events: u64,
    lost_events_per_cpu: &'a [u64],
    in_flight: u64,
    evictions: u64,
    untracked_connect_calls: u64,
    kernel_read_errors: u64,
}

/// A stats record (`event.kind: "metric"`, `event.action: "stats"`).
pub fn write_stats(out: &mut impl Write, s: &Snapshot, host: &str) -> std::io::Result<()> {
    let record = bare_record(
        s.time_ns,
        "metric",
        "stats",
        host,
        StatsObj {
            schema_version: SCHEMA_VERSION,
            is_final: s.is_final,
            events: &s.counts.by_kind,
            received: s.counts.received,
            malformed: s.counts.malformed,
            kernel_submitted: s.kernel.submitted,
            lost_events: s.kernel.lost,
            lost_events_per_cpu: &s.kernel.lost_per_cpu,
            in_flight: s.kernel.in_flight,
            evictions: s.kernel.socks_full,
            untracked_connect_calls: s.kernel.calls_full,
            kernel_read_errors: s.kernel.read_errors,
        },
    );
    write_line(out, &record)
}

fn bare_record<'a, C: Serialize>(
    time_ns: u64,
    kind: &'a str,
    action: &'a str,
    host: &'a str,
    conntrace: C,
) -> Record<'a, C> {
    Record {
        timestamp: rfc3339_nanos(time_ns),
        event: EventObj {
            kind,
            category: &[],
            type_: &[],
            action,
            outcome: None,
            reason: None,
            duration: None,
        },
        error: None,
        process: None,
        user: None,
        container: None,
        source: None,
        destination: None,
        network: None,
        host: HostObj { name: host },
        conntrace,
    }
}

fn write_line(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}
