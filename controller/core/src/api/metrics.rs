//! `GET /metrics`: projects and databases by status, read from the store at scrape time
//! (OpenMetrics text).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, Shared};
use crate::runtime::Platform;
use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

fn status_label<T: serde::Serialize>(status: &T) -> StatusLabel {
    let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    StatusLabel { status }
}

pub async fn metrics<P: Platform>(State(state): Shared<P>) -> Result<impl IntoResponse, ApiError> {
    let projects = Family::<StatusLabel, Gauge>::default();
    let databases = Family::<StatusLabel, Gauge>::default();
    for p in state.store.projects(None).await? {
        projects.get_or_create(&status_label(&p.status)).inc();
    }
    for d in state.store.databases(None, None).await? {
        databases.get_or_create(&status_label(&d.status)).inc();
    }
    let mut registry = Registry::with_prefix("devdb");
    registry.register("projects", "Projects by status", projects);
    registry.register("databases", "Database instances by status", databases);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}
