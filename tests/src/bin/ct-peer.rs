//! `ct-peer`: the client and server the privileged tests run inside their namespaces.
//!
//! Every mode prints `{"pid": N, "ready": true}` first (for a server: once it listens),
//! then one JSON line per result, so that a test knows the pid to expect in conntrace's
//! records and what the application itself saw.
use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use socket2::{Domain, Socket, TcpKeepalive, Type};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("");
    let opts = Opts::parse(&args[1..]);
    match mode {
        "serve" => serve(&opts),
        "connect" => connect(&opts),
        "abandon" => abandon(&opts),
        "recheck" => recheck(&opts),
        _ => {
            eprintln!(
                "usage: ct-peer serve|connect|abandon|recheck --addr IP --port N [--bind IP] [options]"
            );
            std::process::exit(2);
        }
    }
}

#[derive(Default)]
struct Opts {
    addr: Option<IpAddr>,
    /// serve: listen on this address only, instead of every address.
    bind: Option<IpAddr>,
    port: u16,
    count: u32,
    threads: u32,
    hold_ms: u64,
    wait_go: bool,
    after_ms: u64,
    reset_after_ms: Option<u64>,
    keepalive: bool,
    wait_close: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Opts {
        let mut o = Opts {
            count: 1,
            threads: 1,
            ..Opts::default()
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .unwrap_or_else(|| panic!("{flag} needs a value"))
                    .clone()
            };
            match flag.as_str() {
                "--addr" => o.addr = Some(value().parse().expect("--addr IP")),
                "--bind" => o.bind = Some(value().parse().expect("--bind IP")),
                "--port" => o.port = value().parse().expect("--port N"),
                "--count" => o.count = value().parse().expect("--count N"),
                "--threads" => o.threads = value().parse().expect("--threads N"),
                "--hold-ms" => o.hold_ms = value().parse().expect("--hold-ms N"),
                "--wait-go" => o.wait_go = true,
                "--after-ms" => o.after_ms = value().parse().expect("--after-ms N"),
                "--reset-after-ms" => {
                    o.reset_after_ms = Some(value().parse().expect("--reset-after-ms N"))
                }
                "--keepalive" => o.keepalive = true,
                "--wait-close" => o.wait_close = true,
                other => panic!("unknown option {other}"),
            }
        }
        o
    }

    fn target(&self) -> SocketAddr {
        SocketAddr::new(self.addr.expect("--addr is required"), self.port)
    }
}

fn ready() {
    println!("{{\"pid\": {}, \"ready\": true}}", std::process::id());
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn new_socket(target: SocketAddr) -> Socket {
    Socket::new(Domain::for_address(target), Type::STREAM, None).expect("socket")
}

/// Accepts connections on [::]:port (IPv4 too), or on `--bind IP` only; closes each at
/// once, holds it open for `--hold-ms`, or resets it after `--reset-after-ms` with
/// SO_LINGER 0.
fn serve(o: &Opts) {
    let listener = match o.bind {
        Some(ip) => Socket::new(Domain::for_address((ip, o.port).into()), Type::STREAM, None),
        None => Socket::new(Domain::IPV6, Type::STREAM, None),
    }
    .expect("socket");
    if o.bind.is_none() {
        listener.set_only_v6(false).expect("dual stack");
    }
    listener.set_reuse_address(true).expect("reuseaddr");
    let at: SocketAddr = match o.bind {
        Some(ip) => (ip, o.port).into(),
        None => (std::net::Ipv6Addr::UNSPECIFIED, o.port).into(),
    };
    listener.bind(&at.into()).expect("bind");
    listener.listen(1024).expect("listen");
    ready();
    loop {
        let Ok((conn, _)) = listener.accept() else {
            continue;
        };
        match o.reset_after_ms {
            Some(ms) => {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(ms));
                    let _ = conn.set_linger(Some(Duration::ZERO));
                    drop(conn);
                });
            }
            None if o.hold_ms > 0 => {
                let hold = o.hold_ms;
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(hold));
                    drop(conn);
                });
            }
            None => drop(conn),
        }
    }
}

/// Blocking connects: `--count` per thread, `--threads` threads; with `--wait-go`, only
/// once a line arrives on stdin (so a test can learn the pid first). Prints one line per
/// attempt: {"result": "ok"} or {"errno": N}; with --wait-close, also how it ended.
fn connect(o: &Opts) {
    ready();
    if o.wait_go {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).expect("read stdin");
    }
    let target = o.target();
    if o.threads == 1 {
        (0..o.count).for_each(|_| connect_once(o, target));
        return;
    }
    std::thread::scope(|s| {
        for _ in 0..o.threads {
            s.spawn(|| {
                for _ in 0..o.count {
                    connect_once(o, target);
                }
            });
        }
    });
}

fn connect_once(o: &Opts, target: SocketAddr) {
    let sock = new_socket(target);
    if o.keepalive {
        let ka = TcpKeepalive::new()
            .with_time(Duration::from_secs(1))
            .with_interval(Duration::from_secs(1))
            .with_retries(2);
        sock.set_tcp_keepalive(&ka).expect("keepalive");
    }
    match sock.connect(&target.into()) {
        Ok(()) => println!("{{\"result\": \"ok\"}}"),
        Err(e) => {
            println!("{{\"errno\": {}}}", errno_of(&e));
            return;
        }
    }
    if o.hold_ms > 0 {
        std::thread::sleep(Duration::from_millis(o.hold_ms));
    }
    if o.wait_close {
        let mut stream: std::net::TcpStream = sock.into();
        // The server sends nothing: the read ends at EOF or with the connection's error.
        let mut sink = Vec::new();
        match stream.read_to_end(&mut sink) {
            Ok(_) => println!("{{\"closed\": \"eof\"}}"),
            Err(e) => println!("{{\"closed_errno\": {}}}", errno_of(&e)),
        }
    }
}

/// A non-blocking connect, closed after `--after-ms` without waiting for the answer: what
/// an application with a short connect timeout does.
fn abandon(o: &Opts) {
    ready();
    let target = o.target();
    let sock = new_socket(target);
    sock.set_nonblocking(true).expect("nonblocking");
    match sock.connect(&target.into()) {
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        other => panic!("expected EINPROGRESS, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(o.after_ms));
    drop(sock);
    println!("{{\"result\": \"abandoned\"}}");
}

/// A non-blocking connect whose result is fetched the old way: wait `--after-ms`, then
/// call connect() again, which returns the attempt's error a second time.
fn recheck(o: &Opts) {
    ready();
    let target = o.target();
    let sock = new_socket(target);
    sock.set_nonblocking(true).expect("nonblocking");
    let first = sock
        .connect(&target.into())
        .err()
        .and_then(|e| e.raw_os_error());
    std::thread::sleep(Duration::from_millis(o.after_ms));
    let second = sock
        .connect(&target.into())
        .err()
        .map_or(0, |e| errno_of(&e));
    println!("{{\"first\": {}, \"errno\": {second}}}", first.unwrap_or(0));
}
