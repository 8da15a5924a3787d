//! The harness: the core's ([`devdb_core::harness`], behind its `test-support` feature) serving
//! the API and the dashboard as the binary composes them, called as a browser ([`Core::browse`]).

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use devdb_core::api::AppState;
use devdb_core::config::ApiConfig;
use devdb_core::fake::{FakePlatform, FakeRuntime};
use http_body_util::BodyExt;
use tower::ServiceExt;

pub use devdb_core::harness::{ADMIN, BOB, KATE, POLLS, email_found};

/// The core's harness, answering with the API and the dashboard.
pub struct Core(devdb_core::harness::Core);

impl Deref for Core {
    type Target = devdb_core::harness::Core;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// What the controller serves, composed as the binary composes it (`controller/src/app.rs`):
/// the API, the dashboard beside it, behind what every request passes.
fn app(state: Arc<AppState<FakePlatform>>) -> Router {
    let api = devdb_core::api::router(state.clone());
    let dashboard = devdb_dashboard::router(api.clone(), state.config.tokens.clone());
    devdb_core::app::with_request_layers(api.merge(dashboard), state)
}

impl Core {
    /// The core with tokens for an admin, kate and bob, over `runtime`, with the dashboard.
    pub fn start(runtime: FakeRuntime) -> Self {
        Self::start_configured(runtime, |_| {})
    }

    /// [`Core::start`] with the configuration changed by `configure`.
    pub fn start_configured(runtime: FakeRuntime, configure: impl FnOnce(&mut ApiConfig)) -> Self {
        Self(devdb_core::harness::Core::serving(runtime, configure, app))
    }
}

/// A browser's request to the dashboard: its status, headers and page.
pub struct Visit {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Visit {
    pub fn location(&self) -> &str {
        self.headers.get("location").and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    pub fn cookies(&self) -> Vec<&str> {
        self.headers.get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect()
    }
}

impl Core {
    /// `method path` as a browser with `cookies` (`name=value; …`), a form body when given, and
    /// extra headers.
    pub async fn browse(
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
