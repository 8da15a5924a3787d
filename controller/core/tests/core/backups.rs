//! Backups (`backup`): asked for at creation (on by default for protected databases), taken
//! by the schedule once a database runs, and shown with the window it restores to.

use std::time::SystemTime;

use axum::http::StatusCode;
use devdb_core::backups::Backups;
use devdb_core::fake::{FakePlatform, FakeRuntime, Op};
use devdb_core::runtime::RuntimeError;
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
    assert_eq!(created["backup"], json!({"enabled": true, "schedule": "daily"}), "on, nothing taken yet");

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

/// A backed-up database of kate's, `kate-pg`, and the moment it is restorable to (now).
async fn backed_up(core: &Core) -> String {
    core.backed_up_database().await;
    devdb_core::lifecycle::timestamp_micros(SystemTime::now())
}

#[tokio::test]
async fn a_restore_in_place_is_only_for_the_owner_within_the_window_and_keeps_the_state_before() {
    let core = Core::start(FakeRuntime::default());
    let to = backed_up(&core).await;
    let core = &core;
    let restore = |body: serde_json::Value| async move {
        core.call(Some(KATE), "POST", "/v1/databases/kate-pg/restore?wait=true", Some(body)).await
    };

    // Refused, nothing done: another owner's; outside the window; neither or both of to and
    // undo; an undo of nothing; unknown fields.
    let (status, _) = core.call(Some(BOB), "POST", "/v1/databases/kate-pg/restore", Some(json!({"to": to}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = restore(json!({"to": "2020-01-01T00:00:00Z"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("restorable window")), "{body}");
    for body in [json!({}), json!({"to": to, "undo": true}), json!({"to": to, "schedule": "daily"})] {
        assert_eq!(restore(body.clone()).await.0, StatusCode::BAD_REQUEST, "{body}");
    }
    let (status, body) = restore(json!({"undo": true})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("nothing_to_undo")), "{body}");
    assert!(core.runtime.restored_to().is_empty() && !core.runtime.calls().iter().any(|c| c.starts_with("keepbefore")));

    // Restored: same database, running, the moment before kept; an undo restores that moment.
    let (status, restored) = restore(json!({"to": to})).await;
    assert_eq!((status, restored["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{restored}");
    let before = restored["backup"]["beforeRestore"].as_str().expect("the state before kept").to_string();
    let (status, undone) = restore(json!({"undo": true})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{undone}");
    let moments: Vec<String> =
        core.runtime.restored_to().into_iter().map(|(_, at)| devdb_core::lifecycle::timestamp_micros(at)).collect();
    assert_eq!(moments, [to, before.clone()]);
    assert_ne!(undone["backup"]["beforeRestore"].as_str(), Some(before.as_str()), "an undo is undone the same way");
}

#[tokio::test]
async fn a_failed_restore_in_place_leaves_the_database_running_as_it_was_saying_why() {
    let runtime = FakeRuntime::default();
    runtime.fail_next(Op::RestoreInPlace, RuntimeError::Source("no WAL for that moment".into()));
    let core = Core::start(runtime);
    let to = backed_up(&core).await;
    let (status, body) =
        core.call(Some(KATE), "POST", "/v1/databases/kate-pg/restore?wait=true", Some(json!({"to": to}))).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{body}");
    assert_eq!(body["error"], "the restore failed, nothing changed: no WAL for that moment");
    assert!(core.runtime.is_running(&name("kate-pg")));
    assert_eq!(body["backup"].get("beforeRestore"), None, "nothing was replaced: nothing to undo");
}

/// A controller stopped after it kept the state before a restore goes on from that moment when
/// it starts again: it does not keep a moment already half restored.
#[tokio::test]
async fn a_restore_in_place_interrupted_goes_on_from_the_state_it_kept() {
    let core = Core::start(FakeRuntime::default());
    let to = backed_up(&core).await;
    let kept = "2026-12-07T09:00:00.000000Z".to_string();
    core.store
        .update_database(&name("kate-pg"), |d| {
            devdb_core::state::database::ask_restore(d, to.clone()).expect("asked");
            devdb_core::state::database::before_kept(d, kept.clone());
        })
        .await
        .expect("a restore under way");
    core.reconciler.trigger(devdb_core::model::Key::Database(name("kate-pg")));
    let done = core.settles("kate-pg", "running").await;
    assert_eq!(done["backup"]["beforeRestore"], kept.as_str(), "{done}");
    assert!(!core.runtime.calls().iter().any(|c| c.starts_with("keepbefore")), "{:?}", core.runtime.calls());
    assert_eq!(core.runtime.restored_to().len(), 1);
}

/// Archiving as the instance counts it reaches the database's status, its warning and
/// `/metrics`: a failing archive is a warning on a database that keeps running.
#[tokio::test]
async fn archiving_that_fails_is_a_warning_on_a_running_database_and_in_the_metrics() {
    let core = Core::start(FakeRuntime::default());
    backed_up(&core).await;
    let now = SystemTime::now();
    let ago = |s: u64| now - std::time::Duration::from_secs(s);
    let status = devdb_core::runtime::ArchiveStatus {
        last_archived_at: Some(ago(120)),
        last_failed_at: Some(ago(30)),
        failed_count: 7,
        waiting: 3,
    };
    core.runtime.set_archiving(&name("kate-pg"), status);
    let backups = Backups::<FakePlatform>::new(core.store.clone(), core.runtime.clone());
    backups.once(now).await.expect("the schedule");
    let (_, shown) = core.database("kate-pg").await;
    assert_eq!(shown["status"], "running", "{shown}");
    let backup = &shown["backup"];
    assert_eq!(
        (backup["archiveLagSeconds"].as_u64(), backup["archiveFailures"].as_u64()),
        (Some(120), Some(7)),
        "{shown}"
    );
    assert!(backup["lastArchivedAt"].is_string() && backup["archiveFailingSince"].is_string(), "{shown}");
    assert!(backup["warning"].as_str().is_some_and(|w| w.contains("archiving its WAL has failed")), "{shown}");
    let metrics = core.text_as(ADMIN, "/metrics").await;
    for series in [
        "devdb_backup_failing{database=\"kate-pg\"} 1",
        "devdb_backup_archive_failures{database=\"kate-pg\"} 7",
        "devdb_backup_archive_lag_seconds{database=\"kate-pg\"} 120",
        "devdb_backup_last_archived_timestamp_seconds{database=\"kate-pg\"}",
        "devdb_backup_repository_bytes{database=\"kate-pg\"} 1048576",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }

    // Back: the warning goes.
    core.runtime.set_archiving(
        &name("kate-pg"),
        devdb_core::runtime::ArchiveStatus { last_archived_at: Some(now), waiting: 0, ..status },
    );
    backups.once(now).await.expect("the schedule");
    let (_, shown) = core.database("kate-pg").await;
    assert_eq!((shown["backup"].get("warning"), shown["backup"].get("archiveFailingSince")), (None, None), "{shown}");
}

/// Nothing an owner sends chooses a repository, a stanza or a key: such fields are refused, not
/// ignored.
#[tokio::test]
async fn an_owner_cannot_point_backups_at_a_repository_of_their_choosing() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for backup in [
        json!({"enabled": true, "repository": "s3://someone-elses-bucket/prefix"}),
        json!({"enabled": true, "stanza": "db-bobs"}),
        json!({"enabled": true, "key": "0123"}),
    ] {
        let body = json!({"name": "kate-pg", "project": "shop", "backup": backup});
        let (status, answer) = core.call(Some(KATE), "POST", "/v1/databases", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backup}: {answer}");
    }
    let (status, _) = core.database("kate-pg").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing made");
}

/// A repository check that finds damaged files after a backup is a warning that stays until a
/// later check finds nothing; checks are weekly otherwise.
#[tokio::test]
async fn damaged_backup_files_found_by_the_check_are_a_warning_until_a_check_finds_none() {
    let runtime = FakeRuntime::default();
    runtime.fail_next(Op::Verify, RuntimeError::Source("invalid checksum '15-1/0000000100000000/0001.zst'".into()));
    let core = Core::start(runtime);
    core.backed_up_database().await;
    let (_, shown) = core.database("kate-pg").await;
    let warning = shown["backup"]["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("damaged backup files") && warning.contains("invalid checksum"), "{shown}");
    assert!(core.text_as(ADMIN, "/metrics").await.contains("devdb_backup_failing{database=\"kate-pg\"} 1"));

    // The next backup (a day on) is checked again: whole, the warning goes.
    let backups = Backups::<FakePlatform>::new(core.store.clone(), core.runtime.clone());
    let tomorrow = SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
    backups.once(tomorrow).await.expect("the schedule");
    let (_, shown) = core.database("kate-pg").await;
    assert_eq!(shown["backup"].get("warning"), None, "{shown}");
    assert!(shown["backup"]["lastVerifiedAt"].is_string(), "{shown}");
    let checks = || core.runtime.calls().iter().filter(|c| c.starts_with("verify")).count();
    assert_eq!(checks(), 2);
    // Whole: not checked again until a week has passed.
    backups.once(tomorrow + std::time::Duration::from_secs(24 * 3600)).await.expect("the schedule");
    assert_eq!(checks(), 2, "{:?}", core.runtime.calls());
}
