//! The domain: what a record means once classified, independent of the wire format and of
//! how it is printed.
use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

/// What happened (`event.action`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A connect attempt ended.
    Connect,
    /// A RST on an established connection.
    Reset,
    /// The kernel killed an established connection with an error.
    Lost,
    /// An established connection closed (reported when it had retransmits).
    Close,
    /// One retransmitted segment (with `--retransmits`).
    Retransmit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Connect => "connect",
            Action::Reset => "reset",
            Action::Lost => "lost",
            Action::Close => "close",
            Action::Retransmit => "retransmit",
        }
    }
}

/// Why it ended that way (`event.reason`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// SYN_SENT → ESTABLISHED.
    Success,
    /// The peer answered the SYN with a RST (ECONNREFUSED).
    Refused,
    /// The kernel gave up (ETIMEDOUT) after unanswered SYNs, or, for a lost connection,
    /// after unanswered retransmissions or keepalive probes.
    Timeout,
    /// An ICMP error after the SYN left (EHOSTUNREACH, ENETUNREACH, …).
    Unreachable,
    /// The application closed the socket while still connecting.
    Abandoned,
    /// connect() failed before any SYN left.
    LocalError,
    /// A RST arrived (reset records).
    Received,
    /// This host sent a RST (reset records).
    Sent,
    /// Another error killed an established connection.
    Error,
    /// A normal close (close records).
    Closed,
    /// A retransmitted segment (retransmit records).
    Retransmitted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Success => "success",
            Reason::Refused => "refused",
            Reason::Timeout => "timeout",
            Reason::Unreachable => "unreachable",
            Reason::Abandoned => "abandoned",
            Reason::LocalError => "local_error",
            Reason::Received => "received",
            Reason::Sent => "sent",
            Reason::Error => "error",
            Reason::Closed => "closed",
            Reason::Retransmitted => "retransmitted",
        }
    }

    /// Every reason a connect attempt can end with, in the order reports list them.
    pub const CONNECT_OUTCOMES: [Reason; 6] = [
        Reason::Success,
        Reason::Refused,
        Reason::Timeout,
        Reason::Unreachable,
        Reason::Abandoned,
        Reason::LocalError,
    ];
}

/// `event.outcome`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Unknown,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Unknown => "unknown",
        }
    }
}

/// TCP states, named as `ss` and the kernel name them.
pub fn tcp_state_name(state: u8) -> Option<&'static str> {
    use tracer_common::tcp_state as s;
    Some(match state {
        s::ESTABLISHED => "ESTABLISHED",
        s::SYN_SENT => "SYN_SENT",
        s::SYN_RECV => "SYN_RECV",
        s::FIN_WAIT1 => "FIN_WAIT1",
        s::FIN_WAIT2 => "FIN_WAIT2",
        s::TIME_WAIT => "TIME_WAIT",
        s::CLOSE => "CLOSE",
        s::CLOSE_WAIT => "CLOSE_WAIT",
        s::LAST_ACK => "LAST_ACK",
        s::LISTEN => "LISTEN",
        s::CLOSING => "CLOSING",
        s::NEW_SYN_RECV => "NEW_SYN_RECV",
        _ => return None,
    })
}

/// The process that made the connection, as the kernel saw it when it connected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    /// The task's `comm` (at most 15 bytes).
    pub name: String,
    /// From procfs; `None` when the process has exited or procfs said nothing.
    pub executable: Option<Arc<str>>,
    /// From procfs, with `--args` only: secrets redacted, bounded in bytes.
    pub args: Option<Vec<String>>,
    /// Arguments were left out or cut to stay within the byte bounds.
    pub args_truncated: bool,
    /// Why `executable` and `args` are absent, when procfs could not vouch for them.
    pub details_missing: Option<DetailsMissing>,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// Id of the connecting task's cgroup in the cgroup v1 memory hierarchy (the
    /// directory's inode number there), 0 when the host has none. On a hybrid host a
    /// container's v2 cgroup may be its runtime's, not its own: this one is the
    /// container's.
    pub cgroup_v1_id: u64,
    /// When the process (its thread group leader) started, nanoseconds since boot
    /// (CLOCK_BOOTTIME, as `/proc/PID/stat`'s starttime counts), 0 when unknown: procfs
    /// details belong to this event only if the process found there started then.
    pub start_boottime_ns: u64,
    /// The container and pod the process runs in, resolved from its cgroup; shared by
    /// every record of that cgroup.
    pub identity: Option<Arc<Identity>>,
}

impl Process {
    /// The process's container, when it runs in one.
    pub fn container(&self) -> Option<&Container> {
        self.identity.as_ref()?.container.as_ref()
    }

    /// The process's pod, when it runs in one.
    pub fn pod(&self) -> Option<&Pod> {
        self.identity.as_ref()?.pod.as_ref()
    }
}

/// Why procfs details were left out of a record (`conntrace.details_missing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DetailsMissing {
    /// The process had exited before conntrace looked.
    Exited,
    /// The pid now names another program: the process `exec`ed, or the pid was reused
    /// (its start time or task name differs from the record's).
    Replaced,
    /// procfs did not answer within the collector's deadline.
    TimedOut,
    /// Not looked up: the lookup workers were all stuck or their queue was full.
    Busy,
}

impl DetailsMissing {
    pub fn as_str(self) -> &'static str {
        match self {
            DetailsMissing::Exited => "exited",
            DetailsMissing::Replaced => "replaced",
            DetailsMissing::TimedOut => "timed_out",
            DetailsMissing::Busy => "busy",
        }
    }
}

/// Where a process runs, from file reads only (cgroup paths, the kubelet's log tree, the
/// runtime's bundle): its container and, under Kubernetes, its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub container: Option<Container>,
    pub pod: Option<Pod>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Container {
    /// The id as the runtime names it (64 hex digits).
    pub id: String,
    /// What manages it: `containerd`, `cri-o`, `docker`, `podman`, `runc`, `crun`.
    pub runtime: Option<String>,
    /// Its name in its pod (Kubernetes).
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pod {
    /// As the kubelet writes it: dashed, or 32 hex digits for a static pod.
    pub uid: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// The controller that owns the pod, as its name shows it.
    pub workload: Option<Workload>,
}

/// The owner people think in, guessed from the pod's name (the kubelet's files do not
/// name it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    /// `NAME-<pod-template-hash>-<5>`.
    Deployment,
    /// `NAME-<ordinal>`.
    StatefulSet,
    /// `NAME-<minutes since the epoch>-<5>`.
    CronJob,
    /// `NAME-<index>-<5>` (an indexed Job).
    Job,
    /// `NAME-<5>`: a DaemonSet and a Job name their pods alike.
    DaemonSetOrJob,
    /// A static pod (its uid is a 32-digit hash): `NAME-<node>`.
    StaticPod,
}

impl WorkloadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::CronJob => "cronjob",
            WorkloadKind::Job => "job",
            WorkloadKind::DaemonSetOrJob => "daemonset_or_job",
            WorkloadKind::StaticPod => "static_pod",
        }
    }
}

impl Identity {
    /// How people name the workload: `shop/deployment/web [app]` for a pod (namespace,
    /// owner, container), `shop/pod/web-0 [app]` when no owner shows, `container
    /// 3f2a9b1c4d5e` outside Kubernetes; `None` when nothing is known.
    pub fn label(&self) -> Option<String> {
        let container = self.container.as_ref();
        let suffix = container
            .and_then(|c| c.name.as_deref())
            .map_or_else(String::new, |n| format!(" [{n}]"));
        if let Some(pod) = &self.pod
            && let Some(name) = &pod.name
        {
            let ns = pod.namespace.as_deref().unwrap_or("?");
            return Some(match &pod.workload {
                Some(w) => format!("{ns}/{}/{}{suffix}", w.kind.as_str(), w.name),
                None => format!("{ns}/pod/{name}{suffix}"),
            });
        }
        if let Some(uid) = self.pod.as_ref().and_then(|p| p.uid.as_deref()) {
            return Some(format!("pod {uid}{suffix}"));
        }
        container.map(|c| format!("container {}{suffix}", short_id(&c.id)))
    }
}

/// The first 12 characters of a container id, as `docker ps` and `crictl ps` show it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// One classified record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnEvent {
    /// Wall-clock time of the record, nanoseconds since the Unix epoch.
    pub time_ns: u64,
    pub action: Action,
    pub reason: Reason,
    pub outcome: Outcome,
    /// Connect: handshake time (success) or time waited (failures). Others: unset.
    pub duration_ns: Option<u64>,
    /// Positive errno.
    pub errno: Option<u32>,
    pub process: Process,
    /// Unset when connect() failed before a local address was chosen.
    pub source: Option<SocketAddr>,
    pub destination: SocketAddr,
    /// Network namespace inode.
    pub netns: u32,
    pub syn_retransmits: u32,
    pub retransmits: u32,
    /// For resets and losses: the TCP state the connection was in.
    pub tcp_state: Option<u8>,
    /// For resets, losses and closes: time since the connection was established.
    pub age_ns: Option<u64>,
    /// What else the kernel saw of the connection.
    pub details: Details,
}

/// The rarer facts of a record, apart so that the common ones stay easy to build.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Details {
    /// Packets of this connection this host dropped before they left it (SYNs while
    /// connecting): its firewall, neighbour resolution, routing.
    pub local_drops: u32,
    /// The kernel's reason for the last of them (`NETFILTER_DROP`, `NEIGH_FAILED`, ...).
    pub drop_reason: Option<String>,
    /// An ICMP error came back while connecting, and the application, not the kernel,
    /// then closed the socket (`errno` is that error).
    pub closed_after_error: bool,
    /// For resets, losses and closes: bytes received, and bytes sent and acknowledged.
    pub bytes: Option<Bytes>,
    /// The peer had closed its side (sent its FIN) before this record.
    pub peer_fin: Option<PeerFin>,
    /// The connection was accepted by a listener on this host, not connected from it.
    pub accepted: bool,
}

/// Bytes a connection carried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    pub received: u64,
    pub sent: u64,
}

/// The peer's FIN on an established connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerFin {
    /// How long the connection had carried no data when the FIN arrived.
    pub idle_before_ns: u64,
    /// From the FIN to this record.
    pub since_ns: u64,
}

impl ConnEvent {
    /// SYNs of this attempt that left the host: the first plus its retransmits, less those
    /// this host dropped itself; 0 when connect() failed before any.
    pub fn syns_sent(&self) -> u32 {
        if self.reason == Reason::LocalError {
            return 0;
        }
        let tried = 1 + self.syn_retransmits;
        tried - self.details.local_drops.min(tried)
    }

    /// Whether this is a connect attempt that failed (of any kind).
    pub fn is_failed_connect(&self) -> bool {
        self.action == Action::Connect && self.outcome == Outcome::Failure
    }

    pub fn network_type(&self) -> &'static str {
        match self.destination.ip() {
            IpAddr::V4(_) => "ipv4",
            IpAddr::V6(_) => "ipv6",
        }
    }
}

/// What the start record says about this run.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    /// Wall-clock time the programs were attached, nanoseconds since the Unix epoch.
    pub start_ns: u64,
    pub host: String,
    pub kernel: String,
    pub connect_hook: String,
    pub filters: std::collections::BTreeMap<&'static str, String>,
}
