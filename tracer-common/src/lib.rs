//! The kernel contract shared by conntrace's eBPF programs and its collector.
//!
//! Everything that crosses the kernel/user boundary is defined here once: the programs and
//! the kernel hooks they attach to, record layouts, record kinds, map names, counter indices
//! and the load-time globals userspace fills in. Rules (see the house style): `#[repr(C)]`,
//! fixed-width integers and byte arrays only, widest fields first, explicit padding, and a
//! compile-time size assertion per struct.
#![no_std]

pub mod hooks;

/// Names of the maps, as the eBPF object declares them and userspace looks them up.
pub mod maps {
    /// Ring buffers carrying [`crate::Event`] records to userspace. A record goes to ring
    /// `cpu % Config::rings`, so that CPUs do not all contend for one ring and several
    /// readers can drain them; rings past `Config::rings` stay empty.
    pub const EVENTS: [&str; crate::MAX_RINGS] = ["EVENTS0", "EVENTS1", "EVENTS2", "EVENTS3"];
    /// Per-CPU `u64` counters, indexed by [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Socket address → [`crate::Conn`]: connects in flight (SYN_SENT) that we follow.
    pub const CONNECTING: &str = "CONNECTING";
    /// Socket address → [`crate::Conn`]: established connections we follow (for resets,
    /// losses, retransmits and closes). Apart from [`CONNECTING`] so that many long-lived
    /// connections never crowd out the following of new connects.
    pub const ESTABLISHED: &str = "ESTABLISHED";
    /// Thread id → [`crate::ConnectCall`]: threads inside `connect()`, where the hook on
    /// connect()'s return needs what its entry saw (kretprobe and syscall hooks).
    pub const CONNECT_CALLS: &str = "CONNECT_CALLS";
    /// Socket address → 1: sockets whose last attempt the state machine reported as failed,
    /// so that `connect()` returning that stored error again is not a new attempt. An entry
    /// lives no longer than its socket: the socket's next attempt or its destruction
    /// removes it (the kernel reuses socket addresses).
    pub const FAILED_SOCKS: &str = "FAILED_SOCKS";
    /// LPM trie of destination prefixes for `--dest` (IPv4 stored IPv4-mapped).
    pub const DEST_FILTER: &str = "DEST_FILTER";
    /// [`crate::ListenerKey`] → [`crate::Owner`]: who listens on a port, so that a
    /// connection accepted in softirq can be attributed to the listening process. Filled
    /// at each listen() (in the listener's context) and, for listeners older than the run,
    /// by userspace at start; an LRU map (a port nobody listens on any more is harmless).
    pub const LISTENERS: &str = "LISTENERS";
}

/// Ring buffers the object declares; [`Config::rings`] says how many are in use.
pub const MAX_RINGS: usize = 4;

/// Default sizes; userspace may override each at load time.
pub mod defaults {
    /// Bytes in each event ring buffer (a power of two, a multiple of the page size).
    pub const RING_BUFFER_BYTES: u32 = 1 << 20;
    /// Connects in flight followed at once.
    pub const MAX_CONNECTING: u32 = 65_536;
    /// Established connections followed at once (allocated as they come).
    pub const MAX_ESTABLISHED: u32 = 262_144;
    /// Threads inside `connect()` at once (kretprobe and syscall hooks only).
    pub const MAX_CONNECT_CALLS: u32 = 16_384;
    /// Failed sockets still open at once.
    pub const MAX_FAILED_SOCKS: u32 = 65_536;
    /// Listening ports remembered with their process.
    pub const MAX_LISTENERS: u32 = 16_384;
    /// `--dest` prefixes.
    pub const MAX_DEST_PREFIXES: u32 = 64;
    /// Records waiting before the kernel wakes the reader ([`crate::Config::wakeup_batch`]):
    /// a wake-up costs the connecting process about a microsecond, so one per record
    /// would cost more than the record itself (see docs/benchmarks.md). 128 rather than
    /// 32 cut conntrace's CPU per record in a refused storm by about a quarter (2.27 →
    /// 1.73 µs, medians of 3 runs); below 128 records a storm is read every 20 ms anyway.
    pub const WAKEUP_BATCH: u8 = 128;
}

/// Names of the load-time globals (`EbpfLoader::override_global`).
pub mod globals {
    /// [`crate::KernelOffsets`].
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    /// [`crate::Config`].
    pub const CONFIG: &str = "CONFIG";
    /// [`crate::SyscallOffsets`].
    pub const SYSCALL_OFFSETS: &str = "SYSCALL_OFFSETS";
}

/// What a record reports. The kernel reports facts; userspace classifies them.
pub mod kind {
    /// SYN_SENT → ESTABLISHED.
    pub const CONNECT_ESTABLISHED: u8 = 1;
    /// SYN_SENT → CLOSE after the SYN left; `errno` is the socket error (0: the
    /// application closed the socket itself; with [`crate::flag::SOFT_ERROR`], an ICMP
    /// error had come back before it did).
    pub const CONNECT_CLOSED: u8 = 2;
    /// `connect()` failed before any SYN left (no route, no local port, a policy).
    pub const CONNECT_LOCAL_ERROR: u8 = 3;
    /// A RST arrived on a followed connection past SYN_SENT.
    pub const RESET_RECEIVED: u8 = 4;
    /// This host sent a RST on a followed connection.
    pub const RESET_SENT: u8 = 5;
    /// An established connection was closed by the kernel with an error (`errno`).
    pub const LOST: u8 = 6;
    /// An established connection closed normally.
    pub const CLOSED: u8 = 7;
    /// One retransmitted segment on an established connection (only with the flag on).
    pub const RETRANSMIT: u8 = 8;
}

/// Indices into the per-CPU counter array.
pub mod counter {
    /// Records submitted to a ring buffer.
    pub const SUBMITTED: u32 = 0;
    /// Records lost because the ring buffer was full (failed reserve).
    pub const LOST: u32 = 1;
    /// Entries added to `CONNECTING`.
    pub const CONNECTING_INSERTED: u32 = 2;
    /// Entries removed from `CONNECTING`.
    pub const CONNECTING_REMOVED: u32 = 3;
    /// Connects not followed because `CONNECTING` was full.
    pub const CONNECTING_FULL: u32 = 4;
    /// `connect()` calls whose return could not be followed (`CONNECT_CALLS` full).
    pub const CALLS_FULL: u32 = 5;
    /// Kernel reads (`bpf_probe_read_kernel`) that failed.
    pub const READ_ERRORS: u32 = 6;
    /// Entries added to `ESTABLISHED`.
    pub const ESTABLISHED_INSERTED: u32 = 7;
    /// Entries removed from `ESTABLISHED`.
    pub const ESTABLISHED_REMOVED: u32 = 8;
    /// Established connections not followed because `ESTABLISHED` was full.
    pub const ESTABLISHED_FULL: u32 = 9;
    /// Connections whose state change to CLOSE was never seen (the kernel skipped the
    /// program), found and ended when their socket was destroyed.
    pub const SWEPT: u32 = 10;
    /// Failed sockets not remembered (`FAILED_SOCKS` full): `connect()` returning their
    /// stored error again may be reported once more.
    pub const FAILED_SOCKS_FULL: u32 = 11;
    /// Number of counters.
    pub const COUNT: u32 = 12;
}

/// Bits of [`Conn::flags`].
pub mod flag {
    /// The connection reached ESTABLISHED.
    pub const ESTABLISHED: u8 = 1;
    /// A RST was received on this connection.
    pub const RESET_RECEIVED: u8 = 2;
    /// The connection was accepted from a listener on this host (not connected from it):
    /// the process is not known in the kernel.
    pub const ACCEPTED: u8 = 4;
    /// `errno` is the socket's soft error: an ICMP error that came back while connecting,
    /// after which the application, not the kernel, closed the socket.
    pub const SOFT_ERROR: u8 = 8;
    /// The peer closed its side (FIN): `Conn::fin_ns` says when.
    pub const PEER_FIN: u8 = 16;
}

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
/// See [`AF_INET`].
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;
/// `SOCK_STREAM`.
pub const SOCK_STREAM: u16 = 1;
/// The loopback device's index, in every network namespace: the input interface of a
/// route lookup for locally generated traffic.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// Routing tables (`include/uapi/linux/rtnetlink.h`).
pub mod rt_table {
    pub const DEFAULT: u32 = 253;
    pub const MAIN: u32 = 254;
}

/// Route types (`include/uapi/linux/rtnetlink.h`).
pub mod rtn {
    pub const UNICAST: u8 = 1;
    pub const LOCAL: u8 = 2;
    pub const BLACKHOLE: u8 = 6;
    pub const UNREACHABLE: u8 = 7;
    pub const PROHIBIT: u8 = 8;
    pub const THROW: u8 = 9;
}

/// Error numbers the eBPF programs decide on (`include/uapi/asm-generic/errno*.h`).
pub mod errno {
    pub const EINTR: u32 = 4;
    pub const EBADF: u32 = 9;
    pub const EAGAIN: u32 = 11;
    pub const EACCES: u32 = 13;
    pub const EEXIST: u32 = 17;
    pub const EINVAL: u32 = 22;
    pub const ENOTSOCK: u32 = 88;
    pub const EADDRNOTAVAIL: u32 = 99;
    pub const ENETUNREACH: u32 = 101;
    pub const EISCONN: u32 = 106;
    pub const EHOSTUNREACH: u32 = 113;
    pub const EALREADY: u32 = 114;
    pub const EINPROGRESS: u32 = 115;
    /// Kernel-internal: a syscall interrupted and restarted.
    pub const ERESTARTSYS: u32 = 512;

    /// Errnos of `connect()` that say nothing about an attempt's fate: it is under way or
    /// already made (EINPROGRESS, EALREADY, EISCONN), interrupted (EINTR, ERESTARTSYS), or
    /// the descriptor is not a socket at all (EBADF, ENOTSOCK).
    pub const fn is_not_a_failure(errno: u32) -> bool {
        matches!(
            errno,
            EINPROGRESS | EALREADY | EISCONN | EINTR | ERESTARTSYS | EBADF | ENOTSOCK
        )
    }
}

/// TCP states (`include/net/tcp_states.h`).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECV: u8 = 3;
    pub const FIN_WAIT1: u8 = 4;
    pub const FIN_WAIT2: u8 = 5;
    pub const TIME_WAIT: u8 = 6;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
    pub const LAST_ACK: u8 = 9;
    pub const LISTEN: u8 = 10;
    pub const CLOSING: u8 = 11;
    pub const NEW_SYN_RECV: u8 = 12;
}

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;

/// What we know of one followed connection: kept in `CONNECTING`/`ESTABLISHED` from its
/// SYN to its close, and copied whole into every record about it. 144 bytes.
///
/// Addresses are always 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), so an
/// IPv6 socket talking to an IPv4-mapped address and an IPv4 socket look the same. They
/// are read at the outcome: at SYN_SENT the local port may not be chosen yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// When the connect began (CLOSE→SYN_SENT), CLOCK_MONOTONIC; 0 if unknown.
    pub start_ns: u64,
    /// When the connection became established, CLOCK_MONOTONIC; 0 if it never did.
    pub established_ns: u64,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    /// Id of the connecting task's cgroup in the v1 memory hierarchy; 0 if none.
    pub cgroup_v1_id: u64,
    /// When the connecting process (its thread-group leader) started, CLOCK_BOOTTIME ns.
    pub proc_start_ns: u64,
    /// When the peer's FIN arrived (ESTABLISHED→CLOSE_WAIT), CLOCK_MONOTONIC; 0 if not.
    pub fin_ns: u64,
    /// How long the connection had carried no data when the peer's FIN arrived, in
    /// jiffies (the kernel keeps those times in jiffies; userspace knows its HZ).
    pub idle_before_fin_jiffies: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Process (thread group) id of the task that called connect(); 0 for accepted ones.
    pub tgid: u32,
    /// Thread id of that task.
    pub tid: u32,
    pub uid: u32,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Retransmitted SYNs that left this host.
    pub syn_retransmits: u32,
    /// Retransmitted segments after the handshake.
    pub retransmits: u32,
    /// Packets of this connection (SYNs while connecting) that this host dropped before
    /// they left it (its firewall, neighbour resolution, routing).
    pub local_drops: u32,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub family: u16,
    /// The kernel's reason (`enum skb_drop_reason`) for the last local drop; 0 if none.
    pub drop_reason: u16,
    /// Bits of [`flag`].
    pub flags: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Conn>() == 144);

impl Conn {
    /// An all-zero entry, the starting point for filling one in.
    pub const ZERO: Conn = Conn {
        start_ns: 0,
        established_ns: 0,
        cgroup_id: 0,
        cgroup_v1_id: 0,
        proc_start_ns: 0,
        fin_ns: 0,
        idle_before_fin_jiffies: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        tgid: 0,
        tid: 0,
        uid: 0,
        netns: 0,
        syn_retransmits: 0,
        retransmits: 0,
        local_drops: 0,
        sport: 0,
        dport: 0,
        family: 0,
        drop_reason: 0,
        flags: 0,
        _pad: [0; 3],
        comm: [0; COMM_LEN],
    };
}

/// One record from the kernel. 176 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` when the record was written (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// For closes, losses and resets: bytes received on the connection (`bytes_received`).
    pub bytes_received: u64,
    /// For closes, losses and resets: payload bytes sent (`bytes_sent`, retransmits included).
    pub bytes_sent: u64,
    pub conn: Conn,
    /// Positive errno (0 when there is none).
    pub errno: u32,
    /// One of [`kind`].
    pub kind: u8,
    /// TCP state the socket was in (for resets and losses: before the event).
    pub state: u8,
    pub _pad: [u8; 2],
}

const _: () = assert!(core::mem::size_of::<Event>() == 176);

impl Event {
    /// An all-zero record.
    pub const ZERO: Event = Event {
        ts_ns: 0,
        bytes_received: 0,
        bytes_sent: 0,
        conn: Conn::ZERO,
        errno: 0,
        kind: 0,
        state: 0,
        _pad: [0; 2],
    };
}

/// A listening port in a network namespace (key of `LISTENERS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ListenerKey {
    pub netns: u32,
    /// Host byte order.
    pub port: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<ListenerKey>() == 8);

/// The process behind a socket, as [`Conn`] records it (value of `LISTENERS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub cgroup_id: u64,
    pub cgroup_v1_id: u64,
    /// CLOCK_BOOTTIME ns of the process's start.
    pub proc_start_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Owner>() == 56);

/// A thread inside `connect()` (value in `CONNECT_CALLS`), for the return hooks that cannot
/// see the call's arguments (kretprobe, syscall tracepoints).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCall {
    /// kretprobe: the `struct file *`; syscall hooks: the descriptor.
    pub file_or_fd: u64,
    /// Where the destination address is: a kernel pointer (kretprobe) or a user pointer
    /// (syscall hooks).
    pub addr: u64,
}

const _: () = assert!(core::mem::size_of::<ConnectCall>() == 16);

/// Byte offsets of the syscall tracepoints' fields (only with `--connect-hook syscalls`),
/// from `/sys/kernel/tracing/events/syscalls/sys_{enter,exit}_connect/format`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SyscallOffsets {
    pub enter_connect_fd: u16,
    pub enter_connect_uservaddr: u16,
    pub exit_connect_ret: u16,
    pub _pad: u16,
}

const _: () = assert!(core::mem::size_of::<SyscallOffsets>() == 8);

/// Byte offsets into kernel structures, resolved from the kernel's BTF at start-up
/// (`/sys/kernel/btf/vmlinux`); userspace checks each member's size too. Nothing is read
/// through them unless `resolved` is 1. Named `<struct>_<member>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    // struct sock (and its sock_common)
    pub sock_family: u32,
    pub sock_state: u32,
    /// `struct inet_sock::inet_sport` (network order). Not `skc_num`: the kernel clears
    /// that when it releases the port, before the CLOSE transition is traced.
    pub sock_sport: u32,
    pub sock_dport: u32,
    pub sock_daddr: u32,
    pub sock_rcv_saddr: u32,
    pub sock_v6_daddr: u32,
    pub sock_v6_rcv_saddr: u32,
    pub sock_net: u32,
    pub sock_protocol: u32,
    pub sock_err: u32,
    pub sock_err_soft: u32,
    /// `sk_error_queue.prev` and `.qlen`: the last queued error (ICMP errors, on kernels
    /// that queue them whether or not the application asked with IP_RECVERR).
    pub sock_error_queue_tail: u32,
    pub sock_error_queue_len: u32,
    // struct tcp_sock
    pub tcp_segs_out: u32,
    pub tcp_bytes_received: u32,
    pub tcp_bytes_sent: u32,
    /// Jiffies of the last data sent.
    pub tcp_lsndtime: u32,
    /// Jiffies of the last data received (`inet_conn.icsk_ack.lrcvtime`).
    pub tcp_lrcvtime: u32,
    // struct net
    pub net_inum: u32,
    pub net_fib4_custom_rules: u32,
    pub net_fib6_custom_rules: u32,
    pub net_fib6_null_entry: u32,
    // struct sk_buff
    pub skb_sk: u32,
    /// `sk_buff.cb` + `sock_exterr_skb.ee.ee_errno`: a queued error's errno.
    pub skb_queued_errno: u32,
    // struct flowi4 / flowi6
    pub flowi4_iif: u32,
    pub flowi4_proto: u32,
    pub flowi4_daddr: u32,
    pub flowi4_dport: u32,
    pub flowi4_sport: u32,
    pub flowi6_iif: u32,
    pub flowi6_proto: u32,
    pub flowi6_daddr: u32,
    pub flowi6_dport: u32,
    pub flowi6_sport: u32,
    // struct fib6_result, struct fib6_table
    pub fib6_result_f6i: u32,
    pub fib6_result_type: u32,
    pub fib6_table_id: u32,
    // struct task_struct and what hangs off it
    pub task_group_leader: u32,
    pub task_start_boottime: u32,
    pub task_cgroups: u32,
    pub task_nsproxy: u32,
    pub task_files: u32,
    pub nsproxy_net: u32,
    /// `struct css_set::subsys[memory_cgrp_id]`.
    pub css_set_memory: u32,
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_id: u32,
    // the descriptor walk of the syscall hooks, and the file of connect()'s hooks
    pub files_fdt: u32,
    pub fdtable_fd: u32,
    pub fdtable_max_fds: u32,
    pub file_private_data: u32,
    pub socket_type: u32,
    pub socket_sk: u32,
    /// 1 when every offset above was resolved.
    pub resolved: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 55 * 4);

/// How connect()'s own return value is observed (for failures before any SYN).
pub mod connect_hook {
    /// No hook on connect(): route lookups that fail and the state machine are the evidence.
    pub const NONE: u8 = 0;
    /// fexit on `__sys_connect_file`.
    pub const FEXIT: u8 = 1;
    /// kprobe and kretprobe on `__sys_connect_file`.
    pub const KRETPROBE: u8 = 2;
    /// The `syscalls:sys_{enter,exit}_connect` tracepoints.
    pub const SYSCALLS: u8 = 3;
}

/// Filters and switches chosen on the command line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Bitmask over `enum skb_drop_reason` values: a dropped packet of a followed
    /// connection with one of these reasons was dropped on this host (values from BTF).
    pub drop_reasons: [u64; 4],
    /// Only this process (tgid); 0: any.
    pub pid: u32,
    /// Only sockets in this network namespace (inode number); 0: any.
    pub netns: u32,
    /// `enum cgroup_subsys_id` value of the memory controller (from BTF), for
    /// [`Conn::cgroup_v1_id`].
    pub memory_cgrp_id: u32,
    pub _pad0: u32,
    /// Only this destination port; 0: any.
    pub dport: u16,
    /// 1: only destinations in the `DEST_FILTER` trie.
    pub dest_filter: u8,
    /// 1: only tasks whose comm equals `comm`.
    pub comm_filter: u8,
    /// 1: write a record for every successful connect (else they are only counted).
    pub emit_success: u8,
    /// 1: write a record for every retransmit on an established connection.
    pub emit_retransmits: u8,
    /// 1: write a record when a followed connection closes normally.
    pub emit_closed: u8,
    /// 0: the ring buffer's own wake-up (a record that finds the reader caught up wakes
    /// it, which at moderate rates is nearly every record). N > 0: records are submitted
    /// without a wake-up, and the one that brings the data waiting to N records wakes the
    /// reader; userspace also reads on a timer, for whatever stays below N.
    pub wakeup_batch: u8,
    /// Ring buffers in use (1 to [`MAX_RINGS`]).
    pub rings: u8,
    /// One of [`connect_hook`].
    pub connect_hook: u8,
    /// 1: read [`Conn::cgroup_v1_id`] (the host has a v1 memory hierarchy).
    pub read_cgroup_v1: u8,
    /// 1: follow connections accepted by listeners on this host too.
    pub follow_accepted: u8,
    /// 1: `tcp_retransmit_skb` passes the retransmit's error as its third argument
    /// (Linux 6.13+; it then fires for retransmits that failed too).
    pub retransmit_has_err: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Config>() == 80);

/// Bytes one [`Event`] takes in the ring buffer: the kernel's 8-byte record header, then
/// the record (already a multiple of 8).
pub const EVENT_RING_BYTES: u64 = core::mem::size_of::<Event>() as u64 + 8;

/// Key of the `DEST_FILTER` trie's data part: an address, IPv4 stored IPv4-mapped.
pub type DestKey = [u8; 16];

/// The `::ffff:0:0/96` prefix of IPv4-mapped IPv6 addresses.
pub const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are `repr(C)`, `Copy`, made of integers and byte arrays, with
    // explicit padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Conn {}
    unsafe impl aya::Pod for super::ConnectCall {}
    unsafe impl aya::Pod for super::ListenerKey {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::SyscallOffsets {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::Config {}
}
