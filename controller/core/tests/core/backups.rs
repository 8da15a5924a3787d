//! Backups (`backup`): asked for at creation (on by default for protected databases), taken
//! by the schedule once a database runs, and shown with the window it restores to.

use std::time::SystemTime;

use axum::http::StatusCode;
use devdb_core::backups::Backups;
use devdb_core::fake::{FakePlatform, FakeRuntime};
use serde_json::json;

use devdb_core::store::Store as _;

use crate::common::*;

#[tokio::test]
async fn a_database_with_backups_is_backed_up_once_running_and_shows_its_window() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let body = json!({"name": "kate-pg", "project": "shop", "backup": {"enabled": true}});
    let (status, created) = core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["backup"], json!({"enabled": true}), "on, nothing taken yet");

    let backups = Backups::<FakePlatform>::new(core.store.clone(), core.runtime.clone());
    backups.once(SystemTime::now()).await.expect("the schedule");
    let (_, shown) = core.database("kate-pg").await;
    for field in ["lastBackupAt", "restorableFrom", "restorableTo"] {
        assert!(shown["backup"][field].is_string(), "{field}: {shown}");
    }
    let metrics = core.text_as(ADMIN, "/metrics").await;
    for series in [
        "devdb_backup_last_success_timestamp_seconds{database=\"kate-pg\"}",
        "devdb_backup_restorable_from_timestamp_seconds{database=\"kate-pg\"}",
        "devdb_backup_failing{database=\"kate-pg\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    // Not due again until a day has passed: the window stays as it was.
    backups.once(SystemTime::now()).await.expect("the schedule");
    assert_eq!(core.database("kate-pg").await.1["backup"], shown["backup"]);
}

#[tokio::test]
async fn protected_databases_are_backed_up_unless_asked_otherwise_and_others_are_not() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for (name, extra, on) in [
        ("kept-pg", json!({"protected": true}), true),
        ("kept-bare-pg", json!({"protected": true, "backup": {"enabled": false}}), false),
        ("scratch-pg", json!({}), false),
    ] {
        let mut body = json!({"name": name, "project": "shop"});
        body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        let (status, created) = core.call(Some(KATE), "POST", "/v1/databases", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        assert_eq!(created.get("backup").is_some(), on, "{name}: {created}");
    }
}

#[tokio::test]
async fn a_database_from_anothers_backups_only_from_ones_own_backed_up_database_within_its_window() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for (name, backup) in [("kate-pg", true), ("kate-bare-pg", false)] {
        let body = json!({"name": name, "project": "shop", "backup": {"enabled": backup}});
        let (status, created) = core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
    }
    let from = |source: &str, at: &str| json!({"name": "copy-pg", "project": "shop", "fromDatabase": source, "at": at});
    let now = devdb_core::lifecycle::timestamp(SystemTime::now());

    // Nothing backed up yet; no backups at all.
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(from("kate-pg", &now))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_backup")), "{body}");
    let (_, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(from("kate-bare-pg", &now))).await;
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("its backups are off")), "{body}");

    Backups::<FakePlatform>::new(core.store.clone(), core.runtime.clone())
        .once(SystemTime::now())
        .await
        .expect("backed up");
    // Another owner's database is as unknown as any other; a moment outside is refused with the window.
    let (status, _) = core.call(Some(BOB), "POST", "/v1/databases", Some(from("kate-pg", &now))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) =
        core.call(Some(KATE), "POST", "/v1/databases", Some(from("kate-pg", "2020-01-01T00:00:00Z"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("restorable window")), "{body}");
    let (status, body) = core
        .call(Some(KATE), "POST", "/v1/databases", Some(json!({"name": "x-pg", "project": "shop", "at": now})))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "at alone: {body}");

    // The end of its window, as its backup recorded it.
    let to = core.database("kate-pg").await.1["backup"]["restorableTo"].as_str().expect("a window").to_string();
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(from("kate-pg", &to))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::CREATED, Some("running")), "{body}");
}

#[tokio::test]
async fn a_source_deleted_and_created_again_under_its_name_is_not_restored_from() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let body = json!({"name": "kate-pg", "project": "shop", "backup": {"enabled": true}});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
    // A copy asked for from kate-pg as the API saw it, reconciled after kate-pg was deleted and
    // the name taken again (here: the id it was asked from is another incarnation's).
    let mut record = core.store.database("kate-pg").await.expect("store").expect("kate-pg");
    record.name = name("copy-pg");
    record.id = "db-copy".into();
    record.status = devdb_shared::api::DatabaseStatus::Creating;
    record.snapshot_generation = None;
    record.restore_from = Some(devdb_core::model::RestoreFrom {
        database: name("kate-pg"),
        id: "db-gone".into(),
        at: "2026-12-07T10:00:00Z".into(),
    });
    core.store.insert_database(&record).await.expect("insert");
    core.reconciler.trigger(devdb_core::model::Key::Database(name("copy-pg")));
    let failed = core.settles("copy-pg", "error").await;
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("is gone")), "{failed}");
}
