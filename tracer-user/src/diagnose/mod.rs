//! Why connections fail, and which layer is at fault. A table of rules ([`RULES`]), each a
//! small pure function from one aggregate entry, the rest of the aggregate and what the host
//! told us ([`Facts`]) to a [`Verdict`]. [`diagnose`] runs every rule on every entry and
//! ranks the findings, most harmful first. Only [`host`] does I/O.
pub mod host;
pub mod report;
pub mod rules;
pub mod sockdiag;

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    aggregate::{Aggregator, Entry, Key},
    errno,
};

/// Where the fault lies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// On the way: routing, filtering, loss.
    Network,
    /// At the destination: nothing listens, the peer aborts.
    Service,
    /// On this host, in the connecting application or its configuration.
    Client,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Network => "network",
            Layer::Service => "service",
            Layer::Client => "client",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// One rule's conclusion about one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The rule that concluded it (its id in [`RULES`]).
    pub rule: &'static str,
    pub layer: Layer,
    /// A stable identifier for the probable cause (`no_listener`, `syn_unanswered`, ...).
    pub cause: &'static str,
    pub confidence: Confidence,
    /// The probable cause, in one sentence.
    pub summary: String,
    /// The numbers behind it, for machines.
    pub evidence: Map<String, Value>,
    /// The same numbers, for people.
    pub evidence_text: Vec<String>,
    /// What to check next.
    pub next: Vec<String>,
    /// How many records it explains; verdicts of an entry are ranked by it.
    pub weight: u64,
}

/// Whether the destination's network namespace, when it is on this host, has a listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerFact {
    /// No network namespace on this host has the address: nothing to check.
    NotLocal,
    /// The namespaces holding the address were read.
    Checked {
        /// Their inode numbers.
        netns: Vec<u64>,
        /// Something listens on the destination (its address, or a wildcard).
        listening: bool,
        /// Listeners on the same port, bound to other addresses only.
        elsewhere: Vec<SocketAddr>,
    },
    /// The check failed; why.
    Unknown(String),
}

/// Local ports on the connecting side, for EADDRNOTAVAIL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortFact {
    /// `net.ipv4.ip_local_port_range` in the client's network namespace.
    pub range: Option<(u16, u16)>,
    /// TCP sockets there connected (or connecting) to the destination.
    pub sockets_to_destination: Option<u64>,
}

/// The accept queue of the listener a destination reaches on this host (read with
/// sock_diag in its network namespace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueFact {
    /// The listening socket's address.
    pub listener: SocketAddr,
    /// Connections waiting to be accepted, and the queue's limit, when the report was made.
    pub queue: u32,
    pub backlog: u32,
    /// SYNs it dropped while diagnose watched (`None`: its count at the start is not
    /// known), and since it started listening.
    pub drops_in_window: Option<u32>,
    pub drops_total: u32,
    /// The process that listens: pid and name.
    pub owner: Option<(u32, String)>,
}

/// What the host told us, keyed by (client network namespace, destination).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub listeners: HashMap<(u32, SocketAddr), ListenerFact>,
    pub ports: HashMap<(u32, SocketAddr), PortFact>,
    pub queues: HashMap<(u32, SocketAddr), QueueFact>,
}

/// The facts the rules would use, so that [`host::gather`] reads only those.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Questions {
    pub listeners: BTreeSet<(u32, SocketAddr)>,
    pub ports: BTreeSet<(u32, SocketAddr)>,
}

impl Questions {
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.ports.is_empty()
    }
}

/// Refused and timed-out destinations get a listener check; EADDRNOTAVAIL a port check.
pub fn questions(aggregate: &Aggregator) -> Questions {
    let mut q = Questions::default();
    for (key, e) in aggregate.iter() {
        let Some(dest) = key.destination else {
            continue;
        };
        if e.refused.count + e.timeout.count > 0 {
            q.listeners.insert((e.netns, dest));
        }
        if e.local_errors.contains_key(&errno::EADDRNOTAVAIL) {
            q.ports.insert((e.netns, dest));
        }
    }
    q
}

/// What a rule sees besides its entry.
pub struct Context<'a> {
    pub aggregate: &'a Aggregator,
    pub facts: &'a Facts,
    /// How long the records were collected for, in nanoseconds (0: unknown).
    pub window_ns: u64,
}

/// A rule of the table: an id and a check.
pub struct Rule {
    pub id: &'static str,
    pub check: fn(&Key, &Entry, &Context<'_>) -> Option<Verdict>,
}

/// Every rule, in the order that breaks ties between verdicts of equal weight.
pub const RULES: &[Rule] = &[
    Rule {
        id: "partial_failure",
        check: rules::partial_failure,
    },
    Rule {
        id: "refused",
        check: rules::refused,
    },
    Rule {
        id: "accept_queue_full",
        check: rules::accept_queue_full,
    },
    Rule {
        id: "dropped_here",
        check: rules::dropped_here,
    },
    Rule {
        id: "timeout",
        check: rules::timeout,
    },
    Rule {
        id: "unreachable",
        check: rules::unreachable,
    },
    Rule {
        id: "abandoned",
        check: rules::abandoned,
    },
    Rule {
        id: "local_error",
        check: rules::local_error,
    },
    Rule {
        id: "stale_keepalive",
        check: rules::stale_keepalive,
    },
    Rule {
        id: "peer_reset",
        check: rules::peer_reset,
    },
    Rule {
        id: "closed_before_reply",
        check: rules::closed_before_reply,
    },
    Rule {
        id: "accepted_resets",
        check: rules::accepted_resets,
    },
    Rule {
        id: "connection_lost",
        check: rules::connection_lost,
    },
    Rule {
        id: "retransmits",
        check: rules::retransmits,
    },
];

/// One failing (workload, destination) and what the rules concluded, the headline first.
#[derive(Clone, Debug)]
pub struct Finding<'a> {
    pub key: &'a Key,
    pub entry: &'a Entry,
    pub verdicts: Vec<Verdict>,
    /// Failed attempts, resets received and connections lost: what ranks findings.
    pub harm: u64,
}

impl Finding<'_> {
    pub fn headline(&self) -> Option<&Verdict> {
        self.verdicts.first()
    }
}

/// Every rule's verdicts on one entry, heaviest first (ties: table order).
pub fn verdicts(key: &Key, entry: &Entry, ctx: &Context<'_>) -> Vec<Verdict> {
    let mut out: Vec<Verdict> = RULES
        .iter()
        .filter_map(|rule| (rule.check)(key, entry, ctx))
        .collect();
    // A stable sort keeps the table order among equals.
    out.sort_by_key(|v| std::cmp::Reverse(v.weight));
    out
}

/// The findings, most harmful first: entries that at least one rule has a verdict on.
pub fn diagnose<'a>(ctx: &Context<'a>) -> Vec<Finding<'a>> {
    let mut findings: Vec<Finding<'a>> = ctx
        .aggregate
        .iter()
        .filter_map(|(key, entry)| {
            let verdicts = verdicts(key, entry, ctx);
            (!verdicts.is_empty()).then(|| Finding {
                key,
                entry,
                verdicts,
                harm: entry.failures()
                    + entry.resets_received
                    + entry.lost_total()
                    + if key.inbound { entry.resets_sent } else { 0 },
            })
        })
        .collect();
    findings.sort_by(|a, b| {
        b.harm
            .cmp(&a.harm)
            .then(b.entry.failure_ratio().total_cmp(&a.entry.failure_ratio()))
            .then(a.key.cmp(b.key))
    });
    findings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::tests::{closed, connect, key, reset_received, with_errno},
        model::Reason,
    };

    fn ctx<'a>(agg: &'a Aggregator, facts: &'a Facts) -> Context<'a> {
        Context {
            aggregate: agg,
            facts,
            window_ns: 10_000_000_000,
        }
    }

    #[test]
    fn the_table_lists_each_rule_once_under_its_own_name() {
        let ids: BTreeSet<_> = RULES.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), RULES.len());
    }

    #[test]
    fn findings_are_ranked_most_harmful_first() {
        let mut agg = Aggregator::new(100);
        agg.record(&connect(Reason::Refused, "10.0.0.2:80", 1));
        for _ in 0..3 {
            agg.record(&connect(Reason::Timeout, "10.0.0.3:80", 3000));
        }
        agg.record(&reset_received("10.0.0.4:80", 200));
        agg.record(&reset_received("10.0.0.4:80", 200));
        // Another service: a success on port 80 would make this a partial failure.
        agg.record(&connect(Reason::Success, "10.0.0.5:8080", 1));
        let facts = Facts::default();
        let c = ctx(&agg, &facts);
        let found: Vec<_> = diagnose(&c)
            .iter()
            .map(|f| {
                (
                    f.key.destination_label(),
                    f.harm,
                    f.headline().unwrap().cause,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("10.0.0.3:80".to_owned(), 3, "syn_unanswered"),
                ("10.0.0.4:80".to_owned(), 2, "peer_reset"),
                ("10.0.0.2:80".to_owned(), 1, "no_listener"),
            ]
        );
    }

    #[test]
    fn nothing_failing_means_no_findings() {
        let mut agg = Aggregator::new(100);
        agg.record(&connect(Reason::Success, "10.0.0.5:80", 1));
        agg.record(&closed("10.0.0.5:80", 1));
        let facts = Facts::default();
        assert!(diagnose(&ctx(&agg, &facts)).is_empty());
    }

    #[test]
    fn verdicts_of_an_entry_are_ranked_by_what_they_explain() {
        let mut agg = Aggregator::new(100);
        agg.record(&connect(Reason::Refused, "10.0.0.2:80", 1));
        agg.record(&connect(Reason::Timeout, "10.0.0.2:80", 3000));
        agg.record(&connect(Reason::Timeout, "10.0.0.2:80", 3000));
        let facts = Facts::default();
        let c = ctx(&agg, &facts);
        let v = verdicts(
            &key("10.0.0.2:80"),
            agg.get(&key("10.0.0.2:80")).unwrap(),
            &c,
        );
        let causes: Vec<_> = v.iter().map(|v| v.cause).collect();
        assert_eq!(causes, ["syn_unanswered", "no_listener"]);
    }

    #[test]
    fn questions_ask_only_what_the_rules_use() {
        let mut agg = Aggregator::new(100);
        agg.record(&connect(Reason::Refused, "10.0.0.2:80", 1));
        agg.record(&connect(Reason::Timeout, "10.0.0.3:80", 1));
        agg.record(&connect(Reason::Unreachable, "10.0.0.4:80", 1));
        agg.record(&with_errno(
            connect(Reason::LocalError, "10.0.0.5:80", 0),
            errno::EADDRNOTAVAIL,
        ));
        let q = questions(&agg);
        let ns = 4_026_531_840;
        assert_eq!(
            q.listeners,
            BTreeSet::from([
                (ns, "10.0.0.2:80".parse().unwrap()),
                (ns, "10.0.0.3:80".parse().unwrap())
            ])
        );
        assert_eq!(
            q.ports,
            BTreeSet::from([(ns, "10.0.0.5:80".parse().unwrap())])
        );
    }
}
