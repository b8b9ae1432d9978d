//! Who a process is, beyond its pid: its container and pod, resolved from the cgroup the
//! kernel recorded at connect time, so that a process that exited right after connecting
//! still gets its pod. File reads only (no CRI socket, no API server):
//!
//! 1. the cgroup ids → the cgroup paths (`cgroupfs`), preferring the v1 memory
//!    hierarchy's: on a hybrid host a container's v2 cgroup may be its runtime's;
//! 2. the paths → container id, runtime, pod uid (`cgroup`);
//! 3. the container id → the runtime bundle's annotations (`bundle`) and the kubelet's
//!    `/var/log/containers` link; the pod uid → `/var/log/pods` (`kubelet`);
//! 4. the pod name → its owner (`workload`).
use super::{
    bundle::{BundleFacts, RunDir},
    cgroup::{CgroupFacts, parse_path, parse_proc_cgroup},
    cgroupfs::Hierarchies,
    kubelet::{LogTree, PodNames},
    workload,
};
use crate::model::{Container, Identity, Pod};

/// Where the identity comes from (the real host's paths, or a test's).
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub run: RunDir,
    pub logs: LogTree,
    /// This node's name, to recognise a static pod's name (`NAME-<node>`).
    pub node: String,
}

impl Sources {
    /// The real host's paths, and its name.
    pub fn of_this_host() -> Sources {
        Sources {
            node: node_name().unwrap_or_default(),
            ..Sources::default()
        }
    }
}

/// Set by the DaemonSet from the downward API (`spec.nodeName`): a pod without
/// hostNetwork has a hostname of its own, the pod's name.
pub const NODE_NAME_ENV: &str = "CONNTRACE_NODE_NAME";

/// This node's name: `CONNTRACE_NODE_NAME` when set, else the hostname.
pub fn node_name() -> Option<String> {
    std::env::var(NODE_NAME_ENV)
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
}

/// What the cgroup ids the kernel recorded say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ByCgroup {
    /// A container or pod.
    Found(Identity),
    /// No container: the process runs on the host.
    Host,
    /// Nothing conclusive: the cgroup is gone or not visible here, or only a v2 id is
    /// known on a host whose containers live in v1 hierarchies.
    Unknown,
}

/// Resolves identities; owns the cgroup mounts it found at start-up.
pub struct Resolver {
    sources: Sources,
    hierarchies: Hierarchies,
}

impl Resolver {
    pub fn new(sources: Sources, hierarchies: Hierarchies) -> Resolver {
        Resolver {
            sources,
            hierarchies,
        }
    }

    /// From the kernel's cgroup ids: v2 `cgroup_id` and v1 memory `cgroup_v1_id` (0 when
    /// unknown).
    pub fn by_cgroup_ids(&mut self, v2: u64, v1: u64) -> ByCgroup {
        let v1_path = match self.hierarchies.v1_memory.as_mut() {
            Some(h) if v1 != 0 => h.path_of(v1),
            _ => None,
        };
        let v2_path = match self.hierarchies.v2.as_mut() {
            Some(h) if v2 != 0 => h.path_of(v2),
            _ => None,
        };
        let facts = [&v1_path, &v2_path]
            .into_iter()
            .flatten()
            .map(|p| parse_path(p))
            .filter(|f| !f.is_empty())
            .max_by_key(|f| f.container_id.is_some());
        if let Some(facts) = facts {
            return ByCgroup::Found(self.identity_of(facts));
        }
        let conclusive =
            v1_path.is_some() || (self.hierarchies.v1_memory.is_none() && v2_path.is_some());
        if conclusive {
            ByCgroup::Host
        } else {
            ByCgroup::Unknown
        }
    }

    /// From a live process's `/proc/PID/cgroup`.
    pub fn by_proc_cgroup(&self, text: &str) -> Option<Identity> {
        let facts = parse_proc_cgroup(text);
        (!facts.is_empty()).then(|| self.identity_of(facts))
    }

    fn identity_of(&self, facts: CgroupFacts) -> Identity {
        let id = facts.container_id.as_deref();
        let bundle = id
            .and_then(|id| self.sources.run.find(id))
            .unwrap_or_default();
        let by_id = id.and_then(|id| self.sources.logs.by_container_id(id));
        let uid = bundle
            .pod_uid
            .clone()
            .or_else(|| by_id.as_ref().and_then(|l| l.uid.clone()))
            .or(facts.pod_uid);
        let logs = by_id.or_else(|| uid.as_deref().and_then(|u| self.sources.logs.by_pod_uid(u)));
        merge(
            facts.container_id,
            facts.runtime,
            uid,
            &bundle,
            logs,
            &self.sources.node,
        )
    }
}

/// The annotations first (the runtime wrote what the kubelet asked for), then the log
/// tree, then the cgroup path.
fn merge(
    id: Option<String>,
    runtime: Option<&'static str>,
    uid: Option<String>,
    bundle: &BundleFacts,
    logs: Option<PodNames>,
    node: &str,
) -> Identity {
    let container = id.map(|id| Container {
        id,
        runtime: runtime.or(bundle.runtime).map(str::to_owned),
        name: bundle
            .container_name
            .clone()
            .or_else(|| logs.as_ref().and_then(|l| l.container.clone())),
    });
    let name = bundle
        .pod_name
        .clone()
        .or_else(|| logs.as_ref().map(|l| l.pod.clone()));
    let namespace = bundle
        .pod_namespace
        .clone()
        .or_else(|| logs.as_ref().map(|l| l.namespace.clone()));
    let pod = (uid.is_some() || name.is_some()).then(|| Pod {
        workload: name
            .as_deref()
            .and_then(|n| workload::guess(n, uid.as_deref(), node)),
        uid,
        name,
        namespace,
    });
    Identity { container, pod }
}

/// Whether nothing more can be learnt later: a pod whose names the kubelet has not
/// written yet is looked up again after a moment.
pub fn is_complete(identity: &Identity) -> bool {
    match &identity.pod {
        None => true,
        Some(pod) => {
            pod.name.is_some()
                && pod.namespace.is_some()
                && identity.container.as_ref().is_none_or(|c| c.name.is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Workload, WorkloadKind};

    const ID: &str = "3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566";

    fn empty_sources(tag: &str) -> Sources {
        let root = std::env::temp_dir().join(format!("ct-identity-{tag}-{}", std::process::id()));
        Sources {
            run: RunDir(root.join("run")),
            logs: LogTree {
                pods: root.join("pods"),
                containers: root.join("containers"),
            },
            node: "node-1".into(),
        }
    }

    #[test]
    fn the_path_alone_gives_the_container_and_pod_uid() {
        let r = Resolver::new(empty_sources("path"), Hierarchies::default());
        let got = r
            .by_proc_cgroup(&format!("0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n", UID.replace('-', "_")))
            .unwrap();
        assert_eq!(
            got,
            Identity {
                container: Some(Container {
                    id: ID.into(),
                    runtime: Some("containerd".into()),
                    name: None
                }),
                pod: Some(Pod {
                    uid: Some(UID.into()),
                    ..Pod::default()
                }),
            }
        );
        assert!(!is_complete(&got));
        assert_eq!(r.by_proc_cgroup("0::/user.slice\n"), None);
    }

    #[test]
    fn annotations_win_then_the_log_tree() {
        let bundle = BundleFacts {
            runtime: Some("runc"),
            container_name: Some("app".into()),
            pod_name: Some("web-7d9f8b6c5d-x2k4p".into()),
            pod_namespace: Some("shop".into()),
            pod_uid: Some(UID.into()),
        };
        let logs = PodNames {
            namespace: "other".into(),
            pod: "other-0".into(),
            uid: None,
            container: Some("other".into()),
        };
        let got = merge(
            Some(ID.into()),
            None,
            Some(UID.into()),
            &bundle,
            Some(logs.clone()),
            "n",
        );
        let pod = got.pod.clone().unwrap();
        assert_eq!(pod.name.as_deref(), Some("web-7d9f8b6c5d-x2k4p"));
        assert_eq!(
            pod.workload,
            Some(Workload {
                kind: WorkloadKind::Deployment,
                name: "web".into()
            })
        );
        assert_eq!(
            got.container.as_ref().unwrap().runtime.as_deref(),
            Some("runc")
        );
        assert!(is_complete(&got));
        let got = merge(
            Some(ID.into()),
            Some("cri-o"),
            Some(UID.into()),
            &BundleFacts::default(),
            Some(logs),
            "n",
        );
        assert_eq!(got.pod.unwrap().namespace.as_deref(), Some("other"));
        let c = got.container.unwrap();
        assert_eq!(
            (c.runtime.as_deref(), c.name.as_deref()),
            (Some("cri-o"), Some("other"))
        );
    }

    #[test]
    fn unknown_ids_are_not_the_host() {
        let mut r = Resolver::new(empty_sources("ids"), Hierarchies::default());
        assert_eq!(r.by_cgroup_ids(0, 0), ByCgroup::Unknown);
        assert_eq!(r.by_cgroup_ids(12345, 0), ByCgroup::Unknown);
    }
}
