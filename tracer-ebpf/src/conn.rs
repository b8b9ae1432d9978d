//! A followed connection's life, from its SYN to its close: what the probes do on each
//! transition, in one place. A connect in flight lives in `CONNECTING`; once established,
//! in `ESTABLISHED`; every path to CLOSE (and, should the kernel skip that program, the
//! socket's destruction) takes it out again.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::generated::bpf_jiffies64,
    maps::HashMap,
};
use tracer_common::{
    AF_INET, AF_INET6, Conn, IPPROTO_TCP, ListenerKey, Owner, connect_hook, counter, errno, flag,
    kind, tcp_state,
};

use crate::{
    globals,
    helpers::{
        Scratch, count, current_task, destination_passes, emit, fill_current, now, scratch,
        task_passes,
    },
    kernel::{self, Tuple},
    maps::{CONNECTING, ESTABLISHED, FAILED_SOCKS, LISTENERS},
};

/// Whether a hook on connect()'s return reports the failures before any SYN.
#[inline(always)]
fn return_hooked() -> bool {
    globals::config().connect_hook != connect_hook::NONE
}

/// One of the two connection maps and the counters that keep it honest.
struct Table {
    map: &'static HashMap<u64, Conn>,
    inserted: u32,
    removed: u32,
    full: u32,
}

fn connecting() -> Table {
    Table {
        map: &CONNECTING,
        inserted: counter::CONNECTING_INSERTED,
        removed: counter::CONNECTING_REMOVED,
        full: counter::CONNECTING_FULL,
    }
}

fn established() -> Table {
    Table {
        map: &ESTABLISHED,
        inserted: counter::ESTABLISHED_INSERTED,
        removed: counter::ESTABLISHED_REMOVED,
        full: counter::ESTABLISHED_FULL,
    }
}

impl Table {
    /// The entry of `sk`, in the map: read it, update it, emit from it; the pointer stays
    /// valid for this program run, until [`Table::remove`].
    fn get(&self, sk: u64) -> Option<&'static mut Conn> {
        // SAFETY: the pointer comes from the map and stays valid for this program run.
        self.map.get_ptr_mut(sk).map(|p| unsafe { &mut *p })
    }

    fn remove(&self, sk: u64) {
        if self.map.remove(sk).is_ok() {
            count(self.removed);
        }
    }

    /// Adds `conn` (a map value or the scratch entry: never a copy on the BPF stack, which
    /// Linux 6.1's verifier allows only 512 bytes across calls).
    fn insert(&self, sk: u64, conn: &Conn) {
        // Added only if absent: one bucket walk, where a lookup first cost a second one
        // on every insert. A stale entry for a reused socket address is then replaced,
        // counted as removed so that inserted − removed stays the number of entries.
        let added = match self.map.insert(sk, conn, u64::from(BPF_NOEXIST)) {
            Err(e) if i64::from(e) == -i64::from(errno::EEXIST) => {
                count(self.removed);
                self.map.insert(sk, conn, u64::from(BPF_ANY))
            }
            other => other,
        };
        count(if added.is_ok() {
            self.inserted
        } else {
            self.full
        });
    }
}

fn store_tuple(conn: &mut Conn, t: &Tuple) {
    conn.saddr = t.saddr;
    conn.daddr = t.daddr;
    conn.sport = t.sport;
    conn.dport = t.dport;
    conn.family = t.family;
}

/// CLOSE→SYN_SENT, inside connect(), in the caller's context: the one moment we can see
/// who connects.
pub fn on_syn_sent(sk: u64) -> Result<(), i64> {
    if return_hooked() {
        // A new attempt on this socket: its earlier failure is history.
        let _ = FAILED_SOCKS.remove(sk);
    }
    if kernel::sock_protocol(sk) != IPPROTO_TCP {
        return Ok(());
    }
    let task = current_task();
    if !task_passes(&task) {
        return Ok(());
    }
    let config = globals::config();
    let conn = scratch(Scratch::StateMachine).ok_or(0)?;
    fill_current(conn, &task);
    conn.netns = kernel::sock_netns(sk);
    if config.netns != 0 || config.dport != 0 || config.dest_filter != 0 {
        conn.family = kernel::sock_family(sk)?;
        (conn.daddr, conn.dport) = kernel::sock_peer(sk, conn.family)?;
        if !destination_passes(&conn.daddr, conn.dport, conn.netns) {
            return Ok(());
        }
    }
    connecting().insert(sk, conn);
    Ok(())
}

/// SYN_SENT→ESTABLISHED: the connect succeeded; the connection moves to `ESTABLISHED`.
pub fn on_established(sk: u64) -> Result<(), i64> {
    let connecting = connecting();
    let Some(conn) = connecting.get(sk) else {
        return Ok(());
    };
    conn.established_ns = now();
    conn.flags |= flag::ESTABLISHED;
    let tuple = kernel::sock_tuple(sk);
    if let Ok(tuple) = &tuple {
        store_tuple(conn, tuple);
        if globals::config().emit_success != 0 {
            emit(|e| {
                e.conn = *conn;
                e.kind = kind::CONNECT_ESTABLISHED;
                e.state = tcp_state::SYN_SENT;
            });
        }
        established().insert(sk, conn);
    }
    connecting.remove(sk);
    tuple.map(|_| ())
}

/// CLOSE→LISTEN, inside listen(), in the listening process: remembered by port, for the
/// connections it will accept.
pub fn on_listen(sk: u64) -> Result<(), i64> {
    if globals::config().follow_accepted == 0 || kernel::sock_protocol(sk) != IPPROTO_TCP {
        return Ok(());
    }
    let key = ListenerKey {
        netns: kernel::sock_netns(sk),
        port: u16::from_be(kernel::read::<u16>(sk, globals::kernel().sock_sport)?),
        _pad: 0,
    };
    let task = current_task();
    let conn = scratch(Scratch::StateMachine).ok_or(0)?;
    fill_current(conn, &task);
    let owner = Owner {
        cgroup_id: conn.cgroup_id,
        cgroup_v1_id: conn.cgroup_v1_id,
        proc_start_ns: conn.proc_start_ns,
        tgid: conn.tgid,
        tid: conn.tid,
        uid: conn.uid,
        _pad: 0,
        comm: conn.comm,
    };
    let _ = LISTENERS.insert(key, owner, 0);
    Ok(())
}

/// SYN_RECV→ESTABLISHED: a listener on this host accepted a connection. Runs in softirq:
/// the process is the one that listens on the port, when it is known.
pub fn on_accepted(sk: u64) -> Result<(), i64> {
    let config = globals::config();
    if config.follow_accepted == 0 || kernel::sock_protocol(sk) != IPPROTO_TCP {
        return Ok(());
    }
    let netns = kernel::sock_netns(sk);
    if config.netns != 0 && config.netns != netns {
        return Ok(());
    }
    let conn = scratch(Scratch::StateMachine).ok_or(0)?;
    *conn = Conn::ZERO;
    conn.netns = netns;
    conn.start_ns = now();
    conn.established_ns = conn.start_ns;
    conn.flags = flag::ESTABLISHED | flag::ACCEPTED;
    store_tuple(conn, &kernel::sock_tuple(sk)?);
    let key = ListenerKey {
        netns,
        port: conn.sport,
        _pad: 0,
    };
    // SAFETY: the value is copied field by field while this program runs.
    if let Some(owner) = unsafe { LISTENERS.get(key) } {
        conn.tgid = owner.tgid;
        conn.tid = owner.tid;
        conn.uid = owner.uid;
        conn.cgroup_id = owner.cgroup_id;
        conn.cgroup_v1_id = owner.cgroup_v1_id;
        conn.proc_start_ns = owner.proc_start_ns;
        conn.comm = owner.comm;
    }
    established().insert(sk, conn);
    Ok(())
}

/// SYN_SENT→CLOSE: the connect ended without a connection.
pub fn on_connect_closed(sk: u64) -> Result<(), i64> {
    let connecting = connecting();
    let result = end_connect(sk, connecting.get(sk));
    connecting.remove(sk);
    result
}

/// The outcome of a connect that ended in CLOSE, followed or not (a hook on connect()'s
/// return must learn that the state machine owns the attempt either way).
fn end_connect(sk: u64, followed: Option<&'static mut Conn>) -> Result<(), i64> {
    let err = kernel::sock_err(sk);
    if err == 0 && kernel::tcp_segs_out(sk) == 0 {
        // No SYN left: connect() failed inside the call. The hook on its return knows
        // the errno; without one, say what the socket shows.
        if return_hooked() {
            return Ok(());
        }
        return followed.map_or(Ok(()), |conn| emit_local_error_of_sock(sk, conn));
    }
    if return_hooked() && FAILED_SOCKS.insert(sk, 1u8, 0).is_err() {
        count(counter::FAILED_SOCKS_FULL);
    }
    let Some(conn) = followed else {
        return Ok(());
    };
    store_tuple(conn, &kernel::sock_tuple(sk)?);
    // No error of its own: did an ICMP error come back before the application gave up?
    let soft = if err == 0 {
        match kernel::sock_err_soft(sk) {
            0 => kernel::sock_queued_errno(sk),
            soft => soft,
        }
    } else {
        0
    };
    if soft != 0 {
        conn.flags |= flag::SOFT_ERROR;
    }
    emit(|e| {
        e.conn = *conn;
        e.kind = kind::CONNECT_CLOSED;
        e.state = tcp_state::SYN_SENT;
        e.errno = if err != 0 { err } else { soft };
    });
    Ok(())
}

/// connect() failed after SYN_SENT but before its SYN left, and no hook saw its return:
/// the socket shows which. No local port (the port search failed before one was
/// assigned) is EADDRNOTAVAIL; anything else is reported without an errno.
fn emit_local_error_of_sock(sk: u64, conn: &mut Conn) -> Result<(), i64> {
    conn.family = kernel::sock_family(sk)?;
    (conn.daddr, conn.dport) = kernel::sock_peer(sk, conn.family)?;
    let local_port = kernel::read::<u16>(sk, globals::kernel().sock_sport).unwrap_or(0);
    emit(|e| {
        e.conn = *conn;
        e.kind = kind::CONNECT_LOCAL_ERROR;
        e.errno = if local_port == 0 {
            errno::EADDRNOTAVAIL
        } else {
            0
        };
    });
    Ok(())
}

/// An established (or accepted) connection reached CLOSE from `old`.
pub fn on_closed(sk: u64, old: u8) -> Result<(), i64> {
    let established = established();
    let Some(conn) = established.get(sk) else {
        return Ok(());
    };
    let result = emit_close(sk, conn, old);
    established.remove(sk);
    result
}

fn emit_close(sk: u64, conn: &Conn, old: u8) -> Result<(), i64> {
    let err = kernel::sock_err(sk);
    // After a RST the socket error is ECONNRESET/EPIPE, and the reset record was this
    // connection's end: no loss, and no close unless it carries something to report.
    let was_reset = conn.flags & flag::RESET_RECEIVED != 0;
    let lost = err != 0 && !was_reset;
    // Straight from ESTABLISHED or CLOSE_WAIT to CLOSE with no error and no RST received
    // is an abortive close (SO_LINGER 0, unread data at close()): the kernel changes the
    // state first and sends its RST next, when the connection is no longer followed; it
    // is reported here, as the reset this host sends.
    let aborted =
        !lost && !was_reset && matches!(old, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT);
    let worth = aborted
        || conn.retransmits > 0
        || conn.local_drops > 0
        || (globals::config().emit_closed != 0 && !was_reset);
    if !lost && !worth {
        return Ok(());
    }
    let (received, sent) = kernel::tcp_bytes(sk);
    emit(|e| {
        e.conn = *conn;
        e.kind = if lost {
            kind::LOST
        } else if aborted {
            kind::RESET_SENT
        } else {
            kind::CLOSED
        };
        e.state = old;
        e.errno = if lost { err } else { 0 };
        e.bytes_received = received;
        e.bytes_sent = sent;
    });
    Ok(())
}

/// ESTABLISHED→CLOSE_WAIT: the peer closed its side. Remember when, and how long the
/// connection had been idle then (a server closing idle keep-alive connections).
pub fn on_peer_fin(sk: u64) -> Result<(), i64> {
    let Some(conn) = established().get(sk) else {
        return Ok(());
    };
    // SAFETY: a helper without arguments.
    let jiffies = unsafe { bpf_jiffies64() };
    conn.fin_ns = now();
    conn.flags |= flag::PEER_FIN;
    conn.idle_before_fin_jiffies = u64::from(kernel::tcp_idle_jiffies(sk, jiffies));
    Ok(())
}

/// A RST on a followed connection past SYN_SENT (in SYN_SENT a received RST is a refused
/// connect, reported by the state machine); marks the connection with `mark`.
pub fn report_reset(sk: u64, kind: u8, mark: u8) -> Result<(), i64> {
    if sk == 0 {
        return Ok(());
    }
    let Some(conn) = established().get(sk) else {
        return Ok(());
    };
    conn.flags |= mark;
    let state = kernel::sock_state(sk);
    let (received, sent) = kernel::tcp_bytes(sk);
    emit(|e| {
        e.conn = *conn;
        e.kind = kind;
        e.state = state;
        e.bytes_received = received;
        e.bytes_sent = sent;
    });
    Ok(())
}

/// A retransmitted segment of a followed connection (`state` before it).
pub fn on_retransmit(sk: u64, state: u8, emit_each: bool) -> Result<(), i64> {
    if state == tcp_state::SYN_SENT {
        if let Some(conn) = connecting().get(sk) {
            conn.syn_retransmits += 1;
        }
        return Ok(());
    }
    let Some(conn) = established().get(sk) else {
        return Ok(());
    };
    conn.retransmits += 1;
    if emit_each {
        emit(|e| {
            e.conn = *conn;
            e.kind = kind::RETRANSMIT;
            e.state = state;
        });
    }
    Ok(())
}

/// A packet of socket `sk` that this host dropped (`reason` from `enum skb_drop_reason`).
pub fn on_local_drop(sk: u64, reason: u32) {
    // Most drops on a busy host are of other protocols' packets (UDP to a closed port, a
    // firewall's): one read of the socket answers where two map misses cost three times
    // as much.
    if kernel::sock_protocol(sk) != IPPROTO_TCP {
        return;
    }
    if let Some(conn) = connecting().get(sk).or_else(|| established().get(sk)) {
        conn.local_drops += 1;
        conn.drop_reason = reason as u16;
    }
}

/// The socket is being freed. Its state change to CLOSE came first unless the kernel
/// skipped that program (it skips one that would nest inside another on the same CPU):
/// whatever is still followed ends here, counted, so that no entry outlives its socket.
pub fn on_destroy(sk: u64) -> Result<(), i64> {
    if return_hooked() {
        let _ = FAILED_SOCKS.remove(sk);
    }
    let connecting = connecting();
    if let Some(conn) = connecting.get(sk) {
        count(counter::SWEPT);
        let _ = end_connect(sk, Some(conn));
        connecting.remove(sk);
    }
    let established = established();
    if let Some(conn) = established.get(sk) {
        count(counter::SWEPT);
        let _ = emit_close(sk, conn, 0);
        established.remove(sk);
    }
    Ok(())
}

/// A hook on connect()'s return saw `ret` for socket `sk` connecting to `daddr`:`dport`.
/// Reports a failure before any SYN: everything after the SYN is the state machine's, and
/// a socket it reported as failed returns that error again without a new attempt.
pub fn report_connect_return(sk: u64, dest: &Dest, ret: i64) -> Result<(), i64> {
    if ret >= 0 {
        return Ok(());
    }
    let err = ret.unsigned_abs() as u32;
    if errno::is_not_a_failure(err) || FAILED_SOCKS.get_ptr(sk).is_some() {
        return Ok(());
    }
    let task = current_task();
    if !task_passes(&task) {
        return Ok(());
    }
    let netns = kernel::sock_netns(sk);
    if !destination_passes(&dest.daddr, dest.dport, netns) {
        return Ok(());
    }
    emit_local_error(&task, dest, netns, err);
    Ok(())
}

/// A route lookup for a connect failed with `err` (evidence without a hook on connect()).
pub fn report_route_error(dest: &Dest, err: u32) {
    let task = current_task();
    if !task_passes(&task) {
        return;
    }
    let netns = kernel::current_netns();
    if destination_passes(&dest.daddr, dest.dport, netns) {
        emit_local_error(&task, dest, netns, err);
    }
}

fn emit_local_error(task: &crate::helpers::Task, dest: &Dest, netns: u32, err: u32) {
    let Some(conn) = scratch(Scratch::ConnectReturn) else {
        return;
    };
    fill_current(conn, task);
    conn.family = dest.family;
    conn.daddr = dest.daddr;
    conn.dport = dest.dport;
    conn.netns = netns;
    emit(|e| {
        e.conn = *conn;
        e.kind = kind::CONNECT_LOCAL_ERROR;
        e.errno = err;
    });
}

/// Where a connect goes.
pub struct Dest {
    pub family: u16,
    /// Host byte order.
    pub dport: u16,
    /// IPv4 stored IPv4-mapped.
    pub daddr: [u8; 16],
}

impl Dest {
    /// The destination in a `struct sockaddr` of `family` and `port_be` whose address part
    /// `v4`/`v6` read (from kernel or user memory).
    pub fn of_sockaddr(
        family: u16,
        port_be: u16,
        v4: impl FnOnce() -> Result<[u8; 4], i64>,
        v6: impl FnOnce() -> Result<[u8; 16], i64>,
    ) -> Result<Dest, i64> {
        let daddr = match family {
            AF_INET => kernel::mapped_v4(v4()?),
            AF_INET6 => v6()?,
            _ => return Err(0),
        };
        Ok(Dest {
            family,
            dport: u16::from_be(port_be),
            daddr,
        })
    }
}
