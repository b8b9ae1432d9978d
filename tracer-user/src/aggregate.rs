//! Connection records folded into one entry per (workload, destination): attempts and how
//! they ended, resets, retransmits, latency histograms, first and last seen, the last
//! error. Pure: no I/O and no clock (times come from the records). Bounded: past
//! `max_keys` entries, a new destination folds into its workload's `other` entry, so memory
//! stays flat however many destinations appear.
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
};

use hdrhistogram::Histogram;

use crate::model::{Action, ConnEvent, Container, Identity, Pod, Process, Reason};

/// `--max-keys` by default.
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// Workloads that get an `other` entry of their own once the table is full; records of any
/// further workload fold into the single catch-all entry (workload and destination `other`).
pub const MAX_OVERFLOW_WORKLOADS: usize = 64;
/// Process ids remembered per entry; more are only flagged.
pub const MAX_PIDS: usize = 8;
/// Ages of the most recent resets received, per entry, for the idle-timeout rule.
pub const MAX_RESET_AGES: usize = 32;

/// Histograms take values in nanoseconds, to one significant digit (hdrhistogram's
/// buckets are then within 6.25 % of a value), clamped to one hour: a histogram never
/// grows past 480 counters of 4 bytes, so an entry stays under 4 KiB and the default
/// table under 40 MiB. Two digits would cost seven times as much.
const HIST_LOW_NS: u64 = 1_000;
const HIST_START_HIGH_NS: u64 = 1_000_000;
const HIST_MAX_NS: u64 = 3_600 * 1_000_000_000;
const HIST_SIGFIG: u8 = 1;
/// The relative error of a histogram value.
pub const HIST_PRECISION: f64 = 0.0625;

/// Who connects. Keyed on what the kernel reports (comm and cgroups), not on procfs
/// details: a short-lived process is often gone before procfs is read, and its records
/// must not split into a second entry. The identity (container, pod, owning workload) is
/// a function of the cgroups, so it rides in the key without being part of its equality:
/// a record whose identity was not resolved in time lands in the same entry, and the
/// entry takes the identity from the first record that has one.
#[derive(Clone, Debug)]
pub struct WorkloadId {
    pub name: String,
    pub cgroup_id: u64,
    pub cgroup_v1_id: u64,
    pub identity: Option<Arc<Identity>>,
}

impl WorkloadId {
    pub fn of(p: &Process) -> WorkloadId {
        WorkloadId {
            name: p.name.clone(),
            cgroup_id: p.cgroup_id,
            cgroup_v1_id: p.cgroup_v1_id,
            identity: p.identity.clone(),
        }
    }

    /// Heap bytes held (an identity is shared by every entry of its cgroup; counted
    /// whole here, an over-estimate).
    pub fn heap_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        self.name.capacity()
            + self.identity.as_ref().map_or(0, |i| {
                size_of::<Identity>()
                    + i.container
                        .as_ref()
                        .map_or(0, |c| c.id.capacity() + text(&c.runtime) + text(&c.name))
                    + i.pod.as_ref().map_or(0, |p| {
                        text(&p.name)
                            + text(&p.uid)
                            + text(&p.namespace)
                            + p.workload.as_ref().map_or(0, |w| w.name.capacity())
                    })
            })
    }

    fn parts(&self) -> (&str, u64, u64) {
        (&self.name, self.cgroup_id, self.cgroup_v1_id)
    }

    pub fn container(&self) -> Option<&Container> {
        self.identity.as_ref()?.container.as_ref()
    }

    pub fn pod(&self) -> Option<&Pod> {
        self.identity.as_ref()?.pod.as_ref()
    }

    /// How people name it: `shop/deployment/web [app] (curl)` for a process in a pod,
    /// the task name alone on the host.
    pub fn label(&self) -> String {
        match self.identity.as_ref().and_then(|i| i.label()) {
            Some(label) => format!("{label} ({})", self.name),
            None => self.name.clone(),
        }
    }
}

impl PartialEq for WorkloadId {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for WorkloadId {}

impl std::hash::Hash for WorkloadId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialOrd for WorkloadId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WorkloadId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.parts().cmp(&other.parts())
    }
}

/// An entry's key. `None` stands for `other`: records folded in once the table was full.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub workload: Option<WorkloadId>,
    pub destination: Option<SocketAddr>,
    /// Connections the workload accepted (it listens on `destination`), apart from those
    /// it made.
    pub inbound: bool,
}

impl Key {
    /// The workload's task name, or `other`.
    pub fn workload_name(&self) -> &str {
        self.workload.as_ref().map_or("other", |w| w.name.as_str())
    }

    /// The workload as people name it (see [`WorkloadId::label`]), or `other`.
    pub fn workload_label(&self) -> String {
        self.workload
            .as_ref()
            .map_or_else(|| "other".to_owned(), WorkloadId::label)
    }

    /// `10.0.0.2:80`, `[fd00::2]:80`, or `other`.
    pub fn destination_label(&self) -> String {
        self.destination
            .map_or_else(|| "other".to_owned(), |d| d.to_string())
    }
}

/// Process ids seen for an entry: the first [`MAX_PIDS`], and whether there were more.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PidSet {
    pub pids: Vec<u32>,
    pub more: bool,
}

impl PidSet {
    pub fn insert(&mut self, pid: u32) {
        if self.pids.contains(&pid) {
            return;
        }
        if self.pids.len() < MAX_PIDS {
            self.pids.push(pid);
        } else {
            self.more = true;
        }
    }
}

/// A latency histogram, allocated on the first value (most entries only ever need one of
/// their two).
#[derive(Clone, Debug, Default)]
pub struct Latency(Option<Box<Histogram<u32>>>);

/// Quantiles of a [`Latency`], in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantiles {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        if self.0.is_none() {
            self.0 = Histogram::new_with_bounds(HIST_LOW_NS, HIST_START_HIGH_NS, HIST_SIGFIG)
                .ok()
                .map(|mut h| {
                    h.auto(true);
                    Box::new(h)
                });
        }
        if let Some(h) = self.0.as_mut() {
            // Clamped below the auto-resize ceiling, so recording cannot fail.
            let _ = h.record(ns.min(HIST_MAX_NS));
        }
    }

    pub fn quantiles(&self) -> Option<Quantiles> {
        let h = self.0.as_ref().filter(|h| !h.is_empty())?;
        Some(Quantiles {
            count: h.len(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        })
    }

    /// Adds another histogram's values.
    pub fn merge(&mut self, other: &Latency) {
        let Some(theirs) = &other.0 else { return };
        match &mut self.0 {
            None => self.0 = Some(theirs.clone()),
            // Same bounds and auto-resize: adding cannot fail.
            Some(ours) => {
                let _ = ours.add(theirs.as_ref());
            }
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.0.as_ref().map_or(0, |h| {
            size_of::<Histogram<u32>>() + h.distinct_values() * size_of::<u32>()
        })
    }
}

/// Attempts that failed one way: how many, their SYNs, how long each waited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailureStats {
    pub count: u64,
    /// SYNs sent, summed over the attempts.
    pub syns_sent: u64,
    pub max_syns: u32,
    /// Attempts that carried a duration, and the sum, least and most of those.
    pub timed: u64,
    pub total_ns: u64,
    pub min_ns: u64,
    pub max_ns: u64,
}

impl FailureStats {
    fn add(&mut self, e: &ConnEvent) {
        self.count += 1;
        self.syns_sent += u64::from(e.syns_sent());
        self.max_syns = self.max_syns.max(e.syns_sent());
        if let Some(d) = e.duration_ns {
            self.min_ns = if self.timed == 0 {
                d
            } else {
                self.min_ns.min(d)
            };
            self.max_ns = self.max_ns.max(d);
            self.total_ns = self.total_ns.saturating_add(d);
            self.timed += 1;
        }
    }

    fn merge(&mut self, o: &FailureStats) {
        if o.timed > 0 {
            self.min_ns = if self.timed == 0 {
                o.min_ns
            } else {
                self.min_ns.min(o.min_ns)
            };
        }
        self.count += o.count;
        self.syns_sent += o.syns_sent;
        self.max_syns = self.max_syns.max(o.max_syns);
        self.timed += o.timed;
        self.total_ns = self.total_ns.saturating_add(o.total_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    /// The mean time waited, when any attempt carried one.
    pub fn mean_ns(&self) -> Option<u64> {
        (self.timed > 0).then(|| self.total_ns / self.timed)
    }
}

/// Keeps the most recent `MAX_RESET_AGES` values, oldest first.
fn push_bounded(values: &mut VecDeque<u64>, v: u64) {
    if values.len() == MAX_RESET_AGES {
        values.pop_front();
    }
    values.push_back(v);
}

/// Resets received on connections the peer had already closed (stale keep-alive reuse).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StaleReuse {
    pub count: u64,
    /// How long each connection had been idle when the peer's FIN came (the peer's idle
    /// timeout), most recent last.
    pub idle_before_fin_ns: VecDeque<u64>,
    /// How long after the peer's FIN the connection was used again (and reset).
    pub fin_to_reset_ns: VecDeque<u64>,
}

impl StaleReuse {
    fn record(&mut self, fin: crate::model::PeerFin) {
        self.count += 1;
        push_bounded(&mut self.idle_before_fin_ns, fin.idle_before_ns);
        push_bounded(&mut self.fin_to_reset_ns, fin.since_ns);
    }
}

/// The most recent failure of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastError {
    pub time_ns: u64,
    pub action: Action,
    pub reason: Reason,
    pub errno: Option<u32>,
}

/// Everything known about one (workload, destination).
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub executable: Option<Arc<str>>,
    pub pids: PidSet,
    /// Network namespace of the most recent record.
    pub netns: u32,
    pub attempts: u64,
    pub successes: u64,
    pub refused: FailureStats,
    pub timeout: FailureStats,
    pub unreachable: FailureStats,
    pub abandoned: FailureStats,
    /// Unreachable attempts by errno (EHOSTUNREACH, ENETUNREACH, ...).
    pub unreachable_errnos: BTreeMap<u32, u64>,
    /// Attempts that failed before any SYN, by errno.
    pub local_errors: BTreeMap<u32, u64>,
    /// Failed attempts none of whose SYNs left this host (its firewall, neighbour
    /// resolution or routing dropped them all), by the kernel's drop reason.
    pub dropped_here: BTreeMap<String, u64>,
    /// Of those, the ones that timed out and the ones the application abandoned (they are
    /// counted in `timeout` and `abandoned` too).
    pub timeouts_dropped_here: u64,
    pub abandoned_dropped_here: u64,
    /// Unreachable attempts that the application closed after the ICMP error came back.
    pub unreachable_closed_by_app: u64,
    pub resets_received: u64,
    pub resets_sent: u64,
    /// Ages of the most recent resets received, oldest first.
    pub reset_ages_ns: VecDeque<u64>,
    /// Resets received after the peer had closed its side (its FIN): a pooled connection
    /// reused after the server closed it (counted in `resets_received` too).
    pub stale_reuse: StaleReuse,
    /// Connections the peer closed (FIN or RST) before sending a single byte.
    pub closed_before_reply: u64,
    /// Connections whose end the kernel reported with their byte counts: what
    /// `closed_before_reply` is a share of.
    pub ends_with_bytes: u64,
    /// Established connections the kernel killed with an error, by reason.
    pub lost: BTreeMap<Reason, u64>,
    /// Established connections that ended (closed or lost).
    pub connections_ended: u64,
    pub syn_retransmits: u64,
    /// Retransmitted segments on established connections.
    pub retransmits: u64,
    pub connect_time: Latency,
    pub time_to_fail: Latency,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub last_error: Option<LastError>,
    /// The interval (see [`Aggregator::start_interval`]) this entry last changed in.
    changed: u64,
}

impl Entry {
    pub fn local_error_count(&self) -> u64 {
        self.local_errors.values().sum()
    }

    /// Connect attempts that failed, of any kind.
    pub fn failures(&self) -> u64 {
        self.refused.count
            + self.timeout.count
            + self.unreachable.count
            + self.abandoned.count
            + self.local_error_count()
    }

    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    /// Failed attempts per attempt, 0 when there were none.
    pub fn failure_ratio(&self) -> f64 {
        if self.attempts == 0 {
            0.0
        } else {
            self.failures() as f64 / self.attempts as f64
        }
    }

    /// The stats of one connect failure reason.
    pub fn failure_stats(&self, reason: Reason) -> Option<&FailureStats> {
        match reason {
            Reason::Refused => Some(&self.refused),
            Reason::Timeout => Some(&self.timeout),
            Reason::Unreachable => Some(&self.unreachable),
            Reason::Abandoned => Some(&self.abandoned),
            _ => None,
        }
    }

    fn failure_stats_mut(&mut self, reason: Reason) -> Option<&mut FailureStats> {
        match reason {
            Reason::Refused => Some(&mut self.refused),
            Reason::Timeout => Some(&mut self.timeout),
            Reason::Unreachable => Some(&mut self.unreachable),
            Reason::Abandoned => Some(&mut self.abandoned),
            _ => None,
        }
    }

    fn new(time_ns: u64) -> Entry {
        Entry {
            first_seen_ns: time_ns,
            last_seen_ns: time_ns,
            ..Entry::default()
        }
    }

    fn record(&mut self, e: &ConnEvent) {
        self.first_seen_ns = self.first_seen_ns.min(e.time_ns);
        self.last_seen_ns = self.last_seen_ns.max(e.time_ns);
        self.pids.insert(e.process.pid);
        self.netns = e.netns;
        if self.executable.is_none() {
            self.executable.clone_from(&e.process.executable);
        }
        match e.action {
            Action::Connect => self.record_connect(e),
            Action::Reset if e.reason == Reason::Received => {
                self.resets_received += 1;
                if let Some(age) = e.age_ns {
                    push_bounded(&mut self.reset_ages_ns, age);
                }
                if let Some(fin) = e.details.peer_fin {
                    self.stale_reuse.record(fin);
                }
                self.note_end(e, true);
                self.note_error(e);
            }
            Action::Reset => self.resets_sent += 1,
            Action::Lost => {
                *self.lost.entry(e.reason).or_default() += 1;
                self.connections_ended += 1;
                self.retransmits += u64::from(e.retransmits);
                self.note_end(e, false);
                self.note_error(e);
            }
            Action::Close => {
                self.connections_ended += 1;
                self.retransmits += u64::from(e.retransmits);
                self.note_end(e, false);
            }
            // Not reached: the aggregator skips these (see `Aggregator::record`).
            Action::Retransmit => {}
        }
    }

    fn record_connect(&mut self, e: &ConnEvent) {
        self.attempts += 1;
        self.syn_retransmits += u64::from(e.syn_retransmits);
        match e.reason {
            Reason::Success => {
                self.successes += 1;
                if let Some(d) = e.duration_ns {
                    self.connect_time.record(d);
                }
                return;
            }
            Reason::LocalError => *self.local_errors.entry(e.errno.unwrap_or(0)).or_default() += 1,
            reason => {
                if let Some(stats) = self.failure_stats_mut(reason) {
                    stats.add(e);
                }
                self.note_local_drops(e);
                if e.details.closed_after_error {
                    self.unreachable_closed_by_app += 1;
                }
                if reason == Reason::Unreachable {
                    *self
                        .unreachable_errnos
                        .entry(e.errno.unwrap_or(0))
                        .or_default() += 1;
                }
                if let Some(d) = e.duration_ns {
                    self.time_to_fail.record(d);
                }
            }
        }
        self.note_error(e);
    }

    /// An established connection's end: did the peer close it before replying at all?
    fn note_end(&mut self, e: &ConnEvent, by_reset: bool) {
        let Some(bytes) = e.details.bytes else {
            return;
        };
        self.ends_with_bytes += 1;
        let peer_closed = by_reset || e.details.peer_fin.is_some();
        if peer_closed && bytes.received == 0 {
            self.closed_before_reply += 1;
        }
    }

    /// A failed attempt whose SYNs all stayed on this host.
    fn note_local_drops(&mut self, e: &ConnEvent) {
        if e.details.local_drops == 0 || e.syns_sent() > 0 {
            return;
        }
        let reason = e.details.drop_reason.as_deref().unwrap_or("UNKNOWN");
        match self.dropped_here.get_mut(reason) {
            Some(n) => *n += 1,
            None => {
                self.dropped_here.insert(reason.to_owned(), 1);
            }
        }
        match e.reason {
            Reason::Timeout => self.timeouts_dropped_here += 1,
            Reason::Abandoned => self.abandoned_dropped_here += 1,
            _ => {}
        }
    }

    /// Failed attempts none of whose SYNs left this host.
    pub fn dropped_here_count(&self) -> u64 {
        self.dropped_here.values().sum()
    }

    fn note_error(&mut self, e: &ConnEvent) {
        if self.last_error.is_none_or(|last| last.time_ns <= e.time_ns) {
            self.last_error = Some(LastError {
                time_ns: e.time_ns,
                action: e.action,
                reason: e.reason,
                errno: e.errno,
            });
        }
    }

    /// Adds what another entry of the same key saw (another slice of time).
    pub fn merge(&mut self, o: &Entry) {
        if o.last_seen_ns >= self.last_seen_ns {
            self.netns = o.netns;
        }
        self.first_seen_ns = self.first_seen_ns.min(o.first_seen_ns);
        self.last_seen_ns = self.last_seen_ns.max(o.last_seen_ns);
        if self.executable.is_none() {
            self.executable.clone_from(&o.executable);
        }
        for pid in &o.pids.pids {
            self.pids.insert(*pid);
        }
        self.pids.more |= o.pids.more;
        self.attempts += o.attempts;
        self.successes += o.successes;
        self.refused.merge(&o.refused);
        self.timeout.merge(&o.timeout);
        self.unreachable.merge(&o.unreachable);
        self.abandoned.merge(&o.abandoned);
        let add = |ours: &mut BTreeMap<u32, u64>, theirs: &BTreeMap<u32, u64>| {
            for (k, v) in theirs {
                *ours.entry(*k).or_default() += v;
            }
        };
        add(&mut self.unreachable_errnos, &o.unreachable_errnos);
        add(&mut self.local_errors, &o.local_errors);
        for (reason, n) in &o.dropped_here {
            *self.dropped_here.entry(reason.clone()).or_default() += n;
        }
        self.timeouts_dropped_here += o.timeouts_dropped_here;
        self.abandoned_dropped_here += o.abandoned_dropped_here;
        self.unreachable_closed_by_app += o.unreachable_closed_by_app;
        self.resets_received += o.resets_received;
        self.resets_sent += o.resets_sent;
        for age in &o.reset_ages_ns {
            if self.reset_ages_ns.len() == MAX_RESET_AGES {
                self.reset_ages_ns.pop_front();
            }
            self.reset_ages_ns.push_back(*age);
        }
        for (reason, n) in &o.lost {
            *self.lost.entry(*reason).or_default() += n;
        }
        self.connections_ended += o.connections_ended;
        self.syn_retransmits += o.syn_retransmits;
        self.retransmits += o.retransmits;
        self.connect_time.merge(&o.connect_time);
        self.time_to_fail.merge(&o.time_to_fail);
        if let Some(theirs) = o.last_error
            && self
                .last_error
                .is_none_or(|ours| ours.time_ns <= theirs.time_ns)
        {
            self.last_error = Some(theirs);
        }
    }

    /// Heap bytes held, approximately (histograms, strings, small collections).
    pub fn heap_bytes(&self) -> usize {
        // A BTreeMap entry costs its key and value plus about as much again in node overhead.
        let map_entry = 2 * (size_of::<u32>() + size_of::<u64>());
        self.connect_time.heap_bytes()
            + self.time_to_fail.heap_bytes()
            // Shared with the enricher's cache, but counted here as if it were not.
            + self.executable.as_ref().map_or(0, |e| e.len())
            + self.pids.pids.capacity() * size_of::<u32>()
            + (self.reset_ages_ns.capacity()
                + self.stale_reuse.idle_before_fin_ns.capacity()
                + self.stale_reuse.fin_to_reset_ns.capacity())
                * size_of::<u64>()
            + (self.unreachable_errnos.len() + self.local_errors.len() + self.lost.len())
                * map_entry
            + self
                .dropped_here
                .keys()
                .map(|k| k.capacity() + map_entry)
                .sum::<usize>()
    }
}

/// The table of entries.
#[derive(Debug)]
pub struct Aggregator {
    max_keys: usize,
    entries: HashMap<Key, Entry>,
    /// Entries with a workload and a destination (the ones `max_keys` bounds).
    exact: usize,
    /// Workloads with an `other` entry of their own.
    overflow_workloads: usize,
    evictions: u64,
    interval: u64,
}

impl Aggregator {
    /// `max_keys` of at least 1 (0 is taken as 1).
    pub fn new(max_keys: usize) -> Aggregator {
        Aggregator {
            max_keys: max_keys.max(1),
            entries: HashMap::new(),
            exact: 0,
            overflow_workloads: 0,
            evictions: 0,
            interval: 0,
        }
    }

    /// Folds one record in. Per-segment retransmit records are skipped: the close or loss
    /// of their connection carries the same count.
    pub fn record(&mut self, e: &ConnEvent) {
        if e.action == Action::Retransmit {
            return;
        }
        let key = self.key_for(e);
        let interval = self.interval;
        self.learn_identity(&key, e);
        let entry = self
            .entries
            .entry(key)
            .or_insert_with(|| Entry::new(e.time_ns));
        entry.record(e);
        entry.changed = interval;
    }

    /// Gives an entry whose key has no identity yet the one this record carries (keys
    /// compare without it, so the entry is re-keyed in place).
    fn learn_identity(&mut self, key: &Key, e: &ConnEvent) {
        let Some(identity) = &e.process.identity else {
            return;
        };
        // The common case (the key has it already) costs one lookup, no re-insertion.
        let lacks = self
            .entries
            .get_key_value(key)
            .and_then(|(k, _)| k.workload.as_ref())
            .is_some_and(|w| w.identity.is_none());
        if !lacks {
            return;
        }
        let Some((old, entry)) = self.entries.remove_entry(key) else {
            return;
        };
        let mut new = old;
        if let Some(w) = new.workload.as_mut()
            && w.identity.is_none()
            && WorkloadId::of(&e.process) == *w
        {
            w.identity = Some(Arc::clone(identity));
        }
        self.entries.insert(new, entry);
    }

    /// The entry a record goes to, making room for a new one while the table allows.
    fn key_for(&mut self, e: &ConnEvent) -> Key {
        let workload = WorkloadId::of(&e.process);
        let exact = Key {
            workload: Some(workload),
            destination: Some(e.destination),
            inbound: e.details.accepted,
        };
        if self.entries.contains_key(&exact) {
            return exact;
        }
        if self.exact < self.max_keys {
            self.exact += 1;
            return exact;
        }
        self.evictions += 1;
        let folded = Key {
            destination: None,
            ..exact
        };
        if self.entries.contains_key(&folded) {
            return folded;
        }
        if self.overflow_workloads < MAX_OVERFLOW_WORKLOADS {
            self.overflow_workloads += 1;
            return folded;
        }
        Key {
            workload: None,
            destination: None,
            inbound: false,
        }
    }

    pub fn get(&self, key: &Key) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Adds another table's entries (another slice of time) to this one, key by key. The
    /// keys were already bounded (and folded) by the other table.
    pub fn merge(&mut self, other: &Aggregator) {
        for (key, theirs) in &other.entries {
            match self.entries.get_mut(key) {
                Some(ours) => ours.merge(theirs),
                None => {
                    if key.workload.is_some() && key.destination.is_some() {
                        self.exact += 1;
                    }
                    self.entries.insert(key.clone(), theirs.clone());
                }
            }
        }
        self.evictions += other.evictions;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries.iter()
    }

    /// Entries changed since the last [`Aggregator::start_interval`].
    pub fn changed(&self) -> impl Iterator<Item = (&Key, &Entry)> {
        self.entries
            .iter()
            .filter(|(_, e)| e.changed == self.interval)
    }

    /// Starts a new interval: [`Aggregator::changed`] is empty until the next record.
    pub fn start_interval(&mut self) {
        self.interval += 1;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// The most entries the table can ever hold: `max_keys`, the per-workload `other`
    /// entries and the catch-all.
    pub fn capacity(&self) -> usize {
        self.max_keys + MAX_OVERFLOW_WORKLOADS + 1
    }

    /// Records that found the table full and were folded into an `other` entry.
    pub fn folded(&self) -> u64 {
        self.evictions
    }

    /// Bytes held, approximately: the table's slots and each entry's heap.
    pub fn approx_bytes(&self) -> usize {
        let slot = size_of::<Key>() + size_of::<Entry>() + size_of::<u64>();
        self.entries.capacity() * slot
            + self
                .entries
                .iter()
                .map(|(k, e)| {
                    k.workload.as_ref().map_or(0, WorkloadId::heap_bytes) + e.heap_bytes()
                })
                .sum::<usize>()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::Outcome;

    #[test]
    fn slices_merge_into_the_table_one_would_have_built() {
        let records = [
            connect(Reason::Refused, "10.0.0.2:80", 1),
            connect(Reason::Success, "10.0.0.2:80", 3),
            connect(Reason::Timeout, "10.0.0.2:80", 3000),
            reset_received("10.0.0.2:80", 200),
            connect(Reason::Refused, "10.0.0.3:80", 2),
            with_errno(connect(Reason::LocalError, "10.0.0.3:80", 0), 99),
        ];
        let mut whole = Aggregator::new(100);
        let (mut a, mut b) = (Aggregator::new(100), Aggregator::new(100));
        for (i, r) in records.iter().enumerate() {
            whole.record(r);
            if i % 2 == 0 { a.record(r) } else { b.record(r) }
        }
        let mut merged = Aggregator::new(100);
        merged.merge(&a);
        merged.merge(&b);
        assert_eq!(merged.len(), whole.len());
        for (k, w) in whole.iter() {
            let m = merged.get(k).unwrap();
            assert_eq!(
                (m.attempts, m.successes, m.failures(), m.resets_received),
                (w.attempts, w.successes, w.failures(), w.resets_received)
            );
            assert_eq!(m.refused, w.refused);
            assert_eq!(m.timeout, w.timeout);
            assert_eq!(m.local_errors, w.local_errors);
            assert_eq!(m.connect_time.quantiles(), w.connect_time.quantiles());
            assert_eq!(m.time_to_fail.quantiles(), w.time_to_fail.quantiles());
            assert_eq!(m.last_error, w.last_error);
            assert_eq!(
                (m.first_seen_ns, m.last_seen_ns),
                (w.first_seen_ns, w.last_seen_ns)
            );
        }
    }

    /// A connect record from `comm` (pid 100, cgroup 7) to `dest`, ending with `reason`.
    pub fn connect(reason: Reason, dest: &str, duration_ms: u64) -> ConnEvent {
        let (outcome, errno) = match reason {
            Reason::Success => (Outcome::Success, None),
            Reason::Refused => (Outcome::Failure, Some(111)),
            Reason::Timeout => (Outcome::Failure, Some(110)),
            Reason::Unreachable => (Outcome::Failure, Some(113)),
            Reason::LocalError => (Outcome::Failure, Some(101)),
            _ => (Outcome::Failure, None),
        };
        ConnEvent {
            time_ns: 1_000_000_000_000,
            action: Action::Connect,
            reason,
            outcome,
            duration_ns: Some(duration_ms * 1_000_000),
            errno,
            process: Process {
                pid: 100,
                tid: 100,
                uid: 0,
                name: "app".into(),
                executable: Some("/usr/bin/app".into()),
                cgroup_id: 7,
                ..Process::default()
            },
            source: Some("10.0.0.1:40000".parse().unwrap()),
            destination: dest.parse().unwrap(),
            netns: 4_026_531_840,
            syn_retransmits: 0,
            retransmits: 0,
            tcp_state: None,
            age_ns: None,
            details: Default::default(),
        }
    }

    pub fn with_errno(mut e: ConnEvent, errno: u32) -> ConnEvent {
        e.errno = Some(errno);
        e
    }

    pub fn reset_received(dest: &str, age_ms: u64) -> ConnEvent {
        ConnEvent {
            action: Action::Reset,
            reason: Reason::Received,
            outcome: Outcome::Failure,
            duration_ns: None,
            errno: None,
            tcp_state: Some(tracer_common::tcp_state::ESTABLISHED),
            age_ns: Some(age_ms * 1_000_000),
            ..connect(Reason::Success, dest, 0)
        }
    }

    pub fn closed(dest: &str, retransmits: u32) -> ConnEvent {
        ConnEvent {
            action: Action::Close,
            reason: Reason::Closed,
            outcome: Outcome::Success,
            duration_ns: None,
            retransmits,
            ..connect(Reason::Success, dest, 0)
        }
    }

    pub fn key(dest: &str) -> Key {
        Key {
            workload: Some(WorkloadId {
                name: "app".into(),
                cgroup_id: 7,
                cgroup_v1_id: 0,
                identity: None,
            }),
            destination: Some(dest.parse().unwrap()),
            inbound: false,
        }
    }

    const DEST: &str = "10.0.0.2:80";

    #[test]
    fn counts_each_outcome_once() {
        let mut agg = Aggregator::new(10);
        for reason in Reason::CONNECT_OUTCOMES {
            agg.record(&connect(reason, DEST, 3));
        }
        agg.record(&connect(Reason::Success, DEST, 5));
        let e = agg.get(&key(DEST)).unwrap();
        assert_eq!((e.attempts, e.successes, e.failures()), (7, 2, 5));
        assert_eq!(
            [
                e.refused.count,
                e.timeout.count,
                e.unreachable.count,
                e.abandoned.count,
                e.local_error_count()
            ],
            [1, 1, 1, 1, 1]
        );
        assert_eq!(e.local_errors, BTreeMap::from([(101, 1)]));
        assert_eq!(e.unreachable_errnos, BTreeMap::from([(113, 1)]));
        assert_eq!(agg.len(), 1);
    }

    #[test]
    fn histograms_split_successes_from_failures() {
        let mut agg = Aggregator::new(10);
        for ms in 1..=100 {
            agg.record(&connect(Reason::Success, DEST, ms));
        }
        agg.record(&connect(Reason::Timeout, DEST, 3000));
        let e = agg.get(&key(DEST)).unwrap();
        let ok = e.connect_time.quantiles().unwrap();
        assert_eq!(ok.count, 100);
        let near = |got: u64, want_ms: u64| {
            let want = want_ms * 1_000_000;
            got.abs_diff(want) as f64 <= want as f64 * HIST_PRECISION
        };
        assert!(near(ok.p50, 50), "{ok:?}");
        assert!(near(ok.p90, 90), "{ok:?}");
        assert!(near(ok.p99, 99), "{ok:?}");
        assert!(near(ok.max, 100), "{ok:?}");
        let fail = e.time_to_fail.quantiles().unwrap();
        assert_eq!(fail.count, 1);
        assert!(near(fail.max, 3000), "{fail:?}");
    }

    #[test]
    fn an_entry_without_values_has_no_histogram() {
        let mut agg = Aggregator::new(10);
        agg.record(&connect(Reason::LocalError, DEST, 0));
        let e = agg.get(&key(DEST)).unwrap();
        assert_eq!(e.connect_time.quantiles(), None);
        assert_eq!(e.connect_time.heap_bytes(), 0);
    }

    #[test]
    fn histogram_values_are_clamped_to_an_hour() {
        let mut l = Latency::default();
        l.record(u64::MAX);
        let q = l.quantiles().unwrap();
        assert!(q.max as f64 <= HIST_MAX_NS as f64 * (1.0 + HIST_PRECISION));
        assert!(q.max as f64 >= HIST_MAX_NS as f64 * (1.0 - HIST_PRECISION));
    }

    #[test]
    fn failure_stats_keep_syns_and_wait_times() {
        let mut agg = Aggregator::new(10);
        let mut a = connect(Reason::Timeout, DEST, 3000);
        a.syn_retransmits = 2;
        let mut b = connect(Reason::Timeout, DEST, 1000);
        b.syn_retransmits = 1;
        agg.record(&a);
        agg.record(&b);
        let t = &agg.get(&key(DEST)).unwrap().timeout;
        assert_eq!((t.count, t.syns_sent, t.max_syns), (2, 5, 3));
        assert_eq!((t.min_ns, t.max_ns), (1_000_000_000, 3_000_000_000));
        assert_eq!(t.mean_ns(), Some(2_000_000_000));
        assert_eq!(agg.get(&key(DEST)).unwrap().syn_retransmits, 3);
    }

    #[test]
    fn resets_losses_and_retransmits() {
        let mut agg = Aggregator::new(10);
        agg.record(&reset_received(DEST, 200));
        agg.record(&ConnEvent {
            reason: Reason::Sent,
            ..reset_received(DEST, 0)
        });
        agg.record(&closed(DEST, 4));
        agg.record(&ConnEvent {
            action: Action::Lost,
            reason: Reason::Timeout,
            errno: Some(110),
            ..closed(DEST, 6)
        });
        agg.record(&ConnEvent {
            action: Action::Retransmit,
            reason: Reason::Retransmitted,
            ..closed(DEST, 1)
        });
        let e = agg.get(&key(DEST)).unwrap();
        assert_eq!((e.resets_received, e.resets_sent), (1, 1));
        assert_eq!(e.reset_ages_ns, [200_000_000]);
        assert_eq!(e.lost, BTreeMap::from([(Reason::Timeout, 1)]));
        assert_eq!(e.connections_ended, 2);
        assert_eq!(
            e.retransmits, 10,
            "retransmit records are not counted twice"
        );
        assert_eq!(e.attempts, 0);
        assert_eq!(e.last_error.unwrap().action, Action::Lost);
    }

    #[test]
    fn reset_ages_keep_the_most_recent() {
        let mut agg = Aggregator::new(10);
        for ms in 0..(MAX_RESET_AGES as u64 + 5) {
            agg.record(&reset_received(DEST, ms));
        }
        let ages = &agg.get(&key(DEST)).unwrap().reset_ages_ns;
        assert_eq!(ages.len(), MAX_RESET_AGES);
        assert_eq!(ages.front(), Some(&5_000_000));
    }

    #[test]
    fn first_last_seen_and_last_error() {
        let mut agg = Aggregator::new(10);
        let mut early = connect(Reason::Refused, DEST, 1);
        early.time_ns = 10;
        let mut late = connect(Reason::Timeout, DEST, 1);
        late.time_ns = 30;
        let mut ok = connect(Reason::Success, DEST, 1);
        ok.time_ns = 40;
        agg.record(&late);
        agg.record(&early);
        agg.record(&ok);
        let e = agg.get(&key(DEST)).unwrap();
        assert_eq!((e.first_seen_ns, e.last_seen_ns), (10, 40));
        let last = e.last_error.unwrap();
        assert_eq!(
            (last.reason, last.errno, last.time_ns),
            (Reason::Timeout, Some(110), 30)
        );
    }

    #[test]
    fn workloads_are_comm_and_cgroup_and_keep_their_details() {
        let mut agg = Aggregator::new(10);
        let mut other_cgroup = connect(Reason::Refused, DEST, 1);
        other_cgroup.process.cgroup_id = 8;
        let mut exited = connect(Reason::Refused, DEST, 1);
        exited.process.executable = None;
        exited.process.pid = 101;
        agg.record(&connect(Reason::Refused, DEST, 1));
        agg.record(&exited);
        agg.record(&other_cgroup);
        assert_eq!(agg.len(), 2);
        let e = agg.get(&key(DEST)).unwrap();
        assert_eq!(e.executable.as_deref(), Some("/usr/bin/app"));
        assert_eq!(e.pids.pids, [100, 101]);
    }

    #[test]
    fn an_entry_learns_its_identity_from_a_later_record() {
        use crate::model::{Pod, Workload, WorkloadKind};
        let mut agg = Aggregator::new(10);
        agg.record(&connect(Reason::Refused, DEST, 1));
        let mut known = connect(Reason::Refused, DEST, 1);
        known.process.identity = Some(Arc::new(Identity {
            container: None,
            pod: Some(Pod {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: None,
                workload: Some(Workload {
                    kind: WorkloadKind::StatefulSet,
                    name: "web".into(),
                }),
            }),
        }));
        agg.record(&known);
        assert_eq!(
            agg.len(),
            1,
            "one entry, whether or not the identity was known"
        );
        let (k, e) = agg.iter().next().unwrap();
        assert_eq!(e.refused.count, 2);
        assert_eq!(k.workload_label(), "shop/statefulset/web (app)");
        // Another v1 cgroup (another container on a hybrid host) is another workload.
        let mut other = connect(Reason::Refused, DEST, 1);
        other.process.cgroup_v1_id = 99;
        agg.record(&other);
        assert_eq!(agg.len(), 2);
        assert_eq!(key(DEST).workload_label(), "app");
    }

    #[test]
    fn pid_set_is_bounded() {
        let mut pids = PidSet::default();
        for pid in 0..20 {
            pids.insert(pid);
            pids.insert(pid);
        }
        assert_eq!(pids.pids.len(), MAX_PIDS);
        assert!(pids.more);
    }

    #[test]
    fn past_the_cap_new_destinations_fold_into_other() {
        let mut agg = Aggregator::new(2);
        for port in 1..=5 {
            agg.record(&connect(Reason::Refused, &format!("10.0.0.2:{port}"), 1));
        }
        // A known destination keeps its own entry after the table filled.
        agg.record(&connect(Reason::Refused, "10.0.0.2:1", 1));
        assert_eq!(agg.len(), 3);
        assert_eq!(agg.folded(), 3);
        let other = agg
            .get(&Key {
                destination: None,
                ..key(DEST)
            })
            .unwrap();
        assert_eq!(other.refused.count, 3);
        assert_eq!(agg.get(&key("10.0.0.2:1")).unwrap().refused.count, 2);
    }

    #[test]
    fn past_the_overflow_workloads_everything_folds_into_one_entry() {
        let mut agg = Aggregator::new(1);
        for n in 0..(MAX_OVERFLOW_WORKLOADS + 10) {
            let mut e = connect(Reason::Refused, DEST, 1);
            e.process.name = format!("w{n}");
            agg.record(&e);
            e.destination = "10.0.0.3:80".parse().unwrap();
            agg.record(&e);
        }
        assert_eq!(agg.len(), agg.capacity());
        let all_other = agg
            .get(&Key {
                workload: None,
                destination: None,
                inbound: false,
            })
            .unwrap();
        // w0 has the one exact entry; w0 to w63 have an `other` entry of their own; the
        // last 10 workloads fold both their records into the catch-all.
        assert_eq!(all_other.refused.count, 2 * 10);
    }

    #[test]
    fn changed_lists_only_the_entries_of_this_interval() {
        let mut agg = Aggregator::new(10);
        agg.record(&connect(Reason::Refused, "10.0.0.2:1", 1));
        agg.record(&connect(Reason::Refused, "10.0.0.2:2", 1));
        assert_eq!(agg.changed().count(), 2);
        agg.start_interval();
        assert_eq!(agg.changed().count(), 0);
        agg.record(&connect(Reason::Success, "10.0.0.2:2", 1));
        let changed: Vec<_> = agg.changed().map(|(k, _)| k.clone()).collect();
        assert_eq!(changed, [key("10.0.0.2:2")]);
    }

    /// 100,000 distinct destinations through the default table: it keeps `max_keys` exact
    /// entries, the rest folds into the workload's `other`, and the memory held stays
    /// under a bound that does not depend on how many destinations came.
    #[test]
    fn memory_stays_flat_for_100k_destinations() {
        let mut agg = Aggregator::new(DEFAULT_MAX_KEYS);
        let mut bytes_at_cap = 0;
        for n in 0u32..100_000 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + n);
            let dest = SocketAddr::new(ip.into(), 443).to_string();
            agg.record(&connect(Reason::Success, &dest, u64::from(n % 500) + 1));
            agg.record(&connect(Reason::Refused, &dest, 1));
            if n as usize == DEFAULT_MAX_KEYS - 1 {
                bytes_at_cap = agg.approx_bytes();
            }
        }
        assert_eq!(agg.len(), DEFAULT_MAX_KEYS + 1);
        assert!(agg.len() <= agg.capacity());
        assert_eq!(agg.folded(), 2 * (100_000 - DEFAULT_MAX_KEYS as u64));
        let other = agg
            .get(&Key {
                destination: None,
                ..key(DEST)
            })
            .unwrap();
        assert_eq!(other.attempts, 2 * (100_000 - DEFAULT_MAX_KEYS as u64));
        let total: u64 = agg.iter().map(|(_, e)| e.attempts).sum();
        assert_eq!(total, 200_000, "nothing is dropped");
        // The overflow entry's histograms are the only thing that grew past the cap.
        let bytes = agg.approx_bytes();
        assert!(
            bytes <= bytes_at_cap + 64 * 1024,
            "{bytes} bytes vs {bytes_at_cap} at the cap"
        );
        // And an entry costs well under 4 KiB: two histograms and small change.
        let per_entry = bytes / agg.len();
        assert!(per_entry < 4 * 1024, "{per_entry} bytes per entry");
        // Even with both histograms stretched to their one-hour ceiling.
        let mut full = Entry::default();
        full.connect_time.record(1);
        full.connect_time.record(u64::MAX);
        full.time_to_fail.record(1);
        full.time_to_fail.record(u64::MAX);
        assert!(full.heap_bytes() < 4 * 1024, "{}", full.heap_bytes());
    }
}
