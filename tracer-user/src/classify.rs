//! Wire records → classified events: which of the six outcomes a connect attempt had,
//! what a reset, a loss or a close means. Pure: the clock offset and the kernel's names
//! are passed in.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use tracer_common::{AF_INET, Event, flag, kind};

use crate::{
    errno,
    model::{Action, Bytes, ConnEvent, Details, Outcome, PeerFin, Process, Reason},
};

/// What classifying needs to know of this run.
#[derive(Clone, Debug, Default)]
pub struct Context {
    /// Converts the kernel's CLOCK_MONOTONIC timestamps to wall-clock time.
    pub boot_to_unix_ns: i128,
    /// The kernel's drop reasons by value (they differ between kernels).
    pub drop_reasons: BTreeMap<u32, String>,
    /// Nanoseconds per jiffy (the kernel's tick, `CONFIG_HZ`).
    pub ns_per_jiffy: u64,
}

/// Classifies a record. `None` for a record of a kind we do not know (a newer eBPF object
/// than this collector), which is counted and skipped, never guessed at.
pub fn classify(e: &Event, ctx: &Context) -> Option<ConnEvent> {
    let c = &e.conn;
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
        kind::CONNECT_ESTABLISHED => at(c.start_ns).and_then(|s| c.established_ns.checked_sub(s)),
        kind::CONNECT_CLOSED => at(c.start_ns).and_then(|s| e.ts_ns.checked_sub(s)),
        _ => None,
    };
    let after_connect = action != Action::Connect;
    let age_ns = if after_connect {
        at(c.established_ns).and_then(|s| e.ts_ns.checked_sub(s))
    } else {
        None
    };
    let local = SocketAddr::new(ip_of(c.family, &c.saddr), c.sport);
    let peer = SocketAddr::new(ip_of(c.family, &c.daddr), c.dport);
    // ECS: the source opened the connection. Ours, unless a listener here accepted it.
    let (source, destination) = if c.flags & flag::ACCEPTED != 0 {
        (Some(peer), local)
    } else {
        let has_source = e.kind != kind::CONNECT_LOCAL_ERROR && c.sport != 0;
        (has_source.then_some(local), peer)
    };
    Some(ConnEvent {
        time_ns: to_unix_ns(e.ts_ns, ctx.boot_to_unix_ns),
        action,
        reason,
        outcome,
        duration_ns,
        errno: (e.errno != 0).then_some(e.errno),
        process: Process {
            pid: c.tgid,
            tid: c.tid,
            uid: c.uid,
            name: comm_to_string(&c.comm),
            cgroup_id: c.cgroup_id,
            cgroup_v1_id: c.cgroup_v1_id,
            start_boottime_ns: c.proc_start_ns,
            ..Process::default()
        },
        source,
        destination,
        netns: c.netns,
        syn_retransmits: c.syn_retransmits,
        retransmits: c.retransmits,
        tcp_state: after_connect.then_some(e.state),
        age_ns,
        details: details(e, ctx, after_connect),
    })
}

fn details(e: &Event, ctx: &Context, after_connect: bool) -> Details {
    let c = &e.conn;
    let drop_reason = (c.local_drops > 0 && c.drop_reason != 0).then(|| {
        ctx.drop_reasons
            .get(&u32::from(c.drop_reason))
            .cloned()
            .unwrap_or_else(|| format!("reason {}", c.drop_reason))
    });
    // The kernel counts the peer's FIN as one byte received (it takes a sequence number).
    let fin_byte = u64::from(c.flags & flag::PEER_FIN != 0);
    let bytes = (after_connect && e.kind != kind::RETRANSMIT).then_some(Bytes {
        received: e.bytes_received.saturating_sub(fin_byte),
        sent: e.bytes_sent,
    });
    let peer_fin = (c.flags & flag::PEER_FIN != 0 && c.fin_ns != 0).then(|| PeerFin {
        idle_before_ns: c.idle_before_fin_jiffies.saturating_mul(ctx.ns_per_jiffy),
        since_ns: e.ts_ns.saturating_sub(c.fin_ns),
    });
    Details {
        local_drops: c.local_drops,
        drop_reason,
        closed_after_error: e.kind == kind::CONNECT_CLOSED && c.flags & flag::SOFT_ERROR != 0,
        bytes,
        peer_fin,
        accepted: c.flags & flag::ACCEPTED != 0,
    }
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
        e.conn.start_ns = 2_000_000_000;
        e.conn.family = AF_INET;
        e.conn.saddr = v4([10, 0, 0, 1]);
        e.conn.daddr = v4([10, 0, 0, 2]);
        e.conn.sport = 40000;
        e.conn.dport = 80;
        e.conn.tgid = 100;
        e.conn.tid = 101;
        e.conn.comm[..4].copy_from_slice(b"curl");
        e
    }

    fn at(offset: i128) -> Context {
        Context {
            boot_to_unix_ns: offset,
            drop_reasons: BTreeMap::from([(12, "NETFILTER_DROP".to_owned())]),
            ns_per_jiffy: 4_000_000,
        }
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
            let c = classify(&record(kind::CONNECT_CLOSED, err), &at(0)).unwrap();
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
        e.conn.established_ns = 2_000_250_000;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!((c.reason, c.outcome), (Reason::Success, Outcome::Success));
        assert_eq!(c.duration_ns, Some(250_000));
        assert_eq!(c.errno, None);
    }

    #[test]
    fn local_error_has_no_source_and_no_syns() {
        let mut e = record(kind::CONNECT_LOCAL_ERROR, 101);
        e.conn.sport = 0;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!(c.reason, Reason::LocalError);
        assert_eq!(c.source, None);
        assert_eq!(c.syns_sent(), 0);
        assert_eq!(c.errno, Some(101));
    }

    #[test]
    fn timeout_counts_its_syns() {
        let mut e = record(kind::CONNECT_CLOSED, 110);
        e.conn.syn_retransmits = 1;
        assert_eq!(classify(&e, &at(0)).unwrap().syns_sent(), 2);
    }

    #[test]
    fn reset_carries_state_and_age() {
        let mut e = record(kind::RESET_RECEIVED, 0);
        e.conn.established_ns = 4_000_000_000;
        e.state = tcp_state::ESTABLISHED;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!((c.action, c.reason), (Action::Reset, Reason::Received));
        assert_eq!(c.tcp_state, Some(tcp_state::ESTABLISHED));
        assert_eq!(c.age_ns, Some(1_000_000_000));
        assert_eq!(c.duration_ns, None);
    }

    #[test]
    fn lost_to_keepalive_is_a_timeout() {
        let mut e = record(kind::LOST, 110);
        e.conn.established_ns = 1;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!(
            (c.action, c.reason, c.errno),
            (Action::Lost, Reason::Timeout, Some(110))
        );
    }

    #[test]
    fn unknown_kind_is_not_guessed() {
        assert_eq!(classify(&record(200, 0), &at(0)), None);
    }

    #[test]
    fn v4_mapped_destinations_are_reported_as_v4() {
        let mut e = record(kind::CONNECT_CLOSED, 111);
        e.conn.family = AF_INET6;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!(c.destination, "10.0.0.2:80".parse().unwrap());
        assert_eq!(c.network_type(), "ipv4");
    }

    #[test]
    fn v6_stays_v6() {
        let mut e = record(kind::CONNECT_CLOSED, 111);
        e.conn.family = AF_INET6;
        e.conn.daddr = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!(c.destination, "[fd00::2]:80".parse().unwrap());
        assert_eq!(c.network_type(), "ipv6");
    }

    #[test]
    fn wall_clock_is_monotonic_plus_offset() {
        let c = classify(
            &record(kind::CONNECT_CLOSED, 111),
            &at(1_700_000_000_000_000_000),
        )
        .unwrap();
        assert_eq!(c.time_ns, 1_700_000_005_000_000_000);
    }

    #[test]
    fn an_icmp_error_before_the_application_gave_up_is_unreachable() {
        let mut e = record(kind::CONNECT_CLOSED, 113);
        e.conn.flags = flag::SOFT_ERROR;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!((c.reason, c.errno), (Reason::Unreachable, Some(113)));
        assert!(c.details.closed_after_error);
        let plain = classify(&record(kind::CONNECT_CLOSED, 113), &at(0)).unwrap();
        assert!(!plain.details.closed_after_error);
    }

    #[test]
    fn syns_this_host_dropped_did_not_leave_it() {
        let mut e = record(kind::CONNECT_CLOSED, 110);
        e.conn.syn_retransmits = 2;
        e.conn.local_drops = 3;
        e.conn.drop_reason = 12;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!(c.syns_sent(), 0);
        assert_eq!(c.details.local_drops, 3);
        assert_eq!(c.details.drop_reason.as_deref(), Some("NETFILTER_DROP"));
        e.conn.local_drops = 1;
        e.conn.drop_reason = 99;
        let c = classify(&e, &at(0)).unwrap();
        assert_eq!(c.syns_sent(), 2);
        assert_eq!(c.details.drop_reason.as_deref(), Some("reason 99"));
    }

    #[test]
    fn a_reset_after_the_peers_fin_carries_its_times_and_bytes() {
        let mut e = record(kind::RESET_RECEIVED, 0);
        e.conn.established_ns = 1_000_000_000;
        e.conn.flags = flag::ESTABLISHED | flag::PEER_FIN;
        e.conn.fin_ns = 4_000_000_000;
        e.conn.idle_before_fin_jiffies = 725;
        e.state = tcp_state::CLOSE_WAIT;
        e.bytes_received = 513;
        e.bytes_sent = 100;
        let c = classify(&e, &at(0)).unwrap();
        let fin = c.details.peer_fin.unwrap();
        assert_eq!(
            (fin.idle_before_ns, fin.since_ns),
            (2_900_000_000, 1_000_000_000)
        );
        assert_eq!(
            c.details.bytes,
            Some(Bytes {
                received: 512,
                sent: 100
            })
        );
        assert!(
            classify(&record(kind::CONNECT_CLOSED, 111), &at(0))
                .unwrap()
                .details
                .bytes
                .is_none()
        );
    }

    #[test]
    fn an_accepted_connection_goes_from_its_client_to_this_listener() {
        let mut e = record(kind::RESET_SENT, 0);
        e.conn.flags = flag::ESTABLISHED | flag::ACCEPTED;
        e.conn.established_ns = 1;
        let c = classify(&e, &at(0)).unwrap();
        assert!(c.details.accepted);
        assert_eq!(c.source, Some("10.0.0.2:80".parse().unwrap()), "the client");
        assert_eq!(
            c.destination,
            "10.0.0.1:40000".parse().unwrap(),
            "the listener"
        );
    }

    #[test]
    fn process_identity_comes_from_the_connection() {
        let mut e = record(kind::CONNECT_CLOSED, 111);
        e.conn.cgroup_v1_id = 77;
        e.conn.proc_start_ns = 123_000;
        let p = classify(&e, &at(0)).unwrap().process;
        assert_eq!(
            (p.cgroup_v1_id, p.start_boottime_ns, p.pid, p.tid),
            (77, 123_000, 100, 101)
        );
    }

    #[test]
    fn comm_stops_at_nul() {
        assert_eq!(comm_to_string(b"curl\0\0garbage\0\0\0"), "curl");
        assert_eq!(comm_to_string(b"exactly16bytes!!"), "exactly16bytes!!");
    }
}
