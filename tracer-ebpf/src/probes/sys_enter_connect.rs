//! `syscalls:sys_enter_connect`: remembers, per thread, where connect() is going, so that
//! its exit can report a failure that never reached the TCP state machine.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use tracer_common::{AF_INET, AF_INET6, ConnectCall, V4_MAPPED_PREFIX, counter};

use crate::{
    globals,
    helpers::{count_and_get, worth_logging},
    maps::CONNECT_CALLS,
};

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    match try_sys_enter_connect(&ctx) {
        Ok(v) | Err(v) => v as u32,
    }
}

fn try_sys_enter_connect(ctx: &TracePointContext) -> Result<i64, i64> {
    // Only the ids: the rest of the task (comm, uid, cgroup) is read at SYN_SENT or at the
    // exit, where a record is written.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let config = globals::config();
    if config.pid != 0 && config.pid != tgid {
        return Ok(0);
    }
    let o = globals::tp();
    // SAFETY: offsets come from this tracepoint's format file.
    let fd: u64 = unsafe { ctx.read_at(o.enter_connect_fd.into()) }?;
    let addr: u64 = unsafe { ctx.read_at(o.enter_connect_uservaddr.into()) }?;
    let (family, dport, daddr) = read_sockaddr(addr)?;
    let call = ConnectCall {
        skaddr: 0,
        daddr,
        fd: fd as u32,
        dport,
        family,
        state_owns: 0,
        _pad: [0; 7],
    };
    if CONNECT_CALLS.insert(tid, call, 0).is_err() {
        // Logged the 1st, 2nd, 4th… time on each CPU, so that a storm cannot flood the log.
        let n = count_and_get(counter::CALLS_FULL);
        if worth_logging(n) {
            warn!(
                ctx,
                "connect-call map full ({} times on this CPU): not following a connect() by pid {}",
                n,
                tgid
            );
        }
    }
    Ok(0)
}

/// Family, port (host order) and address (IPv4 mapped) of a user `struct sockaddr`.
fn read_sockaddr(addr: u64) -> Result<(u16, u16, [u8; 16]), i64> {
    let base = addr as *const u8;
    // SAFETY (all reads): bpf_probe_read_user checks the user address.
    let family: u16 = unsafe { bpf_probe_read_user(base.cast()) }?;
    let port: u16 = unsafe { bpf_probe_read_user(base.wrapping_add(2).cast()) }?;
    let mut daddr = [0u8; 16];
    match family {
        AF_INET => {
            let v4: [u8; 4] = unsafe { bpf_probe_read_user(base.wrapping_add(4).cast()) }?;
            daddr[..12].copy_from_slice(&V4_MAPPED_PREFIX);
            daddr[12..].copy_from_slice(&v4);
        }
        // sin6_flowinfo sits between the port and the address.
        AF_INET6 => daddr = unsafe { bpf_probe_read_user(base.wrapping_add(8).cast()) }?,
        _ => return Err(0),
    }
    Ok((family, u16::from_be(port), daddr))
}
