//! The resources as the API server returns them: projects, databases, the restore Job and its
//! pods and report, snapshots, StatefulSets, volumes and events.

use std::collections::BTreeMap;

use devdb_kube::resources;
use devdb_shared::api::Masking;
use serde_json::{Value, json};

use super::*;

pub fn project(status: Value) -> Value {
    json!({
        "apiVersion": "devdb.io/v1alpha1", "kind": "Project",
        "metadata": {
            "name": "shop", "uid": "uid-shop", "resourceVersion": "7",
            "creationTimestamp": "2026-11-23T10:00:00Z", "finalizers": ["devdb.io/cleanup"],
        },
        "spec": {
            "owner": "kate", "dbVersion": "16", "backupLocation": "https://dumps.example.com/shop.dump",
            "username": "app", "database": "shop", "snapshotGeneration": 1,
        },
        "status": status,
    })
}

pub fn ready_project() -> Value {
    project(json!({
        "phase": "ready",
        "snapshot": { "generation": 1, "createdAt": "2026-11-23T10:05:00Z", "sizeBytes": 2_147_483_648_u64 },
    }))
}

pub fn database(status: Value, spec_reset: u64, deleting: bool) -> Value {
    let mut d = json!({
        "apiVersion": "devdb.io/v1alpha1", "kind": "Database",
        "metadata": {
            "name": "kate-pg", "uid": "uid-kate", "resourceVersion": "11",
            "creationTimestamp": "2026-11-23T10:06:00Z", "finalizers": ["devdb.io/cleanup"],
            "labels": { "devdb.io/project": "shop" },
        },
        "spec": { "project": "shop", "owner": "kate", "resetGeneration": spec_reset },
        "status": status,
    });
    if deleting {
        d["metadata"]["deletionTimestamp"] = json!("2026-11-23T11:00:00Z");
    }
    d
}

pub fn job(status: Value) -> Value {
    let mut job = serde_json::to_value(resources::restore_job(
        "shop",
        1,
        "shop",
        resources::RestoreOptions::default(),
        &settings(),
    ))
    .expect("json");
    job["status"] = status;
    job
}

pub fn snapshot(status: Value) -> Value {
    let mut snapshot = serde_json::to_value(resources::volume_snapshot("shop", 1, &settings())).expect("json");
    snapshot["status"] = status;
    snapshot
}

/// A project masking customers.email, requiring rules and verifying.
pub fn masked_project(status: Value) -> (Value, Masking) {
    let masking = json!({
        "rules": [{ "table": "customers", "column": "email", "strategy": "email" }],
        "requireRules": true, "verify": true,
    });
    let mut project = project(status);
    project["spec"]["masking"] = masking.clone();
    (project, serde_json::from_value(masking).expect("masking"))
}

pub fn pod(name: &str, status: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": "devdb-shop" }, "status": status })
}

/// The restore Job's pod, ended with `message` (its report, or its reason).
pub fn finished_pod(message: &str) -> Value {
    pod(
        "restore-1-abcde",
        json!({ "containerStatuses": [{
            "name": "restore", "image": "devdb/postgres-db:16", "imageID": "", "ready": false, "restartCount": 0,
            "state": { "terminated": { "exitCode": 0, "message": message } },
        }] }),
    )
}

/// A restore Job's report: customers.email found (covered by a rule or not), `verified`, and
/// the rules it applied.
pub fn report(covered: bool, verified: Option<u64>, masked_with: Option<&Masking>) -> (String, Value) {
    let finding: devdb_shared::api::PiiFinding = serde_json::from_value(json!({
        "table": "public.customers", "column": "email", "kind": "email", "evidence": "20 of 20 sampled values",
        "suggested": { "table": "public.customers", "column": "email", "strategy": "email" }, "covered": covered,
    }))
    .expect("finding");
    let as_status = serde_json::to_value(&finding).expect("json");
    let masked_with = masked_with.map(|m| devdb_restore::report::rules_digest(&m.rules));
    let report = devdb_restore::report::Report { findings: vec![finding], verified, masked_with, ..Default::default() };
    (report.encode(devdb_restore::report::LIMIT), as_status)
}

pub fn running_pod(name: &str) -> Value {
    pod(name, json!({ "phase": "Running" }))
}

pub fn unschedulable_pod(name: &str, message: &str) -> Value {
    pod(
        name,
        json!({ "phase": "Pending", "conditions": [
            { "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message },
        ] }),
    )
}

pub fn warning(kind: &str, name: &str, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": format!("{name}.1"), "namespace": "devdb-shop" },
        "involvedObject": { "kind": kind, "name": name, "namespace": "devdb-shop" },
        "type": "Warning", "reason": reason, "message": message, "lastTimestamp": "2026-12-02T10:00:00Z",
    })
}

pub fn statefulset(ready: i32) -> Value {
    let mut sts =
        serde_json::to_value(resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new())).expect("json");
    sts["status"] = json!({ "replicas": 1, "readyReplicas": ready });
    sts
}

pub fn pvc_from_snapshot() -> Value {
    serde_json::to_value(resources::database_pvc("shop", "kate-pg", 1, 16, &settings())).expect("json")
}

/// The database's StatefulSet as the runtime applies it to start or stop it.
pub fn scaled(replicas: i32) -> Value {
    let mut sts = resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new());
    resources::owned_by(&mut sts.metadata, "Database", "kate-pg", "uid-kate");
    let mut sts = serde_json::to_value(sts).expect("json");
    sts["spec"]["replicas"] = json!(replicas);
    sts
}
