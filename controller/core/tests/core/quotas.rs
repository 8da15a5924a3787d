//! Quotas per owner, enforced on create and start, and shown by `/v1/usage`.

use axum::http::StatusCode;
use devdb_core::fake::FakeRuntime;
use devdb_core::quota::Quotas;
use serde_json::{Value, json};

use crate::common::*;

fn with_quotas(quotas: &str) -> Core {
    let quotas: Quotas = serde_json::from_str(quotas).expect("quotas");
    Core::start_configured(FakeRuntime::default(), |config| config.quotas = quotas)
}

async fn create(core: &Core, token: &str, db: &str) -> (StatusCode, Value) {
    core.call(Some(token), "POST", "/v1/databases?wait=true", Some(json!({"name": db, "project": "shop"}))).await
}

fn message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn the_number_of_databases_and_of_running_ones_are_capped_per_owner() {
    let core = with_quotas(r#"{"default": {"databases": 2, "running": 1}, "owners": {"bob": {"running": 5}}}"#);
    core.ready_project(KATE, "shop").await;
    assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
    let (status, body) = create(&core, KATE, "kate-2").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(message(&body), "quota exceeded: running databases: kate has 1 of 1");
    assert_eq!(body["error"]["code"], "quota_exceeded", "a client tells a quota from a refused right");
    // Bob's own limit is higher: he is not held to kate's use.
    assert_eq!(create(&core, BOB, "bob-1").await.0, StatusCode::CREATED);
    assert_eq!(create(&core, BOB, "bob-2").await.0, StatusCode::CREATED);
    let (status, body) = create(&core, BOB, "bob-3").await;
    assert_eq!((status, message(&body)), (StatusCode::FORBIDDEN, "quota exceeded: databases: bob has 2 of 2"));

    // A stopped database frees its running place; a start (or a wake) beyond the cap is refused.
    core.call(Some(KATE), "POST", "/v1/databases/kate-1/stop?wait=true", None).await;
    assert_eq!(create(&core, KATE, "kate-2").await.0, StatusCode::CREATED);
    let (status, body) = core.call(Some(ADMIN), "POST", "/v1/databases/kate-1/start", None).await;
    assert_eq!((status, message(&body)), (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 1 of 1"));

    // Usage: an owner sees its own, an admin everyone's.
    let (status, usage) = core.call(Some(KATE), "GET", "/v1/usage", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        usage,
        json!([{"owner": "kate", "databases": 2, "running": 1, "disk": 2 << 20, "quota": {"databases": 2, "running": 1}}])
    );
    let (_, all) = core.call(Some(ADMIN), "GET", "/v1/usage", None).await;
    let owners: Vec<&str> = all.as_array().expect("list").iter().filter_map(|u| u["owner"].as_str()).collect();
    assert_eq!(owners, ["bob", "kate"]);
}

#[tokio::test]
async fn a_reset_that_would_start_a_database_beyond_the_running_quota_is_refused() {
    let core = with_quotas(r#"{"default": {"running": 1}}"#);
    core.ready_project(KATE, "shop").await;
    assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
    core.call(Some(KATE), "POST", "/v1/databases/kate-1/stop?wait=true", None).await;
    assert_eq!(create(&core, KATE, "kate-2").await.0, StatusCode::CREATED);
    // A reset clones again and runs the clone: for a stopped database, one more running.
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/reset?wait=true", None).await;
    assert_eq!(
        (status, message(&body)),
        (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 1 of 1"),
        "{body}"
    );
    let (_, kate1) = core.call(Some(KATE), "GET", "/v1/databases/kate-1", None).await;
    assert_eq!(kate1["status"], "stopped", "left as it was");
    let (_, usage) = core.call(Some(KATE), "GET", "/v1/usage", None).await;
    assert_eq!(usage[0]["running"], 1);
    // Resetting the running one takes no new place.
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-2/reset?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // With the place free, the stopped one may be reset (and runs).
    core.call(Some(KATE), "POST", "/v1/databases/kate-2/stop?wait=true", None).await;
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/reset?wait=true", None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{body}");
}

/// Anyone who reaches a proxy can have it wake any database (before authenticating). Such a
/// wake is no activity, goes back to sleep after its idle period, and holds no running
/// place against the owner's own start, which stops one to make room: the quota stays a
/// bound, and nobody but the owner can use it up.
#[tokio::test]
async fn wakes_for_clients_that_never_authenticate_cannot_hold_their_owners_running_quota() {
    use std::time::{Duration, SystemTime};
    let core = with_quotas(r#"{"default": {"running": 2}}"#);
    core.ready_project(KATE, "shop").await;
    let core = &core;
    let show =
        |db: &'static str| async move { core.call(Some(KATE), "GET", &format!("/v1/databases/{db}"), None).await.1 };
    for db in ["kate-1", "kate-2", "kate-3"] {
        assert_eq!(create(core, KATE, db).await.0, StatusCode::CREATED);
        if db == "kate-1" {
            // Used once (a proxy reported a session), so it has a last activity to keep.
            let body = json!({"replica": "proxy-a", "open": [], "active": ["kate-1"]});
            assert_eq!(core.call(Some(ADMIN), "POST", "/v1/activity", Some(body)).await.0, StatusCode::NO_CONTENT);
        }
        core.call(Some(KATE), "POST", &format!("/v1/databases/{db}/stop?wait=true"), None).await;
    }
    let used = show("kate-1").await["lastActiveAt"].clone();
    assert!(used.is_string() && show("kate-2").await.get("lastActiveAt").is_none());

    // Only proxies (admin tokens) wake.
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/start?wake=true", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // A flood of wakes through the proxies fills kate's running places…
    for db in ["kate-1", "kate-2"] {
        for _ in 0..3 {
            let (status, body) =
                core.call(Some(ADMIN), "POST", &format!("/v1/databases/{db}/start?wake=true"), None).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        }
        core.call(Some(ADMIN), "POST", &format!("/v1/databases/{db}/start?wait=true&wake=true"), None).await;
    }
    // …a wake gets no room beyond them…
    let (status, body) = core.call(Some(ADMIN), "POST", "/v1/databases/kate-3/start?wake=true", None).await;
    assert_eq!((status, message(&body)), (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 2 of 2"));
    // …and a wake is no activity.
    assert_eq!(show("kate-1").await["lastActiveAt"], used, "lastActiveAt does not move");
    assert!(show("kate-2").await.get("lastActiveAt").is_none());

    // Kate's own start: the longest-woken one makes room.
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-3/start?wait=true", None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{body}");
    let made_room = core.settles("kate-1", "stopped").await;
    assert_eq!(made_room["stopReason"], "idle", "{made_room}");
    assert_eq!(made_room["lastActiveAt"], used);
    let (_, usage) = core.call(Some(KATE), "GET", "/v1/usage", None).await;
    assert_eq!(usage[0]["running"], 2, "still a bound: {usage}");

    // A session on kate-2 claims its wake: from then on it holds its place like any other.
    let body = json!({"replica": "proxy-a", "open": ["kate-2"], "active": []});
    core.call(Some(ADMIN), "POST", "/v1/activity", Some(body)).await;
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/start", None).await;
    assert_eq!((status, message(&body)), (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 2 of 2"));
    assert_eq!(show("kate-2").await["status"], "running");

    // A woken database nobody uses goes back to sleep after its idle period (30 minutes),
    // counted from its start.
    core.call(Some(KATE), "POST", "/v1/databases/kate-3/stop?wait=true", None).await;
    core.call(Some(ADMIN), "POST", "/v1/databases/kate-1/start?wait=true&wake=true", None).await;
    let enforce = |later| core.reconciler.enforce_lifecycle_once(SystemTime::now() + later);
    enforce(Duration::from_secs(29 * 60)).await.expect("enforced");
    assert_eq!(show("kate-1").await["status"], "running", "not before its period is over");
    enforce(Duration::from_secs(31 * 60)).await.expect("enforced");
    let slept = core.settles("kate-1", "stopped").await;
    assert_eq!((slept["stopReason"].as_str(), &slept["lastActiveAt"]), (Some("idle"), &used));
}

#[tokio::test]
async fn concurrent_creates_cannot_both_take_the_last_place() {
    let core = with_quotas(r#"{"default": {"databases": 1}}"#);
    core.ready_project(KATE, "shop").await;
    let creates = (0..5).map(|i| {
        let body = json!({"name": format!("kate-{i}"), "project": "shop"});
        core.call(Some(KATE), "POST", "/v1/databases", Some(body))
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(creates).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::FORBIDDEN).count(), 4, "{statuses:?}");
}

#[tokio::test]
async fn disk_is_capped_by_the_snapshot_size_of_each_clone() {
    // The fake runtime's snapshots are 1 MiB.
    let core = with_quotas(r#"{"default": {"disk": "2MiB"}}"#);
    core.ready_project(KATE, "shop").await;
    assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
    assert_eq!(create(&core, KATE, "kate-2").await.0, StatusCode::CREATED);
    let (status, body) = create(&core, KATE, "kate-3").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(message(&body), "quota exceeded: disk: kate has 2.0 MiB of 2.0 MiB (this needs 1.0 MiB)");
}

#[tokio::test]
async fn a_restore_may_use_what_its_owners_disk_quota_leaves_shared_with_the_owners_other_restores() {
    // The fake runtime's snapshots are 1 MiB; kate's first clone takes one of her 3 MiB.
    let core = with_quotas(r#"{"default": {"disk": "3MiB"}, "owners": {"bob": {"disk": "100MiB"}}}"#);
    core.ready_project(KATE, "shop").await;
    assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
    let (status, _) = core.call(Some(KATE), "POST", "/v1/projects/shop/refresh", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    core.settle_project("shop").await;
    core.ready_project(BOB, "bobs").await;
    let bytes = |a: &Option<devdb_core::runtime::DiskAllowance>| a.as_ref().map(|a| a.bytes);
    let given: Vec<Option<u64>> = core.runtime.allowances().iter().map(bytes).collect();
    assert_eq!(given, [Some(3 << 20), Some(2 << 20), Some(100 << 20)]);

    // Two of bob's restores at once share what his quota leaves: what one takes, the other
    // cannot.
    core.runtime.hold_restores();
    for project in ["bob-a", "bob-b"] {
        let body = json!({"name": project, "backupLocation": "https://dumps.example.com/shop.dump"});
        assert_eq!(core.call(Some(BOB), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    }
    let mut held = Vec::new();
    for _ in 0..POLLS {
        held = core.runtime.allowances().into_iter().skip(3).flatten().collect::<Vec<_>>();
        if held.len() == 2 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(held.len(), 2, "both restores run");
    let left = held[0].bytes;
    assert!(held[0].fits(left / 2 + 1), "one alone fits");
    assert!(!held[1].fits(left / 2 + 1), "not both");
    assert!(held[1].fits(left / 2 - 1));
    core.runtime.release_restores();
    core.settle_project("bob-a").await;
    core.settle_project("bob-b").await;
    assert!(held[1].fits(left) && held[0].fits(left), "their use is gone with them");
    assert!(held[0].fits(left), "a measure after the end counts nothing back");

    let unlimited = Core::start(FakeRuntime::default());
    unlimited.ready_project(KATE, "shop").await;
    assert!(unlimited.runtime.allowances().iter().all(Option::is_none), "no disk quota, no allowance");
}
