//! Masking: rules checked and kept without their key, the personal-data scan and `requireRules`,
//! key rotation, no clone of a snapshot its rules do not cover, and the masking page.

use axum::http::StatusCode;
use devdb_core::fake::{FakeRuntime, Op};
use devdb_core::model::Key;
use devdb_core::runtime::RuntimeError;
use devdb_core::store::Store;
use devdb_shared::Name;
use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn masking_rules_are_checked_kept_without_their_key_and_restore_the_project_again() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let (_, before) = core.call(Some(KATE), "GET", "/v1/projects/shop", None).await;
    let rules = json!({"rules": [
        {"table": "customers", "column": "email", "strategy": "email"},
        {"table": "customers", "column": "profile", "jsonPath": ["contact", "email"], "strategy": "email"},
        {"table": "orders", "column": "placed", "strategy": "dateShift", "days": 7},
    ]});
    let (status, body) = core.call(Some(BOB), "PUT", "/v1/projects/shop/masking", Some(rules.clone())).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "only its owner or an admin: {body}");
    let bad = json!({"rules": [{"table": "customers", "column": "email", "strategy": "constant"}]});
    let (status, body) = core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap_or_default().contains("needs a value"), "{body}");
    let unknown = json!({"rules": [{"table": "t", "column": "c", "strategy": "rot13"}]});
    assert_eq!(
        core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(unknown)).await.0,
        StatusCode::BAD_REQUEST
    );

    let (status, body) = core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(rules.clone())).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["masking"], rules, "shown as set");
    let restores = || core.runtime.calls().iter().filter(|c| *c == "restore shop").count();
    for _ in 0..POLLS {
        if restores() == 2 && core.settle_project("shop").await["status"] == "ready" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(restores(), 2, "restored again with them");
    let (_, shown) = core.call(Some(BOB), "GET", "/v1/projects/shop/masking", None).await;
    assert_eq!(shown, rules, "readable like the project");
    let page = core.browse("GET", "/ui/projects", &format!("devdb_session={KATE}"), None, &[]).await;
    assert!(page.body.contains("<td class=\"masking\">3 rules"), "the projects page tells: {}", page.body);
    let record = core.store.project("shop").await.expect("read").expect("exists");
    assert!(record.mask_key.len() >= 32, "a key of its own");
    for view in [before.to_string(), shown.to_string(), body.to_string()] {
        assert!(!view.contains(&record.mask_key) && !view.contains("maskKey"), "the key is never shown: {view}");
    }
    // The same rules again: nothing to restore; the key stays.
    assert_eq!(core.call(Some(KATE), "PUT", "/v1/projects/shop/masking", Some(rules)).await.0, StatusCode::ACCEPTED);
    assert_eq!(restores(), 2);
    assert_eq!(core.store.project("shop").await.expect("read").expect("exists").mask_key, record.mask_key);
}

/// What the scan reports of a column of e-mail addresses in `public.customers`.
fn email_found(column: &str) -> devdb_shared::api::PiiFinding {
    devdb_shared::api::PiiFinding {
        table: "public.customers".into(),
        column: column.into(),
        json_path: vec![],
        kind: "email".into(),
        evidence: "3 of 3 sampled values".into(),
        suggested: devdb_shared::api::MaskRule::new("public.customers", column, devdb_shared::api::MaskStrategy::Email),
        covered: false,
    }
}

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
async fn the_masking_page_shows_the_scan_suggests_rules_keeps_what_was_typed_and_saves_through_the_api() {
    let core = Core::start(FakeRuntime::default());
    let finding = email_found;
    core.runtime.set_findings(vec![finding("email"), finding("backup_email")]);
    core.ready_project(KATE, "shop").await;
    let csrf = "a-csrf-token-of-this-browser";
    let kate = format!("devdb_csrf={csrf}; devdb_session={KATE}");
    let page = core.browse("GET", "/ui/projects/shop/masking", &kate, None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("backup_email") && page.body.contains("3 of 3 sampled values"), "{}", page.body);
    assert_eq!(page.body.matches("<span class=\"badge error\">no</span>").count(), 2, "neither is masked yet");
    let projects = core.browse("GET", "/ui/projects", &kate, None, &[]).await;
    assert!(projects.body.contains("href=\"/ui/projects/shop/masking\""), "linked from the projects page");

    // Suggest: the typed rule plus one per column it leaves unmasked, nothing saved.
    let typed = r#"[{"table": "customers", "column": "email", "strategy": "hash"}]"#;
    let form = |rules: &str, action: &str, extra: &str| {
        format!("csrf={csrf}&rules={}&action={action}{extra}", urlencoding(rules))
    };
    let suggested =
        core.browse("POST", "/ui/projects/shop/masking", &kate, Some(&form(typed, "suggest", "")), &[]).await;
    assert_eq!(suggested.status, StatusCode::OK, "{}", suggested.body);
    let textarea =
        suggested.body.split("<textarea").nth(1).and_then(|t| t.split("</textarea>").next()).unwrap_or_default();
    assert!(textarea.contains("&quot;strategy&quot;: &quot;hash&quot;"), "the typed rule stays: {textarea}");
    assert_eq!(
        textarea.matches("&quot;strategy&quot;: &quot;email&quot;").count(),
        1,
        "one per column the typed rules miss: {textarea}"
    );
    assert!(textarea.contains("&quot;column&quot;: &quot;backup_email&quot;"), "{textarea}");
    let (_, saved) = core.call(Some(KATE), "GET", "/v1/projects/shop/masking", None).await;
    assert_eq!(saved["rules"], json!([]), "suggesting saves nothing");

    // Refused input is shown again as typed, with the reason.
    let broken = r#"[{"table": "customers", "column": "email"}"#;
    let refused = core.browse("POST", "/ui/projects/shop/masking", &kate, Some(&form(broken, "save", "")), &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("not a JSON list of rules"), "{}", refused.body);
    assert!(refused.body.contains("{&quot;table&quot;: &quot;customers&quot;, &quot;column&quot;: &quot;email&quot;}"));
    let twice = r#"[{"table": "customers", "column": "email", "strategy": "hash"}, {"table": "public.customers", "column": "email", "strategy": "email"}]"#;
    let refused = core.browse("POST", "/ui/projects/shop/masking", &kate, Some(&form(twice, "save", "")), &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "the API's check: {}", refused.body);
    assert!(refused.body.contains("masked twice"), "{}", refused.body);
    let forged = format!("csrf=guess&rules={}&action=save", urlencoding(typed));
    assert_eq!(
        core.browse("POST", "/ui/projects/shop/masking", &kate, Some(&forged), &[]).await.status,
        StatusCode::FORBIDDEN
    );
    let bob = format!("devdb_csrf={csrf}; devdb_session={BOB}");
    let bobs = core.browse("POST", "/ui/projects/shop/masking", &bob, Some(&form(typed, "save", "")), &[]).await;
    assert_eq!(bobs.status, StatusCode::FORBIDDEN, "only the owner or an admin sets rules: {}", bobs.body);

    // Saved: through the API, with both switches; the project restores again, masked.
    let saved = core
        .browse(
            "POST",
            "/ui/projects/shop/masking",
            &kate,
            Some(&form(typed, "save", "&require_rules=on&verify=on")),
            &[],
        )
        .await;
    assert_eq!((saved.status, saved.location()), (StatusCode::SEE_OTHER, "/ui/projects"), "{}", saved.body);
    let (_, masking) = core.call(Some(KATE), "GET", "/v1/projects/shop/masking", None).await;
    assert_eq!(
        masking,
        json!({"rules": [{"table": "customers", "column": "email", "strategy": "hash"}], "requireRules": true, "verify": true})
    );
    let page = core.browse("GET", "/ui/projects/shop/masking", &kate, None, &[]).await;
    assert!(page.body.contains("name=\"require_rules\" checked"), "{}", page.body);
}

/// Form encoding of a value.
fn urlencoding(value: &str) -> String {
    value
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
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
