//! `trace --verdicts`: the diagnosis rules (`crate::diagnose`) run continuously over a
//! sliding window, and a verdict record (`event.kind: "alert"`) each time a (workload,
//! destination) starts failing, its probable cause changes, or it recovers; with
//! `--on-verdict CMD`, a command runs for each (`output::hook`).
//!
//! The window is a ring of slices, one per evaluation interval; records go to the newest,
//! and each evaluation merges them. A key starts failing when the interval just ended saw
//! it fail and the rules name a cause over the window; it recovers when an interval sees
//! it succeed without failing (`succeeded`), or when the window holds no failure of it any
//! more (`quiet`). Rate limits: one alarm (failing or changed) per key per cooldown, so a
//! flapping destination cannot spam the stream or its hook; a recovery is never held back.
//! The host facts `diagnose` gathers (listeners in other namespaces) are not gathered here:
//! they cost namespace switches, so verdicts say what the records alone support.
use std::{
    collections::{HashMap, VecDeque},
    io::{self, Write as _},
    time::{Duration, Instant},
};

use super::{Flow, Sink};
use crate::{
    aggregate::{Aggregator, Entry, Key},
    clock::unix_now_ns,
    diagnose::{self, Confidence, Context, Facts, Layer, Verdict},
    model::{ConnEvent, Outcome},
    output::{
        SCHEMA_VERSION,
        hook::{Hook, Job},
        json::write_line,
        schema::{
            HostObj, Kind, Resolution, VerdictConntrace, VerdictEvent, VerdictObj, VerdictRecord,
            VerdictState,
        },
        stream::SharedStream,
        summary::{counts, subject},
        time::rfc3339_nanos,
    },
};

/// How long running hooks may keep conntrace from exiting.
const HOOK_GRACE: Duration = Duration::from_secs(2);

/// `--verdict-interval`, `--verdict-window`, `--verdict-cooldown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerdictOptions {
    /// How often the rules run; also the slice of the window.
    pub every: Duration,
    pub window: Duration,
    /// Least time between two alarms (failing, changed) of one key.
    pub cooldown: Duration,
    /// Bound of each slice's table (`--max-keys`).
    pub max_keys: usize,
}

/// A key's failure in progress: what its last alarm said.
#[derive(Clone, Debug)]
struct Failing {
    cause: &'static str,
    layer: Layer,
    confidence: Confidence,
    since_ns: u64,
}

#[derive(Clone, Debug, Default)]
struct State {
    failing: Option<Failing>,
    /// When its last alarm went out.
    last_alarm: Option<Instant>,
}

/// What an evaluation decided for a key, with the entry's window and when its failure
/// began.
struct Decision {
    key: Key,
    change: Change,
    entry: Option<Entry>,
    since_ns: u64,
}

/// What changed for a key.
enum Change {
    Failing(Verdict),
    Changed {
        verdict: Verdict,
        previous: &'static str,
    },
    Resolved {
        was: Failing,
        how: Resolution,
    },
}

pub struct Verdicts {
    stream: SharedStream,
    options: VerdictOptions,
    slices: VecDeque<Aggregator>,
    states: HashMap<Key, State>,
    hook: Option<Hook>,
}

/// Failed attempts, resets received, connections lost: what makes a key failing.
fn harm(e: &Entry) -> u64 {
    e.failures() + e.resets_received + e.lost_total()
}

impl Verdicts {
    pub fn new(stream: SharedStream, options: VerdictOptions, hook: Option<Hook>) -> Verdicts {
        let mut slices = VecDeque::new();
        slices.push_back(Aggregator::new(options.max_keys));
        Verdicts {
            stream,
            options,
            slices,
            states: HashMap::new(),
            hook,
        }
    }

    /// Slices kept: the window in intervals, at least one.
    fn slice_count(&self) -> usize {
        let n = self.options.window.as_secs_f64() / self.options.every.as_secs_f64();
        (n.ceil() as usize).max(1)
    }

    /// Runs the rules on the window; returns what changed, key by key.
    fn evaluate(&mut self, now: Instant) -> Vec<Decision> {
        let mut window = Aggregator::new(self.options.max_keys);
        for slice in &self.slices {
            window.merge(slice);
        }
        let empty = Aggregator::new(1);
        let latest = self.slices.back().unwrap_or(&empty);
        let facts = Facts::default();
        let ctx = Context {
            aggregate: &window,
            facts: &facts,
            window_ns: u64::try_from(self.options.window.as_nanos()).unwrap_or(u64::MAX),
        };
        let cooldown = self.options.cooldown;
        let mut changes = Vec::new();
        // Keys that failed in the interval just ended.
        for (key, recent) in latest.iter().filter(|(_, e)| harm(e) > 0) {
            let Some(whole) = window.get(key) else {
                continue;
            };
            let Some(head) = diagnose::verdicts(key, whole, &ctx).into_iter().next() else {
                continue;
            };
            let state = self.states.entry(key.clone()).or_default();
            if state
                .last_alarm
                .is_some_and(|t| now.duration_since(t) < cooldown)
            {
                continue;
            }
            let change = match &state.failing {
                None => Change::Failing(head),
                Some(f) if f.cause != head.cause => Change::Changed {
                    previous: f.cause,
                    verdict: head,
                },
                Some(_) => continue,
            };
            let since_ns = state
                .failing
                .as_ref()
                .map_or(recent.first_seen_ns, |f| f.since_ns);
            if let Change::Failing(v) | Change::Changed { verdict: v, .. } = &change {
                state.failing = Some(Failing {
                    cause: v.cause,
                    layer: v.layer,
                    confidence: v.confidence,
                    since_ns,
                });
            }
            state.last_alarm = Some(now);
            changes.push(Decision {
                key: key.clone(),
                change,
                entry: Some(whole.clone()),
                since_ns,
            });
        }
        // Keys failing until now: recovered?
        for (key, state) in &mut self.states {
            let Some(f) = &state.failing else { continue };
            let recent = latest.get(key);
            let how = if recent.is_some_and(|e| e.successes > 0 && harm(e) == 0) {
                Resolution::Succeeded
            } else if window.get(key).is_none_or(|e| harm(e) == 0) {
                Resolution::Quiet
            } else {
                continue;
            };
            changes.push(Decision {
                key: key.clone(),
                change: Change::Resolved {
                    was: f.clone(),
                    how,
                },
                entry: window.get(key).cloned(),
                since_ns: f.since_ns,
            });
            state.failing = None;
        }
        // Forget what is resolved and past its cooldown: the table stays bounded.
        self.states.retain(|_, s| {
            s.failing.is_some()
                || s.last_alarm
                    .is_some_and(|t| now.duration_since(t) < cooldown)
        });
        changes
    }

    /// The next slice; the oldest leaves the window.
    fn rotate(&mut self) {
        self.slices
            .push_back(Aggregator::new(self.options.max_keys));
        while self.slices.len() > self.slice_count() {
            self.slices.pop_front();
        }
    }

    fn emit(&mut self, d: &Decision) -> io::Result<()> {
        let record = record(d, self.stream.borrow().host(), &self.options);
        let mut line = Vec::new();
        write_line(&mut line, &record)?;
        let text = text_line(&d.key, &d.change);
        self.stream.borrow_mut().other(
            |out| {
                out.extend_from_slice(&line);
                Ok(())
            },
            |err| writeln!(err, "{text}"),
        )?;
        if let Some(hook) = &self.hook {
            hook.submit(Job {
                label: text,
                stdin: line,
                env: environment(&record),
            });
        }
        Ok(())
    }
}

/// The verdict record.
fn record(d: &Decision, host: &str, options: &VerdictOptions) -> VerdictRecord {
    let (key, change, entry) = (&d.key, &d.change, d.entry.as_ref());
    let (state, type_, outcome) = match change {
        Change::Failing(_) => (VerdictState::Failing, "start", Outcome::Failure),
        Change::Changed { .. } => (VerdictState::Changed, "change", Outcome::Failure),
        Change::Resolved { .. } => (VerdictState::Resolved, "end", Outcome::Success),
    };
    let verdict = match change {
        Change::Failing(v) | Change::Changed { verdict: v, .. } => VerdictObj {
            state,
            layer: v.layer,
            cause: v.cause.into(),
            confidence: v.confidence,
            summary: v.summary.clone(),
            evidence: v.evidence.clone(),
            next: v.next.clone(),
            previous_cause: match change {
                Change::Changed { previous, .. } => Some((*previous).into()),
                _ => None,
            },
            resolution: None,
            since: String::new(),
        },
        Change::Resolved { was, how } => resolved(key, was, *how),
    };
    let now = unix_now_ns();
    let empty = Entry::default();
    let shown = entry.unwrap_or(&empty);
    VerdictRecord {
        timestamp: rfc3339_nanos(now),
        event: VerdictEvent {
            kind: Kind::Alert,
            category: vec!["network".into()],
            type_: vec!["connection".into(), type_.into()],
            action: "verdict".into(),
            outcome,
            reason: verdict.cause.clone(),
        },
        subject: subject(key, shown),
        host: HostObj { name: host.into() },
        conntrace: VerdictConntrace {
            schema_version: SCHEMA_VERSION,
            verdict: VerdictObj {
                since: rfc3339_nanos(d.since_ns),
                ..verdict
            },
            pids: shown.pids.pids.clone(),
            window: u64::try_from(options.window.as_nanos()).unwrap_or(u64::MAX),
            counts: entry.map(counts),
        },
    }
}

/// The verdict object of a recovery: the failure's own layer and cause.
fn resolved(key: &Key, failing: &Failing, how: Resolution) -> VerdictObj {
    let was = failing.cause;
    let summary = match how {
        Resolution::Succeeded => format!(
            "{} → {}: connects succeed again (was {was})",
            key.workload_name(),
            key.destination_label()
        ),
        Resolution::Quiet => format!(
            "{} → {}: no failure within the window any more, and no attempt either (was {was})",
            key.workload_name(),
            key.destination_label()
        ),
    };
    VerdictObj {
        state: VerdictState::Resolved,
        layer: failing.layer,
        cause: was.into(),
        confidence: failing.confidence,
        summary,
        evidence: serde_json::Map::new(),
        next: Vec::new(),
        previous_cause: None,
        resolution: Some(how),
        since: String::new(),
    }
}

/// One line for people (and the hook's log label).
fn text_line(key: &Key, change: &Change) -> String {
    let who = crate::output::terminal::escape_owned(format!(
        "{} → {}",
        key.workload_name(),
        key.destination_label()
    ));
    match change {
        Change::Failing(v) => format!(
            "verdict: failing: {who}: {} layer, {} ({})",
            v.layer.as_str(),
            v.cause,
            v.confidence.as_str()
        ),
        Change::Changed {
            verdict: v,
            previous,
        } => format!(
            "verdict: changed: {who}: {} layer, {} (was {previous})",
            v.layer.as_str(),
            v.cause
        ),
        Change::Resolved { was, how } => {
            let how = match how {
                Resolution::Succeeded => "succeeded",
                Resolution::Quiet => "quiet",
            };
            format!("verdict: resolved ({how}): {who} (was {})", was.cause)
        }
    }
}

/// The essentials, for the hook's environment. Names and paths come from the processes
/// that connect: a hook must treat them as untrusted text.
fn environment(r: &VerdictRecord) -> Vec<(&'static str, String)> {
    let v = &r.conntrace.verdict;
    let state = match v.state {
        VerdictState::Failing => "failing",
        VerdictState::Changed => "changed",
        VerdictState::Resolved => "resolved",
    };
    let mut env = vec![
        ("CONNTRACE_VERDICT_STATE", state.to_owned()),
        ("CONNTRACE_CAUSE", v.cause.clone()),
        ("CONNTRACE_LAYER", v.layer.as_str().to_owned()),
        ("CONNTRACE_CONFIDENCE", v.confidence.as_str().to_owned()),
        ("CONNTRACE_SUMMARY", v.summary.clone()),
        (
            "CONNTRACE_DESTINATION",
            r.subject.destination.address.clone(),
        ),
        ("CONNTRACE_HOST", r.host.name.clone()),
        (
            "CONNTRACE_PIDS",
            r.conntrace
                .pids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ];
    if let Some(ip) = &r.subject.destination.ip {
        env.push(("CONNTRACE_DESTINATION_IP", ip.clone()));
    }
    if let Some(port) = r.subject.destination.port {
        env.push(("CONNTRACE_DESTINATION_PORT", port.to_string()));
    }
    if let Some(p) = &r.subject.process {
        env.push(("CONNTRACE_WORKLOAD", p.name.clone()));
        if let Some(exe) = &p.executable {
            env.push(("CONNTRACE_EXECUTABLE", exe.clone()));
        }
        if let Some(c) = &p.container {
            env.push(("CONNTRACE_CONTAINER_ID", c.id.clone()));
            if let Some(name) = &c.name {
                env.push(("CONNTRACE_CONTAINER_NAME", name.clone()));
            }
        }
        if let Some(pod) = &p.pod {
            for (var, value) in [
                ("CONNTRACE_POD", &pod.name),
                ("CONNTRACE_POD_NAMESPACE", &pod.namespace),
            ] {
                if let Some(v) = value {
                    env.push((var, v.clone()));
                }
            }
        }
    }
    if let Some(prev) = &v.previous_cause {
        env.push(("CONNTRACE_PREVIOUS_CAUSE", prev.clone()));
    }
    env
}

impl Sink for Verdicts {
    fn event(&mut self, e: &ConnEvent) -> io::Result<()> {
        if let Some(slice) = self.slices.back_mut() {
            slice.record(e);
        }
        Ok(())
    }

    fn tick_every(&self) -> Option<Duration> {
        Some(self.options.every)
    }

    fn tick(&mut self) -> io::Result<Flow> {
        let decisions = self.evaluate(Instant::now());
        self.rotate();
        for d in &decisions {
            self.emit(d)?;
        }
        Ok(Flow::Continue)
    }

    fn close(&mut self) -> io::Result<()> {
        if let Some(hook) = &mut self.hook {
            hook.close(HOOK_GRACE);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::tests::connect,
        cli::Format,
        model::Reason,
        output::{
            schema::{Record, parse},
            stream::tests::{in_memory, take},
        },
    };

    fn verdicts(cooldown_s: u64) -> Verdicts {
        let stream = in_memory(Format::Json, 1 << 20).shared();
        Verdicts::new(
            stream,
            VerdictOptions {
                every: Duration::from_secs(1),
                window: Duration::from_secs(5),
                cooldown: Duration::from_secs(cooldown_s),
                max_keys: 100,
            },
            None,
        )
    }

    /// One interval: these records, then an evaluation at `at` seconds.
    fn interval(v: &mut Verdicts, t0: Instant, at: u64, records: &[(Reason, &str)]) {
        for (reason, dest) in records {
            v.event(&connect(*reason, dest, 1)).unwrap();
        }
        let decisions = v.evaluate(t0 + Duration::from_secs(at));
        v.rotate();
        for d in &decisions {
            v.emit(d).unwrap();
        }
    }

    fn emitted(v: &Verdicts) -> Vec<(String, String, Option<String>)> {
        take(&mut v.stream.borrow_mut())
            .lines()
            .map(|l| match parse(l).unwrap() {
                Record::Verdict(r) => (
                    format!("{:?}", r.conntrace.verdict.state).to_lowercase(),
                    r.conntrace.verdict.cause.clone(),
                    r.conntrace
                        .verdict
                        .resolution
                        .map(|h| format!("{h:?}").to_lowercase()),
                ),
                other => panic!("not a verdict: {other:?}"),
            })
            .collect()
    }

    const DEST: &str = "10.0.0.2:80";

    #[test]
    fn failing_then_recovered_then_quiet() {
        let mut v = verdicts(0);
        let t0 = Instant::now();
        interval(
            &mut v,
            t0,
            1,
            &[(Reason::Refused, DEST), (Reason::Refused, DEST)],
        );
        interval(&mut v, t0, 2, &[(Reason::Refused, DEST)]);
        interval(&mut v, t0, 3, &[(Reason::Success, DEST)]);
        interval(&mut v, t0, 4, &[(Reason::Timeout, "10.0.0.3:80")]);
        for at in 5..12 {
            interval(&mut v, t0, at, &[]);
        }
        assert_eq!(
            emitted(&v),
            [
                ("failing".into(), "no_listener".into(), None),
                (
                    "resolved".into(),
                    "no_listener".into(),
                    Some("succeeded".into())
                ),
                ("failing".into(), "syn_unanswered".into(), None),
                (
                    "resolved".into(),
                    "syn_unanswered".into(),
                    Some("quiet".into())
                ),
            ]
        );
    }

    #[test]
    fn a_changed_cause_is_its_own_verdict() {
        let mut v = verdicts(0);
        let t0 = Instant::now();
        interval(&mut v, t0, 1, &[(Reason::Refused, DEST)]);
        for at in 2..5 {
            interval(
                &mut v,
                t0,
                at,
                &[(Reason::Timeout, DEST), (Reason::Timeout, DEST)],
            );
        }
        let got = emitted(&v);
        assert_eq!(got[0], ("failing".into(), "no_listener".into(), None));
        assert_eq!(got[1], ("changed".into(), "syn_unanswered".into(), None));
        assert_eq!(got.len(), 2, "{got:?}");
    }

    #[test]
    fn a_flapping_destination_alarms_once_per_cooldown() {
        let mut v = verdicts(60);
        let t0 = Instant::now();
        for at in 0..10 {
            let reason = if at % 2 == 0 {
                Reason::Refused
            } else {
                Reason::Success
            };
            interval(&mut v, t0, at, &[(reason, DEST)]);
        }
        let alarms = emitted(&v)
            .iter()
            .filter(|(state, ..)| state == "failing")
            .count();
        assert_eq!(alarms, 1);
    }
}
