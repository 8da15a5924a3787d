//! Waits that fail early: a pod that cannot run says why on the resource, in the platform's
//! words, and what was half made goes.

use std::time::Duration;

use devdb_core::model::Key;
use serde_json::json;

use crate::common::*;

/// The steps of a restore pass up to the Job's first look, which finds it still active.
fn restore_until_active() -> Vec<Step> {
    let mut steps = vec![
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!(null))),
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!(null))),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(project(json!({ "phase": "restoring" }))),
        event("Restoring", "Project", "shop"),
    ];
    steps.extend(restore_steps(&project_password()));
    steps.push(Step::get(&format!("{JOBS}/restore-1")).reply(job(json!({ "active": 1 }))));
    steps
}

/// The restore's objects removed, and the project failed with `error`.
fn restore_failed(error: &str) -> Vec<Step> {
    vec![
        Step::delete(&format!("{SNAPSHOTS}/snapshot-1")),
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!({ "phase": "restoring" }))),
        Step::patch(&format!("{PROJECTS}/shop/status"))
            .reply(project(json!({ "phase": "failed" })))
            .has(json!({ "status": { "phase": "failed", "error": error } })),
        Step::post(EVENTS).has(json!({ "type": "Warning", "reason": "RestoreFailed", "note": error })),
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
    ]
}

#[tokio::test]
async fn a_restore_pod_no_node_can_take_fails_with_the_schedulers_reason_and_leaves_nothing() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let full = "0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available.";
    let mut steps = restore_until_active();
    steps.extend([job_pods(vec![unschedulable_pod("restore-1-abcde", full)]), warnings(vec![])]);
    steps.extend(restore_failed(&format!("the restore cannot go on: no node can take its pod: {full}")));
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_golden_volume_that_cannot_be_provisioned_fails_the_restore_with_the_provisioners_reason() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let unbound = "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.";
    let missing = "storageclass.storage.k8s.io \"gp3\" not found";
    let mut steps = restore_until_active();
    steps.extend([
        job_pods(vec![unschedulable_pod("restore-1-abcde", unbound)]),
        warnings(vec![
            warning("PersistentVolumeClaim", "golden-1", "ProvisioningFailed", missing),
            warning("Pod", "restore-1-abcde", "FailedScheduling", unbound),
        ]),
    ]);
    steps.extend(restore_failed(&format!(
        "the restore cannot go on: its volume golden-1 cannot be provisioned: {missing}"
    )));
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_blocked_restore_is_waited_on_while_it_may_clear() {
    // The patience is long: an unschedulable pod (a node being added) is looked at again,
    // and the restore goes on once it runs.
    let mut c = cluster(settings());
    let mut steps = restore_until_active();
    steps.extend([
        job_pods(vec![unschedulable_pod("restore-1-abcde", "0/3 nodes are available: 3 Insufficient cpu.")]),
        warnings(vec![]),
        Step::get(&format!("{JOBS}/restore-1")).reply(job(json!({ "active": 1 }))),
        job_pods(vec![running_pod("restore-1-abcde")]),
        // Cancelled here, by the project's deletion, to end the scenario.
    ]);
    let reconciler = c.reconciler.clone();
    let pass = tokio::spawn(async move { reconciler.reconcile(&Key::Project(name("shop"))).await });
    c.server.run(steps).await;
    assert!(!pass.is_finished(), "still waiting for the Job");
    pass.abort();
}

#[tokio::test]
async fn a_snapshot_error_that_clears_is_waited_out() {
    let mut c = cluster(settings());
    let mut steps = restore_until_active();
    let throttled = "Failed to create snapshot: error creating snapshot: RequestLimitExceeded";
    steps.push(job_pods(vec![running_pod("restore-1-abcde")]));
    steps.extend(job_done_then_snapshot(vec![
        json!({ "readyToUse": false, "error": { "message": throttled } }),
        json!({ "readyToUse": false }),
        json!({ "readyToUse": true, "restoreSize": "2Gi" }),
    ]));
    steps.extend(snapshot_ready_steps());
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_snapshot_error_that_stays_fails_the_project_and_removes_snapshot_job_and_volume() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let mut steps = restore_until_active();
    let denied = "Failed to check and update snapshot content: UnauthorizedOperation: not authorized to perform ec2:CreateSnapshot";
    steps.push(job_pods(vec![running_pod("restore-1-abcde")]));
    steps.extend(job_done_then_snapshot(vec![json!({ "readyToUse": false, "error": { "message": denied } })]));
    steps.extend(restore_failed(&format!("the volume snapshot cannot go on: {denied}")));
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_snapshot_no_snapshot_controller_takes_up_fails_the_project_naming_what_to_install() {
    // The snapshot CRDs are there (the API takes the VolumeSnapshot) but nothing acts on it:
    // it stays without a status instead of making the restore wait for the snapshot timeout.
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let mut steps = restore_until_active();
    steps.push(job_pods(vec![running_pod("restore-1-abcde")]));
    steps.extend(job_done_then_snapshot(vec![json!(null)]));
    steps.extend(restore_failed(
        "the volume snapshot cannot go on: no snapshot controller has taken up VolumeSnapshot snapshot-1 \
         (it has no bound content): install the external-snapshotter's snapshot-controller (on EKS, the \
         snapshot-controller add-on), which the snapshot CRDs do not bring",
    ));
    c.pass(Key::Project(name("shop")), steps).await;
}

/// The steps of a clone pass up to the StatefulSet's first look, which finds no ready pod.
fn clone_until_waiting() -> Vec<Step> {
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!(null), 0, false)),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!(null), 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status")).reply(database(json!({ "phase": "creating" }), 0, false)),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).fail(404, "NotFound"),
    ];
    steps.extend(instance_steps());
    steps.push(Step::get(STATEFULSET).reply(statefulset(0)));
    steps
}

/// The clone's pod and volume removed by label, and the database in error with `error`.
fn clone_failed(error: &str) -> Vec<Step> {
    let mut steps = removed_by_label(&["StatefulSet", "PersistentVolumeClaim"]);
    steps.extend([
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!({ "phase": "creating" }), 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "error" }), 0, false))
            .has(json!({ "status": { "phase": "error", "error": error } })),
        Step::post(EVENTS).has(json!({ "type": "Warning", "note": error })),
    ]);
    steps
}

#[tokio::test]
async fn a_clone_whose_image_cannot_be_pulled_fails_early_and_its_pod_and_volume_go() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let backoff = pod(
        "kate-pg-0",
        json!({ "phase": "Pending", "containerStatuses": [{
            "name": "postgres", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image \"devdb/postgres-db:16\"" } },
        }] }),
    );
    let mut steps = clone_until_waiting();
    // The pod's own status says why: no events needed.
    steps.push(database_pods(vec![backoff]));
    steps.extend(clone_failed(
        "starting the database cannot go on: its image devdb/postgres-db:16 cannot be pulled: \
         Back-off pulling image \"devdb/postgres-db:16\"",
    ));
    c.pass(Key::Database(name("kate-pg")), steps).await;
}

#[tokio::test]
async fn a_clone_on_nodes_at_their_volume_attach_limit_fails_early_and_says_so() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let full = "0/2 nodes are available: 2 node(s) exceed max volume count.";
    let mut steps = clone_until_waiting();
    steps.extend([database_pods(vec![unschedulable_pod("kate-pg-0", full)]), warnings(vec![])]);
    steps.extend(clone_failed(&format!(
        "starting the database cannot go on: no node can attach another volume (each database holds one; \
         add nodes or delete databases, see docs/kubernetes.md, 'Capacity'): {full}"
    )));
    c.pass(Key::Database(name("kate-pg")), steps).await;
}

#[tokio::test]
async fn a_clone_whose_volume_cannot_be_made_from_the_snapshot_fails_with_the_provisioners_reason() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let why = "failed to provision volume with StorageClass \"gp3\": rpc error: code = Internal desc = \
               Could not create volume: SnapshotNotFound";
    let mut steps = clone_until_waiting();
    steps.extend([
        // No pod yet: the StatefulSet's pod waits for its claim.
        database_pods(vec![]),
        warnings(vec![warning("PersistentVolumeClaim", "kate-pg-data", "ProvisioningFailed", why)]),
    ]);
    steps.extend(clone_failed(&format!(
        "starting the database cannot go on: its volume kate-pg-data cannot be provisioned: {why}"
    )));
    c.pass(Key::Database(name("kate-pg")), steps).await;
}

#[tokio::test]
async fn a_crash_looping_database_fails_with_its_last_words() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let crashing = pod(
        "kate-pg-0",
        json!({ "phase": "Running", "containerStatuses": [{
            "name": "postgres", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 3,
            "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s" } },
            "lastState": { "terminated": { "exitCode": 1, "message": "FATAL:  data directory \"/var/lib/postgresql/data/pgdata\" has invalid permissions" } },
        }] }),
    );
    let mut steps = clone_until_waiting();
    steps.push(database_pods(vec![crashing]));
    steps.extend(clone_failed(
        "starting the database cannot go on: it keeps exiting (3 restarts): \
         FATAL:  data directory \"/var/lib/postgresql/data/pgdata\" has invalid permissions",
    ));
    c.pass(Key::Database(name("kate-pg")), steps).await;
}
