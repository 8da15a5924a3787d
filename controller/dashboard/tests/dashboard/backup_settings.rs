//! A database's backup settings on its page: how often it is backed up and what is kept.

use axum::http::StatusCode;
use devdb_core::fake::FakeRuntime;
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_database_page_shows_its_backup_schedule_and_retention() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let kate = format!("devdb_session={KATE}");
    for (name, backup, shown) in [
        ("kate-pg", json!({"enabled": true, "schedule": "hourly", "retention": "7d"}), "hourly; full backups kept 7d"),
        ("kate-two-pg", json!({"enabled": true}), "daily; the two newest full backups kept"),
    ] {
        let body = json!({"name": name, "project": "shop", "backup": backup});
        let (status, created) = core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let page = core.browse("GET", &format!("/ui/databases/{name}"), &kate, None, &[]).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains(&format!("<dt>Schedule</dt><dd>{shown}</dd>")), "{name}: {}", page.body);
    }
}
