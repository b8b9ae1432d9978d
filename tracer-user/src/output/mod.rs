//! Where records go, and how they look: JSON lines ([`json`], [`summary`]) or text columns
//! ([`text`]), formatted on the event loop into a bounded queue ([`queue`], [`stream`])
//! that a writer thread ([`writer`]) empties to stdout or a file. The JSON records' one
//! definition is [`schema`]; the writers are checked against it. [`http`] serves the
//! Prometheus metrics.
pub mod digits;
pub mod hook;
pub mod http;
pub mod json;
pub mod queue;
pub mod schema;
pub mod stream;
pub mod summary;
pub mod syslog;
pub mod terminal;
pub mod text;
pub mod time;
pub mod writer;

use std::io::Write as _;

/// Version of the JSON records' shape (docs/schema.md). Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// Writes to stderr, ignoring failures: a closed or full stderr must neither stop the run
/// nor panic (as `eprintln!` would).
pub fn to_stderr(write: impl FnOnce(&mut std::io::StderrLock<'_>) -> std::io::Result<()>) {
    let mut err = std::io::stderr().lock();
    let _ = write(&mut err);
    let _ = err.flush();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        model::{Action, ConnEvent, Outcome, Process, Reason, RunInfo},
        stats::Snapshot,
    };
    use serde_json::{Value, json};
    use std::collections::BTreeMap;

    /// A refused connect with every field set: the fixture the JSON tests share.
    pub(crate) fn refused() -> ConnEvent {
        ConnEvent {
            time_ns: 1_795_889_615_123_456_789,
            action: Action::Connect,
            reason: Reason::Refused,
            outcome: Outcome::Failure,
            duration_ns: Some(210_000),
            errno: Some(111),
            process: Process {
                pid: 4242,
                tid: 4243,
                uid: 1000,
                name: "curl".into(),
                executable: Some("/usr/bin/curl".into()),
                args: Some(vec!["curl".into(), "http://10.0.0.2/".into()]),
                cgroup_id: 77,
                ..Process::default()
            },
            source: Some("10.0.0.1:40000".parse().unwrap()),
            destination: "10.0.0.2:80".parse().unwrap(),
            netns: 4_026_532_000,
            syn_retransmits: 0,
            retransmits: 0,
            tcp_state: None,
            age_ns: None,
            details: Default::default(),
        }
    }

    fn json_of(e: &ConnEvent) -> Value {
        let mut out = Vec::new();
        json::write_event(&mut out, e, "node-1", &mut time::Timestamps::default()).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.ends_with('\n') && out.matches('\n').count() == 1,
            "one line: {out}"
        );
        serde_json::from_str(&out).unwrap()
    }

    #[test]
    fn refused_connect_json_shape() {
        assert_eq!(
            json_of(&refused()),
            json!({
                "@timestamp": "2026-11-28T18:13:35.123456789Z",
                "event": {
                    "kind": "event", "category": ["network"], "type": ["connection"],
                    "action": "connect", "outcome": "failure", "reason": "refused", "duration": 210000
                },
                "error": {"code": "ECONNREFUSED"},
                "process": {
                    "pid": 4242, "name": "curl", "thread": {"id": 4243},
                    "executable": "/usr/bin/curl", "args": ["curl", "http://10.0.0.2/"]
                },
                "user": {"id": "1000"},
                "source": {"ip": "10.0.0.1", "port": 40000},
                "destination": {"ip": "10.0.0.2", "port": 80},
                "network": {"type": "ipv4", "transport": "tcp"},
                "host": {"name": "node-1"},
                "conntrace": {
                    "schema_version": 2, "netns": 4026532000u64, "cgroup_id": 77,
                    "syns_sent": 1, "syn_retransmits": 0, "retransmits": 0
                }
            })
        );
    }

    #[test]
    fn local_error_has_no_source_and_reset_has_state() {
        let mut e = refused();
        e.reason = Reason::LocalError;
        e.errno = Some(101);
        e.source = None;
        e.duration_ns = None;
        let v = json_of(&e);
        assert!(v.get("source").is_none());
        assert_eq!(v["error"]["code"], "ENETUNREACH");
        assert_eq!(v["conntrace"]["syns_sent"], 0);
        assert!(v["event"].get("duration").is_none());

        let mut r = refused();
        r.action = Action::Reset;
        r.reason = Reason::Received;
        r.errno = None;
        r.tcp_state = Some(1);
        r.age_ns = Some(5_000);
        let v = json_of(&r);
        assert_eq!(v["event"]["action"], "reset");
        assert_eq!(v["conntrace"]["tcp_state"], "ESTABLISHED");
        assert_eq!(v["conntrace"]["age"], 5000);
        assert!(v.get("error").is_none());
    }

    #[test]
    fn ipv6_is_labelled() {
        let mut e = refused();
        e.destination = "[fd00::2]:443".parse().unwrap();
        e.source = Some("[fd00::1]:50000".parse().unwrap());
        let v = json_of(&e);
        assert_eq!(v["network"]["type"], "ipv6");
        assert_eq!(v["destination"]["ip"], "fd00::2");
    }

    #[test]
    fn start_and_stats_records() {
        let mut out = Vec::new();
        let info = RunInfo {
            start_ns: 0,
            host: "h".into(),
            kernel: "6.18.0".into(),
            connect_hook: "tracepoint".into(),
            filters: BTreeMap::from([("port", "80".to_owned())]),
        };
        json::write_start(&mut out, &info).unwrap();
        let mut snap = Snapshot {
            is_final: true,
            ..Snapshot::default()
        };
        snap.counts.record(&refused());
        snap.kernel.lost_per_cpu = vec![0, 3];
        snap.kernel.lost = 3;
        json::write_stats(&mut out, &snap, "h").unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0]["event"],
            json!({"kind": "state", "action": "start"})
        );
        assert_eq!(lines[0]["conntrace"]["connect_hook"], "tracepoint");
        assert_eq!(lines[0]["conntrace"]["filters"]["port"], "80");
        assert_eq!(
            lines[1]["event"],
            json!({"kind": "metric", "action": "stats"})
        );
        assert_eq!(lines[1]["conntrace"]["events"]["connect.refused"], 1);
        assert_eq!(lines[1]["conntrace"]["lost_events"], 3);
        assert_eq!(lines[1]["conntrace"]["lost_events_per_cpu"], json!([0, 3]));
        assert_eq!(lines[1]["conntrace"]["final"], true);
    }

    #[test]
    fn text_is_aligned_columns_with_a_header() {
        let mut out = Vec::new();
        let mut timeout = refused();
        timeout.reason = Reason::Timeout;
        timeout.errno = Some(110);
        timeout.syn_retransmits = 1;
        timeout.duration_ns = Some(3_010_000_000);
        text::write_header(&mut out).unwrap();
        text::write_event(&mut out, &refused()).unwrap();
        text::write_event(&mut out, &timeout).unwrap();
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("TIME"));
        assert!(
            lines[1].contains("refused") && lines[1].contains("ECONNREFUSED, after 210µs, 1 SYN"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].contains("timeout") && lines[2].contains("ETIMEDOUT, after 3.01s, 2 SYNs"),
            "{}",
            lines[2]
        );
        let col = |l: &str| l.find("10.0.0.2:80").unwrap();
        assert_eq!(col(lines[1]), col(lines[2]));
        assert_eq!(lines[0].find("DESTINATION").unwrap(), col(lines[1]));
    }

    /// Whatever a process names itself, the text table keeps one row per record and no
    /// control character reaches the terminal; the JSON stream carries the name as it is.
    #[test]
    fn hostile_names_cannot_break_the_table() {
        for (raw, escaped) in terminal::tests::HOSTILE {
            let mut e = refused();
            e.process.name = (*raw).to_owned();
            let mut out = Vec::new();
            text::write_header(&mut out).unwrap();
            text::write_event(&mut out, &e).unwrap();
            assert_eq!(
                terminal::tests::raw_controls(&out),
                [] as [usize; 0],
                "{raw:?}"
            );
            let text = String::from_utf8(out).unwrap();
            assert_eq!(text.lines().count(), 2, "header and one row: {text}");
            assert!(text.lines().nth(1).unwrap().contains(escaped), "{text}");
            assert_eq!(json_of(&e)["process"]["name"], *raw);
        }
    }
}
