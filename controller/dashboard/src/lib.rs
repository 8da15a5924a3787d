//! The web dashboard, served by the controller beside its API: `/` leads to `/ui/databases`.
//! This crate owns the dashboard's routes and handlers ([`router`], in this file), its pages and
//! charts, its way to the API, its sign-in and form guards, and its stylesheet and script
//! (`assets/`).
//!
//! Pages are rendered on the server ([`pages`], [`charts`]); the only script copies connection
//! strings and prints, and the page works without it. Every read and change goes through the
//! REST API in-process ([`client`]) as the signed-in caller ([`session`]), so the dashboard
//! shows and allows exactly what the API would.
//!
//! It knows the core (`devdb-core`: its API router, tokens and checks) and never the other way
//! round: the binary composes the API, this router beside it, and what every request passes
//! (`devdb_core::app::with_request_layers`).

mod charts;
mod client;
mod pages;
mod session;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use devdb_shared::api::{Database, Project};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;

use client::{Client, Refusal, with_query};
use devdb_core::auth::Tokens;
use devdb_shared::metrics::{DatabaseMetrics, Range};
use devdb_shared::reports::ScanReport;
use devdb_shared::reports::UsageReport;
use pages::{Filters, MaskingForm, ReportFilters};
use session::Session;

/// What the dashboard's handlers share.
pub struct Dashboard {
    /// The REST API's router (without the dashboard).
    api: Router,
    tokens: Tokens,
}

type Shared = State<Arc<Dashboard>>;

/// The dashboard's routes, calling `api` for everything.
pub fn router(api: Router, tokens: Tokens) -> Router {
    let dashboard = Arc::new(Dashboard { api, tokens });
    let ui = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/databases") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/databases") }))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/databases", get(databases).post(create_database))
        .route("/ui/databases/{name}", get(database))
        .route("/ui/databases/{name}/confirm", get(confirm_database))
        .route("/ui/databases/{name}/action", post(database_action))
        .route("/ui/databases/{name}/settings", post(set_setting))
        .route("/ui/databases/{name}/restore", post(restore))
        .route("/ui/projects", get(projects))
        .route("/ui/projects/{name}/masking", get(masking).post(set_masking))
        .route("/ui/projects/{name}/confirm", get(confirm_project))
        .route("/ui/projects/{name}/action", post(project_action))
        .route("/ui/reports/usage", get(usage))
        .route("/ui/reports/usage.csv", get(usage_csv))
        .route(
            "/ui/assets/dashboard.css",
            get(|| asset("text/css; charset=utf-8", include_str!("assets/dashboard.css"))),
        )
        .route(
            "/ui/assets/dashboard.js",
            get(|| asset("text/javascript; charset=utf-8", include_str!("assets/dashboard.js"))),
        )
        .fallback(not_found)
        .route_layer(axum::middleware::from_fn_with_state(dashboard.clone(), session::require))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(dashboard);
    Router::new().route("/", get(|| async { Redirect::to("/ui/databases") })).merge(ui)
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body).into_response()
}

/// No framing (clickjacking), no script or style from anywhere else, no referrer leaving the
/// site.
async fn security_headers(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        if !headers.contains_key(name) {
            headers.insert(name, axum::http::HeaderValue::from_static(value));
        }
    }
    response
}

impl Dashboard {
    fn client(&self, session: &Session) -> Client {
        Client::new(self.api.clone(), session.token.clone())
    }
}

/// A page, or the page of a refusal with the API's status.
fn page(session: &Session, result: Result<Markup, Refusal>) -> Response {
    match result {
        Ok(markup) => markup.into_response(),
        Err(refusal) => refused(session, &refusal),
    }
}

fn refused(session: &Session, refusal: &Refusal) -> Response {
    let title = refusal.status.canonical_reason().unwrap_or("Refused");
    (refusal.status, pages::problem(session, title, &refusal.message)).into_response()
}

/// A form's page shown again with the reason it was refused, answering with the refusal's
/// status (unless showing the page failed itself).
fn refused_form(mut page: Response, status: StatusCode) -> Response {
    if page.status().is_success() {
        *page.status_mut() = status;
    }
    page
}

fn forged(session: &Session) -> Response {
    let message = "This form has expired or did not come from this page; reload the page and try again.";
    (StatusCode::FORBIDDEN, pages::problem(session, "Refused", message)).into_response()
}

/// Any path no route takes (under `/ui` or elsewhere, the API's included): the API's JSON 404
/// outside the dashboard, a page inside it. A fallback runs without the session layer.
async fn not_found(uri: axum::http::Uri) -> Response {
    if !uri.path().starts_with("/ui") {
        return devdb_core::api::ApiError::NotFound(format!("no such path: {}", uri.path())).into_response();
    }
    let session = Session {
        token: None,
        caller: devdb_core::auth::Caller::Owner(String::new()),
        csrf: String::new(),
        signed_in: false,
    };
    (StatusCode::NOT_FOUND, pages::problem(&session, "Not found", "There is no such page.")).into_response()
}

#[derive(Deserialize)]
struct NextQuery {
    next: Option<String>,
}

async fn sign_in_page(Extension(session): Extension<Session>, Query(query): Query<NextQuery>) -> Response {
    if !session.signed_in {
        return Redirect::to("/ui/databases").into_response();
    }
    pages::sign_in(&session, session::safe_next(query.next.as_deref()), None).into_response()
}

#[derive(Deserialize)]
struct SignInForm {
    csrf: String,
    token: String,
    next: Option<String>,
}

async fn sign_in(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    if !session.verify(&form.csrf) {
        return forged(&session);
    }
    let next = session::safe_next(form.next.as_deref());
    let token = form.token.trim();
    if dashboard.tokens.is_empty() || dashboard.tokens.caller(Some(&format!("Bearer {token}"))).is_none() {
        let page = pages::sign_in(&session, next, Some("That token is not valid here."));
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    // A new CSRF token with the new session: one planted before sign-in is worth nothing after.
    let cookies = axum::response::AppendHeaders([
        (header::SET_COOKIE, session::sign_in_cookie(&headers, token)),
        (header::SET_COOKIE, session::new_csrf_cookie(&headers)),
    ]);
    (cookies, Redirect::to(next)).into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn sign_out(Extension(session): Extension<Session>, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    if !session.verify(&form.csrf) {
        return forged(&session);
    }
    let cookie = session::sign_out_cookie(&headers);
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/sign-in")).into_response()
}

async fn databases_page(dashboard: &Dashboard, session: &Session, filters: &Filters, error: Option<&str>) -> Response {
    let client = dashboard.client(session);
    let list =
        with_query("/v1/databases", &[("project", filters.project.as_deref()), ("owner", filters.owner.as_deref())]);
    let result = async {
        let databases: Vec<Database> = client.get(&list).await?;
        let projects: Vec<Project> = client.get("/v1/projects").await?;
        Ok(pages::databases(session, &databases, &projects, filters, error))
    }
    .await;
    page(session, result)
}

async fn databases(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Query(filters): Query<Filters>,
) -> Response {
    databases_page(&dashboard, &session, &filters, None).await
}

#[derive(Deserialize)]
struct CreateForm {
    csrf: String,
    name: String,
    project: String,
    #[serde(default)]
    ttl: String,
}

async fn create_database(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Form(form): Form<CreateForm>,
) -> Response {
    if !session.verify(&form.csrf) {
        return forged(&session);
    }
    let mut body = json!({"name": form.name.trim(), "project": form.project});
    if !form.ttl.trim().is_empty() {
        body["ttl"] = json!(form.ttl.trim());
    }
    match dashboard.client(&session).send(Method::POST, "/v1/databases", Some(body)).await {
        Ok(()) => Redirect::to(&format!("/ui/databases/{}", encode_segment(form.name.trim()))).into_response(),
        Err(refusal) => {
            let filters = Filters { project: Some(form.project), ..Filters::default() };
            let mut response = databases_page(&dashboard, &session, &filters, Some(&refusal.message)).await;
            *response.status_mut() = refusal.status;
            response
        }
    }
}

#[derive(Deserialize)]
struct RangeQuery {
    range: Option<String>,
}

async fn database_page(
    dashboard: &Dashboard,
    session: &Session,
    name: &str,
    range: Range,
    error: Option<&str>,
) -> Response {
    let client = dashboard.client(session);
    let result = async {
        let database: Database = client.get(&format!("/v1/databases/{name}")).await?;
        let metrics: DatabaseMetrics = client
            .get(&with_query(&format!("/v1/databases/{name}/metrics"), &[("range", Some(range.as_str()))]))
            .await?;
        let now = devdb_core::clock::unix(std::time::SystemTime::now());
        Ok(pages::database(session, &database, &metrics.points, range, now, error))
    }
    .await;
    page(session, result)
}

async fn database(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(query): Query<RangeQuery>,
) -> Response {
    let range = query.range.as_deref().and_then(Range::parse).unwrap_or_default();
    database_page(&dashboard, &session, &encode_segment(&name), range, None).await
}

/// A path segment from the URL, encoded again for the API's path.
fn encode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Deserialize)]
struct ActionQuery {
    action: String,
}

/// What each database action does, for its confirmation.
fn database_action_text(action: &str) -> Option<(&'static str, &'static str)> {
    Some(match action {
        "reset" => (
            "Reset",
            "Reset clones the project's snapshot again: every change made in this database is lost. Its name, password and settings stay.",
        ),
        "stop" => ("Stop", "Stop shuts the instance down, keeping its data. A connection, or Start, wakes it."),
        "start" => ("Start", "Start runs the instance again."),
        "delete" => ("Delete", "Delete removes the database and all its data for good."),
        _ => return None,
    })
}

async fn confirm_database(
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(query): Query<ActionQuery>,
) -> Response {
    let name = encode_segment(&name);
    let Some((title, explain)) = database_action_text(&query.action) else {
        return unknown_action(&session);
    };
    let explain = format!("{explain} Database: {name}.");
    let (action, back) = (format!("/ui/databases/{name}/action"), format!("/ui/databases/{name}"));
    pages::confirm(&session, &format!("{title} {name}"), &explain, &action, &query.action, &back).into_response()
}

#[derive(Deserialize)]
struct ActionForm {
    csrf: String,
    action: String,
}

async fn database_action(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let name = encode_segment(&name);
    let (method, path, after) = match form.action.as_str() {
        "reset" | "stop" | "start" => {
            (Method::POST, format!("/v1/databases/{name}/{}", form.action), format!("/ui/databases/{name}"))
        }
        "delete" => (Method::DELETE, format!("/v1/databases/{name}"), "/ui/databases".to_string()),
        _ => return unknown_action(&session),
    };
    perform(&dashboard, &session, &form.csrf, method, &path, &after).await
}

/// A confirmed action: `method path` through the API, then back to `after`.
async fn perform(
    dashboard: &Dashboard,
    session: &Session,
    csrf: &str,
    method: Method,
    path: &str,
    after: &str,
) -> Response {
    if !session.verify(csrf) {
        return forged(session);
    }
    match dashboard.client(session).send(method, path, None).await {
        Ok(()) => Redirect::to(after).into_response(),
        Err(refusal) => refused(session, &refusal),
    }
}

fn unknown_action(session: &Session) -> Response {
    refused(session, &Refusal { status: StatusCode::BAD_REQUEST, message: "unknown action".into() })
}

#[derive(Deserialize)]
struct SettingForm {
    csrf: String,
    parameter: String,
    #[serde(default)]
    value: String,
}

#[derive(Deserialize)]
struct RestoreForm {
    csrf: String,
    /// `YYYY-MM-DDTHH:MM[:SS]` from a `datetime-local` input, in UTC.
    #[serde(default)]
    to: String,
    #[serde(default)]
    undo: String,
    #[serde(default)]
    confirm: String,
}

/// A restore in place asked for from the database's page (confirmed by its checkbox).
async fn restore(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<RestoreForm>,
) -> Response {
    if !session.verify(&form.csrf) {
        return forged(&session);
    }
    let name = encode_segment(&name);
    let refusal = if form.confirm == "yes" {
        let body = if form.undo == "yes" {
            json!({"undo": true})
        } else {
            let to = form.to.trim();
            json!({"to": if to.len() == 16 { format!("{to}:00Z") } else { format!("{to}Z") }})
        };
        match dashboard.client(&session).send(Method::POST, &format!("/v1/databases/{name}/restore"), Some(body)).await
        {
            Ok(()) => return Redirect::to(&format!("/ui/databases/{name}")).into_response(),
            Err(refusal) => refusal,
        }
    } else {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            message: "Tick the box to confirm the restore: nothing was changed.".into(),
        }
    };
    refused_form(database_page(&dashboard, &session, &name, Range::Hour, Some(&refusal.message)).await, refusal.status)
}

async fn set_setting(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<SettingForm>,
) -> Response {
    if !session.verify(&form.csrf) {
        return forged(&session);
    }
    let name = encode_segment(&name);
    let value = form.value.trim();
    let body = json!({"settings": {form.parameter.as_str(): if value.is_empty() { serde_json::Value::Null } else { json!(value) }}});
    match dashboard.client(&session).send(Method::PATCH, &format!("/v1/databases/{name}"), Some(body)).await {
        Ok(()) => Redirect::to(&format!("/ui/databases/{name}")).into_response(),
        Err(refusal) => refused_form(
            database_page(&dashboard, &session, &name, Range::Hour, Some(&refusal.message)).await,
            refusal.status,
        ),
    }
}

async fn projects(State(dashboard): Shared, Extension(session): Extension<Session>) -> Response {
    let result = dashboard.client(&session).get::<Vec<Project>>("/v1/projects").await;
    page(&session, result.map(|projects| pages::projects(&session, &projects, None)))
}

async fn confirm_project(
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Query(query): Query<ActionQuery>,
) -> Response {
    let name = encode_segment(&name);
    let (title, explain) = match query.action.as_str() {
        "refresh" => (
            "Refresh",
            "Refresh restores the project's source again into a new snapshot; databases created afterwards (and resets) clone it.",
        ),
        "delete" => ("Delete", "Delete removes the project and its snapshot. It must have no databases left."),
        _ => return unknown_action(&session),
    };
    let explain = format!("{explain} Project: {name}.");
    let action = format!("/ui/projects/{name}/action");
    pages::confirm(&session, &format!("{title} {name}"), &explain, &action, &query.action, "/ui/projects")
        .into_response()
}

async fn project_action(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let name = encode_segment(&name);
    let (method, path) = match form.action.as_str() {
        "refresh" => (Method::POST, format!("/v1/projects/{name}/refresh")),
        "delete" => (Method::DELETE, format!("/v1/projects/{name}")),
        _ => return unknown_action(&session),
    };
    perform(&dashboard, &session, &form.csrf, method, &path, "/ui/projects").await
}

/// The masking page: the rules (as the form holds them, or as saved), the scan of the
/// snapshot, and `error` when the last change was refused.
async fn masking_page(
    dashboard: &Dashboard,
    session: &Session,
    name: &str,
    form: Option<MaskingForm>,
    error: Option<&str>,
) -> Response {
    let client = dashboard.client(session);
    let result = async {
        let project: Project = client.get(&format!("/v1/projects/{name}")).await?;
        let scan = match client.post::<ScanReport>(&format!("/v1/projects/{name}/scan")).await {
            Ok(scan) => Some(scan),
            // No snapshot scanned yet.
            Err(refusal) if refusal.status == StatusCode::CONFLICT => None,
            Err(refusal) => return Err(refusal),
        };
        let form = form.unwrap_or_else(|| MaskingForm::from(&project.masking));
        Ok(pages::masking(session, &project, scan.as_ref(), &form, error))
    }
    .await;
    page(session, result)
}

async fn masking(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
) -> Response {
    masking_page(&dashboard, &session, &encode_segment(&name), None, None).await
}

/// Saves the rules (`save`), or shows them with a suggested rule added for each column the
/// scan found and no rule masks (`suggest`, nothing saved). What was typed is never lost: a
/// refusal shows the form again as it was.
async fn set_masking(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Path(name): Path<String>,
    Form(mut form): Form<MaskingForm>,
) -> Response {
    if !session.verify(&form.csrf) {
        return forged(&session);
    }
    let name = encode_segment(&name);
    let client = dashboard.client(&session);
    let rules = match form.rules() {
        Ok(rules) => rules,
        Err(message) => {
            let page = masking_page(&dashboard, &session, &name, Some(form), Some(&message)).await;
            return refused_form(page, StatusCode::BAD_REQUEST);
        }
    };
    if form.action == "suggest" {
        let scan = match client.post::<ScanReport>(&format!("/v1/projects/{name}/scan")).await {
            Ok(scan) => scan,
            Err(refusal) => return refused(&session, &refusal),
        };
        // Covered by the rules as typed, not as saved.
        let typed = devdb_shared::api::Masking { rules, ..Default::default() };
        let suggested: Vec<_> = scan.findings.into_iter().filter(|f| !typed.covers(f)).map(|f| f.suggested).collect();
        form.set_rules(typed.rules.into_iter().chain(suggested).collect());
        return masking_page(&dashboard, &session, &name, Some(form), None).await;
    }
    let body = json!({ "rules": rules, "requireRules": form.require_rules.is_some(), "verify": form.verify.is_some() });
    match client.send(Method::PUT, &format!("/v1/projects/{name}/masking"), Some(body)).await {
        Ok(()) => Redirect::to("/ui/projects").into_response(),
        Err(refusal) if matches!(refusal.status, StatusCode::BAD_REQUEST | StatusCode::CONFLICT) => refused_form(
            masking_page(&dashboard, &session, &name, Some(form), Some(&refusal.message)).await,
            refusal.status,
        ),
        Err(refusal) => refused(&session, &refusal),
    }
}

fn report_query(path: &str, filters: &ReportFilters, format: Option<&str>) -> String {
    with_query(
        path,
        &[
            ("from", filters.from.as_deref()),
            ("to", filters.to.as_deref()),
            ("owner", filters.owner.as_deref()),
            ("format", format),
        ],
    )
}

async fn usage(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Query(filters): Query<ReportFilters>,
) -> Response {
    let result =
        dashboard.client(&session).get::<UsageReport>(&report_query("/v1/reports/usage", &filters, None)).await;
    let csv = report_query("/ui/reports/usage.csv", &filters, None);
    match result {
        Ok(report) => pages::usage(&session, &report, &filters, &csv, None).into_response(),
        Err(refusal) if refusal.status == StatusCode::BAD_REQUEST => {
            let page = pages::usage(&session, &UsageReport::default(), &filters, &csv, Some(&refusal.message));
            (StatusCode::BAD_REQUEST, page).into_response()
        }
        Err(refusal) => refused(&session, &refusal),
    }
}

async fn usage_csv(
    State(dashboard): Shared,
    Extension(session): Extension<Session>,
    Query(filters): Query<ReportFilters>,
) -> Response {
    match dashboard.client(&session).text(&report_query("/v1/reports/usage", &filters, Some("csv"))).await {
        Ok(csv) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"devdb-usage.csv\""),
            ],
            csv,
        )
            .into_response(),
        Err(refusal) => refused(&session, &refusal),
    }
}
