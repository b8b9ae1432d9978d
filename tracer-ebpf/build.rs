//! Rebuild the eBPF object when the linker changes: it is a separate program that cargo
//! does not otherwise track.
use which::which;

fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
