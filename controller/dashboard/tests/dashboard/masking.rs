//! Masking through the dashboard: rules checked and kept without their key (as the projects page
//! tells), and the masking page: the scan, suggested rules, what was typed kept when refused,
//! and rules saved through the API.

use axum::http::StatusCode;
use devdb_core::fake::FakeRuntime;
use devdb_core::store::Store;
use serde_json::json;

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
