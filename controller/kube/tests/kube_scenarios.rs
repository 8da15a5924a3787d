//! The kube runtime against a scripted API server: for each scenario, the exact sequence of
//! requests the shared reconciler makes through the `Project`/`Database` store and the
//! [`KubeRuntime`], with the objects it sends compared to the builders' output.

mod apiserver;
mod sampling;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use apiserver::Step;
use devdb_core::model::Key;
use devdb_core::reconcile::Reconciler;
use devdb_kube::operator::{ChannelScheduler, Passes};
use devdb_kube::resources::{self, ClusterSettings};
use devdb_kube::{CrdStore, KubePlatform, KubeRuntime, Passwords, Waits};
use devdb_shared::api::Masking;
use devdb_shared::{Domain, Name};
use serde_json::{Value, json};

const KEY: &[u8] = b"the controller's secret key, 32+ bytes long";
const PROJECTS: &str = "/apis/devdb.io/v1alpha1/projects";
const DATABASES: &str = "/apis/devdb.io/v1alpha1/databases";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const NS: &str = "/api/v1/namespaces/devdb-shop";
const SELECTOR: &str = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fdatabase%3Dkate-pg";

fn settings() -> ClusterSettings {
    ClusterSettings {
        image: "devdb/postgres-db:16".into(),
        storage_class: Some("gp3".into()),
        volume_snapshot_class: Some("ebs-csi".into()),
        volume_size: "20Gi".into(),
        restore_cpu: "1".into(),
        restore_memory: "2Gi".into(),
        restore_deadline: std::time::Duration::from_secs(6 * 3600),
        proxy_namespace: "devdb".into(),
        proxy_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "devdb-proxy".into())]),
        controller_namespace: "devdb".into(),
        // The probe needs the cluster's DNS and network (`isolation` has its own tests).
        require_network_policy: false,
        source_credentials: None,
        restore_account_annotations: BTreeMap::new(),
        project_access: Some(resources::ProjectAccess {
            cluster_role: "devdb-project".into(),
            service_account: "devdb-controller".into(),
        }),
        cluster_domain: "cluster.local".into(),
    }
}

fn name(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

/// The reconciler over the kube runtime, talking to a scripted API server.
struct Cluster {
    reconciler: Arc<Reconciler<KubePlatform>>,
    server: apiserver::ApiServer,
    /// Passes the reconciler asks the controllers for (as the leader keeps them).
    passes: Passes,
}

fn cluster(settings: ClusterSettings) -> Cluster {
    impatient_cluster(settings, Duration::from_secs(3600))
}

/// A cluster whose waits fail once a pod has been blocked for `stuck`.
fn impatient_cluster(settings: ClusterSettings, stuck: Duration) -> Cluster {
    let (client, server) = apiserver::client();
    let waits = Waits {
        every: Duration::from_millis(1),
        restore: Duration::from_secs(30),
        snapshot: Duration::from_secs(30),
        ready: Duration::from_secs(30),
        release: Duration::from_secs(30),
        stuck,
    };
    let domain = Domain::new("db.example.com").expect("domain");
    let runtime = Arc::new(KubeRuntime::new(client.clone(), settings, 16, domain, 5432, waits));
    let reporter =
        kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: Some("test".into()) };
    let store = Arc::new(CrdStore::new(client, "devdb", Passwords::new(KEY), reporter));
    let (scheduler, passes) = ChannelScheduler::new();
    passes.lead();
    Cluster { reconciler: Reconciler::new(store, runtime, scheduler), server, passes }
}

impl Cluster {
    /// Runs one reconcile pass of `key` against `steps`, then checks nothing else was asked.
    async fn pass(&mut self, key: Key, steps: Vec<Step>) -> Vec<Value> {
        let reconciler = self.reconciler.clone();
        let mut pass = tokio::spawn(async move { reconciler.reconcile(&key).await });
        let bodies = tokio::select! {
            bodies = self.server.run(steps) => bodies,
            result = &mut pass => panic!("the pass ended before the script: {result:?}"),
        };
        pass.await.expect("pass ran").expect("pass succeeded");
        self.server.quiet().await;
        bodies
    }

    /// Like [`Cluster::pass`], for a pass that ends in an error (to be retried with backoff).
    async fn failing_pass(&mut self, key: Key, steps: Vec<Step>) -> String {
        let reconciler = self.reconciler.clone();
        let mut pass = tokio::spawn(async move { reconciler.reconcile(&key).await });
        tokio::select! {
            _ = self.server.run(steps) => {}
            result = &mut pass => panic!("the pass ended before the script: {result:?}"),
        };
        let error = pass.await.expect("pass ran").expect_err("the pass failed");
        self.server.quiet().await;
        error.to_string()
    }

    fn asked_for(&mut self) -> Vec<Key> {
        std::iter::from_fn(|| self.passes.try_next()).collect()
    }
}

fn project(status: Value) -> Value {
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

fn ready_project() -> Value {
    project(json!({
        "phase": "ready",
        "snapshot": { "generation": 1, "createdAt": "2026-11-23T10:05:00Z", "sizeBytes": 2_147_483_648_u64 },
    }))
}

fn database(status: Value, spec_reset: u64, deleting: bool) -> Value {
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

fn job(status: Value) -> Value {
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

fn snapshot(status: Value) -> Value {
    let mut snapshot = serde_json::to_value(resources::volume_snapshot("shop", 1, &settings())).expect("json");
    snapshot["status"] = status;
    snapshot
}

fn event(reason: &str, kind: &str, name: &str) -> Step {
    Step::post(EVENTS).has(json!({ "reason": reason, "regarding": { "kind": kind, "name": name } }))
}

/// The steps of a restore of generation 1 up to a ready snapshot, from the namespace on.
fn restore_steps(project_record_password: &str) -> Vec<Step> {
    restore_steps_masked(project_record_password, None)
}

/// [`restore_steps`] of a project with `masking`: its rules and key in a Secret of their own.
fn restore_steps_masked(project_record_password: &str, masking: Option<&Masking>) -> Vec<Step> {
    let mut namespace = resources::namespace("shop");
    resources::owned_by(&mut namespace.metadata, "Project", "shop", "uid-shop");
    let mut binding =
        resources::project_role_binding("shop", settings().project_access.as_ref().expect("set"), "devdb");
    resources::owned_by(&mut binding.metadata, "Project", "shop", "uid-shop");
    let mut steps = vec![
        Step::apply("/api/v1/namespaces/devdb-shop", &namespace),
        // The controller's rights in the namespace: granted there, not cluster-wide.
        Step::apply("/apis/rbac.authorization.k8s.io/v1/namespaces/devdb-shop/rolebindings/devdb-controller", &binding),
        Step::apply(
            &format!("{NS}/secrets/restore-credentials"),
            &resources::project_secret(
                "shop",
                "app",
                project_record_password,
                Some("https://dumps.example.com/shop.dump"),
            ),
        ),
        Step::apply(&format!("{NS}/persistentvolumeclaims/golden-1"), &resources::golden_pvc("shop", 1, &settings())),
    ];
    if let Some(masking) = masking {
        let key = Passwords::new(KEY).mask_key("shop", "uid-shop", 0);
        steps.push(Step::apply(
            &format!("{NS}/secrets/restore-masking-1"),
            &resources::masking_secret("shop", 1, masking, &key),
        ));
    }
    let options = resources::RestoreOptions { masked: masking.is_some(), ..Default::default() };
    steps.push(Step::apply(
        "/apis/batch/v1/namespaces/devdb-shop/jobs/restore-1",
        &resources::restore_job("shop", 1, "shop", options, &settings()),
    ));
    steps
}

const JOBS: &str = "/apis/batch/v1/namespaces/devdb-shop/jobs";
const SNAPSHOTS: &str = "/apis/snapshot.storage.k8s.io/v1/namespaces/devdb-shop/volumesnapshots";

/// The list of the restore Job's pods.
fn job_pods(pods: Vec<Value>) -> Step {
    Step::list(&format!("{NS}/pods?labelSelector=job-name%3Drestore-1"), pods)
}

/// The list of the database's pods.
fn database_pods(pods: Vec<Value>) -> Step {
    let selector = "app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fdatabase%3Dkate-pg%2Cdevdb.io%2Fproject%3Dshop";
    Step::list(&format!("{NS}/pods?labelSelector={selector}"), pods)
}

/// The list of the project namespace's Warning events.
fn warnings(events: Vec<Value>) -> Step {
    Step::list(&format!("{NS}/events?fieldSelector=type%3DWarning"), events)
}

fn pod(name: &str, status: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "namespace": "devdb-shop" }, "status": status })
}

/// The restore Job's pod, ended with `message` (its report, or its reason).
fn finished_pod(message: &str) -> Value {
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
fn report(covered: bool, verified: Option<u64>, masked_with: Option<&Masking>) -> (String, Value) {
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

fn running_pod(name: &str) -> Value {
    pod(name, json!({ "phase": "Running" }))
}

fn unschedulable_pod(name: &str, message: &str) -> Value {
    pod(
        name,
        json!({ "phase": "Pending", "conditions": [
            { "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message },
        ] }),
    )
}

fn warning(kind: &str, name: &str, reason: &str, message: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": { "name": format!("{name}.1"), "namespace": "devdb-shop" },
        "involvedObject": { "kind": kind, "name": name, "namespace": "devdb-shop" },
        "type": "Warning", "reason": reason, "message": message, "lastTimestamp": "2026-12-02T10:00:00Z",
    })
}

/// The Job found done, the snapshot taken, and its status on each look.
fn job_done_then_snapshot(looks: Vec<Value>) -> Vec<Step> {
    let mut steps = vec![
        Step::get(&format!("{JOBS}/restore-1")).reply(job(json!({ "succeeded": 1 }))),
        // No report (an older image): nothing found is recorded, the restore goes on.
        job_pods(vec![]),
        Step::apply(&format!("{SNAPSHOTS}/snapshot-1"), &resources::volume_snapshot("shop", 1, &settings())),
    ];
    steps.extend(looks.into_iter().map(|status| Step::get(&format!("{SNAPSHOTS}/snapshot-1")).reply(snapshot(status))));
    steps
}

/// After the snapshot is ready: the Job and golden volume go, the project is ready, older
/// generations are removed and its databases woken.
fn snapshot_ready_steps() -> Vec<Step> {
    let others = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fproject%3Dshop%2Cdevdb.io%2Fgeneration%2Cdevdb.io%2Fgeneration%21%3D1";
    vec![
        Step::delete(&format!("{JOBS}/restore-1")),
        Step::delete(&format!("{NS}/persistentvolumeclaims/golden-1")),
        Step::get(&format!("{PROJECTS}/shop")).reply(project(json!({ "phase": "restoring" }))),
        Step::patch(&format!("{PROJECTS}/shop/status"))
            .reply(ready_project())
            .has(json!({ "status": { "phase": "ready" } })),
        event("SnapshotReady", "Project", "shop"),
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
        Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
        Step::delete(&format!("{SNAPSHOTS}?{others}")),
        Step::delete(&format!("{JOBS}?{others}")),
        Step::delete(&format!("{NS}/secrets?{others}")),
        Step::delete(&format!("{NS}/persistentvolumeclaims?{others}")),
        Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
    ]
}

/// The database's objects of these kinds, each listed by label in all namespaces and deleted.
fn removed_by_label(kinds: &[&str]) -> Vec<Step> {
    let networkpolicies = "/apis/networking.k8s.io/v1/namespaces/devdb-shop/networkpolicies";
    let table = [
        ("StatefulSet", "/apis/apps/v1/statefulsets", "kate-pg", STATEFULSET.to_string()),
        ("Service", "/api/v1/services", "kate-pg", format!("{NS}/services/kate-pg")),
        (
            "NetworkPolicy",
            "/apis/networking.k8s.io/v1/networkpolicies",
            "kate-pg-proxy-only",
            format!("{networkpolicies}/kate-pg-proxy-only"),
        ),
        (
            "PersistentVolumeClaim",
            "/api/v1/persistentvolumeclaims",
            "kate-pg-data",
            format!("{NS}/persistentvolumeclaims/kate-pg-data"),
        ),
    ];
    kinds
        .iter()
        .flat_map(|kind| {
            let (kind, collection, name, object) = table.iter().find(|row| row.0 == *kind).expect("a known kind");
            let found = json!({ "kind": kind, "metadata": { "name": name, "namespace": "devdb-shop" } });
            [Step::list(&format!("{collection}?{SELECTOR}"), vec![found]), Step::delete(object)]
        })
        .collect()
}

/// The controller processes' activity documents, read for a database's `lastActiveAt`.
fn activity_documents() -> Step {
    Step::list("/api/v1/namespaces/devdb/configmaps?&labelSelector=devdb.dev%2Fdocument-group%3Dactivity", vec![])
}

fn background() -> Value {
    json!({ "propagationPolicy": "Background" })
}

fn project_password() -> String {
    Passwords::new(KEY).password("project", "shop", "uid-shop")
}

fn database_password() -> String {
    Passwords::new(KEY).password("database", "kate-pg", "uid-kate")
}

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
    let others = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fproject%3Dshop%2Cdevdb.io%2Fgeneration%2Cdevdb.io%2Fgeneration%21%3D1";
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

/// A project masking customers.email, requiring rules and verifying.
fn masked_project(status: Value) -> (Value, Masking) {
    let masking = json!({
        "rules": [{ "table": "customers", "column": "email", "strategy": "email" }],
        "requireRules": true, "verify": true,
    });
    let mut project = project(status);
    project["spec"]["masking"] = masking.clone();
    (project, serde_json::from_value(masking).expect("masking"))
}

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

/// The objects a database runs on, as the runtime must apply them (owned by the resource).
fn instance_steps() -> Vec<Step> {
    let owned = |meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        resources::owned_by(meta, "Database", "kate-pg", "uid-kate");
    };
    let mut pvc = resources::database_pvc("shop", "kate-pg", 1, 16, &settings());
    owned(&mut pvc.metadata);
    let mut secret = resources::database_secret(
        "shop",
        "kate-pg",
        "app",
        &database_password(),
        "shop",
        "kate-pg.db.example.com",
        5432,
    );
    owned(&mut secret.metadata);
    let mut sts = resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new());
    owned(&mut sts.metadata);
    let mut service = resources::service("shop", "kate-pg");
    owned(&mut service.metadata);
    let mut policy = resources::network_policy("shop", "kate-pg", &settings());
    owned(&mut policy.metadata);
    vec![
        Step::apply(&format!("{NS}/persistentvolumeclaims/kate-pg-data"), &pvc),
        Step::apply(&format!("{NS}/secrets/kate-pg-credentials"), &secret),
        Step::apply("/apis/apps/v1/namespaces/devdb-shop/statefulsets/kate-pg", &sts),
        Step::apply(&format!("{NS}/services/kate-pg"), &service),
        Step::apply("/apis/networking.k8s.io/v1/namespaces/devdb-shop/networkpolicies/kate-pg-proxy-only", &policy),
    ]
}

fn statefulset(ready: i32) -> Value {
    let mut sts =
        serde_json::to_value(resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new())).expect("json");
    sts["status"] = json!({ "replicas": 1, "readyReplicas": ready });
    sts
}

fn pvc_from_snapshot() -> Value {
    serde_json::to_value(resources::database_pvc("shop", "kate-pg", 1, 16, &settings())).expect("json")
}

const STATEFULSET: &str = "/apis/apps/v1/namespaces/devdb-shop/statefulsets/kate-pg";

/// The database's StatefulSet as the runtime applies it to start or stop it.
fn scaled(replicas: i32) -> Value {
    let mut sts = resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new());
    resources::owned_by(&mut sts.metadata, "Database", "kate-pg", "uid-kate");
    let mut sts = serde_json::to_value(sts).expect("json");
    sts["spec"]["replicas"] = json!(replicas);
    sts
}

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
async fn routes_follow_the_database_resources_and_turn_ready_with_the_pod() {
    let (client, mut server) = apiserver::client();
    let reporter = kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: None };
    let store = Arc::new(CrdStore::new(client.clone(), "devdb", Passwords::new(KEY), reporter));
    let runtime = Arc::new(KubeRuntime::new(
        client,
        settings(),
        16,
        Domain::new("db.example.com").expect("domain"),
        5432,
        Waits::default(),
    ));
    let routes = devdb_core::routes::RouteFeed::default();
    let mut changes = routes.subscribe();
    let watching = tokio::spawn({
        let store = store.clone();
        async move { store.follow_databases().await }
    });
    let following = tokio::spawn(devdb_core::routes::follow::<KubePlatform>(store, runtime, routes.clone()));
    let creating = database(json!({ "phase": "creating" }), 0, false);
    let mut running = database(json!({ "phase": "running" }), 0, false);
    running["metadata"]["resourceVersion"] = json!("12");
    server
        .run(vec![
            Step::list(&format!("{DATABASES}?limit=500"), vec![creating]),
            Step::get(&format!("{DATABASES}?watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=1"))
                .events(&[("MODIFIED", running)]),
        ])
        .await;
    let table = loop {
        changes.changed().await.expect("feed open");
        let table = changes.borrow_and_update().clone();
        if table.routes.iter().any(|r| r.state == devdb_shared::RouteState::Ready) {
            break table;
        }
    };
    assert_eq!(table.routes.len(), 1);
    assert_eq!(table.routes[0].name, name("kate-pg"));
    assert_eq!(table.routes[0].backend, "kate-pg.devdb-shop.svc.cluster.local.:5432");
    following.abort();
    watching.abort();
}

/// A pass over a running database asks nothing of the API server when the StatefulSets' watch
/// saw its pod ready (a new leader passes over every database), and reads it when it did not.
#[tokio::test]
async fn a_running_database_the_watch_saw_ready_is_passed_over_without_a_request() {
    use devdb_core::runtime::Runtime;
    let (client, mut server) = apiserver::client();
    let mut runtime = KubeRuntime::new(
        client,
        settings(),
        16,
        Domain::new("db.example.com").expect("domain"),
        5432,
        Waits::default(),
    );
    let watching = tokio::spawn(runtime.watch_statefulsets());
    let set = |name: &str, ready: i32| {
        let mut set = statefulset(ready);
        set["metadata"]["name"] = json!(name);
        set["metadata"]["namespace"] = json!("devdb-shop");
        set
    };
    server
        .run(vec![
            Step::list(
                "/apis/apps/v1/statefulsets?&labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fdatabase&limit=500",
                vec![set("kate-pg", 1), set("bob-pg", 0)],
            ),
            Step::get("/apis/apps/v1/statefulsets?&watch=true&timeoutSeconds=290&labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fdatabase&allowWatchBookmarks=true&resourceVersion=1")
                .held(),
        ])
        .await;
    let record = |db: &str| devdb_core::model::DatabaseRecord {
        id: format!("id-{db}"),
        name: name(db),
        project: name("shop"),
        owner: "kate".into(),
        status: devdb_shared::api::DatabaseStatus::Running,
        want: devdb_core::model::Want::Run,
        port: 5432,
        password: database_password(),
        snapshot_generation: Some(1),
        error: None,
        created_at: "2026-12-07T10:00:00Z".into(),
        lifecycle: devdb_core::model::Lifecycle::default(),
        settings: devdb_core::model::Settings::default(),
    };
    let mut ready = false;
    for _ in 0..1000 {
        if tokio::time::timeout(Duration::from_millis(1), runtime.ensure_running(&record("kate-pg"))).await.is_ok() {
            ready = true;
            break;
        }
    }
    assert!(ready, "the listed StatefulSet was never taken as ready");
    server.quiet().await;
    // Not ready as watched: read, as before.
    let runtime = Arc::new(runtime);
    let checking = tokio::spawn({
        let runtime = runtime.clone();
        async move { runtime.ensure_running(&record("bob-pg")).await }
    });
    server
        .run(vec![Step::get("/apis/apps/v1/namespaces/devdb-shop/statefulsets/bob-pg").fail(500, "InternalError")])
        .await;
    assert!(checking.await.expect("ran").is_err());
    watching.abort();
}

/// Store documents (monitoring histories, the usage ledger) are ConfigMaps in the controller's
/// namespace, written whole by server-side apply.
mod documents {
    use super::*;
    use devdb_core::store::Store;

    const MAP: &str = "/api/v1/namespaces/devdb/configmaps/devdb-doc.history.db-abc";

    #[tokio::test]
    async fn a_document_is_applied_read_and_deleted_as_a_config_map() {
        let (client, mut server) = apiserver::client();
        let reporter = kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: None };
        let store = Arc::new(CrdStore::new(client, "devdb", Passwords::new(KEY), reporter));
        let map = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "devdb-doc.history.db-abc",
                "labels": {
                    "app.kubernetes.io/managed-by": "devdb",
                    "devdb.dev/document": "true",
                    "devdb.dev/document-group": "history",
                },
            },
            "data": { "document.json": "{\"hour\":[]}" },
        });
        let writing = {
            let store = store.clone();
            tokio::spawn(async move {
                store.put_document("history/db-abc", "{\"hour\":[]}").await.expect("written");
                let read = store.document("history/db-abc").await.expect("read");
                let absent = store.document("history/db-abc").await.expect("read");
                store.delete_document("history/db-abc").await.expect("deleted");
                store.delete_document("history/db-abc").await.expect("absent already is fine");
                (read, absent)
            })
        };
        server
            .run(vec![
                Step::apply(MAP, &map),
                Step::get(MAP).reply(map.clone()),
                Step::get(MAP).fail(404, "NotFound"),
                Step::delete(MAP),
                Step::delete(MAP).fail(404, "NotFound"),
            ])
            .await;
        let (read, absent) = writing.await.expect("ran");
        assert_eq!(read.as_deref(), Some("{\"hour\":[]}"));
        assert_eq!(absent, None);
    }

    #[tokio::test]
    async fn documents_of_a_group_are_listed_by_their_label_in_one_request() {
        let (client, mut server) = apiserver::client();
        let reporter = kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: None };
        let store = Arc::new(CrdStore::new(client, "devdb", Passwords::new(KEY), reporter));
        let map = |name: &str, doc: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": { "document.json": doc } });
        let listing = {
            let store = store.clone();
            tokio::spawn(async move { store.documents("activity").await.expect("listed") })
        };
        server
            .run(vec![Step::list(
                "/api/v1/namespaces/devdb/configmaps?&labelSelector=devdb.dev%2Fdocument-group%3Dactivity",
                vec![map("devdb-doc.activity.0a1b", "{}"), map("devdb-doc.activity.ff00", "{\"x\":1}")],
            )])
            .await;
        let listed = listing.await.expect("ran");
        assert_eq!(
            listed,
            vec![("activity/0a1b".to_string(), "{}".to_string()), ("activity/ff00".into(), "{\"x\":1}".into())]
        );
    }
}

mod leader {
    use super::*;
    use devdb_kube::leader::LeaderLease;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/devdb/leases/devdb-controller";

    fn held_by(holder: &str, renewed: &str, transitions: i32) -> Value {
        json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": "devdb-controller", "namespace": "devdb", "resourceVersion": "42" },
            "spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 15, "leaseTransitions": transitions,
                "acquireTime": "2026-11-23T09:00:00.000000Z", "renewTime": renewed,
            },
        })
    }

    fn contender(id: &str) -> (LeaderLease, apiserver::ApiServer) {
        let (client, server) = apiserver::client();
        (LeaderLease::new(client, "devdb", "devdb-controller", id, Duration::from_secs(15)), server)
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_lease_and_leads() {
        let (lease, mut server) = contender("controller-a");
        let acquiring = tokio::spawn(async move { lease.try_acquire().await });
        server
            .run(vec![
                Step::get(LEASE).fail(404, "NotFound"),
                Step::post("/apis/coordination.k8s.io/v1/namespaces/devdb/leases").has(json!({
                    "metadata": { "name": "devdb-controller" },
                    "spec": { "holderIdentity": "controller-a", "leaseDurationSeconds": 15, "leaseTransitions": 0 },
                })),
            ])
            .await;
        assert!(acquiring.await.expect("ran").expect("asked"));
    }

    /// A stopping leader clears the holder, so another replica takes over at its next try; a
    /// lease someone else holds is left alone.
    #[tokio::test]
    async fn a_stopping_leader_releases_the_lease_and_leaves_anothers_alone() {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let (lease, mut server) = contender("controller-a");
        let releasing = tokio::spawn(async move { lease.release().await });
        let bodies = server
            .run(vec![
                Step::get(LEASE).reply(held_by("controller-a", &now, 3)),
                Step::put(LEASE)
                    .has(json!({ "metadata": { "resourceVersion": "42" }, "spec": { "leaseTransitions": 3 } })),
            ])
            .await;
        releasing.await.expect("ran");
        let put = bodies.last().expect("the PUT");
        assert!(put["spec"].get("holderIdentity").is_none_or(Value::is_null), "no holder any more: {put}");
        let (lease, mut server) = contender("controller-a");
        let releasing = tokio::spawn(async move { lease.release().await });
        server.run(vec![Step::get(LEASE).reply(held_by("controller-b", &now, 3))]).await;
        releasing.await.expect("ran");
        server.quiet().await;
    }

    #[tokio::test]
    async fn a_live_leader_is_left_alone() {
        let (lease, mut server) = contender("controller-a");
        let acquiring = tokio::spawn(async move { lease.try_acquire().await });
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        server.run(vec![Step::get(LEASE).reply(held_by("controller-b", &now, 3))]).await;
        assert!(!acquiring.await.expect("ran").expect("asked"), "b still leads");
        server.quiet().await;
    }

    /// Asks once, against `steps`: whether this replica leads afterwards.
    async fn ask(lease: &Arc<LeaderLease>, server: &mut apiserver::ApiServer, steps: Vec<Step>) -> bool {
        let asking = tokio::spawn({
            let lease = lease.clone();
            async move { lease.try_acquire().await }
        });
        server.run(steps).await;
        asking.await.expect("ran").expect("asked")
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_is_taken_over_only_after_a_whole_duration_unrenewed_by_the_contenders_own_clock() {
        let (lease, mut server) = contender("controller-a");
        let lease = Arc::new(lease);
        // The holder's renewTime is far in the past by this replica's clock (clocks differ):
        // that alone proves nothing.
        let renewed = "2026-11-23T09:00:00.000000Z";
        assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", renewed, 3))]).await);
        tokio::time::advance(Duration::from_secs(10)).await;
        // Renewed meanwhile (a new renewTime): the holder is alive; the clock starts again.
        let renewed_again = "2026-11-23T09:00:05.000000Z";
        assert!(
            !ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", renewed_again, 3))]).await
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(
            !ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", renewed_again, 3))]).await
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        // The same record for the whole 15 s: taken over.
        let steps = vec![
            Step::get(LEASE).reply(held_by("controller-b", renewed_again, 3)),
            Step::put(LEASE).has(json!({ "spec": { "holderIdentity": "controller-a", "leaseTransitions": 4 } })),
        ];
        assert!(ask(&lease, &mut server, steps).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_lease_is_taken_over_and_a_lost_race_is_no_lead() {
        let (lease, mut server) = contender("controller-a");
        let lease = Arc::new(lease);
        let stale = "2026-11-23T09:00:00.000000Z";
        assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", stale, 3))]).await);
        tokio::time::advance(Duration::from_secs(15)).await;
        let taking = vec![
            Step::get(LEASE).reply(held_by("controller-b", stale, 3)),
            Step::put(LEASE).has(json!({
                "metadata": { "resourceVersion": "42" },
                "spec": { "holderIdentity": "controller-a", "leaseTransitions": 4 },
            })),
        ];
        assert!(ask(&lease, &mut server, taking).await);
        // Another replica wrote first: the resourceVersion no longer matches.
        let racing =
            vec![Step::get(LEASE).reply(held_by("controller-b", stale, 3)), Step::put(LEASE).fail(409, "Conflict")];
        assert!(!ask(&lease, &mut server, racing).await);
    }
    /// The holder renews with the lease its last write returned: one PUT carrying that
    /// resourceVersion, no read; when someone else wrote since (a conflict), it reads the lease.
    #[tokio::test(start_paused = true)]
    async fn the_holder_renews_without_reading_until_someone_else_writes() {
        let (lease, mut server) = contender("controller-a");
        let lease = Arc::new(lease);
        let stale = "2026-11-23T09:00:00.000000Z";
        assert!(!ask(&lease, &mut server, vec![Step::get(LEASE).reply(held_by("controller-b", stale, 3))]).await);
        tokio::time::advance(Duration::from_secs(15)).await;
        let written = |version: &str| {
            let mut lease = held_by("controller-a", stale, 4);
            lease["metadata"]["resourceVersion"] = json!(version);
            lease
        };
        let taking = vec![
            Step::get(LEASE).reply(held_by("controller-b", stale, 3)),
            Step::put(LEASE).has(json!({ "spec": { "holderIdentity": "controller-a" } })).reply(written("43")),
        ];
        assert!(ask(&lease, &mut server, taking).await);
        let renewing = vec![
            Step::put(LEASE)
                .has(json!({ "metadata": { "resourceVersion": "43" }, "spec": { "holderIdentity": "controller-a" } }))
                .reply(written("44")),
        ];
        assert!(ask(&lease, &mut server, renewing).await, "renewed with one request");
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let overtaken = vec![
            Step::put(LEASE).has(json!({ "metadata": { "resourceVersion": "44" } })).fail(409, "Conflict"),
            Step::get(LEASE).reply(held_by("controller-b", &now, 5)),
        ];
        assert!(!ask(&lease, &mut server, overtaken).await, "b wrote since: a does not lead");
        server.quiet().await;
    }
}

/// The REST API on the kube runtime writes the resources; the controllers do the rest.
mod api {
    use super::*;
    use devdb_core::api::AppState;
    use devdb_core::app::router;
    use devdb_core::config::ApiConfig;

    /// The API on a free port over the scripted cluster: (base URL, cluster).
    async fn serve() -> (String, Cluster) {
        let c = cluster(settings());
        let config = ApiConfig {
            api_listen: "127.0.0.1:0".parse().expect("addr"),
            domain: Domain::new("db.example.com").expect("domain"),
            public_port: 5432,
            tokens: devdb_core::auth::Tokens::default(),
            allow_private_sources: false,
            wait_timeout: std::time::Duration::from_secs(60),
            max_restores_per_owner: 2,
            idle_stop_after: std::time::Duration::from_secs(1800),
            lifecycle_check_every: std::time::Duration::from_secs(15),
            quotas: devdb_core::quota::Quotas::default(),
            sample_every: std::time::Duration::from_secs(30),
        };
        let state = AppState::new(config, c.reconciler.clone(), devdb_core::routes::RouteFeed::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router(state)).await });
        (url, c)
    }

    #[tokio::test]
    async fn creating_a_project_creates_its_resource_with_the_finalizer() {
        let (url, mut c) = serve().await;
        let http = devdb_cli::http::client_builder().build().expect("client");
        let body = json!({ "name": "shop", "owner": "kate", "backupLocation": "s3://dumps/shop.dump" });
        let request = tokio::spawn(http.post(format!("{url}/v1/projects")).json(&body).send());
        let mut created = project(json!(null));
        created["spec"]["backupLocation"] = json!("s3://dumps/shop.dump");
        c.server
            .run(vec![Step::post(PROJECTS).reply(created).body(json!({
                "apiVersion": "devdb.io/v1alpha1", "kind": "Project",
                "metadata": { "name": "shop", "finalizers": ["devdb.io/cleanup"] },
                "spec": {
                    "owner": "kate", "dbVersion": "16", "backupLocation": "s3://dumps/shop.dump",
                    "allowPrivateSource": true, "username": "app", "database": "shop", "snapshotGeneration": 1,
                },
            }))])
            .await;
        let response = request.await.expect("ran").expect("answered");
        assert_eq!(response.status(), 201);
        let project: Value = response.json().await.expect("json");
        assert_eq!(project["id"], "uid-shop", "the resource's uid is the id");
        assert_eq!(project["status"], "pending");
        assert_eq!(c.asked_for(), [Key::Project(name("shop"))]);

        // The same name again: the API server's AlreadyExists is the API's 409.
        let request = tokio::spawn(http.post(format!("{url}/v1/projects")).json(&body).send());
        c.server.run(vec![Step::post(PROJECTS).fail(409, "AlreadyExists")]).await;
        assert_eq!(request.await.expect("ran").expect("answered").status(), 409);
        // A file:// source means nothing to a Job in the cluster.
        let local = json!({ "name": "local", "backupLocation": "file:///tmp/x.dump" });
        let response = http.post(format!("{url}/v1/projects")).json(&local).send().await.expect("answered");
        assert_eq!(response.status(), 400);
        assert!(response.text().await.expect("text").contains("s3://"));
        c.server.quiet().await;
    }

    #[tokio::test]
    async fn masking_rules_go_into_the_projects_spec_with_the_next_generation_and_the_key_stays_out() {
        let (url, mut c) = serve().await;
        let http = devdb_cli::http::client_builder().build().expect("client");
        let (masked, _) = masked_project(ready_project()["status"].clone());
        let body = json!({ "rules": [{ "table": "customers", "column": "email", "strategy": "email" }], "requireRules": true, "verify": true });
        let request = tokio::spawn(http.put(format!("{url}/v1/projects/shop/masking")).json(&body).send());
        let mut spec_patch = json!({
            "metadata": { "resourceVersion": "7" },
            "spec": { "snapshotGeneration": 2, "masking": body },
        });
        c.server
            .run(vec![
                Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
                Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
                // Every field spelled out: a merge patch keeps what it leaves out.
                Step::patch(&format!("{PROJECTS}/shop")).reply(masked.clone()).body(spec_patch.clone()),
                Step::patch(&format!("{PROJECTS}/shop/status")).reply(masked.clone()),
            ])
            .await;
        let response = request.await.expect("ran").expect("answered");
        assert_eq!(response.status(), 202);
        let view = response.text().await.expect("text");
        let key = Passwords::new(KEY).mask_key("shop", "uid-shop", 0);
        assert!(!view.contains(&key) && !view.contains("maskKey"), "the key is never shown: {view}");
        assert_eq!(c.asked_for(), [Key::Project(name("shop"))], "a new, masked snapshot is restored");

        // No rules, no requirement: the masking leaves the spec, and a plain snapshot follows.
        let request =
            tokio::spawn(http.put(format!("{url}/v1/projects/shop/masking")).json(&json!({ "rules": [] })).send());
        spec_patch["spec"]["masking"] = Value::Null;
        c.server
            .run(vec![
                Step::get(&format!("{PROJECTS}/shop")).reply(masked.clone()),
                Step::get(&format!("{PROJECTS}/shop")).reply(masked),
                Step::patch(&format!("{PROJECTS}/shop")).reply(ready_project()).body(spec_patch),
                Step::patch(&format!("{PROJECTS}/shop/status")).reply(ready_project()),
            ])
            .await;
        assert_eq!(request.await.expect("ran").expect("answered").status(), 202);
        assert_eq!(c.asked_for(), [Key::Project(name("shop"))]);
        c.server.quiet().await;
    }

    #[tokio::test]
    async fn a_wake_through_the_api_clears_the_stop_in_the_spec_and_asks_for_a_pass() {
        let (url, mut c) = serve().await;
        let http = devdb_cli::http::client_builder().build().expect("client");
        let mut asleep =
            database(json!({ "phase": "stopped", "snapshotGeneration": 1, "stopReason": "idle" }), 0, false);
        asleep["spec"]["stopped"] = json!(true);
        let request = tokio::spawn(http.post(format!("{url}/v1/databases/kate-pg/start")).send());
        c.server
            .run(vec![
                Step::get(&format!("{DATABASES}/kate-pg")).reply(asleep.clone()),
                // The owner's use against the quota (none configured here).
                Step::list(DATABASES, vec![asleep.clone()]),
                Step::list(PROJECTS, vec![ready_project()]),
                Step::get(&format!("{DATABASES}/kate-pg")).reply(asleep.clone()),
                // The intent, in the spec: no longer stopped.
                Step::patch(&format!("{DATABASES}/kate-pg"))
                    .reply(database(json!({ "phase": "stopped", "snapshotGeneration": 1 }), 0, false))
                    .has(json!({ "metadata": { "resourceVersion": "11" }, "spec": { "stopped": false } })),
                // The status as the record has it (this fixture's lacked its Ready condition).
                Step::patch(&format!("{DATABASES}/kate-pg/status"))
                    .reply(database(json!({ "phase": "stopped", "snapshotGeneration": 1 }), 0, false))
                    .has(json!({ "status": { "phase": "stopped", "stopReason": "idle" } })),
                Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
                activity_documents(),
            ])
            .await;
        assert_eq!(request.await.expect("ran").expect("answered").status(), 202);
        assert_eq!(c.asked_for(), [Key::Database(name("kate-pg"))]);
        c.server.quiet().await;
    }

    #[tokio::test]
    async fn deleting_and_resetting_a_database_go_through_its_resource() {
        let (url, mut c) = serve().await;
        let http = devdb_cli::http::client_builder().build().expect("client");
        let running = json!({ "phase": "running", "snapshotGeneration": 1 });

        let request = tokio::spawn(http.post(format!("{url}/v1/databases/kate-pg/reset")).send());
        c.server
            .run(vec![
                Step::get(&format!("{DATABASES}/kate-pg")).reply(database(running.clone(), 0, false)),
                // Its project: whether it requires masking rules first.
                Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
                Step::get(&format!("{DATABASES}/kate-pg")).reply(database(running.clone(), 0, false)),
                Step::patch(&format!("{DATABASES}/kate-pg"))
                    .reply(database(running.clone(), 1, false))
                    .body(json!({ "metadata": { "resourceVersion": "11" }, "spec": { "resetGeneration": 1 } })),
                Step::patch(&format!("{DATABASES}/kate-pg/status"))
                    .reply(database(json!({ "phase": "creating" }), 1, false))
                    .has(json!({ "status": { "phase": "creating", "observedResetGeneration": 0 } })),
                event("Cloning", "Database", "kate-pg"),
                Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
                activity_documents(),
            ])
            .await;
        assert_eq!(request.await.expect("ran").expect("answered").status(), 202);
        assert_eq!(c.asked_for(), [Key::Database(name("kate-pg"))]);

        let request = tokio::spawn(http.delete(format!("{url}/v1/databases/kate-pg")).send());
        c.server
            .run(vec![
                Step::get(&format!("{DATABASES}/kate-pg")).reply(database(running.clone(), 0, false)),
                Step::get(&format!("{DATABASES}/kate-pg")).reply(database(running, 0, false)),
                Step::patch(&format!("{DATABASES}/kate-pg/status"))
                    .reply(database(json!({ "phase": "deleting" }), 0, false))
                    .has(json!({ "status": { "phase": "deleting" } })),
                event("Deleting", "Database", "kate-pg"),
                // Held by the finalizer until the controller has removed the instance.
                Step::delete(&format!("{DATABASES}/kate-pg")),
                Step::get(&format!("{PROJECTS}/shop")).reply(ready_project()),
                activity_documents(),
            ])
            .await;
        assert_eq!(request.await.expect("ran").expect("answered").status(), 202);
        assert_eq!(c.asked_for(), [Key::Database(name("kate-pg"))]);
        c.server.quiet().await;
    }
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

/// Waits that fail early: a pod that cannot run says why on the resource, in the platform's
/// words, and what was half made goes.
mod blocked {
    use super::*;

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
            Step::patch(&format!("{DATABASES}/kate-pg/status")).reply(database(
                json!({ "phase": "creating" }),
                0,
                false,
            )),
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
             add nodes or delete databases, see the README's capacity section): {full}"
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
}

/// The storage classes checked before the controller leads.
mod preflight {
    use super::*;
    use devdb_kube::preflight;

    const CLASSES: &str = "/apis/storage.k8s.io/v1/storageclasses";
    const SNAPSHOT_CLASSES: &str = "/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses";

    fn storage_class(name: &str, provisioner: &str, default: bool) -> Value {
        let mut class = json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": { "name": name }, "provisioner": provisioner,
        });
        if default {
            class["metadata"]["annotations"] = json!({ "storageclass.kubernetes.io/is-default-class": "true" });
        }
        class
    }

    fn snapshot_class(name: &str, driver: &str) -> Value {
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass",
            "metadata": { "name": name }, "driver": driver, "deletionPolicy": "Delete",
        })
    }

    /// Runs the check against `steps`; its error message, if any.
    async fn checked(settings: ClusterSettings, steps: Vec<Step>) -> Option<String> {
        let (client, mut server) = apiserver::client();
        let check = tokio::spawn(async move { preflight::check(&client, &settings).await });
        server.run(steps).await;
        server.quiet().await;
        check.await.expect("ran").err().map(|e| e.to_string())
    }

    #[tokio::test]
    async fn matching_classes_pass() {
        let steps = vec![
            Step::get(&format!("{CLASSES}/gp3")).reply(storage_class("gp3", "ebs.csi.aws.com", false)),
            Step::get(&format!("{SNAPSHOT_CLASSES}/ebs-csi")).reply(snapshot_class("ebs-csi", "ebs.csi.aws.com")),
        ];
        assert_eq!(checked(settings(), steps).await, None);
    }

    #[tokio::test]
    async fn a_missing_storage_class_is_refused_by_name() {
        let steps = vec![Step::get(&format!("{CLASSES}/gp3")).fail(404, "NotFound")];
        let error = checked(settings(), steps).await.expect("refused");
        assert!(error.starts_with("StorageClass \"gp3\" does not exist"), "{error}");
    }

    #[tokio::test]
    async fn the_stock_eks_default_class_cannot_snapshot() {
        let settings = ClusterSettings { storage_class: None, ..settings() };
        let steps = vec![Step::list(CLASSES, vec![storage_class("gp2", "kubernetes.io/aws-ebs", true)])];
        let error = checked(settings, steps).await.expect("refused");
        assert!(error.contains("\"gp2\" uses the in-tree provisioner kubernetes.io/aws-ebs"), "{error}");
    }

    #[tokio::test]
    async fn no_snapshot_crds_or_class_is_refused_with_the_fix() {
        let steps = vec![
            Step::get(&format!("{CLASSES}/gp3")).reply(storage_class("gp3", "ebs.csi.aws.com", false)),
            Step::get(&format!("{SNAPSHOT_CLASSES}/ebs-csi")).fail(404, "NotFound"),
        ];
        let error = checked(settings(), steps).await.expect("refused");
        assert!(
            error.contains("VolumeSnapshotClass \"ebs-csi\" does not exist") && error.contains("snapshot-controller"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_snapshot_class_of_another_driver_is_refused() {
        // EKS Auto Mode's driver beside the EBS CSI add-on's class.
        let steps = vec![
            Step::get(&format!("{CLASSES}/gp3")).reply(storage_class("gp3", "ebs.csi.eks.amazonaws.com", false)),
            Step::get(&format!("{SNAPSHOT_CLASSES}/ebs-csi")).reply(snapshot_class("ebs-csi", "ebs.csi.aws.com")),
        ];
        let error = checked(settings(), steps).await.expect("refused");
        assert!(
            error.contains(
                "is for driver ebs.csi.aws.com, but StorageClass \"gp3\" is provisioned by ebs.csi.eks.amazonaws.com"
            ),
            "{error}"
        );
    }
}

/// Whether the NLB's readiness gates are injected into the release's namespace.
mod readiness_gates {
    use super::*;
    use devdb_kube::preflight;

    async fn warned(labels: Value) -> Option<String> {
        let (client, mut server) = apiserver::client();
        let check = tokio::spawn(async move { preflight::readiness_gates(&client, "devdb").await });
        server
            .run(vec![Step::get("/api/v1/namespaces/devdb").reply(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": "devdb", "labels": labels },
            }))])
            .await;
        check.await.expect("ran").expect("read")
    }

    #[tokio::test]
    async fn a_namespace_without_the_label_is_warned_about_with_the_fix() {
        let warning = warned(json!({ "kubernetes.io/metadata.name": "devdb" })).await.expect("a warning");
        assert!(
            warning.contains("kubectl label namespace devdb elbv2.k8s.aws/pod-readiness-gate-inject=enabled"),
            "{warning}"
        );
        assert_eq!(warned(json!({ preflight::READINESS_GATE_LABEL: "enabled" })).await, None);
    }
}

/// The password key checked at start against the one first used.
mod key_guard {
    use super::*;
    use devdb_kube::key_guard;

    const MAP: &str = "/api/v1/namespaces/devdb/configmaps/devdb-key-fingerprint";

    async fn checked(key: &[u8], steps: Vec<Step>) -> Result<(), String> {
        let (client, mut server) = apiserver::client();
        let passwords = Passwords::new(key);
        let check = tokio::spawn(async move { key_guard::check(&client, "devdb", &passwords).await });
        server.run(steps).await;
        check.await.expect("ran").map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn the_first_key_is_recorded_and_only_it_is_accepted_afterwards() {
        // First start: the fingerprint is recorded (and is not the key).
        let (client, mut server) = apiserver::client();
        let check = tokio::spawn(async move { key_guard::check(&client, "devdb", &Passwords::new(KEY)).await });
        let bodies = server
            .run(vec![
                Step::get(MAP).fail(404, "NotFound"),
                Step::post("/api/v1/namespaces/devdb/configmaps")
                    .has(json!({ "metadata": { "name": "devdb-key-fingerprint" } })),
            ])
            .await;
        check.await.expect("ran").expect("recorded");
        let fingerprint = bodies[1]["data"]["fingerprint"].as_str().expect("fingerprint").to_string();
        assert!(!fingerprint.is_empty() && !String::from_utf8_lossy(KEY).contains(&fingerprint));
        let recorded = json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "devdb-key-fingerprint" }, "data": { "fingerprint": fingerprint } });
        // The same key again: fine.
        assert_eq!(checked(KEY, vec![Step::get(MAP).reply(recorded.clone())]).await, Ok(()));
        // Another key (a GitOps sync rendered a new Secret): refused, saying what to do.
        let error = checked(b"another key, also 32 bytes or more....", vec![Step::get(MAP).reply(recorded)])
            .await
            .expect_err("refused");
        assert!(
            error.contains("every database would get a new password") && error.contains("secretKeySecret"),
            "{error}"
        );
    }
}

/// Stop and start on Kubernetes: the StatefulSet scaled to zero and back, the volume kept.
mod sleep {
    use super::*;

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
}

/// PostgreSQL parameters on Kubernetes: the pod's arguments, rolled out.
mod settings {
    use super::*;

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
    fn reported(mut sts: Value, ready: i32, current: &str, update: &str) -> Value {
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
}

/// A database's data is of the PostgreSQL major it was cloned with: an image of another one
/// cannot open it.
mod major {
    use super::*;

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

/// Restores of `s3://` sources run as the project's `devdb-restore` account, and a pod the EKS
/// pod identity webhook gave no identity (it had not seen the account yet) is run once more.
mod restore_identity {
    use super::*;

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
        let mut binding =
            resources::project_role_binding("shop", irsa().project_access.as_ref().expect("set"), "devdb");
        resources::owned_by(&mut binding.metadata, "Project", "shop", "uid-shop");
        vec![
            Step::get(&format!("{PROJECTS}/shop")).reply(s3_project(json!(null))),
            Step::get(&format!("{PROJECTS}/shop")).reply(s3_project(json!(null))),
            Step::patch(&format!("{PROJECTS}/shop/status")).reply(s3_project(json!({ "phase": "restoring" }))),
            event("Restoring", "Project", "shop"),
            Step::apply(NS, &namespace),
            Step::apply(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/devdb-shop/rolebindings/devdb-controller",
                &binding,
            ),
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
        pod["spec"] =
            json!({ "initContainers": [{ "name": "fetch", "env": env }], "containers": [{ "name": "restore" }] });
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
}
