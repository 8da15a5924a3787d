//! Masked restores: the rules and key in a Secret only while the Job runs, its report recorded,
//! and a Job that did not mask as asked failing the restore rather than publishing its snapshot.

use devdb_core::model::Key;
use devdb_kube::resources;
use devdb_shared::api::Masking;
use serde_json::{Value, json};

use crate::common::*;

/// A pass over the masked project up to its running restore Job: (the project restoring, steps).
fn masked_restore_started() -> (Value, Vec<Step>) {
    let (restoring, masking) = masked_project(json!({ "phase": "restoring" }));
    let mut steps = vec![
        Step::get(&format!("{PROJECTS}/shop")).reply(masked_project(json!(null)).0),
        Step::get(&format!("{PROJECTS}/shop")).reply(masked_project(json!(null)).0),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(restoring.clone()),
        event("Restoring", "Project", "shop"),
    ];
    // The key is derived (stored nowhere), the same for the project on every pass.
    steps.extend(restore_steps_masked(&project_password(), Some(&masking)));
    (restoring, steps)
}

#[tokio::test]
async fn a_masked_restore_has_its_rules_and_key_only_while_its_job_runs_and_records_its_report() {
    let mut c = cluster(settings());
    let (found, finding) = report(true, Some(20), Some(&masked_project(json!(null)).1));
    let (restoring, mut steps) = masked_restore_started();
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(job(json!({ "succeeded": 1 }))),
        job_pods(vec![finished_pod(&found)]),
        // The Job is done with the key: its Secret goes before anything else happens.
        Step::delete(&format!("{NS}/secrets/restore-masking-1")),
        Step::apply(&format!("{SNAPSHOTS}/snapshot-1"), &resources::volume_snapshot("shop", 1, &settings())),
        Step::get(&format!("{SNAPSHOTS}/snapshot-1")).reply(snapshot(json!({
            "readyToUse": true, "restoreSize": "2Gi", "creationTime": "2026-11-23T10:05:00Z",
        }))),
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(restoring),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(ready_project()).has(json!({
            "status": { "phase": "ready", "snapshot": {
                "generation": 1, "findings": [finding], "maskingVerified": 20,
                // What it was masked with: a clone checks it against the project's rules.
                "maskedWith": [{ "table": "customers", "column": "email", "strategy": "email" }],
            } },
        })),
    ]);
    steps.extend(snapshot_ready_steps().into_iter().skip(4));
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_masked_restore_whose_job_does_not_report_fails_rather_than_publish_an_unmasked_snapshot() {
    // An image that ignores masking ends with its plain summary, not a report.
    let summary = "restored a Custom dump into /var/lib/postgresql/data/pgdata";
    let why = "the restore Job did not report its masking: is the database image older than the controller?";
    masked_restore_fails(summary, why).await;
}

#[tokio::test]
async fn a_masked_restore_whose_job_applied_other_rules_or_did_not_verify_fails() {
    // A Job started before the rules changed reports the digest of the rules it had.
    let others = Masking {
        rules: vec![devdb_shared::api::MaskRule::new("customers", "name", devdb_shared::api::MaskStrategy::Name)],
        ..Masking::default()
    };
    let why = "the restore Job applied other masking rules than the project's (they changed while it ran): refresh the project";
    masked_restore_fails(&report(true, Some(20), Some(&others)).0, why).await;
    let why = "the restore Job did not verify the masking it was asked to";
    masked_restore_fails(&report(true, None, Some(&masked_project(json!(null)).1)).0, why).await;
}

#[tokio::test]
async fn a_cluster_api_error_reading_a_masked_jobs_report_is_retried_with_the_job_and_its_secret_kept() {
    let mut c = cluster(settings());
    let (_, mut steps) = masked_restore_started();
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(job(json!({ "succeeded": 1 }))),
        Step::list(&format!("{NS}/pods?labelSelector=job-name%3Drestore-1"), vec![]).fail(503, "ServiceUnavailable"),
        // Not a failed restore: nothing is deleted, the next pass adopts the finished Job.
        Step::get(&format!("{PROJECTS}/shop")).reply(masked_project(json!({ "phase": "restoring" })).0),
        Step::patch(&format!("{PROJECTS}/shop/status"))
            .has(json!({ "status": { "error": "the platform underneath failed; retrying" } }))
            .reply(masked_project(json!({ "phase": "restoring" })).0),
    ]);
    let error = c.failing_pass(Key::Project(name("shop")), steps).await;
    assert!(error.contains("ServiceUnavailable"), "{error}");
}

/// A masked restore whose Job succeeded with `message` as its termination message, failing
/// for `why` with everything it made removed.
async fn masked_restore_fails(message: &str, why: &str) {
    let mut c = cluster(settings());
    let (restoring, mut steps) = masked_restore_started();
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(job(json!({ "succeeded": 1 }))),
        job_pods(vec![finished_pod(message)]),
        Step::delete(&format!("{SNAPSHOTS}/snapshot-1")),
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/secrets/restore-masking-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(restoring),
        Step::patch(&format!("{PROJECTS}/shop/status"))
            .reply(project(json!({ "phase": "failed" })))
            .has(json!({ "status": { "phase": "failed", "error": why } })),
        Step::post(EVENTS).has(json!({ "type": "Warning", "reason": "RestoreFailed", "note": why })),
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
    ]);
    c.pass(Key::Project(name("shop")), steps).await;
}
