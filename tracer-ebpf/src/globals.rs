//! Load-time globals, filled by userspace with `EbpfLoader::override_global` before the
//! programs load. Read them through these functions only: a plain read of a `static` would
//! be folded to its compile-time value by the compiler.
use tracer_common::{Config, KernelOffsets, TracepointOffsets};

#[unsafe(no_mangle)]
static TP_OFFSETS: TracepointOffsets = TracepointOffsets {
    set_state_skaddr: 0,
    set_state_oldstate: 0,
    set_state_newstate: 0,
    set_state_sport: 0,
    set_state_dport: 0,
    set_state_family: 0,
    set_state_protocol: 0,
    set_state_saddr_v6: 0,
    set_state_daddr_v6: 0,
    retransmit_skaddr: 0,
    retransmit_state: 0,
    retransmit_err: 0,
    receive_reset_skaddr: 0,
    send_reset_skaddr: 0,
    enter_connect_fd: 0,
    enter_connect_uservaddr: 0,
    exit_connect_ret: 0,
};

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    sock_sk_err: 0,
    sock_net: 0,
    net_inum: 0,
    sock_protocol: 0,
    task_files: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_private_data: 0,
    socket_type: 0,
    socket_sk: 0,
    sock_state: 0,
    resolved: 0,
    _pad: 0,
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    pid: 0,
    netns: 0,
    dport: 0,
    dest_filter: 0,
    comm_filter: 0,
    emit_success: 0,
    emit_retransmits: 0,
    emit_closed: 0,
    wakeup_batch: 0,
    comm: [0; 16],
};

#[inline(always)]
pub fn tp() -> TracepointOffsets {
    // SAFETY: a volatile read of a static we own.
    unsafe { core::ptr::read_volatile(&raw const TP_OFFSETS) }
}

#[inline(always)]
pub fn kernel() -> KernelOffsets {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS) }
}

#[inline(always)]
pub fn config() -> Config {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const CONFIG) }
}
