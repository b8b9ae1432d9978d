//! What a cgroup path says about the process in it: the container id and who manages it,
//! and the pod's uid. Pure, no I/O: every naming the kubelet's two cgroup drivers and the
//! runtimes use, on cgroup v1, v2 and hybrid hosts.
//!
//! | driver, runtime | the container's cgroup |
//! |---|---|
//! | systemd, containerd | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<id>.scope` |
//! | systemd, CRI-O | `…/kubepods-burstable-pod<uid>.slice/crio-<id>.scope` (its monitor: `crio-conmon-<id>.scope`) |
//! | systemd, Docker | `/system.slice/docker-<id>.scope`; under kubepods with cri-dockerd |
//! | systemd, podman | `/machine.slice/libpod-<id>.scope` (its monitor: `libpod-conmon-<id>.scope`) |
//! | cgroupfs, containerd | `/kubepods/besteffort/pod<uid>/<id>` (guaranteed pods: `/kubepods/pod<uid>/<id>`) |
//! | cgroupfs, CRI-O | `/kubepods/burstable/pod<uid>/crio-<id>` |
//! | cgroupfs, Docker | `/docker/<id>` |
//! | cgroupfs, podman | `/libpod_parent/libpod-<id>` |
//!
//! A static pod's uid is the 32-hex-digit hash of its manifest, without dashes.

/// The facts one cgroup path gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupFacts {
    pub container_id: Option<String>,
    /// Known from the path's naming; `None` for a bare id (containerd or Docker with the
    /// cgroupfs driver), which the runtime's bundle may tell.
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
}

impl CgroupFacts {
    pub fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.pod_uid.is_none()
    }
}

/// Prefixes of a container's scope (systemd) or directory (cgroupfs); `None` for the
/// runtime's monitor process, which is not the container.
const PREFIXES: [(&str, Option<&str>); 6] = [
    ("cri-containerd-", Some("containerd")),
    ("crio-conmon-", None),
    ("crio-", Some("cri-o")),
    ("docker-", Some("docker")),
    ("libpod-conmon-", None),
    ("libpod-", Some("podman")),
];

/// Parses one cgroup path (as `/proc/PID/cgroup` or the cgroup mount shows it). The
/// deepest component naming a container wins (a container nested in another is the
/// inner one).
pub fn parse_path(path: &str) -> CgroupFacts {
    let mut facts = CgroupFacts::default();
    let mut under_kubepods = false;
    let mut parent = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if component.starts_with("kubepods") {
            under_kubepods = true;
        }
        if under_kubepods && let Some(uid) = pod_uid_of(component) {
            facts.pod_uid = Some(uid);
        }
        if let Some((id, runtime)) = container_of(component) {
            facts.container_id = Some(id.to_owned());
            facts.runtime = runtime.or((parent == "docker").then_some("docker"));
        }
        parent = component;
    }
    facts
}

/// Parses `/proc/PID/cgroup`: every line (`hierarchy:controllers:path`). The v1 memory
/// hierarchy's line is preferred, then any v1 line, then the v2 line: on a hybrid host a
/// container's v2 cgroup may be its runtime's rather than its own.
pub fn parse_proc_cgroup(text: &str) -> CgroupFacts {
    let mut best: Option<(u8, CgroupFacts)> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let facts = parse_path(path);
        if facts.is_empty() {
            continue;
        }
        let rank = match controllers {
            c if c.split(',').any(|c| c == "memory") => 3,
            "" => 1,
            _ => 2,
        } + if facts.container_id.is_some() { 4 } else { 0 };
        if best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, facts));
        }
    }
    best.map(|(_, f)| f).unwrap_or_default()
}

fn container_of(component: &str) -> Option<(&str, Option<&'static str>)> {
    let stem = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in PREFIXES {
        if let Some(rest) = stem.strip_prefix(prefix) {
            return runtime
                .filter(|_| is_container_id(rest))
                .map(|r| (rest, Some(r)));
        }
    }
    is_container_id(stem).then_some((stem, None))
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid with _ for ->.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let raw = match component.strip_suffix(".slice") {
        Some(stem) => stem.rsplit_once("-pod")?.1,
        None => component.strip_prefix("pod")?,
    };
    let uid = raw.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// 64 lowercase hex digits, as containerd, CRI-O, Docker and podman name containers.
pub fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A dashed UUID, or the 32 hex digits of a static pod's hash.
pub fn is_pod_uid(s: &str) -> bool {
    let hex = |b: u8| b.is_ascii_hexdigit();
    match s.len() {
        32 => s.bytes().all(hex),
        36 => s.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                hex(b)
            }
        }),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const ID: &str = "3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566";
    const UID_: &str = "1a2b3c4d_5e6f_4a8b_9c0d_112233445566";
    const STATIC_UID: &str = "6b6cf55d2f1e8c2d4e1f1d4e2b1c5a3f";

    fn facts(id: Option<&str>, runtime: Option<&'static str>, uid: Option<&str>) -> CgroupFacts {
        CgroupFacts {
            container_id: id.map(str::to_owned),
            runtime,
            pod_uid: uid.map(str::to_owned),
        }
    }

    #[test]
    fn kubelet_systemd_driver() {
        for (qos, runtime, scope) in [
            (
                "besteffort",
                "containerd",
                format!("cri-containerd-{ID}.scope"),
            ),
            ("burstable", "cri-o", format!("crio-{ID}.scope")),
            ("besteffort", "docker", format!("docker-{ID}.scope")),
        ] {
            let path = format!(
                "/kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{UID_}.slice/{scope}"
            );
            assert_eq!(
                parse_path(&path),
                facts(Some(ID), Some(runtime), Some(UID)),
                "{path}"
            );
        }
        // Guaranteed pods sit right under kubepods.slice.
        let path = format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope");
        assert_eq!(
            parse_path(&path),
            facts(Some(ID), Some("containerd"), Some(UID))
        );
    }

    #[test]
    fn kubelet_cgroupfs_driver() {
        for path in [
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            format!("/kubepods/burstable/pod{UID}/{ID}"),
            format!("/kubepods/pod{UID}/{ID}"),
        ] {
            assert_eq!(
                parse_path(&path),
                facts(Some(ID), None, Some(UID)),
                "{path}"
            );
        }
        let crio = format!("/kubepods/burstable/pod{UID}/crio-{ID}");
        assert_eq!(parse_path(&crio), facts(Some(ID), Some("cri-o"), Some(UID)));
    }

    #[test]
    fn static_pods_keep_their_undashed_uid() {
        for path in [
            format!("/kubepods/burstable/pod{STATIC_UID}/{ID}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/cri-containerd-{ID}.scope"
            ),
        ] {
            assert_eq!(
                parse_path(&path).pod_uid.as_deref(),
                Some(STATIC_UID),
                "{path}"
            );
        }
    }

    #[test]
    fn the_pod_itself_without_a_container() {
        // The pod's own cgroup (a process the runtime put there, or the pod's slice).
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
        );
        assert_eq!(parse_path(&path), facts(None, None, Some(UID)));
    }

    #[test]
    fn containers_outside_kubernetes() {
        assert_eq!(
            parse_path(&format!("/docker/{ID}")),
            facts(Some(ID), Some("docker"), None)
        );
        assert_eq!(
            parse_path(&format!("/system.slice/docker-{ID}.scope")),
            facts(Some(ID), Some("docker"), None)
        );
        assert_eq!(
            parse_path(&format!("/machine.slice/libpod-{ID}.scope")),
            facts(Some(ID), Some("podman"), None)
        );
        assert_eq!(
            parse_path(&format!("/libpod_parent/libpod-{ID}")),
            facts(Some(ID), Some("podman"), None)
        );
        // containerd without Kubernetes (`ctr run`): its namespace, then the id.
        assert_eq!(
            parse_path(&format!("/default/{ID}")),
            facts(Some(ID), None, None)
        );
        // Docker in Docker: the inner container.
        let inner = ID.replace('3', "4");
        assert_eq!(
            parse_path(&format!("/docker/{ID}/docker/{inner}"))
                .container_id
                .as_deref(),
            Some(inner.as_str())
        );
    }

    #[test]
    fn monitors_are_not_containers() {
        assert!(parse_path(&format!("/machine.slice/libpod-conmon-{ID}.scope")).is_empty());
        let conmon = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(parse_path(&conmon), facts(None, None, Some(UID)));
    }

    #[test]
    fn nothing_on_the_host() {
        for path in [
            "/",
            "/init.scope",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/containerd.service",
            "/process_api/24353cf06b510bdb2d90db5fd271a939",
            // `pod…` outside kubepods is not a pod.
            "/pod1a2b3c4d-5e6f-4a8b-9c0d-112233445566",
            // Not quite an id: 63 digits, upper case.
            "/docker/3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f",
            "/docker/3F2A9B1C4D5E6F708192A3B4C5D6E7F8091A2B3C4D5E6F708192A3B4C5D6E7F8",
        ] {
            assert!(parse_path(path).is_empty(), "{path}");
        }
    }

    #[test]
    fn proc_cgroup_v1_v2_and_hybrid() {
        let v2 = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(
            parse_proc_cgroup(&v2),
            facts(Some(ID), Some("containerd"), Some(UID))
        );
        let v1 = format!(
            "12:pids:/kubepods/besteffort/pod{UID}/{ID}\n4:memory:/kubepods/besteffort/pod{UID}/{ID}\n1:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&v1), facts(Some(ID), None, Some(UID)));
        // Hybrid: the v2 line names the runtime's cgroup, the v1 lines the container's.
        let hybrid = format!(
            "9:name=systemd:/kubepods/besteffort/pod{UID}/{ID}\n4:memory:/kubepods/besteffort/pod{UID}/{ID}\n0::/system.slice/containerd.service\n"
        );
        assert_eq!(parse_proc_cgroup(&hybrid), facts(Some(ID), None, Some(UID)));
        // A v1 line with only the pod loses to a line with the container.
        let mixed = format!(
            "4:memory:/kubepods/besteffort/pod{UID}\n3:cpu,cpuacct:/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        assert_eq!(parse_proc_cgroup(&mixed).container_id.as_deref(), Some(ID));
        // Seen from inside a cgroup namespace: paths climb out of it.
        let nested = format!("0::/../../kubepods/besteffort/pod{UID}/{ID}\n");
        assert_eq!(parse_proc_cgroup(&nested), facts(Some(ID), None, Some(UID)));
        assert!(parse_proc_cgroup("0::/init.scope\n").is_empty());
        assert!(parse_proc_cgroup("garbage\n\n").is_empty());
    }

    #[test]
    fn uids() {
        assert!(is_pod_uid(UID));
        assert!(is_pod_uid(STATIC_UID));
        assert!(!is_pod_uid(UID_));
        assert!(!is_pod_uid("1a2b3c4d-5e6f-4a8b-9c0d-11223344556"));
        assert!(!is_pod_uid("zz2b3c4d-5e6f-4a8b-9c0d-112233445566"));
    }
}
