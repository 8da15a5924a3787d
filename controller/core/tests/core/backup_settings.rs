//! Backup settings: a schedule and a retention at creation, backups turned on and off on an
//! existing database (`PATCH`, a restart to change its archiving), and a project's default for
//! its new databases.

use std::time::SystemTime;

use axum::http::StatusCode;
use devdb_core::backups::Backups;
use devdb_core::fake::{FakePlatform, FakeRuntime};
use devdb_core::model::DatabaseRecord;
use devdb_core::store::Store as _;
use serde_json::{Value, json};

use crate::common::*;

async fn create(core: &Core, body: Value) -> Value {
    let (status, created) = core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created
}

async fn patch_backup(core: &Core, backup: Value) -> (StatusCode, Value) {
    core.call(Some(KATE), "PATCH", "/v1/databases/kate-pg", Some(json!({ "backup": backup }))).await
}

/// The record of kate-pg once `holds` holds of it.
async fn record_when(core: &Core, what: &str, holds: impl Fn(&DatabaseRecord) -> bool) -> DatabaseRecord {
    for _ in 0..POLLS {
        let record = core.store.database("kate-pg").await.expect("store").expect("kate-pg");
        if holds(&record) {
            return record;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("kate-pg never {what}: {:?}", core.store.database("kate-pg").await);
}

fn restarts(core: &Core) -> usize {
    core.runtime.calls().iter().filter(|c| *c == "settings kate-pg (restart)").count()
}

#[tokio::test]
async fn a_schedule_and_a_retention_are_checked_kept_and_shown() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for (backup, says) in [
        (json!({"enabled": true, "schedule": "0 3 * * *"}), "use hourly, daily or weekly"),
        (json!({"enabled": true, "schedule": "monthly"}), "use hourly, daily or weekly"),
        (json!({"enabled": true, "retention": "36h"}), "whole days"),
        (json!({"enabled": false, "schedule": "hourly"}), "go with backups on"),
        (json!({"enabled": true, "every": "hour"}), "unknown field"),
    ] {
        let body = json!({"name": "kate-pg", "project": "shop", "backup": backup});
        let (status, refused) = core.call(Some(KATE), "POST", "/v1/databases", Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{backup}: {refused}");
        assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{refused}");
    }
    assert_eq!(core.database("kate-pg").await.0, StatusCode::NOT_FOUND, "nothing made");

    let backup = json!({"enabled": true, "schedule": "Hourly", "retention": "2weeks"});
    let created = create(&core, json!({"name": "kate-pg", "project": "shop", "backup": backup})).await;
    assert_eq!(created["backup"], json!({"enabled": true, "schedule": "hourly", "retention": "14d"}));
}

#[tokio::test]
async fn backups_turned_on_restart_it_to_archive_then_back_it_up_and_turned_off_restart_it_again() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let created = create(&core, json!({"name": "kate-pg", "project": "shop"})).await;
    assert_eq!(created.get("backup"), None);
    let backups = Backups::<FakePlatform>::new(core.store.clone(), core.runtime.clone());

    // On: shown at once, backed up only once it restarted to archive.
    let (status, on) = patch_backup(&core, json!({"enabled": true, "retention": "7d"})).await;
    assert_eq!(
        (status, &on["backup"]),
        (StatusCode::OK, &json!({"enabled": true, "schedule": "daily", "retention": "7d"}))
    );
    let record = record_when(&core, "archived", |d| d.settings.archiving == Some(true)).await;
    assert_eq!(restarts(&core), 1, "{:?}", core.runtime.calls());
    assert_eq!(record.status, devdb_shared::api::DatabaseStatus::Running);
    backups.once(SystemTime::now()).await.expect("the schedule");
    let backed_up = core.database("kate-pg").await.1;
    assert!(backed_up["backup"]["lastBackupAt"].is_string(), "its first backup at once: {backed_up}");

    // Another schedule: no restart, its history kept, the rest as it was.
    let (_, hourly) = patch_backup(&core, json!({"enabled": true, "schedule": "hourly"})).await;
    assert_eq!(hourly["backup"]["schedule"], "hourly");
    assert_eq!(hourly["backup"]["retention"], "7d");
    assert_eq!(hourly["backup"]["lastBackupAt"], backed_up["backup"]["lastBackupAt"]);

    // Off: a restart without archiving, no more backups.
    let (status, off) = patch_backup(&core, json!({"enabled": false})).await;
    assert_eq!((status, off.get("backup")), (StatusCode::OK, None), "{off}");
    record_when(&core, "stopped archiving", |d| d.settings.archiving == Some(false)).await;
    assert_eq!(restarts(&core), 2, "{:?}", core.runtime.calls());
    let calls = core.runtime.calls().len();
    backups.once(SystemTime::now()).await.expect("the schedule");
    assert_eq!(core.runtime.calls().len(), calls, "nothing backed up");
    let (status, refused) = core
        .call(Some(KATE), "POST", "/v1/databases/kate-pg/restore", Some(json!({"to": "2026-12-07T10:00:00Z"})))
        .await;
    assert_eq!((status, refused["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("no_backup")));

    // Off again: nothing to change; settings with backups off are refused.
    let (status, _) = patch_backup(&core, json!({"enabled": false})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patch_backup(&core, json!({"enabled": false, "retention": "7d"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(restarts(&core), 2);
}

#[tokio::test]
async fn a_stopped_database_turned_on_archives_once_started() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    create(&core, json!({"name": "kate-pg", "project": "shop"})).await;
    let (status, _) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, on) = patch_backup(&core, json!({"enabled": true})).await;
    assert_eq!(on["status"], "stopped", "not started for it");
    let record = core.store.database("kate-pg").await.expect("store").expect("kate-pg");
    assert!(record.archiving_changed(), "archives from its next start");
    assert_eq!(restarts(&core), 0);
    let (status, _) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let record = core.store.database("kate-pg").await.expect("store").expect("kate-pg");
    assert_eq!(record.settings.archiving, Some(true), "started archiving");
}

#[tokio::test]
async fn a_projects_default_comes_after_the_request_and_before_protection() {
    let core = Core::start(FakeRuntime::default());
    let project = |name: &str, backup: Value| json!({"name": name, "backup": backup});
    let refused = core
        .call(
            Some(KATE),
            "POST",
            "/v1/projects",
            Some(project("shop", json!({"enabled": true, "schedule": "* * * * *"}))),
        )
        .await;
    assert_eq!(refused.0, StatusCode::BAD_REQUEST, "{}", refused.1);
    let default = json!({"enabled": true, "schedule": "weekly", "retention": "30d"});
    let (status, shop) = core.call(Some(KATE), "POST", "/v1/projects", Some(project("shop", default.clone()))).await;
    assert_eq!((status, &shop["backup"]), (StatusCode::CREATED, &default), "{shop}");
    let (status, bare) =
        core.call(Some(KATE), "POST", "/v1/projects", Some(project("bare", json!({"enabled": false})))).await;
    assert_eq!((status, &bare["backup"]), (StatusCode::CREATED, &json!({"enabled": false})), "{bare}");
    core.settle_project("shop").await;
    core.settle_project("bare").await;
    assert_eq!(core.call(Some(KATE), "GET", "/v1/projects/shop", None).await.1["backup"], default, "shown");

    for (name, project, extra, expected) in [
        ("plain-pg", "shop", json!({}), Some(json!({"enabled": true, "schedule": "weekly", "retention": "30d"}))),
        (
            "own-pg",
            "shop",
            json!({"backup": {"enabled": true, "schedule": "hourly"}}),
            Some(json!({"enabled": true, "schedule": "hourly", "retention": "30d"})),
        ),
        ("off-pg", "shop", json!({"backup": {"enabled": false}}), None),
        ("kept-pg", "bare", json!({"protected": true}), None),
        ("asked-pg", "bare", json!({"backup": {"enabled": true}}), Some(json!({"enabled": true, "schedule": "daily"}))),
    ] {
        let mut body = json!({"name": name, "project": project});
        body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        let created = create(&core, body).await;
        assert_eq!(created.get("backup"), expected.as_ref(), "{name}: {created}");
    }
}
