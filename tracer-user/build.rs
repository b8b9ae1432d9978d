//! Builds the eBPF object with aya-build and leaves it in OUT_DIR for `include_bytes!`.
//!
//! Without the eBPF toolchain (no nightly rust-src or no bpf-linker), or with
//! `CONNTRACE_SKIP_EBPF=1`, it leaves an empty placeholder instead so that unit tests and
//! clippy still run; such a binary refuses to start with a clear error.
use std::{env, fs, path::PathBuf, process::Command};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const OBJECT: &str = "conntrace";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CONNTRACE_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    if let Some(missing) = missing_toolchain() {
        println!(
            "cargo:warning=building without the eBPF object ({missing}); run `cargo xtask setup`"
        );
        fs::write(out_dir.join(OBJECT), b"").context("write placeholder eBPF object")?;
        return Ok(());
    }
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or_else(|| anyhow!("tracer-user has no parent directory"))?
        .join("tracer-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
    .context("build the eBPF programs (tracer-ebpf)")
}

/// Why the eBPF object cannot be built here, if it cannot.
fn missing_toolchain() -> Option<&'static str> {
    if env::var_os("CONNTRACE_SKIP_EBPF").is_some_and(|v| v == "1") {
        return Some("CONNTRACE_SKIP_EBPF=1");
    }
    let found = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("bpf-linker", &["--version"]) {
        return Some("bpf-linker not found");
    }
    let rust_src = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib/src/rust/library/core")
        });
    if !rust_src.is_some_and(|p| p.exists()) {
        return Some("nightly toolchain with rust-src not found");
    }
    None
}
