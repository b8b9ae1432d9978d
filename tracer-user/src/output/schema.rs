//! The JSON records' one definition (docs/schema.md): a serde type for every kind of
//! record the stream carries. Start, stats and summary records are written through these
//! types. Connection records are written by hand for speed (`json::write_event`, once per
//! event), and a test holds its bytes equal to what [`EventRecord`] writes. The examples in
//! docs/schema.md are parsed with [`parse`] in a test, and so is every record the
//! privileged test suite reads: a field the doc shows, the writer writes or a test expects
//! that these types do not define fails there.
//!
//! Values that are enums in the code (`event.action`, `event.reason`, …) are enums here
//! too, so a misspelt value fails as surely as a misspelt key.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    errno,
    model::{Action, ConnEvent, Outcome, Reason, tcp_state_name},
    output::time::rfc3339_nanos,
};

/// `event.kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A connection record.
    Event,
    /// The start record.
    State,
    /// Stats and summary records.
    Metric,
    /// A verdict record.
    Alert,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostObj {
    pub name: String,
}

// ---- connection records -------------------------------------------------------------

/// A connection record (`event.kind: "event"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: EventObj,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorObj>,
    pub process: EventProcess,
    pub user: UserObj,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Endpoint>,
    pub destination: Endpoint,
    pub network: NetworkObj,
    pub host: HostObj,
    pub conntrace: EventConntrace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventObj {
    pub kind: Kind,
    pub category: Vec<String>,
    #[serde(rename = "type")]
    pub type_: Vec<String>,
    pub action: Action,
    pub outcome: Outcome,
    pub reason: Reason,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObj {
    /// The errno's symbolic name (`ECONNREFUSED`), or `E<n>`.
    pub code: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventProcess {
    pub pid: u32,
    pub name: String,
    pub thread: ThreadObj,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The process's own container (inside `process`: docs/schema.md says why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerObj>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodObj>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadObj {
    pub id: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserObj {
    pub id: String,
}

/// `process.container`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerObj {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `process.pod`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodObj {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadObj>,
}

/// `process.pod.workload`: what owns the pod (`Deployment`, `StatefulSet`, …).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadObj {
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: String,
    pub port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkObj {
    #[serde(rename = "type")]
    pub type_: String,
    pub transport: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConntrace {
    pub schema_version: u32,
    pub netns: u32,
    pub cgroup_id: u64,
    pub syns_sent: u32,
    pub syn_retransmits: u32,
    pub retransmits: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<String>,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<u64>,
    /// `inbound` for a connection accepted here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed_by_application: bool,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub local_drops: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_drop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_before_peer_fin: Option<u64>,
    /// Nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_peer_fin: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_v1_id: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub args_truncated: bool,
    /// Why procfs details are absent (`exited`, `replaced`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details_missing: Option<String>,
}

#[allow(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl EventRecord {
    /// The record for an event, as `json::write_event` writes it.
    pub fn of(e: &ConnEvent, host: &str) -> EventRecord {
        let endpoint = |a: std::net::SocketAddr| Endpoint {
            ip: a.ip().to_string(),
            port: a.port(),
        };
        let p = &e.process;
        EventRecord {
            timestamp: rfc3339_nanos(e.time_ns),
            event: EventObj {
                kind: Kind::Event,
                category: vec!["network".into()],
                type_: vec!["connection".into()],
                action: e.action,
                outcome: e.outcome,
                reason: e.reason,
                duration: e.duration_ns,
            },
            error: e.errno.map(|n| ErrorObj {
                code: errno::name(n),
            }),
            process: EventProcess {
                pid: p.pid,
                name: p.name.clone(),
                thread: ThreadObj { id: p.tid },
                executable: p.executable.as_deref().map(String::from),
                args: p.args.clone(),
                container: p.container().map(super::summary::container_obj),
                pod: p.pod().map(super::summary::pod_obj),
            },
            user: UserObj {
                id: p.uid.to_string(),
            },
            source: e.source.map(endpoint),
            destination: endpoint(e.destination),
            network: NetworkObj {
                type_: e.network_type().into(),
                transport: "tcp".into(),
            },
            host: HostObj { name: host.into() },
            conntrace: EventConntrace {
                schema_version: super::SCHEMA_VERSION,
                netns: e.netns,
                cgroup_id: p.cgroup_id,
                syns_sent: e.syns_sent(),
                syn_retransmits: e.syn_retransmits,
                retransmits: e.retransmits,
                tcp_state: e.tcp_state.and_then(tcp_state_name).map(Into::into),
                age: e.age_ns,
                direction: e.details.accepted.then(|| "inbound".into()),
                closed_by_application: e.details.closed_after_error,
                local_drops: e.details.local_drops,
                local_drop_reason: e.details.drop_reason.clone(),
                bytes_received: e.details.bytes.map(|b| b.received),
                bytes_sent: e.details.bytes.map(|b| b.sent),
                idle_before_peer_fin: e.details.peer_fin.map(|f| f.idle_before_ns),
                since_peer_fin: e.details.peer_fin.map(|f| f.since_ns),
                cgroup_v1_id: (p.cgroup_v1_id != 0).then_some(p.cgroup_v1_id),
                args_truncated: p.args_truncated,
                details_missing: p.details_missing.map(|d| d.as_str().into()),
            },
        }
    }
}

// ---- the start and stats records ----------------------------------------------------

/// `event` of the start and stats records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BareEvent {
    pub kind: Kind,
    pub action: String,
}

/// The stream's first record (`event.kind: "state"`, `event.action: "start"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: BareEvent,
    pub host: HostObj,
    pub conntrace: StartConntrace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartConntrace {
    pub schema_version: u32,
    pub version: String,
    pub kernel: String,
    pub connect_hook: String,
    /// The filters in force, as strings.
    pub filters: BTreeMap<String, String>,
}

/// A stats record (`event.kind: "metric"`, `event.action: "stats"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRecord {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: BareEvent,
    pub host: HostObj,
    pub conntrace: StatsConntrace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsConntrace {
    pub schema_version: u32,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Records received, by `action.reason`.
    pub events: BTreeMap<String, u64>,
    pub received: u64,
    pub malformed: u64,
    pub kernel_submitted: u64,
    pub lost_events: u64,
    pub lost_events_per_cpu: Vec<u64>,
    /// Connects in flight followed now.
    pub connecting: u64,
    /// Established connections followed now.
    pub established: u64,
    pub connects_unfollowed: u64,
    pub established_unfollowed: u64,
    pub connect_calls_unfollowed: u64,
    pub failed_sockets_unremembered: u64,
    pub swept: u64,
    pub skipped_program_runs: u64,
    pub skipped_program_runs_by_program: BTreeMap<String, u64>,
    pub kernel_read_errors: u64,
    /// Records dropped by the userspace filters (`--pod`, `--namespace`, `--container`).
    pub filtered: u64,
    /// Lookups (procfs, identity) not answered within their deadline.
    pub lookups_timed_out: u64,
    /// Lookups not made: every worker was stuck, or the queue was full.
    pub lookups_refused: u64,
    /// Connection records not written because the output's reader did not keep up.
    pub output_dropped: u64,
    /// Other records (summaries, verdicts) not written for the same reason.
    pub output_dropped_other: u64,
}

// ---- summary records ----------------------------------------------------------------

/// A summary record (`event.kind: "metric"`, `event.action: "summary"`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: SummaryEvent,
    #[serde(flatten)]
    pub subject: SubjectObj,
    pub host: HostObj,
    pub conntrace: SummaryConntrace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryEvent {
    pub kind: Kind,
    pub category: Vec<String>,
    #[serde(rename = "type")]
    pub type_: Vec<String>,
    pub action: String,
}

/// Who and where: the parts of a summary (or a verdict) that name the entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectObj {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<SummaryProcess>,
    pub destination: DestinationObj,
}

/// ECS `process`, for an entry with a workload, with its container and pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryProcess {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerObj>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodObj>,
}

/// ECS `destination`: `address` always (`other` for a folded entry), `ip` and `port` when
/// the entry has one destination.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestinationObj {
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryConntrace {
    pub schema_version: u32,
    #[serde(rename = "final")]
    pub is_final: bool,
    /// Records folded into `other` entries so far (more destinations than --max-keys).
    pub folded_into_other: u64,
    #[serde(flatten)]
    pub entry: EntryObj,
}

/// conntrace's own part of a summary record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryObj {
    pub pids: Vec<u32>,
    /// More processes than `pids` lists were seen.
    pub more_pids: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_v1_id: Option<u64>,
    pub netns: u32,
    /// A folded entry: `destination` (and, for the catch-all, the workload) is `other`.
    pub folded: bool,
    /// `inbound` for connections the workload accepted (it listens on `destination`);
    /// absent for those it made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    #[serde(flatten)]
    pub counts: CountsObj,
}

/// The numbers of one entry (also `diagnose --json`'s `findings[].counts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<QuantilesObj>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_fail: Option<QuantilesObj>,
    pub first_seen: String,
    pub last_seen: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastErrorObj>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailuresObj {
    pub total: u64,
    pub refused: u64,
    pub timeout: u64,
    pub unreachable: u64,
    pub abandoned: u64,
    pub local_error: u64,
    /// Unreachable attempts by errno name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unreachable_errors: BTreeMap<String, u64>,
    /// Local errors by errno name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub local_errors: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetsObj {
    pub received: u64,
    pub sent: u64,
    /// Of those received, the ones after the peer had closed the connection (stale
    /// keep-alive reuse).
    pub after_peer_fin: u64,
}

/// Nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantilesObj {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastErrorObj {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub action: Action,
    pub reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

// ---- verdict records ----------------------------------------------------------------

/// A verdict record (`event.kind: "alert"`, `event.action: "verdict"`): a (workload,
/// destination) started failing, its probable cause changed, or it recovered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub event: VerdictEvent,
    #[serde(flatten)]
    pub subject: SubjectObj,
    pub host: HostObj,
    pub conntrace: VerdictConntrace,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictEvent {
    pub kind: Kind,
    pub category: Vec<String>,
    /// `["connection", "start"]` (failing), `["connection", "change"]` (changed),
    /// `["connection", "end"]` (resolved).
    #[serde(rename = "type")]
    pub type_: Vec<String>,
    pub action: String,
    /// `failure` while failing, `success` once resolved.
    pub outcome: Outcome,
    /// The probable cause (`no_listener`, …); for a resolved verdict, the cause that was.
    pub reason: String,
}

/// Where a verdict stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictState {
    /// It started failing.
    Failing,
    /// Still failing, for another probable cause.
    Changed,
    /// It recovered.
    Resolved,
}

/// How a failure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    /// Attempts succeed again, and none failed in the last interval.
    Succeeded,
    /// No failure within the window, and no success either: the attempts stopped.
    Quiet,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictConntrace {
    pub schema_version: u32,
    pub verdict: VerdictObj,
    /// Process ids seen for the entry (the first 8).
    pub pids: Vec<u32>,
    /// The sliding window the rules looked at, in nanoseconds.
    pub window: u64,
    /// The entry's counts over that window; absent when nothing was seen in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<CountsObj>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictObj {
    pub state: VerdictState,
    pub layer: crate::diagnose::Layer,
    pub cause: String,
    pub confidence: crate::diagnose::Confidence,
    pub summary: String,
    pub evidence: serde_json::Map<String, Value>,
    pub next: Vec<String>,
    /// `changed`: the cause before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_cause: Option<String>,
    /// `resolved`: how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<Resolution>,
    /// When this failure was first seen (the start of the interval it was seen in).
    pub since: String,
}

// ---- any record ---------------------------------------------------------------------

/// Any record of the stream.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    Start(StartRecord),
    Event(Box<EventRecord>),
    Stats(StatsRecord),
    Summary(Box<SummaryRecord>),
    Verdict(Box<VerdictRecord>),
}

/// Parses one line of the stream into its type, and checks that the type accounts for
/// every field: written back, it must give the same JSON (no field unknown, none of the
/// wrong type, no `null` where a field should be absent).
pub fn parse(line: &str) -> Result<Record, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let kind = value["event"]["kind"].as_str().unwrap_or_default();
    let action = value["event"]["action"].as_str().unwrap_or_default();
    let record = match (kind, action) {
        ("state", "start") => Record::Start(typed(&value)?),
        ("metric", "stats") => Record::Stats(typed(&value)?),
        ("metric", "summary") => Record::Summary(Box::new(typed(&value)?)),
        ("alert", "verdict") => Record::Verdict(Box::new(typed(&value)?)),
        ("event", _) => Record::Event(Box::new(typed(&value)?)),
        _ => return Err(format!("unknown record kind {kind:?}, action {action:?}")),
    };
    Ok(record)
}

/// `value` as a `T`, which must write it back unchanged.
fn typed<T: Serialize + for<'de> Deserialize<'de>>(value: &Value) -> Result<T, String> {
    let typed: T = serde_json::from_value(value.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    if back != *value {
        return Err(format!(
            "fields the schema does not define, or of another shape: {}",
            difference(value, &back).join(", ")
        ));
    }
    Ok(typed)
}

/// The paths where two JSON values differ.
fn difference(a: &Value, b: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                    let child = format!("{path}.{key}");
                    match (x.get(key), y.get(key)) {
                        (Some(p), Some(q)) => walk(p, q, &child, out),
                        _ => out.push(child),
                    }
                }
            }
            _ if a != b => out.push(format!("{} ({a} vs {b})", path.trim_start_matches('.'))),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out.iter_mut()
        .for_each(|p| *p = p.trim_start_matches('.').to_owned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every JSON example in docs/schema.md (one record per line in ```json blocks).
    fn doc_examples() -> Vec<String> {
        let doc = include_str!("../../../docs/schema.md");
        let mut out = Vec::new();
        let mut in_json = false;
        for line in doc.lines() {
            match line.trim() {
                "```json" => in_json = true,
                "```" => in_json = false,
                l if in_json && !l.is_empty() => out.push(l.to_owned()),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn every_example_in_the_doc_is_a_record_of_the_schema() {
        let examples = doc_examples();
        assert!(examples.len() >= 4, "{examples:?}");
        // A fragment (no `event`) shows part of a connection record: it is checked inside
        // the doc's first connection record.
        let base: Value = examples
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| v["event"]["kind"] == "event")
            .expect("a connection record example");
        let mut kinds = std::collections::HashSet::new();
        for line in &examples {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("docs/schema.md: not JSON: {e}\n{line}"));
            let whole = if value.get("event").is_some() {
                value
            } else {
                let mut whole = base.clone();
                merge(&mut whole, &value);
                whole
            };
            let record =
                parse(&whole.to_string()).unwrap_or_else(|e| panic!("docs/schema.md: {e}\n{line}"));
            kinds.insert(std::mem::discriminant(&record));
        }
        assert_eq!(kinds.len(), 5, "an example of each kind of record");
    }

    /// `fragment`'s fields laid over `into`'s, objects merged key by key.
    fn merge(into: &mut Value, fragment: &Value) {
        match (into, fragment) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }

    #[test]
    fn unknown_fields_and_values_are_refused() {
        let good =
            serde_json::to_string(&EventRecord::of(&crate::output::tests::refused(), "node-1"))
                .unwrap();
        assert!(parse(&good).is_ok());
        let extra = good.replace("\"user\":", "\"usr\":{\"id\":\"0\"},\"user\":");
        let err = parse(&extra).unwrap_err();
        assert!(err.contains("usr"), "{err}");
        let bad_value = good.replace("\"refused\"", "\"refuzed\"");
        assert!(parse(&bad_value).is_err());
        let null = good.replace("\"duration\":210000", "\"duration\":null");
        assert!(parse(&null).unwrap_err().contains("duration"));
    }
}
