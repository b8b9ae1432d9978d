//! The always-on loop, end to end: a real service (Python's http.server) answers a real
//! client (curl in a loop); the service stops listening; conntrace's verdict says so; the
//! hook (a real shell script, run by `--on-verdict`) restarts the service; the recovery
//! verdict follows. The same process serves the JSON stream, summaries and metrics.
use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use harness::{
    Killed, TempDir,
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::Tracer,
};
use serde_json::Value;

const PORT: &str = "8080";

/// `python3 -m http.server` on the server's address, in its namespace.
fn serve(pair: &Pair) -> Child {
    pair.server
        .command(&["python3", "-m", "http.server", PORT, "--bind", SERVER_V4])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3")
}

/// The next verdict record within `wait`.
fn next_verdict(tracer: &mut Tracer, wait: Duration) -> Option<Value> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tracer.next_record(left)?;
        if r["event"]["action"] == "verdict" {
            return Some(r);
        }
    }
}

#[test]
fn a_service_that_stops_listening_is_restarted_by_the_hook_and_recovers() {
    require_root();
    let pair = Pair::new("verdict");
    let dir = TempDir::new("hook");
    // The hook: keeps what it was given, restarts the service when nothing listens.
    let hook = dir.path().join("restart-service.sh");
    std::fs::write(
        &hook,
        format!(
            r#"#!/bin/sh
set -e
cat > "{dir}/$CONNTRACE_VERDICT_STATE.json"
env | grep '^CONNTRACE_' | sort > "{dir}/$CONNTRACE_VERDICT_STATE.env"
if [ "$CONNTRACE_VERDICT_STATE" = failing ] && [ "$CONNTRACE_CAUSE" = no_listener ]; then
    setsid ip netns exec {server} python3 -m http.server "$CONNTRACE_DESTINATION_PORT" \
        --bind "$CONNTRACE_DESTINATION_IP" </dev/null >/dev/null 2>&1 &
    echo "restarted the service on $CONNTRACE_DESTINATION_IP:$CONNTRACE_DESTINATION_PORT"
fi
"#,
            dir = dir.path().display(),
            server = pair.server.name
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut service = serve(&pair);
    let metrics = format!("127.0.0.1:{}", harness::http::free_port());
    let mut tracer = Tracer::start(
        &pair.client.path(),
        &[
            "--no-args",
            "--metrics",
            &metrics,
            "--summary-interval",
            "1",
            "--verdicts",
            "--verdict-interval",
            "1",
            "--verdict-window",
            "10",
            "--on-verdict",
            hook.to_str().unwrap(),
        ],
    );
    // A client that keeps asking, as a real one would.
    let url = format!("http://{SERVER_V4}:{PORT}/");
    let _client = Killed(
        pair.client
            .command(&[
                "sh",
                "-c",
                &format!("while :; do curl -s -o /dev/null --max-time 1 {url}; sleep 0.2; done"),
            ])
            .spawn()
            .unwrap(),
    );
    thread::sleep(Duration::from_secs(2));
    assert_eq!(
        next_verdict(&mut tracer, Duration::ZERO),
        None,
        "healthy: no verdict"
    );
    // The service stops listening.
    service.kill().unwrap();
    service.wait().unwrap();
    let failing = next_verdict(&mut tracer, Duration::from_secs(10)).expect("a failing verdict");
    let v = &failing["conntrace"]["verdict"];
    assert_eq!(v["state"], "failing", "{failing}");
    assert_eq!(v["cause"], "no_listener", "{failing}");
    assert_eq!(v["layer"], "service", "{failing}");
    assert_eq!(failing["event"]["kind"], "alert");
    assert_eq!(failing["event"]["type"][1], "start");
    assert_eq!(failing["process"]["name"], "curl");
    assert_eq!(failing["destination"]["ip"], SERVER_V4);
    assert_eq!(failing["destination"]["port"], 8080);
    // The hook restarted it: the recovery follows.
    let resolved = next_verdict(&mut tracer, Duration::from_secs(15)).expect("a recovery");
    let v = &resolved["conntrace"]["verdict"];
    assert_eq!(v["state"], "resolved", "{resolved}");
    assert_eq!(v["resolution"], "succeeded", "{resolved}");
    assert_eq!(v["cause"], "no_listener");
    assert_eq!(resolved["event"]["outcome"], "success");
    // Metrics from the same process saw the refusals and the successes.
    let (status, exposition) = harness::http::get(metrics.parse().unwrap(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let count = |reason: &str| -> f64 {
        exposition
            .lines()
            .filter(|l| {
                l.starts_with("conntrace_connect_attempts_total{workload=\"curl\"")
                    && l.contains(&format!("reason=\"{reason}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        count("refused") >= 1.0 && count("success") >= 2.0,
        "{exposition}"
    );
    let records = tracer.stop();
    assert!(
        records.iter().all(|r| r["event"]["action"] != "verdict"),
        "no more verdicts: {records:#?}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["event"]["action"] == "summary" && r["conntrace"]["final"] == true),
        "final summaries in the same stream"
    );
    // What the hook was given: the failing record on stdin, the essentials in its
    // environment.
    let given: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("failing.json")).expect("the hook ran"),
    )
    .unwrap();
    assert_eq!(given, failing);
    let env = std::fs::read_to_string(dir.path().join("failing.env")).unwrap();
    for line in [
        "CONNTRACE_CAUSE=no_listener",
        "CONNTRACE_DESTINATION_IP=10.240.0.2",
        "CONNTRACE_DESTINATION_PORT=8080",
        "CONNTRACE_LAYER=service",
        "CONNTRACE_VERDICT_STATE=failing",
        "CONNTRACE_WORKLOAD=curl",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in {env}");
    }
    assert!(
        dir.path().join("resolved.json").exists(),
        "the hook ran for the recovery too"
    );
}
