//! Request sequences the scenarios share: a restore up to its Job, the snapshot taken and made
//! ready, a database's objects applied or removed by label, events and lists.

use std::collections::BTreeMap;

use devdb_kube::Passwords;
use devdb_kube::resources;
use devdb_shared::api::Masking;
use serde_json::{Value, json};

use super::*;

pub fn event(reason: &str, kind: &str, name: &str) -> Step {
    Step::post(EVENTS).has(json!({ "reason": reason, "regarding": { "kind": kind, "name": name } }))
}

/// The steps of a restore of generation 1 up to a ready snapshot, from the namespace on.
pub fn restore_steps(project_record_password: &str) -> Vec<Step> {
    restore_steps_masked(project_record_password, None)
}

/// [`restore_steps`] of a project with `masking`: its rules and key in a Secret of their own.
pub fn restore_steps_masked(project_record_password: &str, masking: Option<&Masking>) -> Vec<Step> {
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

/// The list of the restore Job's pods.
pub fn job_pods(pods: Vec<Value>) -> Step {
    Step::list(&format!("{NS}/pods?labelSelector=job-name%3Drestore-1"), pods)
}

/// The list of the database's pods.
pub fn database_pods(pods: Vec<Value>) -> Step {
    let selector = "app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fdatabase%3Dkate-pg%2Cdevdb.io%2Fproject%3Dshop";
    Step::list(&format!("{NS}/pods?labelSelector={selector}"), pods)
}

/// The list of the project namespace's Warning events.
pub fn warnings(events: Vec<Value>) -> Step {
    Step::list(&format!("{NS}/events?fieldSelector=type%3DWarning"), events)
}

/// The Job found done, the snapshot taken, and its status on each look.
pub fn job_done_then_snapshot(looks: Vec<Value>) -> Vec<Step> {
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
pub fn snapshot_ready_steps() -> Vec<Step> {
    let others = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fproject%3Dshop%2Cdevdb.io%2Fgeneration%2Cdevdb.io%2Fgeneration+notin+%281%29";
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
pub fn removed_by_label(kinds: &[&str]) -> Vec<Step> {
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
pub fn activity_documents() -> Step {
    Step::list("/api/v1/namespaces/devdb/configmaps?&labelSelector=devdb.dev%2Fdocument-group%3Dactivity", vec![])
}

/// The objects a database runs on, as the runtime must apply them (owned by the resource).
pub fn instance_steps() -> Vec<Step> {
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
