//! The shipped deployment files, read the way the tests need them, so that a test cannot
//! drift from what is shipped: the DaemonSet's container (capabilities, arguments, mounts,
//! probes, seccomp profile) and the systemd unit's user and capabilities. And the
//! DaemonSet's pod as runc runs it: the manifest's capabilities, seccomp profile,
//! read-only root, no new privileges, host PID namespace, its own network namespace and
//! the manifest's host mounts.
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{netns::sh, run::RawRun, tracer::conntrace_bin};

/// A file of the repository (`deploy/daemonset.yaml`, ...).
pub fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .join(relative)
}

/// Every document of `deploy/daemonset.yaml`, as JSON values.
pub fn manifest() -> Vec<Value> {
    let path = repo_file("deploy/daemonset.yaml");
    let text = std::fs::read_to_string(&path).expect("deploy/daemonset.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            <Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

/// The manifest's document of this kind.
pub fn manifest_object(kind: &str) -> Value {
    manifest()
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in deploy/daemonset.yaml"))
}

/// The DaemonSet's pod spec and its only container.
pub fn pod_spec() -> (Value, Value) {
    let spec = manifest_object("DaemonSet")["spec"]["template"]["spec"].clone();
    let containers = spec["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    let container = containers[0].clone();
    (spec, container)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The capabilities the container adds (`BPF`, ...), after dropping ALL, which the
/// manifest must do.
pub fn manifest_capabilities() -> Vec<String> {
    let (_, container) = pod_spec();
    let caps = &container["securityContext"]["capabilities"];
    assert_eq!(strings(&caps["drop"]), ["ALL"], "drop ALL first: {caps}");
    strings(&caps["add"])
}

/// The container's arguments.
pub fn manifest_args() -> Vec<String> {
    strings(&pod_spec().1["args"])
}

/// The container's environment, `NAME=value`, with the downward API's `spec.nodeName`
/// as this host's name.
pub fn manifest_env() -> Vec<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    pod_spec().1["env"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name");
            let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("spec.nodeName") => host.trim().to_owned(),
                Some(other) => panic!("{name}: the harness knows no {other}"),
                None => e["value"].as_str().expect("a value").to_owned(),
            };
            format!("{name}={value}")
        })
        .collect()
}

/// The liveness probe's command.
pub fn liveness_command() -> Vec<String> {
    strings(&pod_spec().1["livenessProbe"]["exec"]["command"])
}

/// The seccomp profile the container names (Localhost), from `deploy/seccomp/`.
pub fn seccomp_profile() -> Value {
    let (spec, container) = pod_spec();
    let profile = &container["securityContext"]["seccompProfile"];
    assert_eq!(profile["type"], "Localhost", "{profile}");
    assert_eq!(
        spec["securityContext"]["seccompProfile"], *profile,
        "pod and container name the same profile"
    );
    let name = profile["localhostProfile"]
        .as_str()
        .expect("a profile name");
    let path = repo_file(&format!("deploy/seccomp/{name}"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the seccomp profile"))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A host path the container mounts, where, and how.
#[derive(Debug, Clone)]
pub struct HostMount {
    pub host: String,
    pub container: String,
    pub read_only: bool,
    /// `HostToContainer` (rslave) rather than none (rprivate).
    pub from_host: bool,
}

/// The container's hostPath mounts, and the emptyDir mount points.
pub fn manifest_mounts() -> (Vec<HostMount>, Vec<String>) {
    let (spec, container) = pod_spec();
    let volumes: BTreeMap<String, Value> = spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .map(|v| (v["name"].as_str().expect("name").to_owned(), v.clone()))
        .collect();
    let mut host = Vec::new();
    let mut empty = Vec::new();
    for m in container["volumeMounts"].as_array().expect("volumeMounts") {
        let name = m["name"].as_str().expect("name");
        let volume = &volumes[name];
        let path = m["mountPath"].as_str().expect("mountPath").to_owned();
        if let Some(source) = volume["hostPath"]["path"].as_str() {
            host.push(HostMount {
                host: source.to_owned(),
                container: path,
                read_only: m["readOnly"] == true,
                from_host: m["mountPropagation"] == "HostToContainer",
            });
        } else {
            assert!(
                volume["emptyDir"].is_object(),
                "{name}: hostPath or emptyDir"
            );
            empty.push(path);
        }
    }
    (host, empty)
}

/// `BPF` → `CAP_BPF`.
pub fn cap_name(k8s: &str) -> String {
    format!("CAP_{}", k8s.to_uppercase())
}

/// `setpriv` arguments that run conntrace as uid 0 with exactly `caps` (Kubernetes'
/// names or `CAP_*`), as a container runtime gives them to a root process: bounding,
/// permitted and effective sets, no inheritable or ambient ones, no new privileges.
pub fn setpriv_as_root(caps: &[String]) -> Vec<String> {
    vec![
        "setpriv".into(),
        "--reuid=0".into(),
        "--regid=0".into(),
        "--clear-groups".into(),
        "--inh-caps=-all".into(),
        format!("--bounding-set=-all,{}", setpriv_caps(caps)),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

/// `setpriv` arguments that run conntrace as `uid` with `caps` as ambient capabilities,
/// as systemd runs a unit with `User=`/`DynamicUser=` and `AmbientCapabilities=`.
pub fn setpriv_as_user(uid: u32, caps: &[String]) -> Vec<String> {
    let list = setpriv_caps(caps);
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        format!("--inh-caps=-all,{list}"),
        format!("--ambient-caps=-all,{list}"),
        format!("--bounding-set=-all,{list}"),
        "--no-new-privs".into(),
        "--".into(),
    ]
}

fn setpriv_caps(caps: &[String]) -> String {
    caps.iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The capabilities with these names as a bit mask (`CapEff:` in /proc/PID/status).
pub fn cap_mask(caps: &[String]) -> u64 {
    caps.iter()
        .map(|c| {
            let name = cap_name(c.trim_start_matches("CAP_"));
            let bit = CAP_BITS
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap_or_else(|| panic!("unknown capability {name}"))
                .1;
            1u64 << bit
        })
        .fold(0, |a, b| a | b)
}

/// The capabilities a deployment file may name (linux/capability.h).
const CAP_BITS: [(&str, u32); 11] = [
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_NET_ADMIN", 12),
    ("CAP_IPC_LOCK", 14),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYSLOG", 34),
    ("CAP_PERFMON", 38),
    ("CAP_BPF", 39),
    ("CAP_CHECKPOINT_RESTORE", 40),
];

/// A process's capability sets and ids, from /proc/PID/status.
pub fn proc_status(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

/// A capability set field as a mask.
pub fn proc_caps(pid: u32, field: &str) -> u64 {
    u64::from_str_radix(&proc_status(pid, field), 16).expect("hex")
}

/// The `[Service]` settings of `deploy/conntrace.service`: each key with its values in
/// order (a key may be given more than once).
pub fn unit_service() -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(repo_file("deploy/conntrace.service")).expect("the unit");
    let mut section = "";
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
        {
            out.entry(k.trim().to_owned())
                .or_default()
                .push(v.trim().to_owned());
        }
    }
    out
}

/// One value of a unit key, split at spaces.
pub fn unit_list(unit: &BTreeMap<String, Vec<String>>, key: &str) -> Vec<String> {
    let values = unit
        .get(key)
        .unwrap_or_else(|| panic!("{key}= is not in the unit"));
    assert_eq!(values.len(), 1, "{key}= given once: {values:?}");
    values[0].split_whitespace().map(str::to_owned).collect()
}

/// The DaemonSet's container, run by runc from the manifest: uid 0, the manifest's
/// capabilities (bounding, permitted, effective), its seccomp profile, no new
/// privileges, a read-only root holding only conntrace, the host's PID namespace, a
/// network namespace of its own, runc's default masked and read-only /proc paths (as
/// containerd's), a tmpfs for each emptyDir, and each hostPath mount that exists on this
/// host (the others are named in `skipped`).
pub struct Pod {
    pub id: String,
    bundle: PathBuf,
    pub run: Option<RawRun>,
    pub skipped: Vec<String>,
}

impl Pod {
    /// Starts the container with the manifest's arguments followed by `extra`, and waits
    /// until conntrace has attached its programs.
    pub fn start(extra: &[&str]) -> Pod {
        let id = format!("ct-pod-{}-{}", std::process::id(), unique());
        let bundle = std::env::temp_dir().join(&id);
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).expect("rootfs");
        let mut pod = Pod {
            id,
            bundle,
            run: None,
            skipped: Vec::new(),
        };
        std::fs::copy(conntrace_bin(), rootfs.join("conntrace")).expect("copy conntrace");
        sh(
            "runc",
            &["spec", "--bundle", pod.bundle.to_str().expect("path")],
        );
        let config_path = pod.bundle.join("config.json");
        let mut config: Value =
            serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
                .expect("config is JSON");
        let mut args = vec!["/conntrace".to_owned()];
        args.extend(manifest_args());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        pod.configure(&mut config, &args);
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("JSON"),
        )
        .expect("write config");
        let mut cmd = Command::new("runc");
        cmd.args(["run", "--bundle"])
            .arg(&pod.bundle)
            .arg(&pod.id)
            .stdin(Stdio::null());
        pod.run = Some(RawRun::start(cmd, "attached"));
        pod
    }

    fn configure(&mut self, config: &mut Value, args: &[String]) {
        let (spec, container) = pod_spec();
        let sc = &container["securityContext"];
        assert_eq!(
            spec["hostPID"], true,
            "the pod shares the host's PID namespace"
        );
        assert_ne!(spec["hostNetwork"], true, "no hostNetwork");
        let caps: Vec<String> = manifest_capabilities()
            .iter()
            .map(|c| cap_name(c))
            .collect();
        config["process"]["args"] = json!(args);
        config["process"]["terminal"] = json!(false);
        config["process"]["user"] = json!({
            "uid": sc["runAsUser"].as_u64().expect("runAsUser"),
            "gid": sc["runAsGroup"].as_u64().expect("runAsGroup"),
        });
        config["process"]["noNewPrivileges"] = json!(sc["allowPrivilegeEscalation"] == false);
        config["process"]["capabilities"] = json!({
            "bounding": caps, "effective": caps, "permitted": caps,
            "inheritable": [], "ambient": [],
        });
        // A dynamically linked test build needs the host's libraries; the image's
        // binary is static and needs none of this.
        let mut env = vec!["PATH=/".to_owned(), "NO_COLOR=1".to_owned()];
        env.extend(manifest_env());
        config["process"]["env"] = json!(env);
        config["root"]["readonly"] = json!(sc["readOnlyRootFilesystem"] == true);
        config["linux"]["seccomp"] = seccomp_profile();
        config["linux"]["cgroupsPath"] = json!(format!("/{}", self.id));
        if let Some(ns) = config["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "pid");
        }
        let (host_mounts, empty_dirs) = manifest_mounts();
        let mounts = config["mounts"].as_array_mut().expect("mounts");
        // A mount of the manifest's replaces the runtime's default at the same place.
        mounts.retain(|m| {
            !host_mounts
                .iter()
                .any(|h| m["destination"] == h.container.as_str())
        });
        for dir in ["/usr", "/lib", "/lib64"] {
            if Path::new(dir).is_dir() && !Path::new(dir).is_symlink() {
                mounts.push(bind(dir, dir, true, false));
            }
        }
        self.link_merged_usr();
        for path in empty_dirs {
            mounts.push(
                json!({"destination": path, "type": "tmpfs", "source": "tmpfs",
                               "options": ["nosuid", "nodev", "noexec", "size=1m"]}),
            );
        }
        for m in host_mounts {
            if Path::new(&m.host).exists() {
                mounts.push(bind(&m.host, &m.container, m.read_only, m.from_host));
            } else {
                self.skipped.push(m.host.clone());
            }
        }
        if !self.skipped.is_empty() {
            eprintln!(
                "pod: not on this host, so not mounted (the runtimes that own them do not run here): {}",
                self.skipped.join(", ")
            );
        }
    }

    /// `/lib -> usr/lib` in the rootfs where the host merged /usr, so that the test
    /// build's interpreter is found.
    fn link_merged_usr(&self) {
        let rootfs = self.bundle.join("rootfs");
        for dir in ["lib", "lib64", "bin"] {
            let host = Path::new("/").join(dir);
            if let Ok(target) = std::fs::read_link(&host) {
                std::os::unix::fs::symlink(target, rootfs.join(dir)).expect("symlink");
            }
        }
    }

    /// Runs a command in the container (as the kubelet runs an exec probe: the same
    /// user, capabilities and seccomp profile) and returns its exit status and stderr.
    pub fn exec(&self, args: &[String]) -> (i32, String) {
        let out = Command::new("runc")
            .args(["exec", &self.id])
            .args(args)
            .output()
            .expect("runc exec");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// conntrace's pid, as the host sees it.
    pub fn pid(&self) -> u32 {
        let out = sh("runc", &["state", &self.id]);
        let state: Value = serde_json::from_slice(&out.stdout).expect("runc state is JSON");
        u32::try_from(state["pid"].as_u64().expect("pid")).expect("a pid")
    }

    /// Stops it as the kubelet does (SIGTERM) and returns its records and stderr.
    pub fn stop(mut self) -> (i32, Vec<Value>, String) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "TERM"])
            .status();
        let out = self.run.take().expect("running").wait();
        let records = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        (
            out.status.code().unwrap_or(-1),
            records,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn bind(source: &str, destination: &str, read_only: bool, from_host: bool) -> Value {
    let mut options = vec!["rbind", if from_host { "rslave" } else { "rprivate" }];
    if read_only {
        options.push("ro");
    }
    json!({"destination": destination, "type": "bind", "source": source, "options": options})
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
        drop(self.run.take());
        let _ = std::fs::remove_dir_all(&self.bundle);
    }
}
