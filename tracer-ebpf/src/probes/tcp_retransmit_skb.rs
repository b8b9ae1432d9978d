//! `tcp:tcp_retransmit_skb`: counts SYN retransmits (a connect that is not answered) and
//! retransmits on established connections (loss on the path). Runs in timers and softirq,
//! so the process comes from the followed connection, never from the current task.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use tracer_common::{kind, tcp_state};

use crate::{
    globals,
    helpers::{emit, fill_from_sock, sock_info},
};

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    match try_tcp_retransmit_skb(&ctx) {
        Ok(v) | Err(v) => v as u32,
    }
}

fn try_tcp_retransmit_skb(ctx: &TracePointContext) -> Result<i64, i64> {
    let o = globals::tp();
    // SAFETY: offsets come from this tracepoint's format file.
    let sk: u64 = unsafe { ctx.read_at(o.retransmit_skaddr.into()) }?;
    let state: i32 = unsafe { ctx.read_at(o.retransmit_state.into()) }?;
    if o.retransmit_err != 0 {
        // SAFETY: as above.
        let err: i32 = unsafe { ctx.read_at(o.retransmit_err.into()) }?;
        if err != 0 {
            return Ok(0); // not sent: nothing went on the wire
        }
    }
    let info = sock_info(sk).ok_or(0)?;
    if state as u8 == tcp_state::SYN_SENT {
        info.syn_retransmits += 1;
        return Ok(0);
    }
    info.retransmits += 1;
    if globals::config().emit_retransmits != 0 {
        emit(|e| {
            fill_from_sock(e, sk, info);
            e.kind = kind::RETRANSMIT;
            e.state = state as u8;
        });
    }
    Ok(0)
}
