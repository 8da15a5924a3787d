//! What the API does with a database's backups: `POST /v1/databases/{name}/restore` (in place,
//! to a moment or back to the state before the last such restore) and the checks of a moment
//! asked for, shared with `POST /v1/databases` from another database's backups (`fromDatabase`,
//! `at`). A moment is restorable from the start of the database's window to now: its WAL until
//! now is archived before the restore reads it.

use std::time::SystemTime;

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use devdb_shared::api::{CreateDatabase, Database, ErrorBody, RestoreDatabase};

use super::databases::{WaitQuery, database_for, rebuild};
use super::{ApiError, AppState, Shared};
use crate::auth::Caller;
use crate::model::{DatabaseRecord, RestoreFrom};
use crate::runtime::{Platform, Runtime};
use crate::state::database as transitions;

#[utoipa::path(
    post, path = "/v1/databases/{name}/restore", tag = "databases", request_body = RestoreDatabase,
    params(("name" = String, Path), ("wait" = Option<bool>, Query, description = "Answer once it runs again")),
    responses(
        (status = 202, description = "Restoring: everything written since the moment is replaced; the state before is kept (`backup.beforeRestore`)", body = Database),
        (status = 400, description = "A moment outside the restorable window (named), or neither or both of to and undo", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "no_backup, nothing_to_undo, being_deleted", body = ErrorBody),
    )
)]
pub async fn restore<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<RestoreDatabase>, JsonRejection>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let (Query(wait), Json(req)) = (wait?, body?);
    let database = database_for(&state, &caller, &name).await?;
    let to = match (&req.to, req.undo) {
        (Some(at), false) => crate::lifecycle::timestamp_micros(restorable_moment(&state, &database, at)?),
        (None, true) => database.before_restore.clone().ok_or_else(|| {
            ApiError::conflict("nothing_to_undo", format!("database {name} has not been restored in place"))
        })?,
        _ => {
            return Err(ApiError::BadRequest(
                "give the moment to restore to (to, e.g. 2026-12-06T10:15:00Z) or undo: true".into(),
            ));
        }
    };
    rebuild(&state, &database, wait.wait, |d| transitions::ask_restore(d, to.clone())).await
}

/// Where a database made from another's backups comes from, checked: a database the caller may
/// see (else 404, as for any other), of the same project, backed up, and a moment from its
/// window's start to now.
pub(super) async fn restore_source<P: Platform>(
    state: &AppState<P>,
    caller: &Caller,
    req: &CreateDatabase,
    project: &crate::model::ProjectRecord,
) -> Result<Option<RestoreFrom>, ApiError> {
    let Some(from) = &req.from_database else {
        return match req.at {
            Some(_) => Err(ApiError::BadRequest("at is the moment of fromDatabase: give both".into())),
            None => Ok(None),
        };
    };
    let source = database_for(state, caller, from.as_str()).await?;
    if source.project != project.name {
        return Err(ApiError::BadRequest(format!(
            "database {from} is of project {}, not {}",
            source.project, project.name
        )));
    }
    let Some(at) = &req.at else {
        return Err(ApiError::BadRequest(format!(
            "give the moment to restore {from} to (at, e.g. 2026-12-06T10:15:00Z)"
        )));
    };
    let moment = restorable_moment(state, &source, at)?;
    Ok(Some(RestoreFrom { id: source.id, database: source.name, at: crate::lifecycle::timestamp_micros(moment) }))
}

/// `at`, checked to be a moment `database` can be restored to: it is backed up (else 409
/// `no_backup`) and `at` is from its window's start to now (else 400, naming the window).
fn restorable_moment<P: Platform>(
    state: &AppState<P>,
    database: &DatabaseRecord,
    at: &str,
) -> Result<SystemTime, ApiError> {
    let name = &database.name;
    if !state.runtime().backups() {
        return Err(ApiError::BadRequest("restores from backups need the local runtime for now".into()));
    }
    let moment = humantime::parse_rfc3339_weak(at)
        .map_err(|e| ApiError::BadRequest(format!("{at:?} is not a moment like 2026-12-06T10:15:00Z: {e}")))?;
    let opens = database.backup.as_ref().and_then(|b| b.restorable_from.as_deref());
    let Some(opens) = opens.and_then(|t| humantime::parse_rfc3339_weak(t).ok()) else {
        let off = if database.backup.is_none() { " (its backups are off)" } else { "" };
        return Err(ApiError::conflict("no_backup", format!("database {name} has no backup yet{off}")));
    };
    if moment < opens || moment > SystemTime::now() {
        return Err(ApiError::BadRequest(format!(
            "{at} is outside database {name}'s restorable window, {} to now",
            crate::lifecycle::timestamp(opens)
        )));
    }
    Ok(moment)
}
