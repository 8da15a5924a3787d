//! PostgreSQL parameters on Kubernetes: the pod's arguments, rolled out.

use std::time::Duration;

use devdb_core::model::Key;
use devdb_kube::resources;
use serde_json::{Value, json};

use crate::common::*;

/// The database's StatefulSet with parameters `pg`, as applied.
fn with_parameters(pg: &[(&str, &str)]) -> Value {
    let pg = pg.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let mut sts = resources::statefulset("shop", "kate-pg", &settings(), &pg);
    resources::owned_by(&mut sts.metadata, "Database", "kate-pg", "uid-kate");
    let mut sts = serde_json::to_value(sts).expect("json");
    sts["spec"]["replicas"] = json!(1);
    sts
}

/// The StatefulSet as its controller reports it.
pub fn reported(mut sts: Value, ready: i32, current: &str, update: &str) -> Value {
    sts["metadata"]["generation"] = json!(2);
    sts["status"] = json!({
        "replicas": 1, "readyReplicas": ready, "updatedReplicas": 1, "observedGeneration": 2,
        "currentRevision": current, "updateRevision": update,
    });
    sts
}

/// The database's pod, made from template `revision`.
fn revision_pod(revision: &str, status: Value) -> Value {
    let mut pod = pod("kate-pg-0", status);
    pod["metadata"]["labels"] = json!({ "controller-revision-hash": revision });
    pod
}

fn ready(revision: &str) -> Value {
    revision_pod(revision, json!({ "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] }))
}

/// Exiting at start, again and again, with `message`.
fn crash_looping(revision: &str, message: &str) -> Value {
    revision_pod(
        revision,
        json!({
            "phase": "Running", "conditions": [{ "type": "Ready", "status": "False" }],
            "containerStatuses": [{
                "name": "postgres", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 4,
                "state": { "waiting": { "reason": "CrashLoopBackOff", "message": "back-off 40s" } },
                "lastState": { "terminated": { "exitCode": 1, "message": message } },
            }],
        }),
    )
}

const VOLUME: &str = "/api/v1/namespaces/devdb-shop/persistentvolumeclaims/kate-pg-data";
const TOO_BIG: &str = "FATAL:  could not map anonymous shared memory: Cannot allocate memory";

#[tokio::test]
async fn changed_parameters_roll_the_pod_with_them_and_are_recorded_once_it_runs() {
    let mut c = cluster(settings());
    let mut running = database(json!({ "phase": "running", "snapshotGeneration": 1 }), 0, false);
    running["spec"]["settings"] = json!({ "work_mem": "64MB" });
    let sts = with_parameters(&[("work_mem", "64MB")]);
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running.clone()),
        // Still running: nothing to restart.
        Step::get(STATEFULSET).reply(statefulset(1)),
        // Its data is of the image's major.
        Step::get(VOLUME).reply(pvc_from_snapshot()),
        Step::apply(STATEFULSET, &sts),
        // The old pod still serves (ready: the StatefulSet replaces it itself); then the new
        // one does.
        Step::get(STATEFULSET).reply(reported(sts.clone(), 1, "kate-pg-1", "kate-pg-2")),
        database_pods(vec![ready("kate-pg-1")]),
        Step::get(STATEFULSET).reply(reported(sts.clone(), 1, "kate-pg-2", "kate-pg-2")),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running.clone()),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(running)
            .has(json!({ "status": { "phase": "running", "appliedSettings": { "work_mem": "64MB" } } })),
    ];
    let bodies = c.pass(Key::Database(name("kate-pg")), steps).await;
    let command = &bodies[3]["spec"]["template"]["spec"]["containers"][0]["command"];
    assert_eq!(command, &json!(["devdb-start", "-c", "work_mem=64MB"]));
}

#[tokio::test]
async fn parameters_the_database_cannot_start_with_keep_it_recovering_not_failed() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let mut running = database(json!({ "phase": "running", "snapshotGeneration": 1 }), 0, false);
    running["spec"]["settings"] = json!({ "shared_buffers": "4GB" });
    let sts = with_parameters(&[("shared_buffers", "4GB")]);
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running.clone()),
        Step::get(STATEFULSET).reply(statefulset(1)),
        Step::get(VOLUME).reply(pvc_from_snapshot()),
        Step::apply(STATEFULSET, &sts),
        // The new pod exits at start: said at once, rather than after the rollout's timeout.
        Step::get(STATEFULSET).reply(reported(sts.clone(), 0, "kate-pg-1", "kate-pg-2")),
        database_pods(vec![crash_looping("kate-pg-2", TOO_BIG)]),
        // Retried (the settings are not recorded as applied), not an error a reset must end.
        Step::get(&format!("{DATABASES}/kate-pg")).reply(running.clone()),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(running)
            .has(json!({ "status": { "phase": "running", "error": "the platform underneath failed; retrying" } })),
    ];
    let error = c.failing_pass(Key::Database(name("kate-pg")), steps).await;
    assert!(error.contains("does not start with its new settings") && error.contains(TOO_BIG), "{error}");
}

/// The revert of parameters the database could not start with: its StatefulSet would wait
/// for ever for the pod made with them to get ready; that pod is replaced.
#[tokio::test]
async fn reverting_parameters_it_cannot_start_with_replaces_the_pod_stuck_on_them() {
    let mut c = impatient_cluster(settings(), Duration::ZERO);
    let recovering = json!({
        "phase": "recovering", "snapshotGeneration": 1,
        "error": "starting the database cannot go on: it keeps exiting; retrying",
    });
    // Reverted: what it wants is what it last ran (no parameter).
    let stuck = reported(with_parameters(&[("shared_buffers", "4GB")]), 0, "kate-pg-1", "kate-pg-2");
    let steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(recovering.clone(), 0, false)),
        Step::get(STATEFULSET).reply(stuck),
        Step::get(VOLUME).reply(pvc_from_snapshot()),
        Step::apply(STATEFULSET, &scaled(1)),
        // The template is revision 1 again; the pod is still revision 2's, crash-looping.
        Step::get(STATEFULSET).reply(reported(scaled(1), 0, "kate-pg-1", "kate-pg-1")),
        database_pods(vec![crash_looping("kate-pg-2", TOO_BIG)]),
        Step::delete(&format!("{NS}/pods/kate-pg-0")),
        Step::get(STATEFULSET).reply(reported(scaled(1), 1, "kate-pg-1", "kate-pg-1")),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(recovering, 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "running" }), 0, false))
            .has(json!({ "status": { "phase": "running", "error": null } })),
        event("Running", "Database", "kate-pg"),
    ];
    c.pass(Key::Database(name("kate-pg")), steps).await;
}
