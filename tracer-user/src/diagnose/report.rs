//! The diagnosis for people (a text report) and for machines (one JSON document, see
//! docs/schema.md), from the same findings.
use std::{collections::BTreeMap, io::Write};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Finding, Verdict};
use crate::{
    aggregate::Aggregator,
    loader::KernelCounters,
    model::{RunInfo, short_id},
    output::{
        SCHEMA_VERSION,
        schema::{CountsObj, SubjectObj},
        summary::{counts, subject},
        terminal::write_line,
        time::{clock_millis, human_duration, rfc3339_nanos},
    },
};

/// What the report says about the run itself.
pub struct RunSummary<'a> {
    pub info: &'a RunInfo,
    pub end_ns: u64,
}

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// (workload, destination) entries.
    pub keys: usize,
    pub attempts: u64,
    pub successes: u64,
    pub failures: u64,
    pub resets_received: u64,
    pub lost: u64,
    /// Records folded into `other` entries because the table was full.
    pub folded_into_other: u64,
    /// Records lost in the kernel (ring buffer full): the counts are then lower bounds.
    pub lost_events: u64,
    /// Connects not followed (the connect map was full): their outcomes are missing.
    pub connects_unfollowed: u64,
    /// Established connections not followed (their map was full): their resets and
    /// losses are missing.
    pub established_unfollowed: u64,
    /// Program runs the kernel skipped (nested in another BPF program on the same CPU).
    pub skipped_program_runs: u64,
}

/// The totals of a run, with what the kernel side lost or could not follow.
pub fn totals(agg: &Aggregator, kernel: &KernelCounters) -> Totals {
    let mut t = Totals {
        keys: agg.len(),
        folded_into_other: agg.folded(),
        lost_events: kernel.lost,
        connects_unfollowed: kernel.connects_unfollowed,
        established_unfollowed: kernel.established_unfollowed,
        skipped_program_runs: kernel.skipped_total(),
        ..Totals::default()
    };
    for (_, e) in agg.iter() {
        t.attempts += e.attempts;
        t.successes += e.successes;
        t.failures += e.failures();
        t.resets_received += e.resets_received;
        t.lost += e.lost_total();
    }
    t
}

#[derive(Serialize)]
struct Document<'a> {
    schema_version: u32,
    #[serde(rename = "@timestamp")]
    timestamp: String,
    host: HostObj<'a>,
    kernel: &'a str,
    connect_hook: &'a str,
    filters: &'a BTreeMap<&'static str, String>,
    window: WindowObj,
    totals: &'a Totals,
    /// Whether any finding was made (the exit status is then 1).
    failures_found: bool,
    findings: Vec<FindingObj>,
}

#[derive(Serialize)]
struct HostObj<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct WindowObj {
    start: String,
    end: String,
    duration: u64,
}

#[derive(Serialize)]
struct FindingObj {
    rank: usize,
    #[serde(flatten)]
    subject: SubjectObj,
    pids: Vec<u32>,
    harm: u64,
    /// The headline verdict's fields, repeated here for `jq '.findings[].cause'`.
    layer: &'static str,
    cause: &'static str,
    confidence: &'static str,
    summary: String,
    evidence: Map<String, Value>,
    next: Vec<String>,
    /// Every verdict, the headline first.
    verdicts: Vec<VerdictObj>,
    counts: CountsObj,
}

#[derive(Serialize)]
struct VerdictObj {
    rule: &'static str,
    layer: &'static str,
    cause: &'static str,
    confidence: &'static str,
    summary: String,
    evidence: Map<String, Value>,
    evidence_text: Vec<String>,
    next: Vec<String>,
}

fn verdict_obj(v: &Verdict) -> VerdictObj {
    VerdictObj {
        rule: v.rule,
        layer: v.layer.as_str(),
        cause: v.cause,
        confidence: v.confidence.as_str(),
        summary: v.summary.clone(),
        evidence: v.evidence.clone(),
        evidence_text: v.evidence_text.clone(),
        next: v.next.clone(),
    }
}

fn finding_obj(rank: usize, f: &Finding<'_>) -> Option<FindingObj> {
    let head = f.headline()?;
    Some(FindingObj {
        rank,
        subject: subject(f.key, f.entry),
        pids: f.entry.pids.pids.clone(),
        harm: f.harm,
        layer: head.layer.as_str(),
        cause: head.cause,
        confidence: head.confidence.as_str(),
        summary: head.summary.clone(),
        evidence: head.evidence.clone(),
        next: head.next.clone(),
        verdicts: f.verdicts.iter().map(verdict_obj).collect(),
        counts: counts(f.entry),
    })
}

/// The report as one JSON document (and a newline).
pub fn write_json(
    out: &mut impl Write,
    run: &RunSummary<'_>,
    totals: &Totals,
    findings: &[Finding<'_>],
) -> std::io::Result<()> {
    let doc = Document {
        schema_version: SCHEMA_VERSION,
        timestamp: rfc3339_nanos(run.end_ns),
        host: HostObj {
            name: &run.info.host,
        },
        kernel: &run.info.kernel,
        connect_hook: &run.info.connect_hook,
        filters: &run.info.filters,
        window: WindowObj {
            start: rfc3339_nanos(run.info.start_ns),
            end: rfc3339_nanos(run.end_ns),
            duration: run.end_ns.saturating_sub(run.info.start_ns),
        },
        totals,
        failures_found: !findings.is_empty(),
        findings: findings
            .iter()
            .enumerate()
            .filter_map(|(i, f)| finding_obj(i + 1, f))
            .collect(),
    };
    serde_json::to_writer_pretty(&mut *out, &doc)?;
    out.write_all(b"\n")
}

/// What the kernel side missed: the counts are lower bounds then, and the user should
/// know what to raise.
fn write_warnings(out: &mut impl Write, totals: &Totals) -> std::io::Result<()> {
    if totals.lost_events > 0 {
        write_line(
            out,
            format_args!(
                "warning: {} records were lost in the kernel (ring buffer full: raise --ring-buffer-size): the counts are lower bounds",
                totals.lost_events
            ),
        )?;
    }
    if totals.connects_unfollowed > 0 {
        write_line(
            out,
            format_args!(
                "warning: {} connects were not followed (connect map full: raise --max-connections): their outcomes are missing",
                totals.connects_unfollowed
            ),
        )?;
    }
    if totals.established_unfollowed > 0 {
        write_line(
            out,
            format_args!(
                "warning: {} established connections were not followed (map full: raise --max-established): their resets and losses are missing",
                totals.established_unfollowed
            ),
        )?;
    }
    if totals.skipped_program_runs > 0 {
        write_line(
            out,
            format_args!(
                "warning: the kernel skipped {} runs of conntrace's programs (nested inside other BPF programs): some events are missing",
                totals.skipped_program_runs
            ),
        )?;
    }
    if totals.folded_into_other > 0 {
        write_line(
            out,
            format_args!(
                "note: {} records went to `other` entries (more destinations than --max-keys)",
                totals.folded_into_other
            ),
        )?;
    }
    Ok(())
}

/// The report for people.
pub fn write_text(
    out: &mut impl Write,
    run: &RunSummary<'_>,
    totals: &Totals,
    findings: &[Finding<'_>],
) -> std::io::Result<()> {
    let window = run.end_ns.saturating_sub(run.info.start_ns);
    write_line(
        out,
        format_args!(
            "conntrace diagnose: watched {} on {} (kernel {}, connect hook: {})",
            human_duration(window),
            run.info.host,
            run.info.kernel,
            run.info.connect_hook
        ),
    )?;
    write_line(
        out,
        format_args!(
            "{} connect attempts, {} failed, {} resets received, {} connections lost, in {} (workload, destination) pairs",
            totals.attempts, totals.failures, totals.resets_received, totals.lost, totals.keys
        ),
    )?;
    write_warnings(out, totals)?;
    if findings.is_empty() {
        write_line(out, format_args!(""))?;
        return write_line(out, format_args!("No failures found."));
    }
    write_line(out, format_args!(""))?;
    write_line(
        out,
        format_args!(
            "{} failing, most harmful first:",
            if findings.len() == 1 {
                "1 (workload, destination) is".to_owned()
            } else {
                format!("{} (workload, destination) pairs are", findings.len())
            }
        ),
    )?;
    for (i, f) in findings.iter().enumerate() {
        write_finding(out, i + 1, f)?;
    }
    Ok(())
}

fn write_finding(out: &mut impl Write, rank: usize, f: &Finding<'_>) -> std::io::Result<()> {
    let Some(head) = f.headline() else {
        return Ok(());
    };
    let mut who = vec![format!(
        "pid{} {}{}",
        if f.entry.pids.pids.len() == 1 {
            ""
        } else {
            "s"
        },
        f.entry
            .pids
            .pids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        if f.entry.pids.more { ", ..." } else { "" }
    )];
    who.extend(f.entry.executable.as_deref().map(String::from));
    if let Some(w) = &f.key.workload {
        who.extend(
            w.pod()
                .and_then(|p| p.name.as_ref())
                .map(|n| format!("pod {n}")),
        );
        who.extend(
            w.container()
                .map(|c| format!("container {}", short_id(&c.id))),
        );
    }
    write_line(out, format_args!(""))?;
    write_line(
        out,
        format_args!(
            "#{rank}  {} → {}  ({})",
            f.key.workload_label(),
            f.key.destination_label(),
            who.join("; ")
        ),
    )?;
    write_line(out, format_args!("    layer       {}", head.layer.as_str()))?;
    write_line(
        out,
        format_args!("    cause       {}: {}", head.cause, head.summary),
    )?;
    write_line(
        out,
        format_args!("    confidence  {}", head.confidence.as_str()),
    )?;
    let mut evidence = head.evidence_text.clone();
    evidence.push(format!(
        "first seen {}, last seen {} (UTC)",
        clock_millis(f.entry.first_seen_ns),
        clock_millis(f.entry.last_seen_ns)
    ));
    write_list(out, "evidence", &evidence)?;
    write_list(out, "next", &head.next)?;
    let also: Vec<String> = f.verdicts[1..]
        .iter()
        .map(|v| {
            format!(
                "{} layer, {} ({} confidence): {}",
                v.layer.as_str(),
                v.cause,
                v.confidence.as_str(),
                v.summary
            )
        })
        .collect();
    write_list(out, "also", &also)
}

fn write_list(out: &mut impl Write, label: &str, lines: &[String]) -> std::io::Result<()> {
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { label } else { "" };
        write_line(out, format_args!("    {label:<11} {line}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        aggregate::tests::connect,
        diagnose::{Context, Facts, diagnose},
        model::Reason,
    };

    fn info() -> RunInfo {
        RunInfo {
            start_ns: 1_795_889_615_000_000_000,
            host: "node-1".into(),
            kernel: "6.18.0".into(),
            connect_hook: "tracepoint".into(),
            filters: BTreeMap::new(),
        }
    }

    fn agg() -> Aggregator {
        let mut agg = Aggregator::new(100);
        for _ in 0..2 {
            agg.record(&connect(Reason::Refused, "10.0.0.2:81", 1));
        }
        agg.record(&connect(Reason::Timeout, "10.0.0.2:81", 3000));
        agg.record(&connect(Reason::Success, "10.0.0.3:80", 1));
        agg
    }

    fn render(json: bool, agg: &Aggregator) -> String {
        render_with(json, agg, &KernelCounters::default())
    }

    fn render_with(json: bool, agg: &Aggregator, kernel: &KernelCounters) -> String {
        let facts = Facts::default();
        let ctx = Context {
            aggregate: agg,
            facts: &facts,
            window_ns: 6_000_000_000,
        };
        let findings = diagnose(&ctx);
        let info = info();
        let run = RunSummary {
            info: &info,
            end_ns: info.start_ns + 6_000_000_000,
        };
        let t = totals(agg, kernel);
        let mut out = Vec::new();
        if json {
            write_json(&mut out, &run, &t, &findings).unwrap();
        } else {
            write_text(&mut out, &run, &t, &findings).unwrap();
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_document_shape() {
        let doc: Value = serde_json::from_str(&render(true, &agg())).unwrap();
        assert_eq!(doc["schema_version"], 2);
        assert_eq!(doc["window"]["duration"], 6_000_000_000u64);
        assert_eq!(doc["failures_found"], true);
        assert_eq!(
            doc["totals"],
            serde_json::json!({"keys": 2, "attempts": 4, "successes": 1, "failures": 3,
                "resets_received": 0, "lost": 0, "folded_into_other": 0, "lost_events": 0,
                "connects_unfollowed": 0, "established_unfollowed": 0, "skipped_program_runs": 0})
        );
        let findings = doc["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 1);
        let f = &findings[0];
        assert_eq!(f["rank"], 1);
        assert_eq!(f["destination"]["ip"], "10.0.0.2");
        assert_eq!(f["process"]["name"], "app");
        assert_eq!(
            (f["layer"].as_str(), f["cause"].as_str()),
            (Some("service"), Some("no_listener"))
        );
        assert_eq!(f["verdicts"][0]["cause"], "no_listener");
        assert_eq!(f["verdicts"][1]["cause"], "syn_unanswered");
        assert_eq!(f["counts"]["failures"]["refused"], 2);
        assert_eq!(f["counts"]["failures"]["timeout"], 1);
        assert_eq!(f["evidence"]["refused"]["count"], 2);
    }

    #[test]
    fn the_report_warns_about_what_the_kernel_side_missed() {
        let kernel = KernelCounters {
            lost: 3,
            connects_unfollowed: 5,
            skipped: BTreeMap::from([("inet_sock_set_state".to_owned(), 2)]),
            ..KernelCounters::default()
        };
        let text = render_with(false, &agg(), &kernel);
        assert!(text.contains("warning: 3 records were lost"), "{text}");
        assert!(
            text.contains("warning: 5 connects were not followed"),
            "{text}"
        );
        assert!(text.contains("raise --max-connections"), "{text}");
        assert!(text.contains("skipped 2 runs"), "{text}");
        assert!(
            !text.contains("established connections were not followed"),
            "{text}"
        );
        let doc: Value = serde_json::from_str(&render_with(true, &agg(), &kernel)).unwrap();
        assert_eq!(doc["totals"]["connects_unfollowed"], 5);
        assert_eq!(doc["totals"]["skipped_program_runs"], 2);
    }

    #[test]
    fn text_report_has_one_block_per_finding() {
        let text = render(false, &agg());
        assert!(
            text.starts_with("conntrace diagnose: watched 6.00s on node-1"),
            "{text}"
        );
        assert!(text.contains("4 connect attempts, 3 failed"), "{text}");
        assert!(
            text.contains("#1  app → 10.0.0.2:81  (pid 100; /usr/bin/app)"),
            "{text}"
        );
        assert!(text.contains("    layer       service\n"), "{text}");
        assert!(
            text.contains("    cause       no_listener: nothing listens on 10.0.0.2:81"),
            "{text}"
        );
        assert!(
            text.contains("    also        network layer, syn_unanswered"),
            "{text}"
        );
        assert!(!text.contains("#2"), "{text}");
    }

    /// A finding about a process in a pod names the workload people think in, in the
    /// text, and carries the container and pod in the JSON.
    #[test]
    fn findings_name_the_pod_workload() {
        use crate::model::{Container, Identity, Pod, Workload, WorkloadKind};
        let mut e = connect(Reason::Refused, "10.0.0.2:81", 1);
        e.process.identity = Some(std::sync::Arc::new(Identity {
            container: Some(Container {
                id: "3f2a9b1c4d5e".repeat(5) + "6f70",
                runtime: Some("containerd".into()),
                name: Some("app".into()),
            }),
            pod: Some(Pod {
                uid: Some("1a2b3c4d-5e6f-4a8b-9c0d-112233445566".into()),
                name: Some("web-7d9f8b6c5d-x2k4p".into()),
                namespace: Some("shop".into()),
                workload: Some(Workload {
                    kind: WorkloadKind::Deployment,
                    name: "web".into(),
                }),
            }),
        }));
        let mut agg = Aggregator::new(10);
        agg.record(&e);
        let text = render(false, &agg);
        assert!(
            text.contains(
                "#1  shop/deployment/web [app] (app) → 10.0.0.2:81  (pid 100; /usr/bin/app; pod web-7d9f8b6c5d-x2k4p; container 3f2a9b1c4d5e)"
            ),
            "{text}"
        );
        let doc: Value = serde_json::from_str(&render(true, &agg)).unwrap();
        let p = &doc["findings"][0]["process"];
        assert_eq!(p["container"]["name"], "app");
        assert_eq!(p["container"]["runtime"], "containerd");
        assert_eq!(p["pod"]["namespace"], "shop");
        assert_eq!(
            p["pod"]["workload"],
            serde_json::json!({"kind": "deployment", "name": "web"})
        );
        assert!(doc["findings"][0].get("container").is_none());
    }

    #[test]
    fn nothing_failing_says_so() {
        let mut agg = Aggregator::new(10);
        agg.record(&connect(Reason::Success, "10.0.0.3:80", 1));
        assert!(render(false, &agg).ends_with("\nNo failures found.\n"));
        let doc: Value = serde_json::from_str(&render(true, &agg)).unwrap();
        assert_eq!(doc["failures_found"], false);
        assert_eq!(doc["findings"], serde_json::json!([]));
    }

    /// A workload's name and executable are whatever the process chose: the report shows
    /// them escaped, and nothing in it can move the cursor or forge a line.
    #[test]
    fn hostile_names_and_paths_are_escaped() {
        use crate::output::terminal::tests::{HOSTILE, raw_controls};
        for (raw, escaped) in HOSTILE {
            let mut agg = Aggregator::new(10);
            let mut e = connect(Reason::Refused, "10.0.0.2:81", 1);
            e.process.name = (*raw).to_owned();
            e.process.executable = Some(format!("/tmp/{raw}/app").into());
            agg.record(&e);
            let text = render(false, &agg);
            assert_eq!(raw_controls(text.as_bytes()), [] as [usize; 0], "{raw:?}");
            assert!(
                text.contains(&format!(
                    "#1  {escaped} → 10.0.0.2:81  (pid 100; /tmp/{escaped}/app)\n"
                )),
                "{text}"
            );
            let doc: Value = serde_json::from_str(&render(true, &agg)).unwrap();
            assert_eq!(doc["findings"][0]["process"]["name"], *raw);
        }
    }
}
