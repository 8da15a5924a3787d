//! The REST API on the kube runtime writes the resources; the controllers do the rest.

use devdb_core::api::AppState;
use devdb_core::config::ApiConfig;
use devdb_core::model::Key;
use devdb_kube::Passwords;
use devdb_shared::Domain;
use serde_json::{Value, json};

use crate::common::*;

/// The API on a free port over the scripted cluster: (base URL, cluster).
async fn serve() -> (String, Cluster) {
    serve_on(cluster(settings())).await
}

/// The API on a free port over `c`: (base URL, cluster).
pub async fn serve_on(c: Cluster) -> (String, Cluster) {
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
        keep_snapshots: devdb_core::reconcile::SNAPSHOTS_KEPT,
    };
    let monitor = devdb_core::monitor::Monitor::new(
        c.reconciler.store().clone(),
        c.reconciler.runtime().clone(),
        config.sample_every,
    );
    let state = AppState::new(config, c.reconciler.clone(), monitor, devdb_core::routes::RouteFeed::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = devdb_core::app::with_request_layers(devdb_core::api::router(state.clone()), state);
    tokio::spawn(async move { axum::serve(listener, app).await });
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
    let mut asleep = database(json!({ "phase": "stopped", "snapshotGeneration": 1, "stopReason": "idle" }), 0, false);
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

/// Project shop as a rollback finds it (`current` 2) or leaves it (1): generation `current` is
/// its snapshot, the other of 1 and 2 kept.
fn project_at(current: u64) -> Value {
    let snapshot = |generation: u64| {
        let created = format!("2026-11-2{}T10:05:00Z", 2 + generation);
        json!({ "generation": generation, "createdAt": created, "sizeBytes": 1024 * generation })
    };
    let ready = json!({ "type": "Ready", "status": "True", "reason": "SnapshotReady", "lastTransitionTime": "2026-11-23T10:05:00Z" });
    let mut p = project(json!({
        "phase": "ready", "snapshot": snapshot(current), "keptSnapshots": [snapshot(3 - current)], "conditions": [ready],
    }));
    p["spec"]["snapshotGeneration"] = json!(current);
    p
}

#[tokio::test]
async fn a_rollback_writes_the_kept_generation_into_the_spec_and_both_snapshots_stay() {
    let (url, mut c) = serve().await;
    let http = devdb_cli::http::client_builder().build().expect("client");
    let request = tokio::spawn(http.post(format!("{url}/v1/projects/shop/rollback")).json(&json!({})).send());
    let rolled_back = project_at(1);
    c.server
        .run(vec![
            Step::get(&format!("{PROJECTS}/shop")).reply(project_at(2)),
            Step::get(&format!("{PROJECTS}/shop")).reply(project_at(2)),
            Step::patch(&format!("{PROJECTS}/shop")).reply(rolled_back.clone()).body(json!({
                "metadata": { "resourceVersion": "7" },
                "spec": { "snapshotGeneration": 1, "masking": null },
            })),
            Step::patch(&format!("{PROJECTS}/shop/status")).reply(rolled_back.clone()).has(json!({
                "status": {
                    "phase": "ready",
                    "snapshot": { "generation": 1, "createdAt": "2026-11-23T10:05:00Z", "sizeBytes": 1024 },
                    "keptSnapshots": [{ "generation": 2, "createdAt": "2026-11-24T10:05:00Z", "sizeBytes": 2048 }],
                },
            })),
        ])
        .await;
    let response = request.await.expect("ran").expect("answered");
    assert_eq!(response.status(), 200);
    let view: Value = response.json().await.expect("json");
    assert_eq!(view["snapshot"]["generation"], 1, "{view}");
    assert_eq!(
        view["snapshots"],
        json!([
            { "generation": 2, "createdAt": "2026-11-24T10:05:00Z", "sizeBytes": 2048 },
            { "generation": 1, "createdAt": "2026-11-23T10:05:00Z", "sizeBytes": 1024 },
        ])
    );
    assert_eq!(c.asked_for(), [Key::Project(name("shop"))]);

    // Its pass removes what no kept generation has: the VolumeSnapshots of 1 and 2 stay.
    let others = "labelSelector=app.kubernetes.io%2Fmanaged-by%3Ddevdb%2Cdevdb.io%2Fproject%3Dshop%2Cdevdb.io%2Fgeneration%2Cdevdb.io%2Fgeneration+notin+%281%2C2%29";
    c.pass(
        Key::Project(name("shop")),
        vec![
            Step::get(&format!("{PROJECTS}/shop")).reply(rolled_back.clone()),
            Step::list(&format!("{DATABASES}?labelSelector=devdb.io%2Fproject%3Dshop"), vec![]),
            Step::get(&format!("{PROJECTS}/shop")).reply(rolled_back),
            Step::delete(&format!("{SNAPSHOTS}?{others}")),
            Step::delete(&format!("{JOBS}?{others}")),
            Step::delete(&format!("{NS}/secrets?{others}")),
            Step::delete(&format!("{NS}/persistentvolumeclaims?{others}")),
        ],
    )
    .await;

    // A generation it does not keep: refused, naming those it keeps; nothing is written.
    let request =
        tokio::spawn(http.post(format!("{url}/v1/projects/shop/rollback")).json(&json!({ "generation": 5 })).send());
    c.server
        .run(vec![
            Step::get(&format!("{PROJECTS}/shop")).reply(project_at(1)),
            Step::get(&format!("{PROJECTS}/shop")).reply(project_at(1)),
        ])
        .await;
    let response = request.await.expect("ran").expect("answered");
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["message"], "project shop does not keep generation 5; it keeps 1 (current), 2");
    c.server.quiet().await;
}
