//! Recovery: a pod outage as one `recovering` episode, a restarted controller adopting the Job or
//! volume it made, and a write that lost a race computed again from the newer resource.

use devdb_core::model::Key;
use serde_json::json;

use crate::common::*;

/// A pod outage (a drain, a spot reclaim, an OOM kill, a volume re-attaching) is one
/// `recovering` episode: the pass that restarts the database waits for its pod to be ready
/// again (the route held meanwhile), then writes `running` once, instead of `running` at once
/// because the StatefulSet exists, and `recovering` again 2 s later.
#[tokio::test]
async fn a_pod_outage_is_one_recovering_episode_ending_when_the_pod_is_ready() {
    let mut c = cluster(settings());
    let recovering = json!({
        "phase": "recovering", "snapshotGeneration": 1, "observedResetGeneration": 0,
        "error": "the instance stopped unexpectedly; restarting it",
    });
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(recovering.clone(), 0, false)),
        Step::get(STATEFULSET).reply(statefulset(0)),
        // Not ready: with the template it should have (unchanged here).
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
        Step::apply(STATEFULSET, &scaled(1)),
        // Waiting: the pod is back but not ready yet.
        Step::get(STATEFULSET).reply(statefulset(0)),
        database_pods(vec![running_pod("kate-pg-0")]),
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(recovering, 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "running" }), 0, false))
            .has(json!({ "status": { "phase": "running", "error": null } })),
        event("Running", "Database", "kate-pg"),
    ];
    c.pass(Key::Database(name("kate-pg")), steps).await;
}

#[tokio::test]
async fn a_controller_restarted_mid_restore_adopts_the_running_job() {
    let mut c = cluster(settings());
    // What the previous controller recorded before it died.
    let restoring = project(json!({
        "phase": "restoring", "progress": { "bytesDone": 0 },
        "conditions": [{ "type": "Ready", "status": "False", "reason": "Restoring", "lastTransitionTime": "2026-11-23T10:01:00Z" }],
    }));
    let mut steps = vec![
        Step::get(&format!("{PROJECTS}/shop")).reply(restoring.clone()),
        // Already recorded as restoring: nothing to write, no second event.
        Step::get(&format!("{PROJECTS}/shop")).reply(restoring),
    ];
    // Applying the same objects again changes nothing; the Job it started is waited for.
    steps.extend(restore_steps(&project_password()));
    steps.extend(job_done_then_snapshot(vec![json!({ "readyToUse": true, "restoreSize": "2Gi" })]));
    steps.extend(snapshot_ready_steps());
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_controller_restarted_mid_clone_adopts_the_volume_it_made() {
    let mut c = cluster(settings());
    let creating = json!({
        "phase": "creating",
        "conditions": [{ "type": "Ready", "status": "False", "reason": "Cloning", "lastTransitionTime": "2026-11-23T10:07:00Z" }],
    });
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(creating.clone(), 0, false)),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(creating.clone(), 0, false)),
        // The clone of the same snapshot is there: kept, not deleted.
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
    ];
    steps.extend(instance_steps());
    steps.extend([
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(creating, 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "running" }), 0, false))
            .has(json!({ "status": { "phase": "running" } })),
        event("Running", "Database", "kate-pg"),
    ]);
    c.pass(Key::Database(name("kate-pg")), steps).await;
    assert_eq!(c.asked_for(), [Key::Project(name("shop"))]);
}

#[tokio::test]
async fn a_write_that_loses_a_race_is_recomputed_from_the_newer_resource() {
    let mut c = cluster(settings());
    let mut newer = database(json!({ "phase": "creating" }), 0, false);
    newer["metadata"]["resourceVersion"] = json!("12");
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!(null), 0, false)),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!(null), 0, false)),
        // Someone wrote version 12 meanwhile: this write is refused…
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .has(json!({ "metadata": { "resourceVersion": "11" } }))
            .fail(409, "Conflict"),
        // …and computed again from what is there now.
        Step::get(&format!("{DATABASES}/kate-pg")).reply(newer.clone()),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .has(json!({ "metadata": { "resourceVersion": "12" }, "status": { "phase": "creating" } }))
            .reply(newer),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).fail(500, "InternalError"),
        // An API error may pass: not a failed clone, but one to retry, said on the resource.
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!({ "phase": "creating" }), 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "creating" }), 0, false))
            .has(json!({ "status": { "phase": "creating", "error": "the platform underneath failed; retrying" } })),
    ];
    let error = c.failing_pass(Key::Database(name("kate-pg")), steps).await;
    assert!(error.contains("InternalError") && error.contains("retrying"), "the log has the whole error: {error}");
    assert!(c.asked_for().is_empty());
}
