//! `fib_table_lookup` (raw tracepoint: `tb_id, flp, nhc, err`): an IPv4 route lookup.
//! Attached only when no hook sees connect()'s return (kernels without fentry and
//! kprobes): a connect whose route lookup fails never reaches the state machine, and this
//! is where it shows, in the connecting task's context, at no cost to other syscalls.
//!
//! It fires for every lookup on the host (every forwarded packet), so a lookup that found
//! a route returns at once, on the error argument alone. Of the failures, only a connect's
//! own lookup is reported: TCP, locally generated (input interface: loopback), no local
//! port yet (a connect's first lookup, before the port search), and an error that is
//! final: an unreachable, prohibit or blackhole route at once; "no route" (EAGAIN: try
//! the next table) once the last table is consulted.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::{AF_INET, IPPROTO_TCP, LOOPBACK_IFINDEX, errno, rt_table};

use crate::{
    conn, globals,
    kernel::{self, mapped_v4, read},
};

#[raw_tracepoint(tracepoint = "fib_table_lookup")]
pub fn fib_table_lookup(ctx: RawTracePointContext) -> i32 {
    match try_fib_table_lookup(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_fib_table_lookup(ctx: &RawTracePointContext) -> Result<(), i64> {
    let err = ctx.arg::<u64>(3) as i32;
    if err >= 0 {
        return Ok(());
    }
    let k = globals::kernel();
    let flp: u64 = ctx.arg(1);
    if u16::from(read::<u8>(flp, k.flowi4_proto)?) != IPPROTO_TCP
        || read::<u16>(flp, k.flowi4_sport)? != 0
        || read::<i32>(flp, k.flowi4_iif)? as u32 != LOOPBACK_IFINDEX
    {
        return Ok(());
    }
    let mut err = err.unsigned_abs();
    if err == errno::EAGAIN {
        if !is_last_table(ctx.arg::<u64>(0) as u32)? {
            return Ok(());
        }
        err = errno::ENETUNREACH;
    }
    let dest = conn::Dest {
        family: AF_INET,
        dport: u16::from_be(read::<u16>(flp, k.flowi4_dport)?),
        daddr: mapped_v4(read::<[u8; 4]>(flp, k.flowi4_daddr)?),
    };
    conn::report_route_error(&dest, err);
    Ok(())
}

/// Whether a miss in table `tb_id` ends the lookup: without policy-routing rules the
/// kernel consults only the main table; with them, the default rules end with the
/// default table.
fn is_last_table(tb_id: u32) -> Result<bool, i64> {
    if tb_id == rt_table::DEFAULT {
        return Ok(true);
    }
    if tb_id != rt_table::MAIN {
        return Ok(false);
    }
    let net = kernel::current_net()?;
    Ok(read::<u8>(net, globals::kernel().net_fib4_custom_rules)? == 0)
}
