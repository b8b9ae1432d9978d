//! What procfs adds to a record: the executable, the arguments, the container. Cached per
//! process and bounded; a process that has already exited still gets its record, with what
//! the kernel gave.
use std::collections::HashMap;

use crate::model::Process;

/// Entries kept before the cache is emptied and starts again.
const CAPACITY: usize = 4096;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Details {
    executable: Option<String>,
    args: Option<Vec<String>>,
    container_id: Option<String>,
}

/// Process details by (pid, comm): the comm is part of the key so that a reused pid or an
/// exec'd process is looked up afresh. Indexed by pid, then the comm among that pid's
/// thread names, so that a lookup (one per event) allocates nothing.
pub struct ProcCache {
    with_args: bool,
    entries: HashMap<u32, Vec<(String, Details)>>,
    len: usize,
}

impl ProcCache {
    pub fn new(with_args: bool) -> ProcCache {
        ProcCache {
            with_args,
            entries: HashMap::new(),
            len: 0,
        }
    }

    pub fn enrich(&mut self, process: &mut Process) {
        let known = self
            .entries
            .get(&process.pid)
            .is_some_and(|names| names.iter().any(|(n, _)| *n == process.name));
        if !known {
            if self.len >= CAPACITY {
                self.entries.clear();
                self.len = 0;
            }
            let details = read_details(process.pid, self.with_args);
            self.entries
                .entry(process.pid)
                .or_default()
                .push((process.name.clone(), details));
            self.len += 1;
        }
        let found = self
            .entries
            .get(&process.pid)
            .and_then(|names| names.iter().find(|(n, _)| *n == process.name));
        if let Some((_, d)) = found {
            process.executable.clone_from(&d.executable);
            process.args.clone_from(&d.args);
            process.container_id.clone_from(&d.container_id);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn read_details(pid: u32, with_args: bool) -> Details {
    let Ok(process) = procfs::process::Process::new(i32::try_from(pid).unwrap_or(i32::MAX)) else {
        return Details::default();
    };
    Details {
        executable: process.exe().ok().map(|p| p.to_string_lossy().into_owned()),
        args: if with_args {
            process.cmdline().ok().filter(|a| !a.is_empty())
        } else {
            None
        },
        container_id: std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|text| container_id(&text)),
    }
}

/// The container id in a cgroup path, as runtimes write it: `/docker/<64 hex>`,
/// `.../cri-containerd-<64 hex>.scope`, `.../crio-<64 hex>.scope`, `.../docker-<64 hex>.scope`.
pub fn container_id(cgroup_file: &str) -> Option<String> {
    cgroup_file.lines().find_map(|line| {
        let path = line.rsplit(':').next()?;
        path.split(['/', '-', '.'])
            .find(|part| part.len() == 64 && part.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    #[test]
    fn finds_container_ids_as_runtimes_write_them() {
        for path in [
            format!("0::/system.slice/docker-{ID}.scope"),
            format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("12:memory:/docker/{ID}"),
            format!("0::/kubepods/besteffort/pod1234/{ID}"),
        ] {
            assert_eq!(container_id(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn no_container_on_the_host() {
        assert_eq!(
            container_id("0::/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id("0::/init.scope\n"), None);
    }

    #[test]
    fn enriches_a_live_process() {
        let mut cache = ProcCache::new(true);
        let mut me = Process {
            pid: std::process::id(),
            name: "test".into(),
            ..Process::default()
        };
        cache.enrich(&mut me);
        assert!(me.executable.is_some());
        assert!(me.args.as_ref().is_some_and(|a| !a.is_empty()));
    }

    #[test]
    fn no_args_when_told_not_to() {
        let mut cache = ProcCache::new(false);
        let mut me = Process {
            pid: std::process::id(),
            name: "test".into(),
            ..Process::default()
        };
        cache.enrich(&mut me);
        assert_eq!(me.args, None);
        assert!(me.executable.is_some());
    }

    #[test]
    fn an_exited_process_keeps_what_the_kernel_gave() {
        let mut cache = ProcCache::new(true);
        let mut gone = Process {
            pid: u32::MAX - 1,
            name: "gone".into(),
            uid: 7,
            ..Process::default()
        };
        cache.enrich(&mut gone);
        assert_eq!(
            (gone.executable, gone.args, gone.name.as_str(), gone.uid),
            (None, None, "gone", 7)
        );
    }

    #[test]
    fn the_cache_stays_bounded() {
        let mut cache = ProcCache::new(false);
        for pid in 0..(CAPACITY as u32 + 10) {
            let mut p = Process {
                pid: u32::MAX - 2 - pid,
                name: "x".into(),
                ..Process::default()
            };
            cache.enrich(&mut p);
        }
        assert!(cache.len() <= CAPACITY);
    }
}
