//! From a cgroup id the kernel recorded to the cgroup's path: the id of a cgroup is the
//! inode number of its directory in the cgroup filesystem (v2, and each v1 hierarchy).
//! Two ways, the first that works: `open_by_handle_at` with a kernfs file handle (one
//! system call, needs CAP_DAC_READ_SEARCH), else a walk of the hierarchy indexing
//! directories by inode (needs nothing: cgroupfs is world-readable), redone on a miss at
//! most once per [`REWALK_AFTER`]. A cgroup removed since (its last process exited and
//! the runtime cleaned up) has no path any more: the caller gets `None`.
use std::{
    collections::HashMap,
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Least time between two walks of one hierarchy.
pub const REWALK_AFTER: Duration = Duration::from_secs(1);
/// Bounds on a walk, whatever the host holds.
const WALK_MAX_DIRS: usize = 200_000;
const WALK_MAX_DEPTH: usize = 32;
/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node id as a file handle.
const FILEID_KERNFS: i32 = 0xfe;

/// A mounted cgroup hierarchy.
#[derive(Debug)]
pub struct Hierarchy {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The cgroup the mount shows as its root (`/` unless mounted from inside a cgroup
    /// namespace or a bind mount of a sub-tree): paths are reported from the
    /// hierarchy's root, as `/proc/PID/cgroup` shows them.
    pub root: String,
    dir: Option<File>,
    handles: Handles,
    index: HashMap<u64, String>,
    walked_at: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handles {
    Untried,
    Work,
    /// EPERM (no CAP_DAC_READ_SEARCH) or not supported: walk instead.
    Unusable,
}

impl Hierarchy {
    pub fn new(mount_point: PathBuf, root: String) -> Hierarchy {
        Hierarchy {
            dir: File::open(&mount_point).ok(),
            mount_point,
            root,
            handles: Handles::Untried,
            index: HashMap::new(),
            walked_at: None,
        }
    }

    /// The path of cgroup `id`, from the hierarchy's root (`/kubepods/…`).
    pub fn path_of(&mut self, id: u64) -> Option<String> {
        if id == 0 {
            return None;
        }
        if self.handles != Handles::Unusable {
            match self.by_handle(id) {
                Ok(path) => {
                    self.handles = Handles::Work;
                    return path;
                }
                Err(()) => self.handles = Handles::Unusable,
            }
        }
        self.by_walk(id)
    }

    /// `Ok(None)`: the cgroup is gone; `Err`: handles cannot be used here.
    fn by_handle(&self, id: u64) -> Result<Option<String>, ()> {
        let dir = self.dir.as_ref().ok_or(())?;
        #[repr(C)]
        struct KernfsHandle {
            handle_bytes: u32,
            handle_type: i32,
            id: [u8; 8],
        }
        let mut handle = KernfsHandle {
            handle_bytes: 8,
            handle_type: FILEID_KERNFS,
            id: id.to_ne_bytes(),
        };
        // SAFETY: a valid directory fd and a file_handle laid out as the kernel reads it
        // (handle_bytes, handle_type, then handle_bytes bytes).
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                dir.as_raw_fd(),
                &raw mut handle,
                libc::O_PATH | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::ESTALE | libc::ENOENT) => Ok(None),
                _ => Err(()),
            };
        }
        let fd = i32::try_from(fd).map_err(|_| ())?;
        // SAFETY: the kernel just gave us this fd; the File owns and closes it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let target =
            std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|_| ())?;
        Ok(self.relative(&target))
    }

    fn by_walk(&mut self, id: u64) -> Option<String> {
        if let Some(path) = self.index.get(&id) {
            // Still there? A removed cgroup's inode number is not reused while the
            // index is fresh, but its entry must not outlive it.
            if self.mount_point.join(path.trim_start_matches('/')).is_dir() {
                return Some(self.with_root(path));
            }
        }
        if self.walked_at.is_some_and(|t| t.elapsed() < REWALK_AFTER) {
            return None;
        }
        self.index = walk(&self.mount_point);
        self.walked_at = Some(Instant::now());
        self.index.get(&id).map(|p| self.with_root(p))
    }

    /// `/sys/fs/cgroup/unified/kubepods/x` → `/kubepods/x` (with the mount's root).
    fn relative(&self, absolute: &Path) -> Option<String> {
        let rest = absolute.strip_prefix(&self.mount_point).ok()?;
        Some(self.with_root(&format!("/{}", rest.to_string_lossy())))
    }

    fn with_root(&self, path: &str) -> String {
        let root = self.root.trim_end_matches('/');
        let path = path.trim_end_matches('/');
        match (root.is_empty(), path.is_empty()) {
            (_, true) if root.is_empty() => "/".into(),
            (_, true) => root.to_owned(),
            _ => format!("{root}{path}"),
        }
    }
}

/// Every directory under `mount` by inode number, as paths from `mount` (`/a/b`).
fn walk(mount: &Path) -> HashMap<u64, String> {
    let mut index = HashMap::new();
    let mut stack = vec![(mount.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        if let Ok(meta) = std::fs::metadata(&dir) {
            index.insert(
                meta.ino(),
                if rel.is_empty() {
                    "/".into()
                } else {
                    rel.clone()
                },
            );
        }
        if depth >= WALK_MAX_DEPTH || index.len() >= WALK_MAX_DIRS {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                stack.push((entry.path(), format!("{rel}/{name}"), depth + 1));
            }
        }
    }
    index
}

/// The cgroup hierarchies that matter: v2 (the kernel's `cgroup_id`) and v1's memory
/// hierarchy (its `cgroup_v1_id`).
#[derive(Debug, Default)]
pub struct Hierarchies {
    pub v2: Option<Hierarchy>,
    pub v1_memory: Option<Hierarchy>,
}

impl Hierarchies {
    /// Finds them in this process's mount table.
    pub fn discover() -> Hierarchies {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|text| Hierarchies::from_mountinfo(&text))
            .unwrap_or_default()
    }

    pub fn from_mountinfo(text: &str) -> Hierarchies {
        let mut found = Hierarchies::default();
        for m in text.lines().filter_map(parse_mountinfo_line) {
            let slot = match m.fstype.as_str() {
                "cgroup2" => &mut found.v2,
                "cgroup" if m.super_options.split(',').any(|o| o == "memory") => {
                    &mut found.v1_memory
                }
                _ => continue,
            };
            // The first mount point of a hierarchy wins (later ones are usually bind mounts
            // into containers), but a mount stacked on it hides it: in a pod, the node's
            // cgroupfs mounted over the container's own (namespaced) one is the one seen.
            if slot.as_ref().is_none_or(|h| h.mount_point == m.mount_point) {
                *slot = Some(Hierarchy::new(m.mount_point, m.root));
            }
        }
        found
    }
}

#[derive(Debug, PartialEq, Eq)]
struct MountInfo {
    root: String,
    mount_point: PathBuf,
    fstype: String,
    super_options: String,
}

/// One line of `/proc/PID/mountinfo`: `id parent maj:min root point options [optional
/// fields] - fstype source super-options`.
fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let root = unescape(l.nth(3)?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let mut r = right.split(' ');
    let fstype = r.next()?.to_owned();
    let super_options = r.nth(1).unwrap_or("").to_owned();
    Some(MountInfo {
        root,
        mount_point,
        fstype,
        super_options,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
32 25 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:16 - cgroup cgroup rw,cpu,cpuacct
40 31 0:28 /kubepods /host/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn finds_v2_and_the_v1_memory_hierarchy() {
        let h = Hierarchies::from_mountinfo(HYBRID);
        let v2 = h.v2.unwrap();
        assert_eq!(v2.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(v2.root, "/");
        let mem = h.v1_memory.unwrap();
        assert_eq!(mem.mount_point, Path::new("/sys/fs/cgroup/memory"));
        // A pod's own namespaced cgroupfs, with the node's mounted over it.
        let stacked = "30 1 0:26 /../.. /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n41 30 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        assert_eq!(Hierarchies::from_mountinfo(stacked).v2.unwrap().root, "/");
        let pure_v2 = "30 1 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let h = Hierarchies::from_mountinfo(pure_v2);
        assert!(h.v1_memory.is_none());
        assert_eq!(h.v2.unwrap().mount_point, Path::new("/sys/fs/cgroup"));
    }

    #[test]
    fn mountinfo_escapes_and_roots() {
        let line = r"40 31 0:28 /kube\040pods /mnt/my\040cgroup rw shared:1 master:2 - cgroup cgroup rw,memory";
        let m = parse_mountinfo_line(line).unwrap();
        assert_eq!(m.root, "/kube pods");
        assert_eq!(m.mount_point, Path::new("/mnt/my cgroup"));
        assert_eq!(m.super_options, "rw,memory");
        assert_eq!(parse_mountinfo_line("garbage"), None);
    }

    #[test]
    fn paths_carry_the_mounts_root() {
        let h = Hierarchy::new("/nonexistent".into(), "/".into());
        assert_eq!(h.with_root("/kubepods/x"), "/kubepods/x");
        assert_eq!(h.with_root("/"), "/");
        let sub = Hierarchy::new("/nonexistent".into(), "/kubepods".into());
        assert_eq!(sub.with_root("/pod1/c"), "/kubepods/pod1/c");
        assert_eq!(sub.with_root("/"), "/kubepods");
        assert_eq!(
            sub.relative(Path::new("/nonexistent/pod1/c")).as_deref(),
            Some("/kubepods/pod1/c")
        );
    }

    /// This process's own cgroups, found back from their directories' inode numbers, by a
    /// file handle where this process may use one and by a walk in any case.
    #[test]
    fn finds_this_process_cgroups_on_this_host() {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let mut hierarchies = Hierarchies::discover();
        let mut checked = 0;
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) =
                (parts.next(), parts.next().unwrap(), parts.next().unwrap());
            let h = match controllers {
                "" => hierarchies.v2.as_mut(),
                c if c.split(',').any(|c| c == "memory") => hierarchies.v1_memory.as_mut(),
                _ => None,
            };
            let Some(h) = h else { continue };
            let dir = h.mount_point.join(path.trim_start_matches('/'));
            let ino = std::fs::metadata(&dir).unwrap().ino();
            assert_eq!(h.path_of(ino).as_deref(), Some(path), "{line}");
            let handle = h.by_handle(ino);
            if let Ok(by_handle) = handle {
                assert_eq!(by_handle.as_deref(), Some(path), "{line} by handle");
            }
            h.handles = Handles::Unusable;
            assert_eq!(h.by_walk(ino).as_deref(), Some(path), "{line} by walk");
            checked += 1;
        }
        assert!(checked > 0, "no cgroup hierarchy found in {own}");
    }

    #[test]
    fn a_walk_indexes_directories_by_inode() {
        let dir = std::env::temp_dir().join(format!("ct-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("kubepods/pod1/c1")).unwrap();
        std::fs::write(dir.join("kubepods/file"), "").unwrap();
        let ino = std::fs::metadata(dir.join("kubepods/pod1/c1"))
            .unwrap()
            .ino();
        let mut h = Hierarchy::new(dir.clone(), "/".into());
        h.handles = Handles::Unusable;
        assert_eq!(h.path_of(ino).as_deref(), Some("/kubepods/pod1/c1"));
        // Gone: no path, and no second walk right away.
        std::fs::remove_dir(dir.join("kubepods/pod1/c1")).unwrap();
        assert_eq!(h.path_of(ino), None);
        assert_eq!(h.path_of(0), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
