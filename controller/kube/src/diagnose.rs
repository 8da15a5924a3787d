//! Why a pod that should be running is not, in the words of whoever knows: the scheduler (pod
//! conditions), kubelet (container states, attach and mount events) and the volume provisioner
//! (the claim's events); and why a volume snapshot makes no progress. A wait uses it to fail
//! early with that reason, and [`Patience`] lets a reason that clears on its own (a node being
//! added, a registry hiccup) pass first.

use k8s_openapi::api::core::v1::{Event, Pod};

/// What keeps a pod from running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocker {
    /// No node has room (CPU, memory, taints, zones).
    Unschedulable,
    /// No node can attach another volume (EBS: about 25 per Nitro instance, whatever its size),
    /// or the node given could not after all (its network interfaces took the slots).
    AttachLimit,
    /// Its volume cannot be provisioned (no such StorageClass, a driver or quota error, a
    /// snapshot that cannot be read).
    Provisioning,
    /// Its volume cannot be attached or mounted on the node it was given.
    Attaching,
    /// Its image cannot be pulled.
    Image,
    /// Its container cannot be created (a missing Secret key, say).
    Config,
    /// It starts and exits, again and again.
    Crashing,
    /// The CSI driver reports an error taking a volume snapshot.
    Snapshot,
    /// Nothing acts on a VolumeSnapshot: no snapshot controller, or no CSI snapshotter.
    SnapshotIgnored,
}

/// A blocker and the platform's own words for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub blocker: Blocker,
    pub reason: String,
}

impl Problem {
    fn new(blocker: Blocker, reason: impl Into<String>) -> Self {
        Self { blocker, reason: reason.into() }
    }
}

/// Container waiting reasons that say the image cannot be had.
const IMAGE_REASONS: [&str; 4] = ["ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"];
/// Container waiting reasons that say the container cannot be made.
const CONFIG_REASONS: [&str; 2] = ["CreateContainerConfigError", "CreateContainerError"];
/// The scheduler's words when volume attachment limits are what is full.
const ATTACH_LIMIT: &str = "exceed max volume count";
/// Warning events that concern a claim.
const CLAIM_EVENTS: [&str; 2] = ["ProvisioningFailed", "FailedBinding"];
/// Warning events that concern a pod's volumes on its node.
const VOLUME_EVENTS: [&str; 2] = ["FailedAttachVolume", "FailedMount"];

/// Whether the scheduler has not placed `pod`, and why.
fn unscheduled(pod: &Pod) -> Option<&str> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let scheduled = conditions.iter().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(scheduled.message.as_deref().unwrap_or("no node can take it"))
}

/// What the pod's own status says is wrong, if anything.
pub fn pod_problem(pod: &Pod) -> Option<Problem> {
    if let Some(message) = unscheduled(pod) {
        return Some(if message.contains(ATTACH_LIMIT) {
            Problem::new(
                Blocker::AttachLimit,
                format!(
                    "no node can attach another volume (each database holds one; add nodes or delete \
                     databases, see docs/kubernetes.md, 'Capacity'): {message}"
                ),
            )
        } else {
            Problem::new(Blocker::Unschedulable, format!("no node can take its pod: {message}"))
        });
    }
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let waiting = status.state.as_ref()?.waiting.as_ref()?;
        let reason = waiting.reason.as_deref()?;
        let message = waiting.message.as_deref().unwrap_or(reason);
        if IMAGE_REASONS.contains(&reason) {
            Some(Problem::new(Blocker::Image, format!("its image {} cannot be pulled: {message}", status.image)))
        } else if CONFIG_REASONS.contains(&reason) {
            Some(Problem::new(Blocker::Config, format!("its container cannot be created: {message}")))
        } else if reason == "CrashLoopBackOff" {
            let last = status.last_state.as_ref().and_then(|s| s.terminated.as_ref());
            let why = last
                .and_then(|t| t.message.as_deref().map(str::trim).filter(|m| !m.is_empty()).map(String::from))
                .or_else(|| last.map(|t| format!("exit code {}", t.exit_code)))
                .unwrap_or_else(|| message.to_string());
            Some(Problem::new(
                Blocker::Crashing,
                format!("it keeps exiting ({} restarts): {why}", status.restart_count),
            ))
        } else {
            None
        }
    })
}

/// The newest of `events` concerning `kind`/`name` with one of `reasons`.
fn newest<'a>(events: &'a [Event], kind: &str, name: &str, reasons: &[&str]) -> Option<&'a Event> {
    events
        .iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .filter(|e| e.involved_object.kind.as_deref() == Some(kind) && e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref().is_some_and(|r| reasons.contains(&r)))
        .max_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0).or(e.event_time.as_ref().map(|t| t.0)))
}

/// Whether [`problem`] needs the namespace's Warning events for `pods`: some have not started
/// (or none exists yet), and their own status does not say why.
pub fn needs_events(pods: &[Pod]) -> bool {
    pods.is_empty()
        || pods.iter().any(|p| unscheduled(p).is_some())
        || (pods.iter().all(|p| pod_problem(p).is_none()) && pods.iter().any(starting))
}

fn starting(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_none_or(|p| p == "Pending")
}

/// Why `pods` (those of one Job or StatefulSet, on volume `claim`) are not running: the pod's
/// own status first, then, for a pod not yet running, warnings about its volume. `events` are
/// the Warning events of their namespace.
pub fn problem(pods: &[Pod], claim: &str, events: &[Event]) -> Option<Problem> {
    if let Some(problem) = pods.iter().find_map(pod_problem) {
        // An unscheduled pod waiting on a claim that cannot be provisioned: the claim is why.
        let claim_failure = newest(events, "PersistentVolumeClaim", claim, &CLAIM_EVENTS);
        return match (problem.blocker, claim_failure) {
            (Blocker::Unschedulable, Some(event)) => Some(claim_problem(claim, event)),
            _ => Some(problem),
        };
    }
    if !pods.is_empty() && !pods.iter().any(starting) {
        return None;
    }
    if let Some(event) = newest(events, "PersistentVolumeClaim", claim, &CLAIM_EVENTS) {
        return Some(claim_problem(claim, event));
    }
    pods.iter().filter(|p| starting(p)).find_map(|pod| {
        let event = newest(events, "Pod", pod.metadata.name.as_deref()?, &VOLUME_EVENTS)?;
        let message = event.message.as_deref().unwrap_or_default();
        Some(if over_attached(message) {
            Problem::new(
                Blocker::AttachLimit,
                format!(
                    "its node has no attachment slot left for its volume, although the scheduler counted                      one: on Nitro instances EBS volumes share the slots with network interfaces, and the                      EBS CSI driver counted its node's volume limit before the VPC CNI attached more of                      them. Reserve the slots they take: the driver's --reserved-volume-attachments (Helm                      node.reservedVolumeAttachments) or a lower --volume-attach-limit                      (node.volumeAttachLimit); or use prefix delegation, which needs fewer interfaces:                      {message}"
                ),
            )
        } else {
            Problem::new(Blocker::Attaching, format!("its volume cannot be attached or mounted: {message}"))
        })
    })
}

/// Whether an attach failure is EC2's refusal of one more attachment on the instance
/// (`AttachmentLimitExceeded`, "maximum number of attachments", or the CSI driver's
/// `ResourceExhausted` for it): the scheduler had counted a free slot that network interfaces
/// had taken meanwhile.
fn over_attached(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    ["attachmentlimitexceeded", "attachment limit", "maximum number of attachments", "code = resourceexhausted"]
        .iter()
        .any(|words| message.contains(words))
}

/// What the EKS pod identity webhook sets in a container it gives an AWS identity: IRSA's
/// role and web identity token, or EKS Pod Identity's credentials endpoint.
const AWS_IDENTITY_ENV: [&str; 3] =
    ["AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI"];

/// Whether a restore pod's `fetch` container was made without an AWS identity injected.
pub fn lacks_aws_identity(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else { return false };
    let Some(fetch) = spec.init_containers.iter().flatten().find(|c| c.name == "fetch") else { return false };
    !fetch.env.iter().flatten().any(|e| AWS_IDENTITY_ENV.contains(&e.name.as_str()))
}

/// Why a VolumeSnapshot (`name`, with `status`) shows no progress, if it does not. Its CRDs
/// make the API accept it whether or not anything acts on it: the external-snapshotter's
/// snapshot-controller binds it to a VolumeSnapshotContent (`boundVolumeSnapshotContentName`),
/// then the CSI driver's snapshotter cuts the snapshot (`creationTime`), both within seconds;
/// only copying the data (until `readyToUse`) takes long. Without them it would wait for the
/// snapshot timeout (hours) with nothing to say.
pub fn snapshot_stalled(name: &str, status: &serde_json::Value) -> Option<Problem> {
    if status["readyToUse"] == true {
        return None;
    }
    if !status["boundVolumeSnapshotContentName"].is_string() {
        return Some(Problem::new(
            Blocker::SnapshotIgnored,
            format!(
                "no snapshot controller has taken up VolumeSnapshot {name} (it has no bound content): \
                 install the external-snapshotter's snapshot-controller (on EKS, the snapshot-controller \
                 add-on), which the snapshot CRDs do not bring"
            ),
        ));
    }
    if status["creationTime"].is_null() {
        let content = status["boundVolumeSnapshotContentName"].as_str().unwrap_or_default();
        return Some(Problem::new(
            Blocker::SnapshotIgnored,
            format!(
                "the CSI driver has not cut VolumeSnapshot {name} (its content {content} has no creation \
                 time): check that the driver's controller runs its csi-snapshotter sidecar and that the \
                 VolumeSnapshotClass names that driver"
            ),
        ));
    }
    None
}

fn claim_problem(claim: &str, event: &Event) -> Problem {
    let message = event.message.as_deref().unwrap_or_default();
    Problem::new(Blocker::Provisioning, format!("its volume {claim} cannot be provisioned: {message}"))
}

/// Lets a problem last a while before it counts: it must be seen, with the same blocker, on
/// every look for `limit`.
#[derive(Debug)]
pub struct Patience {
    limit: std::time::Duration,
    since: Option<(Blocker, tokio::time::Instant)>,
}

impl Patience {
    pub fn new(limit: std::time::Duration) -> Self {
        Self { limit, since: None }
    }

    /// Records this look's problem; returns it once it has lasted `limit`.
    pub fn observe(&mut self, problem: Option<Problem>) -> Option<Problem> {
        let Some(problem) = problem else {
            self.since = None;
            return None;
        };
        let now = tokio::time::Instant::now();
        let since = match self.since {
            Some((blocker, since)) if blocker == problem.blocker => since,
            _ => {
                tracing::warn!(reason = %problem.reason, "waiting on a blocked pod");
                self.since = Some((problem.blocker, now));
                now
            }
        };
        (now.duration_since(since) >= self.limit).then_some(problem)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({ "metadata": { "name": "kate-pg-0" }, "status": status })).expect("pod")
    }

    fn waiting(reason: &str, message: &str) -> Pod {
        pod(json!({ "phase": "Pending", "containerStatuses": [{
            "name": "postgres", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": reason, "message": message } },
        }] }))
    }

    fn unschedulable(message: &str) -> Pod {
        pod(json!({ "phase": "Pending", "conditions": [
            { "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message },
        ] }))
    }

    fn event(kind: &str, name: &str, reason: &str, message: &str, at: &str) -> Event {
        serde_json::from_value(json!({
            "metadata": { "name": format!("{name}.{at}") },
            "involvedObject": { "kind": kind, "name": name },
            "type": "Warning", "reason": reason, "message": message, "lastTimestamp": at,
        }))
        .expect("event")
    }

    #[test]
    fn each_blocker_is_named_in_the_platforms_words() {
        let cases = [
            (
                unschedulable("0/3 nodes are available: 3 Insufficient memory."),
                Blocker::Unschedulable,
                "Insufficient memory",
            ),
            (
                unschedulable("0/2 nodes are available: 2 node(s) exceed max volume count."),
                Blocker::AttachLimit,
                "exceed max volume count",
            ),
            (
                waiting("ImagePullBackOff", "Back-off pulling image"),
                Blocker::Image,
                "devdb/postgres-db:16 cannot be pulled",
            ),
            (waiting("InvalidImageName", "bad name"), Blocker::Image, "bad name"),
            (
                waiting("CreateContainerConfigError", "secret \"kate-pg-credentials\" not found"),
                Blocker::Config,
                "kate-pg-credentials",
            ),
        ];
        for (pod, blocker, words) in cases {
            let problem = problem(&[pod], "kate-pg-data", &[]).expect("a problem");
            assert_eq!(problem.blocker, blocker, "{problem:?}");
            assert!(problem.reason.contains(words), "{problem:?}");
        }
        // Pulling, or creating the container: not a problem (yet).
        assert_eq!(problem(&[waiting("ContainerCreating", "")], "kate-pg-data", &[]), None);
    }

    #[test]
    fn a_crash_loop_reports_the_last_exit_message() {
        let crashing = pod(json!({ "phase": "Running", "containerStatuses": [{
            "name": "postgres", "image": "i", "imageID": "", "ready": false, "restartCount": 4,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s" } },
            "lastState": { "terminated": { "exitCode": 1, "message": "data directory has invalid permissions\n" } },
        }] }));
        let problem = pod_problem(&crashing).expect("crashing");
        assert_eq!(problem.blocker, Blocker::Crashing);
        assert_eq!(problem.reason, "it keeps exiting (4 restarts): data directory has invalid permissions");
    }

    #[test]
    fn a_claim_that_cannot_be_provisioned_is_the_reason_an_unscheduled_pod_gives_way_to() {
        let events = [
            event("PersistentVolumeClaim", "other-data", "ProvisioningFailed", "not ours", "2026-12-02T10:00:00Z"),
            event("PersistentVolumeClaim", "kate-pg-data", "ProvisioningFailed", "older", "2026-12-02T10:00:00Z"),
            event(
                "PersistentVolumeClaim",
                "kate-pg-data",
                "ProvisioningFailed",
                "storageclass.storage.k8s.io \"gp3\" not found",
                "2026-12-02T10:01:00Z",
            ),
        ];
        let pods = [unschedulable("0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.")];
        let problem = problem(&pods, "kate-pg-data", &events).expect("a problem");
        assert_eq!(problem.blocker, Blocker::Provisioning);
        assert_eq!(
            problem.reason,
            "its volume kate-pg-data cannot be provisioned: storageclass.storage.k8s.io \"gp3\" not found"
        );
        // No pod yet (a Job's pod waits for its claim): the claim's events say why.
        assert_eq!(super::problem(&[], "kate-pg-data", &events).map(|p| p.blocker), Some(Blocker::Provisioning));
        // An image problem is the pod's own, whatever the claim said before.
        let image = waiting("ErrImagePull", "not found");
        assert_eq!(super::problem(&[image], "kate-pg-data", &events).map(|p| p.blocker), Some(Blocker::Image));
        // A running pod is not blocked by old warnings.
        let running = pod(json!({ "phase": "Running" }));
        assert_eq!(super::problem(&[running], "kate-pg-data", &events), None);
    }

    #[test]
    fn attach_failures_of_a_scheduled_pod_are_reported() {
        let events = [event(
            "Pod",
            "kate-pg-0",
            "FailedAttachVolume",
            "AttachVolume.Attach failed for volume \"pvc-1\" : rpc error: AttachmentLimitExceeded",
            "2026-12-02T10:00:00Z",
        )];
        let problem = problem(&[waiting("ContainerCreating", "")], "kate-pg-data", &events).expect("a problem");
        assert_eq!(problem.blocker, Blocker::AttachLimit);
        assert!(problem.reason.contains("AttachmentLimitExceeded"), "{problem:?}");
        // Another volume's trouble is only that.
        let events = [event("Pod", "kate-pg-0", "FailedMount", "MountVolume.SetUp failed", "2026-12-02T10:00:00Z")];
        let other = super::problem(&[waiting("ContainerCreating", "")], "kate-pg-data", &events).expect("a problem");
        assert_eq!(other.blocker, Blocker::Attaching);
    }

    #[test]
    fn an_attach_refused_for_slots_the_network_interfaces_took_says_how_to_reserve_them() {
        // The EBS CSI driver's words when EC2 refuses the attachment, old and new, and EC2's own.
        let refusals = [
            "AttachVolume.Attach failed for volume \"pvc-1\" : rpc error: code = ResourceExhausted desc = \
             Attachment limit exceeded for volume \"vol-1\" on node \"i-1\": api error AttachmentLimitExceeded: \
             You may attach up to 27 devices for this instance type.",
            "AttachVolume.Attach failed for volume \"pvc-1\" : rpc error: code = Internal desc = Could not attach \
             volume \"vol-1\" to node \"i-1\": You have reached the maximum number of attachments for this instance",
        ];
        for refusal in refusals {
            let events = [event("Pod", "kate-pg-0", "FailedAttachVolume", refusal, "2026-12-02T10:00:00Z")];
            let problem = problem(&[waiting("ContainerCreating", "")], "kate-pg-data", &events).expect("a problem");
            assert_eq!(problem.blocker, Blocker::AttachLimit, "{refusal}");
            for words in ["network interfaces", "--reserved-volume-attachments", "--volume-attach-limit", refusal] {
                assert!(problem.reason.contains(words), "{words}: {}", problem.reason);
            }
        }
    }

    #[test]
    fn a_restore_pod_without_the_injected_aws_variables_lacks_an_identity() {
        let fetch = |env: serde_json::Value| -> Pod {
            serde_json::from_value(json!({
                "metadata": { "name": "restore-1-abcde" },
                "spec": { "initContainers": [{ "name": "fetch", "env": env }], "containers": [{ "name": "restore" }] },
            }))
            .expect("pod")
        };
        assert!(lacks_aws_identity(&fetch(json!([{ "name": "DEVDB_RESTORE_STEP", "value": "fetch" }]))));
        let irsa = json!([{ "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/r" }]);
        assert!(!lacks_aws_identity(&fetch(irsa)));
        let pod_identity =
            json!([{ "name": "AWS_CONTAINER_CREDENTIALS_FULL_URI", "value": "http://169.254.170.23/v1/credentials" }]);
        assert!(!lacks_aws_identity(&fetch(pod_identity)));
        assert!(!lacks_aws_identity(&pod(json!({}))), "no spec read: nothing to tell");
    }

    #[test]
    fn a_snapshot_nothing_acts_on_is_a_problem_naming_what_to_install() {
        let ignored = snapshot_stalled("snapshot-1", &serde_json::Value::Null).expect("stalled");
        assert_eq!(ignored.blocker, Blocker::SnapshotIgnored);
        assert!(ignored.reason.contains("snapshot-controller add-on"), "{}", ignored.reason);
        let unbound = json!({ "readyToUse": false });
        assert_eq!(snapshot_stalled("snapshot-1", &unbound).map(|p| p.blocker), Some(Blocker::SnapshotIgnored));
        let bound = json!({ "readyToUse": false, "boundVolumeSnapshotContentName": "snapcontent-1" });
        let uncut = snapshot_stalled("snapshot-1", &bound).expect("not cut");
        assert!(uncut.reason.contains("csi-snapshotter") && uncut.reason.contains("snapcontent-1"), "{uncut:?}");
        // Cut and copying (hours for a volume's first EBS snapshot): progress.
        let copying = json!({
            "readyToUse": false, "boundVolumeSnapshotContentName": "snapcontent-1",
            "creationTime": "2026-12-02T10:00:00Z",
        });
        assert_eq!(snapshot_stalled("snapshot-1", &copying), None);
        assert_eq!(snapshot_stalled("snapshot-1", &json!({ "readyToUse": true })), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_problem_counts_once_it_has_lasted_the_patience() {
        let unschedulable = Problem::new(Blocker::Unschedulable, "full");
        let image = Problem::new(Blocker::Image, "no image");
        let mut patience = Patience::new(Duration::from_secs(60));
        assert_eq!(patience.observe(Some(unschedulable.clone())), None);
        tokio::time::advance(Duration::from_secs(40)).await;
        assert_eq!(patience.observe(Some(unschedulable.clone())), None);
        // It cleared (a node was added), then came back: the clock starts again.
        assert_eq!(patience.observe(None), None);
        assert_eq!(patience.observe(Some(unschedulable.clone())), None);
        tokio::time::advance(Duration::from_secs(40)).await;
        // Another blocker restarts it too.
        assert_eq!(patience.observe(Some(image.clone())), None);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(patience.observe(Some(image.clone())), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(patience.observe(Some(image.clone())), Some(image));
        // With no patience, the first sight counts.
        assert_eq!(Patience::new(Duration::ZERO).observe(Some(unschedulable.clone())), Some(unschedulable));
    }
}
