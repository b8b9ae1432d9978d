//! `tcp_send_reset` (raw tracepoint: `sk, skb, ...`): this host reset a followed
//! connection (an abortive close, data arriving for a socket that is gone, ...). `sk` is
//! NULL for a reset that answers a packet for no socket at all.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::kind;

use crate::conn;

#[raw_tracepoint(tracepoint = "tcp_send_reset")]
pub fn tcp_send_reset(ctx: RawTracePointContext) -> i32 {
    match conn::report_reset(ctx.arg(0), kind::RESET_SENT, 0) {
        Ok(()) | Err(_) => 0,
    }
}
