//! Network namespaces for one scenario: a client and a server joined by a veth pair, with
//! IPv4 and IPv6 addresses, removed (with everything in them) when the guard drops.
use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

/// IPv4 addresses of the client and server ends; every pair is in its own namespaces, so
/// the same addresses serve every test.
pub const CLIENT_V4: &str = "10.240.0.1";
pub const SERVER_V4: &str = "10.240.0.2";
pub const CLIENT_V6: &str = "fd00:c0::1";
pub const SERVER_V6: &str = "fd00:c0::2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output if it fails.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install it: cargo xtask setup): {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// One network namespace, deleted on drop (which also kills the veth ends and nftables
/// tables inside it).
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("ct-{tag}-{}-{n}", std::process::id());
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace file, for `conntrace trace --netns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME ARGS...`, not yet started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    pub fn exec_ok(&self, args: &[&str]) -> Output {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    pub fn sysctl(&self, key_value: &str) {
        self.exec_ok(&["sysctl", "-q", "-w", key_value]);
    }

    /// Loads an nftables ruleset (`nft -f -`) in this namespace.
    pub fn nft(&self, ruleset: &str) {
        use std::io::Write as _;
        let mut child = self
            .command(&["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft (install nftables: cargo xtask setup)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft failed: {}\n{ruleset}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Netns {
    /// Packets counted by the first `counter` in nftables table `inet TABLE`.
    pub fn nft_packets(&self, table: &str) -> u64 {
        let out = self.exec_ok(&["nft", "list", "table", "inet", table]);
        let text = String::from_utf8_lossy(&out.stdout);
        let after = text
            .split("packets ")
            .nth(1)
            .unwrap_or_else(|| panic!("no counter in table {table}:\n{text}"));
        after
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .expect("packet count")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes still inside keep it alive but unnamed; kill them first.
        let _ = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            });
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A client namespace and a server namespace joined by a veth pair.
pub struct Pair {
    pub client: Netns,
    pub server: Netns,
    /// The IPv4 addresses of each end (CLIENT_V4 and SERVER_V4 unless chosen).
    pub client_v4: String,
    pub server_v4: String,
}

static NEXT_SUBNET: AtomicU32 = AtomicU32::new(0);

/// A /24 prefix (`10.X.Y`) unlikely to be in use by any other test on this host, for
/// tests whose checks look at every namespace on the host (the listener check of
/// `diagnose`): the second octet comes from the process id, the third from a counter.
pub fn unique_subnet() -> String {
    let n = NEXT_SUBNET.fetch_add(1, Ordering::Relaxed) % 250;
    format!("10.{}.{}", 200 + std::process::id() % 50, n + 1)
}

impl Pair {
    pub fn new(tag: &str) -> Pair {
        Pair::with_v4(tag, CLIENT_V4, SERVER_V4)
    }

    /// A pair on its own subnet (see [`unique_subnet`]): client `.1`, server `.2`.
    pub fn on_unique_subnet(tag: &str) -> Pair {
        let net = unique_subnet();
        Pair::with_v4(tag, &format!("{net}.1"), &format!("{net}.2"))
    }

    /// A pair whose ends have these IPv4 addresses (in one /24).
    pub fn with_v4(tag: &str, client_v4: &str, server_v4: &str) -> Pair {
        let client = Netns::new(&format!("{tag}-c"));
        let server = Netns::new(&format!("{tag}-s"));
        sh(
            "ip",
            &[
                "link",
                "add",
                "vc",
                "netns",
                &client.name,
                "type",
                "veth",
                "peer",
                "name",
                "vs",
                "netns",
                &server.name,
            ],
        );
        for (ns, dev, v4, v6) in [
            (&client, "vc", client_v4, CLIENT_V6),
            (&server, "vs", server_v4, SERVER_V6),
        ] {
            ns.exec_ok(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.exec_ok(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            ns.exec_ok(&["ip", "link", "set", dev, "up"]);
        }
        Pair {
            client,
            server,
            client_v4: client_v4.to_owned(),
            server_v4: server_v4.to_owned(),
        }
    }

    /// Gives the server end another IPv4 address of its /24 (`.N`); returns it.
    pub fn add_server_v4(&self, last_octet: u8) -> String {
        let prefix = self
            .server_v4
            .rsplit_once('.')
            .map(|(p, _)| p)
            .expect("an IPv4 address");
        let addr = format!("{prefix}.{last_octet}");
        self.server
            .exec_ok(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "vs"]);
        addr
    }

    /// Starts `ct-peer serve ...` in the server namespace and waits until it listens.
    pub fn serve(&self, args: &[&str]) -> Peer {
        Peer::spawn(&self.server, "serve", args)
    }

    /// Runs `ct-peer ARGS...` in the client namespace to completion.
    pub fn client(&self, args: &[&str]) -> PeerResult {
        Peer::spawn(&self.client, args[0], &args[1..]).wait()
    }

    /// Starts `ct-peer ARGS...` in the client namespace.
    pub fn spawn_client(&self, args: &[&str]) -> Peer {
        Peer::spawn(&self.client, args[0], &args[1..])
    }
}

/// A running `ct-peer`. Its first stdout line is `{"pid": N, "ready": true}`.
pub struct Peer {
    pub pid: u32,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

/// What a finished `ct-peer` printed.
#[derive(Debug)]
pub struct PeerResult {
    pub pid: u32,
    /// Every stdout line after the first, as JSON.
    pub reports: Vec<serde_json::Value>,
}

pub fn peer_binary() -> PathBuf {
    crate::built_binary("ct-peer", "CT_PEER_BIN")
}

impl Peer {
    fn spawn(ns: &Netns, mode: &str, args: &[&str]) -> Peer {
        use std::io::BufRead as _;
        let bin = peer_binary();
        let mut all = vec![bin.to_str().unwrap(), mode];
        all.extend_from_slice(args);
        let mut child = ns
            .command(&all)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start ct-peer");
        let stdin = child.stdin.take();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines
            .next()
            .expect("ct-peer printed nothing")
            .expect("read ct-peer");
        let v: serde_json::Value =
            serde_json::from_str(&first).expect("ct-peer's first line is JSON");
        let pid = v["pid"].as_u64().expect("pid") as u32;
        Peer {
            pid,
            child,
            stdin,
            lines,
        }
    }

    /// Lets a `--wait-go` client start connecting.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("ct-peer's stdin");
        stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .expect("write to ct-peer");
    }

    /// The next result line, waiting for it.
    pub fn next_report(&mut self) -> serde_json::Value {
        let line = self
            .lines
            .next()
            .expect("ct-peer ended early")
            .expect("read ct-peer");
        serde_json::from_str(&line).expect("ct-peer prints JSON")
    }

    pub fn wait(mut self) -> PeerResult {
        let reports = self
            .lines
            .by_ref()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "ct-peer exited with {status}");
        PeerResult {
            pid: self.pid,
            reports,
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
