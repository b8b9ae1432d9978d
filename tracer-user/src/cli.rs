//! The command line. Parsing only: validation that needs the system lives in `config`.
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    MAX_CONNECTIONS, MAX_ESTABLISHED, MAX_KEYS, MAX_PID, MAX_RING_BUFFER_BYTES, MAX_RINGS,
    MIN_RING_BUFFER_BYTES,
};

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
  conntrace trace --summary-interval 10 -o json
  conntrace top --port 5432
  conntrace diagnose --duration 60        exit status 1 when failures were found

Needs root, or CAP_BPF + CAP_PERFMON (CAP_SYS_ADMIN on older kernels).
Exit statuses: 0 done, 2 bad arguments, 3 not privileged, 4 kernel lacks a feature,
5 writing output failed, 6 built without eBPF programs, 70 internal error;
`diagnose` exits 1 when it found failures, `health` when the heartbeat is stale.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More diagnostics on stderr (-v: debug, -vv: trace). Also RUST_LOG.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start-up; boxing would only add noise"
)]
pub enum Command {
    /// Print connection events as they happen: failed connects, resets and lost
    /// connections by default, every connect with --all.
    Trace(TraceArgs),
    /// A live full-screen table of connect outcomes per (process, destination), with the
    /// probable cause of each failure.
    Top(TopArgs),
    /// Watch for a while, then explain every failing (process, destination): the layer at
    /// fault, the probable cause, the evidence, what to check next.
    Diagnose(DiagnoseArgs),
    /// Exit 0 when `trace --heartbeat FILE` wrote FILE recently, else 1 with the reason:
    /// a liveness probe for images with no shell.
    Health(HealthArgs),
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The file that `trace --heartbeat` writes.
    #[arg(long, value_name = "FILE")]
    pub heartbeat: PathBuf,

    /// The oldest heartbeat that counts as alive, in seconds (10 to 86400; it is written
    /// every 5).
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = within(10u64, 86_400))]
    pub max_age: u64,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub aggregate: AggregateArgs,

    #[command(flatten)]
    pub filters: FilterArgs,

    #[command(flatten)]
    pub tuning: TuningArgs,
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    /// Seconds to watch before reporting (SIGINT reports early); 0.001 to 1e9.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub duration: f64,

    /// Print the report as one JSON document (see docs/schema.md).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub aggregate: AggregateArgs,

    #[command(flatten)]
    pub filters: FilterArgs,

    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// The per-(process, destination) table.
#[derive(Debug, Args, Clone)]
pub struct AggregateArgs {
    /// (process, destination) pairs kept apart (1 to 1000000); beyond them, new
    /// destinations fold into one `other` entry per process.
    #[arg(long, value_name = "N", default_value_t = crate::aggregate::DEFAULT_MAX_KEYS,
          value_parser = within(1, MAX_KEYS))]
    pub max_keys: usize,
}

#[derive(Debug, Args)]
pub struct TraceArgs {
    /// Also report successful connects and normal closes.
    #[arg(long)]
    pub all: bool,

    /// Write no connection records (stats, summaries and verdicts still go out): for a
    /// stream of verdicts alone, or metrics alone.
    #[arg(long, conflicts_with = "all")]
    pub no_events: bool,

    /// Output format [default: text on a terminal, json otherwise].
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,

    /// Stop after this many seconds (and print the final stats); 0.001 to 1e9.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Seconds between stats records (events, lost events, in-flight connections), 0.1 to
    /// 1e9; 0: only at exit.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub stats_interval: f64,

    /// Report each retransmitted segment on established connections, not only the count
    /// when the connection closes.
    #[arg(long)]
    pub retransmits: bool,

    /// Also follow the connections that listeners on this host accept: their resets and
    /// losses, attributed to the listening process, with source = the client.
    #[arg(long)]
    pub accepted: bool,

    /// Add each process's arguments to its records (from /proc/PID/cmdline, with
    /// passwords, tokens, keys and URL credentials redacted, at most 4 KiB per process).
    /// Off by default: arguments often carry secrets.
    #[arg(long)]
    pub args: bool,

    /// The default; kept so that older command lines still work.
    #[arg(long, hide = true, conflicts_with = "args")]
    pub no_args: bool,

    /// Also write a summary per (process, destination) every SECS seconds (those that
    /// changed) and of every one at exit; 0.1 to 1e9.
    #[arg(long, value_name = "SECS")]
    pub summary_interval: Option<f64>,

    /// Rewrite FILE every 5 seconds while the collector runs, for a liveness probe
    /// (`conntrace health --heartbeat FILE`).
    #[arg(long, value_name = "FILE")]
    pub heartbeat: Option<PathBuf>,

    #[command(flatten)]
    pub aggregate: AggregateArgs,

    #[command(flatten)]
    pub destination: OutputArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub verdicts: VerdictArgs,

    #[command(flatten)]
    pub filters: FilterArgs,

    #[command(flatten)]
    pub tuning: TuningArgs,
}

/// Where the records go, and what a slow reader costs.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// Append the records to this file instead of stdout (JSON by default). SIGHUP
    /// reopens it, for logrotate; without this option SIGHUP ends the run like SIGTERM.
    #[arg(long, value_name = "PATH")]
    pub output_file: Option<PathBuf>,

    /// Rotate --output-file when it reaches this size (bytes, or with a K, M or G suffix):
    /// PATH becomes PATH.1, PATH.1 becomes PATH.2, and so on.
    #[arg(long, value_name = "SIZE", requires = "output_file")]
    pub output_file_max_size: Option<String>,

    /// Rotated files kept with --output-file-max-size.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 5,
        requires = "output_file_max_size"
    )]
    pub output_file_keep: u32,

    /// Send the records to a syslog daemon instead of stdout, one RFC 5424 message each
    /// (the JSON record as its MSG): udp:HOST:PORT, or tcp:HOST:PORT (octet-counted).
    #[arg(long, value_name = "ADDR", conflicts_with = "output_file")]
    pub syslog: Option<String>,

    /// Records held for a reader that does not keep up (bytes, or with a K, M or G
    /// suffix); past it, connection records are dropped and counted
    /// (`conntrace.output_dropped` in the stats records) instead of slowing conntrace.
    #[arg(long, value_name = "SIZE", default_value = "8M")]
    pub output_buffer: String,
}

/// Prometheus metrics.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Metrics")]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://ADDR/metrics: a port alone (9464) listens on
    /// loopback; give an address (0.0.0.0:9464) to listen elsewhere. Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Labels of the per-destination metrics, from workload, container, destination,
    /// port (or none). The pid is never a label.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "workload,destination,port",
        requires = "metrics"
    )]
    pub metrics_labels: String,

    /// Label sets kept apart; past them a new one folds into its workload's `other`
    /// series.
    #[arg(long, value_name = "N", default_value_t = crate::sinks::metrics::DEFAULT_MAX_SERIES, requires = "metrics")]
    pub metrics_max_series: usize,
}

/// Continuous verdicts and the recovery hook.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Verdicts")]
pub struct VerdictArgs {
    /// Run the diagnosis rules continuously and write a verdict record (`event.kind:
    /// "alert"`) when a (process, destination) starts failing, when its probable cause
    /// changes, and when it recovers.
    #[arg(long)]
    pub verdicts: bool,

    /// Seconds between evaluations of the rules.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub verdict_interval: f64,

    /// Seconds of records the rules look at (a sliding window).
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub verdict_window: f64,

    /// Least seconds between two alarms (failing, or a changed cause) for one (process,
    /// destination): a flapping destination alarms once per cooldown. Recoveries are never
    /// held back.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub verdict_cooldown: f64,

    /// Run CMD for each verdict (implies --verdicts): the verdict record on its stdin,
    /// CONNTRACE_VERDICT_STATE, CONNTRACE_CAUSE, CONNTRACE_WORKLOAD,
    /// CONNTRACE_DESTINATION_IP, CONNTRACE_DESTINATION_PORT and more in its environment.
    /// CMD is split into words like a shell would, but run without one.
    #[arg(long, value_name = "CMD")]
    pub on_verdict: Option<String>,

    /// Run --on-verdict's CMD with `/bin/sh -c` (pipes, redirections, variables).
    #[arg(long, requires = "on_verdict")]
    pub on_verdict_shell: bool,

    /// Seconds a run of --on-verdict may take before its process group is killed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    pub on_verdict_timeout: f64,

    /// Runs of --on-verdict at once; more wait (64 at most, then they are skipped).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub on_verdict_jobs: usize,
}

/// Which connections to watch. Filters apply in the kernel, but for --pod, --namespace and
/// --container.
#[derive(Debug, Args, Default, Clone)]
#[command(next_help_heading = "Filters")]
pub struct FilterArgs {
    /// Only connections made by this process id (1 to 4194304).
    #[arg(long, value_name = "PID", value_parser = within(1, MAX_PID))]
    pub pid: Option<u32>,

    /// Only connections made by tasks with this name (as in /proc/PID/comm, ≤ 15 bytes).
    #[arg(long, value_name = "NAME")]
    pub comm: Option<String>,

    /// Only connections to this destination port (1 to 65535).
    #[arg(long, value_name = "PORT", value_parser = within(1, u16::MAX))]
    pub port: Option<u16>,

    /// Only connections to this network (address or CIDR; repeatable).
    #[arg(long, value_name = "CIDR")]
    pub dest: Vec<String>,

    /// Only sockets in this network namespace: an inode number (not 0), or a namespace
    /// file such as /run/netns/NAME or /proc/PID/ns/net.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,

    /// Only processes in pods named NAME (`*` matches any run: `web-*`). Applied in
    /// userspace once the pod is known: records of unknown pods are dropped.
    #[arg(long, value_name = "NAME")]
    pub pod: Option<String>,

    /// Only processes in pods of this Kubernetes namespace (`*` as for --pod).
    #[arg(long, value_name = "NAME")]
    pub namespace: Option<String>,

    /// Only processes in containers of this name (`*` as for --pod).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,
}

/// Kernel-side sizes; the defaults suit most hosts.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Tuning")]
pub struct TuningArgs {
    /// Ring-buffer size in bytes, per ring: a power of two from 4096 to 268435456 (256 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = tracer_common::defaults::RING_BUFFER_BYTES,
          value_parser = within(MIN_RING_BUFFER_BYTES, MAX_RING_BUFFER_BYTES))]
    pub ring_buffer_size: u32,

    /// Wake conntrace once N records are waiting instead of for each record (a wake-up
    /// costs the connecting process about a microsecond); the rest is read every 20 ms.
    /// 0: the kernel's default, a wake-up whenever conntrace has caught up. At most 255,
    /// and what half the ring buffer holds [default: 128, fewer if the ring buffer is small].
    #[arg(long, value_name = "N", value_parser = within(0, u8::MAX))]
    pub wakeup_batch: Option<u8>,

    /// Connects in flight followed at once, 1 to 4194304 (beyond them, new connects are
    /// counted as not followed).
    #[arg(long, value_name = "N", default_value_t = tracer_common::defaults::MAX_CONNECTING,
          value_parser = within(1, MAX_CONNECTIONS))]
    pub max_connections: u32,

    /// Established connections followed at once, for their resets, losses and
    /// retransmits, 1 to 16777216 (memory is used as connections come).
    #[arg(long, value_name = "N", default_value_t = tracer_common::defaults::MAX_ESTABLISHED,
          value_parser = within(1, MAX_ESTABLISHED))]
    pub max_established: u32,

    /// Event ring buffers, each read by its own thread, 1 to 4 [default: one per four
    /// CPUs, at most 4].
    #[arg(long, value_name = "N",
          value_parser = within(1, MAX_RINGS))]
    pub rings: Option<u8>,

    /// Where tracefs is mounted, for `--connect-hook syscalls` [default:
    /// /sys/kernel/tracing, then /sys/kernel/debug/tracing].
    #[arg(long, value_name = "DIR")]
    pub tracefs: Option<PathBuf>,

    /// How connect()'s own result is seen (failures before any SYN: no route, no local
    /// port, a local policy). `auto` tries fexit, then kretprobe, then tracepoint; naming
    /// one makes its absence an error.
    #[arg(long, value_enum, default_value_t = ConnectHookChoice::Auto)]
    pub connect_hook: ConnectHookChoice,
}

/// `--connect-hook`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ConnectHookChoice {
    /// The best this kernel allows, never `syscalls`.
    Auto,
    /// fexit on the kernel's connect (BPF trampolines): exact and nearly free.
    Fexit,
    /// kprobe and kretprobe on the kernel's connect: exact.
    Kretprobe,
    /// No hook on connect(): failed route lookups and the state machine (kernels without
    /// fentry and kprobes); a local policy's EPERM/EACCES is not seen.
    Tracepoint,
    /// The syscall tracepoints: exact on any kernel, but every system call of every
    /// process on the host takes the kernel's slow path while conntrace runs.
    Syscalls,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (see docs/schema.md).
    Json,
    /// Aligned columns for people.
    Text,
}

/// The parser of an integer flag with a range (the limits live in `config`): a value out
/// of range, too large for its type or not a number gets the same message, which names
/// the range.
fn within<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy + Send + Sync,
{
    move |text| {
        text.parse::<T>()
            .ok()
            .filter(|v| (min..=max).contains(v))
            .ok_or_else(|| format!("give a number from {min} to {max}"))
    }
}

/// A parse error as one line (every failure is one line on stderr): clap's message
/// without its usage block and its pointer to `--help`, the tips kept.
pub fn usage_line(err: &clap::Error) -> String {
    let rendered = err.to_string();
    let mut line = String::new();
    for part in rendered.lines().map(str::trim) {
        if part.is_empty() || part.starts_with("Usage:") || part.starts_with("For more information")
        {
            continue;
        }
        let part = part.strip_prefix("error: ").unwrap_or(part);
        if !line.is_empty() {
            line.push_str(if part.starts_with('[') { " " } else { "; " });
        }
        line.push_str(part);
    }
    line
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
        let Command::Trace(t) = parse(&["trace"]).unwrap().command else {
            panic!("not trace")
        };
        assert!(!t.all);
        assert_eq!(t.output, None);
        assert_eq!(t.stats_interval, 10.0);
        assert_eq!(t.tuning.ring_buffer_size, 1 << 20);
    }

    #[test]
    fn health_parses_its_heartbeat_and_bounded_age() {
        let Command::Health(h) = parse(&["health", "--heartbeat", "/run/hb"])
            .unwrap()
            .command
        else {
            panic!("not health")
        };
        assert_eq!(h.heartbeat, PathBuf::from("/run/hb"));
        assert_eq!(h.max_age, 30);
        assert!(parse(&["health", "--heartbeat", "/run/hb", "--max-age", "9"]).is_err());
        assert!(parse(&["health"]).is_err(), "the file is required");
        let Command::Trace(t) = parse(&["trace", "--heartbeat", "/run/hb"]).unwrap().command else {
            panic!("not trace")
        };
        assert_eq!(t.heartbeat, Some(PathBuf::from("/run/hb")));
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
        let Command::Trace(t) = cli.command else {
            panic!("not trace")
        };
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
    fn trace_summary_options() {
        let Command::Trace(t) = parse(&["trace", "--summary-interval", "5", "--max-keys", "7"])
            .unwrap()
            .command
        else {
            panic!("not trace")
        };
        assert_eq!(t.summary_interval, Some(5.0));
        assert_eq!(t.aggregate.max_keys, 7);
        let Command::Trace(t) = parse(&["trace"]).unwrap().command else {
            panic!("not trace")
        };
        assert_eq!(t.summary_interval, None);
        assert_eq!(t.aggregate.max_keys, 10_000);
    }

    #[test]
    fn diagnose_and_top_take_the_trace_filters() {
        let Command::Diagnose(d) = parse(&[
            "diagnose",
            "--duration",
            "6",
            "--json",
            "--netns",
            "/run/netns/x",
            "--port",
            "81",
        ])
        .unwrap()
        .command
        else {
            panic!("not diagnose")
        };
        assert_eq!(d.duration, 6.0);
        assert!(d.json);
        assert_eq!(d.filters.netns.as_deref(), Some("/run/netns/x"));
        assert_eq!(d.filters.port, Some(81));
        let Command::Diagnose(d) = parse(&["diagnose"]).unwrap().command else {
            panic!("not diagnose")
        };
        assert_eq!((d.duration, d.json), (30.0, false));
        let Command::Top(t) = parse(&["top", "--comm", "curl", "--max-keys", "50"])
            .unwrap()
            .command
        else {
            panic!("not top")
        };
        assert_eq!(t.filters.comm.as_deref(), Some("curl"));
        assert_eq!(t.aggregate.max_keys, 50);
    }

    /// Every integer flag has its range in the parser, from the constants in `config`,
    /// and the help says the same numbers.
    #[test]
    fn integer_flags_are_bounded_and_the_help_says_so() {
        use crate::config;
        let cases: [(&str, u64, u64); 7] = [
            ("--max-connections", 1, config::MAX_CONNECTIONS.into()),
            ("--max-established", 1, config::MAX_ESTABLISHED.into()),
            ("--max-keys", 1, config::MAX_KEYS as u64),
            ("--pid", 1, config::MAX_PID.into()),
            ("--rings", 1, config::MAX_RINGS.into()),
            ("--port", 1, u16::MAX.into()),
            (
                "--ring-buffer-size",
                config::MIN_RING_BUFFER_BYTES.into(),
                config::MAX_RING_BUFFER_BYTES.into(),
            ),
        ];
        let mut help = Vec::new();
        Cli::command()
            .find_subcommand_mut("trace")
            .unwrap()
            .write_long_help(&mut help)
            .unwrap();
        let help = String::from_utf8(help).unwrap().replace('\n', " ");
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for (flag, min, max) in cases {
            for ok in [min, max] {
                assert!(
                    parse(&["trace", flag, &ok.to_string()]).is_ok(),
                    "{flag} {ok}"
                );
            }
            for bad in [min - 1, max + 1, u64::MAX] {
                let err = parse(&["trace", flag, &bad.to_string()]).unwrap_err();
                assert_eq!(err.exit_code(), 2, "{flag} {bad}");
            }
            for bad in [(max + 1).to_string(), u64::MAX.to_string(), "x".into()] {
                let err = parse(&["trace", flag, &bad]).unwrap_err();
                assert!(
                    err.to_string()
                        .contains(&format!("give a number from {min} to {max}")),
                    "{flag}: {err}"
                );
            }
            assert!(
                help.contains(&format!("{min} to {max}")),
                "trace --help for {flag} lacks {min} to {max}: {help}"
            );
        }
    }

    #[test]
    fn parse_errors_read_as_one_line() {
        let line = |args: &[&str]| usage_line(&parse(args).unwrap_err());
        assert_eq!(
            line(&["trace", "--max-connections", "0"]),
            "invalid value '0' for '--max-connections <N>': give a number from 1 to 4194304"
        );
        assert_eq!(
            line(&["trace", "-o", "xml"]),
            "invalid value 'xml' for '--output <OUTPUT>' [possible values: json, text]"
        );
        assert_eq!(
            line(&["trac"]),
            "unrecognized subcommand 'trac'; tip: a similar subcommand exists: 'trace'"
        );
        assert_eq!(
            line(&["trace", "--bogus"]),
            "unexpected argument '--bogus' found"
        );
    }

    #[test]
    fn a_subcommand_is_required() {
        assert!(parse(&[]).is_err());
    }
}
