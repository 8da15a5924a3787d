//! The DevDB API existing clients speak (the seed system's OpenAPI 3.0 spec): paths, shapes and
//! status codes pinned, served from the same store as `/v1`.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_api_shapes_and_status_codes_hold() {
    let devdb = DevDb::start().await;
    let (status, health) = devdb.call(Method::GET, "/health", None).await;
    assert_eq!((status, health), (200, json!({"status": "healthy"})));
    for path in ["/health", "/projects", "/v1/projects", "/projects/nope"] {
        assert!(devdb.release_header(path).await.is_some(), "X-Release on {path}");
    }

    let (status, project) = devdb
        .call(
            Method::POST,
            "/projects",
            Some(json!({"owner": "kate", "name": "legacy", "dbType": "postgres", "dbVersion": "15"})),
        )
        .await;
    assert_eq!(status, 201, "{project}");
    assert_eq!(
        keys(&project),
        BTreeSet::from(["id", "owner", "name", "dbType", "dbVersion", "databases", "defaultCredentials"])
    );
    assert_eq!(keys(&project["defaultCredentials"]), BTreeSet::from(["username", "password", "database"]));
    assert_eq!((project["owner"].as_str(), project["dbType"].as_str()), (Some("kate"), Some("postgres")));
    let id = project["id"].as_str().expect("id").to_string();

    let metrics = reqwest::get(format!("{}/metrics", devdb.api)).await.expect("metrics").text().await.expect("text");
    assert!(
        metrics.contains("devdb_projects{status=\"pending\"} 1")
            || metrics.contains("devdb_projects{status=\"restoring\"} 1")
            || metrics.contains("devdb_projects{status=\"ready\"} 1"),
        "{metrics}"
    );
    let (status, list) = devdb.call(Method::GET, "/projects?owner=kate", None).await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().map(|a| a.len()), Some(1));
    let (_, none) = devdb.call(Method::GET, "/projects?owner=bob", None).await;
    assert_eq!(none, json!([]));
    for key in [id.as_str(), "legacy"] {
        let (status, shown) = devdb.call(Method::GET, &format!("/projects/{key}"), None).await;
        assert_eq!((status, shown["id"].as_str()), (200, Some(id.as_str())), "by {key}");
    }
    let (status, missing) = devdb.call(Method::GET, "/projects/nope", None).await;
    assert_eq!((status, missing["error"]["code"].as_str()), (404, Some("not_found")));
    devdb.settled_project("legacy").await;

    let (status, database) =
        devdb.call(Method::POST, &format!("/projects/{id}/databases"), Some(json!({"name": "old-db"}))).await;
    assert_eq!(status, 201, "{database}");
    for key in ["name", "status", "project", "host", "port", "username", "database", "password", "uri"] {
        assert!(database.get(key).is_some(), "{key} in {database}");
    }
    assert!(["creating", "running"].contains(&database["status"].as_str().unwrap_or_default()));
    let (status, _) = devdb.call(Method::POST, "/projects/legacy/databases", Some(json!({"name": "Bad Name"}))).await;
    assert_eq!(status, 400, "names are checked");
    let (status, _) = devdb.call(Method::POST, "/projects/legacy/databases", Some(json!({"name": "old-db"}))).await;
    assert_eq!(status, 409);

    let (status, list) = devdb.call(Method::GET, "/projects/legacy/databases", None).await;
    assert_eq!((status, list.as_array().map(|a| a.len())), (200, Some(1)));
    let (status, shown) = devdb.call(Method::GET, "/projects/legacy/databases/old-db", None).await;
    assert_eq!((status, shown["name"].as_str()), (200, Some("old-db")));
    let (_, project) = devdb.call(Method::GET, "/projects/legacy", None).await;
    assert_eq!(project["databases"][0]["name"], "old-db", "projects list their databases");
    assert_eq!(devdb.call(Method::GET, "/projects/legacy/databases/nope", None).await.0, 404);
    assert_eq!(devdb.call(Method::GET, "/projects/nope/databases", None).await.0, 404);
    assert_eq!(devdb.call(Method::DELETE, "/projects/legacy", None).await.0, 409, "still has a database");

    let (status, deleted) = devdb.call(Method::DELETE, "/projects/legacy/databases/old-db", None).await;
    assert_eq!(status, 200);
    assert!(deleted["message"].as_str().is_some(), "{deleted}");
    for _ in 0..100 {
        if devdb.call(Method::DELETE, &format!("/projects/{id}"), None).await.0 == 200 {
            assert_eq!(devdb.call(Method::GET, "/projects/legacy", None).await.0, 404);
            assert_eq!(devdb.call(Method::DELETE, "/projects/legacy", None).await.0, 404);
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the project never became deletable");
}
