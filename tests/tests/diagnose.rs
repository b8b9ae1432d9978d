//! Each cause `conntrace diagnose` names, staged for real in network namespaces and
//! watched by the real binary: the verdict (layer, cause), the evidence it cites, and the
//! counts, asserted exactly. Also the summaries of `trace --summary-interval`.
//!
//! Every pair sits on its own subnet, because the listener check looks at every network
//! namespace on the host: a fixed address would be found in other tests' namespaces too.
use std::{thread, time::Duration};

use harness::{
    diagnose::{Diagnose, Report, wrapped},
    netns::Pair,
    require_root,
    run::RawRun,
    tracer::Tracer,
};
use serde_json::{Value, json};

/// Seconds each `diagnose` would watch; the tests stop it (SIGINT) once their traffic is
/// over, so a slow machine cannot push the traffic out of the window.
const WINDOW: u32 = 120;

fn server_rules(rules: &str) -> String {
    format!(
        "table inet cttest {{\n chain in {{\n type filter hook input priority 0; policy accept;\n {rules}\n }}\n}}\n"
    )
}

fn connect(pair: &Pair, addr: &str, port: u16, count: u32) -> Vec<Value> {
    pair.client(&[
        "connect",
        "--addr",
        addr,
        "--port",
        &port.to_string(),
        "--count",
        &count.to_string(),
    ])
    .reports
}

/// The report's only finding, after checking the exit status says failures were found.
fn only_finding(report: &Report) -> &Value {
    assert_eq!(report.status, 1, "failures found: {:#}", report.doc);
    assert_eq!(report.findings().len(), 1, "{:#}", report.doc);
    &report.findings()[0]
}

fn assert_verdict(f: &Value, layer: &str, cause: &str) {
    assert_eq!(f["layer"], layer, "{f:#}");
    assert_eq!(f["cause"], cause, "{f:#}");
    assert_eq!(f["verdicts"][0]["layer"], layer, "{f:#}");
    assert_eq!(f["verdicts"][0]["cause"], cause, "{f:#}");
    assert_eq!(f["process"]["name"], "ct-peer", "{f:#}");
}

/// The failure counts of a finding: attempts, successes, then each kind.
fn assert_counts(f: &Value, attempts: u64, successes: u64, kind: &str, n: u64) {
    let c = &f["counts"];
    assert_eq!(c["attempts"], attempts, "{c:#}");
    assert_eq!(c["successes"], successes, "{c:#}");
    assert_eq!(c["failures"]["total"], n, "{c:#}");
    for k in [
        "refused",
        "timeout",
        "unreachable",
        "abandoned",
        "local_error",
    ] {
        let want = if k == kind { n } else { 0 };
        assert_eq!(c["failures"][k], want, "{k}: {c:#}");
    }
}

#[test]
fn refused_with_no_listener_is_confirmed() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-refused");
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    let seen = connect(&pair, &pair.server_v4, 81, 3);
    assert_all_failed_with(&seen, libc::ECONNREFUSED);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "service", "no_listener");
    assert_eq!(f["confidence"], "high");
    assert_eq!(f["destination"]["ip"], pair.server_v4.as_str());
    assert_eq!(f["destination"]["port"], 81);
    assert_counts(f, 3, 0, "refused", 3);
    assert_eq!(f["evidence"]["listener"]["checked"], true, "{f:#}");
    assert_eq!(f["evidence"]["listener"]["listening"], false, "{f:#}");
    assert_eq!(f["evidence"]["refused"]["syns_sent"], 3);
    assert!(
        f["summary"]
            .as_str()
            .unwrap()
            .contains("confirmed: no listener"),
        "{f:#}"
    );
    assert_eq!(report.doc["totals"]["attempts"], 3);
    assert_eq!(report.doc["totals"]["failures"], 3);
}

/// conntrace as a service might run it: CAP_BPF and CAP_PERFMON to load the programs,
/// CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH to read other processes' details, and not
/// CAP_SYS_ADMIN, which entering a network namespace needs.
const WITHOUT_SYS_ADMIN: &[&str] = &[
    "setpriv",
    "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace,+dac_read_search",
    "--inh-caps=-all",
    "--",
];

/// The destination's namespace has no process in it, so it can only be read by entering
/// it: without CAP_SYS_ADMIN the check cannot be made, and the report says so instead of
/// "not on this host" (in JSON and in text).
#[test]
fn without_cap_sys_admin_an_unreadable_namespace_is_unknown_not_elsewhere() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-nocap");
    let json = Diagnose::start_as(WITHOUT_SYS_ADMIN, &pair.client.path(), WINDOW, &[]);
    let mut text_cmd = wrapped(WITHOUT_SYS_ADMIN);
    text_cmd
        .args(["diagnose", "--duration", &WINDOW.to_string(), "--netns"])
        .arg(pair.client.path());
    let text = RawRun::start(text_cmd, "diagnose: watching");
    let seen = connect(&pair, &pair.server_v4, 81, 2);
    assert_all_failed_with(&seen, libc::ECONNREFUSED);
    let report = json.stop();
    let f = only_finding(&report);
    assert_verdict(f, "service", "no_listener");
    assert_eq!(f["confidence"], "medium", "{f:#}");
    let listener = &f["evidence"]["listener"];
    assert_eq!(listener["checked"], false, "{f:#}");
    assert_eq!(listener["status"], "unknown", "{f:#}");
    let why = listener["why"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("could not check (needs CAP_SYS_ADMIN): ")
            && why.contains("network namespace"),
        "{f:#}"
    );
    let out = text.stop();
    assert_eq!(out.status.code(), Some(1), "failures found");
    let text = String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "listener on {}:81: unknown: could not check (needs CAP_SYS_ADMIN): ",
        pair.server_v4
    );
    assert!(text.contains(&want), "{want:?} in:\n{text}");
    assert!(!text.contains("not on this host"), "{text}");
}

/// Namespaces with a process inside are read through `/proc/PID/net`, which needs no
/// capability: without CAP_SYS_ADMIN the check is still made and confirmed.
#[test]
fn without_cap_sys_admin_a_namespace_with_a_process_is_still_checked() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-nocap-ps");
    // Something alive in each namespace: a server on another port, a bystander client side.
    let _server = pair.serve(&["--port", "80"]);
    let _bystander = pair.spawn_client(&["serve", "--port", "9"]);
    let run = Diagnose::start_as(WITHOUT_SYS_ADMIN, &pair.client.path(), WINDOW, &[]);
    let seen = connect(&pair, &pair.server_v4, 81, 2);
    assert_all_failed_with(&seen, libc::ECONNREFUSED);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "service", "no_listener");
    assert_eq!(f["confidence"], "high", "{f:#}");
    let server_ns = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(pair.server.path()).expect("the server namespace file"),
    );
    assert_eq!(
        f["evidence"]["listener"],
        json!({"checked": true, "status": "checked", "netns": [server_ns],
               "listening": false, "elsewhere": []}),
        "{f:#}"
    );
}

#[test]
fn refused_while_the_service_listens_on_another_address() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-elsewhere");
    let other = pair.add_server_v4(3);
    let _server = pair.serve(&["--bind", &other, "--port", "81"]);
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    connect(&pair, &pair.server_v4, 81, 2);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "service", "listener_on_other_address");
    assert_counts(f, 2, 0, "refused", 2);
    assert_eq!(
        f["evidence"]["listener"]["elsewhere"],
        json!([format!("{other}:81")]),
        "{f:#}"
    );
}

#[test]
fn refused_by_a_firewall_although_a_listener_exists() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-fwreset");
    let _server = pair.serve(&["--port", "81"]);
    pair.server
        .nft(&server_rules("tcp dport 81 reject with tcp reset;"));
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    let seen = connect(&pair, &pair.server_v4, 81, 2);
    assert_all_failed_with(&seen, libc::ECONNREFUSED);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "network", "reset_despite_listener");
    assert_counts(f, 2, 0, "refused", 2);
    assert_eq!(f["evidence"]["listener"]["listening"], true, "{f:#}");
    assert!(
        f["summary"].as_str().unwrap().contains("a listener exists"),
        "{f:#}"
    );
}

#[test]
fn timeout_cites_the_unanswered_syns() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-timeout");
    pair.server.nft(&server_rules("tcp dport 82 counter drop;"));
    pair.client.sysctl("net.ipv4.tcp_syn_retries=1");
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    let seen = connect(&pair, &pair.server_v4, 82, 1);
    assert_eq!(seen[0]["errno"], libc::ETIMEDOUT);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "network", "syn_unanswered");
    assert_counts(f, 1, 0, "timeout", 1);
    let syns = pair.server.nft_packets("cttest");
    assert!(syns >= 2, "at least one retransmit reached the server");
    assert_eq!(f["evidence"]["timeout"]["syns_sent"], syns, "{f:#}");
    assert_eq!(f["counts"]["syn_retransmits"], syns - 1, "{f:#}");
    let waited = f["evidence"]["timeout"]["mean_wait_ns"].as_u64().unwrap();
    assert!(waited > 1_000_000_000, "waited {waited} ns");
}

#[test]
fn unreachable_cites_the_errno() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-unreach");
    pair.server.nft(&server_rules(
        "tcp dport 83 counter reject with icmp type host-unreachable;",
    ));
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    let seen = connect(&pair, &pair.server_v4, 83, 1);
    assert_eq!(seen[0]["errno"], libc::EHOSTUNREACH);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "network", "host_unreachable");
    assert_counts(f, 1, 0, "unreachable", 1);
    assert_eq!(f["evidence"]["errors"], json!({"EHOSTUNREACH": 1}), "{f:#}");
    assert_eq!(
        f["counts"]["failures"]["unreachable_errors"],
        json!({"EHOSTUNREACH": 1})
    );
}

#[test]
fn abandoned_with_no_success_points_at_the_network() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-abandon");
    pair.server.nft(&server_rules("tcp dport 84 counter drop;"));
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    let client = pair.client(&[
        "abandon",
        "--addr",
        &pair.server_v4,
        "--port",
        "84",
        "--after-ms",
        "300",
    ]);
    assert_eq!(client.reports[0]["result"], "abandoned");
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "network", "gave_up_no_answer");
    assert_counts(f, 1, 0, "abandoned", 1);
    let gave_up = f["evidence"]["gave_up_after_ns"].as_u64().unwrap() as f64 / 1e6;
    assert!(
        (280.0..1000.0).contains(&gave_up),
        "gave up after {gave_up} ms"
    );
    assert_eq!(f["evidence"]["abandoned"]["max_syns_per_attempt"], 1);
    assert_eq!(f["pids"], json!([client.pid]));
}

#[test]
fn no_route_is_a_client_side_error() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-noroute");
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    // No route to this address exists in the client namespace: nothing is ever sent.
    let seen = connect(&pair, "10.199.0.1", 80, 2);
    assert_all_failed_with(&seen, libc::ENETUNREACH);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "client", "no_route");
    assert_counts(f, 2, 0, "local_error", 2);
    assert_eq!(
        f["counts"]["failures"]["local_errors"],
        json!({"ENETUNREACH": 2})
    );
    assert_eq!(f["evidence"]["errno"], "ENETUNREACH");
}

#[test]
fn resets_name_the_idle_timeout_their_ages_suggest() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-reset");
    // A second: the ages must cluster within 25 %, and under the VM tier's emulation a
    // 200 ms timer once fired more than 50 ms late.
    let _server = pair.serve(&["--port", "85", "--reset-after-ms", "1000"]);
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    let client = pair.client(&[
        "connect",
        "--addr",
        &pair.server_v4,
        "--port",
        "85",
        "--count",
        "3",
        "--wait-close",
    ]);
    let closed: Vec<_> = client
        .reports
        .iter()
        .filter(|r| r.get("closed_errno").is_some())
        .collect();
    assert_eq!(closed.len(), 3, "{:?}", client.reports);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "service", "peer_reset");
    assert_eq!(f["confidence"], "high", "{f:#}");
    assert_counts(f, 3, 3, "", 0);
    assert_eq!(
        f["counts"]["resets"],
        json!({"received": 3, "sent": 0, "after_peer_fin": 0})
    );
    assert_eq!(f["harm"], 3);
    let idle = f["evidence"]["suggested_idle_timeout_ns"]
        .as_u64()
        .unwrap_or_else(|| panic!("no idle timeout: {f:#}")) as f64
        / 1e6;
    assert!((900.0..1500.0).contains(&idle), "idle timeout {idle} ms");
}

#[test]
fn one_of_three_backends_down() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-partial");
    let second = pair.add_server_v4(3);
    let third = pair.add_server_v4(4);
    let _a = pair.serve(&["--bind", &pair.server_v4, "--port", "90"]);
    let _b = pair.serve(&["--bind", &second, "--port", "90"]);
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    for addr in [pair.server_v4.as_str(), second.as_str(), third.as_str()] {
        connect(&pair, addr, 90, 2);
    }
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "service", "some_backends_down");
    assert_eq!(f["destination"]["ip"], third.as_str());
    assert_counts(f, 2, 0, "refused", 2);
    assert_eq!(f["evidence"]["failing"], json!([format!("{third}:90")]));
    let mut working = vec![format!("{}:90", pair.server_v4), format!("{second}:90")];
    working.sort();
    assert_eq!(f["evidence"]["working"], json!(working), "{f:#}");
    // The refusal itself: port 90 is bound to the two other addresses only.
    assert_eq!(
        f["verdicts"][1]["cause"], "listener_on_other_address",
        "{f:#}"
    );
    let totals = &report.doc["totals"];
    assert_eq!(
        (
            &totals["keys"],
            &totals["attempts"],
            &totals["successes"],
            &totals["failures"]
        ),
        (&json!(3), &json!(6), &json!(4), &json!(2)),
        "{totals:#}"
    );
}

#[test]
fn ephemeral_port_exhaustion_cites_the_port_range() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-ports");
    pair.client
        .sysctl("net.ipv4.ip_local_port_range=40000 40001");
    let _server = pair.serve(&["--port", "91", "--hold-ms", "20000"]);
    let run = Diagnose::start(&pair.client.path(), WINDOW, &[]);
    // Three at once to one destination, with two local ports: one cannot have a port.
    let client = pair.client(&[
        "connect",
        "--addr",
        &pair.server_v4,
        "--port",
        "91",
        "--threads",
        "3",
        "--hold-ms",
        "2000",
    ]);
    let failed: Vec<_> = client
        .reports
        .iter()
        .filter(|r| r["errno"] == libc::EADDRNOTAVAIL)
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", client.reports);
    let report = run.stop();
    let f = only_finding(&report);
    assert_verdict(f, "client", "ephemeral_ports_exhausted");
    assert_counts(f, 3, 2, "local_error", 1);
    assert_eq!(f["evidence"]["ip_local_port_range"], json!([40000, 40001]));
    // The two connections are in TIME_WAIT on the client side by the time of the report.
    assert_eq!(f["evidence"]["sockets_to_destination"], 2, "{f:#}");
}

#[test]
fn nothing_failing_exits_zero() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-ok");
    // The server keeps each connection until the client closes it: a server that hangs up
    // first without a byte would be a finding of its own (closed_before_reply).
    let _server = pair.serve(&["--port", "80", "--hold-ms", "2000"]);
    // This one runs to its --duration: the window's end is what stops it.
    let run = Diagnose::start(&pair.client.path(), 5, &[]);
    let seen = connect(&pair, &pair.server_v4, 80, 3);
    assert!(seen.iter().all(|r| r["result"] == "ok"), "{seen:?}");
    let report = run.finish();
    let window = report.doc["window"]["duration"].as_u64().unwrap();
    assert!(window >= 5_000_000_000, "watched {window} ns");
    assert_eq!(report.status, 0, "{:#}", report.doc);
    assert_eq!(report.doc["failures_found"], false);
    assert_eq!(report.findings(), &[] as &[Value]);
    assert_eq!(report.doc["totals"]["attempts"], 3);
    assert_eq!(report.doc["totals"]["successes"], 3);
}

#[test]
fn trace_writes_interval_and_final_summaries() {
    require_root();
    let pair = Pair::on_unique_subnet("dg-summary");
    let _server = pair.serve(&["--port", "80"]);
    let tracer = Tracer::start(&pair.client.path(), &["--summary-interval", "1"]);
    connect(&pair, &pair.server_v4, 80, 2);
    connect(&pair, &pair.server_v4, 81, 3);
    // Past one interval, so that the interval summaries are written before the final ones.
    thread::sleep(Duration::from_millis(1500));
    let all = tracer.stop();
    let summaries: Vec<&Value> = all
        .iter()
        .filter(|r| r["event"]["action"] == "summary")
        .collect();
    for r in &summaries {
        assert_eq!(r["event"]["kind"], "metric", "{r}");
        assert_eq!(r["process"]["name"], "ct-peer", "{r}");
    }
    let of = |port: u16, is_final: bool| -> Vec<&Value> {
        summaries
            .iter()
            .copied()
            .filter(|r| r["destination"]["port"] == port && r["conntrace"]["final"] == is_final)
            .collect()
    };
    let ok = of(80, true);
    assert_eq!(ok.len(), 1, "{summaries:#?}");
    let c = &ok[0]["conntrace"];
    assert_eq!(
        (c["attempts"].as_u64(), c["successes"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(c["failures"]["total"], 0);
    assert_eq!(c["connect_time"]["count"], 2);
    let refused = of(81, true);
    assert_eq!(refused.len(), 1, "{summaries:#?}");
    let c = &refused[0]["conntrace"];
    assert_eq!(
        (c["attempts"].as_u64(), c["successes"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(c["failures"]["refused"], 3);
    assert_eq!(c["last_error"]["code"], "ECONNREFUSED");
    assert!(
        !of(80, false).is_empty() && !of(81, false).is_empty(),
        "interval summaries"
    );
    assert_eq!(
        all.last().unwrap()["event"]["action"],
        "stats",
        "the final stats come after the summaries"
    );
}

/// Every attempt the client made failed with `errno`, as the application saw it.
fn assert_all_failed_with(seen: &[Value], errno: i32) {
    assert!(seen.iter().all(|r| r["errno"] == errno), "{seen:?}");
}
