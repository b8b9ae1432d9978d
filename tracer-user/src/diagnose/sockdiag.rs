//! The listening TCP sockets of the current network namespace, through sock_diag
//! (netlink, what `ss -ltm` reads): for each, its accept queue (waiting, limit) and how
//! many SYNs it dropped (`sk_drops`, raised by the kernel's listen-drop path when the
//! queue is full). `/proc/net/tcp` shows neither the limit nor the drops. The netlink
//! socket belongs to the namespace of the thread that creates it, and a dump needs no
//! privilege.
use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// `NETLINK_SOCK_DIAG`.
const NETLINK_SOCK_DIAG: i32 = 4;
/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `INET_DIAG_SKMEMINFO`: an array of `u32`, `SK_MEMINFO_*`.
const INET_DIAG_SKMEMINFO: u16 = 7;
/// `SK_MEMINFO_DROPS`.
const SK_MEMINFO_DROPS: usize = 8;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg`.
const DIAG_MSG: usize = 72;

/// One listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// Connections waiting in the accept queue.
    pub queue: u32,
    /// The accept queue's limit (the backlog given to listen(), capped by somaxconn).
    pub backlog: u32,
    /// SYNs dropped since it started listening (`sk_drops`).
    pub drops: u32,
    /// Its inode, to find the process that owns it.
    pub inode: u32,
}

/// Every listening TCP socket (IPv4 and IPv6) of this thread's network namespace.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let mut out = dump(libc::AF_INET as u8)?;
    out.extend(dump(libc::AF_INET6 as u8)?);
    Ok(out)
}

fn dump(family: u8) -> io::Result<Vec<Listener>> {
    // SAFETY: socket() with constant arguments; the result is checked.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let request = request(family);
    // SAFETY: a valid buffer of the given length.
    let sent = unsafe { libc::send(fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: a valid buffer of the given length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = usize::try_from(n).unwrap_or(0);
        if n == 0 || parse_messages(&buf[..n], &mut out)? {
            return Ok(out);
        }
    }
}

/// A dump request of the listening TCP sockets of `family`, with memory info.
fn request(family: u8) -> Vec<u8> {
    let mut req = Vec::with_capacity(NLMSG_HDR + 56);
    let len = u32::try_from(NLMSG_HDR + 56).unwrap_or(0);
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
    req.extend_from_slice(&flags.to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    // struct inet_diag_req_v2
    req.push(family);
    req.push(libc::IPPROTO_TCP as u8);
    req.push(1 << (INET_DIAG_SKMEMINFO - 1)); // idiag_ext
    req.push(0); // pad
    req.extend_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes()); // idiag_states
    req.extend_from_slice(&[0u8; 48]); // struct inet_diag_sockid: any
    req
}

/// Parses one buffer of netlink messages into `out`; true once the dump is done.
fn parse_messages(mut buf: &[u8], out: &mut Vec<Listener>) -> io::Result<bool> {
    while buf.len() >= NLMSG_HDR {
        let len = u32_at(buf, 0) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDR || len > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sock_diag: truncated message",
            ));
        }
        match kind {
            k if k == libc::NLMSG_DONE as u16 => return Ok(true),
            k if k == libc::NLMSG_ERROR as u16 => {
                let errno = i32::from_ne_bytes(
                    buf.get(NLMSG_HDR..NLMSG_HDR + 4)
                        .and_then(|b| b.try_into().ok())
                        .unwrap_or([0; 4]),
                );
                return Err(io::Error::from_raw_os_error(-errno));
            }
            _ => {
                if let Some(l) = parse_listener(&buf[NLMSG_HDR..len]) {
                    out.push(l);
                }
            }
        }
        // Messages are 4-byte aligned.
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
    }
    Ok(false)
}

/// One `struct inet_diag_msg` and its attributes.
fn parse_listener(msg: &[u8]) -> Option<Listener> {
    if msg.len() < DIAG_MSG {
        return None;
    }
    let family = msg[0];
    let port = u16::from_be_bytes([msg[4], msg[5]]);
    let ip = match i32::from(family) {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(msg[8], msg[9], msg[10], msg[11])),
        libc::AF_INET6 => {
            let raw: [u8; 16] = msg[8..24].try_into().ok()?;
            IpAddr::V6(Ipv6Addr::from(raw))
        }
        _ => return None,
    };
    let mut listener = Listener {
        addr: SocketAddr::new(ip, port),
        queue: u32_at(msg, 56),
        backlog: u32_at(msg, 60),
        drops: 0,
        inode: u32_at(msg, 68),
    };
    let mut attrs = &msg[DIAG_MSG..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        if kind == INET_DIAG_SKMEMINFO && len >= 4 + 4 * (SK_MEMINFO_DROPS + 1) {
            listener.drops = u32_at(&attrs[4..], 4 * SK_MEMINFO_DROPS);
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    Some(listener)
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

/// The pid and name of the process that holds the socket `inode` open, by scanning
/// `/proc/*/fd` (needs ptrace access to the process: the same user, or CAP_SYS_PTRACE).
pub fn owner(inode: u32) -> Option<(u32, String)> {
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let holds = std::fs::read_dir(entry.path().join("fd"))
                .ok()?
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|target| target.as_os_str() == wanted.as_str())
                });
            if !holds {
                return None;
            }
            let comm = std::fs::read(entry.path().join("comm")).ok()?;
            Some((pid, String::from_utf8_lossy(&comm).trim_end().to_owned()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener of this test, with a full accept queue, seen as `ss -ltm` would show it.
    #[test]
    fn sees_a_listeners_queue_and_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Two connections wait in the queue (never accepted).
        let _a = std::net::TcpStream::connect(addr).unwrap();
        let _b = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let all = listeners().unwrap();
        let me = all
            .iter()
            .find(|l| l.addr == addr)
            .unwrap_or_else(|| panic!("{addr} not among {all:?}"));
        assert_eq!(me.queue, 2);
        assert!(me.backlog >= 2, "{me:?}");
        assert_eq!(me.drops, 0);
        let (pid, _) = owner(me.inode).expect("this process owns it");
        assert_eq!(pid, std::process::id());
    }

    #[test]
    fn parses_a_message_with_memory_info() {
        let mut msg = vec![0u8; DIAG_MSG];
        msg[0] = libc::AF_INET as u8;
        msg[4..6].copy_from_slice(&8080u16.to_be_bytes());
        msg[8..12].copy_from_slice(&[10, 0, 0, 2]);
        msg[56..60].copy_from_slice(&1u32.to_ne_bytes());
        msg[60..64].copy_from_slice(&1u32.to_ne_bytes());
        msg[68..72].copy_from_slice(&4242u32.to_ne_bytes());
        let mut attr = Vec::new();
        let mem = [0u32, 0, 0, 0, 0, 0, 0, 0, 9];
        attr.extend_from_slice(&u16::try_from(4 + 4 * mem.len()).unwrap().to_ne_bytes());
        attr.extend_from_slice(&INET_DIAG_SKMEMINFO.to_ne_bytes());
        for v in mem {
            attr.extend_from_slice(&v.to_ne_bytes());
        }
        msg.extend(attr);
        let l = parse_listener(&msg).unwrap();
        assert_eq!(l.addr, "10.0.0.2:8080".parse().unwrap());
        assert_eq!((l.queue, l.backlog, l.drops, l.inode), (1, 1, 9, 4242));
    }
}
