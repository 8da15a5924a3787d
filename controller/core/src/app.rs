//! What every request to the controller passes, whatever answers it: the origin guard, a tracing
//! span, the release header ([`with_request_layers`]). The binary composes its HTTP application,
//! the API ([`crate::api::router`]) and the dashboard beside it (the `devdb-dashboard` crate),
//! and serves it wrapped in these.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};

use crate::api::{ApiError, AppState};
use crate::runtime::Platform;

/// `router` behind what every request passes: the origin guard, the release header, and a span
/// that names the request.
pub fn with_request_layers<P: Platform>(router: Router, state: Arc<AppState<P>>) -> Router {
    router
        .layer(middleware::from_fn_with_state(state, guard_origin::<P>))
        .layer(middleware::from_fn(release_header))
        .layer(middleware::from_fn(request_span))
}

/// Refuses what a browser sends on another site's behalf: a change from another origin (a
/// page elsewhere posting to this API), and, without tokens, any request naming a host that
/// is not loopback (a DNS-rebinding page reaching a loopback controller through its own name).
async fn guard_origin<P: Platform>(
    State(state): State<Arc<AppState<P>>>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let reading = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !reading && crate::origin::cross_site(headers) {
        return ApiError::forbidden("cross_site", "requests from another site cannot change anything here")
            .into_response();
    }
    if state.config.tokens.is_empty() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        if !crate::origin::loopback_host(host) {
            return ApiError::forbidden(
                "not_loopback",
                format!("this controller has no API tokens, so it answers only to loopback names, not {host:?}"),
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// What a request's handling logs carries the request: its method and path (not its query,
/// which is the caller's and may say more than a log should).
async fn request_span(request: axum::extract::Request, next: Next) -> Response {
    use tracing::Instrument as _;
    let span = tracing::info_span!("request", method = %request.method(), path = %request.uri().path());
    next.run(request).instrument(span).await
}

/// Every response names the release that produced it.
async fn release_header(request: axum::extract::Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert("x-release", HeaderValue::from_static(env!("CARGO_PKG_VERSION")));
    response
}

#[cfg(test)]
mod tests {
    /// What a handler logs carries its request's method and path, and never its query.
    #[tokio::test]
    async fn a_requests_logs_name_it_without_its_query() {
        use tower::ServiceExt as _;

        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lines").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt().with_ansi(false).with_writer(move || writer.clone()).finish();
        let _default = tracing::subscriber::set_default(subscriber);
        let app = axum::Router::new()
            .route("/v1/databases/{name}/start", axum::routing::post(|| async { tracing::info!("handled") }))
            .layer(axum::middleware::from_fn(super::request_span));
        let request = axum::http::Request::post("/v1/databases/kate-pg/start?token=s3cret")
            .body(axum::body::Body::empty())
            .expect("request");
        app.oneshot(request).await.expect("answered");
        let logged = String::from_utf8(lines.0.lock().expect("lines").clone()).expect("text");
        assert!(
            logged.contains("request{method=POST path=/v1/databases/kate-pg/start}") && logged.contains("handled"),
            "{logged}"
        );
        assert!(!logged.contains("s3cret"), "{logged}");
    }
}
