//! Masking: the personal-data scan and `requireRules`, key rotation, no clone of a snapshot its
//! rules do not cover. Rules checked and kept without their key, and the masking page, are
//! tested with the dashboard (its `tests/dashboard/masking.rs`), as both look at its pages.

use axum::http::StatusCode;
use devdb_core::fake::{FakeRuntime, Op};
use devdb_core::model::Key;
use devdb_core::runtime::RuntimeError;
use devdb_core::store::Store;
use devdb_shared::Name;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn with_require_rules_no_clone_while_a_scanned_personal_column_has_no_rule() {
    let core = Core::start(FakeRuntime::default());
    let rule = |column: &str| {
        devdb_shared::api::MaskRule::new("public.customers", column, devdb_shared::api::MaskStrategy::Email)
    };
    let finding = email_found;
    core.runtime.set_findings(vec![finding("email"), finding("backup_email")]);
    core.ready_project(KATE, "shop").await;
    let (status, report) = core.call(Some(BOB), "POST", "/v1/projects/shop/scan", None).await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["findings"][0]["suggested"]["strategy"], "email");

    // Without requireRules, clones go on; with it, they wait for rules.
    let create = |name: &'static str| json!({"name": name, "project": "shop"});
    assert_eq!(
        core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(create("first"))).await.0,
        StatusCode::CREATED
    );
    let partial = json!({"rules": [rule("email")], "requireRules": true});
    let (status, body) = core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(partial)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for _ in 0..POLLS {
        if core.settle_project("shop").await["status"] == "ready"
            && core.runtime.calls().iter().filter(|c| *c == "restore shop").count() == 2
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(create("second"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("public.customers.backup_email (email)") && !message.contains("customers.email "),
        "{message}"
    );
    assert_eq!(
        core.call(Some(KATE), "POST", "/v1/databases/first/reset", None).await.0,
        StatusCode::CONFLICT,
        "nor a reset"
    );
    let (_, report) = core.call(Some(KATE), "POST", "/v1/projects/shop/scan", None).await;
    let covered: Vec<bool> =
        report["findings"].as_array().expect("findings").iter().map(|f| f["covered"] == true).collect();
    assert_eq!(covered, [true, false]);

    let full = json!({"rules": [rule("email"), rule("backup_email")], "requireRules": true});
    assert_eq!(core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(full)).await.0, StatusCode::ACCEPTED);
    for _ in 0..POLLS {
        if core.settle_project("shop").await["status"] == "ready"
            && core.runtime.calls().iter().filter(|c| *c == "restore shop").count() == 3
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases", Some(create("second"))).await.0, StatusCode::CREATED);
}

/// A key rotation: a new key (the old one gone), the project masked again under it, and no
/// clone of the snapshot masked under the old one meanwhile; the key's version is the
/// controller's, whatever a request says.
#[tokio::test]
async fn a_key_rotation_masks_the_project_again_and_nothing_is_cloned_under_the_old_key() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let (status, _) = core.call(Some(KATE), "POST", "/v1/projects/shop/masking/rotate-key", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no rules, no key");
    let rules = json!({"rules": [{"table": "customers", "column": "email", "strategy": "email"}], "keyVersion": 7});
    assert_eq!(core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(rules)).await.0, StatusCode::ACCEPTED);
    core.settle_project("shop").await;
    let store = core.reconciler.store().clone();
    let before = store.project("shop").await.expect("store").expect("project");
    assert_eq!(before.masking.key_version, 0, "a client does not set the version");
    assert_eq!(
        core.call(Some(BOB), "POST", "/v1/projects/shop/masking/rotate-key", None).await.0,
        StatusCode::FORBIDDEN,
        "projects are shared, changed by their owner"
    );

    core.runtime.hold_restores();
    let (status, body) = core.call(Some(KATE), "POST", "/v1/projects/shop/masking/rotate-key", None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["masking"]["keyVersion"], 1, "{body}");
    assert!(!body.to_string().contains(&before.mask_key), "the key is never shown");
    let rotated = store.project("shop").await.expect("store").expect("project");
    assert_ne!(rotated.mask_key, before.mask_key, "a new key");
    let create = json!({"name": "kate-pg", "project": "shop"});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases", Some(create)).await.0, StatusCode::CREATED);
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert!(!core.runtime.calls().contains(&"clone kate-pg".to_string()), "no clone under the old key");
    core.runtime.release_restores();
    for _ in 0..POLLS {
        if core.runtime.calls().contains(&"clone kate-pg".to_string()) {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let project = store.project("shop").await.expect("store").expect("project");
    assert_eq!(project.snapshot.map(|s| s.masked_key_version), Some(1));
    assert!(core.runtime.calls().contains(&"clone kate-pg".to_string()), "{:?}", core.runtime.calls());
}

#[tokio::test]
async fn a_snapshot_restored_before_masking_rules_is_never_cloned_once_they_are_set() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let rules = json!({"rules": [{"table": "customers", "column": "email", "strategy": "email"}]});
    let create = |name: &str| json!({"name": name, "project": "shop"});
    assert_eq!(
        core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(create("before"))).await.0,
        StatusCode::CREATED
    );

    // The masked restore fails: the project keeps its unmasked snapshot, which no longer serves.
    core.runtime.fail_next(Op::Restore, RuntimeError::Source("the dump is gone".into()));
    assert_eq!(core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(rules)).await.0, StatusCode::ACCEPTED);
    let mut project = core.settle_project("shop").await;
    for _ in 0..POLLS {
        if project["error"].is_string() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        project = core.settle_project("shop").await;
    }
    assert_eq!(project["status"], "ready", "{project}");
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(create("after"))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not masked by its current rules (its masked restore failed: the dump is gone)"),
        "{message}"
    );
    let (status, _) = core.call(Some(KATE), "POST", "/v1/databases/before/reset", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "nor a reset");

    // While a masked restore runs, a new database waits for it instead of cloning the old one.
    core.runtime.hold_restores();
    assert_eq!(core.call(Some(KATE), "POST", "/v1/projects/shop/refresh", None).await.0, StatusCode::ACCEPTED);
    let (status, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(create("waiting"))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    for _ in 0..50 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let (_, waiting) = core.call(Some(KATE), "GET", "/v1/databases/waiting", None).await;
    assert_eq!(waiting["status"], "creating", "{waiting}");
    assert!(!core.runtime.calls().contains(&"clone waiting".to_string()), "{:?}", core.runtime.calls());
}

#[tokio::test]
async fn a_database_queued_for_a_restore_is_refused_if_the_project_then_requires_rules_it_lacks() {
    let core = Core::start(FakeRuntime::default());
    core.runtime.set_findings(vec![email_found("email")]);
    core.runtime.hold_restores();
    let body = json!({"name": "shop", "backupLocation": "https://dumps.example.com/shop.dump"});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    let (status, body) =
        core.call(Some(KATE), "POST", "/v1/databases", Some(json!({"name": "queued", "project": "shop"}))).await;
    assert_eq!(status, StatusCode::CREATED, "waits for the project: {body}");
    // Meanwhile the project comes to require rules (on Kubernetes, an edit of its resource).
    let shop = Name::new("shop").expect("name");
    core.store.update_project(&shop, |p| p.masking.require_rules = true).await.expect("updated");
    core.runtime.release_restores();
    assert_eq!(core.settle_project("shop").await["status"], "ready");
    let mut database = Value::Null;
    for _ in 0..POLLS {
        database = core.call(Some(KATE), "GET", "/v1/databases/queued", None).await.1;
        if database["status"] == "error" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(database["status"], "error", "{database}");
    let error = database["error"].as_str().unwrap_or_default();
    assert!(error.contains("requires masking rules") && error.contains("public.customers.email"), "{error}");
    assert!(!core.runtime.calls().contains(&"clone queued".to_string()), "never cloned");
}

#[tokio::test]
async fn a_reset_refused_when_its_pass_comes_keeps_the_database_as_it_was_and_says_why() {
    let core = Core::start(FakeRuntime::default());
    core.runtime.set_findings(vec![email_found("email")]);
    core.ready_project(KATE, "shop").await;
    let body = json!({"name": "kate-pg", "project": "shop"});
    assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
    // Between the reset's acceptance and its pass, the project comes to require rules.
    let (shop, kate_pg) = (name("shop"), name("kate-pg"));
    core.store.update_project(&shop, |p| p.masking.require_rules = true).await.expect("updated");
    core.store.update_database(&kate_pg, |d| d.want = devdb_core::model::Want::Reset).await.expect("asked");
    core.reconciler.reconcile(&Key::Database(kate_pg.clone())).await.expect("a pass");
    let (_, database) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg", None).await;
    assert_eq!(database["status"], "running", "its data untouched: {database}");
    let error = database["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("the reset was refused: project shop requires masking rules"), "{error}");
    let clones = core.runtime.calls().iter().filter(|c| *c == "clone kate-pg").count();
    assert_eq!(clones, 1, "cloned once, when created");
    assert_eq!(core.store.database("kate-pg").await.expect("read").expect("exists").want, devdb_core::model::Want::Run);
}
