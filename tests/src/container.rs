//! Real containers for the identity tests: `runc` runs a busybox-static rootfs with a
//! kubelet-style cgroup path (either driver's naming), the annotations a CRI runtime
//! writes, inside one of the harness's network namespaces; a kubelet-style log tree names
//! its pod. Everything is named uniquely and removed when the guards drop: the
//! container, its bundle, its cgroup directories (the pod's, and the shared
//! `kubepods…` parents once the last container of this test process is gone), the log
//! tree entries.
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::netns::{Netns, sh};

static NEXT: AtomicU32 = AtomicU32::new(0);
/// Containers of this test process alive; the shared cgroup parents and log directories
/// go with the last one. Held while creating and removing, so that one test never
/// removes a parent another is creating under.
static LIVE: Mutex<usize> = Mutex::new(0);

/// The kubelet's two cgroup drivers, as they name a container's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid_>.slice/cri-containerd-<id>.scope`
    Systemd,
    /// `/kubepods/besteffort/pod<uid>/<id>`
    Cgroupfs,
}

/// A pod as the tests describe it.
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub container: String,
}

/// Hex digits unique to this test process and call.
fn unique_hex(len: usize) -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut seed = (u128::from(std::process::id()) << 96) ^ (u128::from(n) << 64) ^ nanos;
    let mut out = String::new();
    while out.len() < len {
        // splitmix-style scrambling: distinct seeds give distinct streams.
        seed = seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
            .wrapping_add(0x6a09_e667);
        out.push_str(&format!("{:032x}", seed ^ (seed >> 61)));
    }
    out.truncate(len);
    out
}

impl PodSpec {
    /// A pod with a unique dashed uid.
    pub fn new(namespace: &str, name: &str, container: &str) -> PodSpec {
        let h = unique_hex(32);
        PodSpec {
            namespace: namespace.into(),
            name: name.into(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            ),
            container: container.into(),
        }
    }

    /// A static pod: its uid is 32 hex digits without dashes.
    pub fn static_pod(namespace: &str, name: &str, container: &str) -> PodSpec {
        PodSpec {
            uid: unique_hex(32),
            ..PodSpec::new(namespace, name, container)
        }
    }
}

/// What goes in the bundle's annotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Annotations {
    /// containerd's CRI plugin's (`io.kubernetes.cri.*`).
    Containerd,
    /// None: the names must come from the kubelet's log tree.
    None,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// The container's cgroup path (as `/proc/PID/cgroup` shows it).
    pub cgroup: String,
    /// The pod's cgroup path, removed with the container.
    pod_cgroup: String,
    /// The shared parents, removed with the last container when empty.
    parents: Vec<String>,
}

impl Container {
    /// Starts `args` (in the busybox rootfs, `/bin/sh -c …` for example) as a container of
    /// `pod`, in network namespace `netns`.
    pub fn run(
        pod: &PodSpec,
        driver: Driver,
        annotations: Annotations,
        netns: &Netns,
        args: &[&str],
    ) -> Container {
        let id = unique_hex(64);
        let bundle = std::env::temp_dir().join(format!("ct-bundle-{}", &id[..16]));
        let (pod_cgroup, cgroup, parents) = match driver {
            Driver::Systemd => {
                let pod_slice = format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
                    pod.uid.replace('-', "_")
                );
                let leaf = format!("{pod_slice}/cri-containerd-{id}.scope");
                (
                    pod_slice,
                    leaf,
                    vec![
                        "/kubepods.slice/kubepods-besteffort.slice".into(),
                        "/kubepods.slice".into(),
                    ],
                )
            }
            Driver::Cgroupfs => {
                let pod_dir = format!("/kubepods/besteffort/pod{}", pod.uid);
                let leaf = format!("{pod_dir}/{id}");
                (
                    pod_dir,
                    leaf,
                    vec!["/kubepods/besteffort".into(), "/kubepods".into()],
                )
            }
        };
        make_rootfs(&bundle.join("rootfs"));
        sh("runc", &["spec", "--bundle", bundle.to_str().unwrap()]);
        let config_path = bundle.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        config["root"]["readonly"] = json!(false);
        config["linux"]["cgroupsPath"] = json!(cgroup);
        if let Some(namespaces) = config["linux"]["namespaces"].as_array_mut() {
            for ns in namespaces.iter_mut() {
                if ns["type"] == "network" {
                    ns["path"] = json!(netns.path());
                }
            }
        }
        if annotations == Annotations::Containerd {
            config["annotations"] = json!({
                "io.kubernetes.cri.container-type": "container",
                "io.kubernetes.cri.container-name": pod.container,
                "io.kubernetes.cri.sandbox-name": pod.name,
                "io.kubernetes.cri.sandbox-namespace": pod.namespace,
                "io.kubernetes.cri.sandbox-uid": pod.uid,
            });
        }
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let container = Container {
            id,
            bundle,
            cgroup,
            pod_cgroup,
            parents,
        };
        let mut live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *live += 1;
        // The container inherits runc's stdio: a pipe would stay open as long as it runs.
        let errors_path = container.bundle.join("runc.err");
        let errors = std::fs::File::create(&errors_path).unwrap();
        let status = Command::new("runc")
            .args(["run", "--detach", "--bundle"])
            .arg(&container.bundle)
            .arg(&container.id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors)
            .status()
            .expect("run runc (install it: cargo xtask setup)");
        drop(live);
        assert!(
            status.success(),
            "runc run failed: {}",
            std::fs::read_to_string(&errors_path).unwrap_or_default()
        );
        container
    }

    /// The container's init process, as the host sees it.
    pub fn pid(&self) -> u32 {
        let out = sh("runc", &["state", &self.id]);
        let state: Value = serde_json::from_slice(&out.stdout).expect("runc state is JSON");
        state["pid"].as_u64().expect("pid") as u32
    }

    /// Waits until the container's programs create `/NAME` in its root.
    pub fn wait_for_file(&self, name: &str, limit: Duration) {
        let path = self.bundle.join("rootfs").join(name);
        let start = Instant::now();
        while !path.exists() {
            assert!(
                start.elapsed() < limit,
                "{} did not appear in {limit:?}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let mut live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        let mounts = cgroup_mounts();
        // runc removes the container's own cgroup; the pod's is the kubelet's, here ours.
        for dir in [&self.cgroup, &self.pod_cgroup] {
            for m in &mounts {
                let _ = std::fs::remove_dir(m.join(dir.trim_start_matches('/')));
            }
        }
        *live -= 1;
        if *live == 0 {
            for dir in &self.parents {
                for m in &mounts {
                    let _ = std::fs::remove_dir(m.join(dir.trim_start_matches('/')));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}

/// Where every cgroup hierarchy is mounted.
fn cgroup_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let point = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(point))
        })
        .collect()
}

/// A root filesystem of busybox-static and the applets the tests use.
fn make_rootfs(root: &Path) {
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for dir in ["proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is not installed (cargo xtask setup)");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "nc", "sleep", "touch"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
}

/// The kubelet's log tree for one container: `/var/log/pods/<ns>_<pod>_<uid>/<container>/0.log`
/// and the `/var/log/containers/<pod>_<ns>_<container>-<id>.log` link to it.
pub struct KubeletLogs {
    pod_dir: PathBuf,
    link: PathBuf,
}

const PODS: &str = "/var/log/pods";
const CONTAINERS: &str = "/var/log/containers";

impl KubeletLogs {
    pub fn new(pod: &PodSpec, container_id: &str) -> KubeletLogs {
        let _live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pod_dir = Path::new(PODS).join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid));
        let log = pod_dir.join(&pod.container).join("0.log");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(&log, "").unwrap();
        std::fs::create_dir_all(CONTAINERS).unwrap();
        let link = Path::new(CONTAINERS).join(format!(
            "{}_{}_{}-{container_id}.log",
            pod.name, pod.namespace, pod.container
        ));
        std::os::unix::fs::symlink(&log, &link).unwrap();
        KubeletLogs { pod_dir, link }
    }
}

impl Drop for KubeletLogs {
    fn drop(&mut self) {
        let _live = LIVE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = std::fs::remove_file(&self.link);
        let _ = std::fs::remove_dir_all(&self.pod_dir);
        // Only when empty: the host (or another test binary) may have its own.
        let _ = std::fs::remove_dir(CONTAINERS);
        let _ = std::fs::remove_dir(PODS);
    }
}
