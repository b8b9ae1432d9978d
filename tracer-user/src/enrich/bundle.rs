//! The runtime's bundle of a container: the OCI `config.json` the runtime ran it from,
//! whose annotations name the pod and container as the kubelet asked for them. Found by
//! the container id under the runtimes' state directories (all under `/run`, root-owned):
//!
//! | runtime | where |
//! |---|---|
//! | containerd (and Docker ≥ 23 through it) | `/run/containerd/io.containerd.runtime.v2.task/<namespace>/<id>/config.json` |
//! | CRI-O, podman | `/run/containers/storage/overlay-containers/<id>/userdata/config.json` |
//! | runc on its own | `/run/runc/<id>/state.json`, whose `bundle=` label names the bundle |
//! | crun on its own | `/run/crun/<id>/status`, whose `bundle` names it |
use std::{
    collections::HashMap,
    io::Read as _,
    path::{Path, PathBuf},
};

use serde::Deserialize;

/// Largest state or config file read (a bundle's config is a few tens of KiB).
const MAX_FILE_BYTES: u64 = 4 << 20;

/// What a bundle says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleFacts {
    pub runtime: Option<&'static str>,
    pub container_name: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub pod_uid: Option<String>,
}

/// Where the runtimes keep their state (`/run`, or a test's directory).
#[derive(Clone, Debug)]
pub struct RunDir(pub PathBuf);

impl Default for RunDir {
    fn default() -> Self {
        RunDir(PathBuf::from("/run"))
    }
}

#[derive(Deserialize)]
struct Spec {
    #[serde(default)]
    annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
struct RuncState {
    config: RuncConfig,
}

#[derive(Deserialize)]
struct RuncConfig {
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Deserialize)]
struct CrunStatus {
    bundle: PathBuf,
}

impl RunDir {
    /// The bundle facts of container `id`, from the first state directory that has it.
    pub fn find(&self, id: &str) -> Option<BundleFacts> {
        let run = &self.0;
        let tasks = run.join("containerd/io.containerd.runtime.v2.task");
        if let Some(found) = subdirs(&tasks).find_map(|ns| {
            let runtime = if ns.file_name()? == "moby" {
                "docker"
            } else {
                "containerd"
            };
            facts_of(&ns.join(id).join("config.json"), runtime)
        }) {
            return Some(found);
        }
        let storage = run
            .join("containers/storage/overlay-containers")
            .join(id)
            .join("userdata/config.json");
        if let Some(mut found) = facts_of(&storage, "podman") {
            if found.pod_uid.is_some() || found.pod_name.is_some() {
                found.runtime = Some("cri-o");
            }
            return Some(found);
        }
        if let Some(bundle) = read_json::<RuncState>(&run.join("runc").join(id).join("state.json"))
            .and_then(|s| {
                s.config
                    .labels
                    .iter()
                    .find_map(|l| l.strip_prefix("bundle=").map(PathBuf::from))
            })
        {
            return facts_of(&bundle.join("config.json"), "runc");
        }
        let crun = read_json::<CrunStatus>(&run.join("crun").join(id).join("status"))?;
        facts_of(&crun.bundle.join("config.json"), "crun")
    }
}

fn subdirs(dir: &Path) -> impl Iterator<Item = PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    let mut text = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut text)
        .ok()?;
    serde_json::from_slice(&text).ok()
}

fn facts_of(config: &Path, runtime: &'static str) -> Option<BundleFacts> {
    let spec = read_json::<Spec>(config)?;
    let mut facts = from_annotations(&spec.annotations);
    facts.runtime = Some(runtime);
    Some(facts)
}

/// The annotations containerd's CRI plugin (`io.kubernetes.cri.*`) and CRI-O and
/// dockershim (`io.kubernetes.*`) write.
pub fn from_annotations(a: &HashMap<String, String>) -> BundleFacts {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| a.get(*k))
            .filter(|v| !v.is_empty())
            .cloned()
    };
    BundleFacts {
        runtime: None,
        container_name: get(&[
            "io.kubernetes.cri.container-name",
            "io.kubernetes.container.name",
        ]),
        pod_name: get(&["io.kubernetes.cri.sandbox-name", "io.kubernetes.pod.name"]),
        pod_namespace: get(&[
            "io.kubernetes.cri.sandbox-namespace",
            "io.kubernetes.pod.namespace",
        ]),
        pod_uid: get(&["io.kubernetes.cri.sandbox-uid", "io.kubernetes.pod.uid"]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f2a9b1c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    struct TempRun(PathBuf);

    impl TempRun {
        fn new(tag: &str) -> TempRun {
            let dir = std::env::temp_dir().join(format!("ct-run-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempRun(dir)
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.0.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for TempRun {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const CONTAINERD: &str = r#"{"ociVersion":"1.0.2","process":{"args":["/app"]},"annotations":{
        "io.kubernetes.cri.container-type":"container","io.kubernetes.cri.container-name":"app",
        "io.kubernetes.cri.sandbox-name":"web-7d9f8b6c5d-x2k4p","io.kubernetes.cri.sandbox-namespace":"shop",
        "io.kubernetes.cri.sandbox-uid":"1a2b3c4d-5e6f-4a8b-9c0d-112233445566"}}"#;
    const CRIO: &str = r#"{"annotations":{"io.kubernetes.container.name":"db","io.kubernetes.pod.name":"db-0",
        "io.kubernetes.pod.namespace":"data","io.kubernetes.pod.uid":"1a2b3c4d-5e6f-4a8b-9c0d-112233445566"}}"#;

    #[test]
    fn containerd_cri() {
        let run = TempRun::new("containerd");
        run.write(
            &format!("containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            CONTAINERD,
        );
        let got = RunDir(run.0.clone()).find(ID).unwrap();
        assert_eq!(
            got,
            BundleFacts {
                runtime: Some("containerd"),
                container_name: Some("app".into()),
                pod_name: Some("web-7d9f8b6c5d-x2k4p".into()),
                pod_namespace: Some("shop".into()),
                pod_uid: Some("1a2b3c4d-5e6f-4a8b-9c0d-112233445566".into()),
            }
        );
        assert_eq!(RunDir(run.0.clone()).find(&ID.replace('3', "4")), None);
    }

    #[test]
    fn docker_through_containerd() {
        let run = TempRun::new("moby");
        run.write(
            &format!("containerd/io.containerd.runtime.v2.task/moby/{ID}/config.json"),
            "{}",
        );
        let got = RunDir(run.0.clone()).find(ID).unwrap();
        assert_eq!((got.runtime, got.pod_name), (Some("docker"), None));
    }

    #[test]
    fn crio_and_podman() {
        let run = TempRun::new("crio");
        run.write(
            &format!("containers/storage/overlay-containers/{ID}/userdata/config.json"),
            CRIO,
        );
        let got = RunDir(run.0.clone()).find(ID).unwrap();
        assert_eq!(got.runtime, Some("cri-o"));
        assert_eq!(got.container_name.as_deref(), Some("db"));
        assert_eq!(got.pod_namespace.as_deref(), Some("data"));
        run.write(
            &format!("containers/storage/overlay-containers/{ID}/userdata/config.json"),
            "{}",
        );
        assert_eq!(
            RunDir(run.0.clone()).find(ID).unwrap().runtime,
            Some("podman")
        );
    }

    #[test]
    fn runc_and_crun_name_their_bundle() {
        let run = TempRun::new("runc");
        let bundle = run.write("bundles/b1/config.json", CONTAINERD);
        let bundle_dir = bundle.parent().unwrap().display().to_string();
        run.write(
            &format!("runc/{ID}/state.json"),
            &format!(
                r#"{{"id":"{ID}","config":{{"labels":["bundle={bundle_dir}"],"rootfs":"/x"}}}}"#
            ),
        );
        let got = RunDir(run.0.clone()).find(ID).unwrap();
        assert_eq!(
            (got.runtime, got.container_name.as_deref()),
            (Some("runc"), Some("app"))
        );
        let other = ID.replace('3', "5");
        run.write(
            &format!("crun/{other}/status"),
            &format!(r#"{{"pid":1,"bundle":"{bundle_dir}"}}"#),
        );
        assert_eq!(
            RunDir(run.0.clone()).find(&other).unwrap().runtime,
            Some("crun")
        );
    }

    #[test]
    fn broken_files_say_nothing() {
        let run = TempRun::new("broken");
        run.write(
            &format!("containerd/io.containerd.runtime.v2.task/k8s.io/{ID}/config.json"),
            "{not json",
        );
        run.write(&format!("runc/{ID}/state.json"), "[]");
        assert_eq!(RunDir(run.0.clone()).find(ID), None);
    }
}
