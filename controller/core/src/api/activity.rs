//! `POST /v1/activity`: the proxies' reports of sessions (admin tokens: the proxies hold one);
//! `GET /v1/usage`: each owner's use against its quota.
//! A database active in a report (proxies report only sessions their backend accepted) gets
//! `lastActiveAt` now, and a proxy's wake of it counts as wanted; the reports also say which
//! have a session open, so idle stops wait for them (see [`crate::lifecycle`]).

use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use futures_util::StreamExt as _;

use super::{ApiError, Shared};
use crate::auth::Caller;
use crate::lifecycle::ActivityReport;
use crate::runtime::Platform;
use crate::store::Store;
#[allow(unused_imports)]
use devdb_shared::api::ErrorBody;

/// `lastActiveAt` is written at most this often per database (reports come every 15 s).
const WRITE_EVERY: Duration = Duration::from_secs(60);

#[utoipa::path(
    post, path = "/v1/activity", tag = "routes", request_body = ActivityReport,
    responses((status = 204, description = "Recorded"), (status = 403, body = ErrorBody))
)]
pub async fn report<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    body: Result<Json<ActivityReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    if caller != Caller::Admin {
        return Err(ApiError::Forbidden("activity reports come from proxies, with an admin token".into()));
    }
    let Json(report) = body?;
    let active = state.reconciler.activity().report(report);
    let now = SystemTime::now();
    let stamp = crate::lifecycle::timestamp(now);
    // What the store last published: no read of the store per database (on Kubernetes, a
    // request to the API server each); the write itself reads and checks the record.
    let known = state.store.watch_databases().borrow().clone();
    let mut due = Vec::new();
    for name in active {
        // A session authenticated: a wake that brought it up was wanted.
        state.reconciler.runs().claimed(&name);
        let Some(database) = known.iter().find(|d| d.name == name) else { continue };
        let recent = database
            .lifecycle
            .last_active_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .is_some_and(|t| now.duration_since(t).unwrap_or_default() < WRITE_EVERY);
        if !recent {
            due.push(database.name.clone());
        }
    }
    // Eight at a time: a proxy gives up on a report after 10 s, and a hundred writes one after
    // another (on Kubernetes, a read and a write to the API server each) can take longer.
    let mut writes = Vec::new();
    for name in due {
        let (store, stamp) = (state.store.clone(), stamp.clone());
        writes.push(
            async move { store.update_database(&name, |d| d.lifecycle.last_active_at = Some(stamp.clone())).await },
        );
    }
    let written: Vec<_> = futures_util::stream::iter(writes).buffer_unordered(8).collect().await;
    written.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/usage", tag = "databases",
    responses((status = 200, description = "Each owner's use against its quota (an owner token: its own)", body = Vec<crate::quota::Usage>))
)]
pub async fn usage<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
) -> Result<Json<Vec<crate::quota::Usage>>, ApiError> {
    let (databases, projects) = (state.store.databases(None, None).await?, state.store.projects(None).await?);
    let mut owners: Vec<String> = match &caller {
        Caller::Admin => databases
            .iter()
            .map(|d| d.owner.clone())
            .chain(projects.iter().map(|p| p.owner.clone()))
            .chain(state.config.quotas.owners.keys().cloned())
            .collect(),
        Caller::Owner(me) => vec![me.clone()],
    };
    owners.sort();
    owners.dedup();
    Ok(Json(owners.iter().map(|o| state.config.quotas.usage(o, &databases, &projects)).collect()))
}
