//! The in-process test harness of the core and of the crates built on it: the core (API router,
//! reconciler, fake runtime, in-memory store, route feed) with tokens for an admin, kate and bob,
//! called with `oneshot`. The core's tests serve the API alone; a crate that adds to it (the
//! dashboard) serves its own composition ([`Core::serving`]). A test double, like [`crate::fake`]
//! and [`crate::memory`]: built only for tests (the `test-support` feature).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use devdb_shared::{Domain, Name};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::api::AppState;
use crate::auth::Tokens;
use crate::config::ApiConfig;
use crate::fake::{FakePlatform, FakeRuntime};
use crate::memory::MemoryStore;
use crate::monitor::Monitor;
use crate::reconcile::Reconciler;
use crate::routes::RouteFeed;

pub const ADMIN: &str = "admin-token-0123456789";
pub const KATE: &str = "kate-token-0123456789";
pub const BOB: &str = "bob-token-0123456789";

/// How many times a test polls (1 ms apart) for what the core does in the background before
/// giving up: about a minute, for a busy machine (a wait ends as soon as its condition holds).
pub const POLLS: usize = 60_000;

pub struct Core {
    pub app: Router,
    pub reconciler: Arc<Reconciler<FakePlatform>>,
    pub runtime: Arc<FakeRuntime>,
    pub monitor: Arc<Monitor<FakePlatform>>,
    pub store: Arc<MemoryStore>,
    pub routes: RouteFeed,
    _tokens: tempfile::NamedTempFile,
}

pub fn name(s: &str) -> Name {
    Name::new(s).expect("name")
}

impl Core {
    /// The core with tokens for an admin, kate and bob, over `runtime`.
    pub fn start(runtime: FakeRuntime) -> Self {
        Self::start_configured(runtime, |_| {})
    }

    /// [`Core::start`] with the configuration changed by `configure`.
    pub fn start_configured(runtime: FakeRuntime, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        Self::serving(runtime, configure, |state| {
            crate::app::with_request_layers(crate::api::router(state.clone()), state)
        })
    }

    /// [`Core::start_configured`] answering with `app`, made from the core's state: what a crate
    /// built on the core serves (composed as the binary composes it) in place of the API alone.
    pub fn serving(
        runtime: FakeRuntime,
        configure: impl FnOnce(&mut ApiConfig),
        app: impl FnOnce(Arc<AppState<FakePlatform>>) -> Router,
    ) -> Self {
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
            quotas: crate::quota::Quotas::default(),
            sample_every: std::time::Duration::from_secs(30),
            keep_snapshots: crate::reconcile::SNAPSHOTS_KEPT,
        };
        configure(&mut config);
        let (store, runtime) = (Arc::new(MemoryStore::default()), Arc::new(runtime));
        // Passes run as the local runtime runs them (the ones the tests wait on).
        let (scheduler, passes) = crate::queue::channel();
        let reconciler =
            Reconciler::<FakePlatform>::new(store.clone(), runtime.clone(), scheduler, config.reconciler());
        tokio::spawn(crate::queue::run(reconciler.clone(), passes, Default::default(), Default::default()));
        let routes = RouteFeed::default();
        tokio::spawn(crate::routes::follow::<FakePlatform>(store.clone(), runtime.clone(), routes.clone()));
        let monitor = Monitor::new(store, runtime.clone(), config.sample_every);
        let state = AppState::new(config, reconciler.clone(), monitor.clone(), routes.clone());
        let app = app(state);
        let store = reconciler.store().clone();
        Self { app, reconciler, runtime, monitor, store, routes, _tokens: tokens_file }
    }

    pub async fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
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
    pub async fn release_header(&self, path: &str) -> Option<String> {
        let request = Request::builder().uri(path).header("authorization", format!("Bearer {ADMIN}"));
        let response = self.app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answered");
        response.headers().get("x-release").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    /// A GET's body as text, with `token`.
    pub async fn text_as(&self, token: &str, path: &str) -> String {
        let request = Request::builder().uri(path).header("authorization", format!("Bearer {token}"));
        let response = self.app.clone().oneshot(request.body(Body::empty()).expect("request")).await.expect("answered");
        String::from_utf8_lossy(&response.into_body().collect().await.expect("body").to_bytes()).into_owned()
    }

    /// A project `name` of `token`'s owner, ready.
    pub async fn ready_project(&self, token: &str, project: &str) {
        let body = json!({"name": project, "backupLocation": "https://dumps.example.com/shop.dump"});
        let (status, created) = self.call(Some(token), "POST", "/v1/projects", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        self.settle_project(project).await;
    }

    /// Kate's database `kate-pg` in her ready project `shop`, created with backups and backed up
    /// once by the schedule.
    pub async fn backed_up_database(&self) {
        self.ready_project(KATE, "shop").await;
        let body = json!({"name": "kate-pg", "project": "shop", "backup": {"enabled": true}});
        let (status, created) = self.call(Some(KATE), "POST", "/v1/databases?wait=true", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        crate::backups::Backups::<FakePlatform>::new(self.store.clone(), self.runtime.clone())
            .once(std::time::SystemTime::now())
            .await
            .expect("backed up");
    }

    pub async fn settle_project(&self, project: &str) -> Value {
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

    pub async fn database(&self, db: &str) -> (StatusCode, Value) {
        self.call(Some(ADMIN), "GET", &format!("/v1/databases/{db}"), None).await
    }

    /// Waits until `db` has `status` ("gone": deleted).
    pub async fn settles(&self, db: &str, status: &str) -> Value {
        for _ in 0..POLLS {
            let (code, d) = self.database(db).await;
            if (status == "gone" && code == StatusCode::NOT_FOUND) || d["status"] == status {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("{db} never became {status}: {:?}", self.database(db).await);
    }
}

/// What the scan reports of a column of e-mail addresses in `public.customers`.
pub fn email_found(column: &str) -> devdb_shared::api::PiiFinding {
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

/// Request headers from name-value pairs (a name may repeat).
pub fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        map.append(*k, HeaderValue::from_str(v).expect("value"));
    }
    map
}
