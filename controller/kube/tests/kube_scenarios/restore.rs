//! A project's restore: a Job restores the dump, a VolumeSnapshot keeps it, a failure leaves
//! nothing behind and says why; the source credentials reach only an `s3://` project's fetch.

use std::collections::BTreeMap;

use devdb_core::model::Key;
use devdb_kube::resources::{self, ClusterSettings};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn a_project_is_restored_by_a_job_then_snapshotted() {
    let mut c = cluster(settings());
    let (found, finding) = report(false, None, None);
    let jobs = "/apis/batch/v1/namespaces/devdb-shop/jobs";
    let snapshots = "/apis/snapshot.storage.k8s.io/v1/namespaces/devdb-shop/volumesnapshots";
    let mut steps = vec![
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!(null))),
        // Restoring, recorded first.
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!(null))),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(project(json!({ "phase": "restoring" }))).has(json!({
            "metadata": { "resourceVersion": "7" },
            "status": {
                "phase": "restoring", "progress": { "bytesDone": 0 },
                "conditions": [{ "type": "Ready", "status": "False", "reason": "Restoring" }],
            },
        })),
        event("Restoring", "Project", "shop"),
    ];
    steps.extend(restore_steps(&project_password()));
    steps.extend([
        Step::get(&format!("{jobs}/restore-1")).reply(job(json!({ "active": 1 }))),
        // Not done yet: is anything blocking its pod? (No: it runs.)
        job_pods(vec![running_pod("restore-1-abcde")]),
        Step::get(&format!("{jobs}/restore-1")).reply(job(json!({ "succeeded": 1 }))),
        // Its report: what the personal-data scan found.
        job_pods(vec![finished_pod(&found)]),
        Step::apply(&format!("{snapshots}/snapshot-1"), &resources::volume_snapshot("shop", 1, &settings())),
        Step::get(&format!("{snapshots}/snapshot-1")).reply(snapshot(json!({ "readyToUse": false }))),
        Step::get(&format!("{snapshots}/snapshot-1")).reply(snapshot(json!({
            "readyToUse": true, "restoreSize": "2Gi", "creationTime": "2026-11-23T10:05:00Z",
        }))),
        // The snapshot holds the data: the Job and the golden volume go.
        Step::delete(&format!("{jobs}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!({ "phase": "restoring" }))),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(ready_project()).has(json!({
            "status": {
                "phase": "ready",
                "snapshot": {
                    "generation": 1, "createdAt": "2026-11-23T10:05:00Z", "sizeBytes": 2_147_483_648_u64,
                    "findings": [finding],
                },
                "conditions": [{ "type": "Ready", "status": "True", "reason": "SnapshotReady" }],
            },
        })),
        event("SnapshotReady", "Project", "shop"),
        // Older generations are removed by label.
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
    ]);
    let others = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fproject%3Dshop%2Cdevdb.io%2Fgeneration%2Cdevdb.io%2Fgeneration+notin+%281%29";
    steps.extend([
        Step::delete(&format!("{snapshots}?{others}")).has(background()),
        Step::delete(&format!("{jobs}?{others}")).has(background()),
        // A masking Secret a superseded restore left behind, key and all.
        Step::delete(&format!("{NS}/secrets?{others}")).has(background()),
        Step::delete(&format!("{NS}/persistentvolumeclaims?{others}")).has(background()),
        // Its databases are woken.
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
    ]);
    c.pass(Key::Project(name("shop")), steps).await;
    assert!(c.asked_for().is_empty());
}

#[tokio::test]
async fn a_failed_restore_leaves_nothing_behind_and_says_why() {
    let mut c = cluster(settings());
    let jobs = "/apis/batch/v1/namespaces/devdb-shop/jobs";
    let failed = job(json!({
        "failed": 3,
        "conditions": [{ "type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit" }],
    }));
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "restore-1-abcde", "namespace": "devdb-shop" },
        "status": { "containerStatuses": [{
            "name": "restore", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 1, "message": "cannot download https://dumps.example.com/shop.dump: 404\n" } },
        }] },
    });
    let waiting = database(json!({ "phase": "creating" }), 0, false);
    let mut steps = vec![
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!(null))),
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!(null))),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(project(json!({ "phase": "restoring" }))),
        event("Restoring", "Project", "shop"),
    ];
    steps.extend(restore_steps(&project_password()));
    steps.extend([
        Step::get(&format!("{jobs}/restore-1")).reply(failed),
        job_pods(vec![pod]),
        Step::delete(&format!("{SNAPSHOTS}/snapshot-1")),
        Step::delete(&format!("{jobs}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!({ "phase": "restoring" }))),
        Step::patch(&format!("{PROJECTS}/shop/status")).reply(project(json!({ "phase": "failed" }))).has(json!({
            "status": {
                "phase": "failed",
                "error": "the restore failed: cannot download https://dumps.example.com/shop.dump: 404",
                "conditions": [{ "type": "Ready", "status": "False", "reason": "RestoreFailed" }],
            },
        })),
        Step::post(EVENTS).has(json!({
            "type": "Warning", "reason": "RestoreFailed",
            "note": "the restore failed: cannot download https://dumps.example.com/shop.dump: 404",
        })),
        // The database waiting for it is woken, to fail with the reason too.
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![waiting]),
    ]);
    c.pass(Key::Project(name("shop")), steps).await;
    assert_eq!(c.asked_for(), [Key::Database(name("kate-pg"))]);
}

/// The source credentials (cloud keys the controller holds) are copied only into the namespace
/// of a project whose source is `s3://`, and mounted there in the restore's fetch alone; a
/// project with an https source gets no copy (its restore runs exactly as without them).
#[tokio::test]
async fn source_credentials_reach_only_the_namespace_and_the_fetch_of_an_s3_project() {
    let with_keys = ClusterSettings { source_credentials: Some("devdb-s3".into()), ..settings() };
    for s3 in [false, true] {
        let mut c = cluster(with_keys.clone());
        let location = if s3 { "s3://dumps/shop.dump" } else { "https://dumps.example.com/shop.dump" };
        let with_location = |status: Value| {
            let mut p = project(status);
            p["spec"]["backupLocation"] = json!(location);
            p
        };
        let mut namespace = resources::namespace("shop");
        resources::owned_by(&mut namespace.metadata, "Project", "shop", "uid-shop");
        let mut binding =
            resources::project_role_binding("shop", with_keys.project_access.as_ref().expect("set"), "devdb");
        resources::owned_by(&mut binding.metadata, "Project", "shop", "uid-shop");
        let mut steps = vec![
            Step::get(&format!("{PROJECTS}/shop")).reply(with_location(json!(null))),
            Step::get(&format!("{PROJECTS}/shop")).reply(with_location(json!(null))),
            Step::patch(&format!("{PROJECTS}/shop/status")).reply(with_location(json!({ "phase": "restoring" }))),
            event("Restoring", "Project", "shop"),
            Step::apply("/api/v1/namespaces/devdb-shop", &namespace),
            Step::apply(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/devdb-shop/rolebindings/devdb-controller",
                &binding,
            ),
        ];
        if s3 {
            // Fetched as the project's restore account (identity by IRSA or Pod Identity).
            steps.push(Step::apply(
                &format!("{NS}/serviceaccounts/devdb-restore"),
                &resources::restore_account("shop", &BTreeMap::new()),
            ));
        }
        steps.push(Step::apply(
            &format!("{NS}/secrets/restore-credentials"),
            &resources::project_secret("shop", "app", &project_password(), Some(location)),
        ));
        if s3 {
            let keys = json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "devdb-s3", "namespace": "devdb" },
                "data": { "AWS_ACCESS_KEY_ID": "QUtJQQ==" },
            });
            steps.push(Step::get("/api/v1/namespaces/devdb/secrets/devdb-s3").reply(keys));
            let data = std::collections::BTreeMap::from([(
                "AWS_ACCESS_KEY_ID".to_string(),
                k8s_openapi::ByteString(b"AKIA".to_vec()),
            )]);
            steps.push(Step::apply(
                &format!("{NS}/secrets/source-credentials"),
                &resources::source_credentials("shop", Some(data)),
            ));
        }
        steps.push(Step::apply(
            &format!("{NS}/persistentvolumeclaims/golden-1"),
            &resources::golden_pvc("shop", 1, &with_keys),
        ));
        let options = resources::RestoreOptions { s3, ..Default::default() };
        let restore = resources::restore_job("shop", 1, "shop", options, &with_keys);
        let text = serde_json::to_string(&restore).expect("json");
        assert_eq!(text.contains("source-credentials"), s3, "mounted for s3 only");
        steps.push(Step::apply(&format!("{JOBS}/restore-1"), &restore));
        let failed = job(json!({
            "failed": 1,
            "conditions": [{ "type": "Failed", "status": "True", "message": "Job has reached the specified backoff limit" }],
        }));
        steps.extend([
            Step::get(&format!("{JOBS}/restore-1")).reply(failed),
            job_pods(vec![]),
            Step::delete(&format!("{SNAPSHOTS}/snapshot-1")),
            Step::delete(&format!("{JOBS}/restore-1")),
            Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
            Step::get(&format!("{PROJECTS}/shop")).reply(with_location(json!({ "phase": "restoring" }))),
            Step::patch(&format!("{PROJECTS}/shop/status")).reply(with_location(json!({ "phase": "failed" }))),
            Step::post(EVENTS),
            Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
        ]);
        c.pass(Key::Project(name("shop")), steps).await;
    }
}
