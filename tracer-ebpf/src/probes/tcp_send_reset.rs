//! `tcp:tcp_send_reset`: this host reset a followed connection (an abortive close, data
//! arriving for a socket that is gone, ...).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::kind;

use crate::{globals, helpers::report_reset};

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    match try_tcp_send_reset(&ctx) {
        Ok(v) | Err(v) => v as u32,
    }
}

fn try_tcp_send_reset(ctx: &TracePointContext) -> Result<i64, i64> {
    // SAFETY: the offset comes from this tracepoint's format file.
    let sk: u64 = unsafe { ctx.read_at(globals::tp().send_reset_skaddr.into()) }?;
    report_reset(sk, kind::RESET_SENT, 0)
}
