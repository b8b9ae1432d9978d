//! What the host's files add to a record, beyond what the kernel recorded: the
//! executable and (with `--args`) the arguments from procfs, and the container and pod
//! from the cgroup the kernel recorded. Read by worker threads with a deadline
//! ([`worker`]), so that a hung read cannot stall the collector; cached and bounded in
//! bytes; checked against the record (start time, task name) before use ([`procfs`]).
//!
//! Modules: [`procfs`] one process's details and the truth check; [`args`] and
//! [`redact`] the arguments, bounded and without secrets; [`cgroup`] what a cgroup path
//! says; [`cgroupfs`] from a cgroup id to its path; [`kubelet`] and [`bundle`] the pod's
//! names from the kubelet's log tree and the runtime's bundle; [`workload`] the pod's
//! owner; [`identity`] all of that together.
pub mod args;
pub mod bundle;
pub mod cgroup;
pub mod cgroupfs;
pub mod identity;
pub mod kubelet;
pub mod procfs;
pub mod redact;
pub mod worker;
pub mod workload;

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{
    config::IdentityFilter,
    model::{DetailsMissing, Identity, Process},
};
use identity::{ByCgroup, Resolver, Sources};
use worker::{Asked, Factory, Pool};

/// The longest the collector waits for one lookup.
pub const LOOKUP_WAIT: Duration = Duration::from_millis(100);
/// The longest it waits for lookups in any one second, all together: past it, lookups
/// are still made (their answers fill the caches) but not waited for.
pub const WAIT_PER_SECOND: Duration = Duration::from_millis(250);
/// Bytes of process details cached at most.
pub const PROC_CACHE_BYTES: usize = 8 << 20;
const PROC_CACHE_ENTRIES: usize = 16_384;
/// Cgroups whose identity is cached at most.
const CGROUP_CACHE_ENTRIES: usize = 16_384;
/// How soon an unresolved or incomplete identity is looked up again (the kubelet writes
/// its files after the container starts).
pub const RETRY_IDENTITY_AFTER: Duration = Duration::from_secs(2);

/// What the enricher does.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Read process arguments (`--args`).
    pub args: bool,
    /// `--pod`, `--namespace`, `--container`.
    pub filter: IdentityFilter,
    /// Where identities come from; the real host's paths by default.
    pub sources: Option<Sources>,
}

/// Lookups that did not serve their record, for the stats records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnrichCounts {
    /// Not answered within the deadline.
    pub timed_out: u64,
    /// Not made: every worker was stuck, or the queue was full.
    pub busy: u64,
}

/// The kernel's cgroup ids of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct CgroupKey {
    v2: u64,
    v1: u64,
}

impl CgroupKey {
    fn of(p: &Process) -> CgroupKey {
        CgroupKey {
            v2: p.cgroup_id,
            v1: p.cgroup_v1_id,
        }
    }
}

/// A process: pid, start time (0 when unknown) and task name. A reused pid or an exec
/// makes another key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ProcKey {
    pid: u32,
    start_ns: u64,
    comm: Box<str>,
}

/// What procfs said about a process.
#[derive(Clone, Debug, Default)]
struct ProcInfo {
    /// Shared with every record of the process: a clone per record is a count, not a copy.
    executable: Option<Arc<str>>,
    args: Option<args::Args>,
    missing: Option<DetailsMissing>,
    /// From `/proc/PID/cgroup`, when the kernel's cgroup ids said nothing conclusive.
    identity: Option<Arc<Identity>>,
}

impl ProcInfo {
    fn bytes(&self, comm: &str) -> usize {
        let args = self.args.as_ref().map_or(0, |a| {
            a.args
                .iter()
                .map(|s| s.capacity() + size_of::<String>())
                .sum()
        });
        128 + comm.len() + self.executable.as_ref().map_or(0, |e| e.len()) + args
    }
}

struct Query {
    key: ProcKey,
    tid: u32,
    cgroup: CgroupKey,
    want_proc: bool,
    want_identity: bool,
    /// The cgroup's identity is known to be conclusive: no fallback to procfs needed.
    cgroup_conclusive: bool,
}

struct Answer {
    key: ProcKey,
    cgroup: CgroupKey,
    proc: Option<ProcInfo>,
    identity: Option<ByCgroup>,
}

/// The processes seen with one (pid, start time), by task name.
type Named = Vec<(Box<str>, Arc<ProcInfo>)>;

/// Process details, bounded in bytes; the oldest entries go first.
#[derive(Default)]
struct ProcCache {
    /// By (pid, start time), then task name: a lookup per record allocates nothing.
    /// Hashed with foldhash, not SipHash: the kernel picks these keys, and SipHash was a
    /// twentieth of conntrace's CPU per record in a profile of a refused storm.
    entries: FastMap<(u32, u64), Named>,
    order: VecDeque<ProcKey>,
    bytes: usize,
}

impl ProcCache {
    fn get(&self, p: &Process) -> Option<&Arc<ProcInfo>> {
        self.entries
            .get(&(p.pid, p.start_boottime_ns))?
            .iter()
            .find(|(comm, _)| **comm == *p.name)
            .map(|(_, info)| info)
    }

    fn insert(&mut self, key: ProcKey, info: ProcInfo) {
        let bytes = info.bytes(&key.comm);
        let slot = self.entries.entry((key.pid, key.start_ns)).or_default();
        if slot.iter().any(|(c, _)| *c == key.comm) {
            return;
        }
        slot.push((key.comm.clone(), Arc::new(info)));
        self.bytes += bytes;
        self.order.push_back(key);
        while self.bytes > PROC_CACHE_BYTES || self.order.len() > PROC_CACHE_ENTRIES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.remove(&old);
        }
    }

    fn remove(&mut self, key: &ProcKey) {
        let id = (key.pid, key.start_ns);
        let Some(slot) = self.entries.get_mut(&id) else {
            return;
        };
        if let Some(i) = slot.iter().position(|(c, _)| *c == key.comm) {
            let (comm, info) = slot.swap_remove(i);
            self.bytes = self.bytes.saturating_sub(info.bytes(&comm));
        }
        if slot.is_empty() {
            self.entries.remove(&id);
        }
    }
}

/// A map looked up for every record, keyed by numbers the kernel assigns (pids, start
/// times, cgroup ids): a fast hasher with a per-process random seed is enough there.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Identities by cgroup, with an expiry for the inconclusive and incomplete ones.
#[derive(Default)]
struct CgroupCache {
    entries: FastMap<CgroupKey, (Cached, Option<Instant>)>,
    order: VecDeque<CgroupKey>,
}

#[derive(Clone, Debug)]
enum Cached {
    Found(Arc<Identity>),
    Host,
    Unknown,
}

impl CgroupCache {
    fn get(&self, key: CgroupKey) -> Option<&(Cached, Option<Instant>)> {
        self.entries.get(&key)
    }

    fn insert(&mut self, key: CgroupKey, found: ByCgroup) {
        let retry = Some(Instant::now() + RETRY_IDENTITY_AFTER);
        let entry = match found {
            ByCgroup::Found(identity) => {
                let expires = if identity::is_complete(&identity) {
                    None
                } else {
                    retry
                };
                (Cached::Found(Arc::new(identity)), expires)
            }
            ByCgroup::Host => (Cached::Host, None),
            ByCgroup::Unknown => match self.entries.get(&key) {
                // A later miss does not forget what an earlier lookup found.
                Some((found @ Cached::Found(_), _)) => (found.clone(), retry),
                _ => (Cached::Unknown, retry),
            },
        };
        if self.entries.insert(key, entry).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > CGROUP_CACHE_ENTRIES {
            if let Some(old) = self.order.pop_front() {
                self.entries.remove(&old);
            }
        }
    }
}

/// Caps the collector's waiting per second.
struct WaitBudget {
    window: Instant,
    spent: Duration,
}

impl WaitBudget {
    fn allowance(&mut self) -> Duration {
        if self.window.elapsed() >= Duration::from_secs(1) {
            self.window = Instant::now();
            self.spent = Duration::ZERO;
        }
        LOOKUP_WAIT.min(WAIT_PER_SECOND.saturating_sub(self.spent))
    }
}

/// Adds procfs details and identities to records; filters on identities.
pub struct Enricher {
    args: bool,
    filter: IdentityFilter,
    procs: ProcCache,
    cgroups: CgroupCache,
    pool: Pool<Query, Answer>,
    budget: WaitBudget,
    counts: EnrichCounts,
}

impl Enricher {
    pub fn new(settings: Settings) -> Enricher {
        let with_args = settings.args;
        let sources = settings.sources.unwrap_or_else(Sources::of_this_host);
        let factory: Factory<Query, Answer> = Arc::new(move || {
            let mut resolver = Resolver::new(sources.clone(), cgroupfs::Hierarchies::discover());
            let procfs = procfs::Procfs::default();
            Box::new(move |q: Query| lookup(&procfs, &mut resolver, with_args, q))
        });
        Enricher {
            args: with_args,
            filter: settings.filter,
            procs: ProcCache::default(),
            cgroups: CgroupCache::default(),
            pool: Pool::new(factory, LOOKUP_WAIT),
            budget: WaitBudget {
                window: Instant::now(),
                spent: Duration::ZERO,
            },
            counts: EnrichCounts::default(),
        }
    }

    pub fn counts(&self) -> EnrichCounts {
        self.counts
    }

    /// Whether the record passes `--pod`, `--namespace` and `--container`.
    pub fn wanted(&self, p: &Process) -> bool {
        self.filter.matches(p.identity.as_deref())
    }

    /// Fills in what is known about the record's process, looking up what is not (waiting
    /// at most [`LOOKUP_WAIT`]). `now`: taken once per batch of records, for the cache's
    /// expiry times.
    pub fn enrich(&mut self, p: &mut Process, now: Instant) {
        let cgroup = CgroupKey::of(p);
        let (mut want_proc, mut want_identity) = self.wanted_lookups(p, cgroup, now);
        let mut late = Vec::new();
        if want_proc || want_identity {
            // Answers that came after their deadline may hold what this record needs. Only
            // here: on the common path, everything is cached and the channel stays unread.
            self.pool.collect_late(&mut |a| late.push(a));
            for answer in late.drain(..) {
                self.absorb(answer);
            }
            (want_proc, want_identity) = self.wanted_lookups(p, cgroup, now);
        }
        let mut missing = None;
        if want_proc || want_identity {
            let cgroup_conclusive = matches!(
                self.cgroups.get(cgroup),
                Some((Cached::Found(_) | Cached::Host, _))
            );
            let query = Query {
                key: ProcKey {
                    pid: p.pid,
                    start_ns: p.start_boottime_ns,
                    comm: p.name.as_str().into(),
                },
                tid: p.tid,
                cgroup,
                want_proc,
                want_identity,
                cgroup_conclusive,
            };
            let wait = self.budget.allowance();
            let asking = Instant::now();
            let asked = self.pool.ask(query, wait, &mut |a| late.push(a));
            self.budget.spent += asking.elapsed();
            for answer in late.drain(..) {
                self.absorb(answer);
            }
            match asked {
                Asked::Answered(answer) => self.absorb(answer),
                Asked::TimedOut => {
                    self.counts.timed_out += 1;
                    missing = Some(DetailsMissing::TimedOut);
                }
                Asked::Busy => {
                    self.counts.busy += 1;
                    missing = Some(DetailsMissing::Busy);
                }
            }
        }
        self.apply(p, missing);
    }

    /// Whether the process's details, and the cgroup's identity, still need a lookup:
    /// not cached, or cached inconclusively and due for another try.
    fn wanted_lookups(&self, p: &Process, cgroup: CgroupKey, now: Instant) -> (bool, bool) {
        let want_identity = self
            .cgroups
            .get(cgroup)
            .is_none_or(|(_, exp)| exp.is_some_and(|e| e <= now));
        (self.procs.get(p).is_none(), want_identity)
    }

    fn absorb(&mut self, answer: Answer) {
        if let Some(info) = answer.proc {
            self.procs.insert(answer.key, info);
        }
        if let Some(found) = answer.identity {
            self.cgroups.insert(answer.cgroup, found);
        }
    }

    fn apply(&self, p: &mut Process, missing: Option<DetailsMissing>) {
        let info = self.procs.get(p);
        match info {
            Some(info) => {
                p.executable.clone_from(&info.executable);
                if self.args
                    && let Some(a) = &info.args
                {
                    p.args = Some(a.args.clone());
                    p.args_truncated = a.truncated;
                }
                p.details_missing = info.missing;
            }
            None => p.details_missing = missing,
        }
        p.identity = match self.cgroups.get(CgroupKey::of(p)) {
            Some((Cached::Found(identity), _)) => Some(Arc::clone(identity)),
            Some((Cached::Host, _)) => None,
            _ => info.and_then(|i| i.identity.clone()),
        };
    }
}

/// One lookup, on a worker thread.
fn lookup(procfs: &procfs::Procfs, resolver: &mut Resolver, with_args: bool, q: Query) -> Answer {
    let identity = q
        .want_identity
        .then(|| resolver.by_cgroup_ids(q.cgroup.v2, q.cgroup.v1));
    let conclusive =
        q.cgroup_conclusive || matches!(identity, Some(ByCgroup::Found(_) | ByCgroup::Host));
    let proc = q.want_proc.then(|| {
        let want = procfs::Expect {
            pid: q.key.pid,
            tid: q.tid,
            comm: &q.key.comm,
            start_boottime_ns: q.key.start_ns,
        };
        match procfs.read(&want, with_args) {
            Ok(d) => ProcInfo {
                identity: if conclusive {
                    None
                } else {
                    d.cgroup
                        .as_deref()
                        .and_then(|t| resolver.by_proc_cgroup(t))
                        .map(Arc::new)
                },
                executable: d.executable.map(Arc::from),
                args: d.args,
                missing: None,
            },
            Err(why) => ProcInfo {
                missing: Some(why),
                ..ProcInfo::default()
            },
        }
    });
    Answer {
        key: q.key,
        cgroup: q.cgroup,
        proc,
        identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(name: &str) -> Process {
        Process {
            pid: std::process::id(),
            tid: std::process::id(),
            name: name.into(),
            ..Process::default()
        }
    }

    fn own_comm() -> String {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        procfs::parse_stat(&stat).unwrap().comm
    }

    fn enricher(args: bool) -> Enricher {
        Enricher::new(Settings {
            args,
            ..Settings::default()
        })
    }

    #[test]
    fn enriches_a_live_process() {
        let mut e = enricher(true);
        let mut p = me(&own_comm());
        e.enrich(&mut p, Instant::now());
        assert!(p.executable.is_some(), "{p:?}");
        assert!(p.args.as_ref().is_some_and(|a| !a.is_empty()));
        assert_eq!(p.details_missing, None);
    }

    #[test]
    fn no_args_unless_asked() {
        let mut e = enricher(false);
        let mut p = me(&own_comm());
        e.enrich(&mut p, Instant::now());
        assert_eq!(p.args, None);
        assert!(p.executable.is_some());
    }

    #[test]
    fn another_name_is_another_program() {
        let mut e = enricher(true);
        let mut p = me("not-this-name");
        e.enrich(&mut p, Instant::now());
        assert_eq!(p.details_missing, Some(DetailsMissing::Replaced));
        assert_eq!((p.executable, p.args), (None, None));
    }

    #[test]
    fn an_exited_process_keeps_what_the_kernel_gave() {
        let mut e = enricher(true);
        let mut gone = Process {
            pid: u32::MAX - 1,
            name: "gone".into(),
            uid: 7,
            ..Process::default()
        };
        e.enrich(&mut gone, Instant::now());
        assert_eq!(
            (
                gone.executable,
                gone.args,
                gone.name.as_str(),
                gone.uid,
                gone.details_missing
            ),
            (None, None, "gone", 7, Some(DetailsMissing::Exited))
        );
    }

    #[test]
    fn the_process_cache_is_bounded_in_bytes() {
        let mut cache = ProcCache::default();
        let big = args::Args {
            args: vec!["a".repeat(args::ARG_BYTES); args::PROCESS_BYTES / args::ARG_BYTES],
            truncated: true,
        };
        for pid in 0..20_000u32 {
            let key = ProcKey {
                pid,
                start_ns: 1,
                comm: "x".into(),
            };
            cache.insert(
                key,
                ProcInfo {
                    args: Some(big.clone()),
                    executable: Some("/usr/bin/x".into()),
                    ..ProcInfo::default()
                },
            );
            assert!(cache.bytes <= PROC_CACHE_BYTES);
        }
        let counted: usize = cache
            .entries
            .values()
            .flatten()
            .map(|(c, i)| i.bytes(c))
            .sum();
        assert_eq!(counted, cache.bytes);
        assert!(cache.order.len() < 20_000);
        // The newest are kept.
        let p = Process {
            pid: 19_999,
            start_boottime_ns: 1,
            name: "x".into(),
            ..Process::default()
        };
        assert!(cache.get(&p).is_some());
    }

    #[test]
    fn an_unknown_cgroup_is_retried_and_a_found_one_kept() {
        let key = CgroupKey { v2: 5, v1: 0 };
        let mut c = CgroupCache::default();
        c.insert(key, ByCgroup::Unknown);
        assert!(matches!(c.get(key), Some((Cached::Unknown, Some(_)))));
        let found = Identity {
            container: Some(crate::model::Container {
                id: "a".repeat(64),
                ..Default::default()
            }),
            pod: None,
        };
        c.insert(key, ByCgroup::Found(found));
        assert!(matches!(c.get(key), Some((Cached::Found(_), None))));
        // A later miss keeps what was found.
        c.insert(key, ByCgroup::Unknown);
        assert!(matches!(c.get(key), Some((Cached::Found(_), Some(_)))));
        for v2 in 0..(CGROUP_CACHE_ENTRIES as u64 + 10) {
            c.insert(
                CgroupKey {
                    v2: 100 + v2,
                    v1: 0,
                },
                ByCgroup::Host,
            );
        }
        assert!(c.entries.len() <= CGROUP_CACHE_ENTRIES);
    }
}
