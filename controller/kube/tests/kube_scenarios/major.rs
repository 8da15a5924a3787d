//! A database's data is of the PostgreSQL major it was cloned with: an image of another one
//! cannot open it.

use devdb_core::model::Key;
use devdb_kube::resources;
use serde_json::{Value, json};

use crate::common::*;

fn volume_of(major: Option<&str>) -> Value {
    let mut pvc = pvc_from_snapshot();
    match major {
        Some(major) => pvc["metadata"]["labels"][resources::POSTGRES_MAJOR_LABEL] = json!(major),
        None => drop(pvc["metadata"]["labels"].as_object_mut().map(|l| l.remove(resources::POSTGRES_MAJOR_LABEL))),
    }
    pvc
}

/// A stopped database woken with its volume `volume` (and `more` read), refused and
/// stopped again with the reason.
async fn refused_start(volume: Value, more: Vec<Step>) {
    let mut c = cluster(settings());
    let stopped = json!({ "phase": "stopped", "snapshotGeneration": 1, "stopReason": "idle" });
    let starting = json!({ "phase": "starting", "snapshotGeneration": 1 });
    let why = "could not start: starting the database cannot go on: its data is of PostgreSQL 15 and the \
               database image runs PostgreSQL 16, which cannot open it; it is left as it is. To run it, run \
               the controller with a PostgreSQL 15 image (--image and --db-version 15), or dump it from \
               there; or refresh its project and reset it (a new clone of the project's data, its own changes \
               lost); its data is kept: start it again";
    let mut steps = vec![
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(stopped.clone(), 0, false)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(stopped, 0, false)),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(starting.clone(), 0, false))
            .has(json!({ "status": { "phase": "starting" } })),
        event("Starting", "Database", "kate-pg"),
        Step::get(&format!("{NS}/persistentvolumeclaims/kate-pg-data")).reply(volume),
    ];
    steps.extend(more);
    steps.extend([
        // Nothing runs: still scaled to zero (the failed start's stop), the reason kept.
        Step::apply(STATEFULSET, &scaled(0)),
        Step::get(&format!("{DATABASES}/kate-pg")).reply(database(starting.clone(), 0, false)),
        // Asleep again, by its owner's word as far as the lifecycle goes: started when asked.
        Step::patch(&format!("{DATABASES}/kate-pg"))
            .reply(database(starting, 0, false))
            .has(json!({ "spec": { "stopped": true } })),
        Step::patch(&format!("{DATABASES}/kate-pg/status"))
            .reply(database(json!({ "phase": "stopped" }), 0, false))
            .has(json!({ "status": { "phase": "stopped", "error": why } })),
        Step::post(EVENTS),
    ]);
    c.pass(Key::Database(name("kate-pg")), steps).await;
}

#[tokio::test]
async fn a_database_of_another_major_is_not_started_on_the_image_and_says_what_to_do() {
    refused_start(volume_of(Some("15")), vec![]).await;
}

#[tokio::test]
async fn a_volume_cloned_before_its_major_was_recorded_has_its_projects() {
    let mut older = ready_project();
    older["spec"]["dbVersion"] = json!("15");
    refused_start(volume_of(None), vec![Step::get(&format!("{PROJECTS}/shop")).reply(older)]).await;
}
