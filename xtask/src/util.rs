//! Running commands, with the command line echoed so that a failure says what failed.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Cargo's target directory, as cargo itself reports it.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let out = Command::new(cargo_bin())
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .context("cargo metadata")?;
    let text = String::from_utf8(out.stdout)?;
    let key = "\"target_directory\":\"";
    let start = text
        .find(key)
        .context("cargo metadata: no target_directory")?
        + key.len();
    let end = text[start..]
        .find('"')
        .context("cargo metadata: bad target_directory")?;
    Ok(PathBuf::from(&text[start..start + end]))
}

pub fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// Runs `cargo ARGS` in the workspace root.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new(cargo_bin())
        .args(args)
        .current_dir(workspace_root()))
}

/// Runs a command, failing with its command line when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: $ {}", describe(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("start {}", describe(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Whether a command runs and exits 0 (output discarded).
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A command's stdout, if it ran and succeeded.
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds conntrace in release mode and returns the binary's path.
pub fn build_release_conntrace() -> anyhow::Result<PathBuf> {
    cargo(&[
        "build",
        "--release",
        "--package",
        "tracer-user",
        "--bin",
        "conntrace",
    ])?;
    Ok(target_dir()?.join("release/conntrace"))
}

/// The dated nightly that builds the eBPF programs: `channel` in
/// `tracer-ebpf/rust-toolchain.toml`, the one place that names it.
pub fn ebpf_toolchain() -> anyhow::Result<String> {
    let file = workspace_root().join("tracer-ebpf/rust-toolchain.toml");
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("{}: no `channel = \"...\"` line", file.display()))
}
