//! Load-time globals, filled by userspace with `EbpfLoader::override_global` before the
//! programs load. Read them through these functions only: a plain read of a `static` would
//! be folded to its compile-time value by the compiler.
use tracer_common::{Config, KernelOffsets, SyscallOffsets};

#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    sock_family: 0,
    sock_state: 0,
    sock_sport: 0,
    sock_dport: 0,
    sock_daddr: 0,
    sock_rcv_saddr: 0,
    sock_v6_daddr: 0,
    sock_v6_rcv_saddr: 0,
    sock_net: 0,
    sock_protocol: 0,
    sock_err: 0,
    sock_err_soft: 0,
    sock_error_queue_tail: 0,
    sock_error_queue_len: 0,
    tcp_segs_out: 0,
    tcp_bytes_received: 0,
    tcp_bytes_sent: 0,
    tcp_lsndtime: 0,
    tcp_lrcvtime: 0,
    net_inum: 0,
    net_fib4_custom_rules: 0,
    net_fib6_custom_rules: 0,
    net_fib6_null_entry: 0,
    skb_sk: 0,
    skb_queued_errno: 0,
    flowi4_iif: 0,
    flowi4_proto: 0,
    flowi4_daddr: 0,
    flowi4_dport: 0,
    flowi4_sport: 0,
    flowi6_iif: 0,
    flowi6_proto: 0,
    flowi6_daddr: 0,
    flowi6_dport: 0,
    flowi6_sport: 0,
    fib6_result_f6i: 0,
    fib6_result_type: 0,
    fib6_table_id: 0,
    task_group_leader: 0,
    task_start_boottime: 0,
    task_cgroups: 0,
    task_nsproxy: 0,
    task_files: 0,
    nsproxy_net: 0,
    css_set_memory: 0,
    css_cgroup: 0,
    cgroup_kn: 0,
    kernfs_id: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_private_data: 0,
    socket_type: 0,
    socket_sk: 0,
    resolved: 0,
};

#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    drop_reasons: [0; 4],
    pid: 0,
    netns: 0,
    memory_cgrp_id: 0,
    _pad0: 0,
    dport: 0,
    dest_filter: 0,
    comm_filter: 0,
    emit_success: 0,
    emit_retransmits: 0,
    emit_closed: 0,
    wakeup_batch: 0,
    rings: 1,
    connect_hook: 0,
    read_cgroup_v1: 0,
    follow_accepted: 0,
    retransmit_has_err: 0,
    _pad: [0; 3],
    comm: [0; 16],
};

#[unsafe(no_mangle)]
static SYSCALL_OFFSETS: SyscallOffsets = SyscallOffsets {
    enter_connect_fd: 0,
    enter_connect_uservaddr: 0,
    exit_connect_ret: 0,
    _pad: 0,
};

#[inline(always)]
pub fn kernel() -> KernelOffsets {
    // SAFETY: a volatile read of a static we own.
    unsafe { core::ptr::read_volatile(&raw const KERNEL_OFFSETS) }
}

#[inline(always)]
pub fn config() -> Config {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const CONFIG) }
}

#[inline(always)]
pub fn syscalls() -> SyscallOffsets {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&raw const SYSCALL_OFFSETS) }
}
