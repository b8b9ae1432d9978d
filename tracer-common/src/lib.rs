//! The wire format shared by conntrace's eBPF programs and its collector.
//!
//! Everything that crosses the kernel/user boundary is defined here once: record layouts,
//! record kinds, map names, counter indices and the load-time globals userspace fills in.
//! Rules (see docs/house-style): `#[repr(C)]`, fixed-width integers and byte arrays only,
//! widest fields first, explicit padding, and a compile-time size assertion per struct.
#![no_std]

/// Names of the maps, as the eBPF object declares them and userspace looks them up.
pub mod maps {
    /// Ring buffer carrying [`crate::Event`] records to userspace.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU `u64` counters, indexed by [`crate::counter`].
    pub const COUNTERS: &str = "COUNTERS";
    /// Socket address → [`crate::SockInfo`], one entry per outgoing connection we follow.
    pub const SOCKS: &str = "SOCKS";
    /// Thread id → [`crate::ConnectCall`], one entry per thread inside `connect()`.
    pub const CONNECT_CALLS: &str = "CONNECT_CALLS";
    /// Socket address → time of its last failed connect, so that a second `connect()` on a
    /// failed socket (which returns the stored error again) is not reported twice.
    pub const RECENT_FAILURES: &str = "RECENT_FAILURES";
    /// LPM trie of destination prefixes for `--dest` (IPv4 stored IPv4-mapped).
    pub const DEST_FILTER: &str = "DEST_FILTER";
}

/// Default sizes; userspace may override each at load time.
pub mod defaults {
    /// Bytes in the event ring buffer (a power of two, a multiple of the page size).
    pub const RING_BUFFER_BYTES: u32 = 1 << 20;
    /// Outgoing connections followed at once (connecting and established).
    pub const MAX_SOCKS: u32 = 65_536;
    /// Threads inside `connect()` at once.
    pub const MAX_CONNECT_CALLS: u32 = 16_384;
    /// Recently failed sockets remembered (an LRU map: old entries fall out silently).
    pub const MAX_RECENT_FAILURES: u32 = 4_096;
    /// `--dest` prefixes.
    pub const MAX_DEST_PREFIXES: u32 = 64;
    /// Records waiting before the kernel wakes the reader ([`crate::Config::wakeup_batch`]):
    /// a wake-up costs the connecting process about a microsecond, so one per record
    /// would cost more than the record itself (see docs/benchmarks.md).
    pub const WAKEUP_BATCH: u8 = 32;
}

/// Names of the load-time globals (`EbpfLoader::override_global`).
pub mod globals {
    /// [`crate::TracepointOffsets`].
    pub const TP_OFFSETS: &str = "TP_OFFSETS";
    /// [`crate::KernelOffsets`].
    pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
    /// [`crate::Config`].
    pub const CONFIG: &str = "CONFIG";
}

/// What a record reports. The kernel reports facts; userspace classifies them.
pub mod kind {
    /// SYN_SENT → ESTABLISHED.
    pub const CONNECT_ESTABLISHED: u8 = 1;
    /// SYN_SENT → CLOSE after the SYN left; `errno` is the socket error (0: the
    /// application closed the socket itself).
    pub const CONNECT_CLOSED: u8 = 2;
    /// `connect()` failed before any SYN left (no route, no local port, a policy).
    pub const CONNECT_LOCAL_ERROR: u8 = 3;
    /// A RST arrived on a followed connection past SYN_SENT.
    pub const RESET_RECEIVED: u8 = 4;
    /// This host sent a RST on a followed connection.
    pub const RESET_SENT: u8 = 5;
    /// An established connection was closed by the kernel with an error (`errno`).
    pub const LOST: u8 = 6;
    /// An established connection closed normally; carries its retransmit count.
    pub const CLOSED: u8 = 7;
    /// One retransmitted segment on an established connection (only with the flag on).
    pub const RETRANSMIT: u8 = 8;
}

/// Indices into the per-CPU counter array.
pub mod counter {
    /// Records submitted to the ring buffer.
    pub const SUBMITTED: u32 = 0;
    /// Records lost because the ring buffer was full (failed reserve).
    pub const LOST: u32 = 1;
    /// Entries added to `SOCKS`.
    pub const SOCKS_INSERTED: u32 = 2;
    /// Entries removed from `SOCKS`.
    pub const SOCKS_REMOVED: u32 = 3;
    /// Connections not followed because `SOCKS` was full.
    pub const SOCKS_FULL: u32 = 4;
    /// `connect()` calls not followed because `CONNECT_CALLS` was full.
    pub const CALLS_FULL: u32 = 5;
    /// Kernel reads (`bpf_probe_read_kernel`) that failed.
    pub const READ_ERRORS: u32 = 6;
    /// Number of counters.
    pub const COUNT: u32 = 8;
}

/// Values of [`Event::flags`] and [`SockInfo::flags`].
pub mod flag {
    /// The `tcp_connect` hook (fentry or kprobe) saw this connection's SYN leave.
    pub const SYN_HOOKED: u8 = 1;
    /// A RST was received on this connection.
    pub const RESET_RECEIVED: u8 = 2;
    /// The connection reached ESTABLISHED.
    pub const ESTABLISHED: u8 = 4;
}

/// Address families as the kernel numbers them.
pub const AF_INET: u16 = 2;
/// See [`AF_INET`].
pub const AF_INET6: u16 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;

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

/// One record from the kernel. 128 bytes.
///
/// Addresses are always 16 bytes; IPv4 is stored IPv4-mapped (`::ffff:a.b.c.d`), which is
/// also how the kernel's tracepoints store it, so an IPv6 socket talking to an IPv4-mapped
/// address and an IPv4 socket look the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` when the record was written (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// When the connect began (the SYN), CLOCK_MONOTONIC; 0 if unknown.
    pub start_ns: u64,
    /// When the connection became established, CLOCK_MONOTONIC; 0 if it never did.
    pub established_ns: u64,
    /// Kernel address of the socket: an identity for correlating records, never dereferenced.
    pub skaddr: u64,
    /// cgroup v2 id of the connecting task.
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// Process (thread group) id of the task that called connect().
    pub tgid: u32,
    /// Thread id of that task.
    pub tid: u32,
    pub uid: u32,
    /// Inode number of the socket's network namespace.
    pub netns: u32,
    /// Positive errno (0 when there is none).
    pub errno: u32,
    /// Retransmitted segments after the handshake.
    pub retransmits: u32,
    /// Retransmitted SYNs.
    pub syn_retransmits: u32,
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub family: u16,
    /// One of [`kind`].
    pub kind: u8,
    /// TCP state the socket was in (for resets and losses: before the event).
    pub state: u8,
    /// Bits of [`flag`].
    pub flags: u8,
    pub _pad: [u8; 3],
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Event>() == 128);

impl Event {
    /// An all-zero record, the starting point for filling one in.
    pub const ZERO: Event = Event {
        ts_ns: 0,
        start_ns: 0,
        established_ns: 0,
        skaddr: 0,
        cgroup_id: 0,
        saddr: [0; 16],
        daddr: [0; 16],
        tgid: 0,
        tid: 0,
        uid: 0,
        netns: 0,
        errno: 0,
        retransmits: 0,
        syn_retransmits: 0,
        sport: 0,
        dport: 0,
        family: 0,
        kind: 0,
        state: 0,
        flags: 0,
        _pad: [0; 3],
        comm: [0; COMM_LEN],
    };
}

/// What we keep per followed connection, from its SYN to its CLOSE (value in `SOCKS`).
/// The addresses are refreshed at ESTABLISHED: at SYN_SENT the local port may not be
/// chosen yet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockInfo {
    pub start_ns: u64,
    pub established_ns: u64,
    pub cgroup_id: u64,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub netns: u32,
    pub syn_retransmits: u32,
    pub retransmits: u32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub flags: u8,
    pub _pad: u8,
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<SockInfo>() == 104);

/// A thread inside `connect()` (value in `CONNECT_CALLS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectCall {
    /// The socket that entered SYN_SENT during this call, 0 if none did.
    pub skaddr: u64,
    pub daddr: [u8; 16],
    pub fd: u32,
    pub dport: u16,
    pub family: u16,
    /// 1 while the socket state machine owns this attempt's outcome.
    pub state_owns: u8,
    pub _pad: [u8; 7],
}

const _: () = assert!(core::mem::size_of::<ConnectCall>() == 40);

/// Byte offsets of the tracepoint fields we read, parsed at start-up from
/// `/sys/kernel/tracing/events/<category>/<name>/format`.
///
/// They are not constants because the formats move between kernels: `tcp:tcp_send_reset`
/// gained a `reason` field and lost its ports between 6.1 and 6.18, for example. Each field
/// is named `<tracepoint>_<field>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TracepointOffsets {
    // sock/inet_sock_set_state
    pub set_state_skaddr: u16,
    pub set_state_oldstate: u16,
    pub set_state_newstate: u16,
    pub set_state_sport: u16,
    pub set_state_dport: u16,
    pub set_state_family: u16,
    pub set_state_protocol: u16,
    pub set_state_saddr_v6: u16,
    pub set_state_daddr_v6: u16,
    // tcp/tcp_retransmit_skb
    pub retransmit_skaddr: u16,
    pub retransmit_state: u16,
    /// Absent before Linux 6.13 (0 then): older kernels fire the tracepoint only for
    /// retransmits that were sent, newer ones for failed attempts too, with `err` set.
    pub retransmit_err: u16,
    // tcp/tcp_receive_reset
    pub receive_reset_skaddr: u16,
    // tcp/tcp_send_reset
    pub send_reset_skaddr: u16,
    // syscalls/sys_enter_connect
    pub enter_connect_fd: u16,
    pub enter_connect_uservaddr: u16,
    // syscalls/sys_exit_connect
    pub exit_connect_ret: u16,
}

const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 34);

/// Byte offsets into kernel structures, resolved from the kernel's BTF at start-up
/// (`/sys/kernel/btf/vmlinux`). Nothing is read through them unless `resolved` is 1.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `struct sock::sk_err`.
    pub sock_sk_err: u32,
    /// `struct sock::__sk_common.skc_net` (a `possible_net_t` holding `struct net *`).
    pub sock_net: u32,
    /// `struct net::ns.inum`.
    pub net_inum: u32,
    /// `struct sock::sk_protocol`.
    pub sock_protocol: u32,
    /// `struct task_struct::files`.
    pub task_files: u32,
    /// `struct files_struct::fdt`.
    pub files_fdt: u32,
    /// `struct fdtable::fd`.
    pub fdtable_fd: u32,
    /// `struct fdtable::max_fds`.
    pub fdtable_max_fds: u32,
    /// `struct file::private_data`.
    pub file_private_data: u32,
    /// `struct socket::type`.
    pub socket_type: u32,
    /// `struct socket::sk`.
    pub socket_sk: u32,
    /// `struct sock::__sk_common.skc_state` (one byte).
    pub sock_state: u32,
    /// 1 when every offset above was resolved.
    pub resolved: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 56);

/// Filters and switches chosen on the command line.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// Only this process (tgid); 0: any.
    pub pid: u32,
    /// Only sockets in this network namespace (inode number); 0: any.
    pub netns: u32,
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
    pub comm: [u8; COMM_LEN],
}

const _: () = assert!(core::mem::size_of::<Config>() == 32);

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
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::ConnectCall {}
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::Config {}
}
