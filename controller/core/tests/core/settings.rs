//! PostgreSQL parameters owners may set: checked, applied with a reload or a restart, kept
//! across reset.

use axum::http::StatusCode;
use devdb_core::fake::{FakeRuntime, Op};
use devdb_core::runtime::RuntimeError;
use serde_json::{Value, json};

use crate::common::*;

async fn patch(core: &Core, token: &str, settings: Value) -> (StatusCode, Value) {
    core.call(Some(token), "PATCH", "/v1/databases/kate-pg", Some(json!({ "settings": settings }))).await
}

async fn applied(core: &Core, call: &str) {
    for _ in 0..POLLS {
        if core.runtime.calls().iter().any(|c| c == call) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("{call} never happened: {:?}", core.runtime.calls());
}

#[tokio::test]
async fn allowed_parameters_are_checked_applied_and_kept_across_reset() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let body = json!({"name": "kate-pg", "project": "shop"});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);

    // Refused whole, saying why; nothing kept.
    for (settings, says) in [
        (json!({"shared_preload_libraries": "x"}), "cannot be set"),
        (json!({"work_mem": "64MB", "max_connections": "100000"}), "between 5 and 500"),
        (json!({"work_mem": "lots"}), "a size"),
    ] {
        let (status, body) = patch(&core, KATE, settings).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains(says), "{body}");
    }
    assert_eq!(core.call(Some(KATE), "GET", "/v1/databases/kate-pg", None).await.1.get("settings"), None);
    assert_eq!(patch(&core, BOB, json!({"work_mem": "64MB"})).await.0, StatusCode::NOT_FOUND, "not his");

    // A reloadable one, then one read only at start.
    let (status, body) = patch(&core, KATE, json!({"work_mem": "64MB"})).await;
    assert_eq!((status, &body["settings"]), (StatusCode::OK, &json!({"work_mem": "64MB"})));
    applied(&core, "settings kate-pg (reload)").await;
    patch(&core, KATE, json!({"max_connections": "50", "jit": "false"})).await;
    applied(&core, "settings kate-pg (restart)").await;
    // null: back to the default.
    let (_, body) = patch(&core, KATE, json!({"jit": null})).await;
    assert_eq!(body["settings"], json!({"work_mem": "64MB", "max_connections": "50"}));

    // A reset clones again with them (no separate apply needed afterwards).
    let (status, reset) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/reset?wait=true", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{reset}");
    assert_eq!(reset["settings"], json!({"work_mem": "64MB", "max_connections": "50"}));
}

/// A reset would lose the owner's data: settings it cannot take leave the database as it was,
/// with the reason, until its settings change again.
#[tokio::test]
async fn settings_the_database_cannot_take_leave_it_running_with_the_reason_and_a_revert_applies() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let body = json!({"name": "kate-pg", "project": "shop"});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
    let cannot = RuntimeError::Step { step: "restarting", detail: "FATAL: invalid value for parameter".into() };
    core.runtime.fail_next(Op::Settings, cannot);
    assert_eq!(patch(&core, KATE, json!({"max_connections": "50"})).await.0, StatusCode::OK);
    let mut shown = Value::Null;
    for _ in 0..POLLS {
        shown = core.call(Some(KATE), "GET", "/v1/databases/kate-pg", None).await.1;
        if shown["error"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(shown["status"], "running", "{shown}");
    assert!(shown["error"].as_str().unwrap_or_default().starts_with("settings not applied"), "{shown}");
    // Reverted: applied, and the reason is gone.
    assert_eq!(patch(&core, KATE, json!({"max_connections": null})).await.0, StatusCode::OK);
    for _ in 0..POLLS {
        shown = core.call(Some(KATE), "GET", "/v1/databases/kate-pg", None).await.1;
        if shown.get("error").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!((shown["status"].as_str(), shown.get("error")), (Some("running"), None), "{shown}");
}
