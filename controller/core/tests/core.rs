//! The core in-process, in milliseconds: the REST API driven with `oneshot` over the in-memory
//! store and the fake runtime (every status code and scoping rule), and the reconciler with
//! paused time (retries, supervision, failures recorded with two faces).

use std::sync::{Arc, OnceLock, Weak};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use devdb_core::api::AppState;
use devdb_core::app::router;
use devdb_core::auth::Tokens;
use devdb_core::config::ApiConfig;
use devdb_core::fake::{FakePlatform, FakeRuntime, Op};
use devdb_core::memory::MemoryStore;
use devdb_core::model::Key;
use devdb_core::monitor::Monitor;
use devdb_core::reconcile::{ReconcileError, Reconciler, Scheduler};
use devdb_core::routes::RouteFeed;
use devdb_core::runtime::Counters;
use devdb_core::runtime::RuntimeError;
use devdb_core::store::Store;
use devdb_shared::api::{DatabaseStatus, ProjectStatus};
use devdb_shared::{Domain, Name, RouteState};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-0123456789";
const KATE: &str = "kate-token-0123456789";
const BOB: &str = "bob-token-0123456789";

/// How many times a test polls (1 ms apart) for what the core does in the background before
/// giving up: about a minute, for a busy machine (a wait ends as soon as its condition holds).
const POLLS: usize = 60_000;

/// Runs every pass asked for as a task (the passes the tests wait on).
#[derive(Default)]
struct Spawner {
    reconciler: OnceLock<Weak<Reconciler<FakePlatform>>>,
}

impl Scheduler for Spawner {
    fn schedule(&self, key: Key) {
        if let Some(reconciler) = self.reconciler.get().and_then(Weak::upgrade) {
            tokio::spawn(async move { reconciler.reconcile(&key).await });
        }
    }
}

struct Core {
    app: Router,
    reconciler: Arc<Reconciler<FakePlatform>>,
    runtime: Arc<FakeRuntime>,
    monitor: Arc<Monitor<FakePlatform>>,
    store: Arc<MemoryStore>,
    routes: RouteFeed,
    _tokens: tempfile::NamedTempFile,
}

fn name(s: &str) -> Name {
    Name::new(s).expect("name")
}

impl Core {
    /// The core with tokens for an admin, kate and bob, over `runtime`.
    fn start(runtime: FakeRuntime) -> Self {
        Self::start_configured(runtime, |_| {})
    }

    /// [`Core::start`] with the configuration changed by `configure`.
    fn start_configured(runtime: FakeRuntime, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        let tokens_file = tempfile::NamedTempFile::new().expect("tokens");
        let tokens = json!({"tokens": [{"token": KATE, "owner": "kate"}, {"token": BOB, "owner": "bob"}]});
        std::fs::write(tokens_file.path(), tokens.to_string()).expect("write");
        let mut config = ApiConfig {
            api_listen: "127.0.0.1:8080".parse().expect("addr"),
            domain: Domain::new("db.example.com").expect("domain"),
            public_port: 6432,
            tokens: Tokens::load(Some(tokens_file.path()), Some(ADMIN.into())).expect("tokens"),
            allow_private_sources: false,
            wait_timeout: std::time::Duration::from_secs(60),
            max_restores_per_owner: 2,
            idle_stop_after: std::time::Duration::from_secs(1800),
            lifecycle_check_every: std::time::Duration::from_secs(15),
            quotas: devdb_core::quota::Quotas::default(),
            sample_every: std::time::Duration::from_secs(30),
        };
        configure(&mut config);
        let (store, runtime) = (Arc::new(MemoryStore::default()), Arc::new(runtime));
        let spawner = Arc::new(Spawner::default());
        let reconciler = Reconciler::<FakePlatform>::new(store.clone(), runtime.clone(), spawner.clone());
        let _ = spawner.reconciler.set(Arc::downgrade(&reconciler));
        let routes = RouteFeed::default();
        tokio::spawn(devdb_core::routes::follow::<FakePlatform>(store, runtime.clone(), routes.clone()));
        let state = AppState::new(config, reconciler.clone(), routes.clone());
        let monitor = state.monitor.clone();
        let app = router(state);
        let store = reconciler.store().clone();
        Self { app, reconciler, runtime, monitor, store, routes, _tokens: tokens_file }
    }

    async fn call(&self, token: Option<&str>, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request.header("content-type", "application/json").body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        let response = self.app.clone().oneshot(request.expect("request")).await.expect("answered");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The `X-Release` header of a GET.
    async fn release_header(&self, path: &str) -> Option<String> {
        let request = Request::builder().uri(path).header("authorization", format!("Bearer {ADMIN}"));
        let response = self.app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answered");
        response.headers().get("x-release").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// A GET's body as text, with `token`.
    async fn text_as(&self, token: &str, path: &str) -> String {
        let request = Request::builder().uri(path).header("authorization", format!("Bearer {token}"));
        let response = self.app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answered");
        String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned()
    }

    /// A project `name` of `token`'s owner, ready.
    async fn ready_project(&self, token: &str, project: &str) {
        let body = json!({"name": project, "backupLocation": "https://dumps.example.com/shop.dump"});
        let (status, created) = self.call(Some(token), "POST", "/v1/projects", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.settle_project(project).await;
    }

    async fn settle_project(&self, project: &str) -> Value {
        for _ in 0..POLLS {
            let (_, p) = self.call(Some(ADMIN), "GET", &format!("/v1/projects/{project}"), None).await;
            if !matches!(p["status"].as_str(), Some("pending" | "restoring")) {
                return p;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        panic!("project {project} never settled");
    }
}

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

#[tokio::test(start_paused = true)]
async fn a_transient_restore_failure_is_retried_and_a_source_failure_is_terminal() {
    let core = Core::start(FakeRuntime::default());
    let store = core.reconciler.store().clone();
    core.runtime.fail_next(Op::Restore, RuntimeError::Platform("the API server is restarting".into()));
    let body = json!({"name": "shop", "backupLocation": "https://dumps.example.com/d"});
    assert_eq!(core.call(Some(ADMIN), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    let error = core.reconciler.reconcile(&Key::Project(name("shop"))).await.expect_err("retried");
    assert!(matches!(error, ReconcileError::Retry(_)), "{error}");
    let project = store.project("shop").await.expect("read").expect("project");
    assert_eq!(project.status, ProjectStatus::Restoring, "not failed: it is retried");
    assert_eq!(project.error.as_deref(), Some("the platform underneath failed; retrying"));
    core.reconciler.reconcile(&Key::Project(name("shop"))).await.expect("the retry succeeds");
    let project = store.project("shop").await.expect("read").expect("project");
    assert_eq!((project.status, project.error), (ProjectStatus::Ready, None));

    core.runtime
        .fail_next(Op::Restore, RuntimeError::Source("the source is an HTML page, not a PostgreSQL dump".into()));
    let body = json!({"name": "html", "backupLocation": "https://dumps.example.com/page"});
    assert_eq!(core.call(Some(ADMIN), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
    core.reconciler.reconcile(&Key::Project(name("html"))).await.expect("recorded, not retried");
    let project = store.project("html").await.expect("read").expect("project");
    assert_eq!(project.status, ProjectStatus::Failed);
    assert_eq!(project.error.as_deref(), Some("the source is an HTML page, not a PostgreSQL dump"));
}

#[tokio::test(start_paused = true)]
async fn a_dead_instance_is_marked_recovering_not_ready_and_restarted() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(ADMIN, "shop").await;
    let (status, _) = core
        .call(Some(ADMIN), "POST", "/v1/databases?wait=true", Some(json!({"name": "kate-pg", "project": "shop"})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let store = core.reconciler.store().clone();
    core.reconciler.supervise_once().await.expect("checked");
    assert_eq!(store.database("kate-pg").await.expect("read").expect("db").status, DatabaseStatus::Running, "alive");

    core.runtime.kill(&name("kate-pg"));
    // It cannot start at first: it stays recovering, with the reason, and the pass is retried.
    core.runtime.fail_next(Op::Start, RuntimeError::Step { step: "starting PostgreSQL", detail: "port in use".into() });
    core.reconciler.supervise_once().await.expect("checked");
    let database = store.database("kate-pg").await.expect("read").expect("db");
    assert_eq!(database.status, DatabaseStatus::Recovering);
    assert!(database.error.as_deref().is_some_and(|e| e.contains("stopped unexpectedly")), "{database:?}");
    let mut routes = core.routes.subscribe();
    let state =
        routes.wait_for(|t| t.routes.iter().any(|r| r.state == RouteState::Starting)).await.expect("feed").routes[0]
            .state;
    assert_eq!(state, RouteState::Starting, "not ready while it recovers");

    // The pass the supervisor asked for has run meanwhile, and failed to start it.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    assert!(core.runtime.calls().contains(&"start kate-pg".to_string()), "{:?}", core.runtime.calls());
    let database = store.database("kate-pg").await.expect("read").expect("db");
    assert_eq!(database.status, DatabaseStatus::Recovering);
    assert_eq!(
        database.error.as_deref(),
        Some("starting PostgreSQL failed (the controller's log has the details); retrying")
    );

    core.reconciler.reconcile(&Key::Database(name("kate-pg"))).await.expect("restarted");
    let database = store.database("kate-pg").await.expect("read").expect("db");
    assert_eq!((database.status, database.error), (DatabaseStatus::Running, None));
    assert!(core.runtime.is_running(&name("kate-pg")));
    routes.wait_for(|t| t.routes.iter().all(|r| r.state == RouteState::Ready)).await.expect("ready again");
    let (_, metrics) = core.call(Some(ADMIN), "GET", "/metrics", None).await;
    assert_eq!(metrics, Value::Null, "metrics are text, not JSON");
}

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

#[tokio::test(start_paused = true)]
async fn restores_take_turns_per_owner_a_delete_cancels_one_and_waits_are_bounded() {
    let core = Core::start(FakeRuntime::default());
    core.runtime.hold_restores();
    let create = |n: &'static str| {
        core.call(
            Some(KATE),
            "POST",
            "/v1/projects",
            Some(json!({"name": n, "backupLocation": "https://dumps.example.com/d"})),
        )
    };
    for n in ["one", "two", "three"] {
        assert_eq!(create(n).await.0, StatusCode::CREATED);
    }
    assert_eq!(
        core.call(
            Some(BOB),
            "POST",
            "/v1/projects",
            Some(json!({"name": "bobs", "backupLocation": "https://dumps.example.com/d"}))
        )
        .await
        .0,
        StatusCode::CREATED
    );
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let core = &core;
    let status = |n: &'static str| async move {
        core.call(Some(ADMIN), "GET", &format!("/v1/projects/{n}"), None).await.1["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let kates = [status("one").await, status("two").await, status("three").await];
    assert_eq!(kates.iter().filter(|s| *s == "restoring").count(), 2, "two at once per owner: {kates:?}");
    assert_eq!(kates.iter().filter(|s| *s == "pending").count(), 1, "{kates:?}");
    assert_eq!(status("bobs").await, "restoring", "another owner's is not held up");

    // A database of a project still restoring: ?wait=true gives up after the wait, with 504.
    let (code, body) = core
        .call(Some(KATE), "POST", "/v1/databases?wait=true", Some(json!({"name": "early", "project": "one"})))
        .await;
    assert_eq!(code, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("still creating after 1m"), "{message}");
    assert_eq!(core.call(Some(KATE), "DELETE", "/v1/databases/early", None).await.0, StatusCode::ACCEPTED);

    // Deleting a project cancels its restore at once; the one waiting gets its turn.
    let restoring = if kates[0] == "restoring" { "one" } else { "two" };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let (code, body) = core.call(Some(KATE), "DELETE", &format!("/v1/projects/{restoring}"), None).await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert_eq!(
        core.call(Some(ADMIN), "GET", &format!("/v1/projects/{restoring}"), None).await.0,
        StatusCode::NOT_FOUND
    );
    let kates = [status("one").await, status("two").await, status("three").await];
    assert_eq!(kates.iter().filter(|s| *s == "restoring").count(), 2, "the third restores now: {kates:?}");
}

/// Stop and start, idle stops from the proxies' reports, expiry and protection.
mod lifecycle {
    use std::time::{Duration, SystemTime};

    use super::*;

    impl Core {
        /// A running database `db` of project `shop` (kate's), created with `extra` fields.
        async fn running(&self, db: &str, extra: Value) -> Value {
            let mut body = json!({"name": db, "project": "shop"});
            body.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
            let (status, created) = self.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{created}");
            created
        }

        async fn database(&self, db: &str) -> (StatusCode, Value) {
            self.call(Some(ADMIN), "GET", &format!("/v1/databases/{db}"), None).await
        }

        /// Waits until `db` has `status` ("gone": deleted).
        pub(super) async fn settles(&self, db: &str, status: &str) -> Value {
            for _ in 0..POLLS {
                let (code, d) = self.database(db).await;
                if (status == "gone" && code == StatusCode::NOT_FOUND) || d["status"] == status {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("{db} never became {status}: {:?}", self.database(db).await);
        }

        fn route_state(&self, db: &str) -> Option<RouteState> {
            self.routes.current().routes.into_iter().find(|r| r.name == name(db)).map(|r| r.state)
        }

        async fn report(&self, token: &str, open: &[&str]) -> StatusCode {
            let body = json!({"replica": "proxy-a", "open": open, "active": []});
            self.call(Some(token), "POST", "/v1/activity", Some(body)).await.0
        }

        async fn enforce_at(&self, later: Duration) {
            self.reconciler.enforce_lifecycle_once(SystemTime::now() + later).await.expect("enforced");
        }
    }

    /// Each proxy gets the whole route table on every change: a session reported (a new
    /// `lastActiveAt`) changes no route, and sends nothing.
    #[tokio::test]
    async fn a_reported_session_sends_the_proxies_no_new_table() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        core.running("kate-pg", json!({})).await;
        let before = core.routes.current().version;
        assert_eq!(core.report(ADMIN, &["kate-pg"]).await, StatusCode::NO_CONTENT);
        assert!(core.database("kate-pg").await.1["lastActiveAt"].is_string(), "the session is recorded");
        assert_eq!(core.routes.current().version, before, "no route changed");
    }

    /// A proxy that asks for changes gets the whole table once, then only what changed.
    #[tokio::test]
    async fn a_proxy_following_changes_is_sent_the_table_once_then_only_the_routes_that_changed() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        core.running("kate-pg", json!({})).await;
        core.running("kate-two", json!({})).await;
        let request = Request::builder()
            .uri("/v1/routes/watch?changes=true")
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .expect("request");
        let response = core.app.clone().oneshot(request).await.expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut next_line = async || -> Value {
            let frame = body.frame().await.expect("a line").expect("read");
            serde_json::from_slice(&frame.into_data().expect("data")).expect("json")
        };
        let first = next_line().await;
        assert_eq!(first["routes"].as_array().map(Vec::len), Some(2), "the whole table first: {first}");
        let (status, _) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let change = next_line().await;
        assert!(change.get("routes").is_none(), "not the table again: {change}");
        let now = core.routes.current().routes.into_iter().find(|r| r.name == name("kate-pg")).expect("routed");
        assert_eq!(now.state, RouteState::Asleep);
        assert_eq!(change["changed"], json!([now]), "kate-pg alone: {change}");
        assert!(change["version"].as_u64() > first["version"].as_u64());
    }

    #[tokio::test]
    async fn a_stopped_database_keeps_its_credentials_sleeps_in_the_routes_and_one_start_wakes_it() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        let created = core.running("kate-pg", json!({})).await;
        assert!(created.get("lastActiveAt").is_none(), "made, never used: {created}");
        // A session (a proxy's report), then none.
        assert_eq!(core.report(ADMIN, &["kate-pg"]).await, StatusCode::NO_CONTENT);
        core.report(ADMIN, &[]).await;
        let used = core.database("kate-pg").await.1["lastActiveAt"].clone();
        assert!(used.is_string(), "{used}");
        let (status, stopped) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{stopped}");
        assert_eq!((stopped["status"].as_str(), stopped["stopReason"].as_str()), (Some("stopped"), Some("manual")));
        assert!(stopped["stoppedAt"].is_string());
        assert!(!core.runtime.is_running(&name("kate-pg")), "no instance while stopped");
        assert_eq!(core.route_state("kate-pg"), Some(RouteState::Asleep), "still routed: a connection wakes it");
        let metrics = core.text_as(ADMIN, "/metrics").await;
        for line in [
            "devdb_databases_stopped{reason=\"manual\"} 1",
            "devdb_database_stopped_timestamp_seconds{database=\"kate-pg\"} 1",
            "devdb_database_last_active_timestamp_seconds{database=\"kate-pg\"} 1",
            "devdb_owner_running_databases{owner=\"kate\"} 0",
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
        // Others see nothing of it.
        assert_eq!(core.call(Some(BOB), "POST", "/v1/databases/kate-pg/start", None).await.0, StatusCode::NOT_FOUND);

        // Many clients waking it at once (the proxy asks once per connection): one start.
        let wakes = (0..5).map(|_| core.call(Some(ADMIN), "POST", "/v1/databases/kate-pg/start", None));
        for (status, _) in futures_util::future::join_all(wakes).await {
            assert_eq!(status, StatusCode::ACCEPTED);
        }
        let running = core.settles("kate-pg", "running").await;
        let starts = core.runtime.calls().iter().filter(|c| *c == "start kate-pg").count();
        assert_eq!(starts, 1, "{:?}", core.runtime.calls());
        assert_eq!(running["password"], created["password"], "the same credentials");
        assert!(running.get("stopReason").is_none(), "{running}");
        assert_eq!(running["lastActiveAt"], used, "a start is no session");
        assert_eq!(core.route_state("kate-pg"), Some(RouteState::Ready));
    }

    /// A wake that cannot be scheduled (on Kubernetes: no room in the volume's zone for the
    /// stuck time) loses nothing: the database sleeps again with the reason, and the next start
    /// runs it on the same data, with no clone of the snapshot over it.
    #[tokio::test]
    async fn a_start_that_cannot_succeed_now_leaves_the_database_stopped_and_startable() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        core.running("kate-pg", json!({})).await;
        core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
        let unschedulable = "0/3 nodes are available: 3 node(s) had volume node affinity conflict";
        core.runtime
            .fail_next(Op::Start, RuntimeError::Stuck { step: "starting the database", reason: unschedulable.into() });
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("could not start") && message.contains("start it again"), "{body}");
        let (_, stopped) = core.database("kate-pg").await;
        assert_eq!(stopped["status"], "stopped", "{stopped}");
        assert!(stopped["error"].as_str().unwrap_or_default().contains("volume node affinity conflict"), "{stopped}");
        assert!(!core.runtime.is_running(&name("kate-pg")));
        assert_eq!(core.route_state("kate-pg"), Some(RouteState::Asleep), "a connection may wake it again");

        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["status"], "running");
        assert!(body.get("error").is_none(), "{body}");
        let clones = core.runtime.calls().iter().filter(|c| c.starts_with("clone kate-pg")).count();
        assert_eq!(clones, 1, "the data was never cloned over: {:?}", core.runtime.calls());
    }

    #[tokio::test]
    async fn a_start_that_fails_says_why_and_a_failed_database_is_not_stopped_or_started() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        core.running("kate-pg", json!({})).await;
        core.call(Some(KATE), "POST", "/v1/databases/kate-pg/stop?wait=true", None).await;
        core.runtime.fail_next(Op::Start, RuntimeError::DataMissing(name("kate-pg")));
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-pg/start?wait=true", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("reset it"), "{body}");
        assert_eq!(core.route_state("kate-pg"), Some(RouteState::Stopped), "refused at once, not woken again");
        for verb in ["stop", "start"] {
            let (status, body) = core.call(Some(KATE), "POST", &format!("/v1/databases/kate-pg/{verb}"), None).await;
            assert_eq!(status, StatusCode::CONFLICT, "{verb}: {body}");
        }
    }

    #[tokio::test]
    async fn an_idle_database_stops_but_not_while_a_session_is_open_nor_when_protected() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        core.running("kate-pg", json!({})).await;
        core.running("keep-pg", json!({"protected": true})).await;
        core.running("never-pg", json!({"idleStopAfter": "0s"})).await;
        core.running("quick-pg", json!({"idleStopAfter": "5m"})).await;
        // Only proxies (admin tokens) report activity.
        assert_eq!(core.report(KATE, &["kate-pg"]).await, StatusCode::FORBIDDEN);
        assert_eq!(core.report(ADMIN, &["kate-pg"]).await, StatusCode::NO_CONTENT);

        // Ten minutes on: only the one with a 5-minute period stops.
        core.enforce_at(Duration::from_secs(600)).await;
        let quick = core.settles("quick-pg", "stopped").await;
        assert_eq!(quick["stopReason"], "idle");
        // 31 minutes on: kate-pg has a session open (even a silent one): it stays up.
        core.enforce_at(Duration::from_secs(31 * 60)).await;
        assert_eq!(core.database("kate-pg").await.1["status"], "running");
        // The session closed: it stops; the protected one and the one that never idles do not.
        assert_eq!(core.report(ADMIN, &[]).await, StatusCode::NO_CONTENT);
        core.enforce_at(Duration::from_secs(31 * 60)).await;
        assert_eq!(core.settles("kate-pg", "stopped").await["stopReason"], "idle");
        core.enforce_at(Duration::from_secs(365 * 24 * 3600)).await;
        for db in ["keep-pg", "never-pg"] {
            assert_eq!(core.database(db).await.1["status"], "running", "{db}");
        }
        let keep = core.database("keep-pg").await.1;
        assert_eq!((keep["protected"].as_bool(), keep.get("idleStopAfter")), (Some(true), None));
    }

    #[tokio::test]
    async fn expired_databases_are_deleted_unless_protected_and_extend_moves_the_deadline() {
        let core = Core::start(FakeRuntime::default());
        core.ready_project(KATE, "shop").await;
        let (status, body) = core
            .call(Some(KATE), "POST", "/v1/databases", Some(json!({"name": "x", "project": "shop", "ttl": "soon"})))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["error"]["message"].as_str().unwrap_or_default().contains("ttl \"soon\""), "{body}");
        // Far beyond any clock: refused, not a panic.
        for ttl in ["1000000000y", "11y"] {
            let body = json!({"name": "x", "project": "shop", "ttl": ttl});
            let (status, body) = core.call(Some(KATE), "POST", "/v1/databases", Some(body)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{ttl}: {body}");
            assert!(body["error"]["message"].as_str().unwrap_or_default().contains("ten years"), "{body}");
        }
        let created = core.running("kate-pg", json!({"ttl": "1h"})).await;
        assert!(created["expiresAt"].is_string(), "{created}");
        core.running("keep-pg", json!({"ttl": "1h", "protected": true})).await;
        // Held past its hour by an extension of three hours from now.
        core.enforce_at(Duration::from_secs(1800)).await;
        assert_eq!(core.database("kate-pg").await.0, StatusCode::OK);
        let (status, extended) =
            core.call(Some(KATE), "POST", "/v1/databases/kate-pg/extend", Some(json!({"ttl": "3h"}))).await;
        assert_eq!(status, StatusCode::OK, "{extended}");
        assert!(extended["expiresAt"].as_str() > created["expiresAt"].as_str(), "{extended}");
        core.enforce_at(Duration::from_secs(2 * 3600)).await;
        assert_eq!(core.database("kate-pg").await.0, StatusCode::OK);
        core.enforce_at(Duration::from_secs(4 * 3600)).await;
        core.settles("kate-pg", "gone").await;
        assert_eq!(core.database("keep-pg").await.0, StatusCode::OK, "protected");
        let metrics = core.text_as(ADMIN, "/metrics").await;
        assert!(metrics.contains("devdb_databases_expired_total 1"), "{metrics}");
        // Protection can be lifted; then it expires too.
        let (status, _) =
            core.call(Some(KATE), "PATCH", "/v1/databases/keep-pg", Some(json!({"protected": false}))).await;
        assert_eq!(status, StatusCode::OK);
        core.enforce_at(Duration::from_secs(4 * 3600)).await;
        core.settles("keep-pg", "gone").await;
    }

    #[tokio::test]
    async fn a_projects_default_ttl_and_idle_period_apply_to_its_databases() {
        let core = Core::start(FakeRuntime::default());
        let body = json!({"name": "shop", "idleStopAfter": "10m", "defaultTtl": "2h"});
        let (status, project) = core.call(Some(KATE), "POST", "/v1/projects", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{project}");
        assert_eq!((project["idleStopAfter"].as_str(), project["defaultTtl"].as_str()), (Some("10m"), Some("2h")));
        core.settle_project("shop").await;
        let db = core.running("kate-pg", json!({})).await;
        assert_eq!(db["idleStopAfter"], "10m");
        assert!(db["expiresAt"].is_string(), "{db}");
        core.report(ADMIN, &[]).await;
        core.enforce_at(Duration::from_secs(11 * 60)).await;
        core.settles("kate-pg", "stopped").await;
    }

    /// Nobody can tell an idle database from a busy one while no proxy reports (one that
    /// cannot reach the controller, a wrong admin token after a re-render): idle stops wait
    /// for a report, and expiry does not.
    #[tokio::test]
    async fn idle_stops_wait_until_a_proxy_has_reported() {
        let core = Core::start(FakeRuntime::default());
        let body = json!({"name": "shop", "idleStopAfter": "10m"});
        assert_eq!(core.call(Some(KATE), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
        core.settle_project("shop").await;
        core.running("kate-pg", json!({})).await;
        core.enforce_at(Duration::from_secs(11 * 60)).await;
        assert_eq!(core.database("kate-pg").await.1["status"], "running", "no proxy has reported");
        core.report(ADMIN, &[]).await;
        core.enforce_at(Duration::from_secs(11 * 60)).await;
        core.settles("kate-pg", "stopped").await;
    }
}

/// Quotas per owner, enforced on create and start, and shown by `/v1/usage`.
mod quotas {
    use devdb_core::quota::Quotas;

    use super::*;

    fn with_quotas(quotas: &str) -> Core {
        let quotas: Quotas = serde_json::from_str(quotas).expect("quotas");
        Core::start_configured(FakeRuntime::default(), |config| config.quotas = quotas)
    }

    async fn create(core: &Core, token: &str, db: &str) -> (StatusCode, Value) {
        core.call(Some(token), "POST", "/v1/databases?wait=true", Some(json!({"name": db, "project": "shop"}))).await
    }

    fn message(body: &Value) -> &str {
        body["error"]["message"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn the_number_of_databases_and_of_running_ones_are_capped_per_owner() {
        let core = with_quotas(r#"{"default": {"databases": 2, "running": 1}, "owners": {"bob": {"running": 5}}}"#);
        core.ready_project(KATE, "shop").await;
        assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
        let (status, body) = create(&core, KATE, "kate-2").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(message(&body), "quota exceeded: running databases: kate has 1 of 1");
        assert_eq!(body["error"]["code"], "quota_exceeded", "a client tells a quota from a refused right");
        // Bob's own limit is higher: he is not held to kate's use.
        assert_eq!(create(&core, BOB, "bob-1").await.0, StatusCode::CREATED);
        assert_eq!(create(&core, BOB, "bob-2").await.0, StatusCode::CREATED);
        let (status, body) = create(&core, BOB, "bob-3").await;
        assert_eq!((status, message(&body)), (StatusCode::FORBIDDEN, "quota exceeded: databases: bob has 2 of 2"));

        // A stopped database frees its running place; a start (or a wake) beyond the cap is refused.
        core.call(Some(KATE), "POST", "/v1/databases/kate-1/stop?wait=true", None).await;
        assert_eq!(create(&core, KATE, "kate-2").await.0, StatusCode::CREATED);
        let (status, body) = core.call(Some(ADMIN), "POST", "/v1/databases/kate-1/start", None).await;
        assert_eq!(
            (status, message(&body)),
            (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 1 of 1")
        );

        // Usage: an owner sees its own, an admin everyone's.
        let (status, usage) = core.call(Some(KATE), "GET", "/v1/usage", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            usage,
            json!([{"owner": "kate", "databases": 2, "running": 1, "disk": 2 << 20, "quota": {"databases": 2, "running": 1}}])
        );
        let (_, all) = core.call(Some(ADMIN), "GET", "/v1/usage", None).await;
        let owners: Vec<&str> = all.as_array().expect("list").iter().filter_map(|u| u["owner"].as_str()).collect();
        assert_eq!(owners, ["bob", "kate"]);
    }

    #[tokio::test]
    async fn a_reset_that_would_start_a_database_beyond_the_running_quota_is_refused() {
        let core = with_quotas(r#"{"default": {"running": 1}}"#);
        core.ready_project(KATE, "shop").await;
        assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
        core.call(Some(KATE), "POST", "/v1/databases/kate-1/stop?wait=true", None).await;
        assert_eq!(create(&core, KATE, "kate-2").await.0, StatusCode::CREATED);
        // A reset clones again and runs the clone: for a stopped database, one more running.
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/reset?wait=true", None).await;
        assert_eq!(
            (status, message(&body)),
            (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 1 of 1"),
            "{body}"
        );
        let (_, kate1) = core.call(Some(KATE), "GET", "/v1/databases/kate-1", None).await;
        assert_eq!(kate1["status"], "stopped", "left as it was");
        let (_, usage) = core.call(Some(KATE), "GET", "/v1/usage", None).await;
        assert_eq!(usage[0]["running"], 1);
        // Resetting the running one takes no new place.
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-2/reset?wait=true", None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        // With the place free, the stopped one may be reset (and runs).
        core.call(Some(KATE), "POST", "/v1/databases/kate-2/stop?wait=true", None).await;
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/reset?wait=true", None).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{body}");
    }

    /// Anyone who reaches a proxy can have it wake any database (before authenticating). Such a
    /// wake is no activity, goes back to sleep after its idle period, and holds no running
    /// place against the owner's own start, which stops one to make room: the quota stays a
    /// bound, and nobody but the owner can use it up.
    #[tokio::test]
    async fn wakes_for_clients_that_never_authenticate_cannot_hold_their_owners_running_quota() {
        use std::time::{Duration, SystemTime};
        let core = with_quotas(r#"{"default": {"running": 2}}"#);
        core.ready_project(KATE, "shop").await;
        let core = &core;
        let show = |db: &'static str| async move {
            core.call(Some(KATE), "GET", &format!("/v1/databases/{db}"), None).await.1
        };
        for db in ["kate-1", "kate-2", "kate-3"] {
            assert_eq!(create(core, KATE, db).await.0, StatusCode::CREATED);
            if db == "kate-1" {
                // Used once (a proxy reported a session), so it has a last activity to keep.
                let body = json!({"replica": "proxy-a", "open": [], "active": ["kate-1"]});
                assert_eq!(core.call(Some(ADMIN), "POST", "/v1/activity", Some(body)).await.0, StatusCode::NO_CONTENT);
            }
            core.call(Some(KATE), "POST", &format!("/v1/databases/{db}/stop?wait=true"), None).await;
        }
        let used = show("kate-1").await["lastActiveAt"].clone();
        assert!(used.is_string() && show("kate-2").await.get("lastActiveAt").is_none());

        // Only proxies (admin tokens) wake.
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/start?wake=true", None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        // A flood of wakes through the proxies fills kate's running places…
        for db in ["kate-1", "kate-2"] {
            for _ in 0..3 {
                let (status, body) =
                    core.call(Some(ADMIN), "POST", &format!("/v1/databases/{db}/start?wake=true"), None).await;
                assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            }
            core.call(Some(ADMIN), "POST", &format!("/v1/databases/{db}/start?wait=true&wake=true"), None).await;
        }
        // …a wake gets no room beyond them…
        let (status, body) = core.call(Some(ADMIN), "POST", "/v1/databases/kate-3/start?wake=true", None).await;
        assert_eq!(
            (status, message(&body)),
            (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 2 of 2")
        );
        // …and a wake is no activity.
        assert_eq!(show("kate-1").await["lastActiveAt"], used, "lastActiveAt does not move");
        assert!(show("kate-2").await.get("lastActiveAt").is_none());

        // Kate's own start: the longest-woken one makes room.
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-3/start?wait=true", None).await;
        assert_eq!((status, body["status"].as_str()), (StatusCode::ACCEPTED, Some("running")), "{body}");
        let made_room = core.settles("kate-1", "stopped").await;
        assert_eq!(made_room["stopReason"], "idle", "{made_room}");
        assert_eq!(made_room["lastActiveAt"], used);
        let (_, usage) = core.call(Some(KATE), "GET", "/v1/usage", None).await;
        assert_eq!(usage[0]["running"], 2, "still a bound: {usage}");

        // A session on kate-2 claims its wake: from then on it holds its place like any other.
        let body = json!({"replica": "proxy-a", "open": ["kate-2"], "active": []});
        core.call(Some(ADMIN), "POST", "/v1/activity", Some(body)).await;
        let (status, body) = core.call(Some(KATE), "POST", "/v1/databases/kate-1/start", None).await;
        assert_eq!(
            (status, message(&body)),
            (StatusCode::FORBIDDEN, "quota exceeded: running databases: kate has 2 of 2")
        );
        assert_eq!(show("kate-2").await["status"], "running");

        // A woken database nobody uses goes back to sleep after its idle period (30 minutes),
        // counted from its start.
        core.call(Some(KATE), "POST", "/v1/databases/kate-3/stop?wait=true", None).await;
        core.call(Some(ADMIN), "POST", "/v1/databases/kate-1/start?wait=true&wake=true", None).await;
        let enforce = |later| core.reconciler.enforce_lifecycle_once(SystemTime::now() + later);
        enforce(Duration::from_secs(29 * 60)).await.expect("enforced");
        assert_eq!(show("kate-1").await["status"], "running", "not before its period is over");
        enforce(Duration::from_secs(31 * 60)).await.expect("enforced");
        let slept = core.settles("kate-1", "stopped").await;
        assert_eq!((slept["stopReason"].as_str(), &slept["lastActiveAt"]), (Some("idle"), &used));
    }

    #[tokio::test]
    async fn concurrent_creates_cannot_both_take_the_last_place() {
        let core = with_quotas(r#"{"default": {"databases": 1}}"#);
        core.ready_project(KATE, "shop").await;
        let creates = (0..5).map(|i| {
            let body = json!({"name": format!("kate-{i}"), "project": "shop"});
            core.call(Some(KATE), "POST", "/v1/databases", Some(body))
        });
        let statuses: Vec<StatusCode> =
            futures_util::future::join_all(creates).await.into_iter().map(|(s, _)| s).collect();
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == StatusCode::FORBIDDEN).count(), 4, "{statuses:?}");
    }

    #[tokio::test]
    async fn disk_is_capped_by_the_snapshot_size_of_each_clone() {
        // The fake runtime's snapshots are 1 MiB.
        let core = with_quotas(r#"{"default": {"disk": "2MiB"}}"#);
        core.ready_project(KATE, "shop").await;
        assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
        assert_eq!(create(&core, KATE, "kate-2").await.0, StatusCode::CREATED);
        let (status, body) = create(&core, KATE, "kate-3").await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(message(&body), "quota exceeded: disk: kate has 2.0 MiB of 2.0 MiB (this needs 1.0 MiB)");
    }

    #[tokio::test]
    async fn a_restore_may_use_what_its_owners_disk_quota_leaves_shared_with_the_owners_other_restores() {
        // The fake runtime's snapshots are 1 MiB; kate's first clone takes one of her 3 MiB.
        let core = with_quotas(r#"{"default": {"disk": "3MiB"}, "owners": {"bob": {"disk": "100MiB"}}}"#);
        core.ready_project(KATE, "shop").await;
        assert_eq!(create(&core, KATE, "kate-1").await.0, StatusCode::CREATED);
        let (status, _) = core.call(Some(KATE), "POST", "/v1/projects/shop/refresh", None).await;
        assert_eq!(status, StatusCode::ACCEPTED);
        core.settle_project("shop").await;
        core.ready_project(BOB, "bobs").await;
        let bytes = |a: &Option<devdb_core::runtime::DiskAllowance>| a.as_ref().map(|a| a.bytes);
        let given: Vec<Option<u64>> = core.runtime.allowances().iter().map(bytes).collect();
        assert_eq!(given, [Some(3 << 20), Some(2 << 20), Some(100 << 20)]);

        // Two of bob's restores at once share what his quota leaves: what one takes, the other
        // cannot.
        core.runtime.hold_restores();
        for project in ["bob-a", "bob-b"] {
            let body = json!({"name": project, "backupLocation": "https://dumps.example.com/shop.dump"});
            assert_eq!(core.call(Some(BOB), "POST", "/v1/projects", Some(body)).await.0, StatusCode::CREATED);
        }
        let mut held = Vec::new();
        for _ in 0..POLLS {
            held = core.runtime.allowances().into_iter().skip(3).flatten().collect::<Vec<_>>();
            if held.len() == 2 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(held.len(), 2, "both restores run");
        let left = held[0].bytes;
        assert!(held[0].fits(left / 2 + 1), "one alone fits");
        assert!(!held[1].fits(left / 2 + 1), "not both");
        assert!(held[1].fits(left / 2 - 1));
        core.runtime.release_restores();
        core.settle_project("bob-a").await;
        core.settle_project("bob-b").await;
        assert!(held[1].fits(left) && held[0].fits(left), "their use is gone with them");
        assert!(held[0].fits(left), "a measure after the end counts nothing back");

        let unlimited = Core::start(FakeRuntime::default());
        unlimited.ready_project(KATE, "shop").await;
        assert!(unlimited.runtime.allowances().iter().all(Option::is_none), "no disk quota, no allowance");
    }
}

/// PostgreSQL parameters owners may set: checked, applied with a reload or a restart, kept
/// across reset.
mod settings {
    use super::*;

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
}

/// On Kubernetes each history write is a ConfigMap written to etcd: a database's history is
/// written once per [`PERSIST_EVERY`] however often it is sampled, the databases' writes spread
/// over the interval, while charts stay current from memory.
#[tokio::test]
async fn histories_are_written_once_per_interval_spread_over_it_and_charts_stay_current() {
    use devdb_core::monitor::PERSIST_EVERY;
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    let databases: Vec<String> = (0..12).map(|i| format!("db-{i:02}")).collect();
    for db in &databases {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
        core.runtime.set_counters(&name(db), Counters { size_bytes: 1 << 20, commits: 1, ..Counters::default() });
    }
    let t0 = std::time::SystemTime::now();
    let every = std::time::Duration::from_secs(30);
    let ticks = u32::try_from(2 * PERSIST_EVERY.as_secs() / every.as_secs()).expect("ticks");
    let mut writes_per_tick = Vec::new();
    for tick in 0..ticks {
        let before = core.store.document_writes("history");
        core.monitor.sample_once(t0 + every * tick).await.expect("sample");
        writes_per_tick.push(core.store.document_writes("history") - before);
    }
    let writes: u64 = writes_per_tick.iter().sum();
    // Two intervals: each database once or twice (its first write falls anywhere in the first).
    assert!((12..=24).contains(&writes), "{writes} writes of 12 histories over two intervals: {writes_per_tick:?}");
    assert!(writes_per_tick.iter().all(|n| *n <= 4), "spread over the ticks: {writes_per_tick:?}");
    let (status, chart) = core.call(Some(KATE), "GET", "/v1/databases/db-00/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let samples = usize::try_from(ticks).expect("count");
    assert_eq!(chart["points"].as_array().map(Vec::len), Some(samples), "every sample, current: {chart}");
}

/// Histories due in a tick whose writes fail are written at the next tick, not an interval later.
#[tokio::test]
async fn histories_that_could_not_be_written_are_written_at_the_next_tick() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for db in ["db-00", "db-01"] {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
        core.runtime.set_counters(&name(db), Counters { size_bytes: 1 << 20, commits: 1, ..Counters::default() });
    }
    let t0 = std::time::SystemTime::now();
    let every = std::time::Duration::from_secs(30);
    let ticks = u32::try_from(devdb_core::monitor::PERSIST_EVERY.as_secs() / every.as_secs()).expect("ticks");
    core.store.refuse_document_writes(true);
    // A whole interval: each history fell due once, and its write failed.
    for tick in 0..ticks {
        let _ = core.monitor.sample_once(t0 + every * tick).await;
    }
    assert_eq!(core.store.document_writes("history"), 0);
    core.store.refuse_document_writes(false);
    core.monitor.sample_once(t0 + every * ticks).await.expect("sample");
    assert_eq!(core.store.document_writes("history"), 2, "both, at the first tick that can write");
}

#[tokio::test]
async fn samples_become_charts_metrics_and_usage_reports_each_owner_sees_only_its_own() {
    let core = Core::start(FakeRuntime::default());
    core.ready_project(KATE, "shop").await;
    for (token, db) in [(KATE, "kate-pg"), (BOB, "bob-pg")] {
        let body = json!({"name": db, "project": "shop"});
        assert_eq!(core.call(Some(token), "POST", "/v1/databases?wait=true", Some(body)).await.0, StatusCode::CREATED);
    }
    let counters = |commits: u64, active: u32| Counters {
        size_bytes: 8 << 20,
        active,
        idle: 2,
        commits,
        rows_written: commits * 3,
        blocks_hit: commits * 99,
        blocks_read: commits,
        ..Counters::default()
    };
    // At the start of a five-minute bucket, so both samples fall in one point of the day's series.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
    let t0 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now - now % 300);
    core.runtime.set_counters(&name("kate-pg"), counters(100, 1));
    core.monitor.sample_once(t0).await.expect("sample");
    core.runtime.set_counters(&name("kate-pg"), counters(400, 3));
    core.monitor.sample_once(t0 + std::time::Duration::from_secs(30)).await.expect("sample");

    let (status, history) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let points = history["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "{history}");
    assert_eq!(points[0]["commits"], Value::Null, "no rate from a first sample");
    assert_eq!((points[1]["commits"].as_f64(), points[1]["rowsWritten"].as_f64()), (Some(10.0), Some(30.0)));
    assert_eq!((points[1]["active"].as_u64(), points[1]["cacheHit"].as_f64()), (Some(3), Some(0.99)));
    assert_eq!(history["sampleEverySecs"], 30);
    let (_, day) = core.call(Some(KATE), "GET", "/v1/databases/kate-pg/metrics?range=day", None).await;
    assert_eq!(day["points"].as_array().map(Vec::len), Some(1), "one five-minute point: {day}");
    assert_eq!(
        core.call(Some(KATE), "GET", "/v1/databases/kate-pg/metrics?range=year", None).await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(core.call(Some(BOB), "GET", "/v1/databases/kate-pg/metrics", None).await.0, StatusCode::NOT_FOUND);

    // A new controller (a restart, or another replica taking the lead) goes on from the
    // history in the store, as the last one wrote it when it stopped; its first sample has no
    // rates to give.
    core.monitor.flush().await.expect("written when the monitor stops");
    let restarted =
        Monitor::<FakePlatform>::new(core.store.clone(), core.runtime.clone(), std::time::Duration::from_secs(30));
    restarted.sample_once(t0 + std::time::Duration::from_secs(40)).await.expect("sample");
    let kate_db = core.store.database("kate-pg").await.expect("read").expect("exists");
    let history = restarted.history(&kate_db).await.expect("history");
    assert_eq!(history.hour.len(), 3, "two samples from before the restart, one after");
    assert_eq!(history.latest().map(|p| p.commits), Some(None));

    let metrics = core.text_as(ADMIN, "/metrics").await;
    for line in [
        "devdb_database_size_bytes{database=\"kate-pg\"} 8388608",
        "devdb_database_connections{database=\"kate-pg\",state=\"active\"} 3",
        "devdb_database_commits_per_second{database=\"kate-pg\"} 10.0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    assert!(!metrics.contains("devdb_database_size_bytes{database=\"bob-pg\"}"), "bob's gave no sample");

    // Deleted: its history goes, and the report counts it.
    let id = core.store.database("kate-pg").await.expect("read").expect("exists").id;
    let history_key = devdb_core::monitor::history_key(&id);
    assert!(core.store.document(&history_key).await.expect("read").is_some(), "kept in the store");
    assert_eq!(core.call(Some(KATE), "DELETE", "/v1/databases/kate-pg", None).await.0, StatusCode::ACCEPTED);
    for _ in 0..POLLS {
        if core.store.database("kate-pg").await.expect("read").is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    core.monitor.sample_once(t0 + std::time::Duration::from_secs(60)).await.expect("sample");
    assert_eq!(core.store.document(&history_key).await.expect("read"), None, "forgotten with its database");
    let (_, all) = core.call(Some(ADMIN), "GET", "/v1/reports/usage", None).await;
    let rows = all["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{all}");
    let kate = rows.iter().find(|r| r["owner"] == "kate").expect("kate's row");
    assert_eq!((kate["databasesCreated"].as_u64(), kate["databasesDeleted"].as_u64()), (Some(1), Some(1)), "{kate}");
    assert_eq!((kate["peakConnections"].as_u64(), kate["peakDiskBytes"].as_u64()), (Some(5), Some(8 << 20)));
    let (_, mine) = core.call(Some(KATE), "GET", "/v1/reports/usage", None).await;
    assert!(mine["rows"].as_array().expect("rows").iter().all(|r| r["owner"] == "kate"), "{mine}");
    let (_, theirs) = core.call(Some(KATE), "GET", "/v1/reports/usage?owner=bob", None).await;
    assert_eq!(theirs["rows"], json!([]), "an owner never sees another's use");
    let csv = core.text_as(ADMIN, "/v1/reports/usage?format=csv").await;
    assert_eq!(csv.lines().count(), 1 + rows.len(), "{csv}");
    let request = Request::builder()
        .uri("/v1/reports/usage")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("accept", "text/csv");
    let response = core.app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answered");
    let by_accept =
        String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned();
    assert_eq!(by_accept, csv, "Accept: text/csv asks for the same CSV");
    let (_, none) = core.call(Some(ADMIN), "GET", "/v1/reports/usage?project=other", None).await;
    assert_eq!(none["rows"], json!([]), "filtered by project");
    assert!(csv.contains("\nkate,shop,1,1,"), "{csv}");
    assert_eq!(core.call(Some(ADMIN), "GET", "/v1/reports/usage?from=soon", None).await.0, StatusCode::BAD_REQUEST);
}

/// A browser's request to the dashboard: its status, headers and page.
struct Visit {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Visit {
    fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn cookies(&self) -> Vec<&str> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect()
    }
}

impl Core {
    /// `method path` as a browser with `cookies` (`name=value; …`), a form body when given, and
    /// extra headers.
    async fn browse(
        &self,
        method: &str,
        path: &str,
        cookies: &str,
        form: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Visit {
        let mut request = Request::builder().method(method).uri(path).header("host", "127.0.0.1:8080");
        if !cookies.is_empty() {
            request = request.header("cookie", cookies);
        }
        for (k, v) in extra {
            request = request.header(*k, *v);
        }
        let request = match form {
            Some(form) => {
                request.header("content-type", "application/x-www-form-urlencoded").body(Body::from(form.to_string()))
            }
            None => request.body(Body::empty()),
        };
        let response = self.app.clone().oneshot(request.expect("request")).await.expect("answered");
        let (status, headers) = (response.status(), response.headers().clone());
        let body =
            String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned();
        Visit { status, headers, body }
    }
}

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
