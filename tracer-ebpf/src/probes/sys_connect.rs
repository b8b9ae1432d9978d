//! `syscalls:sys_enter_connect` / `sys_exit_connect`: connect()'s return through the
//! syscall tracepoints. Only with `--connect-hook syscalls` (an opt-in for kernels without
//! fentry and kprobes, where it also catches a local policy's EPERM/EACCES): attaching any
//! syscall tracepoint sends every system call of every task through the kernel's slow
//! path, a cost the whole host pays (see docs/benchmarks.md).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::tracepoint,
    programs::TracePointContext,
};
use tracer_common::{ConnectCall, counter};

use crate::{conn, globals, helpers::count, kernel, maps::CONNECT_CALLS};

#[tracepoint]
pub fn sys_enter_connect(ctx: TracePointContext) -> u32 {
    match try_sys_enter_connect(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_sys_enter_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let config = globals::config();
    if config.pid != 0 && config.pid != (pid_tgid >> 32) as u32 {
        return Ok(());
    }
    let o = globals::syscalls();
    // SAFETY: offsets come from this tracepoint's format file.
    let fd: u64 = unsafe { ctx.read_at(o.enter_connect_fd.into()) }?;
    let addr: u64 = unsafe { ctx.read_at(o.enter_connect_uservaddr.into()) }?;
    let call = ConnectCall {
        file_or_fd: fd,
        addr,
    };
    if CONNECT_CALLS.insert(pid_tgid as u32, call, 0).is_err() {
        count(counter::CALLS_FULL);
    }
    Ok(())
}

#[tracepoint]
pub fn sys_exit_connect(ctx: TracePointContext) -> u32 {
    match try_sys_exit_connect(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_sys_exit_connect(ctx: &TracePointContext) -> Result<(), i64> {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let call: ConnectCall = *unsafe { CONNECT_CALLS.get(tid) }.ok_or(0)?;
    let _ = CONNECT_CALLS.remove(tid);
    // SAFETY: the offset comes from this tracepoint's format file.
    let ret: i64 = unsafe { ctx.read_at(globals::syscalls().exit_connect_ret.into()) }?;
    if ret >= 0 {
        return Ok(());
    }
    let file = kernel::file_of_fd(call.file_or_fd as u32).ok_or(0)?;
    let sk = kernel::tcp_sock_of_file(file).ok_or(0)?;
    let base = call.addr as *const u8;
    // SAFETY (all reads): bpf_probe_read_user checks the user address.
    let family: u16 = unsafe { bpf_probe_read_user(base.cast()) }?;
    let port: u16 = unsafe { bpf_probe_read_user(base.wrapping_add(2).cast()) }?;
    let dest = conn::Dest::of_sockaddr(
        family,
        port,
        || unsafe { bpf_probe_read_user(base.wrapping_add(4).cast()) }.map_err(i64::from),
        // sin6_flowinfo sits between the port and the address.
        || unsafe { bpf_probe_read_user(base.wrapping_add(8).cast()) }.map_err(i64::from),
    )?;
    conn::report_connect_return(sk, &dest, ret)
}
