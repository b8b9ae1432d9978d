//! Where records go: JSON lines or text columns on stdout (data only), buffered and
//! flushed on a tick and at exit.
pub mod json;
pub mod summary;
pub mod terminal;
pub mod text;
pub mod time;

use std::{collections::BTreeMap, io::Write};

use crate::{cli::Format, model::ConnEvent, stats::Snapshot};

/// Version of the JSON records' shape (docs/schema.md). Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 2;

/// What the start record says about this run.
#[derive(Clone, Debug, Default)]
pub struct RunInfo {
    pub start_ns: u64,
    pub host: String,
    pub kernel: String,
    pub connect_hook: String,
    pub filters: BTreeMap<&'static str, String>,
}

/// Records out. `W` is stdout in the binary and a `Vec<u8>` in tests.
pub struct Sink<W: Write> {
    format: Format,
    out: W,
    host: String,
    header_written: bool,
}

impl<W: Write> Sink<W> {
    pub fn new(format: Format, out: W, host: String) -> Sink<W> {
        Sink {
            format,
            out,
            host,
            header_written: false,
        }
    }

    /// The first record of a JSON stream; in text mode a line on stderr.
    pub fn start(&mut self, info: &RunInfo) -> std::io::Result<()> {
        match self.format {
            Format::Json => json::write_start(&mut self.out, info),
            Format::Text => text::write_start(&mut std::io::stderr(), info),
        }
    }

    pub fn event(&mut self, e: &ConnEvent) -> std::io::Result<()> {
        match self.format {
            Format::Json => json::write_event(&mut self.out, e, &self.host),
            Format::Text => {
                if !self.header_written {
                    text::write_header(&mut self.out)?;
                    self.header_written = true;
                }
                text::write_event(&mut self.out, e)
            }
        }
    }

    pub fn stats(&mut self, s: &Snapshot) -> std::io::Result<()> {
        match self.format {
            Format::Json => json::write_stats(&mut self.out, s, &self.host),
            Format::Text => text::write_stats(&mut std::io::stderr(), s),
        }
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    pub fn into_inner(self) -> W {
        self.out
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The stream, for records written elsewhere (summaries) between these.
    pub fn writer(&mut self) -> &mut W {
        &mut self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Outcome, Process, Reason};
    use serde_json::{Value, json};

    /// A refused connect with every field set: the fixture the JSON tests share.
    pub(super) fn refused() -> ConnEvent {
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
        let mut sink = Sink::new(Format::Json, Vec::new(), "node-1".into());
        sink.event(e).unwrap();
        let out = String::from_utf8(sink.into_inner()).unwrap();
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
        let mut sink = Sink::new(Format::Json, Vec::new(), "h".into());
        let info = RunInfo {
            start_ns: 0,
            host: "h".into(),
            kernel: "6.18.0".into(),
            connect_hook: "tracepoint".into(),
            filters: BTreeMap::from([("port", "80".to_owned())]),
        };
        sink.start(&info).unwrap();
        let mut snap = Snapshot {
            is_final: true,
            ..Snapshot::default()
        };
        snap.counts.record(&refused());
        snap.kernel.lost_per_cpu = vec![0, 3];
        snap.kernel.lost = 3;
        sink.stats(&snap).unwrap();
        let out = String::from_utf8(sink.into_inner()).unwrap();
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
        let mut sink = Sink::new(Format::Text, Vec::new(), "h".into());
        let mut timeout = refused();
        timeout.reason = Reason::Timeout;
        timeout.errno = Some(110);
        timeout.syn_retransmits = 1;
        timeout.duration_ns = Some(3_010_000_000);
        sink.event(&refused()).unwrap();
        sink.event(&timeout).unwrap();
        let out = String::from_utf8(sink.into_inner()).unwrap();
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
            let mut sink = Sink::new(Format::Text, Vec::new(), "h".into());
            sink.event(&e).unwrap();
            let out = sink.into_inner();
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
