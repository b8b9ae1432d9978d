//! conntrace's eBPF programs: one module per kernel hook under `probes/`, a connection's
//! life in `conn`, kernel reads in `kernel`, the steps every probe shares in `helpers`, the
//! maps in `maps`, the load-time knobs in `globals`.
#![no_std]
#![no_main]

mod conn;
mod globals;
mod helpers;
mod kernel;
mod maps;
mod probes;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here; nothing in these programs panics.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
