//! `cargo xtask`: what cargo alone cannot do: install the eBPF toolchain and test
//! prerequisites, run conntrace, run every tier of tests, run the benchmarks.
mod bench;
mod image;
mod os;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "conntrace's build, test and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what is missing (nightly rust-src, bpf-linker on LLVM 22, nftables,
    /// iproute2, qemu + Debian's 6.1 kernel + virtme-ng). Idempotent; fast when all is there.
    Setup(setup::Args),
    /// Set up, build in release mode and run `conntrace ARGS...` (as root).
    Run {
        /// Arguments for conntrace, after `--` (default: `trace`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, then: fmt check, clippy on both sides, unit tests, privileged tests on this
    /// kernel, and the same privileged tests in a Debian 6.1 VM.
    Test(test::Args),
    /// Measure what conntrace costs (see docs/benchmarks.md).
    Bench(bench::Args),
    /// Build the container image the DaemonSet names (FROM scratch, static binary),
    /// offline and reproducibly, with podman; write it as an OCI archive.
    Image(image::Args),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup(args) => setup::run(&args),
        Task::Run { args } => run(args),
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
        Task::Image(args) => image::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(mut args: Vec<String>) -> anyhow::Result<()> {
    setup::run(&setup::Args::toolchain_only())?;
    let bin = util::build_release_conntrace()?;
    if args.is_empty() {
        args.push("trace".into());
    }
    let status = std::process::Command::new(&bin).args(&args).status()?;
    // conntrace's own exit status is the answer: pass it on unchanged.
    std::process::exit(status.code().unwrap_or(1));
}
