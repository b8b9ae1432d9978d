//! `tcp:tcp_receive_reset`: the peer reset a followed connection. In SYN_SENT that is a
//! refused connect, which the state machine reports with its ECONNREFUSED; past it, the
//! peer aborted a connection it had accepted.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{flag, kind};

use crate::{globals, helpers::report_reset};

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    match try_tcp_receive_reset(&ctx) {
        Ok(v) | Err(v) => v as u32,
    }
}

fn try_tcp_receive_reset(ctx: &TracePointContext) -> Result<i64, i64> {
    // SAFETY: the offset comes from this tracepoint's format file.
    let sk: u64 = unsafe { ctx.read_at(globals::tp().receive_reset_skaddr.into()) }?;
    report_reset(sk, kind::RESET_RECEIVED, flag::RESET_RECEIVED)
}
