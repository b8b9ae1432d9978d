//! `tcp_retransmit_skb` (raw tracepoint: `sk, skb[, err]`): counts SYN retransmits (a
//! connect that is not answered) and retransmits on established connections (loss on the
//! path). Runs in timers and softirq, so the process comes from the followed connection,
//! never from the current task.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{conn, globals, kernel};

#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: RawTracePointContext) -> i32 {
    match try_tcp_retransmit_skb(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_tcp_retransmit_skb(ctx: &RawTracePointContext) -> Result<(), i64> {
    let config = globals::config();
    // Linux 6.13+ fires for retransmits that were not sent too, with their error (a local
    // firewall's drop among them): those never left, and are not counted. The flag is a
    // load-time constant: where it is 0 the verifier drops the read of a third argument
    // that older kernels' tracepoint does not have.
    if config.retransmit_has_err != 0 && ctx.arg::<u64>(2) as i32 != 0 {
        return Ok(());
    }
    let sk: u64 = ctx.arg(0);
    conn::on_retransmit(sk, kernel::sock_state(sk), config.emit_retransmits != 0)
}
