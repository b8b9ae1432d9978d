//! The rules, one small pure function each: `(key, entry, context) -> Option<Verdict>`.
//! Each cites the numbers it concluded from.
use std::net::SocketAddr;

use serde_json::{Map, Value, json};

use super::{Confidence, Context, Layer, ListenerFact, PortFact, Verdict};
use crate::{
    aggregate::{Entry, FailureStats, Key},
    errno,
    model::Reason,
    output::time::human_duration,
};

/// Retransmits on established connections worth a verdict: at least this many in all...
pub const RETRANSMITS_MIN: u64 = 10;
/// ...and at least this many per connection that ended.
pub const RETRANSMITS_PER_CONNECTION: f64 = 1.0;
/// Reset ages cluster when they all lie within this fraction of their median...
const CLUSTER_SPREAD: f64 = 0.25;
/// ...and there are at least this many.
const CLUSTER_MIN: usize = 3;

/// Builds a verdict; `evidence` must be a JSON object.
struct Draft {
    rule: &'static str,
    layer: Layer,
    cause: &'static str,
    confidence: Confidence,
    summary: String,
    weight: u64,
}

impl Draft {
    fn with(self, evidence: Value, text: Vec<String>, next: Vec<String>) -> Verdict {
        Verdict {
            rule: self.rule,
            layer: self.layer,
            cause: self.cause,
            confidence: self.confidence,
            summary: self.summary,
            evidence: match evidence {
                Value::Object(map) => map,
                _ => Map::new(),
            },
            evidence_text: text,
            next,
            weight: self.weight,
        }
    }
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

fn dest_of(key: &Key) -> Option<SocketAddr> {
    key.destination
}

/// The destination of an entry of connections the workload made (not accepted).
fn outbound_dest(key: &Key) -> Option<SocketAddr> {
    key.destination.filter(|_| !key.inbound)
}

/// Resets on connections a listener on this host accepted: sent by the service (it aborts
/// connections: a crash, a close with SO_LINGER 0, shedding load) or by its clients (they
/// give up on it, usually waiting for a reply).
pub fn accepted_resets(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let service = key.destination.filter(|_| key.inbound)?;
    let (sent, received) = (e.resets_sent, e.resets_received);
    if sent + received == 0 {
        return None;
    }
    let who = key.workload_label();
    let (cause, summary) = if sent >= received {
        (
            "service_resets_connections",
            format!(
                "{who}, listening on {service}, resets connections it accepted ({}): it aborts them — a crash, a close with SO_LINGER 0, or shedding load",
                plural(sent, "reset")
            ),
        )
    } else {
        (
            "clients_reset_connections",
            format!(
                "the clients of {who} on {service} reset {} to it: they give up on it, usually waiting for a reply that is too slow",
                plural(received, "connection")
            ),
        )
    };
    Some(
        Draft {
            rule: "accepted_resets",
            layer: Layer::Service,
            cause,
            confidence: Confidence::Medium,
            summary,
            weight: sent + received,
        }
        .with(
            json!({"resets_sent": sent, "resets_received": received, "listener": service.to_string()}),
            vec![format!(
                "on connections accepted on {service}: {} sent by {who}, {} received from clients",
                plural(sent, "reset"),
                plural(received, "reset")
            )],
            vec![
                format!("the service's log around the resets (errors, restarts, connection limits) for {service}"),
                "the clients' timeouts, when it is they that reset".to_owned(),
            ],
        ),
    )
}

/// `3 of 5 attempts refused`.
fn share(n: u64, e: &Entry, what: &str) -> String {
    format!("{n} of {} {what}", plural(e.attempts, "attempt"))
}

/// Parts of a sentence, the empty ones left out.
fn clauses(parts: &[String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1 SYN each` or `2 to 3 SYNs each`.
fn syns_each(s: &FailureStats) -> String {
    let min = s.syns_sent / s.count.max(1);
    if u64::from(s.max_syns) == min && s.syns_sent.is_multiple_of(s.count.max(1)) {
        format!("{} each", plural(min, "SYN"))
    } else {
        format!("{} SYNs in all, up to {} each", s.syns_sent, s.max_syns)
    }
}

/// `after 3.01s on average (2.98s to 3.05s)`.
fn waited(s: &FailureStats) -> String {
    match s.mean_ns() {
        Some(mean) if s.min_ns == s.max_ns || s.count == 1 => {
            format!("after {}", human_duration(mean))
        }
        Some(mean) => format!(
            "after {} on average ({} to {})",
            human_duration(mean),
            human_duration(s.min_ns),
            human_duration(s.max_ns)
        ),
        None => String::new(),
    }
}

fn failure_json(s: &FailureStats) -> Value {
    json!({
        "count": s.count,
        "syns_sent": s.syns_sent,
        "max_syns_per_attempt": s.max_syns,
        "mean_wait_ns": s.mean_ns(),
        "min_wait_ns": (s.timed > 0).then_some(s.min_ns),
        "max_wait_ns": (s.timed > 0).then_some(s.max_ns),
    })
}

fn success_note(e: &Entry) -> Option<String> {
    (e.successes > 0).then(|| {
        format!(
            "{} to the same destination succeeded: it fails some of the time",
            plural(e.successes, "attempt")
        )
    })
}

/// The same service port fails on some addresses of a workload's destinations and works
/// on others: some backends are down.
pub fn partial_failure(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    if e.failures() == 0 || e.successes > 0 {
        return None;
    }
    let mut failing = Vec::new();
    let mut working = Vec::new();
    for (k, other) in ctx.aggregate.iter() {
        let Some(d) = k.destination else { continue };
        if k.workload != key.workload || d.port() != dest.port() {
            continue;
        }
        if other.successes > 0 && other.failures() == 0 {
            working.push(d);
        } else if other.failures() > 0 && other.successes == 0 {
            failing.push(d);
        }
    }
    if working.is_empty() {
        return None;
    }
    failing.sort();
    working.sort();
    let list = |v: &[SocketAddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let text = vec![
        format!(
            "failing: {} (every attempt failed)",
            list(&failing).join(", ")
        ),
        format!(
            "working: {} (every attempt succeeded)",
            list(&working).join(", ")
        ),
    ];
    Some(
        Draft {
            rule: "partial_failure",
            layer: Layer::Service,
            cause: "some_backends_down",
            confidence: Confidence::High,
            summary: format!(
                "some backends of port {} are down: {} of {} addresses fail while the others work",
                dest.port(),
                failing.len(),
                failing.len() + working.len()
            ),
            weight: e.failures(),
        }
        .with(
            json!({"port": dest.port(), "failing": list(&failing), "working": list(&working)}),
            text,
            vec![
                format!(
                    "check the health of {} and take it out of the pool (DNS, load balancer) until it recovers",
                    list(&failing).join(", ")
                ),
            ],
        ),
    )
}

/// A RST answered the SYN: nothing listens on destination:port, unless the host says
/// otherwise.
pub fn refused(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let s = &e.refused;
    if s.count == 0 {
        return None;
    }
    let fact = ctx.facts.listeners.get(&(e.netns, dest));
    let mut text = vec![clauses(&[
        format!("{} (ECONNREFUSED)", share(s.count, e, "refused")),
        syns_each(s),
        waited(s),
    ])];
    text.extend(success_note(e));
    let mut evidence = json!({
        "attempts": e.attempts,
        "refused": failure_json(s),
        "successes": e.successes,
    });
    let (draft, next) = match fact {
        Some(ListenerFact::Checked {
            netns,
            listening: true,
            ..
        }) => {
            text.push(format!(
                "a listener exists on {dest} (network namespace {})",
                join(netns)
            ));
            (
                Draft {
                    rule: "refused",
                    layer: Layer::Network,
                    cause: "reset_despite_listener",
                    confidence: Confidence::Medium,
                    summary: format!(
                        "a listener exists on {dest}: the reset came from something else (a firewall rule that rejects with a TCP reset, a proxy, or a full backlog)"
                    ),
                    weight: s.count,
                },
                vec![
                    "look for `reject with tcp reset` rules on the way and at the destination (`nft list ruleset`, `iptables -S`)".to_owned(),
                    "check the proxy or load balancer in front of the service, and the listener's backlog (`ss -ltn`)".to_owned(),
                ],
            )
        }
        Some(ListenerFact::Checked {
            netns, elsewhere, ..
        }) => {
            let confirmed = format!(
                "confirmed: no listener on {dest} (network namespace {})",
                join(netns)
            );
            text.push(confirmed.clone());
            if elsewhere.is_empty() {
                (
                    Draft {
                        rule: "refused",
                        layer: Layer::Service,
                        cause: "no_listener",
                        confidence: Confidence::High,
                        summary: format!("nothing listens on {dest}: {confirmed}"),
                        weight: s.count,
                    },
                    vec![
                        format!(
                            "start the service on port {}, or point the client at the port it listens on",
                            dest.port()
                        ),
                        "check the service's logs for why it is not running".to_owned(),
                    ],
                )
            } else {
                let bound = join(elsewhere);
                text.push(format!("port {} is bound to {bound} only", dest.port()));
                (
                    Draft {
                        rule: "refused",
                        layer: Layer::Service,
                        cause: "listener_on_other_address",
                        confidence: Confidence::High,
                        summary: format!(
                            "nothing listens on {dest}: {confirmed}; the service listens on {bound} only"
                        ),
                        weight: s.count,
                    },
                    vec![format!(
                        "bind the service to {} (or to all addresses), or connect to {bound}",
                        dest.ip()
                    )],
                )
            }
        }
        other => {
            let why = match other {
                Some(ListenerFact::Unknown(why)) => format!("listener on {dest}: unknown: {why}"),
                _ => format!(
                    "{} is not on this host: its listeners could not be checked",
                    dest.ip()
                ),
            };
            text.push(why);
            (
                Draft {
                    rule: "refused",
                    layer: Layer::Service,
                    cause: "no_listener",
                    confidence: Confidence::Medium,
                    summary: format!(
                        "nothing listens on {dest}: the destination answered the SYN with a reset"
                    ),
                    weight: s.count,
                },
                vec![
                    format!(
                        "check on {} that a service listens on port {} (`ss -ltn`)",
                        dest.ip(),
                        dest.port()
                    ),
                    "a firewall that rejects with a TCP reset looks the same: check its rules"
                        .to_owned(),
                ],
            )
        }
    };
    if let (Some(fact), Value::Object(map)) = (fact, &mut evidence) {
        map.insert("listener".into(), listener_json(fact));
    }
    Some(draft.with(evidence, text, next))
}

fn join<T: ToString>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn listener_json(fact: &ListenerFact) -> Value {
    match fact {
        ListenerFact::NotLocal => {
            json!({"checked": false, "status": "not_on_this_host", "why": "not on this host"})
        }
        ListenerFact::Unknown(why) => json!({"checked": false, "status": "unknown", "why": why}),
        ListenerFact::Checked {
            netns,
            listening,
            elsewhere,
        } => json!({
            "checked": true,
            "status": "checked",
            "netns": netns,
            "listening": listening,
            "elsewhere": elsewhere.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
    }
}

/// Connects time out although the service listens on this host: its accept queue is full,
/// and the kernel drops the SYNs it has no room for. The port is open, the service is not
/// keeping up.
pub fn accept_queue_full(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let failed = e.timeout.count + e.abandoned.count;
    if failed == 0 {
        return None;
    }
    let q = ctx.facts.queues.get(&(e.netns, dest))?;
    let full_now = q.backlog > 0 && q.queue >= q.backlog;
    let dropped = match q.drops_in_window {
        Some(n) => n,
        None if full_now => q.drops_total,
        None => 0,
    };
    if dropped == 0 {
        return None;
    }
    let who = q.owner.as_ref().map_or_else(
        || "the listening process".to_owned(),
        |(pid, name)| format!("{name} (pid {pid})"),
    );
    let port = q.listener.port();
    let mut text = vec![
        format!(
            "{} to a listener on this host ({})",
            share(failed, e, "timed out or abandoned"),
            q.listener
        ),
        format!(
            "its accept queue: {} waiting, limit {}; {} dropped {}",
            q.queue,
            q.backlog,
            plural(u64::from(dropped), "SYN"),
            if q.drops_in_window.is_some() {
                "while diagnose watched"
            } else {
                "since it started listening"
            }
        ),
    ];
    text.push(format!("listening process: {who}"));
    Some(
        Draft {
            rule: "accept_queue_full",
            layer: Layer::Service,
            cause: "accept_queue_full",
            confidence: Confidence::High,
            summary: format!(
                "the accept queue of port {port} is full (backlog {}): {} dropped; {who} does not accept connections as fast as they come",
                q.backlog,
                plural(u64::from(dropped), "SYN")
            ),
            weight: failed,
        }
        .with(
            json!({
                "listener": q.listener.to_string(),
                "queue": q.queue,
                "backlog": q.backlog,
                "syns_dropped": dropped,
                "syns_dropped_in_window": q.drops_in_window,
                "syns_dropped_total": q.drops_total,
                "process": q.owner.as_ref().map(|(pid, name)| json!({"pid": pid, "name": name})),
            }),
            text,
            vec![
                format!("see why {who} does not accept: stuck, too few workers, blocked on something"),
                "raise its listen() backlog (and net.core.somaxconn) if bursts outgrow the queue".to_owned(),
            ],
        ),
    )
}

/// What a drop reason of the kernel means on the host that dropped, and where to look.
fn drop_meaning(reason: &str) -> (&'static str, &'static str) {
    match reason {
        "NETFILTER_DROP" => (
            "this host's firewall (netfilter: nftables/iptables, its output chain) drops them",
            "`nft list ruleset` (or `iptables -S`) on this host: look for a DROP in the output chain",
        ),
        "NEIGH_FAILED" | "NEIGH_CREATEFAIL" | "NEIGH_QUEUEFULL" | "NEIGH_DEAD" => (
            "the next hop does not answer ARP/neighbour discovery, so they cannot be sent",
            "`ip neigh show` and `ip route get` on this host: is the gateway or the peer on the link up?",
        ),
        "IP_OUTNOROUTES" | "IP_INNOROUTES" => (
            "this host has no route for them",
            "`ip route get` for the destination on this host",
        ),
        "BPF_CGROUP_EGRESS" => (
            "a cgroup BPF program (a container network policy, a service mesh) drops them",
            "the network policy or BPF programs attached to the workload's cgroup (`bpftool cgroup tree`)",
        ),
        "TC_EGRESS" | "QDISC_DROP" | "QDISC_OVERLIMIT" | "QDISC_CONGESTED" => (
            "traffic control on this host (a qdisc, a tc filter) drops them",
            "`tc -s qdisc show` and `tc filter show` on the outgoing interface",
        ),
        "SECURITY_HOOK" | "XFRM_POLICY" => (
            "a security policy on this host (an LSM, an IPsec policy) drops them",
            "the host's LSM audit log and `ip xfrm policy`",
        ),
        _ => (
            "this host drops them before they leave",
            "the kernel's drop reason with `perf` or `dropwatch` on this host",
        ),
    }
}

/// The SYNs never left this host: its own firewall, neighbour resolution or routing
/// dropped them, so nothing on the way or at the peer is to blame.
pub fn dropped_here(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let n = e.dropped_here_count();
    if n == 0 {
        return None;
    }
    let (reason, _) = e.dropped_here.iter().max_by_key(|(_, c)| **c)?;
    let (meaning, next) = drop_meaning(reason);
    let reasons: Vec<String> = e
        .dropped_here
        .iter()
        .map(|(r, c)| format!("{c} {r}"))
        .collect();
    Some(
        Draft {
            rule: "dropped_here",
            layer: Layer::Network,
            cause: "dropped_on_this_host",
            confidence: Confidence::High,
            summary: format!("the SYNs to {dest} never left this host: {meaning}"),
            weight: n,
        }
        .with(
            json!({
                "attempts": e.attempts,
                "dropped_here": n,
                "drop_reasons": e.dropped_here,
                "timeouts": e.timeouts_dropped_here,
                "abandoned": e.abandoned_dropped_here,
            }),
            vec![format!(
                "{}: every SYN dropped on this host, by the kernel's account ({})",
                share(n, e, "failed"),
                reasons.join(", ")
            )],
            vec![next.to_owned()],
        ),
    )
}

/// SYNs went unanswered until the kernel gave up: filtered or dropped on the way, or the
/// host is down. (Attempts whose SYNs never left this host are `dropped_here`'s.)
pub fn timeout(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let s = &e.timeout;
    let unanswered = s.count.saturating_sub(e.timeouts_dropped_here);
    if unanswered == 0 {
        return None;
    }
    let mut text = vec![clauses(&[
        format!(
            "{} (ETIMEDOUT): {} unanswered",
            share(unanswered, e, "timed out"),
            syns_each(s)
        ),
        waited(s),
    ])];
    text.extend(success_note(e));
    let mut evidence =
        json!({"attempts": e.attempts, "timeout": failure_json(s), "successes": e.successes});
    let fact = ctx.facts.listeners.get(&(e.netns, dest));
    let mut summary = format!(
        "SYNs to {dest} go unanswered: filtered or dropped on the way, or the host is down"
    );
    if let Some(fact) = fact {
        if let ListenerFact::Checked {
            listening: true, ..
        } = fact
        {
            summary = format!(
                "SYNs to {dest} go unanswered although a listener exists: a firewall drops them, or its accept queue is full"
            );
            text.push(format!("a listener exists on {dest}"));
        }
        if let Value::Object(map) = &mut evidence {
            map.insert("listener".into(), listener_json(fact));
        }
    }
    Some(
        Draft {
            rule: "timeout",
            layer: Layer::Network,
            cause: "syn_unanswered",
            confidence: if e.successes > 0 {
                Confidence::Low
            } else {
                Confidence::Medium
            },
            summary,
            weight: unanswered,
        }
        .with(
            evidence,
            text,
            vec![
                format!(
                    "look for DROP rules and security groups on the way to {dest} (`nft list ruleset`)"
                ),
                format!("check that {} is up (ping, `ip neigh`)", dest.ip()),
            ],
        ),
    )
}

/// An ICMP error came back after the SYN left.
pub fn unreachable(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let s = &e.unreachable;
    if s.count == 0 {
        return None;
    }
    let (&top, _) = e.unreachable_errnos.iter().max_by_key(|(_, c)| **c)?;
    let (cause, meaning) = match top {
        errno::EHOSTUNREACH => (
            "host_unreachable",
            "the host did not answer ARP/neighbour discovery, or a firewall rejects with ICMP host-unreachable",
        ),
        errno::ENETUNREACH => (
            "net_unreachable",
            "a router on the way has no route to it, or a firewall rejects with ICMP net-unreachable",
        ),
        _ => (
            "unreachable",
            "an ICMP error came back: a firewall rejecting with ICMP, or a routing failure",
        ),
    };
    let codes: Vec<String> = e
        .unreachable_errnos
        .iter()
        .map(|(n, c)| format!("{c} {}", errno::name(*n)))
        .collect();
    let by_code: Map<String, Value> = e
        .unreachable_errnos
        .iter()
        .map(|(n, c)| (errno::name(*n), json!(c)))
        .collect();
    Some(
        Draft {
            rule: "unreachable",
            layer: Layer::Network,
            cause,
            confidence: Confidence::High,
            summary: format!("{dest} is unreachable ({}): {meaning}", errno::name(top)),
            weight: s.count,
        }
        .with(
            json!({"attempts": e.attempts, "unreachable": failure_json(s), "errors": by_code,
                "closed_by_application": e.unreachable_closed_by_app}),
            unreachable_text(e, s, &codes),
            vec![
                format!(
                    "`ip route get {}` and `ip neigh` on this host and on the way",
                    dest.ip()
                ),
                "look for `reject with icmp` firewall rules".to_owned(),
            ],
        ),
    )
}

fn unreachable_text(e: &Entry, s: &FailureStats, codes: &[String]) -> Vec<String> {
    let mut text = vec![clauses(&[
        format!(
            "{} ({})",
            share(s.count, e, "unreachable"),
            codes.join(", ")
        ),
        syns_each(s),
        waited(s),
    ])];
    if e.unreachable_closed_by_app > 0 {
        text.push(format!(
            "in {} the application closed the socket after the ICMP error came back (the \
             kernel would have tried again): the network answered, the client did not wait",
            plural(e.unreachable_closed_by_app, "attempt")
        ));
    }
    text
}

/// The application closed the socket while it was still connecting.
pub fn abandoned(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let s = &e.abandoned;
    if s.count.saturating_sub(e.abandoned_dropped_here) == 0 {
        return None;
    }
    let gave_up = s.mean_ns().unwrap_or(0);
    let p99 = e.connect_time.quantiles().map(|q| q.p99);
    let mut text = vec![format!(
        "{}: the application gave up {}, {} sent",
        share(s.count, e, "abandoned"),
        waited(s),
        plural(u64::from(s.max_syns), "SYN")
    )];
    let (layer, cause, confidence, summary) = match p99 {
        Some(p99) if p99 >= gave_up => {
            text.push(format!(
                "{} succeeded, with a connect time p99 of {}",
                plural(e.successes, "attempt"),
                human_duration(p99)
            ));
            (
                Layer::Client,
                "connect_timeout_too_short",
                Confidence::Medium,
                format!(
                    "the application gives up after {} but connects to {dest} take up to {} (p99): its connect timeout is too short for this path",
                    human_duration(gave_up),
                    human_duration(p99)
                ),
            )
        }
        Some(p99) => {
            text.push(format!(
                "{} succeeded, with a connect time p99 of {}",
                plural(e.successes, "attempt"),
                human_duration(p99)
            ));
            (
                Layer::Network,
                "intermittent_no_answer",
                Confidence::Low,
                format!(
                    "the application gave up after {} while connects that succeed take {} (p99): some SYNs to {dest} go unanswered (loss, or an overloaded server)",
                    human_duration(gave_up),
                    human_duration(p99)
                ),
            )
        }
        None => {
            text.push(format!("no attempt to {dest} succeeded"));
            (
                Layer::Network,
                "gave_up_no_answer",
                Confidence::Medium,
                format!(
                    "the application gave up after {} with no answer, and no attempt to {dest} ever succeeded: look at the network (filtered, dropped, host down)",
                    human_duration(gave_up)
                ),
            )
        }
    };
    let next = if cause == "connect_timeout_too_short" {
        vec![format!(
            "raise the application's connect timeout above {} for this destination",
            human_duration(p99.unwrap_or(gave_up))
        )]
    } else {
        vec![format!(
            "look for DROP rules on the way to {dest}; check that {} is up",
            dest.ip()
        )]
    };
    Some(
        Draft {
            rule: "abandoned",
            layer,
            cause,
            confidence,
            summary,
            weight: s.count,
        }
        .with(
            json!({
                "attempts": e.attempts,
                "abandoned": failure_json(s),
                "gave_up_after_ns": gave_up,
                "successes": e.successes,
                "success_p99_ns": p99,
            }),
            text,
            next,
        ),
    )
}

/// connect() failed on this host before any SYN left.
pub fn local_error(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let (&top, &count) = e.local_errors.iter().max_by_key(|(_, c)| **c)?;
    let name = errno::name(top);
    let mut text = vec![format!(
        "{} with {name} before any SYN left",
        share(count, e, "failed")
    )];
    let mut evidence = json!({"attempts": e.attempts, "errno": name, "count": count});
    let (cause, confidence, summary, next) = match top {
        errno::EADDRNOTAVAIL => {
            let fact = ctx.facts.ports.get(&(e.netns, dest));
            port_evidence(fact, dest, &mut text, &mut evidence);
            (
                "ephemeral_ports_exhausted",
                Confidence::High,
                format!("no free local port to reach {dest}: the ephemeral ports are exhausted"),
                vec![
                    "reuse connections (keep-alive, a pool) instead of opening one per request".to_owned(),
                    "widen net.ipv4.ip_local_port_range, or enable net.ipv4.tcp_tw_reuse".to_owned(),
                ],
            )
        }
        errno::EPERM | errno::EACCES => (
            "local_policy",
            Confidence::High,
            format!(
                "a local policy forbids connecting to {dest}: a firewall OUTPUT rule, an LSM (SELinux, AppArmor), seccomp or a cgroup BPF program"
            ),
            vec!["check `nft list ruleset` (output chains), the LSM's audit log, and cgroup BPF programs (`bpftool cgroup tree`)".to_owned()],
        ),
        errno::ENETUNREACH => (
            "no_route",
            Confidence::High,
            format!("this host has no route to {}", dest.ip()),
            vec![format!(
                "`ip route get {}` in the client's network namespace; add the route or fix the default gateway",
                dest.ip()
            )],
        ),
        _ => (
            "local_error",
            Confidence::Medium,
            format!("connect() to {dest} failed on this host with {name}"),
            vec![format!("look up {name} for connect(2)")],
        ),
    };
    Some(
        Draft {
            rule: "local_error",
            layer: Layer::Client,
            cause,
            confidence,
            summary,
            weight: count,
        }
        .with(evidence, text, next),
    )
}

fn port_evidence(
    fact: Option<&PortFact>,
    dest: SocketAddr,
    text: &mut Vec<String>,
    evidence: &mut Value,
) {
    let Some(fact) = fact else { return };
    if let Some((lo, hi)) = fact.range {
        text.push(format!(
            "ip_local_port_range is {lo} to {hi}: {} ports",
            u32::from(hi).saturating_sub(u32::from(lo)) + 1
        ));
    }
    if let Some(n) = fact.sockets_to_destination {
        text.push(format!(
            "{} to {dest} open on this side",
            plural(n, "socket")
        ));
    }
    if let Value::Object(map) = evidence {
        map.insert(
            "ip_local_port_range".into(),
            json!(fact.range.map(|(lo, hi)| [lo, hi])),
        );
        map.insert(
            "sockets_to_destination".into(),
            json!(fact.sockets_to_destination),
        );
    }
}

/// The peer resets established connections; clustered ages point at an idle timeout.
pub fn peer_reset(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = outbound_dest(key)?;
    // Resets after the peer's own FIN are stale keep-alive reuse, `stale_keepalive`'s.
    let aborts = e.resets_received.saturating_sub(e.stale_reuse.count);
    if aborts == 0 {
        return None;
    }
    let ages: Vec<u64> = e.reset_ages_ns.iter().copied().collect();
    let idle = cluster(&ages);
    let mut text = vec![format!(
        "{} received on established connections",
        plural(aborts, "reset")
    )];
    if let (Some(min), Some(max)) = (ages.iter().min(), ages.iter().max()) {
        text.push(format!(
            "connection ages at the reset: {} to {}",
            human_duration(*min),
            human_duration(*max)
        ));
    }
    let summary = match idle {
        Some(t) => {
            text.push(format!(
                "the ages cluster around {}: an idle timeout of about that at the peer or a middlebox",
                human_duration(t)
            ));
            format!(
                "{dest} aborts established connections after about {}: an idle timeout at the peer or a middlebox",
                human_duration(t)
            )
        }
        None => format!("{dest} aborts established connections (TCP reset)"),
    };
    let mut next = vec![format!(
        "check the service's logs at {dest} for aborted connections"
    )];
    if let Some(t) = idle {
        next.push(format!(
            "close idle connections in the client's pool before {} (or send keepalives)",
            human_duration(t)
        ));
    }
    Some(
        Draft {
            rule: "peer_reset",
            layer: Layer::Service,
            cause: "peer_reset",
            confidence: if idle.is_some() {
                Confidence::High
            } else {
                Confidence::Medium
            },
            summary,
            weight: aborts,
        }
        .with(
            json!({
                "resets_received": aborts,
                "age_min_ns": ages.iter().min(),
                "age_max_ns": ages.iter().max(),
                "suggested_idle_timeout_ns": idle,
            }),
            text,
            next,
        ),
    )
}

/// A pooled connection reused after the server had closed it: the server's FIN came after
/// an idle time (its keep-alive timeout), the client wrote on the half-closed connection
/// later and got a reset. Intermittent "connection reset by peer" that looks like a flaky
/// backend, where the fix is the client pool's idle timeout.
pub fn stale_keepalive(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = outbound_dest(key)?;
    let s = &e.stale_reuse;
    if s.count == 0 {
        return None;
    }
    let idle: Vec<u64> = s.idle_before_fin_ns.iter().copied().collect();
    let later: Vec<u64> = s.fin_to_reset_ns.iter().copied().collect();
    let server_idle = median(&idle)?;
    let reused_after = median(&later)?;
    let spread = match (idle.iter().min(), idle.iter().max()) {
        (Some(lo), Some(hi)) if lo != hi => {
            format!(" (from {} to {})", human_duration(*lo), human_duration(*hi))
        }
        _ => String::new(),
    };
    let text = vec![
        format!(
            "{} received on connections {dest} had already closed (its FIN came first)",
            plural(s.count, "reset")
        ),
        format!(
            "idle time before the server's FIN: {} median{spread}, over {}",
            human_duration(server_idle),
            plural(idle.len() as u64, "connection")
        ),
        format!(
            "the client wrote on them {} after that FIN (median)",
            human_duration(reused_after)
        ),
    ];
    Some(
        Draft {
            rule: "stale_keepalive",
            layer: Layer::Client,
            cause: "stale_keepalive_reuse",
            confidence: if s.count >= 2 {
                Confidence::High
            } else {
                Confidence::Medium
            },
            summary: format!(
                "stale keep-alive reuse: {dest} closes connections idle for about {}; the client's pool keeps them longer and reuses them after the server closed them",
                human_duration(server_idle)
            ),
            weight: s.count,
        }
        .with(
            json!({
                "stale_reuses": s.count,
                "server_idle_timeout_ns": server_idle,
                "server_idle_min_ns": idle.iter().min(),
                "server_idle_max_ns": idle.iter().max(),
                "reused_after_fin_ns": reused_after,
            }),
            text,
            vec![
                format!(
                    "set the client pool's idle timeout below {} (or raise the server's keep-alive timeout above the pool's)",
                    human_duration(server_idle)
                ),
                "validate pooled connections before use, or enable TCP keepalive probes on them".to_owned(),
                "retry idempotent requests once when a reused connection is reset".to_owned(),
            ],
        ),
    )
}

/// The median of some durations.
fn median(values: &[u64]) -> Option<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    sorted.get(sorted.len() / 2).copied()
}

/// Connections the peer accepted and closed (FIN or RST) without replying a single byte:
/// worth a verdict when it is a pattern, not a single health check.
pub const CLOSED_BEFORE_REPLY_MIN: u64 = 3;

/// The peer completes the handshake and hangs up before replying: a protocol or TLS
/// mismatch (TLS to a plain port, plain to a TLS one), or an overloaded server shedding
/// connections it cannot serve.
pub fn closed_before_reply(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = outbound_dest(key)?;
    let n = e.closed_before_reply;
    if n < CLOSED_BEFORE_REPLY_MIN || n * 2 < e.ends_with_bytes {
        return None;
    }
    Some(
        Draft {
            rule: "closed_before_reply",
            layer: Layer::Service,
            cause: "closed_before_reply",
            confidence: Confidence::Medium,
            summary: format!(
                "{dest} accepts connections and closes them before sending a single byte: a protocol or TLS mismatch, or an overloaded server shedding connections"
            ),
            weight: n,
        }
        .with(
            json!({"closed_before_reply": n, "connections_ended": e.ends_with_bytes}),
            vec![format!(
                "{n} of {} ended with nothing received from {dest}, the peer closing first (FIN or RST)",
                plural(e.ends_with_bytes, "connection")
            )],
            vec![
                format!("check that the client speaks what {dest} expects (TLS or plain, the protocol's version)"),
                format!("look in the service's log at {dest} for refused or shed connections (connection limits, overload)"),
            ],
        ),
    )
}

/// The median of `ages` when they all lie within [`CLUSTER_SPREAD`] of it.
pub fn cluster(ages: &[u64]) -> Option<u64> {
    if ages.len() < CLUSTER_MIN {
        return None;
    }
    let mut sorted = ages.to_vec();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let spread = (median as f64 * CLUSTER_SPREAD) as u64;
    let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
    (median - min <= spread && max - median <= spread && median > 0).then_some(median)
}

/// The kernel killed established connections: unanswered retransmissions or keepalives.
pub fn connection_lost(key: &Key, e: &Entry, _ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    let lost = e.lost_total();
    if lost == 0 {
        return None;
    }
    let by_reason: Map<String, Value> = e
        .lost
        .iter()
        .map(|(r, c)| (r.as_str().to_owned(), json!(c)))
        .collect();
    let timeouts = e.lost.get(&Reason::Timeout).copied().unwrap_or(0);
    Some(
        Draft {
            rule: "connection_lost",
            layer: Layer::Network,
            cause: "connection_lost",
            confidence: Confidence::Medium,
            summary: format!(
                "established connections to {dest} died: the peer stopped answering (it went away, or the path drops its packets)"
            ),
            weight: lost,
        }
        .with(
            json!({"lost": lost, "by_reason": by_reason}),
            vec![format!(
                "{} lost, {timeouts} of them to unanswered retransmissions or keepalives",
                plural(lost, "established connection")
            )],
            vec![format!(
                "check that {} stayed up; look for stateful firewalls or NAT on the way that forget idle connections",
                dest.ip()
            )],
        ),
    )
}

/// Retransmits on established connections above the threshold: loss or congestion.
pub fn retransmits(key: &Key, e: &Entry, ctx: &Context<'_>) -> Option<Verdict> {
    let dest = dest_of(key)?;
    if e.retransmits < RETRANSMITS_MIN || e.connections_ended == 0 {
        return None;
    }
    let per_connection = e.retransmits as f64 / e.connections_ended as f64;
    if per_connection < RETRANSMITS_PER_CONNECTION {
        return None;
    }
    let per_second =
        (ctx.window_ns > 0).then(|| e.retransmits as f64 / (ctx.window_ns as f64 / 1e9));
    let mut text = vec![format!(
        "{} over {} that ended: {per_connection:.1} per connection",
        plural(e.retransmits, "retransmit"),
        plural(e.connections_ended, "connection")
    )];
    if let Some(r) = per_second {
        text.push(format!("{r:.2} retransmits per second"));
    }
    Some(
        Draft {
            rule: "retransmits",
            layer: Layer::Network,
            cause: "packet_loss",
            confidence: Confidence::Medium,
            summary: format!("packets to {dest} are lost or delayed on the way: loss or congestion"),
            weight: e.retransmits / RETRANSMITS_MIN,
        }
        .with(
            json!({
                "retransmits": e.retransmits,
                "connections_ended": e.connections_ended,
                "per_connection": per_connection,
                "per_second": per_second,
            }),
            text,
            vec!["look at interface errors and drops (`ip -s link`), and queueing on the way (`tc -s qdisc`)".to_owned()],
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::{
            Aggregator,
            tests::{closed, connect, key, reset_received, with_errno},
        },
        diagnose::Facts,
        model::{Action, ConnEvent},
    };

    const DEST: &str = "10.0.0.2:80";
    const NS: u32 = 4_026_531_840;

    fn run(
        rule: fn(&Key, &Entry, &Context<'_>) -> Option<Verdict>,
        events: &[ConnEvent],
        facts: &Facts,
    ) -> Option<Verdict> {
        let mut agg = Aggregator::new(100);
        for e in events {
            agg.record(e);
        }
        let ctx = Context {
            aggregate: &agg,
            facts,
            window_ns: 10_000_000_000,
        };
        rule(&key(DEST), agg.get(&key(DEST))?, &ctx)
    }

    fn refused3() -> Vec<ConnEvent> {
        vec![connect(Reason::Refused, DEST, 1); 3]
    }

    fn listener(fact: ListenerFact) -> Facts {
        let mut f = Facts::default();
        f.listeners.insert((NS, DEST.parse().unwrap()), fact);
        f
    }

    #[test]
    fn refused_with_no_listener_is_confirmed() {
        let facts = listener(ListenerFact::Checked {
            netns: vec![7],
            listening: false,
            elsewhere: vec![],
        });
        let v = run(refused, &refused3(), &facts).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Service, "no_listener", Confidence::High)
        );
        assert!(
            v.summary.contains("confirmed: no listener"),
            "{}",
            v.summary
        );
        assert_eq!(v.evidence["refused"]["count"], 3);
        assert_eq!(v.evidence["listener"]["listening"], false);
        assert_eq!(v.weight, 3);
        assert!(
            v.evidence_text[0].starts_with("3 of 3 attempts refused"),
            "{:?}",
            v.evidence_text
        );
    }

    #[test]
    fn refused_with_a_listener_on_another_address() {
        let facts = listener(ListenerFact::Checked {
            netns: vec![7],
            listening: false,
            elsewhere: vec!["10.0.0.3:80".parse().unwrap()],
        });
        let v = run(refused, &refused3(), &facts).unwrap();
        assert_eq!(
            (v.layer, v.cause),
            (Layer::Service, "listener_on_other_address")
        );
        assert!(v.summary.contains("10.0.0.3:80 only"), "{}", v.summary);
    }

    #[test]
    fn refused_despite_a_listener_blames_something_else() {
        let facts = listener(ListenerFact::Checked {
            netns: vec![7],
            listening: true,
            elsewhere: vec![],
        });
        let v = run(refused, &refused3(), &facts).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Network, "reset_despite_listener", Confidence::Medium)
        );
        assert!(v.summary.contains("a listener exists"), "{}", v.summary);
    }

    #[test]
    fn refused_elsewhere_cannot_be_confirmed() {
        let v = run(refused, &refused3(), &listener(ListenerFact::NotLocal)).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Service, "no_listener", Confidence::Medium)
        );
        assert!(
            v.evidence_text
                .iter()
                .any(|t| t.contains("not on this host"))
        );
        assert_eq!(
            run(
                refused,
                &[connect(Reason::Success, DEST, 1)],
                &Facts::default()
            ),
            None
        );
    }

    /// A check that could not be made says so, in words and in the JSON evidence; it never
    /// says "not on this host".
    #[test]
    fn an_unmade_listener_check_says_unknown() {
        let why = "could not check (needs CAP_SYS_ADMIN): 1 network namespace on this host could not be read";
        let v = run(
            refused,
            &refused3(),
            &listener(ListenerFact::Unknown(why.into())),
        )
        .unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Service, "no_listener", Confidence::Medium)
        );
        assert!(
            v.evidence_text
                .contains(&format!("listener on {DEST}: unknown: {why}")),
            "{:?}",
            v.evidence_text
        );
        assert!(
            !v.evidence_text
                .iter()
                .any(|t| t.contains("not on this host")),
            "{:?}",
            v.evidence_text
        );
        assert_eq!(
            v.evidence["listener"],
            json!({"checked": false, "status": "unknown", "why": why})
        );
        let v = run(refused, &refused3(), &listener(ListenerFact::NotLocal)).unwrap();
        assert_eq!(v.evidence["listener"]["status"], "not_on_this_host");
    }

    #[test]
    fn timeout_cites_syns_and_time() {
        let mut e = connect(Reason::Timeout, DEST, 3000);
        e.syn_retransmits = 2;
        let v = run(timeout, &[e.clone(), e], &Facts::default()).unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Network, "syn_unanswered"));
        assert_eq!(v.evidence["timeout"]["syns_sent"], 6);
        assert_eq!(v.evidence["timeout"]["mean_wait_ns"], 3_000_000_000u64);
        assert!(
            v.evidence_text[0].contains("3 SYNs each unanswered, after 3.00s"),
            "{:?}",
            v.evidence_text
        );
    }

    #[test]
    fn timeout_with_a_listener_points_at_a_drop_before_it() {
        let facts = listener(ListenerFact::Checked {
            netns: vec![7],
            listening: true,
            elsewhere: vec![],
        });
        let v = run(timeout, &[connect(Reason::Timeout, DEST, 3000)], &facts).unwrap();
        assert!(
            v.summary.contains("although a listener exists"),
            "{}",
            v.summary
        );
    }

    /// A connect whose every SYN this host dropped itself, for `reason`.
    fn dropped_here_attempt(outcome: Reason, reason: &str) -> ConnEvent {
        let mut e = connect(outcome, DEST, 3000);
        e.syn_retransmits = 0;
        e.details.local_drops = 3;
        e.details.drop_reason = Some(reason.into());
        e
    }

    fn queue(drops_in_window: Option<u32>, queue: u32, drops_total: u32) -> Facts {
        let mut f = Facts::default();
        f.queues.insert(
            (NS, DEST.parse().unwrap()),
            crate::diagnose::QueueFact {
                listener: "0.0.0.0:80".parse().unwrap(),
                queue,
                backlog: 1,
                drops_in_window,
                drops_total,
                owner: Some((4242, "slowd".into())),
            },
        );
        f
    }

    #[test]
    fn a_full_accept_queue_on_this_host_is_the_services() {
        let timeouts = vec![connect(Reason::Timeout, DEST, 3000); 3];
        let v = run(accept_queue_full, &timeouts, &queue(Some(9), 1, 12)).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Service, "accept_queue_full", Confidence::High)
        );
        assert!(
            v.summary
                .contains("accept queue of port 80 is full (backlog 1): 9 SYNs dropped"),
            "{}",
            v.summary
        );
        assert!(v.summary.contains("slowd (pid 4242)"), "{}", v.summary);
        assert_eq!(v.evidence["syns_dropped_in_window"], 9);
        // No drops in the window: nothing to say; unknown start: only if full now.
        assert!(run(accept_queue_full, &timeouts, &queue(Some(0), 1, 12)).is_none());
        assert!(run(accept_queue_full, &timeouts, &queue(None, 0, 12)).is_none());
        let v = run(accept_queue_full, &timeouts, &queue(None, 1, 12)).unwrap();
        assert_eq!(v.evidence["syns_dropped"], 12);
        // Only timeouts and abandoned connects are about a queue.
        let refused = vec![connect(Reason::Refused, DEST, 1); 3];
        assert!(run(accept_queue_full, &refused, &queue(Some(9), 1, 12)).is_none());
    }

    #[test]
    fn syns_dropped_on_this_host_are_not_unanswered() {
        let events = vec![dropped_here_attempt(Reason::Timeout, "NETFILTER_DROP"); 2];
        let v = run(dropped_here, &events, &Facts::default()).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Network, "dropped_on_this_host", Confidence::High)
        );
        assert!(v.summary.contains("never left this host"), "{}", v.summary);
        assert!(v.summary.contains("firewall"), "{}", v.summary);
        assert_eq!(v.evidence["drop_reasons"]["NETFILTER_DROP"], 2);
        assert!(v.next[0].contains("output chain"), "{:?}", v.next);
        // The timeout rule says nothing of attempts that never left.
        assert!(run(timeout, &events, &Facts::default()).is_none());
        // Neighbour failures point at the link, and an abandoned attempt counts too.
        let neigh = dropped_here_attempt(Reason::Abandoned, "NEIGH_FAILED");
        let v = run(
            dropped_here,
            std::slice::from_ref(&neigh),
            &Facts::default(),
        )
        .unwrap();
        assert!(v.summary.contains("neighbour"), "{}", v.summary);
        assert!(run(abandoned, &[neigh], &Facts::default()).is_none());
    }

    #[test]
    fn some_syns_left_so_the_timeout_rule_still_speaks() {
        let mut partly = connect(Reason::Timeout, DEST, 3000);
        partly.syn_retransmits = 2;
        partly.details.local_drops = 1;
        partly.details.drop_reason = Some("NETFILTER_DROP".into());
        assert!(run(dropped_here, &[partly.clone()], &Facts::default()).is_none());
        let v = run(timeout, &[partly], &Facts::default()).unwrap();
        assert_eq!(v.evidence["timeout"]["syns_sent"], 2);
    }

    #[test]
    fn unreachable_says_when_the_application_gave_up_after_the_icmp_error() {
        let mut e = connect(Reason::Unreachable, DEST, 1);
        e.details.closed_after_error = true;
        let v = run(unreachable, &[e], &Facts::default()).unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Network, "host_unreachable"));
        assert_eq!(v.evidence["closed_by_application"], 1);
        assert!(
            v.evidence_text
                .iter()
                .any(|t| t.contains("closed the socket after the ICMP error")),
            "{:?}",
            v.evidence_text
        );
    }

    #[test]
    fn unreachable_names_its_errno() {
        let v = run(
            unreachable,
            &[connect(Reason::Unreachable, DEST, 5)],
            &Facts::default(),
        )
        .unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Network, "host_unreachable"));
        assert_eq!(v.evidence["errors"]["EHOSTUNREACH"], 1);
        let net = with_errno(connect(Reason::Unreachable, DEST, 5), errno::ENETUNREACH);
        assert_eq!(
            run(unreachable, &[net], &Facts::default()).unwrap().cause,
            "net_unreachable"
        );
    }

    #[test]
    fn abandoned_with_nothing_ever_succeeding_points_at_the_network() {
        let v = run(
            abandoned,
            &[connect(Reason::Abandoned, DEST, 300)],
            &Facts::default(),
        )
        .unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Network, "gave_up_no_answer"));
        assert_eq!(v.evidence["gave_up_after_ns"], 300_000_000u64);
        assert!(v.summary.contains("gave up after 300.0ms"), "{}", v.summary);
    }

    #[test]
    fn abandoned_sooner_than_successes_take_means_the_timeout_is_too_short() {
        let mut events = vec![connect(Reason::Abandoned, DEST, 100)];
        events.extend((0..10).map(|_| connect(Reason::Success, DEST, 250)));
        let v = run(abandoned, &events, &Facts::default()).unwrap();
        assert_eq!(
            (v.layer, v.cause),
            (Layer::Client, "connect_timeout_too_short")
        );
        assert!(v.summary.contains("too short"), "{}", v.summary);
    }

    #[test]
    fn abandoned_later_than_successes_take_means_lost_syns() {
        let mut events = vec![connect(Reason::Abandoned, DEST, 1000)];
        events.extend((0..10).map(|_| connect(Reason::Success, DEST, 2)));
        let v = run(abandoned, &events, &Facts::default()).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Network, "intermittent_no_answer", Confidence::Low)
        );
    }

    #[test]
    fn ephemeral_port_exhaustion_cites_the_range_and_the_sockets() {
        let e = with_errno(connect(Reason::LocalError, DEST, 0), errno::EADDRNOTAVAIL);
        let mut facts = Facts::default();
        facts.ports.insert(
            (NS, DEST.parse().unwrap()),
            PortFact {
                range: Some((40000, 40001)),
                sockets_to_destination: Some(2),
            },
        );
        let v = run(local_error, &[e], &facts).unwrap();
        assert_eq!(
            (v.layer, v.cause),
            (Layer::Client, "ephemeral_ports_exhausted")
        );
        assert_eq!(v.evidence["ip_local_port_range"], json!([40000, 40001]));
        assert_eq!(v.evidence["sockets_to_destination"], 2);
        assert!(
            v.evidence_text
                .iter()
                .any(|t| t.contains("40000 to 40001: 2 ports")),
            "{:?}",
            v.evidence_text
        );
    }

    #[test]
    fn local_policy_and_no_route() {
        let eperm = with_errno(connect(Reason::LocalError, DEST, 0), errno::EPERM);
        let eacces = with_errno(connect(Reason::LocalError, DEST, 0), errno::EACCES);
        for e in [eperm, eacces] {
            let v = run(local_error, &[e], &Facts::default()).unwrap();
            assert_eq!((v.layer, v.cause), (Layer::Client, "local_policy"));
        }
        let v = run(
            local_error,
            &[connect(Reason::LocalError, DEST, 0)],
            &Facts::default(),
        )
        .unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Client, "no_route"));
        assert_eq!(v.evidence["errno"], "ENETUNREACH");
        let other = with_errno(connect(Reason::LocalError, DEST, 0), 24);
        assert_eq!(
            run(local_error, &[other], &Facts::default()).unwrap().cause,
            "local_error"
        );
    }

    #[test]
    fn resets_with_clustered_ages_name_an_idle_timeout() {
        let events: Vec<_> = [195, 200, 210]
            .iter()
            .map(|ms| reset_received(DEST, *ms))
            .collect();
        let v = run(peer_reset, &events, &Facts::default()).unwrap();
        assert_eq!(
            (v.layer, v.cause, v.confidence),
            (Layer::Service, "peer_reset", Confidence::High)
        );
        assert_eq!(v.evidence["suggested_idle_timeout_ns"], 200_000_000u64);
        assert!(v.summary.contains("after about 200.0ms"), "{}", v.summary);
    }

    #[test]
    fn resets_with_scattered_ages_name_no_timeout() {
        let events: Vec<_> = [10, 2000, 90_000]
            .iter()
            .map(|ms| reset_received(DEST, *ms))
            .collect();
        let v = run(peer_reset, &events, &Facts::default()).unwrap();
        assert_eq!(v.evidence["suggested_idle_timeout_ns"], Value::Null);
        assert_eq!(v.confidence, Confidence::Medium);
    }

    #[test]
    fn cluster_needs_enough_close_ages() {
        assert_eq!(cluster(&[100, 100]), None);
        assert_eq!(cluster(&[100, 110, 90]), Some(100));
        assert_eq!(cluster(&[100, 200, 300]), None);
        assert_eq!(cluster(&[0, 0, 0]), None);
    }

    #[test]
    fn lost_connections_are_a_network_verdict() {
        let lost = ConnEvent {
            action: Action::Lost,
            reason: Reason::Timeout,
            errno: Some(110),
            ..closed(DEST, 5)
        };
        let v = run(connection_lost, &[lost], &Facts::default()).unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Network, "connection_lost"));
        assert_eq!(v.evidence["by_reason"]["timeout"], 1);
    }

    #[test]
    fn retransmits_above_the_threshold_cite_the_rate() {
        let v = run(
            retransmits,
            &[closed(DEST, 12), closed(DEST, 8)],
            &Facts::default(),
        )
        .unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Network, "packet_loss"));
        assert_eq!(v.evidence["per_connection"], 10.0);
        assert_eq!(v.evidence["per_second"], 2.0);
        // Below the total, or spread thin over many connections: nothing to say.
        assert_eq!(
            run(retransmits, &[closed(DEST, 9)], &Facts::default()),
            None
        );
        let thin: Vec<_> = (0..20)
            .map(|i| closed(DEST, u32::from(i == 0) * 10))
            .collect();
        assert_eq!(run(retransmits, &thin, &Facts::default()), None);
    }

    #[test]
    fn partial_failure_lists_the_failing_and_the_working_backends() {
        let mut events = refused3();
        events.push(connect(Reason::Success, "10.0.0.3:80", 1));
        events.push(connect(Reason::Success, "10.0.0.4:80", 1));
        events.push(connect(Reason::Refused, "10.0.0.5:80", 1));
        // Another port of the same hosts is another service.
        events.push(connect(Reason::Success, "10.0.0.6:81", 1));
        let v = run(partial_failure, &events, &Facts::default()).unwrap();
        assert_eq!((v.layer, v.cause), (Layer::Service, "some_backends_down"));
        assert_eq!(v.evidence["failing"], json!(["10.0.0.2:80", "10.0.0.5:80"]));
        assert_eq!(v.evidence["working"], json!(["10.0.0.3:80", "10.0.0.4:80"]));
        assert_eq!(v.weight, 3);
    }

    #[test]
    fn no_partial_failure_when_nothing_works() {
        let mut events = refused3();
        events.push(connect(Reason::Refused, "10.0.0.3:80", 1));
        assert_eq!(run(partial_failure, &events, &Facts::default()), None);
        // Nor for a destination that works some of the time.
        let mut mixed = refused3();
        mixed.push(connect(Reason::Success, DEST, 1));
        mixed.push(connect(Reason::Success, "10.0.0.3:80", 1));
        assert_eq!(run(partial_failure, &mixed, &Facts::default()), None);
    }
}
