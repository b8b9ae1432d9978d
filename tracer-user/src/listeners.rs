//! Who listens on each TCP port of each network namespace when conntrace starts. The
//! kernel side learns a listener at its listen() (in the listening process); listeners
//! older than the run are found here, so that the connections they accept are attributed
//! to them too (in the kernel, by network namespace and port: a connection is accepted in
//! softirq, where no process is at hand).
use std::{collections::HashMap, path::Path};

use tracer_common::{COMM_LEN, ListenerKey, Owner};

use crate::{
    diagnose::host,
    enrich::{cgroupfs::Hierarchies, procfs},
};

/// Every listener found, with its owner. Namespaces conntrace cannot enter (without
/// CAP_SYS_ADMIN) are skipped: their listeners are learnt when they listen again.
pub fn current() -> Vec<(ListenerKey, Owner)> {
    let Ok(survey) = host::survey(host::namespaces(), Vec::new()) else {
        return Vec::new();
    };
    let sockets: Vec<(ListenerKey, u32)> = survey
        .views
        .iter()
        .flat_map(|v| {
            v.queues.iter().filter_map(move |l| {
                Some((
                    ListenerKey {
                        netns: u32::try_from(v.inode).ok()?,
                        port: l.addr.port(),
                        _pad: 0,
                    },
                    l.inode,
                ))
            })
        })
        .collect();
    if sockets.is_empty() {
        return Vec::new();
    }
    let owners = socket_owners(sockets.iter().map(|(_, inode)| *inode).collect());
    let cgroups = Hierarchies::discover();
    sockets
        .into_iter()
        .filter_map(|(key, inode)| {
            let pid = *owners.get(&inode)?;
            Some((key, owner_of(pid, &cgroups)?))
        })
        .collect()
}

/// For each socket inode wanted, the first process found holding it (a pre-forked
/// server's workers share their parent's listener: any of them names the program).
fn socket_owners(mut wanted: Vec<u32>) -> HashMap<u32, u32> {
    wanted.sort_unstable();
    wanted.dedup();
    let mut found = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(inode) = std::fs::read_link(fd.path())
                .ok()
                .and_then(|t| socket_inode(&t.to_string_lossy()))
            else {
                continue;
            };
            if wanted.binary_search(&inode).is_ok() {
                found.entry(inode).or_insert(pid);
            }
        }
        if found.len() == wanted.len() {
            break;
        }
    }
    found
}

/// `socket:[12345]` → 12345.
fn socket_inode(link: &str) -> Option<u32> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A process as the kernel side would have recorded it at listen().
fn owner_of(pid: u32, cgroups: &Hierarchies) -> Option<Owner> {
    let dir = Path::new("/proc").join(pid.to_string());
    let stat = procfs::parse_stat(&std::fs::read_to_string(dir.join("stat")).ok()?)?;
    let uid = std::fs::read_to_string(dir.join("status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let cgroup_file = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
    let mut comm = [0u8; COMM_LEN];
    let name = stat.comm.as_bytes();
    let len = name.len().min(COMM_LEN - 1);
    comm[..len].copy_from_slice(&name[..len]);
    Some(Owner {
        cgroup_id: cgroup_id(&cgroup_file, |l| l.starts_with("0::"), cgroups.v2.as_ref()),
        cgroup_v1_id: cgroup_id(
            &cgroup_file,
            |l| {
                l.split(':')
                    .nth(1)
                    .is_some_and(|c| c.split(',').any(|c| c == "memory"))
            },
            cgroups.v1_memory.as_ref(),
        ),
        proc_start_ns: stat
            .start_ticks
            .saturating_mul(1_000_000_000 / clock_ticks()),
        tgid: pid,
        tid: pid,
        uid,
        _pad: 0,
        comm,
    })
}

/// The id (directory inode) of the process's cgroup in a hierarchy: its line of
/// `/proc/PID/cgroup` gives the path from the hierarchy's root.
fn cgroup_id(
    cgroup_file: &str,
    line_of: impl Fn(&str) -> bool,
    hierarchy: Option<&crate::enrich::cgroupfs::Hierarchy>,
) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let (Some(h), Some(line)) = (hierarchy, cgroup_file.lines().find(|l| line_of(l))) else {
        return 0;
    };
    let Some(path) = line.splitn(3, ':').nth(2) else {
        return 0;
    };
    let relative = path
        .strip_prefix(h.root.trim_end_matches('/'))
        .unwrap_or(path)
        .trim_start_matches('/');
    std::fs::metadata(h.mount_point.join(relative)).map_or(0, |m| m.ino())
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_socket_links() {
        assert_eq!(socket_inode("socket:[4026]"), Some(4026));
        assert_eq!(socket_inode("pipe:[4026]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
    }

    /// This test's own listener is found, owned by this process, in this process's
    /// cgroups (what the kernel would record at listen()).
    #[test]
    fn finds_a_listener_and_its_owner() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let found = current();
        // Without CAP_SYS_ADMIN other namespaces are skipped, but this one is entered.
        let Some((key, owner)) = found.iter().find(|(k, _)| k.port == port) else {
            panic!("port {port} not among {} listeners", found.len());
        };
        assert_eq!(owner.tgid, std::process::id());
        let own_netns = {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata("/proc/self/ns/net").unwrap().ino()
        };
        assert_eq!(u64::from(key.netns), own_netns);
        let cgroups = Hierarchies::discover();
        if cgroups.v2.is_some() {
            assert_ne!(owner.cgroup_id, 0);
        }
    }
}
