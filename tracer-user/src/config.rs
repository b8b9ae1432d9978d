//! A validated configuration, built from the command line. Everything a user can get wrong
//! is caught here, before anything is loaded, with a message that says what to type.
use std::{
    io::IsTerminal as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use tracer_common::{COMM_LEN, V4_MAPPED_PREFIX};

use crate::{
    cli::{
        ConnectHookChoice, FilterArgs, Format, MetricsArgs, OutputArgs, TraceArgs, TuningArgs,
        VerdictArgs,
    },
    exit::StartError,
    model::Identity,
    netns::Netns,
    output::{
        hook::HookOptions,
        writer::{Destination, FileOptions},
    },
    sinks::{metrics::LabelChoice, verdicts::VerdictOptions},
};

/// Limits of the numeric flags, in one place (README, "Options and their limits"). The
/// integer flags are range-checked by the parser (`cli`) against these; the seconds flags
/// and the checks that span flags are made here. Kernel maps are sized from the tuning
/// flags: their upper bounds keep a typo from asking the kernel for gigabytes (a 1 GiB ring
/// buffer on four rings took 26 s to load and 8 GiB of mappings).
///
/// `--ring-buffer-size`: a power of two from 4 KiB (a page) to 256 MiB, per ring.
pub const MIN_RING_BUFFER_BYTES: u32 = 4096;
pub const MAX_RING_BUFFER_BYTES: u32 = 256 << 20;
/// `--max-connections`: 64 times the default (a preallocated map: 4 Mi entries load in
/// about 9 s).
pub const MAX_CONNECTIONS: u32 = 1 << 22;
/// `--max-established`: 64 times the default (allocated as connections come).
pub const MAX_ESTABLISHED: u32 = 1 << 24;
/// `--max-keys`: 100 times the default; an entry stays under 4 KiB.
pub const MAX_KEYS: usize = 1_000_000;
/// `--pid`: the kernel's `PID_MAX_LIMIT` on 64-bit machines.
pub const MAX_PID: u32 = 1 << 22;
/// `--rings`: the event ring buffers the kernel side has.
pub const MAX_RINGS: u8 = tracer_common::MAX_RINGS as u8;
/// `--stats-interval` and `--summary-interval`: periodic records at most ten times a
/// second (below that the records are the load: 1e-9 wrote 170 000 lines in 2 s, and a
/// period that rounds to zero makes tokio's interval panic).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// `--duration`: at least a millisecond (less rounds to nothing).
pub const MIN_DURATION: Duration = Duration::from_millis(1);
/// Every seconds flag: at most about 31 years, far from where `Duration` or a timer's
/// deadline could overflow.
pub const MAX_SECONDS: f64 = 1e9;

/// A destination prefix, stored the way the kernel filter stores it: IPv4 as IPv4-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: [u8; 16],
    /// Prefix length over the 128-bit (mapped) address.
    pub prefix_len: u32,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (ip, len) = match text.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (text, None),
        };
        let ip: IpAddr = ip.parse().map_err(|_| {
            format!("--dest {text}: not an IP address or CIDR (e.g. 10.0.0.0/8, fd00::/16)")
        })?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .parse::<u32>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("--dest {text}: prefix length must be 0 to {max}"))?,
        };
        Ok(match ip {
            IpAddr::V4(v4) => {
                let mut addr = [0u8; 16];
                addr[..12].copy_from_slice(&V4_MAPPED_PREFIX);
                addr[12..].copy_from_slice(&v4.octets());
                Cidr {
                    addr,
                    prefix_len: 96 + len,
                }
            }
            IpAddr::V6(v6) => Cidr {
                addr: v6.octets(),
                prefix_len: len,
            },
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = u128::from_be_bytes(self.addr);
        let other = match ip {
            IpAddr::V4(v4) => u128::from_be_bytes(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let mask = u128::MAX.checked_shl(128 - self.prefix_len).unwrap_or(0);
        bits & mask == other & mask
    }
}

/// Which connections to watch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    pub port: Option<u16>,
    pub dests: Vec<Cidr>,
    pub netns: Option<u32>,
    /// Applied in userspace, once the record's identity is known.
    pub identity: IdentityFilter,
}

/// `--pod`, `--namespace`, `--container`: patterns where `*` matches any run of
/// characters. A record whose identity is unknown matches none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityFilter {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub container: Option<String>,
}

impl IdentityFilter {
    pub fn is_empty(&self) -> bool {
        self.pod.is_none() && self.namespace.is_none() && self.container.is_none()
    }

    pub fn matches(&self, identity: Option<&Identity>) -> bool {
        if self.is_empty() {
            return true;
        }
        let pod = identity.and_then(|i| i.pod.as_ref());
        let container = identity.and_then(|i| i.container.as_ref());
        let check = |pattern: &Option<String>, value: Option<&str>| {
            pattern
                .as_deref()
                .is_none_or(|p| value.is_some_and(|v| glob(p, v)))
        };
        check(&self.pod, pod.and_then(|p| p.name.as_deref()))
            && check(&self.namespace, pod.and_then(|p| p.namespace.as_deref()))
            && check(&self.container, container.and_then(|c| c.name.as_deref()))
    }

    fn from_args(args: &FilterArgs) -> Result<IdentityFilter, StartError> {
        for (flag, value) in [
            ("--pod", &args.pod),
            ("--namespace", &args.namespace),
            ("--container", &args.container),
        ] {
            if let Some(v) = value
                && (v.is_empty() || v.len() > 253 || v.chars().any(char::is_whitespace))
            {
                return Err(StartError::Usage(format!(
                    "{flag} {v:?}: give a Kubernetes name (1 to 253 characters, `*` matches any run)"
                )));
            }
        }
        Ok(IdentityFilter {
            pod: args.pod.clone(),
            namespace: args.namespace.clone(),
            container: args.container.clone(),
        })
    }
}

/// `pattern` matches `text`, `*` standing for any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Filters {
    pub fn from_args(args: &FilterArgs) -> Result<Filters, StartError> {
        let usage = StartError::Usage;
        if let Some(comm) = &args.comm
            && (comm.is_empty() || comm.len() >= COMM_LEN)
        {
            return Err(usage(format!(
                "--comm {comm:?}: a task name is 1 to {} bytes (as in /proc/PID/comm)",
                COMM_LEN - 1
            )));
        }
        let max = tracer_common::defaults::MAX_DEST_PREFIXES as usize;
        if args.dest.len() > max {
            return Err(usage(format!("--dest: at most {max} prefixes")));
        }
        let dests = args
            .dest
            .iter()
            .map(|d| Cidr::parse(d))
            .collect::<Result<_, _>>()
            .map_err(usage)?;
        let netns = args
            .netns
            .as_deref()
            .map(resolve_netns)
            .transpose()
            .map_err(usage)?;
        Ok(Filters {
            pid: args.pid,
            comm: args.comm.clone(),
            port: args.port,
            dests,
            netns,
            identity: IdentityFilter::from_args(args)?,
        })
    }

    /// The comm filter as the kernel compares it: NUL-padded to 16 bytes.
    pub fn comm_bytes(&self) -> Option<[u8; COMM_LEN]> {
        self.comm.as_ref().map(|c| {
            let mut out = [0u8; COMM_LEN];
            out[..c.len()].copy_from_slice(c.as_bytes());
            out
        })
    }
}

/// A network namespace given as an inode number or as a path to a namespace file. 0
/// would turn the kernel filter off, and a file that is not a network namespace would
/// match nothing: both are refused.
pub fn resolve_netns(text: &str) -> Result<u32, String> {
    const GIVE: &str = "give an inode number, /run/netns/NAME or /proc/PID/ns/net";
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        return text
            .parse::<u32>()
            .ok()
            .filter(|&inode| inode != 0)
            .ok_or_else(|| {
                format!(
                    "--netns {text}: not a namespace inode number (1 to {}); {GIVE}",
                    u32::MAX
                )
            });
    }
    let ns = Netns::open(Path::new(text))
        .map_err(|e| format!("--netns {text}: {}; {GIVE}", lower(&e.to_string())))?;
    u32::try_from(ns.inode).map_err(|_| format!("--netns {text}: inode {} out of range", ns.inode))
}

/// `No such file or directory (os error 2)` → `no such file or directory (os error 2)`,
/// to read as the middle of a sentence.
fn lower(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

/// Kernel-side sizes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tuning {
    pub ring_buffer_bytes: u32,
    /// Records waiting before the kernel wakes the reader; 0: a wake-up per record that
    /// finds the reader caught up.
    pub wakeup_batch: u8,
    pub max_connections: u32,
    pub max_established: u32,
    /// Event ring buffers; `None`: one per four CPUs.
    pub rings: Option<u8>,
    pub tracefs: Option<PathBuf>,
    pub connect_hook: ConnectHookChoice,
}

impl Tuning {
    pub fn from_args(args: &TuningArgs) -> Result<Tuning, StartError> {
        let size = args.ring_buffer_size;
        // The range is the parser's; a power of two is the kernel's demand.
        if !size.is_power_of_two() {
            return Err(StartError::Usage(format!(
                "--ring-buffer-size {size}: give a power of two from {MIN_RING_BUFFER_BYTES} to {MAX_RING_BUFFER_BYTES}"
            )));
        }
        let wakeup_batch = wakeup_batch(args.wakeup_batch, size)?;
        Ok(Tuning {
            ring_buffer_bytes: size,
            wakeup_batch,
            max_connections: args.max_connections,
            max_established: args.max_established,
            rings: args.rings,
            tracefs: args.tracefs.clone(),
            connect_hook: args.connect_hook,
        })
    }
}

/// `--wakeup-batch`: at most half the ring buffer may wait for a wake-up. The default
/// shrinks to fit a small ring buffer; a value given that does not fit is refused.
fn wakeup_batch(given: Option<u8>, ring_buffer_bytes: u32) -> Result<u8, StartError> {
    let fits = u64::from(ring_buffer_bytes) / 2 / tracer_common::EVENT_RING_BYTES;
    let fits = u8::try_from(fits).unwrap_or(u8::MAX);
    match given {
        None => Ok(tracer_common::defaults::WAKEUP_BATCH.min(fits)),
        Some(n) if n > fits => Err(StartError::Usage(format!(
            "--wakeup-batch {n}: a {ring_buffer_bytes}-byte ring buffer holds a batch of at \
             most {fits} records (half of it); give a smaller batch or a larger \
             --ring-buffer-size"
        ))),
        Some(n) => Ok(n),
    }
}

/// Everything `conntrace trace` needs, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    pub filters: Filters,
    pub tuning: Tuning,
    pub format: Format,
    pub all: bool,
    pub duration: Option<Duration>,
    /// `None`: stats only at exit.
    pub stats_interval: Option<Duration>,
    pub retransmits: bool,
    /// Follow accepted connections too (`--accepted`).
    pub accepted: bool,
    pub args: bool,
    /// `--summary-interval`.
    pub summary_every: Option<Duration>,
    pub max_keys: usize,
    pub output: OutputConfig,
    pub metrics: Option<MetricsConfig>,
    pub verdicts: Option<VerdictOptions>,
    pub hook: Option<HookOptions>,
    /// `--no-events`.
    pub no_events: bool,
}

/// `--verdicts` and `--on-verdict`.
fn verdicts(
    args: &VerdictArgs,
    max_keys: usize,
) -> Result<(Option<VerdictOptions>, Option<HookOptions>), StartError> {
    if !args.verdicts && args.on_verdict.is_none() {
        return Ok((None, None));
    }
    let every =
        interval("--verdict-interval", args.verdict_interval, false)?.unwrap_or(MIN_INTERVAL);
    let window = duration("--verdict-window", args.verdict_window)?;
    if window < every {
        return Err(StartError::Usage(
            "--verdict-interval: no longer than --verdict-window".into(),
        ));
    }
    let options = VerdictOptions {
        every,
        window,
        cooldown: interval("--verdict-cooldown", args.verdict_cooldown, true)?
            .unwrap_or(Duration::ZERO),
        max_keys,
    };
    let hook = args
        .on_verdict
        .as_deref()
        .map(|cmd| {
            let timeout = duration("--on-verdict-timeout", args.on_verdict_timeout)?;
            HookOptions::parse(cmd, args.on_verdict_shell, timeout, args.on_verdict_jobs)
                .map_err(StartError::Usage)
        })
        .transpose()?;
    Ok((Some(options), hook))
}

/// `--metrics` and its cardinality.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    pub address: std::net::SocketAddr,
    pub labels: LabelChoice,
    pub max_series: usize,
}

impl MetricsConfig {
    pub fn from_args(args: &MetricsArgs) -> Result<Option<MetricsConfig>, StartError> {
        let Some(address) = &args.metrics else {
            return Ok(None);
        };
        if args.metrics_max_series == 0 {
            return Err(StartError::Usage(
                "--metrics-max-series must be at least 1".into(),
            ));
        }
        Ok(Some(MetricsConfig {
            address: crate::output::http::parse_address(address).map_err(StartError::Usage)?,
            labels: LabelChoice::parse(&args.metrics_labels).map_err(StartError::Usage)?,
            max_series: args.metrics_max_series,
        }))
    }
}

impl TraceConfig {
    pub fn from_args(args: &TraceArgs) -> Result<TraceConfig, StartError> {
        let output = OutputConfig::from_args(&args.destination)?;
        let to_terminal =
            output.destination == Destination::Stdout && std::io::stdout().is_terminal();
        let format = args.output.unwrap_or(if to_terminal {
            Format::Text
        } else {
            Format::Json
        });
        let max_keys = args.aggregate.max_keys;
        let (verdicts, hook) = verdicts(&args.verdicts, max_keys)?;
        Ok(TraceConfig {
            filters: Filters::from_args(&args.filters)?,
            tuning: Tuning::from_args(&args.tuning)?,
            format,
            all: args.all,
            duration: args
                .duration
                .map(|d| duration("--duration", d))
                .transpose()?,
            stats_interval: interval("--stats-interval", args.stats_interval, true)?,
            retransmits: args.retransmits,
            accepted: args.accepted,
            args: args.args,
            summary_every: args
                .summary_interval
                .map(|s| interval("--summary-interval", s, false))
                .transpose()?
                .flatten(),
            max_keys,
            output,
            metrics: MetricsConfig::from_args(&args.metrics)?,
            verdicts,
            hook,
            no_events: args.no_events,
        })
    }
}

/// Where the record stream goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputConfig {
    pub destination: Destination,
    /// `--output-buffer`.
    pub budget_bytes: usize,
}

/// The output buffer's bounds: below a chunk it could not batch writes; above a GiB it
/// stops being a buffer.
const OUTPUT_BUFFER_MIN: u64 = 256 << 10;
const OUTPUT_BUFFER_MAX: u64 = 1 << 30;

impl OutputConfig {
    pub fn from_args(args: &OutputArgs) -> Result<OutputConfig, StartError> {
        let budget = size("--output-buffer", &args.output_buffer)?;
        if !(OUTPUT_BUFFER_MIN..=OUTPUT_BUFFER_MAX).contains(&budget) {
            return Err(StartError::Usage(format!(
                "--output-buffer {}: give 256K to 1G",
                args.output_buffer
            )));
        }
        let destination = match (&args.output_file, &args.syslog) {
            (None, Some(address)) => Destination::Syslog(
                crate::output::syslog::SyslogOptions::parse(address).map_err(StartError::Usage)?,
            ),
            (None, None) => Destination::Stdout,
            (Some(path), _) => {
                let max_bytes = args
                    .output_file_max_size
                    .as_deref()
                    .map(|s| size("--output-file-max-size", s))
                    .transpose()?;
                if max_bytes.is_some_and(|m| m < 4096) {
                    return Err(StartError::Usage(
                        "--output-file-max-size: give at least 4K".into(),
                    ));
                }
                if max_bytes.is_some() && args.output_file_keep == 0 {
                    return Err(StartError::Usage(
                        "--output-file-keep must be at least 1".into(),
                    ));
                }
                Destination::File(FileOptions {
                    path: path.clone(),
                    max_bytes,
                    keep: args.output_file_keep,
                })
            }
        };
        Ok(OutputConfig {
            destination,
            budget_bytes: usize::try_from(budget).unwrap_or(usize::MAX),
        })
    }
}

/// A size in bytes: `4096`, `64K`, `8M`, `1G` (powers of 1024).
pub fn size(flag: &str, text: &str) -> Result<u64, StartError> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        _ => u32::MAX,
    };
    digits
        .parse::<u64>()
        .ok()
        .filter(|_| shift != u32::MAX)
        .and_then(|n| n.checked_mul(1 << shift.min(30)))
        .ok_or_else(|| {
            StartError::Usage(format!(
                "{flag} {text}: give a size in bytes, or with a K, M or G suffix (64K, 8M)"
            ))
        })
}

/// `--duration`: seconds, from [`MIN_DURATION`] to [`MAX_SECONDS`].
pub fn duration(flag: &str, value: f64) -> Result<Duration, StartError> {
    seconds(flag, value, MIN_DURATION, "")
}

/// A period between records: seconds from [`MIN_INTERVAL`] to [`MAX_SECONDS`], or
/// (`zero_off`) 0 for none.
pub fn interval(flag: &str, value: f64, zero_off: bool) -> Result<Option<Duration>, StartError> {
    if zero_off && value == 0.0 {
        return Ok(None);
    }
    let off = if zero_off { "0 (off) or " } else { "" };
    seconds(flag, value, MIN_INTERVAL, off).map(Some)
}

/// Seconds within `[min, MAX_SECONDS]`, as a Duration (never a panic: the bounds are
/// checked on the float, before the conversion).
fn seconds(flag: &str, value: f64, min: Duration, other: &str) -> Result<Duration, StartError> {
    if value.is_finite() && value >= min.as_secs_f64() && value <= MAX_SECONDS {
        return Ok(Duration::from_secs_f64(value));
    }
    Err(StartError::Usage(format!(
        "{flag} {value:?}: give {other}{} to {MAX_SECONDS} seconds",
        min.as_secs_f64()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_cidr_is_stored_mapped() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert_eq!(c.prefix_len, 112);
        assert_eq!(c.addr[10..], [0xff, 0xff, 10, 1, 0, 0]);
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.9.9".parse().unwrap()));
    }

    #[test]
    fn bare_address_is_a_host_prefix() {
        let c = Cidr::parse("fd00::1").unwrap();
        assert_eq!(c.prefix_len, 128);
        assert!(c.contains("fd00::1".parse().unwrap()));
        assert!(!c.contains("fd00::2".parse().unwrap()));
    }

    #[test]
    fn zero_prefix_matches_everything_of_its_width() {
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("192.0.2.1".parse().unwrap())
        );
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert_eq!(Cidr::parse("::/0").unwrap().prefix_len, 0);
    }

    #[test]
    fn bad_cidrs_say_why() {
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(
            Cidr::parse("example.com")
                .unwrap_err()
                .contains("not an IP")
        );
        assert!(Cidr::parse("fd00::/129").unwrap_err().contains("0 to 128"));
    }

    #[test]
    fn comm_longer_than_the_kernel_keeps_is_refused() {
        let args = FilterArgs {
            comm: Some("a-very-long-process-name".into()),
            ..FilterArgs::default()
        };
        assert!(matches!(
            Filters::from_args(&args),
            Err(StartError::Usage(_))
        ));
    }

    #[test]
    fn comm_is_nul_padded() {
        let f = Filters {
            comm: Some("curl".into()),
            ..Filters::default()
        };
        assert_eq!(&f.comm_bytes().unwrap(), b"curl\0\0\0\0\0\0\0\0\0\0\0\0");
    }

    #[test]
    fn netns_accepts_inode_or_path() {
        assert_eq!(resolve_netns("4026531840"), Ok(4_026_531_840));
        let own = std::fs::metadata("/proc/self/ns/net").unwrap();
        assert_eq!(
            resolve_netns("/proc/self/ns/net").map(u64::from),
            Ok(std::os::unix::fs::MetadataExt::ino(&own))
        );
        assert_eq!(
            resolve_netns("/no/such/netns").unwrap_err(),
            "--netns /no/such/netns: no such file or directory (os error 2); give an inode \
             number, /run/netns/NAME or /proc/PID/ns/net"
        );
    }

    /// 0 turned the filter off; a file that is not a network namespace matched nothing.
    #[test]
    fn netns_refuses_zero_and_what_is_not_a_network_namespace() {
        for zero in ["0", "00", "4294967296"] {
            let err = resolve_netns(zero).unwrap_err();
            assert!(
                err.starts_with(&format!("--netns {zero}: not a namespace inode number")),
                "{err}"
            );
        }
        assert_eq!(
            resolve_netns("/etc/passwd").unwrap_err(),
            "--netns /etc/passwd: not a namespace file; give an inode number, /run/netns/NAME \
             or /proc/PID/ns/net"
        );
        assert!(
            resolve_netns("/proc/self/ns/mnt")
                .unwrap_err()
                .contains("a namespace, but not a network namespace")
        );
        let args = FilterArgs {
            netns: Some("0".into()),
            ..FilterArgs::default()
        };
        assert!(matches!(
            Filters::from_args(&args),
            Err(StartError::Usage(_))
        ));
    }

    #[test]
    fn ring_buffer_size_must_be_a_power_of_two() {
        let mut t = TuningArgs {
            ring_buffer_size: 5000,
            wakeup_batch: None,
            max_connections: 1,
            max_established: 1,
            rings: None,
            tracefs: None,
            connect_hook: ConnectHookChoice::Auto,
        };
        let Err(StartError::Usage(msg)) = Tuning::from_args(&t) else {
            panic!("5000 is not a power of two");
        };
        assert_eq!(
            msg,
            "--ring-buffer-size 5000: give a power of two from 4096 to 268435456"
        );
        t.ring_buffer_size = 8192;
        assert!(Tuning::from_args(&t).is_ok());
    }

    #[test]
    fn wakeup_batch_fits_half_the_ring_buffer() {
        // 8 KiB: 22 records of 184 bytes (with the ring's header) fit in half of it.
        assert_eq!(tracer_common::EVENT_RING_BYTES, 184);
        assert_eq!(wakeup_batch(None, 8192).ok(), Some(22));
        assert_eq!(wakeup_batch(None, 1 << 20).ok(), Some(128));
        assert_eq!(wakeup_batch(Some(0), 4096).ok(), Some(0));
        assert_eq!(wakeup_batch(Some(22), 8192).ok(), Some(22));
        let Err(StartError::Usage(msg)) = wakeup_batch(Some(23), 8192) else {
            panic!("23 records do not fit half of 8 KiB");
        };
        assert!(
            msg.contains("--wakeup-batch 23") && msg.contains("22"),
            "{msg}"
        );
        assert_eq!(wakeup_batch(Some(255), 1 << 20).ok(), Some(255));
    }

    #[test]
    fn globs() {
        assert!(glob("web-*", "web-7d9f8b6c5d-x2k4p"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "a-b-c"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exactly"));
        assert!(!glob("a*b", "ab-x"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn identity_filters_match_names() {
        use crate::model::{Container, Pod};
        let id = Identity {
            container: Some(Container {
                id: "c".into(),
                runtime: None,
                name: Some("app".into()),
            }),
            pod: Some(Pod {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                ..Pod::default()
            }),
        };
        let f = |pod: Option<&str>, ns: Option<&str>, c: Option<&str>| IdentityFilter {
            pod: pod.map(Into::into),
            namespace: ns.map(Into::into),
            container: c.map(Into::into),
        };
        assert!(f(None, None, None).matches(None));
        assert!(f(Some("web-*"), Some("shop"), Some("app")).matches(Some(&id)));
        assert!(!f(Some("web-1"), None, None).matches(Some(&id)));
        assert!(!f(None, Some("other"), None).matches(Some(&id)));
        assert!(!f(None, None, Some("sidecar")).matches(Some(&id)));
        // Unknown identity: no match.
        assert!(!f(None, Some("shop"), None).matches(None));
        let bad = FilterArgs {
            pod: Some(String::new()),
            ..FilterArgs::default()
        };
        assert!(matches!(
            Filters::from_args(&bad),
            Err(StartError::Usage(_))
        ));
    }

    #[test]
    fn seconds_flags_have_a_floor_and_a_ceiling() {
        for bad in [0.0, -1.0, 1e-4, f64::NAN, f64::INFINITY, 1.1e9, f64::MAX] {
            let Err(StartError::Usage(msg)) = duration("--duration", bad) else {
                panic!("--duration {bad} accepted");
            };
            assert_eq!(
                msg,
                format!("--duration {bad:?}: give 0.001 to 1000000000 seconds")
            );
        }
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(size("--x", "4096").ok(), Some(4096));
        assert_eq!(size("--x", "64K").ok(), Some(65_536));
        assert_eq!(size("--x", "8m").ok(), Some(8 << 20));
        assert_eq!(size("--x", "1GiB").ok(), Some(1 << 30));
        for bad in ["", "M", "8X", "-1", "1.5M", "99999999999999999999G"] {
            let Err(StartError::Usage(msg)) = size("--output-buffer", bad) else {
                panic!("{bad:?} is not a size");
            };
            assert!(msg.starts_with("--output-buffer"), "{msg}");
        }
    }

    #[test]
    fn output_file_and_its_rotation() {
        let args = OutputArgs {
            output_file: Some("/var/log/ct.json".into()),
            output_file_max_size: Some("100M".into()),
            output_file_keep: 3,
            output_buffer: "8M".into(),
            syslog: None,
        };
        let c = OutputConfig::from_args(&args).unwrap();
        assert_eq!(
            c.destination,
            Destination::File(FileOptions {
                path: "/var/log/ct.json".into(),
                max_bytes: Some(100 << 20),
                keep: 3
            })
        );
        assert_eq!(c.budget_bytes, 8 << 20);
        let tiny = OutputArgs {
            output_buffer: "64K".into(),
            ..args
        };
        assert!(matches!(
            OutputConfig::from_args(&tiny),
            Err(StartError::Usage(_))
        ));
    }

    #[test]
    fn durations_within_their_bounds_are_kept() {
        assert_eq!(
            duration("--duration", 1.5).unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(duration("--duration", 0.001).unwrap(), MIN_DURATION);
        assert_eq!(
            duration("--duration", MAX_SECONDS).unwrap(),
            Duration::from_secs(1_000_000_000)
        );
    }

    /// The values that panicked (a period rounding to zero) or flooded the output.
    #[test]
    fn intervals_below_a_tenth_of_a_second_are_refused() {
        for bad in [1e-10, 1e-9, 0.099, -0.5, f64::NAN, 2e9] {
            let Err(StartError::Usage(msg)) = interval("--stats-interval", bad, true) else {
                panic!("--stats-interval {bad} accepted");
            };
            assert_eq!(
                msg,
                format!("--stats-interval {bad:?}: give 0 (off) or 0.1 to 1000000000 seconds")
            );
            let Err(StartError::Usage(msg)) = interval("--summary-interval", bad, false) else {
                panic!("--summary-interval {bad} accepted");
            };
            assert_eq!(
                msg,
                format!("--summary-interval {bad:?}: give 0.1 to 1000000000 seconds")
            );
        }
        assert_eq!(interval("--stats-interval", 0.0, true).unwrap(), None);
        assert!(interval("--summary-interval", 0.0, false).is_err());
        assert_eq!(
            interval("--stats-interval", 0.1, true).unwrap(),
            Some(MIN_INTERVAL)
        );
        assert_eq!(
            interval("--summary-interval", 60.0, false).unwrap(),
            Some(Duration::from_secs(60))
        );
    }
}
