//! `fib6_table_lookup` (raw tracepoint: `net, res, table, flp`): an IPv6 route lookup,
//! for the same purpose and with the same filters as `fib_table_lookup`. The result's
//! route type says whether it failed: the null entry (no route) in the main table, the
//! last one IPv6's default rules consult; or an unreachable, prohibit or blackhole route.
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use tracer_common::{AF_INET6, IPPROTO_TCP, LOOPBACK_IFINDEX, errno, rt_table, rtn};

use crate::{conn, globals, kernel::read};

#[raw_tracepoint(tracepoint = "fib6_table_lookup")]
pub fn fib6_table_lookup(ctx: RawTracePointContext) -> i32 {
    match try_fib6_table_lookup(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_fib6_table_lookup(ctx: &RawTracePointContext) -> Result<(), i64> {
    let k = globals::kernel();
    let net: u64 = ctx.arg(0);
    let res: u64 = ctx.arg(1);
    let route_type = read::<u8>(res, k.fib6_result_type)?;
    let err = match route_type {
        rtn::UNREACHABLE => errno::EHOSTUNREACH,
        rtn::PROHIBIT => errno::EACCES,
        rtn::BLACKHOLE => errno::EINVAL,
        _ => return Ok(()),
    };
    let flp: u64 = ctx.arg(3);
    if u16::from(read::<u8>(flp, k.flowi6_proto)?) != IPPROTO_TCP
        || read::<u16>(flp, k.flowi6_sport)? != 0
        || read::<i32>(flp, k.flowi6_iif)? as u32 != LOOPBACK_IFINDEX
    {
        return Ok(());
    }
    let mut err = err;
    // The null entry is "no route here": final only in the last table consulted.
    if read::<u64>(res, k.fib6_result_f6i)? == read::<u64>(net, k.net_fib6_null_entry)? {
        let table: u64 = ctx.arg(2);
        if read::<u32>(table, k.fib6_table_id)? != rt_table::MAIN {
            return Ok(());
        }
        err = errno::ENETUNREACH;
    }
    let dest = conn::Dest {
        family: AF_INET6,
        dport: u16::from_be(read::<u16>(flp, k.flowi6_dport)?),
        daddr: read::<[u8; 16]>(flp, k.flowi6_daddr)?,
    };
    conn::report_route_error(&dest, err);
    Ok(())
}
