//! Loads that never connect: what a tracer costs the rest of the host. A tracer of
//! connects should cost them nothing, but its hooks sit on paths they take: every system
//! call (the syscall tracepoints), every dropped packet (`kfree_skb`), every route lookup
//! (`fib_table_lookup`).
//!
//! - `syscalls`: getppid() in a loop, the cheapest system call there is, so that any toll
//!   on the way into or out of the kernel shows in full;
//! - `udp-closed`: unconnected UDP to a closed port on loopback: a route lookup on each
//!   send, and each packet dropped on arrival (reason NO_SOCKET);
//! - `udp-dropped`: the same, dropped on the way out by an nftables rule in the output
//!   hook (reason NETFILTER_DROP, the sending socket attached: the drop reason a tracer of
//!   connects does look at);
//! - `udp-unroutable`: UDP to an address this namespace has no route to: every send is a
//!   failed route lookup (ENETUNREACH) and nothing more.
use std::{
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{Counts, LOOPBACK, Mode};

/// TEST-NET-1 (RFC 5737): never routed, and the namespace has only its loopback anyway.
const UNROUTABLE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Calls or sends between two looks at the clock.
const BATCH: u64 = 256;
const PAYLOAD: [u8; 64] = [0; 64];

/// Sets the namespace up for `mode` (the caller made sure it is our own) and returns where
/// the packets go.
pub fn prepare(mode: Mode, port: u16) -> anyhow::Result<SocketAddr> {
    if mode == Mode::UdpDropped {
        nft(&format!(
            "table inet loadgen {{\n chain out {{\n  type filter hook output priority 0;\n  \
             udp dport {port} drop\n }}\n}}\n"
        ))?;
    }
    let ip = if mode == Mode::UdpUnroutable {
        UNROUTABLE
    } else {
        LOOPBACK
    };
    Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
}

/// One thread's loop, until the deadline or `max` calls or sends.
pub fn run(mode: Mode, target: SocketAddr, deadline: Instant, max: u64) -> anyhow::Result<Counts> {
    let mut c = Counts::default();
    let socket = match mode {
        Mode::Syscalls => None,
        _ => Some(UdpSocket::bind("0.0.0.0:0").context("bind a UDP socket")?),
    };
    while c.attempts < max && Instant::now() < deadline {
        for _ in 0..BATCH.min(max - c.attempts) {
            c.attempts += 1;
            let ok = match &socket {
                // SAFETY: getppid has no arguments and cannot fail.
                None => (unsafe { libc::syscall(libc::SYS_getppid) }) > 0,
                // Unconnected on purpose: no route is cached on the socket.
                Some(s) => s.send_to(&PAYLOAD, target).is_ok(),
            };
            if ok {
                c.ok += 1;
            } else {
                c.other += 1;
            }
        }
    }
    Ok(c)
}

/// Loads an nftables ruleset into this (our own) namespace.
fn nft(ruleset: &str) -> anyhow::Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("run nft (install nftables: cargo xtask setup)")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(ruleset.as_bytes())?;
    let status = child.wait()?;
    if !status.success() {
        bail!("nft refused the ruleset ({status}): {ruleset}");
    }
    Ok(())
}
