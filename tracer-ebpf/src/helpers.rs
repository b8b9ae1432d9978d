//! Steps every probe shares: counters, the connecting task, kernel reads, filters, and
//! writing a record. Probes stay thin; the logic that is the same lives here once.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel,
        generated::{bpf_get_current_cgroup_id, bpf_get_current_task, bpf_ktime_get_ns},
    },
    maps::lpm_trie::Key,
};
use tracer_common::{COMM_LEN, EVENT_RING_BYTES, Event, IPPROTO_TCP, SockInfo, counter, flag};

use crate::{
    globals,
    maps::{COUNTERS, DEST_FILTER, EVENTS, SOCKS},
};

/// `SOCK_STREAM`.
const SOCK_STREAM: u16 = 1;

pub fn count(index: u32) {
    count_and_get(index);
}

/// Counts one and returns this CPU's count so far (0 if the counter is missing).
pub fn count_and_get(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other program writes it concurrently.
        Some(slot) => unsafe {
            *slot += 1;
            *slot
        },
        None => 0,
    }
}

/// Whether the `n`th occurrence of a condition should be logged: the 1st, 2nd, 4th, 8th…
/// so that a storm of them cannot flood the log.
pub fn worth_logging(n: u64) -> bool {
    n.is_power_of_two()
}

pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The task running now. Only meaningful in process context (connect(), the SYN_SENT
/// transition, the tcp_connect hook): in softirq it is whoever happened to run.
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

pub fn current_task() -> Task {
    let pid_tgid = bpf_get_current_pid_tgid();
    Task {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: bpf_get_current_uid_gid() as u32,
        // SAFETY: a helper without arguments.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

/// Reads a `T` at `base + offset` in kernel memory, through offsets from
/// `KernelOffsets`; refused while they are unresolved.
pub fn read_kernel<T>(base: u64, offset: u32) -> Result<T, i64> {
    if base == 0 || globals::kernel().resolved != 1 {
        return Err(0);
    }
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.map_err(|e| {
        count(counter::READ_ERRORS);
        i64::from(e)
    })
}

/// The socket's pending error (`sk->sk_err`), positive; 0 if none or unreadable.
pub fn sock_err(sk: u64) -> u32 {
    read_kernel::<i32>(sk, globals::kernel().sock_sk_err).map_or(0, |e| e.unsigned_abs())
}

/// The socket's TCP state (`sk->__sk_common.skc_state`); 0 if unreadable.
pub fn sock_state(sk: u64) -> u8 {
    read_kernel::<u8>(sk, globals::kernel().sock_state).unwrap_or(0)
}

/// Inode number of the socket's network namespace; 0 if unreadable.
pub fn sock_netns(sk: u64) -> u32 {
    let offsets = globals::kernel();
    read_kernel::<u64>(sk, offsets.sock_net)
        .and_then(|net| read_kernel::<u32>(net, offsets.net_inum))
        .unwrap_or(0)
}

/// The TCP socket behind file descriptor `fd` of the current task, or `None` when the
/// descriptor is not a TCP socket. Constant work: a fixed chain of reads.
pub fn tcp_sock_of_fd(fd: u32) -> Option<u64> {
    let k = globals::kernel();
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files = read_kernel::<u64>(task, k.task_files).ok()?;
    let fdt = read_kernel::<u64>(files, k.files_fdt).ok()?;
    let max_fds = read_kernel::<u32>(fdt, k.fdtable_max_fds).ok()?;
    if fd >= max_fds {
        return None;
    }
    let fd_array = read_kernel::<u64>(fdt, k.fdtable_fd).ok()?;
    let file = read_kernel::<u64>(fd_array, fd * 8).ok()?;
    let socket = read_kernel::<u64>(file, k.file_private_data).ok()?;
    if read_kernel::<u16>(socket, k.socket_type).ok()? != SOCK_STREAM {
        return None;
    }
    let sk = read_kernel::<u64>(socket, k.socket_sk).ok()?;
    (read_kernel::<u16>(sk, k.sock_protocol).ok()? == IPPROTO_TCP).then_some(sk)
}

/// Whether a connect by `task` to `daddr`:`dport` in `netns` passes the command-line filters.
pub fn passes_filters(task: &Task, daddr: &[u8; 16], dport: u16, netns: u32) -> bool {
    let config = globals::config();
    if config.pid != 0 && config.pid != task.tgid {
        return false;
    }
    if config.netns != 0 && config.netns != netns {
        return false;
    }
    if config.dport != 0 && config.dport != dport {
        return false;
    }
    if config.comm_filter != 0 && config.comm != task.comm {
        return false;
    }
    if config.dest_filter != 0 && DEST_FILTER.get(Key::new(128, *daddr)).is_none() {
        return false;
    }
    true
}

/// Reserves a record, zeroes it, lets `fill` write it and submits it; counts a loss when
/// the ring buffer is full. Filling in place keeps the 128-byte record off the BPF stack.
pub fn emit(fill: impl FnOnce(&mut Event)) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(counter::LOST);
        return;
    };
    // Zeroed a word at a time: `write(Event::ZERO)` compiles to a call to a byte-at-a-time
    // memset loop (128 iterations), which cost more than the rest of the record.
    let words = entry.as_mut_ptr().cast::<u64>();
    for i in 0..core::mem::size_of::<Event>() / 8 {
        // SAFETY: within the reserved record; `Event` is 8-byte aligned, as is the ring
        // buffer's data.
        unsafe { words.add(i).write_volatile(0) };
    }
    // SAFETY: every byte was just written, and all-zero is a valid `Event`.
    let event = unsafe { entry.assume_init_mut() };
    event.ts_ns = now();
    fill(event);
    entry.submit(wakeup_flags());
    count(counter::SUBMITTED);
}

/// Submit flags for `Config::wakeup_batch`: 0 (the kernel's adaptive wake-up) when it is
/// 0; else no wake-up, except for the record that brings the data waiting to exactly
/// `wakeup_batch` records. Called after the reserve, so the data waiting counts this
/// record. A crossing missed by concurrent producers is caught by userspace's timer.
fn wakeup_flags() -> u64 {
    let batch = u64::from(globals::config().wakeup_batch);
    if batch == 0 {
        return 0;
    }
    let threshold = batch * EVENT_RING_BYTES;
    let waiting = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    if (threshold..threshold + EVENT_RING_BYTES).contains(&waiting) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// Copies what we know of a followed connection into a record.
pub fn fill_from_sock(event: &mut Event, sk: u64, info: &SockInfo) {
    event.skaddr = sk;
    event.saddr = info.saddr;
    event.daddr = info.daddr;
    event.sport = info.sport;
    event.dport = info.dport;
    event.family = info.family;
    event.start_ns = info.start_ns;
    event.established_ns = info.established_ns;
    event.cgroup_id = info.cgroup_id;
    event.tgid = info.tgid;
    event.tid = info.tid;
    event.uid = info.uid;
    event.netns = info.netns;
    event.syn_retransmits = info.syn_retransmits;
    event.retransmits = info.retransmits;
    event.flags = info.flags;
    event.comm = info.comm;
}

/// Copies the running task into a record.
pub fn fill_from_task(event: &mut Event, task: &Task) {
    event.cgroup_id = task.cgroup_id;
    event.tgid = task.tgid;
    event.tid = task.tid;
    event.uid = task.uid;
    event.comm = task.comm;
}

/// Stops following a socket. Every exit path of a followed connection comes through here.
pub fn forget_sock(sk: u64) {
    if SOCKS.remove(sk).is_ok() {
        count(counter::SOCKS_REMOVED);
    }
}

/// A followed connection's entry, for reading and updating in place.
pub fn sock_info(sk: u64) -> Option<&'static mut SockInfo> {
    // SAFETY: the pointer comes from the map and stays valid for this program run.
    SOCKS.get_ptr_mut(sk).map(|p| unsafe { &mut *p })
}

/// Reports a RST on a followed connection once it is past SYN_SENT (in SYN_SENT a
/// received RST is a refused connect, reported by the state machine), and marks the
/// connection with `mark`.
pub fn report_reset(sk: u64, kind: u8, mark: u8) -> Result<i64, i64> {
    if sk == 0 {
        return Ok(0);
    }
    let info = sock_info(sk).ok_or(0)?;
    if info.flags & flag::ESTABLISHED == 0 {
        return Ok(0);
    }
    info.flags |= mark;
    let state = sock_state(sk);
    emit(|e| {
        fill_from_sock(e, sk, info);
        e.kind = kind;
        e.state = state;
    });
    Ok(0)
}
