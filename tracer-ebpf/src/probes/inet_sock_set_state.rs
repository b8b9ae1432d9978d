//! `sock:inet_sock_set_state`: the TCP state machine. The spine of conntrace: a connection
//! is followed from CLOSE→SYN_SENT (in the connecting process) to its →CLOSE, and every
//! outcome is decided on a transition.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{ConnectCall, IPPROTO_TCP, SockInfo, counter, flag, kind, tcp_state};

use crate::{
    globals,
    helpers::{
        count, current_task, current_tid, emit, fill_from_sock, forget_sock, now, passes_filters,
        sock_err, sock_info, sock_netns,
    },
    maps::{CONNECT_CALLS, RECENT_FAILURES, SOCKS},
};

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(v) | Err(v) => v as u32,
    }
}

/// The addressing fields of the tracepoint.
struct Tuple {
    saddr: [u8; 16],
    daddr: [u8; 16],
    sport: u16,
    dport: u16,
    family: u16,
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<i64, i64> {
    let o = globals::tp();
    // SAFETY (all read_at calls): offsets come from this tracepoint's format file.
    let protocol: u16 = unsafe { ctx.read_at(o.set_state_protocol.into()) }?;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let sk: u64 = unsafe { ctx.read_at(o.set_state_skaddr.into()) }?;
    let old: i32 = unsafe { ctx.read_at(o.set_state_oldstate.into()) }?;
    let new: i32 = unsafe { ctx.read_at(o.set_state_newstate.into()) }?;
    let (old, new) = (old as u8, new as u8);
    match (old, new) {
        (tcp_state::CLOSE, tcp_state::SYN_SENT) => on_syn_sent(ctx, sk),
        (tcp_state::SYN_SENT, tcp_state::ESTABLISHED) => on_established(ctx, sk),
        (tcp_state::SYN_SENT, tcp_state::CLOSE) => on_connect_closed(ctx, sk),
        (_, tcp_state::CLOSE) => on_closed(sk, old),
        _ => Ok(0),
    }
}

fn read_tuple(ctx: &TracePointContext) -> Result<Tuple, i64> {
    let o = globals::tp();
    // SAFETY: offsets come from this tracepoint's format file.
    unsafe {
        Ok(Tuple {
            saddr: ctx.read_at(o.set_state_saddr_v6.into())?,
            daddr: ctx.read_at(o.set_state_daddr_v6.into())?,
            sport: ctx.read_at(o.set_state_sport.into())?,
            dport: ctx.read_at(o.set_state_dport.into())?,
            family: ctx.read_at(o.set_state_family.into())?,
        })
    }
}

/// Runs inside connect(), in the caller's context: the one moment we can see who connects.
fn on_syn_sent(ctx: &TracePointContext, sk: u64) -> Result<i64, i64> {
    let task = current_task();
    let tuple = read_tuple(ctx)?;
    let netns = sock_netns(sk);
    let followed = passes_filters(&task, &tuple.daddr, tuple.dport, netns);
    if followed {
        let info = SockInfo {
            start_ns: now(),
            established_ns: 0,
            cgroup_id: task.cgroup_id,
            saddr: tuple.saddr,
            daddr: tuple.daddr,
            tgid: task.tgid,
            tid: task.tid,
            uid: task.uid,
            netns,
            syn_retransmits: 0,
            retransmits: 0,
            sport: tuple.sport,
            dport: tuple.dport,
            family: tuple.family,
            flags: 0,
            _pad: 0,
            comm: task.comm,
        };
        // A stale entry for a reused socket address is replaced: count it as removed so
        // that inserted − removed stays the number of entries.
        if SOCKS.get_ptr(sk).is_some() {
            count(counter::SOCKS_REMOVED);
        }
        if SOCKS.insert(sk, info, 0).is_ok() {
            count(counter::SOCKS_INSERTED);
        } else {
            // Counted; userspace warns when the count rises. (No aya-log call here: its
            // buffer would take this program past the 512-byte stack that Linux 6.1's
            // verifier allows a call chain.)
            count(counter::SOCKS_FULL);
        }
    }
    if let Some(call) = CONNECT_CALLS.get_ptr_mut(task.tid) {
        // SAFETY: the pointer comes from the map.
        let call: &mut ConnectCall = unsafe { &mut *call };
        call.skaddr = sk;
        call.state_owns = if followed { 1 } else { 3 };
    }
    Ok(0)
}

fn on_established(ctx: &TracePointContext, sk: u64) -> Result<i64, i64> {
    let info = sock_info(sk).ok_or(0)?;
    info.established_ns = now();
    info.flags |= flag::ESTABLISHED;
    store_tuple(info, &read_tuple(ctx)?);
    if globals::config().emit_success != 0 {
        emit(|e| {
            fill_from_sock(e, sk, info);
            e.kind = kind::CONNECT_ESTABLISHED;
            e.state = tcp_state::SYN_SENT;
        });
    }
    Ok(0)
}

/// Whether a SYN left for this connection. The `tcp_connect` hook, where attached, saw it
/// leave; otherwise, a socket closed without an error by the very thread still inside
/// connect() on it never got that far (the kernel found no free local port, for example).
fn syn_left(sk: u64, info: &SockInfo) -> bool {
    if info.flags & flag::SYN_HOOKED != 0 {
        return true;
    }
    let tid = current_tid();
    if tid != info.tid {
        return true;
    }
    // SAFETY: the pointer comes from the map.
    CONNECT_CALLS
        .get_ptr(tid)
        .is_none_or(|call| unsafe { (*call).skaddr } != sk)
}

fn on_connect_closed(ctx: &TracePointContext, sk: u64) -> Result<i64, i64> {
    let mut info = *sock_info(sk).ok_or(0)?;
    forget_sock(sk);
    let errno = sock_err(sk);
    if errno == 0 && !syn_left(sk, &info) {
        // connect() itself failed: its exit reports the errno it returns.
        if let Some(call) = CONNECT_CALLS.get_ptr_mut(info.tid) {
            // SAFETY: the pointer comes from the map.
            unsafe { (*call).state_owns = 2 };
        }
        return Ok(0);
    }
    if errno != 0 {
        // A later connect() on this socket returns the same error: not a new attempt.
        let _ = RECENT_FAILURES.insert(sk, now(), 0);
    }
    store_tuple(&mut info, &read_tuple(ctx)?);
    emit(|e| {
        fill_from_sock(e, sk, &info);
        e.kind = kind::CONNECT_CLOSED;
        e.state = tcp_state::SYN_SENT;
        e.errno = errno;
    });
    Ok(0)
}

fn on_closed(sk: u64, old: u8) -> Result<i64, i64> {
    let info = *sock_info(sk).ok_or(0)?;
    forget_sock(sk);
    let errno = sock_err(sk);
    // After a RST the socket error is ECONNRESET/EPIPE, and the reset record was this
    // connection's end: no loss, and no close unless it carries retransmits to report.
    let was_reset = info.flags & flag::RESET_RECEIVED != 0;
    let lost = errno != 0 && !was_reset;
    let closed = info.retransmits > 0 || (globals::config().emit_closed != 0 && !was_reset);
    if !lost && !closed {
        return Ok(0);
    }
    emit(|e| {
        fill_from_sock(e, sk, &info);
        e.kind = if lost { kind::LOST } else { kind::CLOSED };
        e.state = old;
        e.errno = if lost { errno } else { 0 };
    });
    Ok(0)
}

fn store_tuple(info: &mut SockInfo, t: &Tuple) {
    info.saddr = t.saddr;
    info.daddr = t.daddr;
    info.sport = t.sport;
    info.dport = t.dport;
    info.family = t.family;
}
