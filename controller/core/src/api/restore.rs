//! `POST /v1/databases/{name}/restore`: a database restored in place from its own backups, to a
//! moment of its window ([`super::databases::restorable_moment`], checked as for a new database
//! from another's backups) or back to the state before its last such restore.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use devdb_shared::api::{Database, ErrorBody, RestoreDatabase};

use super::databases::{WaitQuery, database_for, rebuild, restorable_moment};
use super::{ApiError, Shared};
use crate::auth::Caller;
use crate::runtime::Platform;
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
