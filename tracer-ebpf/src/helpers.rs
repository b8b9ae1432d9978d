//! Steps every probe shares: counters, the connecting task, filters, and writing a record.
//! Probes stay thin; the logic that is the same lives here once.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_get_smp_processor_id,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    maps::{RingBuf, lpm_trie::Key},
};
use tracer_common::{COMM_LEN, Conn, EVENT_RING_BYTES, Event, counter};

use crate::{
    globals, kernel,
    maps::{COUNTERS, DEST_FILTER, EVENTS0, EVENTS1, EVENTS2, EVENTS3, SCRATCH},
};

#[inline(always)]
pub fn count(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot: no other program writes it concurrently.
        unsafe { *slot += 1 };
    }
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() }
}

/// The task running now. Only meaningful in process context (connect(), the SYN_SENT
/// transition, a route lookup for a connect): in softirq it is whoever happened to run.
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; COMM_LEN],
}

#[inline(always)]
pub fn current_task() -> Task {
    let pid_tgid = bpf_get_current_pid_tgid();
    Task {
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        comm: bpf_get_current_comm().unwrap_or([0; COMM_LEN]),
    }
}

/// Whether the task passes `--pid` and `--comm`: checked first, before any kernel read.
#[inline(always)]
pub fn task_passes(task: &Task) -> bool {
    let config = globals::config();
    (config.pid == 0 || config.pid == task.tgid)
        && (config.comm_filter == 0 || config.comm == task.comm)
}

/// Whether a connection to `daddr`:`dport` in `netns` passes `--netns`, `--port`, `--dest`.
#[inline(always)]
pub fn destination_passes(daddr: &[u8; 16], dport: u16, netns: u32) -> bool {
    let config = globals::config();
    (config.netns == 0 || config.netns == netns)
        && (config.dport == 0 || config.dport == dport)
        && (config.dest_filter == 0 || DEST_FILTER.get(Key::new(128, *daddr)).is_some())
}

/// Fills `conn` for the task running now: who connects, from which cgroups, and since
/// when. The caller adds the addressing.
#[inline(always)]
pub fn fill_current(conn: &mut Conn, task: &Task) {
    *conn = Conn::ZERO;
    conn.start_ns = now();
    conn.tgid = task.tgid;
    conn.tid = task.tid;
    conn.comm = task.comm;
    conn.uid = bpf_get_current_uid_gid() as u32;
    // SAFETY: a helper without arguments.
    conn.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    conn.cgroup_v1_id = kernel::current_cgroup_v1_id();
    conn.proc_start_ns = kernel::current_process_start();
}

/// Per-CPU slots where a connection entry is built before it goes into a map or a record:
/// a `Conn` on the BPF stack would take 144 of the 512 bytes Linux 6.1 allows a call chain.
/// One slot per kind of program that builds one, so that a program that runs nested
/// inside another on the same CPU (a softirq on top of a syscall) never shares a slot.
#[derive(Clone, Copy)]
pub enum Scratch {
    /// The state machine.
    StateMachine = 0,
    /// The hooks on connect()'s return and the route lookups.
    ConnectReturn = 1,
}

#[inline(always)]
pub fn scratch(slot: Scratch) -> Option<&'static mut Conn> {
    // SAFETY: a per-CPU slot, used by one kind of program at a time (see `Scratch`).
    SCRATCH.get_ptr_mut(slot as u32).map(|p| unsafe { &mut *p })
}

/// The ring this CPU writes to.
#[inline(always)]
fn ring() -> &'static RingBuf {
    let rings = u32::from(globals::config().rings).max(1);
    // SAFETY: a helper without arguments.
    match unsafe { bpf_get_smp_processor_id() } % rings {
        0 => &EVENTS0,
        1 => &EVENTS1,
        2 => &EVENTS2,
        _ => &EVENTS3,
    }
}

/// Reserves a record, zeroes it, lets `fill` write it and submits it; counts a loss when
/// the ring buffer is full. Filling in place keeps the record off the BPF stack.
#[inline(always)]
pub fn emit(fill: impl FnOnce(&mut Event)) {
    let ring = ring();
    let Some(mut entry) = ring.reserve::<Event>(0) else {
        count(counter::LOST);
        return;
    };
    // Zeroed a word at a time: `write(Event::ZERO)` compiles to a call to a byte-at-a-time
    // memset loop, which cost more than the rest of the record.
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
    entry.submit(wakeup_flags(ring));
    count(counter::SUBMITTED);
}

/// Submit flags for `Config::wakeup_batch`: 0 (the kernel's adaptive wake-up) when it is
/// 0; else no wake-up, except for the record that brings the data waiting to exactly
/// `wakeup_batch` records. Called after the reserve, so the data waiting counts this
/// record. A crossing missed by concurrent producers is caught by userspace's timer.
#[inline(always)]
fn wakeup_flags(ring: &RingBuf) -> u64 {
    let batch = u64::from(globals::config().wakeup_batch);
    if batch == 0 {
        return 0;
    }
    let threshold = batch * EVENT_RING_BYTES;
    let waiting = ring.query(u64::from(BPF_RB_AVAIL_DATA));
    if (threshold..threshold + EVENT_RING_BYTES).contains(&waiting) {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
