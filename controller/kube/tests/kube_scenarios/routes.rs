//! Routes follow the Database resources, and the StatefulSets' watch spares a request for a
//! database it saw ready.

use std::sync::Arc;
use std::time::Duration;

use devdb_kube::{CrdStore, KubePlatform, KubeRuntime, Passwords, Waits};
use devdb_shared::Domain;
use serde_json::json;

use crate::common::*;

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
        backup: None,
        restore_from: None,
        restoring: None,
        before_restore: None,
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
