//! A database's clone from the snapshot, its reset and its deletion, each removing what it had by
//! label.

use devdb_core::model::Key;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_database_is_cloned_from_the_snapshot_and_runs_once_its_pod_is_ready() {
    let mut c = cluster(settings());
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!(null), 0, false)),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!(null), 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "creating" }), 0, false))
            .has(json!({ "status": { "phase": "creating", "conditions": [{ "type": "Ready", "status": "False", "reason": "Cloning" }] } })),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).fail(404, "NotFound"),
    ];
    steps.extend(instance_steps());
    steps.extend([
        Step::get(STATEFULSET).reply(statefulset(0)),
        database_pods(vec![running_pod("kate-pg-0")]),
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!({ "phase": "creating" }), 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "running" }), 0, false))
            .has(json!({
                "metadata": { "resourceVersion": "11" },
                "status": {
                    "phase": "running", "snapshotGeneration": 1, "observedResetGeneration": 0,
                    "conditions": [{ "type": "Ready", "status": "True", "reason": "Running" }],
                },
            })),
        event("Running", "Database", "kate-pg"),
    ]);
    let bodies = c.pass(Key::Database(name("kate-pg")), steps).await;
    // The password is in the Secret only, never in a resource's spec or status.
    let secret = &bodies[6];
    assert_eq!(secret["stringData"]["password"], database_password());
    for (i, body) in bodies.iter().enumerate().filter(|(i, _)| *i != 6) {
        assert!(!body.to_string().contains(&database_password()), "request {i} carries the password: {body}");
    }
    // The project may now drop snapshots this clone kept.
    assert_eq!(c.asked_for(), [Key::Project(name("shop"))]);
}

#[tokio::test]
async fn a_reset_removes_the_clone_by_label_and_clones_again_with_the_same_credentials() {
    let mut c = cluster(settings());
    let running = json!({ "phase": "running", "snapshotGeneration": 1, "observedResetGeneration": 0 });
    // An earlier reset was refused, and said so.
    let mut refused = running.clone();
    refused["error"] = json!("the reset was refused: project shop requires masking rules");
    let found = |kind: &str| json!({ "kind": kind, "metadata": { "name": "kate-pg", "namespace": "devdb-shop" } });
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(refused.clone(), 1, false)),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(refused, 1, false)),
        // The old error goes: a merge patch keeps what it does not name, so it is named null.
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "creating" }), 1, false))
            .has(json!({ "status": { "phase": "creating", "observedResetGeneration": 0, "error": null } })),
        event("Cloning", "Database", "kate-pg"),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
        Step::list(&format!("/apis/apps/v1/statefulsets?{SELECTOR}"), vec![found("StatefulSet")]),
        Step::delete(STATEFULSET).has(background()),
        Step::list(&format!("/api/v1/persistentvolumeclaims?{SELECTOR}"), vec![found("PersistentVolumeClaim")]),
        Step::delete(&format!("{NS}/persistentvolumeclaims/kate-pg")).has(background()),
        // The old volume is still detaching, then gone.
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).fail(404, "NotFound"),
    ];
    steps.extend(instance_steps());
    steps.extend([
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!({ "phase": "creating" }), 1, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(running, 1, false))
            .has(json!({ "status": { "phase": "running", "observedResetGeneration": 1 } })),
        event("Running", "Database", "kate-pg"),
    ]);
    c.pass(Key::Database(name("kate-pg")), steps).await;
    assert_eq!(c.asked_for(), [Key::Project(name("shop"))]);
}

#[tokio::test]
async fn a_deleted_database_loses_everything_it_had_by_label_then_its_finalizer() {
    let mut c = cluster(settings());
    let running = json!({ "phase": "running", "snapshotGeneration": 1 });
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(running.clone(), 0, true)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(running.clone(), 0, true)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "deleting" }), 0, true))
            .has(json!({ "status": { "phase": "deleting" } })),
        event("Deleting", "Database", "kate-pg"),
    ];
    steps.extend(removed_by_label(&["StatefulSet", "Service", "NetworkPolicy"]));
    let volume =
        json!({ "kind": "PersistentVolumeClaim", "metadata": { "name": "kate-pg-data", "namespace": "devdb-shop" } });
    steps.extend([
        Step::list(&format!("/api/v1/persistentvolumeclaims?{SELECTOR}"), vec![volume]),
        // Secrets are never listed across namespaces: removed by label where the rest was.
        Step::delete(&format!("{NS}/secrets?{SELECTOR}")).has(background()),
        Step::delete(&format!("{NS}/persistentvolumeclaims/kate-pg-data")),
    ]);
    steps.extend([
        // Then the resource may go.
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(json!({ "phase": "deleting" }), 0, true)),
        Step::patch(&format!("{DATABASES}/kate-pg"))
            .reply(database(json!({ "phase": "deleting" }), 0, true))
            .body(json!({ "metadata": { "resourceVersion": "11", "finalizers": [] } })),
    ]);
    c.pass(Key::Database(name("kate-pg")), steps).await;
    assert!(c.asked_for().is_empty());
}
