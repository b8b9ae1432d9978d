//! What the kubelet's log tree says about a container, by its id or its pod's uid:
//!
//! - `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`, a link to
//! - `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<restart>.log`.
//!
//! Pod names, namespaces and container names cannot hold `_` (they are DNS labels), so
//! the names split unambiguously. The kubelet creates them when the container starts:
//! a lookup that finds nothing may succeed a moment later (the caller caches a miss only
//! briefly).
use std::path::{Path, PathBuf};

/// Names of a container and its pod.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodNames {
    pub namespace: String,
    pub pod: String,
    pub uid: Option<String>,
    pub container: Option<String>,
}

/// Where the kubelet writes its logs.
#[derive(Clone, Debug)]
pub struct LogTree {
    pub pods: PathBuf,
    pub containers: PathBuf,
}

impl Default for LogTree {
    fn default() -> Self {
        LogTree {
            pods: PathBuf::from("/var/log/pods"),
            containers: PathBuf::from("/var/log/containers"),
        }
    }
}

impl LogTree {
    /// The container with this id, from its `/var/log/containers` link (and the pod's uid
    /// from where the link points).
    pub fn by_container_id(&self, id: &str) -> Option<PodNames> {
        let suffix = format!("-{id}.log");
        let entry = std::fs::read_dir(&self.containers)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))?;
        let name = entry.file_name();
        let (pod, namespace, container) = parse_container_log_name(name.to_str()?, id)?;
        let uid = std::fs::read_link(entry.path())
            .ok()
            .and_then(|target| uid_from_pod_log_path(&target));
        Some(PodNames {
            namespace: namespace.into(),
            pod: pod.into(),
            uid,
            container: Some(container.into()),
        })
    }

    /// The pod with this uid, from its `/var/log/pods` directory; its container's name
    /// too when the pod has only one.
    pub fn by_pod_uid(&self, uid: &str) -> Option<PodNames> {
        let suffix = format!("_{uid}");
        let entry = std::fs::read_dir(&self.pods)
            .ok()?
            .flatten()
            .find(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(&suffix)))?;
        let dir_name = entry.file_name();
        let (namespace, pod, uid) = parse_pod_dir_name(dir_name.to_str()?)?;
        let containers: Vec<String> = std::fs::read_dir(entry.path())
            .ok()?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .take(2)
            .collect();
        Some(PodNames {
            namespace: namespace.into(),
            pod: pod.into(),
            uid: Some(uid.into()),
            container: match containers.as_slice() {
                [only] => Some(only.clone()),
                _ => None,
            },
        })
    }
}

/// `<pod>_<namespace>_<container>-<id>.log` → (pod, namespace, container).
pub fn parse_container_log_name<'a>(
    name: &'a str,
    id: &str,
) -> Option<(&'a str, &'a str, &'a str)> {
    let stem = name
        .strip_suffix(".log")?
        .strip_suffix(id)?
        .strip_suffix('-')?;
    let mut parts = stem.splitn(3, '_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = |s: &str| !s.is_empty() && !s.contains('_');
    (ok(pod) && ok(namespace) && ok(container)).then_some((pod, namespace, container))
}

/// `<namespace>_<pod>_<uid>` → (namespace, pod, uid).
pub fn parse_pod_dir_name(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.splitn(3, '_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = |s: &str| !s.is_empty() && !s.contains('_');
    (ok(namespace) && ok(pod) && super::cgroup::is_pod_uid(uid)).then_some((namespace, pod, uid))
}

/// `/var/log/pods/<namespace>_<pod>_<uid>/<container>/0.log` → uid.
fn uid_from_pod_log_path(target: &Path) -> Option<String> {
    target
        .components()
        .rev()
        .nth(2)
        .and_then(|c| c.as_os_str().to_str())
        .and_then(parse_pod_dir_name)
        .map(|(_, _, uid)| uid.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "1a2b3c4d-5e6f-4a8b-9c0d-112233445566";

    #[test]
    fn names_split_on_underscores() {
        assert_eq!(
            parse_container_log_name(&format!("web-7d9f8b6c5d-x2k4p_shop_app-{ID}.log"), ID),
            Some(("web-7d9f8b6c5d-x2k4p", "shop", "app"))
        );
        assert_eq!(parse_container_log_name(&format!("a_b-{ID}.log"), ID), None);
        assert_eq!(
            parse_container_log_name(&format!("a_b_c-{ID}.txt"), ID),
            None
        );
        assert_eq!(
            parse_pod_dir_name(&format!(
                "kube-system_etcd-node-1_{}",
                "6b6cf55d2f1e8c2d4e1f1d4e2b1c5a3f"
            )),
            Some((
                "kube-system",
                "etcd-node-1",
                "6b6cf55d2f1e8c2d4e1f1d4e2b1c5a3f"
            ))
        );
        assert_eq!(parse_pod_dir_name("shop_web_notauid"), None);
        assert_eq!(
            uid_from_pod_log_path(Path::new(&format!(
                "/var/log/pods/shop_web-0_{UID}/app/0.log"
            )))
            .as_deref(),
            Some(UID)
        );
    }

    #[test]
    fn reads_a_kubelet_style_tree() {
        let root = std::env::temp_dir().join(format!("ct-kubelet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let tree = LogTree {
            pods: root.join("pods"),
            containers: root.join("containers"),
        };
        let pod_dir = tree.pods.join(format!("shop_web-0_{UID}"));
        std::fs::create_dir_all(pod_dir.join("app")).unwrap();
        std::fs::create_dir_all(&tree.containers).unwrap();
        std::fs::write(pod_dir.join("app/0.log"), "").unwrap();
        std::os::unix::fs::symlink(
            pod_dir.join("app/0.log"),
            tree.containers.join(format!("web-0_shop_app-{ID}.log")),
        )
        .unwrap();
        let want = PodNames {
            namespace: "shop".into(),
            pod: "web-0".into(),
            uid: Some(UID.into()),
            container: Some("app".into()),
        };
        assert_eq!(tree.by_container_id(ID), Some(want.clone()));
        assert_eq!(tree.by_pod_uid(UID), Some(want.clone()));
        // Two containers: the pod alone does not say which one.
        std::fs::create_dir_all(pod_dir.join("sidecar")).unwrap();
        assert_eq!(tree.by_pod_uid(UID).unwrap().container, None);
        assert_eq!(tree.by_container_id(&ID.replace('3', "4")), None);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(tree.by_container_id(ID), None);
    }
}
