//! Every connect outcome, staged for real in network namespaces and traced by the real
//! conntrace binary. Each test asserts the exact records: reason, errno, addresses, ports,
//! and the client's own pid and comm.
use std::{collections::HashMap, time::Duration};

use harness::{
    netns::{CLIENT_V4, CLIENT_V6, Pair, PeerResult, SERVER_V4, SERVER_V6},
    require_root,
    tracer::{Tracer, final_stats, records},
};
use serde_json::Value;

const COMM: &str = "ct-peer";

/// A ruleset for the server namespace.
fn server_rules(rules: &str) -> String {
    format!(
        "table inet cttest {{\n chain in {{\n type filter hook input priority 0; policy accept;\n {rules}\n }}\n}}\n"
    )
}

/// Runs `ct-peer ARGS...` in the client namespace to completion under a tracer filtered
/// to that namespace; returns every record and what the client saw.
fn traced_connect(pair: &Pair, args: &[&str]) -> (Vec<Value>, PeerResult) {
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let client = pair.client(args);
    (tracer.stop(), client)
}

/// Asserts the common fields of a connect record.
fn assert_connect(r: &Value, reason: &str, errno: Option<&str>, pid: u32, dest: (&str, u16)) {
    let ctx = r.to_string();
    assert_eq!(r["event"]["action"], "connect", "{ctx}");
    assert_eq!(r["event"]["reason"], reason, "{ctx}");
    let outcome = if reason == "success" {
        "success"
    } else {
        "failure"
    };
    assert_eq!(r["event"]["outcome"], outcome, "{ctx}");
    match errno {
        Some(code) => assert_eq!(r["error"]["code"], code, "{ctx}"),
        None => assert!(r.get("error").is_none(), "{ctx}"),
    }
    assert_eq!(r["process"]["pid"], pid, "{ctx}");
    assert_eq!(r["process"]["name"], COMM, "{ctx}");
    assert_eq!(r["destination"]["ip"], dest.0, "{ctx}");
    assert_eq!(r["destination"]["port"], dest.1, "{ctx}");
    assert_eq!(r["network"]["transport"], "tcp", "{ctx}");
}

fn assert_source(r: &Value, ip: &str) {
    assert_eq!(r["source"]["ip"], ip, "{r}");
    let port = r["source"]["port"].as_u64().unwrap_or(0);
    assert!(port >= 1024, "ephemeral source port: {r}");
}

fn duration_ms(r: &Value) -> f64 {
    r["event"]["duration"]
        .as_u64()
        .unwrap_or_else(|| panic!("no duration: {r}")) as f64
        / 1e6
}

/// The only connect record, asserting there is exactly one.
fn only_connect(all: &[Value]) -> &Value {
    let connects = records(all, "connect");
    assert_eq!(
        connects.len(),
        1,
        "exactly one connect record: {connects:#?}"
    );
    connects[0]
}

#[test]
fn success_is_reported_with_its_handshake_time() {
    require_root();
    let pair = Pair::new("ok");
    let _server = pair.serve(&["--port", "80"]);
    let (all, client) = traced_connect(&pair, &["connect", "--addr", SERVER_V4, "--port", "80"]);
    assert_eq!(client.reports[0]["result"], "ok");
    let r = only_connect(&all);
    assert_connect(r, "success", None, client.pid, (SERVER_V4, 80));
    assert_source(r, CLIENT_V4);
    assert!(duration_ms(r) > 0.0 && duration_ms(r) < 1000.0, "{r}");
    assert_eq!(r["conntrace"]["syns_sent"], 1);
    assert_eq!(r["conntrace"]["netns"].as_u64(), Some(netns_inode(&pair)));
}

/// A refused connect to `addr` (nothing listens on port 81): exactly one record, the
/// destination written as `dest_ip`, the client's own pid and thread.
fn refused_to(tag: &str, addr: &str, dest_ip: &str) -> Value {
    let pair = Pair::new(tag);
    let (all, client) = traced_connect(&pair, &["connect", "--addr", addr, "--port", "81"]);
    assert_eq!(client.reports[0]["errno"], libc::ECONNREFUSED);
    let r = only_connect(&all).clone();
    assert_connect(
        &r,
        "refused",
        Some("ECONNREFUSED"),
        client.pid,
        (dest_ip, 81),
    );
    assert_eq!(r["conntrace"]["syns_sent"], 1);
    assert_eq!(
        r["process"]["thread"]["id"], client.pid,
        "single-threaded client"
    );
    r
}

#[test]
fn refused_when_nothing_listens() {
    require_root();
    let r = refused_to("refused", SERVER_V4, SERVER_V4);
    assert_source(&r, CLIENT_V4);
    assert_eq!(r["network"]["type"], "ipv4");
}

/// Records below the wake-up batch (`--wakeup-batch`, 128 by default) wake nobody: conntrace
/// must find them on its timer while it runs, not only in its final drain.
#[test]
fn records_held_back_arrive_while_running() {
    require_root();
    for batch in ["128", "0"] {
        let pair = Pair::new(&format!("held{batch}"));
        let mut tracer = Tracer::start(&pair.client.path(), &["--wakeup-batch", batch]);
        let client = pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
        // Polled every 20 ms, flushed every 200 ms: two seconds is ample.
        let r = tracer
            .next_record(Duration::from_secs(2))
            .unwrap_or_else(|| panic!("no record while running, --wakeup-batch {batch}"));
        assert_connect(
            &r,
            "refused",
            Some("ECONNREFUSED"),
            client.pid,
            (SERVER_V4, 81),
        );
        tracer.stop();
    }
}

#[test]
fn ipv6_refused() {
    require_root();
    let r = refused_to("v6refused", SERVER_V6, SERVER_V6);
    assert_source(&r, CLIENT_V6);
    assert_eq!(r["network"]["type"], "ipv6");
}

#[test]
fn v4_mapped_destination_is_reported_as_ipv4() {
    require_root();
    let r = refused_to("mapped", &format!("::ffff:{SERVER_V4}"), SERVER_V4);
    assert_eq!(r["network"]["type"], "ipv4");
}

/// The SYNs that reached the server namespace, counted there by nftables, must be the
/// SYNs conntrace reports. (How many the kernel sends depends on the kernel: 6.18 retries
/// on a linear schedule first, `net.ipv4.tcp_syn_linear_timeouts`; 6.1 doubles each time.)
fn assert_syns_match_server_count(r: &Value, pair: &Pair) {
    let seen = pair.server.nft_packets("cttest");
    assert_eq!(
        r["conntrace"]["syns_sent"], seen,
        "SYNs counted at the server: {seen}; record: {r}"
    );
    assert_eq!(r["conntrace"]["syn_retransmits"], seen - 1, "{r}");
}

#[test]
fn timeout_counts_unanswered_syns() {
    require_root();
    let pair = Pair::new("timeout");
    pair.server.nft(&server_rules("tcp dport 82 counter drop;"));
    pair.client.sysctl("net.ipv4.tcp_syn_retries=1");
    let (all, client) = traced_connect(&pair, &["connect", "--addr", SERVER_V4, "--port", "82"]);
    assert_eq!(client.reports[0]["errno"], libc::ETIMEDOUT);
    let r = only_connect(&all);
    assert_connect(r, "timeout", Some("ETIMEDOUT"), client.pid, (SERVER_V4, 82));
    assert_syns_match_server_count(r, &pair);
    assert!(
        r["conntrace"]["syns_sent"].as_u64().unwrap() >= 2,
        "at least one retransmit: {r}"
    );
    assert!(duration_ms(r) > 2000.0, "gave up after ~3 s: {r}");
}

#[test]
fn icmp_host_unreachable_is_unreachable() {
    require_root();
    let pair = Pair::new("unreach");
    pair.server.nft(&server_rules(
        "tcp dport 83 counter reject with icmp type host-unreachable;",
    ));
    let (all, client) = traced_connect(&pair, &["connect", "--addr", SERVER_V4, "--port", "83"]);
    assert_eq!(client.reports[0]["errno"], libc::EHOSTUNREACH);
    let r = only_connect(&all);
    assert_connect(
        r,
        "unreachable",
        Some("EHOSTUNREACH"),
        client.pid,
        (SERVER_V4, 83),
    );
    // An ICMP error that arrives while connect() still holds the socket lock is only a
    // soft error, and the kernel retries the SYN: either way the counts must agree.
    assert_syns_match_server_count(r, &pair);
}

#[test]
fn abandoned_connect_is_not_a_success() {
    require_root();
    let pair = Pair::new("abandon");
    pair.server.nft(&server_rules("tcp dport 84 counter drop;"));
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let client = pair.client(&[
        "abandon",
        "--addr",
        SERVER_V4,
        "--port",
        "84",
        "--after-ms",
        "300",
    ]);
    assert_eq!(client.reports[0]["result"], "abandoned");
    let all = tracer.stop();
    let r = only_connect(&all);
    assert_connect(r, "abandoned", None, client.pid, (SERVER_V4, 84));
    let waited = duration_ms(r);
    assert!(
        (280.0..1000.0).contains(&waited),
        "waited ~300 ms, got {waited} ms: {r}"
    );
    assert_eq!(
        r["conntrace"]["syns_sent"], 1,
        "no retransmit within 300 ms: {r}"
    );
    assert_syns_match_server_count(r, &pair);
}

#[test]
fn no_route_is_a_local_error_before_any_syn() {
    require_root();
    let pair = Pair::new("noroute");
    let tracer = Tracer::start(&pair.client.path(), &[]);
    // No route to this address exists in the client namespace: nothing is ever sent.
    let client = pair.client(&["connect", "--addr", "10.241.0.1", "--port", "80"]);
    assert_eq!(client.reports[0]["errno"], libc::ENETUNREACH);
    let all = tracer.stop();
    let r = only_connect(&all);
    assert_connect(
        r,
        "local_error",
        Some("ENETUNREACH"),
        client.pid,
        ("10.241.0.1", 80),
    );
    assert!(
        r.get("source").is_none(),
        "no local address was chosen: {r}"
    );
    assert_eq!(r["conntrace"]["syns_sent"], 0);
}

#[test]
fn reset_received_on_an_established_connection() {
    require_root();
    let pair = Pair::new("reset");
    let _server = pair.serve(&["--port", "85", "--reset-after-ms", "200"]);
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let client = pair.client(&[
        "connect",
        "--addr",
        SERVER_V4,
        "--port",
        "85",
        "--wait-close",
    ]);
    assert_eq!(client.reports[1]["closed_errno"], libc::ECONNRESET);
    let all = tracer.stop();
    assert_connect(
        only_connect(&all),
        "success",
        None,
        client.pid,
        (SERVER_V4, 85),
    );
    let resets = records(&all, "reset");
    assert_eq!(resets.len(), 1, "{all:#?}");
    let r = resets[0];
    assert_eq!(r["event"]["reason"], "received");
    assert_eq!(
        r["process"]["pid"], client.pid,
        "attributed to the client, not to softirq: {r}"
    );
    assert_eq!(r["process"]["name"], COMM);
    assert_eq!(r["destination"]["port"], 85);
    assert_eq!(r["conntrace"]["tcp_state"], "ESTABLISHED");
    let age_ms = r["conntrace"]["age"].as_u64().unwrap() as f64 / 1e6;
    assert!(
        (150.0..2000.0).contains(&age_ms),
        "reset ~200 ms after the handshake: {r}"
    );
    assert!(
        records(&all, "lost").is_empty(),
        "a reset is not also reported as a loss"
    );
}

#[test]
fn keepalive_timeout_is_a_lost_connection() {
    require_root();
    let pair = Pair::new("keepalive");
    let _server = pair.serve(&["--port", "86", "--hold-ms", "30000"]);
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let mut client = pair.spawn_client(&[
        "connect",
        "--addr",
        SERVER_V4,
        "--port",
        "86",
        "--keepalive",
        "--wait-close",
    ]);
    assert_eq!(client.next_report()["result"], "ok");
    // Now the server side goes silent: keepalive probes go unanswered.
    pair.server.nft("table inet cttest {\n chain in {\n type filter hook input priority 0; policy drop;\n }\n}\n");
    assert_eq!(client.next_report()["closed_errno"], libc::ETIMEDOUT);
    let pid = client.pid;
    drop(client);
    let all = tracer.stop();
    let lost = records(&all, "lost");
    assert_eq!(lost.len(), 1, "{all:#?}");
    let r = lost[0];
    assert_eq!(r["event"]["reason"], "timeout", "{r}");
    assert_eq!(r["error"]["code"], "ETIMEDOUT");
    assert_eq!(r["process"]["pid"], pid);
    assert_eq!(r["conntrace"]["tcp_state"], "ESTABLISHED");
    assert_eq!(r["destination"]["ip"], SERVER_V4);
    assert!(
        r["conntrace"]["age"].as_u64().unwrap() > 1_000_000_000,
        "{r}"
    );
}

#[test]
fn ipv6_timeout() {
    require_root();
    let pair = Pair::new("v6timeout");
    pair.server.nft(&server_rules("tcp dport 82 counter drop;"));
    pair.client.sysctl("net.ipv4.tcp_syn_retries=1");
    let (all, client) = traced_connect(&pair, &["connect", "--addr", SERVER_V6, "--port", "82"]);
    assert_eq!(client.reports[0]["errno"], libc::ETIMEDOUT);
    let r = only_connect(&all);
    assert_connect(r, "timeout", Some("ETIMEDOUT"), client.pid, (SERVER_V6, 82));
    assert_syns_match_server_count(r, &pair);
    assert_eq!(r["network"]["type"], "ipv6");
}

#[test]
fn parallel_refused_attempts_are_each_reported_once_with_their_pid() {
    require_root();
    let pair = Pair::new("storm");
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            pair.spawn_client(&[
                "connect",
                "--addr",
                SERVER_V4,
                "--port",
                "87",
                "--count",
                "10",
                "--threads",
                "5",
            ])
        })
        .collect();
    let pids: Vec<u32> = clients.into_iter().map(|c| c.wait().pid).collect();
    let all = tracer.stop();
    let connects = records(&all, "connect");
    assert_eq!(connects.len(), 200, "exactly one record per attempt");
    let mut per_pid: HashMap<u64, usize> = HashMap::new();
    for r in &connects {
        assert_eq!(r["event"]["reason"], "refused", "{r}");
        *per_pid
            .entry(r["process"]["pid"].as_u64().unwrap())
            .or_default() += 1;
    }
    for pid in &pids {
        assert_eq!(
            per_pid.get(&u64::from(*pid)),
            Some(&50),
            "pid {pid}: {per_pid:?}"
        );
    }
    assert_eq!(final_stats(&all)["conntrace"]["lost_events"], 0);
}

#[test]
fn short_successful_connections_are_never_failures() {
    require_root();
    let pair = Pair::new("short");
    let _server = pair.serve(&["--port", "88"]);
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let client = pair.client(&[
        "connect", "--addr", SERVER_V4, "--port", "88", "--count", "100",
    ]);
    assert!(client.reports.iter().all(|r| r["result"] == "ok"));
    let all = tracer.stop_after(Duration::from_millis(300));
    let connects = records(&all, "connect");
    assert_eq!(connects.len(), 100);
    assert!(
        connects.iter().all(|r| r["event"]["reason"] == "success"),
        "{connects:#?}"
    );
    assert!(records(&all, "lost").is_empty() && records(&all, "reset").is_empty());
}

#[test]
fn port_filter_applies_in_the_kernel() {
    require_root();
    let pair = Pair::new("portfilter");
    let tracer = Tracer::start(&pair.client.path(), &["--port", "81"]);
    let skipped = pair.client(&["connect", "--addr", SERVER_V4, "--port", "82"]);
    let kept = pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
    assert_eq!(skipped.reports[0]["errno"], libc::ECONNREFUSED);
    let all = tracer.stop();
    assert_connect(
        only_connect(&all),
        "refused",
        Some("ECONNREFUSED"),
        kept.pid,
        (SERVER_V4, 81),
    );
    assert_eq!(
        final_stats(&all)["conntrace"]["kernel_submitted"],
        1,
        "the other never left the kernel"
    );
}

fn netns_inode(pair: &Pair) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(pair.client.path()).unwrap().ino()
}

#[test]
fn dest_comm_and_pid_filters_apply_in_the_kernel() {
    require_root();
    let pair = Pair::new("filters");
    let dest = format!("{SERVER_V4}/32");
    let by_dest = Tracer::start(&pair.client.path(), &["--dest", &dest]);
    let by_comm = Tracer::start(&pair.client.path(), &["--comm", "no-such-task"]);
    let v4 = pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]);
    let v6 = pair.client(&["connect", "--addr", SERVER_V6, "--port", "81"]);
    let kept = by_dest.stop();
    assert_connect(
        only_connect(&kept),
        "refused",
        Some("ECONNREFUSED"),
        v4.pid,
        (SERVER_V4, 81),
    );
    assert!(
        records(&by_comm.stop(), "connect").is_empty(),
        "no task has that name"
    );

    // A long-lived client, so that its pid is known before it connects.
    let mut waiting =
        pair.spawn_client(&["connect", "--addr", SERVER_V4, "--port", "81", "--wait-go"]);
    let pid = waiting.pid.to_string();
    let by_pid = Tracer::start(&pair.client.path(), &["--pid", &pid, "--comm", "ct-peer"]);
    waiting.go();
    assert_eq!(waiting.next_report()["errno"], libc::ECONNREFUSED);
    pair.client(&["connect", "--addr", SERVER_V4, "--port", "81"]); // another pid
    let all = by_pid.stop();
    assert_connect(
        only_connect(&all),
        "refused",
        Some("ECONNREFUSED"),
        waiting.pid,
        (SERVER_V4, 81),
    );
    assert_ne!(v6.pid, waiting.pid);
}

#[test]
fn a_second_connect_returning_the_same_error_is_not_a_new_attempt() {
    require_root();
    let pair = Pair::new("recheck");
    let (all, client) = traced_connect(
        &pair,
        &[
            "recheck",
            "--addr",
            SERVER_V4,
            "--port",
            "81",
            "--after-ms",
            "200",
        ],
    );
    assert_eq!(
        client.reports[0]["errno"],
        libc::ECONNREFUSED,
        "{:?}",
        client.reports
    );
    let r = only_connect(&all);
    assert_connect(
        r,
        "refused",
        Some("ECONNREFUSED"),
        client.pid,
        (SERVER_V4, 81),
    );
}
