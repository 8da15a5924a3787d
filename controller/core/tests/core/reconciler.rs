//! The reconciler with paused time: a restore retried after a transient failure and failed for
//! good on a bad source, restores taking turns per owner, and a dead instance supervised back.

use axum::http::StatusCode;
use devdb_core::fake::{FakeRuntime, Op};
use devdb_core::model::Key;
use devdb_core::reconcile::ReconcileError;
use devdb_core::runtime::RuntimeError;
use devdb_core::store::Store;
use devdb_shared::RouteState;
use devdb_shared::api::{DatabaseStatus, ProjectStatus};
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn a_transient_restore_failure_is_retried_and_a_source_failure_is_terminal() {
    let core = Core::start(FakeRuntime::default());
    let store = core.reconciler.store().clone();
    core.runtime.fail_next(Op::Restore, RuntimeError::Platform("the API server is restarting".into()));
    let body = json!({"name": "shop", "backupLocation": "https://dumps.example.com/d"});
    assert_eq!(core.call(Some(ADMIN), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    let error = core.reconciler.reconcile(&Key::Project(name("shop"))).await.expect_err("retried");
    assert!(matches!(error, ReconcileError::Retry(_)), "{error}");
    let project = store.project("shop").await.expect("read").expect("project");
    assert_eq!(project.status, ProjectStatus::Restoring, "not failed: it is retried");
    assert_eq!(project.error.as_deref(), Some("the platform underneath failed; retrying"));
    core.reconciler.reconcile(&Key::Project(name("shop"))).await.expect("the retry succeeds");
    let project = store.project("shop").await.expect("read").expect("project");
    assert_eq!((project.status, project.error), (ProjectStatus::Ready, None));

    core.runtime
        .fail_next(Op::Restore, RuntimeError::Source("the source is an HTML page, not a PostgreSQL dump".into()));
    let body = json!({"name": "html", "backupLocation": "https://dumps.example.com/page"});
    assert_eq!(core.call(Some(ADMIN), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    core.reconciler.reconcile(&Key::Project(name("html"))).await.expect("recorded, not retried");
    let project = store.project("html").await.expect("read").expect("project");
    assert_eq!(project.status, ProjectStatus::Failed);
    assert_eq!(project.error.as_deref(), Some("the source is an HTML page, not a PostgreSQL dump"));
}

#[tokio::test(start_paused = true)]
async fn a_dead_instance_is_marked_recovering_not_ready_and_restarted() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(ADMIN, "shop").await;
    let (status, _) = core
        .call(Some(ADMIN), "POST", "/v1/databases?wait=true", Some(json!({"name": "kate-pg", "project": "shop"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let store = core.reconciler.store().clone();
    core.reconciler.supervise_once().await.expect("checked");
    assert_eq!(store.database("kate-pg").await.expect("read").expect("db").status, DatabaseStatus::Running, "alive");

    core.runtime.kill(&name("kate-pg"));
    // It cannot start at first: it stays recovering, with the reason, and the pass is retried.
    core.runtime.fail_next(Op::Start, RuntimeError::Step { step: "starting PostgreSQL", detail: "port in use".into() });
    core.reconciler.supervise_once().await.expect("checked");
    let database = store.database("kate-pg").await.expect("read").expect("db");
    assert_eq!(database.status, DatabaseStatus::Recovering);
    assert!(database.error.as_deref().is_some_and(|e| e.contains("stopped unexpectedly")), "{database:?}");
    let mut routes = core.routes.subscribe();
    let state =
        routes.wait_for(|t| t.routes.iter().any(|r| r.state == RouteState::Starting)).await.expect("feed").routes[0]
            .state;
    assert_eq!(state, RouteState::Starting, "not ready while it recovers");

    // The pass the supervisor asked for has run meanwhile, and failed to start it.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert!(core.runtime.calls().contains(&"start kate-pg".to_string()), "{:?}", core.runtime.calls());
    let database = store.database("kate-pg").await.expect("read").expect("db");
    assert_eq!(database.status, DatabaseStatus::Recovering);
    assert_eq!(
        database.error.as_deref(),
        Some("starting PostgreSQL failed (the controller's log has the details); retrying")
    );

    core.reconciler.reconcile(&Key::Database(name("kate-pg"))).await.expect("restarted");
    let database = store.database("kate-pg").await.expect("read").expect("db");
    assert_eq!((database.status, database.error), (DatabaseStatus::Running, None));
    assert!(core.runtime.is_running(&name("kate-pg")));
    routes.wait_for(|t| t.routes.iter().all(|r| r.state == RouteState::Ready)).await.expect("ready again");
    let (_, metrics) = core.call(Some(ADMIN), "GET", "/metrics", None).await;
    assert_eq!(metrics, Value::Null, "metrics are text, not JSON");
}

#[tokio::test(start_paused = true)]
async fn restores_take_turns_per_owner_a_delete_cancels_one_and_waits_are_bounded() {
    let core = Core::start(FakeRuntime::default());
    core.runtime.hold_restores();
    let create = |n: &'static str| {
        core.call(
            Some(KATE),
            "POST",
            "/v1/projects",
            Some(json!({"name": n, "backupLocation": "https://dumps.example.com/d"})),
        )
    };
    for n in ["one", "two", "three"] {
        assert_eq!(create(n).await.0, StatusCode::CREATED);
    }
    assert_eq!(
        core.call(
            Some(BOB),
            "POST",
            "/v1/projects",
            Some(json!({"name": "bobs", "backupLocation": "https://dumps.example.com/d"}))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let core = &core;
    let status = |n: &'static str| async move {
        core.call(Some(ADMIN), "GET", &format!("/v1/projects/{n}"), None).await.1["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let kates = [status("one").await, status("two").await, status("three").await];
    assert_eq!(kates.iter().filter(|s| *s == "restoring").count(), 2, "two at once per owner: {kates:?}");
    assert_eq!(kates.iter().filter(|s| *s == "pending").count(), 1, "{kates:?}");
    assert_eq!(status("bobs").await, "restoring", "another owner's is not held up");

    // A database of a project still restoring: ?wait=true gives up after the wait, with 504.
    let (code, body) = core
        .call(Some(KATE), "POST", "/v1/databases?wait=true", Some(json!({"name": "early", "project": "one"})))
        .await;
    assert_eq!(code, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("still creating after 1m"), "{message}");
    assert_eq!(core.call(Some(KATE), "DELETE", "/v1/databases/early", None).await.0, StatusCode::ACCEPTED);

    // Deleting a project cancels its restore at once; the one waiting gets its turn.
    let restoring = if kates[0] == "restoring" { "one" } else { "two" };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (code, body) = core.call(Some(KATE), "DELETE", &format!("/v1/projects/{restoring}"), None).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        core.call(Some(ADMIN), "GET", &format!("/v1/projects/{restoring}"), None).await.0,
        StatusCode::NOT_FOUND
    );
    let kates = [status("one").await, status("two").await, status("three").await];
    assert_eq!(kates.iter().filter(|s| *s == "restoring").count(), 2, "the third restores now: {kates:?}");
}
