//! `POST /v1/activity`: the proxies' reports of sessions (admin tokens: the proxies hold one);
//! `GET /v1/usage`: each owner's use against its quota.
//! A database active in a report (proxies report only sessions their backend accepted) had a
//! session now (its `lastActiveAt`, kept as [`crate::activity`] says), and a proxy's wake of it
//! counts as wanted; the reports also say which have a session open, so idle stops wait for
//! them.

use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;

use super::{ApiError, Shared};
use crate::auth::Caller;
use crate::runtime::Platform;
use crate::store::Store;
use devdb_shared::api::ActivityReport;
#[allow(unused_imports)]
use devdb_shared::api::ErrorBody;

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
        return Err(ApiError::forbidden("admin_only", "activity reports come from proxies, with an admin token"));
    }
    let Json(report) = body?;
    let now = SystemTime::now();
    for name in state.reconciler.activity().report(report, now) {
        // A session authenticated: a wake that brought it up was wanted.
        state.reconciler.runs().claimed(&name);
    }
    state.reconciler.activity().persist(&*state.store, now, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get, path = "/v1/usage", tag = "databases",
    responses((status = 200, description = "Each owner's use against its quota (an owner token: its own)", body = Vec<devdb_shared::reports::Usage>))
)]
pub async fn usage<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
) -> Result<Json<Vec<devdb_shared::reports::Usage>>, ApiError> {
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
