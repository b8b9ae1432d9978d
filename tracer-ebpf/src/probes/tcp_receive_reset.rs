//! `tcp_receive_reset` (raw tracepoint: `sk`): the peer reset a followed connection. In
//! SYN_SENT that is a refused connect, which the state machine reports with its
//! ECONNREFUSED; past it, the peer aborted a connection it had accepted.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::{flag, kind};

use crate::conn;

#[raw_tracepoint(tracepoint = "tcp_receive_reset")]
pub fn tcp_receive_reset(ctx: RawTracePointContext) -> i32 {
    match conn::report_reset(ctx.arg(0), kind::RESET_RECEIVED, flag::RESET_RECEIVED) {
        Ok(()) | Err(_) => 0,
    }
}
