//! `kfree_skb` (raw tracepoint: `skb, location, reason, ...`): a packet dropped, with the
//! kernel's reason. Fires for every dropped packet on the host, so the reason is checked
//! first (one bit test, no kernel read): only the reasons that mean "dropped on this host
//! on its way" (a firewall, neighbour resolution, routing, ...) matter, for a socket we
//! follow.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{conn, globals, kernel::read};

#[raw_tracepoint(tracepoint = "kfree_skb")]
pub fn kfree_skb(ctx: RawTracePointContext) -> i32 {
    match try_kfree_skb(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_kfree_skb(ctx: &RawTracePointContext) -> Result<(), i64> {
    let reason = ctx.arg::<u64>(2) as u32;
    let mask = globals::config().drop_reasons;
    let word = (reason / 64) as usize;
    if word >= mask.len() || mask[word] & (1 << (reason % 64)) == 0 {
        return Ok(());
    }
    let skb: u64 = ctx.arg(0);
    let sk = read::<u64>(skb, globals::kernel().skb_sk)?;
    if sk != 0 {
        conn::on_local_drop(sk, reason);
    }
    Ok(())
}
