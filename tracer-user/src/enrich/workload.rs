//! The owner of a pod, guessed from its name: the kubelet's files name the pod, not its
//! controller, and the API server is out of reach by design. The controllers' naming is
//! stable enough to read back:
//!
//! - a Deployment's ReplicaSet is `NAME-<pod-template-hash>`, whose pods are
//!   `NAME-<hash>-<5 random>`; the hash is a decimal number re-encoded one byte at a time
//!   into the alphabet `bcdfghjklmnpqrstvwxz2456789` (`rand.SafeEncodeString`), and the
//!   ten digits land on only ten of its letters: `4 5 6 7 8 9 b c d f` (and a 32-bit
//!   number has 6 to 10 digits but for one chance in 40 000);
//! - a CronJob's Job is `NAME-<minutes since the epoch>` (8 digits today), its pods
//!   `NAME-<minutes>-<5 random>`;
//! - an indexed Job's pods are `NAME-<index>-<5 random>`;
//! - a StatefulSet's pods are `NAME-<ordinal>`;
//! - a DaemonSet's and a plain Job's pods are both `NAME-<5 random>`: told apart by
//!   nothing in the name, so reported as one kind;
//! - a static pod (uid: a 32-digit hash) is `NAME-<node name>`.
use crate::{
    enrich::cgroup::is_pod_uid,
    model::{Workload, WorkloadKind},
};

/// The alphabet of generated name suffixes (`k8s.io/apimachinery/pkg/util/rand`).
const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
/// The letters a pod-template hash can use: the encodings of `0`..`9`.
const HASH: &[u8] = b"456789bcdf";

/// The owning workload of pod `name`, or `None` for a pod that shows no owner. `uid` and
/// `node` (this host's name) recognise static pods.
pub fn guess(name: &str, uid: Option<&str>, node: &str) -> Option<Workload> {
    if uid.is_some_and(|u| u.len() == 32 && is_pod_uid(u)) {
        let base = name
            .strip_suffix(node)
            .and_then(|b| b.strip_suffix('-'))
            .filter(|b| !b.is_empty())
            .unwrap_or(name);
        return Some(workload(WorkloadKind::StaticPod, base));
    }
    let (base, last) = name.rsplit_once('-')?;
    if base.is_empty() {
        return None;
    }
    if last.len() == 5 && all_in(last, SAFE) {
        let Some((owner, middle)) = base.rsplit_once('-').filter(|(o, _)| !o.is_empty()) else {
            return Some(workload(WorkloadKind::DaemonSetOrJob, base));
        };
        let digits = middle.bytes().all(|b| b.is_ascii_digit());
        return Some(
            if (6..=10).contains(&middle.len()) && all_in(middle, HASH) && !digits {
                workload(WorkloadKind::Deployment, owner)
            } else if digits && middle.len() >= 8 {
                workload(WorkloadKind::CronJob, owner)
            } else if digits && !middle.is_empty() {
                workload(WorkloadKind::Job, owner)
            } else {
                workload(WorkloadKind::DaemonSetOrJob, base)
            },
        );
    }
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) && !last.starts_with('0')
        || last == "0"
    {
        return Some(workload(WorkloadKind::StatefulSet, base));
    }
    None
}

fn all_in(s: &str, alphabet: &[u8]) -> bool {
    !s.is_empty() && s.bytes().all(|b| alphabet.contains(&b))
}

fn workload(kind: WorkloadKind, name: &str) -> Workload {
    Workload {
        kind,
        name: name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(name: &str) -> Option<(WorkloadKind, String)> {
        guess(name, Some("1a2b3c4d-5e6f-4a8b-9c0d-112233445566"), "node-1")
            .map(|w| (w.kind, w.name))
    }

    #[test]
    fn deployments() {
        for (pod, owner) in [
            ("web-7d9f8b6c5d-x2k4p", "web"),
            ("coredns-5d78c9869d-8wq6z", "coredns"),
            ("my-api-server-6b7f9c4d8-bcdfg", "my-api-server"),
        ] {
            assert_eq!(
                kind_of(pod),
                Some((WorkloadKind::Deployment, owner.into())),
                "{pod}"
            );
        }
    }

    #[test]
    fn cronjobs_and_jobs() {
        assert_eq!(
            kind_of("backup-29380512-7xq2m"),
            Some((WorkloadKind::CronJob, "backup".into()))
        );
        assert_eq!(
            kind_of("batch-3-7xq2m"),
            Some((WorkloadKind::Job, "batch".into()))
        );
    }

    #[test]
    fn statefulsets() {
        assert_eq!(
            kind_of("db-0"),
            Some((WorkloadKind::StatefulSet, "db".into()))
        );
        assert_eq!(
            kind_of("kafka-broker-12"),
            Some((WorkloadKind::StatefulSet, "kafka-broker".into()))
        );
        // Not an ordinal.
        assert_eq!(kind_of("db-01"), None);
    }

    #[test]
    fn daemonsets_and_jobs_look_alike() {
        assert_eq!(
            kind_of("kube-proxy-x2k4p"),
            Some((WorkloadKind::DaemonSetOrJob, "kube-proxy".into()))
        );
        assert_eq!(
            kind_of("fluentbit-zz9w2"),
            Some((WorkloadKind::DaemonSetOrJob, "fluentbit".into()))
        );
        // A short middle part is no hash, however its letters look.
        assert_eq!(
            kind_of("web-cdf-x2k4p"),
            Some((WorkloadKind::DaemonSetOrJob, "web-cdf".into()))
        );
        // A middle part that is no hash (it has letters outside the hash's ten).
        assert_eq!(
            kind_of("node-exporter-x2k4p"),
            Some((WorkloadKind::DaemonSetOrJob, "node-exporter".into()))
        );
    }

    #[test]
    fn static_pods_lose_their_node_suffix() {
        let uid = Some("6b6cf55d2f1e8c2d4e1f1d4e2b1c5a3f");
        assert_eq!(
            guess("kube-apiserver-node-1", uid, "node-1"),
            Some(workload(WorkloadKind::StaticPod, "kube-apiserver"))
        );
        assert_eq!(
            guess("etcd-other", uid, "node-1"),
            Some(workload(WorkloadKind::StaticPod, "etcd-other"))
        );
    }

    #[test]
    fn bare_pods_show_no_owner() {
        // `abcde` has vowels: not a generated suffix.
        for pod in [
            "debug",
            "my-pod",
            "web-",
            "-x2k4p",
            "curl-test-ABCDE",
            "web-abcde",
        ] {
            assert_eq!(kind_of(pod), None, "{pod}");
        }
    }
}
