//! `tcp_connect()`, by fentry or kprobe where the kernel has them: the moment the SYN
//! leaves. The connection is already followed (from its CLOSE→SYN_SENT transition); this
//! hook stamps the handshake's start and records that a SYN really went out, which tells
//! a connect that failed before sending anything from one the application abandoned.
use aya_ebpf::{
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext},
};
use tracer_common::flag;

use crate::helpers::{now, sock_info};

#[fentry(function = "tcp_connect")]
pub fn tcp_connect_fentry(ctx: FEntryContext) -> u32 {
    let sk: u64 = ctx.arg(0);
    on_tcp_connect(sk)
}

#[kprobe]
pub fn tcp_connect_kprobe(ctx: ProbeContext) -> u32 {
    ctx.arg::<u64>(0).map_or(0, on_tcp_connect)
}

fn on_tcp_connect(sk: u64) -> u32 {
    if let Some(info) = sock_info(sk) {
        info.start_ns = now();
        info.flags |= flag::SYN_HOOKED;
    }
    0
}
