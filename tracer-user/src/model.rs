//! The domain: what a record means once classified, independent of the wire format and of
//! how it is printed.
use std::net::{IpAddr, SocketAddr};

/// What happened (`event.action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    pub executable: Option<String>,
    /// From procfs, unless `--no-args`.
    pub args: Option<Vec<String>>,
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
    /// Container id, when the process's cgroup path names one.
    pub container_id: Option<String>,
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
