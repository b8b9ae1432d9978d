//! What the host can tell the rules: which network namespace on this host holds a
//! destination address, whether something listens there, and the client side's local port
//! range and sockets, read from procfs inside each namespace.
//!
//! Two ways in. With CAP_SYS_ADMIN a helper thread enters each namespace in turn (setns)
//! and reads `/proc/thread-self/net/*`, which covers namespaces without a process (an
//! `ip netns add` with nothing running) and gives the port range. Without it, a namespace
//! is read through `/proc/PID/net/*` of a process inside it, which needs no capability
//! (identifying the process's namespace needs ptrace access: same user, or
//! CAP_SYS_PTRACE); the port range is then unknown. A namespace read neither way is
//! recorded, so that the rules say "unknown" instead of "not on this host".
//!
//! Names are checked on what was opened: a namespace file must be the inode listed, and a
//! process is read through its `/proc/PID` directory kept open, which a reused pid cannot
//! redirect; its namespace is checked before and after the read.
use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    fs::File,
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::{Facts, ListenerFact, PortFact, Questions};
use crate::{
    netns::{Netns, open_at},
    output::terminal::escape,
};

/// TCP_LISTEN as `/proc/net/tcp` prints it.
const LISTEN: u8 = 0x0A;
/// Processes remembered per namespace, to read it through when it cannot be entered.
const PIDS_PER_NETNS: usize = 4;

/// A network namespace and what names it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetnsRef {
    pub inode: u64,
    /// Files that name it, to enter it through: `/run/netns/NAME`, `/proc/PID/ns/net`.
    pub files: Vec<PathBuf>,
    /// A few processes inside it, to read it through without entering.
    pub pids: Vec<u32>,
}

/// Every network namespace found, and how many processes' namespaces could not be
/// identified (no ptrace access to them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    pub spaces: Vec<NetnsRef>,
    pub hidden_processes: usize,
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
    /// Listeners with their accept queues and drops (only for namespaces entered).
    pub queues: Vec<super::sockdiag::Listener>,
}

/// What the survey read, and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Survey {
    pub views: Vec<NetnsView>,
    /// Namespaces that exist but could not be read, by inode.
    pub unread: Vec<u64>,
    /// Processes whose namespace could not even be identified.
    pub hidden_processes: usize,
    /// Why the unread namespaces could not be entered, when a privilege was missing.
    pub enter_denied: bool,
}

impl Survey {
    /// Why a negative answer ("no namespace holds the address") cannot be trusted, if it
    /// cannot: the words the rules print after "unknown: ".
    pub fn gap(&self) -> Option<String> {
        let mut why = Vec::new();
        if !self.unread.is_empty() {
            let n = self.unread.len();
            why.push(format!(
                "could not check{}: {n} network namespace{} on this host could not be read",
                if self.enter_denied {
                    " (needs CAP_SYS_ADMIN)"
                } else {
                    ""
                },
                if n == 1 { "" } else { "s" },
            ));
        }
        if self.hidden_processes > 0 {
            let n = self.hidden_processes;
            why.push(format!(
                "could not check (needs CAP_SYS_PTRACE): the network namespace{} of {n} process{} could not be identified",
                if n == 1 { "" } else { "s" },
                if n == 1 { "" } else { "es" },
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// SYNs each listener on the host had dropped, by (namespace inode, address): taken when
/// diagnose starts, so that the report counts the drops of its own window.
pub type DropsSnapshot = HashMap<(u64, SocketAddr), u32>;

/// Every listener's drop count now, in every namespace that can be entered.
pub fn drops_snapshot() -> DropsSnapshot {
    survey(namespaces(), Vec::new())
        .map(|s| {
            s.views
                .iter()
                .flat_map(|v| v.queues.iter().map(|l| ((v.inode, l.addr), l.drops)))
                .collect()
        })
        .unwrap_or_default()
}

/// Answers the questions. Never fails: what cannot be read becomes `Unknown`.
pub fn gather(q: &Questions, before: &DropsSnapshot) -> Facts {
    if q.is_empty() {
        return Facts::default();
    }
    let wanted: Vec<SocketAddr> = q.ports.iter().map(|(_, d)| *d).collect();
    let survey = match survey(namespaces(), wanted) {
        Ok(survey) => survey,
        Err(e) => {
            let why = format!("could not read the network namespaces: {e}");
            return Facts {
                listeners: q
                    .listeners
                    .iter()
                    .map(|k| (*k, ListenerFact::Unknown(why.clone())))
                    .collect(),
                ports: HashMap::new(),
                queues: HashMap::new(),
            };
        }
    };
    Facts {
        listeners: q
            .listeners
            .iter()
            .map(|&(ns, dest)| ((ns, dest), listener_fact(u64::from(ns), dest, &survey)))
            .collect(),
        queues: q
            .listeners
            .iter()
            .filter_map(|&(ns, dest)| {
                Some((
                    (ns, dest),
                    queue_fact(u64::from(ns), dest, &survey, before)?,
                ))
            })
            .collect(),
        ports: q
            .ports
            .iter()
            .map(|&(ns, dest)| ((ns, dest), port_fact(u64::from(ns), dest, &survey.views)))
            .collect(),
    }
}

/// Every network namespace on the host, once each: named ones (`/run/netns`) and those of
/// running processes.
pub fn namespaces() -> Census {
    let mut found: BTreeMap<u64, NetnsRef> = BTreeMap::new();
    let mut census = Census::default();
    for path in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
    {
        if let Ok(meta) = std::fs::metadata(&path) {
            found.entry(meta.ino()).or_default().files.push(path);
        }
    }
    for pid in std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        match std::fs::metadata(&path) {
            Ok(meta) => {
                let ns = found.entry(meta.ino()).or_default();
                if ns.pids.len() < PIDS_PER_NETNS {
                    ns.pids.push(pid);
                    ns.files.push(path);
                }
            }
            // Exited since the listing: nothing lost.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(_) => census.hidden_processes += 1,
        }
    }
    census.spaces = found
        .into_iter()
        .map(|(inode, ns)| NetnsRef { inode, ..ns })
        .collect();
    census
}

/// Reads every namespace from one helper thread that enters each in turn; the thread ends
/// with the survey, so no other thread ever changes namespace.
pub fn survey(census: Census, wanted: Vec<SocketAddr>) -> std::io::Result<Survey> {
    std::thread::Builder::new()
        .name("netns-survey".into())
        .spawn(move || {
            let mut out = Survey {
                hidden_processes: census.hidden_processes,
                ..Survey::default()
            };
            for ns in &census.spaces {
                match read_namespace(ns, &wanted) {
                    Ok(view) => out.views.push(view),
                    Err(denied) => {
                        out.unread.push(ns.inode);
                        out.enter_denied |= denied;
                    }
                }
            }
            out
        })?
        .join()
        .map_err(|_| std::io::Error::other("the namespace survey thread panicked"))
}

/// One namespace: entered if possible, else through a process inside it. `Err(true)`
/// when entering was denied for want of a privilege.
fn read_namespace(ns: &NetnsRef, wanted: &[SocketAddr]) -> Result<NetnsView, bool> {
    // The survey thread's own namespace needs no entering (and no privilege).
    if std::fs::metadata("/proc/thread-self/ns/net").is_ok_and(|m| m.ino() == ns.inode) {
        return Ok(read_entered(ns.inode, wanted));
    }
    let mut denied = false;
    for file in &ns.files {
        match enter(file, ns.inode) {
            Ok(()) => return Ok(read_entered(ns.inode, wanted)),
            Err(e) => {
                let os = e.os_error();
                denied |= os == Some(libc::EPERM) || os == Some(libc::EACCES);
                tracing::debug!("netns {}: {e}", escape(&file.to_string_lossy()));
            }
        }
    }
    for &pid in &ns.pids {
        match read_through_process(pid, ns.inode, wanted) {
            Ok(view) => return Ok(view),
            Err(e) => tracing::debug!("netns {} through pid {pid}: {e}", ns.inode),
        }
    }
    Err(denied)
}

/// Moves the survey thread into the namespace `inode`, which `path` must still name.
fn enter(path: &Path, inode: u64) -> Result<(), crate::netns::NetnsError> {
    Netns::open_expected(path, inode)?.enter()?;
    Ok(())
}

/// The survey thread's current namespace, through `/proc/thread-self`.
fn read_entered(inode: u64, wanted: &[SocketAddr]) -> NetnsView {
    let net = Path::new("/proc/thread-self/net");
    let port_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| port_range(&t));
    let mut view = read_view(inode, port_range, wanted, |name| File::open(net.join(name)));
    view.queues = super::sockdiag::listeners().unwrap_or_else(|e| {
        tracing::debug!("netns {inode}: sock_diag: {e}");
        Vec::new()
    });
    view
}

/// A namespace read through `/proc/PID/net` of a process inside it (no capability
/// needed). The `/proc/PID` directory is held open for the whole read, so a reused pid
/// cannot substitute another process; the process's namespace is checked before and
/// after, so one that moved during the read is not taken for the namespace.
fn read_through_process(
    pid: u32,
    inode: u64,
    wanted: &[SocketAddr],
) -> Result<NetnsView, crate::netns::NetnsError> {
    let dir = File::open(format!("/proc/{pid}"))?;
    let check = || Netns::check(open_at(&dir, c"ns/net")?)?.expect(inode);
    check()?;
    let view = read_view(inode, None, wanted, |name| {
        let rel = CString::new(format!("net/{name}"))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        open_at(&dir, &rel)
    });
    check()?;
    Ok(view)
}

/// The namespace behind `open` (which opens a file of its `net/` directory).
fn read_view(
    inode: u64,
    port_range: Option<(u16, u16)>,
    wanted: &[SocketAddr],
    open: impl Fn(&str) -> std::io::Result<File>,
) -> NetnsView {
    let text = |name: &str| {
        let mut text = String::new();
        open(name)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_or_else(|_| String::new(), |_| text)
    };
    let mut local_addrs = local_v4(&text("fib_trie"));
    local_addrs.extend(local_v6(&text("if_inet6")));
    let mut view = NetnsView {
        inode,
        local_addrs,
        port_range,
        ..NetnsView::default()
    };
    for table in ["tcp", "tcp6"] {
        let Ok(file) = open(table) else {
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
///
/// A namespace found holding the address is an answer even if others could not be read
/// (another one holding the same address is possible, but the SYN went to one of them).
/// With none found, the answer is "not on this host" only when every namespace was read;
/// else, and when the client's own namespace could not be read (it may hold the address
/// itself), it is unknown.
pub fn listener_fact(client: u64, dest: SocketAddr, survey: &Survey) -> ListenerFact {
    let views = &survey.views;
    if survey.unread.contains(&client) {
        return ListenerFact::Unknown(survey.gap().unwrap_or_default());
    }
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
        return survey
            .gap()
            .map_or(ListenerFact::NotLocal, ListenerFact::Unknown);
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

/// The accept queue of the listener that `dest` reaches from namespace `client`: of the
/// namespaces holding the address, the listener on its port that covers it, with the
/// drops of the window when diagnose saw it at the start.
pub fn queue_fact(
    client: u64,
    dest: SocketAddr,
    survey: &Survey,
    before: &DropsSnapshot,
) -> Option<super::QueueFact> {
    let views = &survey.views;
    let own = views
        .iter()
        .find(|v| v.inode == client)
        .filter(|v| dest.ip().is_loopback() || v.local_addrs.contains(&dest.ip()));
    let holders: Vec<&NetnsView> = match own {
        Some(v) => vec![v],
        None => views
            .iter()
            .filter(|v| v.local_addrs.contains(&dest.ip()))
            .collect(),
    };
    let (inode, l) = holders
        .iter()
        .flat_map(|v| v.queues.iter().map(move |l| (v.inode, l)))
        .filter(|(_, l)| l.addr.port() == dest.port() && covers(l.addr, dest.ip()))
        .max_by_key(|(_, l)| l.drops)?;
    Some(super::QueueFact {
        listener: l.addr,
        queue: l.queue,
        backlog: l.backlog,
        drops_in_window: before
            .get(&(inode, l.addr))
            .map(|&start| l.drops.saturating_sub(start)),
        drops_total: l.drops,
        owner: super::sockdiag::owner(l.inode),
    })
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

    /// A survey that read every namespace.
    fn all_read(views: &[NetnsView]) -> Survey {
        Survey {
            views: views.to_vec(),
            ..Survey::default()
        }
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
            listener_fact(1, "192.0.2.1:80".parse().unwrap(), &all_read(&views)),
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
                &all_read(&[
                    client.clone(),
                    view(2, &["10.0.0.2", "10.0.0.3"], listeners),
                ]),
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
        let fact = listener_fact(1, "10.0.0.2:80".parse().unwrap(), &all_read(&views));
        assert!(
            matches!(fact, ListenerFact::Checked { ref netns, listening: false, .. } if netns == &[1])
        );
        let lo = listener_fact(2, "127.0.0.1:80".parse().unwrap(), &all_read(&views));
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

    fn own_inode() -> u64 {
        std::fs::metadata("/proc/self/ns/net").unwrap().ino()
    }

    /// The survey reads this process's own namespace like any other: entered with
    /// CAP_SYS_ADMIN (the port range known), else through this process (the port range
    /// unknown). Either way it is read.
    #[test]
    fn survey_reads_the_current_namespace() {
        let me = NetnsRef {
            inode: own_inode(),
            files: vec!["/proc/self/ns/net".into()],
            pids: vec![std::process::id()],
        };
        let got = survey(
            Census {
                spaces: vec![me.clone()],
                hidden_processes: 0,
            },
            vec![],
        )
        .unwrap();
        assert_eq!((got.unread.len(), got.gap()), (0, None), "{got:?}");
        assert_eq!(got.views.len(), 1);
        assert_eq!(got.views[0].inode, me.inode);
        assert!(
            got.views[0].local_addrs.iter().any(IpAddr::is_loopback),
            "{got:?}"
        );
    }

    /// Without entering: `/proc/PID/net` of a process inside the namespace, no capability
    /// needed, and the namespace checked on the process's directory held open.
    #[test]
    fn a_namespace_reads_through_a_process_inside_it() {
        let view = read_through_process(std::process::id(), own_inode(), &[]).unwrap();
        assert_eq!(view.inode, own_inode());
        assert!(view.local_addrs.iter().any(IpAddr::is_loopback), "{view:?}");
        assert_eq!(view.port_range, None, "not readable without entering");
        let err = read_through_process(std::process::id(), own_inode() + 1, &[]).unwrap_err();
        assert!(
            matches!(err, crate::netns::NetnsError::Changed { .. }),
            "{err}"
        );
    }

    /// A name that no longer names the namespace listed (a reused pid, a replaced bind
    /// mount) is not read: the namespace counts as unread, not as empty.
    #[test]
    fn a_file_naming_another_namespace_is_not_read() {
        let moved = NetnsRef {
            inode: own_inode() + 1,
            files: vec!["/proc/self/ns/net".into()],
            pids: vec![std::process::id()],
        };
        let got = survey(
            Census {
                spaces: vec![moved],
                hidden_processes: 0,
            },
            vec![],
        )
        .unwrap();
        assert_eq!(got.views, []);
        assert_eq!(got.unread, [own_inode() + 1]);
        assert!(!got.enter_denied);
    }

    #[test]
    fn what_could_not_be_read_makes_a_negative_answer_unknown() {
        let dest: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let client = view(1, &["10.0.0.1"], &[]);
        let denied = Survey {
            views: vec![client.clone()],
            unread: vec![2],
            hidden_processes: 0,
            enter_denied: true,
        };
        let ListenerFact::Unknown(why) = listener_fact(1, dest, &denied) else {
            panic!("no namespace read holds the address, but one was not read");
        };
        assert_eq!(
            why,
            "could not check (needs CAP_SYS_ADMIN): 1 network namespace on this host could not be read"
        );
        // The client's own namespace unread: it may hold the address itself.
        let own_unread = Survey {
            views: vec![view(2, &["10.0.0.2"], &[])],
            unread: vec![1],
            ..denied.clone()
        };
        assert!(matches!(
            listener_fact(1, dest, &own_unread),
            ListenerFact::Unknown(_)
        ));
        // A namespace read holds it: that is an answer.
        let found = Survey {
            views: vec![client.clone(), view(3, &["10.0.0.2"], &[])],
            ..denied.clone()
        };
        assert!(matches!(
            listener_fact(1, dest, &found),
            ListenerFact::Checked { ref netns, listening: false, .. } if netns == &[3]
        ));
        let hidden = Survey {
            views: vec![client],
            hidden_processes: 3,
            ..Survey::default()
        };
        let ListenerFact::Unknown(why) = listener_fact(1, dest, &hidden) else {
            panic!("processes whose namespace is unknown may hold the address");
        };
        assert!(
            why.contains("needs CAP_SYS_PTRACE") && why.contains("3 processes"),
            "{why}"
        );
    }
}
