//! Snapshot generations kept and a refresh rolled back: refreshes keep the newest generations
//! (the runtime's older snapshots are removed), a rollback makes a kept one current, new
//! databases and resets are cloned from it, and what cannot be rolled back to is refused.

use axum::http::StatusCode;
use devdb_core::fake::FakeRuntime;
use serde_json::{Value, json};

use crate::common::*;

/// Refreshes `project` and waits until generation `generation` is its current snapshot.
async fn refresh(core: &Core, project: &str, generation: u64) -> Value {
    let (status, body) = core.call(Some(KATE), "POST", &format!("/v1/projects/{project}/refresh"), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for _ in 0..POLLS {
        let p = core.settle_project(project).await;
        if p["snapshot"]["generation"] == generation {
            return p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("project {project} never restored generation {generation}");
}

/// The generations `project` lists, newest first.
fn listed(project: &Value) -> Vec<u64> {
    project["snapshots"].as_array().into_iter().flatten().filter_map(|s| s["generation"].as_u64()).collect()
}

/// Waits until the runtime has just `generations` of `project`'s snapshots.
async fn runtime_keeps(core: &Core, project: &str, generations: &[u64]) {
    for _ in 0..POLLS {
        if core.runtime.snapshots(&name(project)) == generations {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("the runtime keeps {:?} of {project}, not {generations:?}", core.runtime.snapshots(&name(project)));
}

/// Waits until `database` was cloned from `generation`.
async fn cloned_from(core: &Core, database: &str, generation: u64) {
    for _ in 0..POLLS {
        if core.runtime.cloned_from(&name(database)) == Some(generation) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("{database} was cloned from {:?}, not {generation}", core.runtime.cloned_from(&name(database)));
}

async fn rollback(core: &Core, body: Value) -> (StatusCode, Value) {
    core.call(Some(KATE), "POST", "/v1/projects/shop/rollback", Some(body)).await
}

async fn create_database(core: &Core, database: &str) {
    let body = json!({"name": database, "project": "shop"});
    let (status, created) = core.call(Some(KATE), "POST", "/v1/databases", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    core.settles(database, "running").await;
}

#[tokio::test]
async fn a_rolled_back_refresh_clones_new_databases_and_resets_from_the_kept_generation() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    create_database(&core, "kate-pg").await;
    cloned_from(&core, "kate-pg", 1).await;
    refresh(&core, "shop", 2).await;
    let project = refresh(&core, "shop", 3).await;
    assert_eq!(listed(&project), [3, 2, 1], "{project}");
    runtime_keeps(&core, "shop", &[1, 2, 3]).await;

    let (status, project) = rollback(&core, json!({})).await;
    assert_eq!(status, StatusCode::OK, "{project}");
    assert_eq!((project["snapshot"]["generation"].as_u64(), listed(&project)), (Some(2), vec![3, 2, 1]));
    create_database(&core, "kate-new").await;
    cloned_from(&core, "kate-new", 2).await;
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases/kate-pg/reset", None).await.0, StatusCode::ACCEPTED);
    cloned_from(&core, "kate-pg", 2).await;
    core.settles("kate-pg", "running").await;

    // Forward again, then to the oldest; the next refresh is newer than every kept one, and
    // the oldest goes, in the runtime too.
    assert_eq!(rollback(&core, json!({"generation": 3})).await.1["snapshot"]["generation"], 3);
    assert_eq!(rollback(&core, json!({"generation": 1})).await.1["snapshot"]["generation"], 1);
    let project = refresh(&core, "shop", 4).await;
    assert_eq!(listed(&project), [4, 3, 2], "{project}");
    runtime_keeps(&core, "shop", &[2, 3, 4]).await;
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases/kate-new/reset", None).await.0, StatusCode::ACCEPTED);
    cloned_from(&core, "kate-new", 4).await;
}

#[tokio::test]
async fn a_rollback_is_refused_clearly_and_only_the_owner_or_an_admin_may_ask() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let (status, body) = rollback(&core, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_earlier_generation")),
        "{body}"
    );
    refresh(&core, "shop", 2).await;

    let (status, body) = rollback(&core, json!({"generation": 7})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_kept")), "{body}");
    assert_eq!(body["error"]["message"], "project shop does not keep generation 7; it keeps 2 (current), 1");
    let (status, body) = rollback(&core, json!({"generation": 2})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_current")), "{body}");
    for bad in [json!({"generation": "one"}), json!({"generation": 1, "force": true})] {
        assert_eq!(rollback(&core, bad.clone()).await.0, StatusCode::BAD_REQUEST, "{bad}");
    }
    let path = "/v1/projects/shop/rollback";
    assert_eq!(core.call(Some(BOB), "POST", path, Some(json!({}))).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        core.call(Some(BOB), "POST", "/v1/projects/none/rollback", Some(json!({}))).await.0,
        StatusCode::NOT_FOUND
    );

    // While a refresh restores, nothing is rolled back; once it is done, it may be.
    core.runtime.hold_restores();
    assert_eq!(core.call(Some(KATE), "POST", "/v1/projects/shop/refresh", None).await.0, StatusCode::ACCEPTED);
    let (status, body) = rollback(&core, json!({})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("restoring")), "{body}");
    assert_eq!(body["error"]["message"], "project shop is restoring; roll it back once it is done");
    core.runtime.release_restores();
    for _ in 0..POLLS {
        if core.settle_project("shop").await["snapshot"]["generation"] == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (status, body) = core.call(Some(ADMIN), "POST", path, Some(json!({"generation": 1}))).await;
    assert_eq!((status, body["snapshot"]["generation"].as_u64()), (StatusCode::OK, Some(1)), "an admin may: {body}");
}

#[tokio::test]
async fn keeping_one_generation_leaves_nothing_to_roll_back_to() {
    let core = Core::start_configured(FakeRuntime::default(), |c| c.keep_snapshots = 1);
    core.ready_project(KATE, "shop").await;
    let project = refresh(&core, "shop", 2).await;
    assert_eq!(listed(&project), [2], "{project}");
    runtime_keeps(&core, "shop", &[2]).await;
    let (status, body) = rollback(&core, json!({"generation": 1})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_kept")), "{body}");
    assert_eq!(body["error"]["message"], "project shop does not keep generation 1; it keeps 2 (current)");
}
