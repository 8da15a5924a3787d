//! The admin HTTP port: `/metrics` (Prometheus; with `--admin-token`, only for a request
//! bearing it), `/healthz` (the process runs), `/readyz` (it accepts sessions: routes loaded and
//! not draining). The probes are always open: kubelets and load balancers carry no token.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::Context;

/// The admin routes.
pub fn router(ctx: Arc<Context>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(ctx)
}

/// Serves the admin routes until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: CancellationToken) {
    let server = axum::serve(listener, router(ctx)).with_graceful_shutdown(shutdown.cancelled_owned());
    if let Err(error) = server.await {
        tracing::error!(%error, "admin server failed");
    }
}

async fn metrics(State(ctx): State<Arc<Context>>, headers: HeaderMap) -> Response {
    if let Some(token) = &ctx.config.admin_token {
        let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !token.authorizes(authorization) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs the admin token: Authorization: Bearer <token>\n",
            )
                .into_response();
        }
    }
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], ctx.metrics.encode())
        .into_response()
}

async fn ready(State(ctx): State<Arc<Context>>) -> impl IntoResponse {
    if ctx.draining.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !ctx.routes.loaded() {
        (StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n")
    } else {
        (StatusCode::OK, "ready\n")
    }
}
