//! The REST API's rules: tokens, what each owner may see and change, the status codes and JSON
//! errors of bad requests, conflicts that tell nothing of other owners' objects, failures with
//! their safe reason, and sources shown without their secrets.

use axum::http::StatusCode;
use devdb_core::fake::{FakeRuntime, Op};
use devdb_core::runtime::RuntimeError;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn tokens_are_required_and_owners_see_and_change_only_their_own() {
    let core = Core::start(FakeRuntime::default());
    assert_eq!(core.call(None, "GET", "/v1/projects", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        core.call(Some("wrong-token-0123456789"), "GET", "/v1/databases", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = core.call(None, "GET", "/v1/projects", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    for open in ["/healthz", "/health", "/v1/openapi.json"] {
        assert_eq!(core.call(None, "GET", open, None).await.0, StatusCode::OK, "{open} needs no token");
    }
    // /metrics names every owner's databases: admins only.
    assert_eq!(core.call(None, "GET", "/metrics", None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(core.call(Some(KATE), "GET", "/metrics", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(core.call(Some(ADMIN), "GET", "/metrics", None).await.0, StatusCode::OK);

    core.ready_project(KATE, "shop").await;
    let db = |n: &str| json!({"name": n, "project": "shop"});
    assert_eq!(
        core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(db("kate-pg"))).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        core.call(Some(BOB), "POST", "/v1/databases?wait=true", Some(db("bob-pg"))).await.0,
        StatusCode::CREATED,
        "projects are shared"
    );
    let (status, answer) = core
        .call(Some(KATE), "POST", "/v1/databases", Some(json!({"name": "sneaky", "project": "shop", "owner": "bob"})))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an owner creates for itself only");
    assert_eq!(answer["error"]["code"], "not_yours");

    let (_, list) = core.call(Some(BOB), "GET", "/v1/databases", None).await;
    let names: Vec<&str> = list.as_array().expect("list").iter().filter_map(|d| d["name"].as_str()).collect();
    assert_eq!(names, ["bob-pg"]);
    let (_, list) = core.call(Some(BOB), "GET", "/v1/databases?owner=kate", None).await;
    assert_eq!(list, json!([]), "asking for another owner's shows nothing");
    for (method, path) in
        [("GET", "/v1/databases/kate-pg"), ("DELETE", "/v1/databases/kate-pg"), ("POST", "/v1/databases/kate-pg/reset")]
    {
        assert_eq!(core.call(Some(BOB), method, path, None).await.0, StatusCode::NOT_FOUND, "{method} {path}");
    }
    assert_eq!(core.call(Some(BOB), "DELETE", "/v1/projects/shop", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(core.call(Some(BOB), "POST", "/v1/projects/shop/refresh", None).await.0, StatusCode::FORBIDDEN);
    assert_eq!(
        core.call(Some(KATE), "GET", "/v1/routes", None).await.0,
        StatusCode::FORBIDDEN,
        "routes are for proxies"
    );
    assert_eq!(core.call(Some(ADMIN), "GET", "/v1/routes", None).await.0, StatusCode::OK);
    let (_, all) = core.call(Some(ADMIN), "GET", "/v1/databases", None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "admins see everything");
    let file = json!({"name": "local", "backupLocation": "file:///etc/shadow"});
    assert_eq!(
        core.call(Some(KATE), "POST", "/v1/projects", Some(file)).await.0,
        StatusCode::FORBIDDEN,
        "file:// is for admins"
    );
}

#[tokio::test]
async fn bad_requests_get_400_404_409_with_json_errors() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(ADMIN, "shop").await;
    let post = |path: &'static str, body: Value| core.call(Some(ADMIN), "POST", path, Some(body));
    for (body, code, says) in [
        (json!({"name": "Shop!"}), StatusCode::BAD_REQUEST, "lower-case"),
        (json!({"name": "shop"}), StatusCode::CONFLICT, "already exists"),
        (json!({"name": "old", "dbVersion": "9"}), StatusCode::BAD_REQUEST, "not available"),
        (json!({"name": "ftp", "backupLocation": "ftp://x/y"}), StatusCode::BAD_REQUEST, "http://"),
        (json!({"name": "inside", "backupLocation": "https://private.example/d"}), StatusCode::OK, ""),
        (
            json!({"name": "creds", "defaultCredentials": {"username": "App", "database": "x"}}),
            StatusCode::BAD_REQUEST,
            "lower-case identifier",
        ),
        (json!({"nombre": "x"}), StatusCode::BAD_REQUEST, "invalid request body"),
    ] {
        let (status, answer) = post("/v1/projects", body.clone()).await;
        if code == StatusCode::OK {
            assert_eq!(status, StatusCode::CREATED, "admins may use private sources: {answer}");
            continue;
        }
        assert_eq!(status, code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {message}");
    }
    let (status, answer) = core.call(Some(ADMIN), "POST", "/v1/projects", None).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "no body");
    let (_, answer) = post("/v1/projects", json!({"name": "shop"})).await;
    assert_eq!(answer["error"]["code"], "already_exists", "the conflict says which");
    let private = json!({"name": "kates", "backupLocation": "https://private.example/d"});
    let (status, answer) = core.call(Some(KATE), "POST", "/v1/projects", Some(private)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "owners may not: {answer}");
    let (status, _) = post("/v1/databases", json!({"name": "orphan", "project": "nope"})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(post("/v1/databases?wait=true", json!({"name": "one", "project": "shop"})).await.0, StatusCode::CREATED);
    assert_eq!(post("/v1/databases", json!({"name": "one", "project": "shop"})).await.0, StatusCode::CONFLICT);
    let (status, answer) = core.call(Some(ADMIN), "DELETE", "/v1/projects/shop", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "it has databases: {answer}");
    assert_eq!(core.call(Some(ADMIN), "GET", "/v1/databases/nope", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(core.call(Some(ADMIN), "GET", "/v1/projects/nope", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        core.call(Some(ADMIN), "GET", "/v1/databases?wait=maybe", None).await.0,
        StatusCode::OK,
        "unknown parameters are ignored"
    );
}

/// Names are global (one host name each), so a create whose name another owner holds fails;
/// the refusal is the same whoever holds it and whatever state it is in, and names no one. Other
/// owners' objects never show through a conflict.
#[tokio::test]
async fn a_conflict_tells_nothing_of_another_owners_objects_but_is_helpful_about_ones_own() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let message = |body: &Value| body["error"]["message"].as_str().unwrap_or_default().to_string();
    let create = |token, db: &str| {
        core.call(Some(token), "POST", "/v1/databases?wait=true", Some(json!({"name": db, "project": "shop"})))
    };
    assert_eq!(create(BOB, "bob-pg").await.0, StatusCode::CREATED);
    assert_eq!(create(BOB, "bob-old").await.0, StatusCode::CREATED);
    core.call(Some(BOB), "POST", "/v1/databases/bob-pg/stop?wait=true", None).await;
    // bob-old is being deleted (its instance will not go): its name is still held.
    core.runtime.fail_next(Op::Remove, RuntimeError::Platform("held".into()));
    assert_eq!(core.call(Some(BOB), "DELETE", "/v1/databases/bob-old", None).await.0, StatusCode::ACCEPTED);

    let mut refusals = Vec::new();
    for taken in ["bob-pg", "bob-old"] {
        let (status, body) = create(KATE, taken).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        refusals.push(message(&body).replace(taken, "NAME"));
        for secret in ["bob", "stopped", "deleting", "exists", "owner"] {
            assert!(!message(&body).replace(taken, "").contains(secret), "{taken}: {body}");
        }
        // The compatibility API says the same.
        let (status, compat) =
            core.call(Some(KATE), "POST", "/projects/shop/databases", Some(json!({"name": taken}))).await;
        assert_eq!((status, message(&compat)), (StatusCode::CONFLICT, message(&body)));
    }
    assert_eq!(refusals[0], refusals[1], "a stopped one and one being deleted: the same answer");
    assert!(refusals[0].contains("not available"), "{refusals:?}");
    // One's own: said plainly, with what to do.
    assert_eq!(create(KATE, "kate-pg").await.0, StatusCode::CREATED);
    let (status, own) = create(KATE, "kate-pg").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(message(&own).contains("already exists") && message(&own).contains("yours"), "{own}");

    // Projects: the same, and a name shaped like a project's id is reserved (ids and names
    // share one lookup), with the same answer.
    let (status, taken) = core.call(Some(BOB), "POST", "/v1/projects", Some(json!({"name": "shop"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    let (_, shop) = core.call(Some(BOB), "GET", "/v1/projects/shop", None).await;
    let id = shop["id"].as_str().expect("id").to_string();
    for reserved in [id.as_str(), "prj-0123456789abcdefghijklmn"] {
        let (status, body) = core.call(Some(BOB), "POST", "/v1/projects", Some(json!({"name": reserved}))).await;
        assert_eq!(status, StatusCode::CONFLICT, "{reserved}: {body}");
        assert_eq!(message(&body).replace(reserved, "NAME"), message(&taken).replace("shop", "NAME"));
    }
    assert!(message(&taken).contains("not available") && !message(&taken).contains("kate"), "{taken}");
    let (_, own) = core.call(Some(KATE), "POST", "/v1/projects", Some(json!({"name": "shop"}))).await;
    assert!(message(&own).contains("already exists") && message(&own).contains("yours"), "{own}");

    // A project with others' databases cannot be deleted, but their names are not shown.
    let (status, body) = core.call(Some(KATE), "DELETE", "/v1/projects/shop", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(message(&body).contains("kate-pg"), "one's own are named: {body}");
    assert!(!message(&body).contains("bob"), "{body}");
    core.call(Some(KATE), "DELETE", "/v1/databases/kate-pg", None).await;
    for _ in 0..POLLS {
        if core.call(Some(ADMIN), "GET", "/v1/databases/kate-pg", None).await.0 == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (status, body) = core.call(Some(KATE), "DELETE", "/v1/projects/shop", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(!message(&body).contains("bob") && message(&body).contains("still has databases"), "{body}");
    let (_, admin) = core.call(Some(ADMIN), "DELETE", "/v1/projects/shop", None).await;
    assert!(message(&admin).contains("bob-"), "an admin is told which: {admin}");
}

#[tokio::test]
async fn a_clone_that_fails_is_a_422_with_the_safe_reason_and_a_reset_of_a_deleted_one_409() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(ADMIN, "shop").await;
    core.runtime.fail_next(
        Op::Clone,
        RuntimeError::Step { step: "copying the snapshot", detail: "/srv/secret/path: ENOSPC".into() },
    );
    let (status, body) = core
        .call(Some(ADMIN), "POST", "/v1/databases?wait=true", Some(json!({"name": "doomed", "project": "shop"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("copying the snapshot failed"), "{message}");
    assert!(!message.contains("/srv/secret"), "internal detail stays in the log: {message}");
    let (_, shown) = core.call(Some(ADMIN), "GET", "/v1/databases/doomed", None).await;
    assert_eq!(shown["status"], "error");

    let (status, _) = core
        .call(Some(ADMIN), "POST", "/v1/databases?wait=true", Some(json!({"name": "gone", "project": "shop"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    core.runtime.fail_next(Op::Remove, RuntimeError::Platform("held".into()));
    assert_eq!(core.call(Some(ADMIN), "DELETE", "/v1/databases/gone", None).await.0, StatusCode::ACCEPTED);
    let (status, body) = core.call(Some(ADMIN), "POST", "/v1/databases/gone/reset", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "a reset never undoes a delete: {body}");
}

#[tokio::test]
async fn sources_are_shown_without_their_secrets_everywhere() {
    let core = Core::start(FakeRuntime::default());
    let secret = "https://svc:hunter2@dumps.example.com/d.dump?X-Amz-Signature=f00d";
    let (status, created) =
        core.call(Some(ADMIN), "POST", "/v1/projects", Some(json!({"name": "shop", "backupLocation": secret}))).await;
    assert_eq!(status, StatusCode::CREATED);
    core.settle_project("shop").await;
    let (_, v1) = core.call(Some(KATE), "GET", "/v1/projects", None).await;
    let (_, compat) = core.call(Some(KATE), "GET", "/projects", None).await;
    for text in [created.to_string(), v1.to_string(), compat.to_string()] {
        assert!(text.contains("https://dumps.example.com/d.dump?X-Amz-Signature=…"), "{text}");
        assert!(!text.contains("hunter2") && !text.contains("f00d"), "{text}");
    }
}
