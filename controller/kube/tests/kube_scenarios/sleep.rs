//! Stop and start on Kubernetes: the StatefulSet scaled to zero and back, the volume kept.

use devdb_core::model::Key;
use serde_json::{Value, json};

use crate::common::*;

fn stopped_spec(status: Value) -> Value {
    let mut d = database(status, 0, false);
    d["spec"]["stopped"] = json!(true);
    d
}

#[tokio::test]
async fn a_stopped_database_is_scaled_to_zero_and_keeps_its_volume() {
    let mut c = cluster(settings());
    let running = json!({ "phase": "running", "snapshotGeneration": 1 });
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(stopped_spec(running.clone())),
        Step::apply(STATEFULSET, &scaled(0)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(stopped_spec(running)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(stopped_spec(json!({ "phase": "stopped" })))
            .has(json!({ "status": { "phase": "stopped", "conditions": [{ "type": "Ready", "status": "False", "reason": "Stopped" }] } })),
        event("Stopped", "Database", "kate-pg"),
    ];
    let bodies = c.pass(Key::Database(name("kate-pg")), steps).await;
    assert!(bodies[3]["status"]["stoppedAt"].is_string(), "{}", bodies[3]);
    assert!(c.asked_for().is_empty());
}

#[tokio::test]
async fn a_started_database_is_scaled_back_to_one_and_runs_once_its_pod_is_ready() {
    let mut c = cluster(settings());
    let stopped = json!({ "phase": "stopped", "snapshotGeneration": 1, "stopReason": "idle" });
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(stopped.clone(), 0, false)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(stopped, 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "starting", "snapshotGeneration": 1 }), 0, false))
            .has(json!({ "status": { "phase": "starting" } })),
        event("Starting", "Database", "kate-pg"),
        // Its volume is still there; scaled to one; waited for.
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(pvc_from_snapshot()),
        Step::apply(STATEFULSET, &scaled(1)),
        Step::get(STATEFULSET).reply(statefulset(0)),
        database_pods(vec![running_pod("kate-pg-0")]),
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(
            json!({ "phase": "starting", "snapshotGeneration": 1 }),
            0,
            false,
        )),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "running" }), 0, false))
            .has(json!({ "status": { "phase": "running" } })),
        event("Running", "Database", "kate-pg"),
    ];
    let bodies = c.pass(Key::Database(name("kate-pg")), steps).await;
    let status = &bodies[10]["status"];
    // A start is no session: lastActiveAt stays the last session's (this one never had one).
    assert!(status.get("lastActiveAt").is_none() && status.get("stopReason").is_none(), "{status}");
}
