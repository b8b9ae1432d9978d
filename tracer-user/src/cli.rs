//! The command line. Parsing only: validation that needs the system lives in `config`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Why can't this process reach that backend? conntrace watches every TCP connect attempt
/// on this host from the kernel and tells you how each one ended (refused, timed out,
/// unreachable, abandoned, failed locally) and which process made it.
#[derive(Debug, Parser)]
#[command(name = "conntrace", version, max_term_width = 100)]
#[command(after_help = "\
Examples:
  conntrace trace                      failures and resets, as they happen
  conntrace trace --all -o json        every connect, as JSON lines
  conntrace trace --port 5432 --duration 60
  conntrace trace --dest 10.0.0.0/8 --comm java

Needs root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN on older kernels).
Exit statuses: 0 done, 2 bad arguments, 3 not privileged, 4 kernel lacks a feature,
5 writing output failed, 6 built without eBPF programs, 70 internal error.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More diagnostics on stderr (-v: debug, -vv: trace). Also RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print connection events as they happen: failed connects, resets and lost
    /// connections by default, every connect with --all.
    Trace(TraceArgs),
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Also report successful connects and normal closes.
    #[arg(long)]
    pub all: bool,

    /// Output format [default: text on a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,

    /// Stop after this many seconds (and print the final stats).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Seconds between stats records (events, lost events, in-flight connections); 0: only
    /// at exit.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub stats_interval: f64,

    /// Report each retransmitted segment on established connections, not only the count
    /// when the connection closes.
    #[arg(long)]
    pub retransmits: bool,

    /// Do not read process arguments from /proc (they may hold secrets).
    #[arg(long)]
    pub no_args: bool,

    #[command(flatten)]
    pub filters: FilterArgs,

    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// Which connections to watch. Filters apply in the kernel.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Only connections made by this process id.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Only connections made by tasks with this name (as in /proc/PID/comm, ≤ 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Only connections to this destination port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,

    /// Only connections to this network (address or CIDR; repeatable).
    #[arg(long, value_name = "CIDR")]
    pub dest: Vec<String>,

    /// Only sockets in this network namespace: an inode number, or a path such as
    /// /run/netns/NAME or /proc/PID/ns/net.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,
}

/// Kernel-side sizes; the defaults suit most hosts.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Tuning")]
pub struct TuningArgs {
    /// Ring-buffer size in bytes (a power of two, at least 4096).
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::defaults::RING_BUFFER_BYTES)]
    pub ring_buffer_size: u32,

    /// Connections followed at once (connecting and established).
    #[arg(long, value_name = "N", default_value_t = tracer_common::defaults::MAX_SOCKS)]
    pub max_connections: u32,

    /// Where tracefs is mounted [default: /sys/kernel/tracing, then /sys/kernel/debug/tracing].
    #[arg(long, value_name = "DIR")]
    pub tracefs: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (see docs/schema.md).
    Json,
    /// Aligned columns for people.
    Text,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("conntrace").chain(args.iter().copied()))
    }

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn trace_defaults() {
        let Command::Trace(t) = parse(&["trace"]).unwrap().command;
        assert!(!t.all);
        assert_eq!(t.output, None);
        assert_eq!(t.stats_interval, 10.0);
        assert_eq!(t.tuning.ring_buffer_size, 1 << 20);
    }

    #[test]
    fn trace_filters_parse() {
        let cli = parse(&[
            "trace",
            "--pid",
            "42",
            "--comm",
            "curl",
            "--port",
            "443",
            "--dest",
            "10.0.0.0/8",
            "--dest",
            "fd00::/8",
            "--netns",
            "4026531840",
            "-o",
            "json",
            "--all",
        ])
        .unwrap();
        let Command::Trace(t) = cli.command;
        assert_eq!(t.filters.pid, Some(42));
        assert_eq!(t.filters.comm.as_deref(), Some("curl"));
        assert_eq!(t.filters.port, Some(443));
        assert_eq!(t.filters.dest, ["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(t.output, Some(Format::Json));
        assert!(t.all);
    }

    #[test]
    fn bad_port_is_a_usage_error() {
        let err = parse(&["trace", "--port", "70000"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn a_subcommand_is_required() {
        assert!(parse(&[]).is_err());
    }
}
