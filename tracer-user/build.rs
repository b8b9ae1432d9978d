//! Builds the eBPF object with aya-build and leaves it in OUT_DIR for `include_bytes!`.
//!
//! The compiler is the dated nightly that `tracer-ebpf/rust-toolchain.toml` names (its LLVM
//! must match bpf-linker's). Without the eBPF toolchain (that nightly with rust-src, or
//! bpf-linker), or with `CONNTRACE_SKIP_EBPF=1`, it leaves an empty placeholder instead so
//! that unit tests and clippy still run; such a binary refuses to start with a clear error.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const OBJECT: &str = "conntrace";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=CONNTRACE_SKIP_EBPF");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let ebpf_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?)
        .parent()
        .ok_or_else(|| anyhow!("tracer-user has no parent directory"))?
        .join("tracer-ebpf");
    let toolchain_file = ebpf_dir.join("rust-toolchain.toml");
    println!("cargo:rerun-if-changed={}", toolchain_file.display());
    let toolchain = ebpf_toolchain(&toolchain_file)?;
    if let Some(missing) = missing_toolchain(&toolchain) {
        println!(
            "cargo:warning=building without the eBPF object ({missing}); run `cargo xtask setup`"
        );
        fs::write(out_dir.join(OBJECT), b"").context("write placeholder eBPF object")?;
        return Ok(());
    }
    let root = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: "tracer-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        Toolchain::Custom(&toolchain),
    )
    .with_context(|| format!("build the eBPF programs (tracer-ebpf) with {toolchain}"))
}

/// The `channel` that `tracer-ebpf/rust-toolchain.toml` names.
fn ebpf_toolchain(file: &Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("{}: no `channel = \"...\"` line", file.display()))
}

/// Why the eBPF object cannot be built here, if it cannot.
fn missing_toolchain(toolchain: &str) -> Option<String> {
    if env::var_os("CONNTRACE_SKIP_EBPF").is_some_and(|v| v == "1") {
        return Some("CONNTRACE_SKIP_EBPF=1".into());
    }
    let found = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("bpf-linker", &["--version"]) {
        return Some("bpf-linker not found".into());
    }
    let rust_src = Command::new("rustup")
        .args(["run", toolchain, "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib/src/rust/library/core")
        });
    if !rust_src.is_some_and(|p| p.exists()) {
        return Some(format!("toolchain {toolchain} with rust-src not found"));
    }
    None
}
