//! Wire records → classified events: which of the six outcomes a connect attempt had,
//! what a reset, a loss or a close means. Pure: the clock offset is passed in.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tracer_common::{AF_INET, Event, kind};

use crate::{
    errno,
    model::{Action, ConnEvent, Outcome, Process, Reason},
};

/// Classifies a record. `boot_to_unix_ns` converts the kernel's CLOCK_MONOTONIC
/// timestamps to wall-clock time. `None` for a record of a kind we do not know (a newer
/// eBPF object than this collector), which is counted and skipped, never guessed at.
pub fn classify(e: &Event, boot_to_unix_ns: i128) -> Option<ConnEvent> {
    let (action, reason, outcome) = match e.kind {
        kind::CONNECT_ESTABLISHED => (Action::Connect, Reason::Success, Outcome::Success),
        kind::CONNECT_CLOSED => (
            Action::Connect,
            closed_connect_reason(e.errno),
            Outcome::Failure,
        ),
        kind::CONNECT_LOCAL_ERROR => (Action::Connect, Reason::LocalError, Outcome::Failure),
        kind::RESET_RECEIVED => (Action::Reset, Reason::Received, Outcome::Failure),
        kind::RESET_SENT => (Action::Reset, Reason::Sent, Outcome::Failure),
        kind::LOST => (Action::Lost, lost_reason(e.errno), Outcome::Failure),
        kind::CLOSED => (Action::Close, Reason::Closed, Outcome::Success),
        kind::RETRANSMIT => (Action::Retransmit, Reason::Retransmitted, Outcome::Unknown),
        _ => return None,
    };
    let at = |ns: u64| (ns != 0).then_some(ns);
    let duration_ns = match e.kind {
        kind::CONNECT_ESTABLISHED => at(e.start_ns).and_then(|s| e.established_ns.checked_sub(s)),
        kind::CONNECT_CLOSED => at(e.start_ns).and_then(|s| e.ts_ns.checked_sub(s)),
        _ => None,
    };
    let age_ns = match action {
        Action::Reset | Action::Lost | Action::Close | Action::Retransmit => {
            at(e.established_ns).and_then(|s| e.ts_ns.checked_sub(s))
        }
        Action::Connect => None,
    };
    let has_source = e.kind != kind::CONNECT_LOCAL_ERROR && e.sport != 0;
    Some(ConnEvent {
        time_ns: to_unix_ns(e.ts_ns, boot_to_unix_ns),
        action,
        reason,
        outcome,
        duration_ns,
        errno: (e.errno != 0).then_some(e.errno),
        process: Process {
            pid: e.tgid,
            tid: e.tid,
            uid: e.uid,
            name: comm_to_string(&e.comm),
            cgroup_id: e.cgroup_id,
            ..Process::default()
        },
        source: has_source.then(|| SocketAddr::new(ip_of(e.family, &e.saddr), e.sport)),
        destination: SocketAddr::new(ip_of(e.family, &e.daddr), e.dport),
        netns: e.netns,
        syn_retransmits: e.syn_retransmits,
        retransmits: e.retransmits,
        tcp_state: matches!(
            action,
            Action::Reset | Action::Lost | Action::Close | Action::Retransmit
        )
        .then_some(e.state),
        age_ns,
    })
}

/// What a connect that closed in SYN_SENT ran into, from the socket's error.
pub fn closed_connect_reason(err: u32) -> Reason {
    match err {
        0 => Reason::Abandoned,
        errno::ECONNREFUSED | errno::ECONNRESET => Reason::Refused,
        errno::ETIMEDOUT => Reason::Timeout,
        // Every other error after the SYN left came from an ICMP message.
        _ => Reason::Unreachable,
    }
}

fn lost_reason(err: u32) -> Reason {
    match err {
        errno::ETIMEDOUT => Reason::Timeout,
        errno::EHOSTUNREACH | errno::ENETUNREACH => Reason::Unreachable,
        _ => Reason::Error,
    }
}

/// The address as people expect it: IPv4-mapped IPv6 addresses (what the kernel stores
/// for IPv4, and what a dual-stack socket uses for an IPv4 peer) are shown as IPv4.
pub fn ip_of(family: u16, raw: &[u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(*raw);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None if family == AF_INET => IpAddr::V4(Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15])),
        None => IpAddr::V6(v6),
    }
}

pub fn comm_to_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

fn to_unix_ns(monotonic_ns: u64, boot_to_unix_ns: i128) -> u64 {
    u64::try_from(i128::from(monotonic_ns) + boot_to_unix_ns).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracer_common::{AF_INET6, V4_MAPPED_PREFIX, tcp_state};

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..12].copy_from_slice(&V4_MAPPED_PREFIX);
        out[12..].copy_from_slice(&a);
        out
    }

    fn record(k: u8, err: u32) -> Event {
        let mut e = Event::ZERO;
        e.kind = k;
        e.errno = err;
        e.ts_ns = 5_000_000_000;
        e.start_ns = 2_000_000_000;
        e.family = AF_INET;
        e.saddr = v4([10, 0, 0, 1]);
        e.daddr = v4([10, 0, 0, 2]);
        e.sport = 40000;
        e.dport = 80;
        e.tgid = 100;
        e.tid = 101;
        e.comm[..4].copy_from_slice(b"curl");
        e
    }

    #[test]
    fn each_closed_errno_maps_to_one_outcome() {
        let cases = [
            (0, Reason::Abandoned),
            (111, Reason::Refused),
            (110, Reason::Timeout),
            (113, Reason::Unreachable),
            (101, Reason::Unreachable),
        ];
        for (err, reason) in cases {
            let c = classify(&record(kind::CONNECT_CLOSED, err), 0).unwrap();
            assert_eq!(
                (c.action, c.reason, c.outcome),
                (Action::Connect, reason, Outcome::Failure)
            );
            assert_eq!(c.errno, (err != 0).then_some(err));
            assert_eq!(
                c.duration_ns,
                Some(3_000_000_000),
                "time waited, from the SYN"
            );
        }
    }

    #[test]
    fn success_duration_is_the_handshake() {
        let mut e = record(kind::CONNECT_ESTABLISHED, 0);
        e.established_ns = 2_000_250_000;
        let c = classify(&e, 0).unwrap();
        assert_eq!((c.reason, c.outcome), (Reason::Success, Outcome::Success));
        assert_eq!(c.duration_ns, Some(250_000));
        assert_eq!(c.errno, None);
    }

    #[test]
    fn local_error_has_no_source_and_no_syns() {
        let mut e = record(kind::CONNECT_LOCAL_ERROR, 101);
        e.sport = 0;
        let c = classify(&e, 0).unwrap();
        assert_eq!(c.reason, Reason::LocalError);
        assert_eq!(c.source, None);
        assert_eq!(c.syns_sent(), 0);
        assert_eq!(c.errno, Some(101));
    }

    #[test]
    fn timeout_counts_its_syns() {
        let mut e = record(kind::CONNECT_CLOSED, 110);
        e.syn_retransmits = 1;
        assert_eq!(classify(&e, 0).unwrap().syns_sent(), 2);
    }

    #[test]
    fn reset_carries_state_and_age() {
        let mut e = record(kind::RESET_RECEIVED, 0);
        e.established_ns = 4_000_000_000;
        e.state = tcp_state::ESTABLISHED;
        let c = classify(&e, 0).unwrap();
        assert_eq!((c.action, c.reason), (Action::Reset, Reason::Received));
        assert_eq!(c.tcp_state, Some(tcp_state::ESTABLISHED));
        assert_eq!(c.age_ns, Some(1_000_000_000));
        assert_eq!(c.duration_ns, None);
    }

    #[test]
    fn lost_to_keepalive_is_a_timeout() {
        let mut e = record(kind::LOST, 110);
        e.established_ns = 1;
        let c = classify(&e, 0).unwrap();
        assert_eq!(
            (c.action, c.reason, c.errno),
            (Action::Lost, Reason::Timeout, Some(110))
        );
    }

    #[test]
    fn unknown_kind_is_not_guessed() {
        assert_eq!(classify(&record(200, 0), 0), None);
    }

    #[test]
    fn v4_mapped_destinations_are_reported_as_v4() {
        let mut e = record(kind::CONNECT_CLOSED, 111);
        e.family = AF_INET6;
        let c = classify(&e, 0).unwrap();
        assert_eq!(c.destination, "10.0.0.2:80".parse().unwrap());
        assert_eq!(c.network_type(), "ipv4");
    }

    #[test]
    fn v6_stays_v6() {
        let mut e = record(kind::CONNECT_CLOSED, 111);
        e.family = AF_INET6;
        e.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let c = classify(&e, 0).unwrap();
        assert_eq!(c.destination, "[fd00::2]:80".parse().unwrap());
        assert_eq!(c.network_type(), "ipv6");
    }

    #[test]
    fn wall_clock_is_monotonic_plus_offset() {
        let c = classify(
            &record(kind::CONNECT_CLOSED, 111),
            1_700_000_000_000_000_000,
        )
        .unwrap();
        assert_eq!(c.time_ns, 1_700_000_005_000_000_000);
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_to_string(b"curl\0\0garbage\0\0\0"), "curl");
        assert_eq!(comm_to_string(b"exactly16bytes!!"), "exactly16bytes!!");
    }
}
