//! `inet_sock_set_state` (raw tracepoint: `sk, oldstate, newstate`): the TCP state
//! machine. The spine of conntrace: a connection is followed from CLOSE→SYN_SENT (in the
//! connecting process) to its →CLOSE, and every outcome is decided on a transition.
//! Transitions that matter to no one return before any kernel read.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::tcp_state::{CLOSE, CLOSE_WAIT, ESTABLISHED, LISTEN, SYN_RECV, SYN_SENT};

use crate::conn;

#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: RawTracePointContext) -> i32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_inet_sock_set_state(ctx: &RawTracePointContext) -> Result<(), i64> {
    let sk: u64 = ctx.arg(0);
    let old = ctx.arg::<u64>(1) as u8;
    let new = ctx.arg::<u64>(2) as u8;
    match (old, new) {
        (CLOSE, SYN_SENT) => conn::on_syn_sent(sk),
        (SYN_SENT, ESTABLISHED) => conn::on_established(sk),
        (SYN_SENT, CLOSE) => conn::on_connect_closed(sk),
        (SYN_RECV, ESTABLISHED) => conn::on_accepted(sk),
        (CLOSE, LISTEN) => conn::on_listen(sk),
        (ESTABLISHED, CLOSE_WAIT) => conn::on_peer_fin(sk),
        (_, CLOSE) => conn::on_closed(sk, old),
        _ => Ok(()),
    }
}
