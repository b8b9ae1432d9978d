//! Prometheus metrics (`trace --metrics ADDR`): connect attempts by outcome and reason,
//! resets, lost connections, retransmits and connect-time histograms per workload ×
//! destination, and conntrace's own health. The sink updates atomic counters on the
//! event loop; `output::http` serves them from a thread of its own.
//!
//! Cardinality is the user's: each label can be left out (`--metrics-labels`), the pid is
//! never one, and past `--metrics-max-series` label sets a new one folds into its
//! workload's `other` series (past 64 such workloads, into one `other` series), as
//! `--max-keys` folds summaries. A record finds its series without allocating: the key is
//! built on the stack from what the labels need.
use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::{Registry, Unit},
};

use super::Sink;
use crate::{
    model::{Action, ConnEvent, Reason, RunInfo},
    stats::Snapshot,
};

/// Label sets as Prometheus sees them: (name, value) pairs, only the labels chosen.
type Labels = Vec<(String, String)>;

/// `--metrics-max-series` by default.
pub const DEFAULT_MAX_SERIES: usize = 1000;
/// Workloads that get an `other` series of their own once the table is full.
const MAX_FOLDED_WORKLOADS: usize = 64;
/// Health figures are read this often (a few map reads in the kernel).
const HEALTH_EVERY: Duration = Duration::from_secs(1);

/// Connect times, in seconds: loopback (100 µs) to SYN retries giving up (127 s with the
/// kernel's default of 6 retries).
const BUCKETS: [f64; 14] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.01, 0.025, 0.1, 0.25, 1.0, 3.0, 7.0, 15.0, 31.0, 127.0,
];

/// Which labels the per-destination metrics carry (`--metrics-labels`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabelChoice {
    /// `workload`: the task name (comm).
    pub workload: bool,
    /// `container`: the container id, when the cgroup names one.
    pub container: bool,
    /// `destination`: the destination IP address.
    pub destination: bool,
    /// `port`: the destination port.
    pub port: bool,
}

impl Default for LabelChoice {
    fn default() -> Self {
        LabelChoice {
            workload: true,
            container: false,
            destination: true,
            port: true,
        }
    }
}

impl LabelChoice {
    /// `workload,destination,port`; `none` for no label at all.
    pub fn parse(text: &str) -> Result<LabelChoice, String> {
        let mut c = LabelChoice {
            workload: false,
            container: false,
            destination: false,
            port: false,
        };
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "workload" => c.workload = true,
                "container" => c.container = true,
                "destination" => c.destination = true,
                "port" => c.port = true,
                "none" => {}
                "pid" => {
                    return Err("--metrics-labels: pid is never a label (one series per \
                                process would grow without bound)"
                        .into());
                }
                other => {
                    return Err(format!(
                        "--metrics-labels: unknown label {other:?} (choose from workload, \
                         container, destination, port, or none)"
                    ));
                }
            }
        }
        Ok(c)
    }
}

/// A comm, as the kernel keeps it: at most 15 bytes.
type Comm = [u8; 16];
/// A container id: 64 hex digits.
type ContainerId = [u8; 64];

/// What identifies a series, built per record on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    workload: Option<Comm>,
    container: Option<ContainerId>,
    destination: Option<IpAddr>,
    port: Option<u16>,
    /// 0: as recorded; 1: every label but the workload is `other`; 2: all are `other`.
    fold: u8,
}

impl SeriesKey {
    fn of(e: &ConnEvent, labels: LabelChoice) -> SeriesKey {
        let bytes = |s: &str, out: &mut [u8]| {
            let n = s.len().min(out.len());
            out[..n].copy_from_slice(&s.as_bytes()[..n]);
        };
        SeriesKey {
            workload: labels.workload.then(|| {
                let mut c = [0; 16];
                bytes(&e.process.name, &mut c);
                c
            }),
            container: labels.container.then(|| {
                let mut c = [0; 64];
                if let Some(container) = e.process.container() {
                    bytes(&container.id, &mut c);
                }
                c
            }),
            destination: labels.destination.then(|| e.destination.ip()),
            port: labels.port.then(|| e.destination.port()),
            fold: 0,
        }
    }

    fn folded(self, fold: u8) -> SeriesKey {
        SeriesKey {
            workload: if fold >= 2 { None } else { self.workload },
            container: None,
            destination: None,
            port: None,
            fold,
        }
    }

    /// The label values, `other` for what is folded.
    fn labels(&self, choice: LabelChoice) -> Labels {
        let text = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let other = || "other".to_owned();
        let mut l = Labels::new();
        if choice.workload {
            let w = self.workload.map_or_else(other, |w| text(&w));
            l.push(("workload".into(), w));
        }
        if choice.container {
            let c = self.container.map_or_else(other, |c| text(&c));
            l.push(("container".into(), c));
        }
        if choice.destination {
            let d = self.destination.map_or_else(other, |ip| ip.to_string());
            l.push(("destination".into(), d));
        }
        if choice.port {
            let p = self.port.map_or_else(other, |p| p.to_string());
            l.push(("port".into(), p));
        }
        l
    }
}

/// The per-destination metric families.
#[derive(Debug)]
struct Families {
    attempts: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    resets: Family<Labels, Counter>,
    lost: Family<Labels, Counter>,
    retransmits: Family<Labels, Counter>,
    syn_retransmits: Family<Labels, Counter>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// One label set's handles, so that a record updates atomics without a lookup by labels.
/// Each is created on first use: a destination that only ever refuses has no success
/// series (and no histogram for it).
struct Series {
    labels: Labels,
    /// By [`Reason::CONNECT_OUTCOMES`] order.
    attempts: [Option<Counter>; 6],
    /// Success, failure.
    duration: [Option<Histogram>; 2],
    /// Received, sent.
    resets: [Option<Counter>; 2],
    /// Timeout, unreachable, error.
    lost: [Option<Counter>; 3],
    retransmits: Option<Counter>,
    syn_retransmits: Option<Counter>,
}

/// The metric in `slot`, made from `family` with the base labels and `extra` the first
/// time.
fn slot<'a, M: Clone, C: prometheus_client::metrics::family::MetricConstructor<M>>(
    slot: &'a mut Option<M>,
    family: &Family<Labels, M, C>,
    base: &Labels,
    extra: &[(&str, &str)],
) -> &'a M {
    slot.get_or_insert_with(|| {
        let mut l = base.clone();
        l.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        family.get_or_create_owned(&l)
    })
}

impl Series {
    fn new(labels: Labels) -> Series {
        Series {
            labels,
            attempts: Default::default(),
            duration: Default::default(),
            resets: Default::default(),
            lost: Default::default(),
            retransmits: None,
            syn_retransmits: None,
        }
    }

    fn record(&mut self, e: &ConnEvent, f: &Families) {
        let base = &self.labels;
        match e.action {
            Action::Connect => {
                let i = Reason::CONNECT_OUTCOMES
                    .iter()
                    .position(|r| *r == e.reason)
                    .unwrap_or(Reason::CONNECT_OUTCOMES.len() - 1);
                let ok = e.reason == Reason::Success;
                let outcome = if ok { "success" } else { "failure" };
                slot(
                    &mut self.attempts[i],
                    &f.attempts,
                    base,
                    &[("outcome", outcome), ("reason", e.reason.as_str())],
                )
                .inc();
                if e.syn_retransmits > 0 {
                    slot(&mut self.syn_retransmits, &f.syn_retransmits, base, &[])
                        .inc_by(u64::from(e.syn_retransmits));
                }
                if let Some(ns) = e.duration_ns {
                    slot(
                        &mut self.duration[usize::from(!ok)],
                        &f.duration,
                        base,
                        &[("outcome", outcome)],
                    )
                    .observe(ns as f64 / 1e9);
                }
            }
            Action::Reset => {
                let received = e.reason == Reason::Received;
                let direction = if received { "received" } else { "sent" };
                slot(
                    &mut self.resets[usize::from(!received)],
                    &f.resets,
                    base,
                    &[("direction", direction)],
                )
                .inc();
            }
            Action::Lost => {
                let (i, reason) = match e.reason {
                    Reason::Timeout => (0, "timeout"),
                    Reason::Unreachable => (1, "unreachable"),
                    _ => (2, "error"),
                };
                slot(&mut self.lost[i], &f.lost, base, &[("reason", reason)]).inc();
                self.retransmitted(e, f);
            }
            Action::Close => self.retransmitted(e, f),
            // Counted when their connection ends, as the close or loss carries the count.
            Action::Retransmit => {}
        }
    }

    fn retransmitted(&mut self, e: &ConnEvent, f: &Families) {
        if e.retransmits > 0 {
            slot(&mut self.retransmits, &f.retransmits, &self.labels, &[])
                .inc_by(u64::from(e.retransmits));
        }
    }
}

/// conntrace's own health, from the stats snapshots.
#[derive(Debug, Default)]
struct Health {
    received: Counter,
    malformed: Counter,
    kernel_submitted: Counter,
    kernel_lost: Counter,
    /// By `state` (connecting, established).
    unfollowed: Family<Labels, Counter>,
    calls_unfollowed: Counter,
    failed_unremembered: Counter,
    swept: Counter,
    /// By `program`.
    skipped: Family<Labels, Counter>,
    read_errors: Counter,
    /// By `kind` (connection, other).
    output_dropped: Family<Labels, Counter>,
    /// By `state` (connecting, established).
    in_flight: Family<Labels, Gauge>,
    series: Gauge,
    folded: Counter,
    /// The values last seen, for the counters' increments.
    last: Snapshot,
}

fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_owned(), value.to_owned())]
}

impl Health {
    fn register(&self, r: &mut Registry) {
        for (name, help, c) in [
            (
                "records_received",
                "Records received from the kernel.",
                &self.received,
            ),
            (
                "records_malformed",
                "Ring-buffer items that were not a record conntrace understands.",
                &self.malformed,
            ),
            (
                "kernel_records_submitted",
                "Records the kernel wrote into the ring buffers.",
                &self.kernel_submitted,
            ),
            (
                "kernel_records_lost",
                "Records the kernel could not write because a ring buffer was full.",
                &self.kernel_lost,
            ),
            (
                "connect_calls_unfollowed",
                "connect() calls whose return could not be followed.",
                &self.calls_unfollowed,
            ),
            (
                "failed_sockets_unremembered",
                "Failed sockets not remembered (their stored error may be reported again).",
                &self.failed_unremembered,
            ),
            (
                "connections_swept",
                "Connections ended at their socket's destruction: their close was skipped.",
                &self.swept,
            ),
            (
                "kernel_read_errors",
                "Failed reads of kernel memory.",
                &self.read_errors,
            ),
            (
                "metrics_folded_records",
                "Records counted in an `other` series because --metrics-max-series was reached.",
                &self.folded,
            ),
        ] {
            r.register(name, help, c.clone());
        }
        for (name, help, f) in [
            (
                "connections_unfollowed",
                "Connects (state=connecting) and established connections (state=established) \
                 not followed because their map was full (--max-connections).",
                &self.unfollowed,
            ),
            (
                "program_runs_skipped",
                "Runs of conntrace's programs the kernel skipped (one would have nested inside \
                 another BPF program on the same CPU): events never seen.",
                &self.skipped,
            ),
            (
                "output_dropped_records",
                "Records not written because the output's reader did not keep up, by kind.",
                &self.output_dropped,
            ),
        ] {
            r.register(name, help, f.clone());
        }
        r.register(
            "connections_in_flight",
            "Connections followed right now, connecting or established.",
            self.in_flight.clone(),
        );
        r.register(
            "metrics_series",
            "Label sets of the per-destination metrics (bounded by --metrics-max-series).",
            self.series.clone(),
        );
    }

    fn update(&mut self, s: &Snapshot) {
        let up = |c: &Counter, new: u64, old: u64| {
            c.inc_by(new.saturating_sub(old));
        };
        let (k, l) = (&s.kernel, &self.last.kernel);
        up(&self.received, s.counts.received, self.last.counts.received);
        up(
            &self.malformed,
            s.counts.malformed,
            self.last.counts.malformed,
        );
        up(&self.kernel_submitted, k.submitted, l.submitted);
        up(&self.kernel_lost, k.lost, l.lost);
        up(
            &self.calls_unfollowed,
            k.calls_unfollowed,
            l.calls_unfollowed,
        );
        up(
            &self.failed_unremembered,
            k.failed_unremembered,
            l.failed_unremembered,
        );
        up(&self.swept, k.swept, l.swept);
        up(&self.read_errors, k.read_errors, l.read_errors);
        for (state, new, old, now) in [
            (
                "connecting",
                k.connects_unfollowed,
                l.connects_unfollowed,
                k.connecting,
            ),
            (
                "established",
                k.established_unfollowed,
                l.established_unfollowed,
                k.established,
            ),
        ] {
            let labels = label("state", state);
            up(&self.unfollowed.get_or_create_owned(&labels), new, old);
            self.in_flight
                .get_or_create(&labels)
                .set(i64::try_from(now).unwrap_or(i64::MAX));
        }
        for (program, &n) in &k.skipped {
            let before = l.skipped.get(program).copied().unwrap_or(0);
            up(
                &self.skipped.get_or_create_owned(&label("program", program)),
                n,
                before,
            );
        }
        for (kind, new, old) in [
            (
                "connection",
                s.output.dropped.events,
                self.last.output.dropped.events,
            ),
            (
                "other",
                s.output.dropped.other,
                self.last.output.dropped.other,
            ),
        ] {
            up(
                &self
                    .output_dropped
                    .get_or_create_owned(&label("kind", kind)),
                new,
                old,
            );
        }
        self.last = s.clone();
    }
}

/// The metrics sink. Its registry goes to the HTTP server.
pub struct Metrics {
    labels: LabelChoice,
    max_series: usize,
    families: Families,
    series: HashMap<SeriesKey, Series>,
    folded_workloads: usize,
    health: Health,
    build_info: Family<Labels, Gauge>,
    /// Shared with the HTTP server once every metric is registered: the metrics are
    /// atomics, so the server encodes while the event loop counts.
    registry: Arc<Registry>,
}

impl Metrics {
    pub fn new(labels: LabelChoice, max_series: usize) -> Metrics {
        let families = Families {
            attempts: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            resets: Family::default(),
            lost: Family::default(),
            retransmits: Family::default(),
            syn_retransmits: Family::default(),
        };
        let mut registry = Registry::with_prefix("conntrace");
        registry.register(
            "connect_attempts",
            "TCP connect attempts, by how they ended (event.outcome, event.reason).",
            families.attempts.clone(),
        );
        registry.register_with_unit(
            "connect_duration",
            "Connect attempts by the time they took: the handshake (success) or the wait \
             until they failed (failure; attempts that failed before any SYN are not timed).",
            Unit::Seconds,
            families.duration.clone(),
        );
        registry.register(
            "resets",
            "RSTs on established connections, received from the peer or sent by this host.",
            families.resets.clone(),
        );
        registry.register(
            "connections_lost",
            "Established connections the kernel killed with an error (unanswered \
             retransmissions or keepalives: timeout; ICMP: unreachable).",
            families.lost.clone(),
        );
        registry.register(
            "retransmits",
            "Segments retransmitted on established connections, counted when the connection ends.",
            families.retransmits.clone(),
        );
        registry.register(
            "syn_retransmits",
            "SYNs retransmitted by connect attempts.",
            families.syn_retransmits.clone(),
        );
        let health = Health::default();
        health.register(&mut registry);
        let build_info = Family::default();
        registry.register(
            "build_info",
            "Always 1: this conntrace's version, the kernel, and how it sees a SYN leave.",
            build_info.clone(),
        );
        Metrics {
            labels,
            max_series: max_series.max(1),
            families,
            series: HashMap::new(),
            folded_workloads: 0,
            health,
            build_info,
            registry: Arc::new(registry),
        }
    }

    /// The registry, for the HTTP server.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// The key of the series a record belongs to, creating it (or folding) when new.
    fn series_key(&mut self, e: &ConnEvent) -> SeriesKey {
        let exact = SeriesKey::of(e, self.labels);
        let key = if self.series.contains_key(&exact) || self.series.len() < self.max_series {
            exact
        } else {
            self.health.folded.inc();
            let own = exact.folded(1);
            if self.series.contains_key(&own) || self.folded_workloads < MAX_FOLDED_WORKLOADS {
                own
            } else {
                exact.folded(2)
            }
        };
        if !self.series.contains_key(&key) {
            if key.fold == 1 {
                self.folded_workloads += 1;
            }
            self.series
                .insert(key, Series::new(key.labels(self.labels)));
            self.health
                .series
                .set(i64::try_from(self.series.len()).unwrap_or(i64::MAX));
        }
        key
    }
}

impl Sink for Metrics {
    fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        self.build_info
            .get_or_create(&vec![
                ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
                ("kernel".to_owned(), info.kernel.clone()),
                ("connect_hook".to_owned(), info.connect_hook.clone()),
            ])
            .set(1);
        Ok(())
    }

    fn event(&mut self, e: &ConnEvent) -> std::io::Result<()> {
        let key = self.series_key(e);
        if let Some(series) = self.series.get_mut(&key) {
            series.record(e, &self.families);
        }
        Ok(())
    }

    fn health_every(&self) -> Option<Duration> {
        Some(HEALTH_EVERY)
    }

    fn health(&mut self, s: &Snapshot) {
        self.health.update(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::connect;

    fn exposition(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &m.registry()).unwrap();
        out
    }

    /// The value of the sample whose line starts with `series` (name and labels).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn counts_attempts_by_outcome_and_reason_per_destination() {
        let mut m = Metrics::new(LabelChoice::default(), 100);
        for (reason, dest) in [
            (Reason::Refused, "10.0.0.2:80"),
            (Reason::Refused, "10.0.0.2:80"),
            (Reason::Success, "10.0.0.2:80"),
            (Reason::Timeout, "10.0.0.3:443"),
        ] {
            m.event(&connect(reason, dest, 2)).unwrap();
        }
        let text = exposition(&m);
        let labels = r#"workload="app",destination="10.0.0.2",port="80""#;
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"conntrace_connect_attempts_total{{{labels},outcome="failure",reason="refused"}}"#
                )
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"conntrace_connect_attempts_total{{{labels},outcome="success",reason="success"}}"#
                )
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"conntrace_connect_duration_seconds_count{{{labels},outcome="success"}}"#
                )
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"conntrace_connect_duration_seconds_bucket{{{labels},outcome="success",le="0.0025"}}"#
                )
            ),
            Some(1.0),
            "2 ms is in the 2.5 ms bucket: {text}"
        );
        assert!(text.contains("# TYPE conntrace_connect_attempts_total counter"));
        assert!(!text.contains("pid"), "{text}");
    }

    #[test]
    fn labels_left_out_are_absent_not_empty() {
        let mut m = Metrics::new(LabelChoice::parse("workload").unwrap(), 100);
        m.event(&connect(Reason::Refused, "10.0.0.2:80", 1))
            .unwrap();
        m.event(&connect(Reason::Refused, "10.0.0.3:81", 1))
            .unwrap();
        let text = exposition(&m);
        assert_eq!(
            value(
                &text,
                r#"conntrace_connect_attempts_total{workload="app",outcome="failure",reason="refused"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert!(!text.contains("destination="), "{text}");
        assert!(!LabelChoice::parse("none").unwrap().workload);
        assert!(LabelChoice::parse("pid").unwrap_err().contains("never"));
        assert!(LabelChoice::parse("workload,host").is_err());
    }

    #[test]
    fn series_past_the_cap_fold_into_other() {
        let mut m = Metrics::new(LabelChoice::default(), 2);
        for port in 1..=5 {
            m.event(&connect(Reason::Refused, &format!("10.0.0.2:{port}"), 1))
                .unwrap();
        }
        let text = exposition(&m);
        let other = r#"conntrace_connect_attempts_total{workload="app",destination="other",port="other",outcome="failure",reason="refused"}"#;
        assert_eq!(value(&text, other), Some(3.0), "{text}");
        assert_eq!(value(&text, "conntrace_metrics_series"), Some(3.0));
        assert_eq!(
            value(&text, "conntrace_metrics_folded_records_total"),
            Some(3.0)
        );
    }

    #[test]
    fn health_follows_the_snapshots() {
        let mut m = Metrics::new(LabelChoice::default(), 10);
        let mut s = Snapshot::default();
        s.counts.received = 10;
        s.kernel.lost = 2;
        s.kernel.connecting = 4;
        s.kernel.skipped.insert("inet_sock_set_state".into(), 3);
        s.output.dropped.events = 3;
        m.health(&s);
        s.counts.received = 15;
        m.health(&s);
        m.start(&RunInfo {
            kernel: "6.18".into(),
            connect_hook: "tracepoint".into(),
            ..RunInfo::default()
        })
        .unwrap();
        let text = exposition(&m);
        assert_eq!(value(&text, "conntrace_records_received_total"), Some(15.0));
        assert_eq!(
            value(&text, "conntrace_kernel_records_lost_total"),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"conntrace_connections_in_flight{state="connecting"}"#
            ),
            Some(4.0)
        );
        assert_eq!(
            value(
                &text,
                r#"conntrace_program_runs_skipped_total{program="inet_sock_set_state"}"#
            ),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"conntrace_output_dropped_records_total{kind="connection"}"#
            ),
            Some(3.0)
        );
        assert!(text.contains(r#"conntrace_build_info{version=""#), "{text}");
    }
}
