//! Prometheus metrics for real: Debian's Prometheus server scrapes conntrace on loopback
//! while failures are staged, and the counts are read back through Prometheus's query API.
//! The alerting rules and the Grafana dashboard in deploy/ are checked with promtool, and
//! every metric they use must be one conntrace exposes.
use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use harness::{
    TempDir,
    http::{encode, free_port, get},
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::Tracer,
};
use serde_json::Value;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (Debian's prometheus package; cargo xtask setup installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

/// Every metric family conntrace exposes (`conntrace_…_total`, …), once a record of each
/// kind has been counted (a family shows once it has a series).
fn exposed_families() -> BTreeSet<String> {
    use conntrace::{
        model::{Action, ConnEvent, Outcome, Process, Reason, RunInfo},
        sinks::Sink as _,
        stats::Snapshot,
    };
    let mut m = conntrace::sinks::metrics::Metrics::new(Default::default(), 10);
    let event = |action, reason, outcome| ConnEvent {
        time_ns: 1,
        action,
        reason,
        outcome,
        duration_ns: Some(1_000),
        errno: None,
        process: Process {
            name: "app".into(),
            ..Process::default()
        },
        source: None,
        destination: "10.0.0.2:80".parse().unwrap(),
        netns: 1,
        syn_retransmits: 1,
        retransmits: 1,
        tcp_state: None,
        age_ns: None,
        details: Default::default(),
    };
    for (action, reason, outcome) in [
        (Action::Connect, Reason::Success, Outcome::Success),
        (Action::Connect, Reason::Refused, Outcome::Failure),
        (Action::Reset, Reason::Received, Outcome::Failure),
        (Action::Lost, Reason::Timeout, Outcome::Failure),
        (Action::Close, Reason::Closed, Outcome::Success),
    ] {
        m.event(&event(action, reason, outcome)).unwrap();
    }
    let mut snapshot = Snapshot::default();
    snapshot
        .kernel
        .skipped
        .insert("inet_sock_set_state".into(), 1);
    m.health(&snapshot);
    m.start(&RunInfo::default()).unwrap();
    let (_, _, text) = conntrace::output::http::respond("GET /metrics HTTP/1.1", &m.registry());
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The `conntrace_…` names an expression or a file uses, as families (`_bucket`, `_sum`
/// and `_count` belong to their histogram).
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("conntrace_") {
        let boundary = i == 0 || !text.as_bytes()[i - 1].is_ascii_alphanumeric();
        if !boundary {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name)
            .to_owned();
        names.insert(family);
    }
    names
}

#[test]
fn the_alerting_rules_pass_promtool_and_their_unit_tests() {
    let dir = deploy("prometheus");
    promtool(&["check", "rules", "conntrace-rules.yml"], &dir);
    promtool(&["test", "rules", "conntrace-rules.test.yml"], &dir);
    let rules = std::fs::read_to_string(dir.join("conntrace-rules.yml")).unwrap();
    let used = metric_names(&rules);
    let exposed = exposed_families();
    assert!(used.len() >= 5, "{used:?}");
    for name in &used {
        assert!(
            exposed.contains(name),
            "the rules use {name}, not exposed: {exposed:?}"
        );
    }
}

#[test]
fn the_dashboard_queries_are_promql_over_exposed_metrics() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/conntrace-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    // Grafana's variables, as a query would see them; then promtool parses each one as a
    // recording rule.
    let dir = TempDir::new("dashboard");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$workload", ".*")
            .replace("$destination", ".*");
        rules += &format!(
            "      - record: dashboard:panel_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        );
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    promtool(&["check", "rules", "dashboard.yml"], dir.path());
    let exposed = exposed_families();
    let text = serde_json::to_string(&dashboard).unwrap();
    for name in metric_names(&text) {
        assert!(
            exposed.contains(&name),
            "the dashboard uses {name}, not exposed"
        );
    }
}

/// Debian's Prometheus, scraping one target every second, on loopback.
struct Prometheus {
    child: Child,
    api: SocketAddr,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: conntrace\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let api: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (cargo xtask setup installs Debian's package)");
        Prometheus {
            child,
            api,
            _dir: dir,
        }
    }

    /// `query`'s result vector, or an empty one.
    fn query(&self, query: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", encode(query));
        match get(self.api, &path) {
            Ok((200, body)) => {
                let v: Value = serde_json::from_str(&body).unwrap_or_default();
                v["data"]["result"].as_array().cloned().unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }

    /// Waits until `query` gives `want` (a sample value), for at most 30 s.
    fn wait_for(&self, query: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = Vec::new();
        while Instant::now() < deadline {
            last = self.query(query);
            let value = last
                .first()
                .and_then(|r| r["value"][1].as_str())
                .and_then(|v| v.parse::<f64>().ok());
            if value == Some(want) {
                return;
            }
            thread::sleep(Duration::from_millis(250));
        }
        panic!("Prometheus: {query} is not {want}: {last:?}");
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_what_conntrace_counted() {
    require_root();
    let pair = Pair::new("prom");
    // A real web server, and a real client: three refused connects, two that succeed.
    let _server = harness::Killed(
        pair.server
            .command(&["python3", "-m", "http.server", "8080", "--bind", SERVER_V4])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_listening(&pair, 8080);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let tracer = Tracer::start(
        &pair.client.path(),
        &["--metrics", &metrics.to_string(), "--no-args"],
    );
    let prometheus = Prometheus::start(metrics);
    let curl = |port: u16| {
        pair.client
            .command(&[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--max-time",
                "2",
                &format!("http://{SERVER_V4}:{port}/"),
            ])
            .status()
            .expect("curl")
    };
    for _ in 0..3 {
        assert!(!curl(81).success());
    }
    for _ in 0..2 {
        assert!(curl(8080).success());
    }
    let labels = format!(r#"workload="curl",destination="{SERVER_V4}""#);
    prometheus.wait_for(r#"up{job="conntrace"}"#, 1.0);
    prometheus.wait_for(
        &format!(
            r#"sum(conntrace_connect_attempts_total{{{labels},port="81",outcome="failure",reason="refused"}})"#
        ),
        3.0,
    );
    prometheus.wait_for(
        &format!(
            r#"sum(conntrace_connect_attempts_total{{{labels},port="8080",reason="success"}})"#
        ),
        2.0,
    );
    prometheus.wait_for(
        &format!(r#"sum(conntrace_connect_duration_seconds_count{{{labels},port="8080",outcome="success"}})"#),
        2.0,
    );
    prometheus.wait_for("sum(conntrace_kernel_records_lost_total)", 0.0);
    // What Prometheus scraped passes its own linter.
    let (status, exposition) = get(metrics, "/metrics").unwrap();
    assert_eq!(status, 200);
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), exposition.as_bytes()).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{exposition}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exposition.contains("pid="), "{exposition}");
    let records = tracer.stop();
    assert_eq!(harness::tracer::records(&records, "connect").len(), 5);
}

/// Waits until something listens on the server's port.
fn wait_listening(pair: &Pair, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = pair
            .server
            .exec_ok(&["ss", "-Htln", &format!("sport = :{port}")]);
        if !out.stdout.is_empty() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port}");
}
