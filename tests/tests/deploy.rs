//! The deployment files, checked rather than trusted (issue 10's DaemonSet and image,
//! issue 8's systemd unit). Every test reads the shipped files themselves
//! (`deploy/daemonset.yaml`, `deploy/seccomp/conntrace.json`, `deploy/conntrace.service`),
//! so that a change there is what gets tested:
//! - the manifest validates against Kubernetes' schemas, and checkov finds nothing but
//!   the exceptions listed here, each with its reason in the manifest;
//! - the DaemonSet's container, run by runc as a runtime would (its capabilities, seccomp
//!   profile, read-only root, no new privileges, host PID namespace, own network
//!   namespace, host mounts), traces a non-root client's connect with its executable,
//!   resolves a container's pod through the mounted cgroup and kubelet trees, and
//!   answers its liveness probe; `diagnose` with the same capabilities checks a listener;
//! - the unit is rated below the exposure threshold, stops restarting on setup errors, and
//!   its user and ambient capabilities trace and resolve pods;
//! - the image build gives the same digest twice.
use std::{
    collections::BTreeSet, os::unix::fs::MetadataExt as _, process::Command, time::Duration,
};

use harness::{
    container::{Annotations, Container, Driver, KubeletLogs, PodSpec},
    deploy::{
        Pod, cap_mask, cap_name, liveness_command, manifest_capabilities, proc_caps, proc_status,
        repo_file, setpriv_as_root, setpriv_as_user, unit_list, unit_service,
    },
    diagnose::Diagnose,
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::{Tracer, records},
};
use serde_json::{Value, json};

/// checkov's findings the manifest accepts (its `checkov.io/skip*` annotations say why).
/// A finding not listed here fails the test, and so does a listed one that disappears.
const ACCEPTED_CHECKOV_FINDINGS: [&str; 7] = [
    "CKV_K8S_15", // image pull policy: IfNotPresent, for images imported on the nodes
    "CKV_K8S_17", // hostPID
    "CKV_K8S_23", // uid 0
    "CKV_K8S_25", // added capabilities
    "CKV_K8S_31", // a Localhost seccomp profile rather than runtime/default
    "CKV_K8S_40", // uid 0
    "CKV_K8S_43", // a tag rather than a digest
];

/// The highest `systemd-analyze security` exposure the unit may have: "OK" is below 2.0
/// in systemd's scale (0 to 10). The unit rates 1.6 (the capabilities and the three
/// system calls conntrace needs are what is left); the root unit it replaced rated 7.3.
const UNIT_EXPOSURE_LIMIT: f64 = 2.0;

/// The Kubernetes versions the manifest is checked against: the oldest it needs
/// (`procMount`, `seccompProfile` fields, `pod-security` labels), and the validator's newest.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

fn output_text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn the_manifest_validates_against_kubernetes_schemas() {
    let manifest = repo_file("deploy/daemonset.yaml");
    for version in KUBERNETES_VERSIONS {
        let out = Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .arg(&manifest)
            .output()
            .expect("kubernetes-validate (cargo xtask setup installs it)");
        let text = output_text(&out);
        assert!(out.status.success(), "kubernetes {version}:\n{text}");
        for kind in ["namespace", "serviceaccount", "networkpolicy", "daemonset"] {
            assert!(
                text.contains(&format!("passed for resource {kind}/")),
                "{kind} not validated against {version}:\n{text}"
            );
        }
    }
}

#[test]
fn checkov_finds_nothing_but_the_accepted_exceptions() {
    let out = Command::new("checkov")
        .args([
            "--framework",
            "kubernetes",
            "--output",
            "json",
            "--skip-download",
        ])
        .arg("--file")
        .arg(repo_file("deploy/daemonset.yaml"))
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("checkov (cargo xtask setup installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("checkov printed no JSON ({e}):\n{}", output_text(&out)));
    let results = &report["results"];
    let ids = |key: &str| -> BTreeSet<String> {
        results[key]
            .as_array()
            .unwrap_or_else(|| panic!("no {key} in checkov's report: {report:#}"))
            .iter()
            .map(|c| c["check_id"].as_str().expect("check_id").to_owned())
            .collect()
    };
    let failed = ids("failed_checks");
    assert!(failed.is_empty(), "checkov findings: {failed:?}");
    let skipped = ids("skipped_checks");
    let accepted: BTreeSet<String> = ACCEPTED_CHECKOV_FINDINGS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    assert_eq!(
        skipped, accepted,
        "the manifest's accepted findings changed"
    );
    // Enough was checked for the answer to mean something.
    assert!(ids("passed_checks").len() >= 50, "{report:#}");
}

#[test]
fn the_unit_is_rated_below_the_exposure_threshold() {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(repo_file("deploy/conntrace.service"))
        .output()
        .expect("systemd-analyze (cargo xtask setup installs it)");
    let text = output_text(&out);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for conntrace.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score < UNIT_EXPOSURE_LIMIT,
        "exposure {score} is not below {UNIT_EXPOSURE_LIMIT}:\n{text}"
    );
}

#[test]
fn the_unit_stops_restarting_on_setup_errors() {
    let unit = unit_service();
    assert_eq!(unit_list(&unit, "Restart"), ["on-failure"]);
    // Usage, privileges, kernel, no eBPF object: README's exit statuses 2, 3, 4 and 6.
    let readme = std::fs::read_to_string(repo_file("README.md")).expect("README");
    for (status, meaning) in [
        ("2", "bad command line"),
        ("3", "not privileged"),
        ("4", "the kernel lacks"),
        ("6", "this binary was built without its eBPF programs"),
    ] {
        assert!(
            readme.contains(&format!("| {status} | {meaning}")),
            "README no longer says {status} is {meaning:?}"
        );
    }
    assert_eq!(
        unit_list(&unit, "RestartPreventExitStatus"),
        ["2", "3", "4", "6"]
    );
    // Not root, and the capabilities it keeps are the ones it is given.
    assert_eq!(unit_list(&unit, "DynamicUser"), ["yes"]);
    assert!(!unit.contains_key("User"), "{unit:?}");
    assert_eq!(
        unit_list(&unit, "AmbientCapabilities"),
        unit_list(&unit, "CapabilityBoundingSet")
    );
}

/// Waits for conntrace's record of a refused connect to `port` and returns it.
fn refused_record(tracer: &mut Tracer, port: u16) -> Value {
    let (found, seen) = tracer.wait_for(Duration::from_secs(15), |r| {
        r["event"]["reason"] == "refused" && r["destination"]["port"] == port
    });
    found.unwrap_or_else(|| panic!("no refused record for port {port}: {seen:#?}"))
}

/// Python as nobody, refused, then alive for a while: its executable (read after the
/// record, while it lives) can only be read with CAP_SYS_PTRACE.
fn client_as_nobody(pair: &Pair, port: u16) {
    let code = format!(
        "import socket, time\n\
         try:\n    socket.create_connection(('{SERVER_V4}', {port}), timeout=2)\n\
         except ConnectionRefusedError:\n    print('refused', flush=True)\n\
         time.sleep(3)\n"
    );
    let out = pair
        .client
        .command(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &code,
        ])
        .output()
        .expect("python3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "refused",
        "{out:?}"
    );
}

fn assert_client_by_nobody(r: &Value) {
    assert_eq!(r["process"]["name"], "python3", "{r}");
    assert_eq!(r["user"]["id"], "65534", "{r}");
    let exe = r["process"]["executable"]
        .as_str()
        .unwrap_or_else(|| panic!("no executable: {r}"));
    assert!(exe.contains("/python3"), "{r}");
}

/// The container's shell: waits for `/go`, then one refused connect from `nc`.
fn connect_when_told() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!(
            "while [ ! -e /go ]; do sleep 0.1; done; nc {SERVER_V4} 8081 </dev/null; touch /done; exec sleep 600"
        ),
    ]
}

fn assert_pod(r: &Value, pod: &PodSpec, container: &Container) {
    let p = &r["process"];
    assert_eq!(p["name"], "nc", "{r}");
    assert_eq!(p["container"]["id"], container.id.as_str(), "{r}");
    assert_eq!(p["container"]["name"], pod.container.as_str(), "{r}");
    assert_eq!(p["pod"]["name"], pod.name.as_str(), "{r}");
    assert_eq!(p["pod"]["namespace"], pod.namespace.as_str(), "{r}");
    assert_eq!(p["pod"]["uid"], pod.uid.as_str(), "{r}");
}

#[test]
fn the_daemonset_pod_traces_resolves_pods_and_answers_its_probes() {
    require_root();
    let pair = Pair::new("ds-pod");
    let pod_spec = PodSpec::new("shop", "web-7d9f8b6c5d-x2k4p", "app");
    let args = connect_when_told();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // The workload first, so that the kubelet's log tree exists for the agent to mount.
    let workload = Container::run(
        &pod_spec,
        Driver::Cgroupfs,
        Annotations::None,
        &pair.client,
        &args,
    );
    let _logs = KubeletLogs::new(&pod_spec, &workload.id);
    let netns = std::fs::metadata(pair.client.path())
        .expect("netns")
        .ino()
        .to_string();
    let pod = Pod::start(&["--all", "--netns", &netns]);
    let pid = pod.pid();
    let want = cap_mask(&manifest_capabilities());
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(proc_caps(pid, set), want, "{set} of conntrace in the pod");
    }
    assert_eq!(proc_caps(pid, "CapAmb"), 0);
    assert_eq!(proc_status(pid, "NoNewPrivs"), "1");
    assert_eq!(proc_status(pid, "Seccomp"), "2", "a seccomp filter");
    // The probe the kubelet runs, as it runs it: in the container.
    let (status, err) = pod.exec(&liveness_command());
    assert_eq!(status, 0, "liveness probe: {err}");
    client_as_nobody(&pair, 8080);
    std::fs::write(workload.bundle.join("rootfs/go"), "").expect("tell the workload");
    workload.wait_for_file("done", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let (status, all, stderr) = pod.stop();
    assert_eq!(status, 0, "conntrace stops cleanly on SIGTERM: {stderr}");
    let refused = records(&all, "connect");
    let client = refused
        .iter()
        .find(|r| r["destination"]["port"] == 8080)
        .unwrap_or_else(|| panic!("no record of the client's connect: {all:#?}"));
    assert_client_by_nobody(client);
    let nc = refused
        .iter()
        .find(|r| r["destination"]["port"] == 8081)
        .unwrap_or_else(|| panic!("no record of the workload's connect: {all:#?}"));
    assert_pod(nc, &pod_spec, &workload);
    // The node's name, not the pod's own hostname.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert_eq!(nc["host"]["name"], host.trim(), "{nc}");
    assert!(stderr.contains("connect hook"), "{stderr}");
}

#[test]
fn a_stuck_collector_fails_the_probe() {
    require_root();
    let pair = Pair::new("ds-stuck");
    let netns = std::fs::metadata(pair.client.path())
        .expect("netns")
        .ino()
        .to_string();
    let pod = Pod::start(&["--netns", &netns]);
    let probe = liveness_command();
    assert_eq!(pod.exec(&probe).0, 0, "alive at first");
    // SIGSTOP stands for a collector stuck anywhere: nothing of it runs any more.
    let pid = pod.pid();
    // SAFETY: kill() with a valid pid and signal.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let max_age: u64 = probe
        .iter()
        .find_map(|a| a.strip_prefix("--max-age="))
        .and_then(|s| s.parse().ok())
        .expect("the probe's --max-age=");
    std::thread::sleep(Duration::from_secs(max_age + 2));
    let (status, err) = pod.exec(&probe);
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert_eq!(status, 1, "{err}");
    assert!(err.contains("the collector is stuck"), "{err}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(pod.exec(&probe).0, 0, "alive again once it runs");
    let (status, _, stderr) = pod.stop();
    assert_eq!(status, 0, "{stderr}");
}

#[test]
fn diagnose_checks_a_listener_with_the_daemonsets_capabilities() {
    require_root();
    let caps = manifest_capabilities();
    let wrapper = setpriv_as_root(&caps);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let pair = Pair::on_unique_subnet("ds-diag");
    // A process in the server's namespace: the check reads its /proc/PID/net.
    let _server = pair.serve(&["--port", "80"]);
    let _bystander = pair.spawn_client(&["serve", "--port", "9"]);
    let run = Diagnose::start_as(&wrapper, &pair.client.path(), 30, &[]);
    pair.client(&[
        "connect",
        "--addr",
        &pair.server_v4,
        "--port",
        "81",
        "--count",
        "2",
    ]);
    let report = run.stop();
    assert_eq!(report.status, 1, "failures found: {:#}", report.doc);
    let f = report.finding(&format!("{}:81", pair.server_v4));
    assert_eq!(f["cause"], "no_listener", "{f:#}");
    let server_ns = std::fs::metadata(pair.server.path()).expect("netns").ino();
    assert_eq!(
        f["evidence"]["listener"],
        json!({"checked": true, "status": "checked", "netns": [server_ns],
               "listening": false, "elsewhere": []}),
        "{f:#}"
    );
}

#[test]
fn the_units_user_and_capabilities_trace_and_resolve_pods() {
    require_root();
    let unit = unit_service();
    let caps = unit_list(&unit, "AmbientCapabilities");
    // A uid from systemd's DynamicUser range that nothing else uses.
    let uid = 61_184 + (std::process::id() % 4_000);
    let mut wrapper = Vec::new();
    if unit_list(&unit, "PrivateNetwork") == ["yes"] {
        wrapper.extend(["unshare".to_owned(), "--net".to_owned(), "--".to_owned()]);
    }
    wrapper.extend(setpriv_as_user(uid, &caps));
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let pair = Pair::new("unit");
    let pod_spec = PodSpec::new("shop", "api-0", "server");
    let args = connect_when_told();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let workload = Container::run(
        &pod_spec,
        Driver::Systemd,
        Annotations::Containerd,
        &pair.client,
        &args,
    );
    let mut tracer = Tracer::start_as(&wrapper, &pair.client.path(), &[]);
    let pid = tracer.pid();
    assert_eq!(
        proc_status(pid, "Uid").split_whitespace().next(),
        Some(uid.to_string().as_str())
    );
    let want = cap_mask(
        &caps
            .iter()
            .map(|c| cap_name(c.trim_start_matches("CAP_")))
            .collect::<Vec<_>>(),
    );
    for set in ["CapEff", "CapPrm", "CapAmb"] {
        assert_eq!(
            proc_caps(pid, set),
            want,
            "{set} of conntrace as the unit's user"
        );
    }
    client_as_nobody(&pair, 8080);
    assert_client_by_nobody(&refused_record(&mut tracer, 8080));
    // The bundle's annotations: readable only with CAP_DAC_READ_SEARCH (runc's state is
    // root's).
    std::fs::write(workload.bundle.join("rootfs/go"), "").expect("tell the workload");
    assert_pod(&refused_record(&mut tracer, 8081), &pod_spec, &workload);
    let all = tracer.stop();
    assert!(all.iter().any(|r| r["conntrace"]["final"] == true));
}

#[test]
fn the_image_build_is_reproducible() {
    require_root();
    let xtask = harness::built_binary("xtask", "CONNTRACE_XTASK_BIN");
    let dir = std::env::temp_dir().join(format!("ct-image-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _cleanup = RemoveDir(dir.clone());
    let binary = dir.join("conntrace");
    std::fs::copy(harness::tracer::conntrace_bin(), &binary).expect("copy");
    // One name for every build: the archive's index names the image.
    let tag = format!("localhost/conntrace-repro-{}:test", std::process::id());
    let build = |name: &str, epoch: &str| -> (String, Vec<u8>) {
        let archive = dir.join(format!("{name}.tar"));
        let out = Command::new(&xtask)
            .args(["image", "--binary"])
            .arg(&binary)
            .args(["--tag", &tag, "--out"])
            .arg(&archive)
            .env("SOURCE_DATE_EPOCH", epoch)
            .output()
            .expect("xtask image");
        let _ = Command::new("podman")
            .args(["rmi", "--force", &tag])
            .output();
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        let digest = text
            .lines()
            .find_map(|l| l.strip_prefix("manifest: "))
            .unwrap_or_else(|| panic!("no digest in:\n{text}"))
            .trim()
            .to_owned();
        (digest, std::fs::read(&archive).expect("archive"))
    };
    let (first, first_archive) = build("a", "1700000000");
    // The same binary, written later: other mtimes, same image.
    std::thread::sleep(Duration::from_secs(1));
    std::fs::copy(harness::tracer::conntrace_bin(), &binary).expect("copy again");
    let (second, second_archive) = build("b", "1700000000");
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(first, second, "same inputs, same image digest");
    assert!(
        first_archive == second_archive,
        "same inputs, same archive, byte for byte"
    );
    let (other, _) = build("c", "1800000000");
    assert_ne!(first, other, "SOURCE_DATE_EPOCH is the image's time");
    eprintln!("image digest {first}, twice; {other} with another SOURCE_DATE_EPOCH");
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
