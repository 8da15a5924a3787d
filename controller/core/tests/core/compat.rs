//! The DevDB API existing clients speak (the seed system's OpenAPI 3.0 spec), beside `/v1`.

use devdb_core::fake::FakeRuntime;
use serde_json::{Value, json};

use crate::common::*;

fn keys(v: &Value) -> std::collections::BTreeSet<&str> {
    v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

/// The DevDB API existing clients speak (the seed system's OpenAPI 3.0 spec): paths, shapes and
/// status codes pinned, served from the same store as `/v1`.
#[tokio::test]
async fn the_original_api_shapes_and_status_codes_hold() {
    let core = Core::start(FakeRuntime::default());
    let (status, health) = core.call(Some(ADMIN), "GET", "/health", None).await;
    assert_eq!((status.as_u16(), health), (200, json!({"status": "healthy"})));
    for path in ["/health", "/projects", "/v1/projects", "/projects/nope"] {
        assert!(core.release_header(path).await.is_some(), "X-Release on {path}");
    }

    let (status, project) = core
        .call(
            Some(ADMIN),
            "POST",
            "/projects",
            Some(json!({"owner": "kate", "name": "legacy", "dbType": "postgres", "dbVersion": "15"})),
        )
        .await;
    assert_eq!(status.as_u16(), 201, "{project}");
    assert_eq!(
        keys(&project),
        std::collections::BTreeSet::from([
            "id",
            "owner",
            "name",
            "dbType",
            "dbVersion",
            "databases",
            "defaultCredentials"
        ])
    );
    assert_eq!(
        keys(&project["defaultCredentials"]),
        std::collections::BTreeSet::from(["username", "password", "database"])
    );
    assert_eq!((project["owner"].as_str(), project["dbType"].as_str()), (Some("kate"), Some("postgres")));
    let id = project["id"].as_str().expect("id").to_string();

    let metrics = core.text_as(ADMIN, "/metrics").await;
    assert!(
        metrics.contains("devdb_projects{status=\"pending\"} 1")
            || metrics.contains("devdb_projects{status=\"restoring\"} 1")
            || metrics.contains("devdb_projects{status=\"ready\"} 1"),
        "{metrics}"
    );
    let (status, list) = core.call(Some(ADMIN), "GET", "/projects?owner=kate", None).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(list.as_array().map(|a| a.len()), Some(1));
    let (_, none) = core.call(Some(ADMIN), "GET", "/projects?owner=bob", None).await;
    assert_eq!(none, json!([]));
    for key in [id.as_str(), "legacy"] {
        let (status, shown) = core.call(Some(ADMIN), "GET", &format!("/projects/{key}"), None).await;
        assert_eq!((status.as_u16(), shown["id"].as_str()), (200, Some(id.as_str())), "by {key}");
    }
    let (status, missing) = core.call(Some(ADMIN), "GET", "/projects/nope", None).await;
    assert_eq!((status.as_u16(), missing["error"]["code"].as_str()), (404, Some("not_found")));
    core.settle_project("legacy").await;

    let (status, database) =
        core.call(Some(ADMIN), "POST", &format!("/projects/{id}/databases"), Some(json!({"name": "old-db"}))).await;
    assert_eq!(status.as_u16(), 201, "{database}");
    for key in ["name", "status", "project", "host", "port", "username", "database", "password", "uri"] {
        assert!(database.get(key).is_some(), "{key} in {database}");
    }
    assert!(["creating", "running"].contains(&database["status"].as_str().unwrap_or_default()));
    let (status, _) =
        core.call(Some(ADMIN), "POST", "/projects/legacy/databases", Some(json!({"name": "Bad Name"}))).await;
    assert_eq!(status.as_u16(), 400, "names are checked");
    let (status, _) =
        core.call(Some(ADMIN), "POST", "/projects/legacy/databases", Some(json!({"name": "old-db"}))).await;
    assert_eq!(status.as_u16(), 409);

    let (status, list) = core.call(Some(ADMIN), "GET", "/projects/legacy/databases", None).await;
    assert_eq!((status.as_u16(), list.as_array().map(|a| a.len())), (200, Some(1)));
    let (status, shown) = core.call(Some(ADMIN), "GET", "/projects/legacy/databases/old-db", None).await;
    assert_eq!((status.as_u16(), shown["name"].as_str()), (200, Some("old-db")));
    let (_, project) = core.call(Some(ADMIN), "GET", "/projects/legacy", None).await;
    assert_eq!(project["databases"][0]["name"], "old-db", "projects list their databases");
    assert_eq!(core.call(Some(ADMIN), "GET", "/projects/legacy/databases/nope", None).await.0.as_u16(), 404);
    assert_eq!(core.call(Some(ADMIN), "GET", "/projects/nope/databases", None).await.0.as_u16(), 404);
    assert_eq!(
        core.call(Some(ADMIN), "DELETE", "/projects/legacy", None).await.0.as_u16(),
        409,
        "still has a database"
    );

    let (status, deleted) = core.call(Some(ADMIN), "DELETE", "/projects/legacy/databases/old-db", None).await;
    assert_eq!(status.as_u16(), 200);
    assert!(deleted["message"].as_str().is_some(), "{deleted}");
    for _ in 0..POLLS / 5 {
        if core.call(Some(ADMIN), "DELETE", &format!("/projects/{id}"), None).await.0.as_u16() == 200 {
            assert_eq!(core.call(Some(ADMIN), "GET", "/projects/legacy", None).await.0.as_u16(), 404);
            assert_eq!(core.call(Some(ADMIN), "DELETE", "/projects/legacy", None).await.0.as_u16(), 404);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    panic!("the project never became deletable");
}
