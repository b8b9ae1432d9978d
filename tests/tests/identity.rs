//! Every record of a process in a container carries its container and pod (issue 10),
//! tested with real containers: runc runs a busybox-static rootfs with a kubelet-style
//! cgroup path, under both of the kubelet's cgroup drivers, beside a kubelet-style log
//! tree, inside the client namespace of a scenario. The process that connects (busybox
//! `nc`) exits right after its connect is refused, and conntrace is held (SIGSTOP)
//! until it is gone: its identity can only come from the cgroup the kernel recorded.
use std::time::Duration;

use harness::{
    container::{Annotations, Container, Driver, KubeletLogs, PodSpec},
    netns::{Pair, SERVER_V4},
    require_root,
    tracer::{Tracer, final_stats, records},
};
use serde_json::Value;

/// The container's shell: one refused connect from `nc`, then a marker, then it waits.
fn connect_then_wait() -> Vec<String> {
    vec![
        "/bin/sh".into(),
        "-c".into(),
        format!("nc {SERVER_V4} 8080 </dev/null; touch /done; exec sleep 600"),
    ]
}

fn run(pod: &PodSpec, driver: Driver, annotations: Annotations, pair: &Pair) -> Container {
    let args = connect_then_wait();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Container::run(pod, driver, annotations, &pair.client, &args)
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// Asserts the identity of a record from `container` of `pod`.
fn assert_identity(
    r: &Value,
    pod: &PodSpec,
    container: &Container,
    runtime: &str,
    workload: (&str, &str),
) {
    let p = &r["process"];
    assert_eq!(p["name"], "nc", "{r}");
    assert_eq!(p["container"]["id"], container.id.as_str(), "{r}");
    assert_eq!(p["container"]["runtime"], runtime, "{r}");
    assert_eq!(p["container"]["name"], pod.container.as_str(), "{r}");
    assert_eq!(p["pod"]["name"], pod.name.as_str(), "{r}");
    assert_eq!(p["pod"]["namespace"], pod.namespace.as_str(), "{r}");
    assert_eq!(p["pod"]["uid"], pod.uid.as_str(), "{r}");
    assert_eq!(p["pod"]["workload"]["kind"], workload.0, "{r}");
    assert_eq!(p["pod"]["workload"]["name"], workload.1, "{r}");
    // Nothing about the agent's own pod at the top level, where log shippers write theirs.
    for shipper_field in ["container", "kubernetes", "k8s", "orchestrator"] {
        assert!(
            r.get(shipper_field).is_none(),
            "{shipper_field} at the top level: {r}"
        );
    }
}

/// A process that connected and exited before conntrace looked at procfs.
fn exited_process_keeps_its_pod(
    pod: &PodSpec,
    driver: Driver,
    annotations: Annotations,
    runtime: &str,
    workload: (&str, &str),
) {
    require_root();
    let pair = Pair::new("id");
    let mut tracer = Tracer::start(&pair.client.path(), &[]);
    tracer.pause();
    let container = run(pod, driver, annotations, &pair);
    // One source of names at a time, so that each is shown to work: the bundle's
    // annotations, or else the kubelet's log tree.
    let _logs = (annotations == Annotations::None).then(|| KubeletLogs::new(pod, &container.id));
    container.wait_for_file("done", Duration::from_secs(20));
    tracer.resume();
    let (found, seen) = tracer.wait_for(Duration::from_secs(20), |r| r["process"]["name"] == "nc");
    let r = found.unwrap_or_else(|| panic!("no record from nc in the container: {seen:#?}"));
    assert_eq!(r["event"]["reason"], "refused", "{r}");
    assert_identity(&r, pod, &container, runtime, workload);
    // procfs had nothing left to say: the identity came from the kernel's cgroup id.
    assert_eq!(r["conntrace"]["details_missing"], "exited", "{r}");
    assert!(r["process"].get("executable").is_none(), "{r}");
}

/// The systemd driver's naming (the runtime is in the scope's name); the names come
/// from the bundle's annotations alone (no log tree).
#[test]
fn systemd_driver_containerd_naming_and_annotations() {
    let pod = PodSpec::new("ct-shop", "web-7d9f8b6c5d-x2k4p", "app");
    exited_process_keeps_its_pod(
        &pod,
        Driver::Systemd,
        Annotations::Containerd,
        "containerd",
        ("deployment", "web"),
    );
}

/// The cgroupfs driver names the container by its bare id (no runtime in the path): the
/// runtime comes from where its bundle is (runc's state), the names from the kubelet's
/// log tree alone, and a static pod's uid has no dashes.
#[test]
fn cgroupfs_driver_static_pod_names_from_the_log_tree() {
    let pod = PodSpec::static_pod("kube-system", &format!("etcd-{}", host_name()), "etcd");
    exited_process_keeps_its_pod(
        &pod,
        Driver::Cgroupfs,
        Annotations::None,
        "runc",
        ("static_pod", "etcd"),
    );
}

/// `--pod`, `--namespace` and `--container` keep the container's records and drop the
/// host process's beside it (same network namespace, same destination).
#[test]
fn pod_namespace_and_container_filters() {
    require_root();
    let pair = Pair::new("idf");
    let pod = PodSpec::new("ct-pay", "api-0", "api");
    let client = pair.client.path();
    let unfiltered = Tracer::start(&client, &[]);
    let by_pod = Tracer::start(&client, &["--pod", "api-*"]);
    let by_container = Tracer::start(&client, &["--container", "api", "--namespace", "ct-pay"]);
    let other_namespace = Tracer::start(&client, &["--namespace", "ct-elsewhere"]);
    let args = [
        "/bin/sh",
        "-c",
        &format!(
            "touch /ready; while [ ! -e /go ]; do sleep 0.05; done; nc {SERVER_V4} 8080 </dev/null; touch /done; exec sleep 600"
        ),
    ];
    let container = Container::run(
        &pod,
        Driver::Systemd,
        Annotations::Containerd,
        &pair.client,
        &args,
    );
    let _logs = KubeletLogs::new(&pod, &container.id);
    container.wait_for_file("ready", Duration::from_secs(20));
    std::fs::write(container.bundle.join("rootfs/go"), "").unwrap();
    container.wait_for_file("done", Duration::from_secs(20));
    let host = pair.client(&["connect", "--addr", SERVER_V4, "--port", "8080"]);
    let connects = |t: Tracer| -> (Vec<Value>, Value) {
        let all = t.stop_after(Duration::from_millis(300));
        let stats = final_stats(&all).clone();
        (
            records(&all, "connect").into_iter().cloned().collect(),
            stats,
        )
    };
    let (all, _) = connects(unfiltered);
    let names: Vec<&str> = all
        .iter()
        .filter_map(|r| r["process"]["name"].as_str())
        .collect();
    assert!(
        names.contains(&"nc") && names.contains(&"ct-peer"),
        "{all:#?}"
    );
    let from_pod = all.iter().find(|r| r["process"]["name"] == "nc").unwrap();
    assert_identity(
        from_pod,
        &pod,
        &container,
        "containerd",
        ("statefulset", "api"),
    );
    let from_host = all
        .iter()
        .find(|r| r["process"]["pid"] == host.pid)
        .expect("the host process's record");
    assert!(from_host["process"].get("pod").is_none(), "{from_host}");
    assert!(
        from_host["process"].get("container").is_none(),
        "{from_host}"
    );
    for tracer in [by_pod, by_container] {
        let (kept, stats) = connects(tracer);
        assert_eq!(kept.len(), 1, "{kept:#?}");
        assert_identity(
            &kept[0],
            &pod,
            &container,
            "containerd",
            ("statefulset", "api"),
        );
        assert!(
            stats["conntrace"]["filtered"].as_u64().unwrap() >= 1,
            "{stats}"
        );
    }
    let (kept, stats) = connects(other_namespace);
    assert!(kept.is_empty(), "{kept:#?}");
    assert!(
        stats["conntrace"]["filtered"].as_u64().unwrap() >= 2,
        "{stats}"
    );
}
