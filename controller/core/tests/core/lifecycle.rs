//! Stop and start, idle stops from the proxies' reports, expiry and protection.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use devdb_core::fake::{FakeRuntime, Op};
use devdb_core::runtime::RuntimeError;
use devdb_shared::RouteState;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

/// These tests' steps, on the harness's core.
trait Steps {
    async fn running(&self, db: &str, extra: Value) -> Value;
    fn route_state(&self, db: &str) -> Option<RouteState>;
    async fn report(&self, token: &str, open: &[&str]) -> StatusCode;
    async fn enforce_at(&self, later: Duration);
}

impl Steps for Core {
    /// A running database `db` of project `shop` (kate's), created with `extra` fields.
    async fn running(&self, db: &str, extra: Value) -> Value {
        let mut body = json!({"name": db, "project": "shop"});
        body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        let (status, created) = self.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        created
    }

    fn route_state(&self, db: &str) -> Option<RouteState> {
        self.routes.current().routes.into_iter().find(|r| r.name == name(db)).map(|r| r.state)
    }

    async fn report(&self, token: &str, open: &[&str]) -> StatusCode {
        let body = json!({"replica": "proxy-a", "open": open, "active": []});
        self.call(Some(token), "POST", "/v1/activity", Some(body)).await.0
    }

    async fn enforce_at(&self, later: Duration) {
        self.reconciler.enforce_lifecycle_once(SystemTime::now() + later).await.expect("enforced");
    }
}

/// Each proxy gets the whole route table on every change: a session reported (a new
/// `lastActiveAt`) changes no route, and sends nothing.
#[tokio::test]
async fn a_reported_session_sends_the_proxies_no_new_table() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    core.running("kate-pg", json!({})).await;
    let before = core.routes.current().version;
    assert_eq!(core.report(ADMIN, &["kate-pg"]).await, StatusCode::NO_CONTENT);
    assert!(core.database("kate-pg").await.1["lastActiveAt"].is_string(), "the session is recorded");
    assert_eq!(core.routes.current().version, before, "no route changed");
}

/// A proxy that asks for changes gets the whole table once, then only what changed.
#[tokio::test]
async fn a_proxy_following_changes_is_sent_the_table_once_then_only_the_routes_that_changed() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    core.running("kate-pg", json!({})).await;
    core.running("kate-two", json!({})).await;
    let request = Request::builder()
        .uri("/v1/routes/watch?changes=true")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .expect("request");
    let response = core.app.clone().oneshot(request).await.expect("answered");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut next_line = async || -> Value {
        let frame = body.frame().await.expect("a line").expect("read");
        serde_json::from_slice(&frame.into_data().expect("data")).expect("json")
    };
    let first = next_line().await;
    assert_eq!(first["routes"].as_array().map(Vec::len), Some(2), "the whole table first: {first}");
    let (status, _) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let change = next_line().await;
    assert!(change.get("routes").is_none(), "not the table again: {change}");
    let now = core.routes.current().routes.into_iter().find(|r| r.name == name("kate-pg")).expect("routed");
    assert_eq!(now.state, RouteState::Asleep);
    assert_eq!(change["changed"], json!([now]), "kate-pg alone: {change}");
    assert!(change["version"].as_u64() > first["version"].as_u64());
}

#[tokio::test]
async fn a_stopped_database_keeps_its_credentials_sleeps_in_the_routes_and_one_start_wakes_it() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let created = core.running("kate-pg", json!({})).await;
    assert!(created.get("lastActiveAt").is_none(), "made, never used: {created}");
    // A session (a proxy's report), then none.
    assert_eq!(core.report(ADMIN, &["kate-pg"]).await, StatusCode::NO_CONTENT);
    core.report(ADMIN, &[]).await;
    let used = core.database("kate-pg").await.1["lastActiveAt"].clone();
    assert!(used.is_string(), "{used}");
    let (status, stopped) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{stopped}");
    assert_eq!((stopped["status"].as_str(), stopped["stopReason"].as_str()), (Some("stopped"), Some("manual")));
    assert!(stopped["stoppedAt"].is_string());
    assert!(!core.runtime.is_running(&name("kate-pg")), "no instance while stopped");
    assert_eq!(core.route_state("kate-pg"), Some(RouteState::Asleep), "still routed: a connection wakes it");
    let metrics = core.text_as(ADMIN, "/metrics").await;
    for line in [
        "devdb_databases_stopped{reason=\"manual\"} 1",
        "devdb_database_stopped_timestamp_seconds{database=\"kate-pg\"} 1",
        "devdb_database_last_active_timestamp_seconds{database=\"kate-pg\"} 1",
        "devdb_owner_running_databases{owner=\"kate\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    // Others see nothing of it.
    assert_eq!(core.call(Some(BOB), "POST", "/v1/databases/kate-pg/start", None).await.0, StatusCode::NOT_FOUND);

    // Many clients waking it at once (the proxy asks once per connection): one start.
    let wakes = (0..5).map(|_| core.call(Some(ADMIN), "POST", "/v1/databases/kate-pg/start", None));
    for (status, _) in futures_util::future::join_all(wakes).await {
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let running = core.settles("kate-pg", "running").await;
    let starts = core.runtime.calls().iter().filter(|c| *c == "start kate-pg").count();
    assert_eq!(starts, 1, "{:?}", core.runtime.calls());
    assert_eq!(running["password"], created["password"], "the same credentials");
    assert!(running.get("stopReason").is_none(), "{running}");
    assert_eq!(running["lastActiveAt"], used, "a start is no session");
    assert_eq!(core.route_state("kate-pg"), Some(RouteState::Ready));
}

/// A wake that cannot be scheduled (on Kubernetes: no room in the volume's zone for the
/// stuck time) loses nothing: the database sleeps again with the reason, and the next start
/// runs it on the same data, with no clone of the snapshot over it.
#[tokio::test]
async fn a_start_that_cannot_succeed_now_leaves_the_database_stopped_and_startable() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    core.running("kate-pg", json!({})).await;
    core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
    let unschedulable = "0/3 nodes are available: 3 node(s) had volume node affinity conflict";
    core.runtime
        .fail_next(Op::Start, RuntimeError::Stuck { step: "starting the database", reason: unschedulable.into() });
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("could not start") && message.contains("start it again"), "{body}");
    let (_, stopped) = core.database("kate-pg").await;
    assert_eq!(stopped["status"], "stopped", "{stopped}");
    assert!(stopped["error"].as_str().unwrap_or_default().contains("volume node affinity conflict"), "{stopped}");
    assert!(!core.runtime.is_running(&name("kate-pg")));
    assert_eq!(core.route_state("kate-pg"), Some(RouteState::Asleep), "a connection may wake it again");

    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "running");
    assert!(body.get("error").is_none(), "{body}");
    let clones = core.runtime.calls().iter().filter(|c| c.starts_with("clone kate-pg")).count();
    assert_eq!(clones, 1, "the data was never cloned over: {:?}", core.runtime.calls());
}

#[tokio::test]
async fn a_start_that_fails_says_why_and_a_failed_database_is_not_stopped_or_started() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    core.running("kate-pg", json!({})).await;
    core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
    core.runtime.fail_next(Op::Start, RuntimeError::DataMissing(name("kate-pg")));
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("reset it"), "{body}");
    assert_eq!(core.route_state("kate-pg"), Some(RouteState::Stopped), "refused at once, not woken again");
    for verb in ["stop", "start"] {
        let (status, body) = core.call(Some(KATE), "POST", &format!("/v1/databases/kate-pg/{verb}"), None).await;
        assert_eq!(status, StatusCode::CONFLICT, "{verb}: {body}");
    }
}

#[tokio::test]
async fn an_idle_database_stops_but_not_while_a_session_is_open_nor_when_protected() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    core.running("kate-pg", json!({})).await;
    core.running("keep-pg", json!({"protected": true})).await;
    core.running("never-pg", json!({"idleStopAfter": "0s"})).await;
    core.running("quick-pg", json!({"idleStopAfter": "5m"})).await;
    // Only proxies (admin tokens) report activity.
    assert_eq!(core.report(KATE, &["kate-pg"]).await, StatusCode::FORBIDDEN);
    assert_eq!(core.report(ADMIN, &["kate-pg"]).await, StatusCode::NO_CONTENT);

    // Ten minutes on: only the one with a 5-minute period stops.
    core.enforce_at(Duration::from_secs(600)).await;
    let quick = core.settles("quick-pg", "stopped").await;
    assert_eq!(quick["stopReason"], "idle");
    // 31 minutes on: kate-pg has a session open (even a silent one): it stays up.
    core.enforce_at(Duration::from_secs(31 * 60)).await;
    assert_eq!(core.database("kate-pg").await.1["status"], "running");
    // The session closed: it stops; the protected one and the one that never idles do not.
    assert_eq!(core.report(ADMIN, &[]).await, StatusCode::NO_CONTENT);
    core.enforce_at(Duration::from_secs(31 * 60)).await;
    assert_eq!(core.settles("kate-pg", "stopped").await["stopReason"], "idle");
    core.enforce_at(Duration::from_secs(365 * 24 * 3600)).await;
    for db in ["keep-pg", "never-pg"] {
        assert_eq!(core.database(db).await.1["status"], "running", "{db}");
    }
    let keep = core.database("keep-pg").await.1;
    assert_eq!((keep["protected"].as_bool(), keep.get("idleStopAfter")), (Some(true), None));
}

#[tokio::test]
async fn expired_databases_are_deleted_unless_protected_and_extend_moves_the_deadline() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let (status, body) = core
        .call(Some(KATE), "POST", "/v1/databases", Some(json!({"name": "x", "project": "shop", "ttl": "soon"})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("ttl \"soon\""), "{body}");
    // Far beyond any clock: refused, not a panic.
    for ttl in ["1000000000y", "11y"] {
        let body = json!({"name": "x", "project": "shop", "ttl": ttl});
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ttl}: {body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("ten years"), "{body}");
    }
    let created = core.running("kate-pg", json!({"ttl": "1h"})).await;
    assert!(created["expiresAt"].is_string(), "{created}");
    core.running("keep-pg", json!({"ttl": "1h", "protected": true})).await;
    // Held past its hour by an extension of three hours from now.
    core.enforce_at(Duration::from_secs(1800)).await;
    assert_eq!(core.database("kate-pg").await.0, StatusCode::OK);
    let (status, extended) =
        core.call(Some(KATE), "POST", "/v1/databases/kate-pg/extend", Some(json!({"ttl": "3h"}))).await;
    assert_eq!(status, StatusCode::OK, "{extended}");
    assert!(extended["expiresAt"].as_str() > created["expiresAt"].as_str(), "{extended}");
    core.enforce_at(Duration::from_secs(2 * 3600)).await;
    assert_eq!(core.database("kate-pg").await.0, StatusCode::OK);
    core.enforce_at(Duration::from_secs(4 * 3600)).await;
    core.settles("kate-pg", "gone").await;
    assert_eq!(core.database("keep-pg").await.0, StatusCode::OK, "protected");
    let metrics = core.text_as(ADMIN, "/metrics").await;
    assert!(metrics.contains("devdb_databases_expired_total 1"), "{metrics}");
    // Protection can be lifted; then it expires too.
    let (status, _) = core.call(Some(KATE), "PATCH", "/v1/databases/keep-pg", Some(json!({"protected": false}))).await;
    assert_eq!(status, StatusCode::OK);
    core.enforce_at(Duration::from_secs(4 * 3600)).await;
    core.settles("keep-pg", "gone").await;
}

#[tokio::test]
async fn a_projects_default_ttl_and_idle_period_apply_to_its_databases() {
    let core = Core::start(FakeRuntime::default());
    let body = json!({"name": "shop", "idleStopAfter": "10m", "defaultTtl": "2h"});
    let (status, project) = core.call(Some(KATE), "POST", "/v1/projects", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{project}");
    assert_eq!((project["idleStopAfter"].as_str(), project["defaultTtl"].as_str()), (Some("10m"), Some("2h")));
    core.settle_project("shop").await;
    let db = core.running("kate-pg", json!({})).await;
    assert_eq!(db["idleStopAfter"], "10m");
    assert!(db["expiresAt"].is_string(), "{db}");
    core.report(ADMIN, &[]).await;
    core.enforce_at(Duration::from_secs(11 * 60)).await;
    core.settles("kate-pg", "stopped").await;
}

/// Nobody can tell an idle database from a busy one while no proxy reports (one that
/// cannot reach the controller, a wrong admin token after a re-render): idle stops wait
/// for a report, and expiry does not.
#[tokio::test]
async fn idle_stops_wait_until_a_proxy_has_reported() {
    let core = Core::start(FakeRuntime::default());
    let body = json!({"name": "shop", "idleStopAfter": "10m"});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    core.settle_project("shop").await;
    core.running("kate-pg", json!({})).await;
    core.enforce_at(Duration::from_secs(11 * 60)).await;
    assert_eq!(core.database("kate-pg").await.1["status"], "running", "no proxy has reported");
    core.report(ADMIN, &[]).await;
    core.enforce_at(Duration::from_secs(11 * 60)).await;
    core.settles("kate-pg", "stopped").await;
}
