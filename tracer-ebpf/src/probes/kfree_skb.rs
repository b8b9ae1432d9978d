//! `kfree_skb` (raw tracepoint: `skb, location, reason[, rx_sk]`): a packet dropped, with
//! the kernel's reason. Fires for every dropped packet on the host, so the reason is
//! checked first (one bit test, no kernel read): only the reasons that mean "dropped on
//! this host on its way" (a firewall, neighbour resolution, routing, ...) matter, for a
//! socket we follow. A full accept queue (Linux 6.18 names it) is counted per listener.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::ListenDrops;

use crate::{
    conn, globals,
    helpers::now,
    kernel::{self, read},
    maps::LISTEN_DROPS,
};

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    match try_kfree_skb(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_kfree_skb(ctx: &RawTracePointContext) -> Result<(), i64> {
    let reason = ctx.arg::<u64>(2) as u32;
    let config = globals::config();
    // Tested first, on its own: a load-time constant, so on kernels without the reason
    // (0) the verifier drops this branch, and with it the read of a fourth argument that
    // such a kernel's tracepoint does not have (the attach would fail otherwise).
    if config.listen_overflow_reason != 0 && reason == config.listen_overflow_reason {
        // Linux 6.18 passes the listener as the fourth argument (`rx_sk`).
        return count_listen_drop(ctx.arg(3));
    }
    let word = (reason / 64) as usize;
    if word >= config.drop_reasons.len() || config.drop_reasons[word] & (1 << (reason % 64)) == 0 {
        return Ok(());
    }
    let skb: u64 = ctx.arg(0);
    let sk = read::<u64>(skb, globals::kernel().skb_sk)?;
    if sk != 0 {
        conn::on_local_drop(sk, reason);
    }
    Ok(())
}

fn count_listen_drop(listener: u64) -> Result<(), i64> {
    if listener == 0 {
        return Ok(());
    }
    if let Some(entry) = LISTEN_DROPS.get_ptr_mut(listener) {
        // SAFETY: the pointer comes from the map.
        let entry = unsafe { &mut *entry };
        entry.drops += 1;
        entry.last_ns = now();
        (entry.queue, entry.backlog) = kernel::sock_accept_queue(listener);
        return Ok(());
    }
    let tuple = kernel::sock_tuple(listener)?;
    let (queue, backlog) = kernel::sock_accept_queue(listener);
    let entry = ListenDrops {
        last_ns: now(),
        drops: 1,
        addr: tuple.saddr,
        netns: kernel::sock_netns(listener),
        queue,
        backlog,
        port: tuple.sport,
        family: tuple.family,
    };
    let _ = LISTEN_DROPS.insert(listener, entry, 0);
    Ok(())
}
