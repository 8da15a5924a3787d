//! Restores of `s3://` sources run as the project's `devdb-restore` account, and a pod the EKS
//! pod identity webhook gave no identity (it had not seen the account yet) is run once more.

use std::collections::BTreeMap;

use devdb_core::model::Key;
use devdb_kube::resources::{self, ClusterSettings};
use serde_json::{Value, json};

use crate::common::*;

const SOURCE: &str = "s3://dumps/shop.dump";

fn irsa() -> ClusterSettings {
    let role = ("eks.amazonaws.com/role-arn".to_string(), "arn:aws:iam::1:role/devdb-restore".to_string());
    ClusterSettings { restore_account_annotations: BTreeMap::from([role]), ..settings() }
}

fn s3_project(status: Value) -> Value {
    let mut p = project(status);
    p["spec"]["backupLocation"] = json!(SOURCE);
    p
}

fn s3_job() -> resources::RestoreOptions {
    resources::RestoreOptions { s3: true, ..Default::default() }
}

/// A pass up to the restore Job's creation, as the account annotated for IRSA.
fn restore_started() -> Vec<Step> {
    let mut namespace = resources::namespace("shop");
    resources::owned_by(&mut namespace.metadata, "Project", "shop", "uid-shop");
    let mut binding = resources::project_role_binding("shop", irsa().project_access.as_ref().expect("set"), "devdb");
    resources::owned_by(&mut binding.metadata, "Project", "shop", "uid-shop");
    vec![
        Step::get(&format!("{PROJECTS}/shop")).reply(s3_project(json!(null))),
        Step::get(&format!("{PROJECTS}/shop")).reply(s3_project(json!(null))),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(s3_project(json!({ "phase": "restoring" }))),
        event("Restoring", "Project", "shop"),
        Step::apply(NS, &namespace),
        Step::apply("/apis/rbac.authorization.k8s.io/v1/namespaces/devdb-shop/rolebindings/devdb-controller", &binding),
        Step::apply(
            &format!("{NS}/serviceaccounts/devdb-restore"),
            &resources::restore_account("shop", &irsa().restore_account_annotations),
        ),
        Step::apply(
            &format!("{NS}/secrets/restore-credentials"),
            &resources::project_secret("shop", "app", &project_password(), Some(SOURCE)),
        ),
        Step::apply(&format!("{NS}/persistentvolumeclaims/golden-1"), &resources::golden_pvc("shop", 1, &irsa())),
        Step::apply(&format!("{JOBS}/restore-1"), &resources::restore_job("shop", 1, "shop", s3_job(), &irsa())),
    ]
}

fn failed_job() -> Value {
    job(json!({
        "failed": 1,
        "conditions": [{ "type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit" }],
    }))
}

/// The restore's pod, its fetch failed, made with `env` (what the webhook injected, if any).
fn fetch_failed(name: &str, env: Value) -> Value {
    let mut pod = pod(
        name,
        json!({ "phase": "Failed", "initContainerStatuses": [{
            "name": "fetch", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 1, "message": "cannot fetch s3://dumps/shop.dump: Unable to locate credentials" } },
        }] }),
    );
    pod["spec"] = json!({ "initContainers": [{ "name": "fetch", "env": env }], "containers": [{ "name": "restore" }] });
    pod
}

fn no_identity() -> Value {
    json!([{ "name": "DEVDB_RESTORE_STEP", "value": "fetch" }])
}

/// The failed pod and Job removed, and the same Job made again.
fn run_again(pod: &str) -> Vec<Step> {
    vec![
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/pods/{pod}")),
        Step::apply(&format!("{JOBS}/restore-1"), &resources::restore_job("shop", 1, "shop", s3_job(), &irsa())),
    ]
}

#[tokio::test]
async fn a_restore_pod_made_before_the_webhook_saw_its_account_is_run_again_and_restores() {
    let mut c = cluster(irsa());
    let mut steps = restore_started();
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(failed_job()),
        job_pods(vec![fetch_failed("restore-1-abcde", no_identity())]),
    ]);
    steps.extend(run_again("restore-1-abcde"));
    steps.extend(job_done_then_snapshot(vec![json!({ "readyToUse": true, "restoreSize": "2Gi" })]));
    steps.extend(snapshot_ready_steps());
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_restore_pod_without_an_identity_twice_fails_saying_how_to_give_it_one() {
    let mut c = cluster(irsa());
    let mut steps = restore_started();
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(failed_job()),
        job_pods(vec![fetch_failed("restore-1-abcde", no_identity())]),
    ]);
    steps.extend(run_again("restore-1-abcde"));
    // The pod deleted before is still going: only the new one counts.
    let mut going = fetch_failed("restore-1-abcde", no_identity());
    going["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:00:00Z");
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(failed_job()),
        job_pods(vec![going, fetch_failed("restore-1-fghij", no_identity())]),
    ]);
    let why = "the restore failed: cannot fetch s3://dumps/shop.dump: Unable to locate credentials (its pod \
               had no AWS identity: give the ServiceAccount devdb-restore of namespace devdb-shop an IAM role \
               that reads the source, by an EKS Pod Identity association or IRSA \
               (--restore-account-annotations, the chart's sources.serviceAccountAnnotations), or give the \
               controller source credentials)";
    steps.extend([
        Step::delete(&format!("{SNAPSHOTS}/snapshot-1")),
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(s3_project(json!({ "phase": "restoring" }))),
        Step::patch(&format!("{PROJECTS}/shop/status"))
            .reply(s3_project(json!({ "phase": "failed" })))
            .has(json!({ "status": { "phase": "failed", "error": why } })),
        Step::post(EVENTS).has(json!({ "type": "Warning", "reason": "RestoreFailed", "note": why })),
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
    ]);
    c.pass(Key::Project(name("shop")), steps).await;
}

#[tokio::test]
async fn a_restore_pod_that_had_its_identity_fails_with_its_own_reason_at_once() {
    let mut c = cluster(irsa());
    let mut steps = restore_started();
    let injected = json!([
        { "name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/devdb-restore" },
        { "name": "AWS_WEB_IDENTITY_TOKEN_FILE", "value": "/var/run/secrets/eks.amazonaws.com/serviceaccount/token" },
    ]);
    steps.extend([
        Step::get(&format!("{JOBS}/restore-1")).reply(failed_job()),
        job_pods(vec![fetch_failed("restore-1-abcde", injected)]),
    ]);
    let why = "the restore failed: cannot fetch s3://dumps/shop.dump: Unable to locate credentials";
    steps.extend([
        Step::delete(&format!("{SNAPSHOTS}/snapshot-1")),
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(s3_project(json!({ "phase": "restoring" }))),
        Step::patch(&format!("{PROJECTS}/shop/status"))
            .reply(s3_project(json!({ "phase": "failed" })))
            .has(json!({ "status": { "phase": "failed", "error": why } })),
        Step::post(EVENTS),
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
    ]);
    c.pass(Key::Project(name("shop")), steps).await;
}
