//! connect()'s return, on kernels that let us hook it: fexit on `__sys_connect_file`
//! (arguments and return value in one place), or a kprobe that remembers the arguments
//! and a kretprobe that reads the return value. The same function serves connect(2) and
//! io_uring's connect. Failures before any SYN are reported from here with their exact
//! errno; the rest is the state machine's (see `conn::report_connect_return`).
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid,
    macros::{fexit, kprobe, kretprobe},
    programs::{FExitContext, ProbeContext, RetProbeContext},
};
use tracer_common::{ConnectCall, counter};

use crate::{conn, helpers::count, kernel, maps::CONNECT_CALLS};

/// `__sys_connect_file(struct file *file, struct sockaddr_storage *address, int addrlen,
/// int file_flags)`: four arguments, then the return value.
const RET_SLOT: usize = 4;

#[fexit(function = "__sys_connect_file")]
pub fn connect_fexit(ctx: FExitContext) -> i32 {
    let ret = ctx.arg::<u64>(RET_SLOT) as i32;
    match report(ctx.arg(0), ctx.arg(1), i64::from(ret)) {
        Ok(()) | Err(_) => 0,
    }
}

#[kprobe]
pub fn connect_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(file), Some(addr)) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1)) else {
        return 0;
    };
    let call = ConnectCall {
        file_or_fd: file,
        addr,
    };
    let tid = bpf_get_current_pid_tgid() as u32;
    if CONNECT_CALLS.insert(tid, call, 0).is_err() {
        count(counter::CALLS_FULL);
    }
    0
}

#[kretprobe]
pub fn connect_kretprobe(ctx: RetProbeContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { CONNECT_CALLS.get(tid) }).copied() else {
        return 0;
    };
    let _ = CONNECT_CALLS.remove(tid);
    let ret = ctx.ret::<u64>() as i32;
    match report(call.file_or_fd, call.addr, i64::from(ret)) {
        Ok(()) | Err(_) => 0,
    }
}

/// `file` and `addr` are kernel pointers: the socket's file and the address copied in.
fn report(file: u64, addr: u64, ret: i64) -> Result<(), i64> {
    if ret >= 0 {
        return Ok(());
    }
    let sk = kernel::tcp_sock_of_file(file).ok_or(0)?;
    let family = kernel::read::<u16>(addr, 0)?;
    let port = kernel::read::<u16>(addr, 2)?;
    let dest = conn::Dest::of_sockaddr(
        family,
        port,
        || kernel::read::<[u8; 4]>(addr, 4),
        // sin6_flowinfo sits between the port and the address.
        || kernel::read::<[u8; 16]>(addr, 8),
    )?;
    conn::report_connect_return(sk, &dest, ret)
}
