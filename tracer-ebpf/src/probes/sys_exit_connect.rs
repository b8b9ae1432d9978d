//! `syscalls:sys_exit_connect`: reports a connect() that failed before any SYN left (no
//! route, no free local port, a local policy). Everything after the SYN is the state
//! machine's to report, so that no attempt is reported twice.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{ConnectCall, kind};

use crate::{
    globals,
    helpers::{current_task, emit, fill_from_task, passes_filters, sock_netns, tcp_sock_of_fd},
    maps::{CONNECT_CALLS, RECENT_FAILURES},
};

/// Errnos that say nothing about this attempt's fate: it is under way or already made
/// (EINPROGRESS, EALREADY, EISCONN), interrupted (EINTR, ERESTARTSYS), or the descriptor is
/// not a socket at all (EBADF, ENOTSOCK).
fn is_not_a_failure(errno: u32) -> bool {
    matches!(errno, 115 | 114 | 106 | 4 | 512 | 9 | 88)
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    match try_sys_exit_connect(&ctx) {
        Ok(v) | Err(v) => v as u32,
    }
}

fn try_sys_exit_connect(ctx: &TracePointContext) -> Result<i64, i64> {
    let tid = (aya_ebpf::helpers::bpf_get_current_pid_tgid()) as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let call: ConnectCall = *unsafe { CONNECT_CALLS.get(tid) }.ok_or(0)?;
    let _ = CONNECT_CALLS.remove(tid);
    // SAFETY: the offset comes from this tracepoint's format file.
    let ret: i64 = unsafe { ctx.read_at(globals::tp().exit_connect_ret.into()) }?;
    if ret >= 0 {
        return Ok(0);
    }
    let errno = ret.unsigned_abs() as u32;
    let sk = match call.state_owns {
        // No socket reached SYN_SENT: is this a TCP socket, and not one whose earlier
        // attempt already failed (connect() then returns that error again)?
        0 => {
            if is_not_a_failure(errno) {
                return Ok(0);
            }
            let sk = tcp_sock_of_fd(call.fd).ok_or(0)?;
            if RECENT_FAILURES.get_ptr(sk).is_some() {
                return Ok(0);
            }
            sk
        }
        // The socket closed inside this call before a SYN left.
        2 => call.skaddr,
        // The state machine reports it, or the filters excluded it.
        _ => return Ok(0),
    };
    let task = current_task();
    let netns = sock_netns(sk);
    if !passes_filters(&task, &call.daddr, call.dport, netns) {
        return Ok(0);
    }
    emit(|e| {
        fill_from_task(e, &task);
        e.skaddr = sk;
        e.daddr = call.daddr;
        e.dport = call.dport;
        e.family = call.family;
        e.netns = netns;
        e.errno = errno;
        e.kind = kind::CONNECT_LOCAL_ERROR;
    });
    Ok(0)
}
