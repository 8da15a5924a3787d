//! How a database's StatefulSet gets to the pod template it should run. A StatefulSet rolls its
//! pod only once the pod is ready, so a pod that never will be (a parameter PostgreSQL refuses,
//! an image that does not start) holds back every later template, a revert of the change
//! included ("forced rollback" in the Kubernetes documentation): such a pod, of a revision the
//! StatefulSet no longer wants, is deleted, and the StatefulSet makes it again from the one it
//! wants.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;

/// The label a StatefulSet gives each pod: the revision of the template it was made from.
const REVISION_LABEL: &str = "controller-revision-hash";

/// Whether the StatefulSet runs its latest template: seen by its controller, its pod made from
/// it and ready.
pub fn rolled(sts: &StatefulSet) -> bool {
    let generation = sts.metadata.generation.unwrap_or(0);
    sts.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) >= 1
            && s.ready_replicas.unwrap_or(0) >= 1
            && s.current_revision == s.update_revision
    })
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `pods` (of one StatefulSet) split in two: those to delete, of a revision it no longer wants
/// and not ready (the StatefulSet would wait for them for ever), and those that stay, being
/// neither deleted already nor to delete (whose problems, if any, are the database's).
pub fn replace(sts: &StatefulSet, pods: Vec<Pod>) -> (Vec<Pod>, Vec<Pod>) {
    let wanted = sts.status.as_ref().and_then(|s| s.update_revision.clone());
    let stale = |pod: &Pod| {
        let revision = pod.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL));
        matches!((&wanted, revision), (Some(wanted), Some(revision)) if wanted != revision)
    };
    pods.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).partition(|p| stale(p) && !ready(p))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sts(status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(json!({ "metadata": { "name": "kate-pg", "generation": 3 }, "status": status }))
            .expect("sts")
    }

    fn pod(name: &str, revision: &str, ready: bool, deleted: bool) -> Pod {
        let mut pod = json!({
            "metadata": { "name": name, "labels": { REVISION_LABEL: revision } },
            "status": { "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }] },
        });
        if deleted {
            pod["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:00:00Z");
        }
        serde_json::from_value(pod).expect("pod")
    }

    fn names(pods: &[Pod]) -> Vec<&str> {
        pods.iter().filter_map(|p| p.metadata.name.as_deref()).collect()
    }

    #[test]
    fn only_an_unready_pod_of_an_unwanted_revision_is_replaced() {
        let reverted = sts(json!({ "replicas": 1, "currentRevision": "kate-pg-1", "updateRevision": "kate-pg-1" }));
        // Crash-looping on the revision reverted: replaced.
        let (replace_now, stay) = replace(&reverted, vec![pod("kate-pg-0", "kate-pg-2", false, false)]);
        assert_eq!((names(&replace_now), names(&stay)), (vec!["kate-pg-0"], vec![]));
        // Ready on an older revision: the StatefulSet rolls it itself.
        let (replace_now, stay) = replace(&reverted, vec![pod("kate-pg-0", "kate-pg-2", true, false)]);
        assert_eq!((names(&replace_now), names(&stay)), (vec![], vec!["kate-pg-0"]));
        // Of the wanted revision, starting: it is the database's, waited for.
        let (replace_now, stay) = replace(&reverted, vec![pod("kate-pg-0", "kate-pg-1", false, false)]);
        assert_eq!((names(&replace_now), names(&stay)), (vec![], vec!["kate-pg-0"]));
        // Going already: neither.
        let (replace_now, stay) = replace(&reverted, vec![pod("kate-pg-0", "kate-pg-2", false, true)]);
        assert!(replace_now.is_empty() && stay.is_empty());
    }

    #[test]
    fn a_statefulset_has_rolled_once_its_pod_of_the_latest_template_is_ready() {
        let status = |ready: i32, current: &str| {
            json!({
                "replicas": 1, "readyReplicas": ready, "updatedReplicas": 1, "observedGeneration": 3,
                "currentRevision": current, "updateRevision": "kate-pg-3",
            })
        };
        assert!(rolled(&sts(status(1, "kate-pg-3"))));
        assert!(!rolled(&sts(status(0, "kate-pg-3"))), "not ready");
        assert!(!rolled(&sts(status(1, "kate-pg-2"))), "still rolling");
    }
}
