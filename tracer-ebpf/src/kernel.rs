//! Reads of kernel memory through the offsets userspace resolved from BTF
//! (`tracer_common::KernelOffsets`): the socket, the TCP socket, the current task. Every
//! read is a `bpf_probe_read_kernel`, which fails instead of faulting on a bad address.
use aya_ebpf::helpers::{bpf_probe_read_kernel, generated::bpf_get_current_task};
use tracer_common::{AF_INET, AF_INET6, V4_MAPPED_PREFIX, counter};

use crate::{globals, helpers::count};

/// Reads a `T` at `base + offset`; refused while the offsets are unresolved.
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Result<T, i64> {
    if base == 0 || globals::kernel().resolved != 1 {
        return Err(0);
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(|e| {
        count(counter::READ_ERRORS);
        i64::from(e)
    })
}

/// The socket's addressing: the peer's address and port, ours, and the family.
pub struct Tuple {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
}

/// IPv4 `be32` as stored in the kernel → IPv4-mapped 16 bytes.
#[inline(always)]
pub fn mapped_v4(raw: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..12].copy_from_slice(&V4_MAPPED_PREFIX);
    out[12..].copy_from_slice(&raw);
    out
}

pub fn sock_family(sk: u64) -> Result<u16, i64> {
    read::<u16>(sk, globals::kernel().sock_family)
}

/// The peer's address and port (host order): set before the socket enters SYN_SENT.
pub fn sock_peer(sk: u64, family: u16) -> Result<([u8; 16], u16), i64> {
    let k = globals::kernel();
    let daddr = match family {
        AF_INET => mapped_v4(read::<[u8; 4]>(sk, k.sock_daddr)?),
        AF_INET6 => read::<[u8; 16]>(sk, k.sock_v6_daddr)?,
        _ => return Err(0),
    };
    Ok((daddr, u16::from_be(read::<u16>(sk, k.sock_dport)?)))
}

/// The whole 4-tuple: the local port is known once connect() has hashed the socket.
pub fn sock_tuple(sk: u64) -> Result<Tuple, i64> {
    let k = globals::kernel();
    let family = sock_family(sk)?;
    let (daddr, dport) = sock_peer(sk, family)?;
    let saddr = match family {
        AF_INET => mapped_v4(read::<[u8; 4]>(sk, k.sock_rcv_saddr)?),
        _ => read::<[u8; 16]>(sk, k.sock_v6_rcv_saddr)?,
    };
    Ok(Tuple {
        saddr,
        daddr,
        sport: u16::from_be(read::<u16>(sk, k.sock_sport)?),
        dport,
        family,
    })
}

/// `sk->sk_protocol`; 0 if unreadable.
pub fn sock_protocol(sk: u64) -> u16 {
    read::<u16>(sk, globals::kernel().sock_protocol).unwrap_or(0)
}

/// The socket's pending error (`sk->sk_err`), positive; 0 if none or unreadable.
pub fn sock_err(sk: u64) -> u32 {
    read::<i32>(sk, globals::kernel().sock_err).map_or(0, |e| e.unsigned_abs())
}

/// The socket's soft error (`sk->sk_err_soft`): an ICMP error that did not end the
/// connect by itself.
pub fn sock_err_soft(sk: u64) -> u32 {
    read::<i32>(sk, globals::kernel().sock_err_soft).map_or(0, |e| e.unsigned_abs())
}

/// The errno of the last error queued on the socket (`sk_error_queue`); 0 if none. Linux
/// 6.18 queues an ICMP error for a connecting socket there before it sets the soft error,
/// and an application reading `SO_ERROR` clears only the latter.
pub fn sock_queued_errno(sk: u64) -> u32 {
    let k = globals::kernel();
    if read::<u32>(sk, k.sock_error_queue_len).unwrap_or(0) == 0 {
        return 0;
    }
    read::<u64>(sk, k.sock_error_queue_tail)
        .and_then(|skb| read::<u32>(skb, k.skb_queued_errno))
        .unwrap_or(0)
}

/// The socket's TCP state; 0 if unreadable.
pub fn sock_state(sk: u64) -> u8 {
    read::<u8>(sk, globals::kernel().sock_state).unwrap_or(0)
}

/// Inode number of a `struct net`'s namespace; 0 if unreadable.
pub fn net_inum(net: u64) -> u32 {
    read::<u32>(net, globals::kernel().net_inum).unwrap_or(0)
}

/// Inode number of the socket's network namespace; 0 if unreadable.
pub fn sock_netns(sk: u64) -> u32 {
    read::<u64>(sk, globals::kernel().sock_net).map_or(0, net_inum)
}

/// Segments this TCP socket has handed to IP (`tcp_sock.segs_out`): 0 when connect()
/// failed before its SYN was sent.
pub fn tcp_segs_out(sk: u64) -> u32 {
    read::<u32>(sk, globals::kernel().tcp_segs_out).unwrap_or(0)
}

/// Bytes received (`bytes_received`: the peer's FIN counts one) and payload bytes sent
/// (`bytes_sent`) over the connection's life.
pub fn tcp_bytes(sk: u64) -> (u64, u64) {
    let k = globals::kernel();
    (
        read::<u64>(sk, k.tcp_bytes_received).unwrap_or(0),
        read::<u64>(sk, k.tcp_bytes_sent).unwrap_or(0),
    )
}

/// Jiffies since the connection last carried data either way.
pub fn tcp_idle_jiffies(sk: u64, now_jiffies: u64) -> u32 {
    let k = globals::kernel();
    let sent = read::<u32>(sk, k.tcp_lsndtime).unwrap_or(0);
    let received = read::<u32>(sk, k.tcp_lrcvtime).unwrap_or(0);
    // Both are the low 32 bits of jiffies: compare by wrapping distance.
    let now = now_jiffies as u32;
    now.wrapping_sub(sent).min(now.wrapping_sub(received))
}

/// The current task (`struct task_struct *`).
#[inline(always)]
pub fn current_task_ptr() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_get_current_task() }
}

/// Inode number of the current task's network namespace; 0 if unreadable.
pub fn current_netns() -> u32 {
    current_net().map_or(0, net_inum)
}

/// The current task's `struct net *`.
pub fn current_net() -> Result<u64, i64> {
    let k = globals::kernel();
    let nsproxy = read::<u64>(current_task_ptr(), k.task_nsproxy)?;
    read::<u64>(nsproxy, k.nsproxy_net)
}

/// When the current process (its thread-group leader) started, CLOCK_BOOTTIME ns.
pub fn current_process_start() -> u64 {
    let k = globals::kernel();
    read::<u64>(current_task_ptr(), k.task_group_leader)
        .and_then(|leader| read::<u64>(leader, k.task_start_boottime))
        .unwrap_or(0)
}

/// The id of the current task's cgroup in the v1 memory hierarchy (the directory's
/// kernfs id, which is its inode number); 0 when not asked for or unreadable.
pub fn current_cgroup_v1_id() -> u64 {
    if globals::config().read_cgroup_v1 == 0 {
        return 0;
    }
    let k = globals::kernel();
    read::<u64>(current_task_ptr(), k.task_cgroups)
        .and_then(|css_set| read::<u64>(css_set, k.css_set_memory))
        .and_then(|css| read::<u64>(css, k.css_cgroup))
        .and_then(|cgroup| read::<u64>(cgroup, k.cgroup_kn))
        .and_then(|kn| read::<u64>(kn, k.kernfs_id))
        .unwrap_or(0)
}

/// The TCP socket of a `struct file *`, or `None` when the file is not a TCP socket.
pub fn tcp_sock_of_file(file: u64) -> Option<u64> {
    let k = globals::kernel();
    let socket = read::<u64>(file, k.file_private_data).ok()?;
    if read::<u16>(socket, k.socket_type).ok()? != tracer_common::SOCK_STREAM {
        return None;
    }
    let sk = read::<u64>(socket, k.socket_sk).ok()?;
    (sock_protocol(sk) == tracer_common::IPPROTO_TCP).then_some(sk)
}

/// The `struct file *` behind descriptor `fd` of the current task. Constant work: a fixed
/// chain of reads.
pub fn file_of_fd(fd: u32) -> Option<u64> {
    let k = globals::kernel();
    let files = read::<u64>(current_task_ptr(), k.task_files).ok()?;
    let fdt = read::<u64>(files, k.files_fdt).ok()?;
    if fd >= read::<u32>(fdt, k.fdtable_max_fds).ok()? {
        return None;
    }
    let fd_array = read::<u64>(fdt, k.fdtable_fd).ok()?;
    read::<u64>(fd_array, fd * 8).ok()
}
