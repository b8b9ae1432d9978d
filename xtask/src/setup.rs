//! `cargo xtask setup`: checks each prerequisite and installs what is missing, on Debian
//! and Ubuntu; elsewhere prints what to install. Idempotent: with everything present it
//! only checks (well under a second).
//!
//! The eBPF compiler is the dated nightly that `tracer-ebpf/rust-toolchain.toml` names, and
//! bpf-linker must link the same LLVM major as that nightly: a mismatch fails the eBPF
//! build with `ERROR llvm: Invalid record`, so it is checked here (with `ldd`), and
//! bpf-linker is rebuilt against Debian's matching LLVM when it differs.
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::util::{self, output, succeeds};

#[derive(clap::Args, Clone, Copy)]
pub struct Args {
    /// Only what building conntrace needs (no test or VM prerequisites).
    #[arg(long)]
    pub toolchain: bool,
    /// Skip the VM tier's prerequisites (qemu, Debian's 6.1 kernel, virtme-ng).
    #[arg(long)]
    pub no_vm: bool,
    /// Also what the benchmarks need (bpftrace, nginx, ab, nftables).
    #[arg(long)]
    pub bench: bool,
}

impl Args {
    pub fn toolchain_only() -> Args {
        Args {
            toolchain: true,
            no_vm: true,
            bench: false,
        }
    }
}

/// bpf-linker's version, pinned like everything else that moves.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// One prerequisite: how to tell it is there and how to get it.
struct Prerequisite {
    name: String,
    present: Box<dyn Fn() -> bool>,
    /// Debian packages to install, if any.
    packages: Vec<String>,
    /// Steps after the packages (cargo install, rustup, pip).
    install: Option<Box<dyn Fn() -> anyhow::Result<()>>>,
    /// What to do by hand on other systems.
    manual: String,
}

impl Prerequisite {
    /// A tool that one Debian package provides, present when `program ARGS` succeeds.
    fn package(
        name: &str,
        program: &'static str,
        args: &'static [&'static str],
        pkg: &str,
    ) -> Self {
        Prerequisite {
            name: name.into(),
            present: Box::new(move || succeeds(program, args)),
            packages: vec![pkg.into()],
            install: None,
            manual: pkg.into(),
        }
    }
}

/// The eBPF toolchain: `channel` from `tracer-ebpf/rust-toolchain.toml`.
fn toolchain() -> anyhow::Result<Vec<Prerequisite>> {
    let channel = util::ebpf_toolchain()?;
    let install_channel = channel.clone();
    let present_channel = channel.clone();
    let mut wanted = vec![Prerequisite {
        name: format!("eBPF toolchain {channel} (rust-src, clippy)"),
        present: Box::new(move || ebpf_toolchain_present(&present_channel)),
        packages: Vec::new(),
        install: Some(Box::new(move || {
            util::run(Command::new("rustup").args([
                "toolchain",
                "install",
                &install_channel,
                "--profile",
                "minimal",
                "--component",
                "rust-src,clippy,rustfmt",
            ]))
        })),
        manual: format!("rustup toolchain install {channel} --component rust-src,clippy"),
    }];
    // The LLVM bpf-linker must link is the toolchain's; before the toolchain is installed it
    // is not known yet, so this check is added on the second pass (see `run`).
    if let Some(llvm) = toolchain_llvm_major(&channel) {
        wanted.push(bpf_linker(&channel, llvm));
    }
    Ok(wanted)
}

fn bpf_linker(channel: &str, llvm: u32) -> Prerequisite {
    let feature = format!("llvm-{llvm}");
    let prefix = format!("/usr/lib/llvm-{llvm}");
    Prerequisite {
        name: format!("bpf-linker {BPF_LINKER_VERSION} on LLVM {llvm} (the LLVM of {channel})"),
        present: Box::new(move || bpf_linker_llvm_major() == Some(llvm)),
        packages: vec![
            format!("llvm-{llvm}-dev"),
            format!("libpolly-{llvm}-dev"),
            "libzstd-dev".into(),
            "zlib1g-dev".into(),
        ],
        install: Some(Box::new(move || {
            util::run(
                Command::new(util::cargo_bin())
                    .args([
                        "install",
                        "--force",
                        "--locked",
                        "bpf-linker",
                        "--version",
                        BPF_LINKER_VERSION,
                        "--no-default-features",
                        "--features",
                        &feature,
                    ])
                    .env("LLVM_PREFIX", &prefix),
            )
        })),
        manual: format!(
            "LLVM {llvm} development files, then LLVM_PREFIX=/usr/lib/llvm-{llvm} cargo install \
             bpf-linker --version {BPF_LINKER_VERSION} --no-default-features --features llvm-{llvm}"
        ),
    }
}

fn test_tools() -> Vec<Prerequisite> {
    vec![
        Prerequisite::package("iproute2 (ip)", "ip", &["-V"], "iproute2"),
        Prerequisite::package("nftables (nft)", "nft", &["--version"], "nftables"),
        // Real clients and servers the scenarios run besides ct-peer.
        Prerequisite::package("curl", "curl", &["--version"], "curl"),
        Prerequisite::package("perl", "perl", &["-MIO::Socket::IP", "-e", "1"], "perl"),
        Prerequisite::package("python3", "python3", &["--version"], "python3"),
        Prerequisite::package("nginx", "nginx", &["-v"], "nginx-light"),
        // Real containers for the identity tests: runc runs a busybox-static rootfs.
        Prerequisite::package("runc", "runc", &["--version"], "runc"),
        busybox_static(),
        // Log pipelines: --output-file rotated by logrotate; a wall clock that jumps.
        Prerequisite::package("logrotate", "logrotate", &["--version"], "logrotate"),
        Prerequisite::package("rsyslog", "rsyslogd", &["-v"], "rsyslog"),
        Prerequisite::package("faketime", "faketime", &["--version"], "faketime"),
        // A real Prometheus scrapes conntrace; promtool checks the rules and the exposition.
        Prerequisite::package(
            "prometheus and promtool",
            "promtool",
            &["--version"],
            "prometheus",
        ),
        // script(1) gives conntrace a terminal (log colours).
        Prerequisite::package(
            "script (util-linux)",
            "script",
            &["--version"],
            "util-linux",
        ),
        // The deployment checks: the image build, the unit's analysis, the manifest's
        // validators.
        Prerequisite::package("podman", "podman", &["--version"], "podman"),
        Prerequisite::package(
            "systemd-analyze",
            "systemd-analyze",
            &["--version"],
            "systemd",
        ),
        pip_tool("checkov", CHECKOV_VERSION),
        pip_tool("kubernetes-validate", KUBERNETES_VALIDATE_VERSION),
    ]
}

/// The manifest's validators, pinned: a new release brings new checks (checkov) or
/// schemas (kubernetes-validate), which should arrive as a change of this file.
const CHECKOV_VERSION: &str = "3.3.30";
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// A command-line tool from PyPI, present when `NAME --version` names `version`.
fn pip_tool(name: &'static str, version: &'static str) -> Prerequisite {
    Prerequisite {
        name: format!("{name} {version} (PyPI)"),
        present: Box::new(move || {
            output(name, &["--version"]).is_some_and(|v| v.split_whitespace().any(|w| w == version))
        }),
        packages: Vec::new(),
        install: Some(Box::new(move || {
            util::run(Command::new("pip").args([
                "install",
                "--quiet",
                &format!("{name}=={version}"),
            ]))
        })),
        manual: format!("pip install {name}=={version}"),
    }
}

/// busybox-static: the identity tests' container rootfs, and virtme-ng's init.
fn busybox_static() -> Prerequisite {
    Prerequisite::package(
        "busybox-static",
        "dpkg",
        &["-s", "busybox-static"],
        "busybox-static",
    )
}

fn vm_tools() -> Vec<Prerequisite> {
    vec![
        Prerequisite::package(
            "qemu-system-x86_64",
            "qemu-system-x86_64",
            &["--version"],
            "qemu-system-x86",
        ),
        Prerequisite {
            name: "Debian 6.1 kernel image".into(),
            present: Box::new(|| debian_61_kernel().is_some()),
            packages: vec!["linux-image-amd64".into()],
            install: None,
            manual: "Debian 12's linux-image-amd64 (6.1)".into(),
        },
        busybox_static(),
        Prerequisite {
            name: "virtme-ng (vng)".into(),
            present: Box::new(|| succeeds("vng", &["--version"])),
            packages: Vec::new(),
            install: Some(Box::new(|| {
                util::run(Command::new("pip").args(["install", "--quiet", "virtme-ng==1.42"]))
            })),
            manual: "pip install virtme-ng".into(),
        },
    ]
}

fn bench_tools() -> Vec<Prerequisite> {
    vec![
        Prerequisite::package("bpftrace", "bpftrace", &["--version"], "bpftrace"),
        Prerequisite::package("nginx", "nginx", &["-v"], "nginx-light"),
        Prerequisite::package("ab (apache2-utils)", "ab", &["-V"], "apache2-utils"),
        // The packet-drop load drops its UDP with an nftables rule.
        Prerequisite::package("nftables (nft)", "nft", &["--version"], "nftables"),
    ]
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Twice at most: the bpf-linker check needs the toolchain's LLVM version, known only
    // once the toolchain is installed.
    for _ in 0..2 {
        if install_missing(&wanted(args)?)? {
            return Ok(());
        }
    }
    let left: Vec<String> = wanted(args)?
        .into_iter()
        .filter(|p| !(p.present)())
        .map(|p| p.name)
        .collect();
    if left.is_empty() {
        return Ok(());
    }
    bail!("still missing after installing: {}", left.join(", "))
}

fn wanted(args: &Args) -> anyhow::Result<Vec<Prerequisite>> {
    let mut wanted = toolchain()?;
    if !args.toolchain {
        wanted.extend(test_tools());
        if !args.no_vm {
            wanted.extend(vm_tools());
        }
    }
    if args.bench {
        wanted.extend(bench_tools());
    }
    // One check per name (nginx is wanted by tests and benchmarks alike).
    let mut seen = std::collections::HashSet::new();
    wanted.retain(|p| seen.insert(p.name.clone()));
    Ok(wanted)
}

/// Installs what is missing; true when everything wanted was already there.
fn install_missing(wanted: &[Prerequisite]) -> anyhow::Result<bool> {
    let missing: Vec<&Prerequisite> = wanted.iter().filter(|p| !(p.present)()).collect();
    for p in wanted {
        if !missing.iter().any(|m| m.name == p.name) {
            eprintln!("setup: ok: {}", p.name);
        }
    }
    if missing.is_empty() {
        return Ok(true);
    }
    if !is_debian_like() {
        eprintln!("setup: this is not Debian or Ubuntu; install these yourself:");
        for p in &missing {
            eprintln!("  - {}: {}", p.name, p.manual);
        }
        bail!("{} prerequisite(s) missing", missing.len());
    }
    let packages: Vec<&str> = missing
        .iter()
        .flat_map(|p| p.packages.iter().map(String::as_str))
        .collect();
    if !packages.is_empty() {
        apt_install(&packages)?;
    }
    for p in &missing {
        if let Some(install) = &p.install
            && !(p.present)()
        {
            eprintln!("setup: installing {}", p.name);
            install().with_context(|| format!("install {}", p.name))?;
        }
        if !(p.present)() {
            bail!(
                "{} is still missing after installing it ({})",
                p.name,
                p.manual
            );
        }
        eprintln!("setup: installed: {}", p.name);
    }
    Ok(false)
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    eprintln!("setup: apt-get install {}", packages.join(" "));
    util::run(
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn is_debian_like() -> bool {
    std::fs::read_to_string("/etc/os-release").is_ok_and(|s| {
        s.lines().any(|l| {
            (l.starts_with("ID=") || l.starts_with("ID_LIKE="))
                && (l.contains("debian") || l.contains("ubuntu"))
        })
    })
}

/// The toolchain is installed with rust-src and clippy.
fn ebpf_toolchain_present(channel: &str) -> bool {
    let rust_src =
        output("rustup", &["run", channel, "rustc", "--print", "sysroot"]).is_some_and(|root| {
            Path::new(&root)
                .join("lib/rustlib/src/rust/library/core/Cargo.toml")
                .exists()
        });
    rust_src && succeeds("rustup", &["run", channel, "cargo-clippy", "--version"])
}

/// The LLVM major version a toolchain is built on (`rustc -vV`).
fn toolchain_llvm_major(channel: &str) -> Option<u32> {
    let text = output("rustup", &["run", channel, "rustc", "-vV"])?;
    llvm_major_of_rustc(&text)
}

fn llvm_major_of_rustc(rustc_vv: &str) -> Option<u32> {
    rustc_vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
}

/// The LLVM major version the installed bpf-linker links, from `ldd` (bpf-linker is built
/// against Debian's shared libLLVM); `None` when it is missing or links no libLLVM.
fn bpf_linker_llvm_major() -> Option<u32> {
    let path = output("sh", &["-c", "command -v bpf-linker"])?;
    llvm_major_of_ldd(&output("ldd", &[&path])?)
}

fn llvm_major_of_ldd(ldd: &str) -> Option<u32> {
    ldd.lines().find_map(|l| {
        let name = l.split_whitespace().next()?;
        // libLLVM.so.22.1 (Debian), libLLVM-22.so (upstream builds)
        let rest = name
            .strip_prefix("libLLVM.so.")
            .or_else(|| name.strip_prefix("libLLVM-"))?;
        rest.split(['.', '-']).next()?.parse().ok()
    })
}

/// The newest Debian 6.1 kernel image in /boot.
pub fn debian_61_kernel() -> Option<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir("/boot")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-6.1.") && n.ends_with("-amd64"))
        })
        .collect();
    found.sort();
    found.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_llvm_major_of_a_toolchain() {
        let vv =
            "rustc 1.99.0-nightly (ad3d0bc14 2026-07-31)\nbinary: rustc\nLLVM version: 22.1.8\n";
        assert_eq!(llvm_major_of_rustc(vv), Some(22));
        assert_eq!(llvm_major_of_rustc("rustc 1.0\n"), None);
    }

    #[test]
    fn reads_the_llvm_major_bpf_linker_links() {
        let debian = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007f5a)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f5b)\n";
        assert_eq!(llvm_major_of_ldd(debian), Some(22));
        let upstream = "\tlibLLVM-21.so => /opt/llvm/lib/libLLVM-21.so (0x1)\n";
        assert_eq!(llvm_major_of_ldd(upstream), Some(21));
        assert_eq!(llvm_major_of_ldd("\tstatically linked\n"), None);
    }
}
