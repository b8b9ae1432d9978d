//! What the host can tell the rules: which network namespace on this host holds a
//! destination address, whether something listens there, and the client side's local port
//! range and sockets. Read from procfs inside each namespace: a helper thread enters each
//! one in turn (setns) and reads `/proc/thread-self/net/*`, so that namespaces without a
//! process (an `ip netns add` with nothing running) are covered too.
use std::{
    collections::{BTreeMap, HashMap},
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
};

use super::{Facts, ListenerFact, PortFact, Questions};

/// TCP_LISTEN as `/proc/net/tcp` prints it.
const LISTEN: u8 = 0x0A;

/// A network namespace and a file that names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsRef {
    pub inode: u64,
    pub path: PathBuf,
}

/// What one namespace holds, as far as the questions need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsView {
    pub inode: u64,
    pub local_addrs: Vec<IpAddr>,
    pub listeners: Vec<SocketAddr>,
    /// Sockets (any state but LISTEN) whose peer is one of the asked destinations.
    pub sockets_to: HashMap<SocketAddr, u64>,
    pub port_range: Option<(u16, u16)>,
}

/// Answers the questions. Never fails: what cannot be read becomes `Unknown`.
pub fn gather(q: &Questions) -> Facts {
    if q.is_empty() {
        return Facts::default();
    }
    let wanted: Vec<SocketAddr> = q.ports.iter().map(|(_, d)| *d).collect();
    let views = match survey(namespaces(), wanted) {
        Ok(views) => views,
        Err(e) => {
            let why = format!("could not read the network namespaces: {e}");
            return Facts {
                listeners: q
                    .listeners
                    .iter()
                    .map(|k| (*k, ListenerFact::Unknown(why.clone())))
                    .collect(),
                ports: HashMap::new(),
            };
        }
    };
    Facts {
        listeners: q
            .listeners
            .iter()
            .map(|&(ns, dest)| ((ns, dest), listener_fact(u64::from(ns), dest, &views)))
            .collect(),
        ports: q
            .ports
            .iter()
            .map(|&(ns, dest)| ((ns, dest), port_fact(u64::from(ns), dest, &views)))
            .collect(),
    }
}

/// Every network namespace on the host, once each: named ones (`/run/netns`) and those of
/// running processes.
pub fn namespaces() -> Vec<NetnsRef> {
    let mut found: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let named = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path());
    let of_processes = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .map(|e| e.path().join("ns/net"));
    for path in named.chain(of_processes) {
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino()).or_insert(path);
        }
    }
    found
        .into_iter()
        .map(|(inode, path)| NetnsRef { inode, path })
        .collect()
}

/// Reads every namespace from one helper thread that enters each in turn; the thread ends
/// with the survey, so no other thread ever changes namespace.
pub fn survey(spaces: Vec<NetnsRef>, wanted: Vec<SocketAddr>) -> std::io::Result<Vec<NetnsView>> {
    std::thread::Builder::new()
        .name("netns-survey".into())
        .spawn(move || {
            spaces
                .iter()
                .filter_map(|ns| {
                    enter(&ns.path)
                        .inspect_err(|e| tracing::debug!("netns {}: {e}", ns.path.display()))
                        .ok()?;
                    Some(read_view(ns.inode, &wanted))
                })
                .collect()
        })?
        .join()
        .map_err(|_| std::io::Error::other("the namespace survey thread panicked"))
}

/// Moves the calling thread into the network namespace that `path` names.
fn enter(path: &Path) -> std::io::Result<()> {
    let file = std::fs::File::open(path)?;
    // SAFETY: a valid open namespace fd; CLONE_NEWNET changes only this thread's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The current thread's namespace, read through procfs.
fn read_view(inode: u64, wanted: &[SocketAddr]) -> NetnsView {
    let net = Path::new("/proc/thread-self/net");
    let text = |name: &str| std::fs::read_to_string(net.join(name)).unwrap_or_default();
    let mut local_addrs = local_v4(&text("fib_trie"));
    local_addrs.extend(local_v6(&text("if_inet6")));
    let mut view = NetnsView {
        inode,
        local_addrs,
        port_range: std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|t| port_range(&t)),
        ..NetnsView::default()
    };
    for table in ["tcp", "tcp6"] {
        let Ok(file) = std::fs::File::open(net.join(table)) else {
            continue;
        };
        // Streamed: a busy host's table can be large, and only a few lines matter.
        for line in BufReader::new(file).lines().map_while(Result::ok) {
            let Some(sock) = tcp_line(&line) else {
                continue;
            };
            if sock.state == LISTEN {
                view.listeners.push(sock.local);
            } else if wanted.contains(&sock.remote) {
                *view.sockets_to.entry(sock.remote).or_default() += 1;
            }
        }
    }
    view
}

/// The listener check for a destination reached from the client namespace `client`.
pub fn listener_fact(client: u64, dest: SocketAddr, views: &[NetnsView]) -> ListenerFact {
    let own = views
        .iter()
        .find(|v| v.inode == client)
        .filter(|v| dest.ip().is_loopback() || v.local_addrs.contains(&dest.ip()));
    // The kernel delivers locally when the client's own namespace holds the address.
    let holders: Vec<&NetnsView> = match own {
        Some(v) => vec![v],
        None => views
            .iter()
            .filter(|v| v.local_addrs.contains(&dest.ip()))
            .collect(),
    };
    if holders.is_empty() {
        return ListenerFact::NotLocal;
    }
    let on_port = || {
        holders
            .iter()
            .flat_map(|v| v.listeners.iter())
            .filter(|l| l.port() == dest.port())
    };
    let listening = on_port().any(|l| covers(*l, dest.ip()));
    let mut elsewhere: Vec<SocketAddr> = on_port()
        .filter(|l| !covers(**l, dest.ip()))
        .copied()
        .collect();
    elsewhere.sort();
    elsewhere.dedup();
    ListenerFact::Checked {
        netns: holders.iter().map(|v| v.inode).collect(),
        listening,
        elsewhere,
    }
}

/// Whether a listener bound to `bound` accepts connections to `ip`: its own address, or a
/// wildcard of the family (`[::]` takes IPv4 too, as dual-stack sockets do by default).
fn covers(bound: SocketAddr, ip: IpAddr) -> bool {
    match bound.ip() {
        b if b == ip => true,
        IpAddr::V4(b) => b.is_unspecified() && ip.is_ipv4(),
        IpAddr::V6(b) => b.is_unspecified(),
    }
}

pub fn port_fact(client: u64, dest: SocketAddr, views: &[NetnsView]) -> PortFact {
    views
        .iter()
        .find(|v| v.inode == client)
        .map_or_else(PortFact::default, |v| PortFact {
            range: v.port_range,
            sockets_to_destination: Some(v.sockets_to.get(&dest).copied().unwrap_or(0)),
        })
}

/// The host's own IPv4 addresses in `/proc/net/fib_trie`: each `|-- ADDR` leaf followed
/// by a `/32 host LOCAL` line.
pub fn local_v4(fib_trie: &str) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line.strip_prefix("|-- ") {
            leaf = addr.parse().ok();
        } else if line.starts_with("/32 host LOCAL")
            && let Some(ip) = leaf
            && !out.contains(&IpAddr::V4(ip))
        {
            out.push(IpAddr::V4(ip));
        }
    }
    out
}

/// The addresses in `/proc/net/if_inet6`: 32 hex digits first on each line.
pub fn local_v6(if_inet6: &str) -> Vec<IpAddr> {
    if_inet6
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|hex| u128::from_str_radix(hex, 16).ok())
        .map(|n| IpAddr::V6(Ipv6Addr::from(n)))
        .collect()
}

/// One socket of `/proc/net/tcp` or `tcp6`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub state: u8,
}

/// `   0: 0200F00A:0050 0100F00A:9C40 01 ...`: addresses as the kernel's in-memory words
/// printed in hex (so each 32-bit group is in host byte order), ports in hex.
pub fn tcp_line(line: &str) -> Option<TcpSocket> {
    let mut cols = line.split_whitespace().skip(1);
    let local = endpoint(cols.next()?)?;
    let remote = endpoint(cols.next()?)?;
    let state = u8::from_str_radix(cols.next()?, 16).ok()?;
    Some(TcpSocket {
        local,
        remote,
        state,
    })
}

fn endpoint(text: &str) -> Option<SocketAddr> {
    let (addr, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = Ipv6Addr::from(bytes);
            // A dual-stack socket's IPv4 peer, as the records show it.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// `32768\t60999\n`.
pub fn port_range(text: &str) -> Option<(u16, u16)> {
    let mut it = text.split_whitespace().map(str::parse::<u16>);
    Some((it.next()?.ok()?, it.next()?.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How the kernel prints an IPv4 address in /proc/net/tcp on this machine.
    fn hex_v4(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    const FIB_TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     +-- 10.240.0.0/24 2 0 2
        +-- 10.240.0.0/30 2 0 2
           |-- 10.240.0.0
              /24 link UNICAST
           |-- 10.240.0.2
              /32 host LOCAL
        |-- 10.240.0.255
           /32 link BROADCAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.240.0.2
           /32 host LOCAL
";

    #[test]
    fn fib_trie_gives_the_local_addresses() {
        assert_eq!(
            local_v4(FIB_TRIE),
            [
                "10.240.0.2".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn if_inet6_gives_the_v6_addresses() {
        let text = "fd0000c0000000000000000000000002 02 40 00 80     vs\n\
                    00000000000000000000000000000001 01 80 10 80       lo\n\
                    fd0000c00000000000000000000000020 02 40 00 80     bad\n";
        // The last line has 33 digits: not an address, skipped.
        assert_eq!(
            local_v6(text),
            [
                "fd00:c0::2".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn tcp_lines_parse() {
        let line = format!(
            "   0: {}:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0",
            hex_v4([10, 240, 0, 2])
        );
        let s = tcp_line(&line).unwrap();
        assert_eq!(s.local, "10.240.0.2:80".parse().unwrap());
        assert_eq!(s.remote, "0.0.0.0:0".parse().unwrap());
        assert_eq!(s.state, LISTEN);
        assert_eq!(
            tcp_line("  sl  local_address rem_address   st tx_queue"),
            None
        );
    }

    #[test]
    fn tcp6_lines_parse_and_mapped_peers_become_v4() {
        let any = format!("   1: {}:1F90 {}:9C40 01 0", "0".repeat(32), {
            let mut words = String::new();
            for w in [
                [0u8, 0, 0, 0],
                [0, 0, 0, 0],
                [0, 0, 0xff, 0xff],
                [10, 240, 0, 1],
            ] {
                words.push_str(&hex_v4(w));
            }
            words
        });
        let s = tcp_line(&any).unwrap();
        assert_eq!(s.local, "[::]:8080".parse().unwrap());
        assert_eq!(s.remote, "10.240.0.1:40000".parse().unwrap());
        assert_eq!(s.state, 1);
    }

    #[test]
    fn port_range_parses() {
        assert_eq!(port_range("32768\t60999\n"), Some((32768, 60999)));
        assert_eq!(port_range("garbage"), None);
    }

    fn view(inode: u64, addrs: &[&str], listeners: &[&str]) -> NetnsView {
        NetnsView {
            inode,
            local_addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            listeners: listeners.iter().map(|a| a.parse().unwrap()).collect(),
            ..NetnsView::default()
        }
    }

    #[test]
    fn no_namespace_holds_the_address() {
        let views = [view(1, &["10.0.0.1"], &[])];
        assert_eq!(
            listener_fact(1, "192.0.2.1:80".parse().unwrap(), &views),
            ListenerFact::NotLocal
        );
    }

    #[test]
    fn listener_checks() {
        let client = view(1, &["10.0.0.1"], &[]);
        let dest: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let check = |listeners: &[&str]| {
            listener_fact(
                1,
                dest,
                &[
                    client.clone(),
                    view(2, &["10.0.0.2", "10.0.0.3"], listeners),
                ],
            )
        };
        let none = ListenerFact::Checked {
            netns: vec![2],
            listening: false,
            elsewhere: vec![],
        };
        assert_eq!(check(&[]), none);
        assert_eq!(check(&["10.0.0.2:81"]), none, "another port does not count");
        for l in ["10.0.0.2:80", "0.0.0.0:80", "[::]:80"] {
            assert!(
                matches!(
                    check(&[l]),
                    ListenerFact::Checked {
                        listening: true,
                        ..
                    }
                ),
                "{l}"
            );
        }
        assert_eq!(
            check(&["10.0.0.3:80"]),
            ListenerFact::Checked {
                netns: vec![2],
                listening: false,
                elsewhere: vec!["10.0.0.3:80".parse().unwrap()],
            }
        );
    }

    #[test]
    fn an_ipv4_wildcard_does_not_take_ipv6() {
        assert!(!covers(
            "0.0.0.0:80".parse().unwrap(),
            "fd00::2".parse().unwrap()
        ));
        assert!(covers(
            "[::]:80".parse().unwrap(),
            "fd00::2".parse().unwrap()
        ));
    }

    #[test]
    fn the_clients_own_namespace_wins_and_loopback_is_its_own() {
        let views = [
            view(1, &["10.0.0.2"], &[]),
            view(2, &["10.0.0.2"], &["0.0.0.0:80"]),
        ];
        let fact = listener_fact(1, "10.0.0.2:80".parse().unwrap(), &views);
        assert!(
            matches!(fact, ListenerFact::Checked { ref netns, listening: false, .. } if netns == &[1])
        );
        let lo = listener_fact(2, "127.0.0.1:80".parse().unwrap(), &views);
        assert!(matches!(
            lo,
            ListenerFact::Checked {
                listening: true,
                ..
            }
        ));
    }

    #[test]
    fn port_facts_come_from_the_client_namespace() {
        let dest: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let mut v = view(1, &[], &[]);
        v.port_range = Some((40000, 40001));
        v.sockets_to.insert(dest, 2);
        assert_eq!(
            port_fact(1, dest, &[v]),
            PortFact {
                range: Some((40000, 40001)),
                sockets_to_destination: Some(2)
            }
        );
        assert_eq!(port_fact(9, dest, &[]), PortFact::default());
    }

    /// The survey reads this process's own namespace like any other.
    #[test]
    fn survey_reads_the_current_namespace() {
        let me = NetnsRef {
            inode: std::fs::metadata("/proc/self/ns/net").unwrap().ino(),
            path: "/proc/self/ns/net".into(),
        };
        let views = survey(vec![me.clone()], vec![]).unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            // Entering a namespace needs CAP_SYS_ADMIN: without it, nothing is read.
            assert_eq!(views, []);
            return;
        }
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].inode, me.inode);
        assert!(views[0].port_range.is_some());
        assert!(
            views[0].local_addrs.iter().any(IpAddr::is_loopback),
            "{views:?}"
        );
    }
}
