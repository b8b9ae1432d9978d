//! `cargo xtask test`: every tier, in order, stopping at the first failure.
use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

use crate::{
    setup,
    util::{self, cargo, cargo_bin, target_dir, workspace_root},
};

#[derive(clap::Args)]
pub struct Args {
    /// Skip the Debian 6.1 VM tier (it is never skipped in CI).
    #[arg(long)]
    pub no_vm: bool,
    /// Only the privileged tests whose names contain this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Only the Debian 6.1 VM tier (after building what it runs): for working on the
    /// kernel side. Refused in CI, which runs every tier.
    #[arg(long, conflicts_with = "no_vm")]
    pub vm_only: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    if (args.no_vm || args.vm_only) && in_ci {
        bail!("--no-vm and --vm-only are not allowed in CI: every tier must run there");
    }
    setup::run(&setup::Args {
        toolchain: false,
        no_vm: args.no_vm,
        bench: true,
    })?;
    if args.vm_only {
        let privileged = step("build privileged tests", build_privileged)?;
        return step("privileged tests in the Debian 6.1 VM", || {
            run_privileged_in_vm(&privileged, args.filter.as_deref())
        });
    }
    step("format", || cargo(&["fmt", "--all", "--check"]))?;
    step("clippy (userspace)", || {
        // Every userspace crate, the privileged tests included (not a default member).
        cargo(&[
            "clippy",
            "--workspace",
            "--exclude",
            "tracer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("clippy (eBPF)", clippy_ebpf)?;
    step("unit tests", || {
        cargo(&[
            "test",
            "--package",
            "tracer-common",
            "--package",
            "tracer-user",
            "--package",
            "xtask",
        ])
    })?;
    let privileged = step("build privileged tests", build_privileged)?;
    step("privileged tests on this kernel", || {
        run_privileged_here(&privileged, args.filter.as_deref())
    })?;
    step("benchmark harness (smoke run)", || {
        bench_smoke(&privileged.conntrace)
    })?;
    if !args.no_vm {
        step("privileged tests in the Debian 6.1 VM", || {
            run_privileged_in_vm(&privileged, args.filter.as_deref())
        })?;
    }
    eprintln!("xtask: all tiers passed");
    Ok(())
}

fn step<T>(name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    eprintln!("\nxtask: ==== {name} ====");
    let started = std::time::Instant::now();
    let out = f().with_context(|| format!("step `{name}`"))?;
    eprintln!(
        "xtask: ==== {name}: ok ({:.1}s) ====",
        started.elapsed().as_secs_f64()
    );
    Ok(out)
}

fn clippy_ebpf() -> anyhow::Result<()> {
    let toolchain = util::ebpf_toolchain()?;
    util::run(
        Command::new("rustup")
            .args([
                "run",
                &toolchain,
                "cargo",
                "clippy",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
            ])
            .args(["--", "-D", "warnings"])
            .current_dir(workspace_root().join("tracer-ebpf"))
            .env_remove("RUSTC")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}

/// The conntrace binary, the load generator and the privileged test executables.
struct Privileged {
    conntrace: PathBuf,
    loadgen: PathBuf,
    executables: Vec<PathBuf>,
}

fn build_privileged() -> anyhow::Result<Privileged> {
    cargo(&["build", "--package", "tracer-user", "--bin", "conntrace"])?;
    // The output tests' storms come from the benchmark's load generator.
    cargo(&["build", "--package", "xtask", "--bin", "loadgen"])?;
    let out = Command::new(cargo_bin())
        .args([
            "test",
            "--package",
            "tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(workspace_root())
        .output()
        .context("cargo test --no-run")?;
    if !out.status.success() {
        bail!(
            "building the privileged tests failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let executables = integration_test_executables(&String::from_utf8_lossy(&out.stdout));
    if executables.is_empty() {
        bail!("no privileged test executables were built");
    }
    Ok(Privileged {
        conntrace: target_dir()?.join("debug/conntrace"),
        loadgen: target_dir()?.join("debug/loadgen"),
        executables,
    })
}

/// The executables of the integration tests (`tests/tests/*.rs`) in cargo's JSON messages:
/// not the unit-test builds of the harness library or of `ct-peer`, and not `ct-peer`.
fn integration_test_executables(cargo_json: &str) -> Vec<PathBuf> {
    cargo_json
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"))
        })
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect()
}

/// Runs `cargo xtask bench --smoke` (a tiny round of each section) with the debug build,
/// and checks that it wrote its tables. Its figures are never checked: they depend on the
/// machine. The same binary stands in for `--conntrace-before`, so that the before/after
/// columns are shown to work too.
fn bench_smoke(conntrace: &std::path::Path) -> anyhow::Result<()> {
    require_root()?;
    let dir = crate::os::PrivateDir::new("conntrace-bench-smoke").context("scratch directory")?;
    let out = dir.path().join("benchmarks.md");
    crate::bench::run(&crate::bench::Args {
        smoke: true,
        conntrace: Some(conntrace.to_path_buf()),
        conntrace_before: Some(conntrace.to_path_buf()),
        loadgen: Some(target_dir()?.join("debug/loadgen")),
        out: Some(out.clone()),
        ..crate::bench::Args::default()
    })?;
    let report = std::fs::read_to_string(&out).context("read the smoke report")?;
    for heading in [
        "### Summary: before and after",
        "### Overhead",
        "### The syscall tax",
        "### A web server",
        "### Hooks on traffic that is not a connect",
        "**Which programs ran per request",
        "**Which programs ran for these packets",
        "### Timeouts",
        "### Cardinality",
        "### Smallest ring buffer without loss",
        "### Wake-up batching and in-kernel cost",
        "### Targets",
        "| none |",
        "| conntrace → file |",
        "| conntrace before → file |",
        "| conntrace → file (--connect-hook syscalls) |",
        "| getppid() loop: speed vs none |",
        "| nginx + ab, a connect per request: speed vs none |",
    ] {
        if !report.contains(heading) {
            bail!("the benchmark report lacks {heading:?}:\n{report}");
        }
    }
    Ok(())
}

fn require_root() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        bail!("the privileged tests load eBPF programs and create network namespaces: run as root");
    }
    Ok(())
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn run_privileged_here(p: &Privileged, filter: Option<&str>) -> anyhow::Result<()> {
    require_root()?;
    for exe in &p.executables {
        let mut cmd = Command::new(exe);
        cmd.env("CONNTRACE_BIN", &p.conntrace)
            .env("LOADGEN_BIN", &p.loadgen)
            .args(filter);
        util::run(&mut cmd)?;
    }
    Ok(())
}

/// Whether `exe` is the test executable built from `tests/<name>.rs`.
fn is_test_binary(exe: &std::path::Path, name: &str) -> bool {
    exe.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.strip_prefix(name)
            .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// Boots Debian's 6.1 kernel with this machine's filesystem (virtme-ng, software
/// emulation) and runs the same test executables there, requiring the fexit or kretprobe
/// path to be the one chosen.
fn run_privileged_in_vm(p: &Privileged, filter: Option<&str>) -> anyhow::Result<()> {
    require_root()?;
    let kernel =
        setup::debian_61_kernel().context("no Debian 6.1 kernel in /boot (cargo xtask setup)")?;
    let mut script =
        String::from("set -e; mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true; ");
    script += "export CONNTRACE_EXPECT_HOOK=fexit,kretprobe CONNTRACE_TEST_START_TIMEOUT_S=180; ";
    script += &format!(
        "export CONNTRACE_BIN={} LOADGEN_BIN={}; ",
        p.conntrace.display(),
        p.loadgen.display()
    );
    // Each test executable gets a time limit, so that a hang fails with its output
    // rather than running into CI's own limit. One test at a time: under emulation each
    // conntrace start takes ~20 s of the VM's two CPUs, and parallel tests there once
    // stalled for many minutes.
    let limit = format!("timeout -k 10 {VM_EXECUTABLE_LIMIT_S}");
    let filter = filter.unwrap_or("");
    for exe in p
        .executables
        .iter()
        .filter(|e| VM_SUITES.iter().any(|s| is_test_binary(e, s)))
    {
        script += &format!("{limit} {} --test-threads=1 {filter}; ", exe.display());
    }
    // The other connect hooks too, on the scenarios where connect()'s return decides the
    // outcome: kretprobe, and the evidence path of kernels without either (fib lookups
    // and the state machine), whose tracepoints' shapes differ on 6.1.
    // A filter replaces their lists of tests: libtest ORs its filters, and whoever
    // asked for one test wants that one under each hook, not the whole list.
    for (hook, suite, tests) in VM_HOOK_PASSES {
        let tests = if filter.is_empty() { tests } else { filter };
        if let Some(exe) = p.executables.iter().find(|e| is_test_binary(e, suite)) {
            script += &format!(
                "CONNTRACE_TEST_HOOK={hook} CONNTRACE_EXPECT_HOOK={hook} {limit} {} \
                 --test-threads=1 {tests}; ",
                exe.display()
            );
        }
    }
    script += &format!("echo {VM_PASSED}\n");
    // The script goes to the guest as a file: `vng --exec` passes its command on the
    // kernel's command line, which x86 truncates at 2048 bytes (the guest then waited
    // forever, without a word).
    let dir = crate::os::PrivateDir::new("conntrace-vm").context("scratch directory")?;
    let script_path = dir.path().join("tests.sh");
    std::fs::write(&script_path, script).context("write the VM's script")?;
    // The whole tier is bounded too (coreutils timeout), well inside CI's 90 minutes.
    let mut vng = Command::new("timeout")
        .args(["-k", "30", &VM_TOTAL_LIMIT_S.to_string(), "vng"])
        .arg("--run")
        .arg(&kernel)
        .args([
            "--disable-kvm",
            "--memory",
            "2G",
            "--cpus",
            "2",
            "--rwdir",
            "/tmp",
            "--exec",
        ])
        .arg(format!("sh {}", script_path.display()))
        .current_dir(workspace_root())
        // Nothing to read from: a terminal or a pipe left open here has stalled the VM's
        // boot (qemu's stdio chardev).
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Piped too: qemu opens its stderr again by path (/proc/self/fd/2) with O_TRUNC,
        // which empties a log file that stderr was redirected to.
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("start vng")?;
    let stderr = vng.stderr.take().map(|err| {
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("{line}");
            }
        })
    });
    // Streamed as it comes, so that CI's log shows how far the VM got.
    let mut passed = false;
    if let Some(stdout) = vng.stdout.take() {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            passed |= line.contains(VM_PASSED);
            eprintln!("{line}");
        }
    }
    let status = vng.wait().context("wait for vng")?;
    if let Some(thread) = stderr {
        let _ = thread.join();
    }
    // vng's own exit status has not always carried the command's, so the marker decides.
    if !status.success() || !passed {
        bail!("privileged tests failed in the 6.1 VM ({status})");
    }
    Ok(())
}

/// The suites whose outcome depends on the kernel, run again on 6.1. The others (process
/// details, Kubernetes identity, terminal escaping) check userspace's handling of the same
/// records, which the kernel does not change; under software emulation each test costs
/// tens of seconds, so they run on this kernel only.
const VM_SUITES: [&str; 5] = [
    "connect_outcomes",
    "real_clients",
    "causes",
    "diagnose",
    "cli",
];

/// (hook, suite, test-name filters): the scenarios rerun with another connect hook.
const VM_HOOK_PASSES: [(&str, &str, &str); 3] = [
    (
        "kretprobe",
        "connect_outcomes",
        "refused abandoned no_route timeout_counts",
    ),
    ("tracepoint", "connect_outcomes", "no_route refused"),
    ("tracepoint", "real_clients", "alternating icmp dropped"),
];

/// Printed by the VM's script once every test executable there has passed.
const VM_PASSED: &str = "CONNTRACE_VM_TESTS_PASSED";

/// Seconds one test executable may run in the VM (software emulation is slow: the whole
/// tier takes about 20 minutes, the tests one at a time).
const VM_EXECUTABLE_LIMIT_S: u32 = 1200;

/// Seconds the whole VM tier may take.
const VM_TOTAL_LIMIT_S: u32 = 2700;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_only_integration_test_executables() {
        let messages = [
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"ct-peer","test":true},"profile":{"test":false},"executable":"/t/debug/ct-peer"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"ct-peer","test":true},"profile":{"test":true},"executable":"/t/debug/deps/ct_peer-1"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"harness","test":true},"profile":{"test":true},"executable":"/t/debug/deps/harness-2"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"cli","test":true},"profile":{"test":true},"executable":"/t/debug/deps/cli-3"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"diagnose","test":true},"profile":{"test":true},"executable":"/t/debug/deps/diagnose-4"}"#,
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        assert_eq!(
            integration_test_executables(&messages),
            [
                PathBuf::from("/t/debug/deps/cli-3"),
                PathBuf::from("/t/debug/deps/diagnose-4")
            ]
        );
    }

    #[test]
    fn recognises_a_test_binary_by_its_name() {
        assert!(is_test_binary(
            std::path::Path::new("/t/deps/connect_outcomes-50d5"),
            "connect_outcomes"
        ));
        assert!(!is_test_binary(
            std::path::Path::new("/t/deps/connect_outcomes_x-50d5"),
            "connect_outcomes"
        ));
    }
}
