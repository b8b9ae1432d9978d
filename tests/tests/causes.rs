//! Causes behind "cannot connect" that every single record makes look innocent, staged
//! with real software: a pool reusing a keep-alive connection the server had closed, a
//! server that listens but does not accept, a peer that hangs up before replying.
use std::time::Duration;

use harness::{
    clients::{Nginx, argv, curl, python},
    diagnose::Diagnose,
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::{Tracer, records},
};
use serde_json::Value;

/// Python's http.client reuses its connection after a pause longer than nginx keeps idle
/// connections (keepalive_timeout 1s): nginx has closed it (FIN), the request written on
/// the half-closed connection gets a reset. conntrace measures nginx's idle timeout.
#[test]
fn stale_keepalive_reuse_measures_the_servers_idle_timeout() {
    require_root();
    let pair = Pair::new("stale");
    let _nginx = Nginx::start(
        &pair.server,
        "server { listen 80; keepalive_timeout 1s; location / { return 200 \"ok\\n\"; } }",
        80,
    );
    let pooled_client = python(&format!(
        "import http.client, time\n\
         for _ in range(2):\n\
         \x20   c = http.client.HTTPConnection({SERVER_V4:?}, 80)\n\
         \x20   c.request('GET', '/'); c.getresponse().read()\n\
         \x20   time.sleep(2.5)\n\
         \x20   try:\n\
         \x20       c.request('GET', '/'); c.getresponse().read(); print('reused')\n\
         \x20   except (ConnectionError, http.client.HTTPException) as e:\n\
         \x20       print(type(e).__name__)\n"
    ));
    let tracer = Tracer::start(&pair.client.path(), &[]);
    let run = pair.client.run_client(&argv(&pooled_client));
    let all = tracer.stop();
    assert!(!run.stdout.contains("reused"), "{}", run.stdout);
    let resets: Vec<&Value> = records(&all, "reset")
        .into_iter()
        .filter(|r| r["process"]["pid"] == run.pid)
        .collect();
    assert_eq!(resets.len(), 2, "{all:#?}");
    for r in resets {
        assert_eq!(r["event"]["reason"], "received", "{r}");
        assert_eq!(r["conntrace"]["tcp_state"], "CLOSE_WAIT", "{r}");
        let idle = r["conntrace"]["idle_before_peer_fin"].as_u64().unwrap_or(0) as f64 / 1e9;
        assert!(
            (0.9..1.6).contains(&idle),
            "nginx closed after ~1 s idle: {r}"
        );
        let since = r["conntrace"]["since_peer_fin"].as_u64().unwrap_or(0) as f64 / 1e9;
        assert!(
            (1.0..2.5).contains(&since),
            "reused ~1.5 s after the FIN: {r}"
        );
    }

    let diagnose = Diagnose::start(&pair.client.path(), 60, &[]);
    pair.client.run_client(&argv(&pooled_client));
    let report = diagnose.stop();
    let finding = &report.doc["findings"][0];
    assert_eq!(
        (finding["layer"].as_str(), finding["cause"].as_str()),
        (Some("client"), Some("stale_keepalive_reuse")),
        "{finding:#}"
    );
    let timeout = finding["evidence"]["server_idle_timeout_ns"]
        .as_u64()
        .unwrap_or(0) as f64
        / 1e9;
    assert!((0.9..1.6).contains(&timeout), "{finding:#}");
    assert_eq!(finding["evidence"]["stale_reuses"], 2, "{finding:#}");
}

/// nginx's `return 444` closes the connection without a byte of reply: curl sees an empty
/// reply every time, and conntrace says the peer hangs up before replying.
#[test]
fn a_peer_that_hangs_up_before_replying() {
    require_root();
    let pair = Pair::new("noreply");
    let _nginx = Nginx::start(
        &pair.server,
        "server { listen 80; location / { return 444; } location /ok { return 200 \"ok\\n\"; } }",
        80,
    );
    let diagnose = Diagnose::start(&pair.client.path(), 60, &[]);
    for _ in 0..4 {
        let run = pair
            .client
            .run_client(&argv(&curl(&format!("http://{SERVER_V4}/"), 5)));
        assert_eq!(run.exit_code, Some(52), "curl: empty reply from server");
    }
    let run = pair
        .client
        .run_client(&argv(&curl(&format!("http://{SERVER_V4}/ok"), 5)));
    assert_eq!(run.exit_code, Some(0));
    let report = diagnose.stop();
    let finding = report.finding(&format!("{SERVER_V4}:80"));
    assert_eq!(
        (finding["layer"].as_str(), finding["cause"].as_str()),
        (Some("service"), Some("closed_before_reply")),
        "{finding:#}"
    );
    assert_eq!(finding["evidence"]["closed_before_reply"], 4, "{finding:#}");
    assert_eq!(finding["evidence"]["connections_ended"], 5, "{finding:#}");
}

/// nginx listens (backlog 2) but its processes are stopped: the accept queue fills, the
/// kernel drops the SYNs it has no room for, and curl times out although the port is
/// open. diagnose puts it on the service, with the listener's queue, its drops and nginx.
#[test]
fn a_full_accept_queue_is_the_services_fault() {
    require_root();
    let pair = Pair::new("acceptq");
    let nginx = Nginx::start(
        &pair.server,
        "server { listen 80 backlog=2; location / { return 200 \"ok\\n\"; } }",
        80,
    );
    pair.client.sysctl("net.ipv4.tcp_syn_retries=1");
    let diagnose = Diagnose::start(&pair.client.path(), 60, &[]);
    nginx.stop_processes();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            pair.client
                .start_client(&argv(&curl(&format!("http://{SERVER_V4}/"), 10)))
        })
        .collect();
    for mut c in clients {
        let _ = c.wait();
    }
    std::thread::sleep(Duration::from_millis(200));
    let report = diagnose.stop();
    nginx.continue_processes();
    let finding = report.finding(&format!("{SERVER_V4}:80"));
    assert_eq!(
        (finding["layer"].as_str(), finding["cause"].as_str()),
        (Some("service"), Some("accept_queue_full")),
        "{finding:#}"
    );
    let evidence = &finding["evidence"];
    assert_eq!(evidence["backlog"], 2, "{finding:#}");
    assert!(
        evidence["syns_dropped_in_window"].as_u64().unwrap_or(0) >= 1,
        "{finding:#}"
    );
    assert_eq!(evidence["process"]["name"], "nginx", "{finding:#}");
}

/// A server (Python's socket module) that aborts every connection it accepts (SO_LINGER
/// 0: its close sends a RST), met by curl: the resets it sends are followed on the
/// accepted connections and attributed to it, whether it listened before conntrace
/// started (found at start) or after (seen at its listen()). diagnose puts them on it.
#[test]
fn resets_on_accepted_connections_are_the_listeners() {
    require_root();
    let pair = Pair::new("aborts");
    let server_code = |port: u16| {
        python(&format!(
            "import socket, struct\n\
             s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port})); s.listen(16); print('listening', flush=True)\n\
             while True:\n\
             \x20   c, _ = s.accept(); c.recv(1024)\n\
             \x20   c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()\n"
        ))
    };
    let wait_listening = |port: u16| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !pair.server.listens_on(port) {
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // One server before conntrace starts, one after.
    let mut before = pair.server.start_client(&argv(&server_code(8081)));
    wait_listening(8081);
    let tracer = Tracer::start(&pair.server.path(), &["--accepted"]);
    let mut after = pair.server.start_client(&argv(&server_code(8082)));
    wait_listening(8082);
    for port in [8081, 8082, 8081, 8082] {
        let run = pair
            .client
            .run_client(&argv(&curl(&format!("http://{SERVER_V4}:{port}/"), 5)));
        assert_ne!(run.exit_code, Some(0), "the server resets");
    }
    let all = tracer.stop();
    let pid_of = |child: &std::process::Child| child.id();
    for (server, port) in [(&before, 8081), (&after, 8082)] {
        let resets: Vec<&Value> = records(&all, "reset")
            .into_iter()
            .filter(|r| r["destination"]["port"] == port)
            .collect();
        assert_eq!(resets.len(), 2, "port {port}: {all:#?}");
        for r in resets {
            assert_eq!(r["event"]["reason"], "sent", "{r}");
            assert_eq!(r["conntrace"]["direction"], "inbound", "{r}");
            assert_eq!(r["process"]["pid"], pid_of(server), "the listener: {r}");
            assert_eq!(r["process"]["name"], "python3", "{r}");
            assert_eq!(r["destination"]["ip"], SERVER_V4, "{r}");
            assert_eq!(
                r["source"]["ip"],
                harness::netns::CLIENT_V4,
                "the client: {r}"
            );
        }
    }

    let diagnose = Diagnose::start(&pair.server.path(), 60, &[]);
    for _ in 0..3 {
        pair.client
            .run_client(&argv(&curl(&format!("http://{SERVER_V4}:8081/"), 5)));
    }
    let report = diagnose.stop();
    let finding = report.finding(&format!("{SERVER_V4}:8081"));
    assert_eq!(
        (finding["layer"].as_str(), finding["cause"].as_str()),
        (Some("service"), Some("service_resets_connections")),
        "{finding:#}"
    );
    assert_eq!(finding["evidence"]["resets_sent"], 3, "{finding:#}");
    for server in [&mut before, &mut after] {
        let _ = server.kill();
        let _ = server.wait();
    }
}
