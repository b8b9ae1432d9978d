//! `tcp_destroy_sock` (raw tracepoint: `sk`): a TCP socket is being freed, so that the
//! kernel may reuse its address for another. Nothing we keep about it may outlive it.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::conn;

#[raw_tracepoint(tracepoint = "tcp_destroy_sock")]
pub fn tcp_destroy_sock(ctx: RawTracePointContext) -> i32 {
    match conn::on_destroy(ctx.arg(0)) {
        Ok(()) | Err(_) => 0,
    }
}
