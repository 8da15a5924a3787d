//! Who may see and do what on the dashboard: sign-in with a token, each owner's own databases
//! only, CSRF and same-site checks on changes, and without tokens, only loopback host names
//! answered (the API's too, as the binary serves both).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use devdb_core::auth::Tokens;
use devdb_core::fake::FakeRuntime;
use serde_json::json;
use tower::ServiceExt;

use crate::common::*;

#[tokio::test]
async fn the_dashboard_signs_in_with_a_token_shows_each_owner_only_their_own_and_refuses_forged_changes() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for (token, db) in [(KATE, "kate-pg"), (BOB, "bob-pg")] {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(token), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
    }
    // Signed out: every page leads to sign-in, and the browser gets its CSRF cookie.
    let first = core.browse("GET", "/", "", None, &[]).await;
    assert_eq!((first.status, first.location()), (StatusCode::SEE_OTHER, "/ui/databases"));
    let visit = core.browse("GET", "/ui/databases/kate-pg", "", None, &[]).await;
    assert_eq!(visit.status, StatusCode::SEE_OTHER);
    assert_eq!(visit.location(), "/ui/sign-in?next=%2Fui%2Fdatabases%2Fkate-pg");
    let csrf_cookie =
        visit.cookies().into_iter().find(|c| c.starts_with("devdb_csrf=")).expect("a csrf cookie").to_string();
    let csrf = csrf_cookie.split(';').next().and_then(|c| c.strip_prefix("devdb_csrf=")).expect("value").to_string();
    assert!(csrf_cookie.contains("HttpOnly; SameSite=Strict"), "{csrf_cookie}");
    let jar = format!("devdb_csrf={csrf}");
    let sign_in = core.browse("GET", "/ui/sign-in?next=/ui/databases", &jar, None, &[]).await;
    assert_eq!(sign_in.status, StatusCode::OK);
    assert!(sign_in.body.contains("type=\"password\" name=\"token\""), "{}", sign_in.body);

    // Sign-in: a wrong token, a missing CSRF field, then kate's token.
    let form = |token: &str, csrf: &str| format!("token={token}&csrf={csrf}&next=%2Fui%2Fdatabases%2Fkate-pg");
    let wrong = core.browse("POST", "/ui/sign-in", &jar, Some(&form("not-a-token-at-all", &csrf)), &[]).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("That token is not valid here."));
    let forged = core.browse("POST", "/ui/sign-in", &jar, Some(&form(KATE, "guess")), &[]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "login CSRF");
    let signed = core.browse("POST", "/ui/sign-in", &jar, Some(&form(KATE, &csrf)), &[]).await;
    assert_eq!((signed.status, signed.location()), (StatusCode::SEE_OTHER, "/ui/databases/kate-pg"));
    let session = signed.cookies().into_iter().find(|c| c.starts_with("devdb_session=")).expect("session").to_string();
    assert_eq!(session, format!("devdb_session={KATE}; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"));
    let renewed =
        signed.cookies().into_iter().find(|c| c.starts_with("devdb_csrf=")).expect("a new csrf cookie").to_string();
    let old_csrf = csrf.clone();
    let csrf = renewed.split(';').next().and_then(|c| c.strip_prefix("devdb_csrf=")).expect("value").to_string();
    assert_ne!(csrf, old_csrf, "a CSRF token planted before sign-in is worth nothing after");
    let hostile_next = core
        .browse("POST", "/ui/sign-in", &jar, Some(&format!("token={KATE}&csrf={old_csrf}&next=//evil.example")), &[])
        .await;
    assert_eq!(hostile_next.location(), "/", "no open redirect");
    let kate = format!("devdb_csrf={csrf}; devdb_session={KATE}");
    let planted = format!("devdb_csrf={csrf}; devdb_session={BOB}; devdb_session={KATE}");
    let tossed = core.browse("GET", "/ui/databases", &planted, None, &[]).await;
    assert_eq!(tossed.status, StatusCode::SEE_OTHER, "a second, planted session cookie signs out");
    let over_tls = [("x-forwarded-proto", "https")];
    let plain_cookie = core.browse("GET", "/ui/databases", &kate, None, &over_tls).await;
    assert_eq!(plain_cookie.status, StatusCode::SEE_OTHER, "behind TLS only __Host- cookies count");
    let host_cookie = format!("__Host-devdb_csrf={csrf}; __Host-devdb_session={KATE}");
    assert_eq!(core.browse("GET", "/ui/databases", &host_cookie, None, &over_tls).await.status, StatusCode::OK);
    let missing = core.browse("GET", "/v1/no-such-thing", "", None, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.body);
    assert!(missing.body.contains("\"not_found\""), "the API's JSON error: {}", missing.body);
    let missing = core.browse("GET", "/ui/no/such/page", &kate, None, &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("There is no such page."));

    // Kate sees her database only, with its connection details and charts.
    let list = core.browse("GET", "/ui/databases", &kate, None, &[]).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(list.body.contains("/ui/databases/kate-pg") && !list.body.contains("bob-pg"), "{}", list.body);
    assert_eq!(list.headers.get("x-frame-options").map(|v| v.as_bytes()), Some(&b"DENY"[..]));
    assert!(list.headers.get("content-security-policy").is_some());
    assert_eq!(core.browse("GET", "/ui/databases/bob-pg", &kate, None, &[]).await.status, StatusCode::NOT_FOUND);
    let (_, kate_db) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg", None).await;
    let page = core.browse("GET", "/ui/databases/kate-pg?range=day", &kate, None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    let password = kate_db["password"].as_str().expect("password");
    let copied_psql = format!("data-copy=\"psql &quot;{}&quot;\"", kate_db["uri"].as_str().expect("uri"));
    assert!(page.body.contains(&copied_psql), "the psql command to copy: {}", page.body);
    assert!(page.body.contains("••••••••@kate-pg.db.example.com"), "shown without the password");
    assert!(page.body.contains(&format!("<code id=\"password\">{password}</code>")), "revealed on request");
    assert_eq!(page.body.matches("<figure class=\"chart\">").count(), 6);
    assert!(page.body.contains("aria-current=\"page\">last day"));

    // Changes need the CSRF field and the same site.
    let stop = format!("csrf={csrf}&action=stop");
    let no_csrf = core.browse("POST", "/ui/databases/kate-pg/action", &kate, Some("action=stop&csrf=x"), &[]).await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let cross = [("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")];
    assert_eq!(
        core.browse("POST", "/ui/databases/kate-pg/action", &kate, Some(&stop), &cross).await.status,
        StatusCode::FORBIDDEN
    );
    let bobs = core
        .browse("POST", "/ui/databases/bob-pg/action", &kate, Some(&format!("csrf={csrf}&action=delete")), &[])
        .await;
    assert_eq!(bobs.status, StatusCode::NOT_FOUND, "the API refuses kate bob's database");
    let (_, still) = core.call(Some(ADMIN), "GET", "/v1/databases/bob-pg", None).await;
    assert_eq!(still["status"], "running");
    let confirm = core.browse("GET", "/ui/databases/kate-pg/confirm?action=reset", &kate, None, &[]).await;
    assert!(confirm.body.contains("every change made in this database is lost"), "{}", confirm.body);
    let stopped = core.browse("POST", "/ui/databases/kate-pg/action", &kate, Some(&stop), &[]).await;
    assert_eq!((stopped.status, stopped.location()), (StatusCode::SEE_OTHER, "/ui/databases/kate-pg"));

    // A setting, a refused setting, a database created from the form.
    let set = core
        .browse(
            "POST",
            "/ui/databases/kate-pg/settings",
            &kate,
            Some(&format!("csrf={csrf}&parameter=work_mem&value=64MB")),
            &[],
        )
        .await;
    assert_eq!(set.status, StatusCode::SEE_OTHER, "{}", set.body);
    let (_, changed) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg", None).await;
    assert_eq!(changed["settings"]["work_mem"], "64MB");
    let bad = core
        .browse(
            "POST",
            "/ui/databases/kate-pg/settings",
            &kate,
            Some(&format!("csrf={csrf}&parameter=shared_preload_libraries&value=x")),
            &[],
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("role=\"alert\""), "the API's reason on the page");
    let created = core
        .browse("POST", "/ui/databases", &kate, Some(&format!("csrf={csrf}&name=kate-two&project=shop&ttl=")), &[])
        .await;
    assert_eq!((created.status, created.location()), (StatusCode::SEE_OTHER, "/ui/databases/kate-two"));
    let (_, two) = core.call(Some(ADMIN), "GET", "/v1/databases/kate-two", None).await;
    assert_eq!(two["owner"], "kate");
    let dup = core
        .browse("POST", "/ui/databases", &kate, Some(&format!("csrf={csrf}&name=kate-two&project=shop")), &[])
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);

    // Reports: only kate's, and the CSV is the API's.
    core.monitor.sample_once(std::time::SystemTime::now()).await.expect("sample");
    let report = core.browse("GET", "/ui/reports/usage", &kate, None, &[]).await;
    assert!(report.body.contains("Usage of kate") && !report.body.contains("Usage of bob"), "{}", report.body);
    let csv = core.browse("GET", "/ui/reports/usage.csv", &kate, None, &[]).await;
    assert_eq!(csv.body, core.text_as(KATE, "/v1/reports/usage?format=csv").await);
    let projects = core.browse("GET", "/ui/projects", &kate, None, &[]).await;
    assert!(projects.body.contains("https://dumps.example.com/shop.dump"), "{}", projects.body);

    let out = core.browse("POST", "/ui/sign-out", &kate, Some(&format!("csrf={csrf}")), &[]).await;
    assert!(out.cookies().iter().any(|c| c.starts_with("devdb_session=;") && c.contains("Max-Age=0")));
}

#[tokio::test]
async fn without_tokens_the_dashboard_needs_no_sign_in_and_only_loopback_names_are_answered() {
    let core = Core::start_configured(FakeRuntime::default(), |c| c.tokens = Tokens::default());
    let page = core.browse("GET", "/ui/databases", "", None, &[]).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Sign out"));
    let rebound = core.browse("GET", "/v1/databases", "", None, &[]).await;
    assert_eq!(rebound.status, StatusCode::OK);
    let request = Request::builder().uri("/v1/databases").header("host", "attacker.example:8080").body(Body::empty());
    let response = core.app.clone().oneshot(request.expect("request")).await.expect("answered");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "DNS rebinding");
    let request = Request::builder()
        .method("POST")
        .uri("/v1/databases/x/stop")
        .header("host", "localhost:8080")
        .header("origin", "http://evil.example")
        .body(Body::empty());
    let response = core.app.clone().oneshot(request.expect("request")).await.expect("answered");
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "a cross-site form posting to the API");
    let request = Request::builder().uri("/v1/databases").header("host", "[::1]:8080").body(Body::empty());
    assert_eq!(core.app.clone().oneshot(request.expect("request")).await.expect("answered").status(), StatusCode::OK);
}
