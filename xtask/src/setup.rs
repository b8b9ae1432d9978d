//! `cargo xtask setup`: checks each prerequisite and installs what is missing, on Debian
//! and Ubuntu; elsewhere prints what to install. Idempotent: with everything present it
//! only checks (well under a second).
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
    /// Also what the benchmarks need (bpftrace).
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

/// One prerequisite: how to tell it is there and how to get it.
struct Prerequisite {
    name: &'static str,
    present: fn() -> bool,
    /// Debian packages to install, if any.
    packages: &'static [&'static str],
    /// Steps after the packages (cargo install, rustup, pip).
    install: Option<fn() -> anyhow::Result<()>>,
    /// What to do by hand on other systems.
    manual: &'static str,
}

const LLVM_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

fn toolchain() -> Vec<Prerequisite> {
    vec![
        Prerequisite {
            name: "nightly toolchain with rust-src",
            present: nightly_rust_src_present,
            packages: &[],
            install: Some(|| {
                util::run(Command::new("rustup").args([
                    "toolchain",
                    "install",
                    "nightly",
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]))
            }),
            manual: "rustup toolchain install nightly --component rust-src",
        },
        Prerequisite {
            name: "bpf-linker (LLVM 22)",
            present: || succeeds("bpf-linker", &["--version"]),
            packages: LLVM_PACKAGES,
            install: Some(|| {
                util::run(
                    Command::new(crate::util::cargo_bin())
                        .args([
                            "install",
                            "bpf-linker",
                            "--no-default-features",
                            "--features",
                            "llvm-22",
                        ])
                        .env("LLVM_PREFIX", "/usr/lib/llvm-22"),
                )
            }),
            manual: "LLVM 22 development files, then \
                     LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --no-default-features --features llvm-22",
        },
    ]
}

fn test_tools() -> Vec<Prerequisite> {
    vec![
        Prerequisite {
            name: "iproute2 (ip)",
            present: || succeeds("ip", &["-V"]),
            packages: &["iproute2"],
            install: None,
            manual: "iproute2",
        },
        Prerequisite {
            name: "nftables (nft)",
            present: || succeeds("nft", &["--version"]),
            packages: &["nftables"],
            install: None,
            manual: "nftables",
        },
    ]
}

fn vm_tools() -> Vec<Prerequisite> {
    vec![
        Prerequisite {
            name: "qemu-system-x86_64",
            present: || succeeds("qemu-system-x86_64", &["--version"]),
            packages: &["qemu-system-x86"],
            install: None,
            manual: "qemu-system-x86",
        },
        Prerequisite {
            name: "Debian 6.1 kernel image",
            present: || debian_61_kernel().is_some(),
            packages: &["linux-image-amd64"],
            install: None,
            manual: "Debian 12's linux-image-amd64 (6.1)",
        },
        Prerequisite {
            name: "busybox-static (virtme-ng's init)",
            present: || succeeds("dpkg", &["-s", "busybox-static"]),
            packages: &["busybox-static"],
            install: None,
            manual: "a statically linked busybox",
        },
        Prerequisite {
            name: "virtme-ng (vng)",
            present: || succeeds("vng", &["--version"]),
            packages: &[],
            install: Some(|| {
                util::run(Command::new("pip").args(["install", "--quiet", "virtme-ng"]))
            }),
            manual: "pip install virtme-ng",
        },
    ]
}

fn bench_tools() -> Vec<Prerequisite> {
    vec![Prerequisite {
        name: "bpftrace",
        present: || succeeds("bpftrace", &["--version"]),
        packages: &["bpftrace"],
        install: None,
        manual: "bpftrace",
    }]
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut wanted = toolchain();
    if !args.toolchain {
        wanted.extend(test_tools());
        if !args.no_vm {
            wanted.extend(vm_tools());
        }
    }
    if args.bench {
        wanted.extend(bench_tools());
    }
    let missing: Vec<&Prerequisite> = wanted.iter().filter(|p| !(p.present)()).collect();
    for p in wanted
        .iter()
        .filter(|p| !missing.iter().any(|m| m.name == p.name))
    {
        eprintln!("setup: ok: {}", p.name);
    }
    if missing.is_empty() {
        return Ok(());
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
        .flat_map(|p| p.packages.iter().copied())
        .collect();
    if !packages.is_empty() {
        apt_install(&packages)?;
    }
    for p in &missing {
        if let Some(install) = p.install
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
    Ok(())
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

fn nightly_rust_src_present() -> bool {
    output("rustc", &["+nightly", "--print", "sysroot"]).is_some_and(|root| {
        Path::new(&root)
            .join("lib/rustlib/src/rust/library/core/Cargo.toml")
            .exists()
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
