//! `/v1/projects`: create (restore once), list, show, delete, refresh, roll back.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use devdb_shared::api::{CreateProject, Masking, Project, ProjectStatus, Rollback};
use devdb_shared::reports::ScanReport;
use serde::Deserialize;

use super::{Access, ApiError, Shared, owner_for, project_view};
use crate::auth::Caller;
use crate::auth::generate_password;
use crate::clock::now;
use crate::model::ProjectRecord;
use crate::reconcile::Key;
use crate::runtime::{Platform, Runtime};
use crate::state::project as transitions;
use crate::store::{Store, StoreError};
#[allow(unused_imports)]
use devdb_shared::api::ErrorBody;

#[derive(Deserialize)]
pub struct ListQuery {
    owner: Option<String>,
}

#[utoipa::path(
    post, path = "/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, description = "Created; the restore runs in the background", body = Project), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn create<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    body: Result<Json<CreateProject>, JsonRejection>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let Json(req) = body?;
    let owner = owner_for(&caller, req.owner)?;
    if looks_like_a_project_id(req.name.as_str()) {
        return Err(super::name_not_available("project", &req.name));
    }
    let allow_private_source = caller == Caller::Admin || state.config.allow_private_sources;
    if let Some(location) = &req.backup_location {
        if location.starts_with("file://") && caller != Caller::Admin {
            return Err(ApiError::forbidden(
                "admin_only",
                "file:// sources read the controller's own files: admin tokens only",
            ));
        }
        state.runtime().check_source(location, allow_private_source).await.map_err(ApiError::BadRequest)?;
    }
    let available = state.runtime().postgres_version().to_string();
    let db_version = req.db_version.unwrap_or_else(|| available.clone());
    if db_version != available {
        return Err(ApiError::BadRequest(format!(
            "PostgreSQL {db_version} is not available here; this runtime provides {available}"
        )));
    }
    let (username, database) = match req.default_credentials {
        Some(c) => (c.username, c.database),
        None => ("app".to_string(), req.name.as_str().replace('-', "_")),
    };
    for (what, value) in [("username", &username), ("database", &database)] {
        check_identifier(what, value)?;
    }
    let seconds = |field, text: &Option<String>| {
        crate::lifecycle::parse_seconds(field, text.as_deref()).map_err(ApiError::BadRequest)
    };
    let idle_stop_after_secs = seconds("idleStopAfter", &req.idle_stop_after)?;
    let default_ttl_secs = seconds("defaultTtl", &req.default_ttl)?;
    let backup = req
        .backup
        .as_ref()
        .map(|b| crate::backup_settings::project_default(b, state.runtime().backups()))
        .transpose()?;
    let record = ProjectRecord {
        id: format!("prj-{}", generate_password().to_lowercase()),
        name: req.name.clone(),
        owner,
        db_version,
        backup_location: req.backup_location,
        allow_private_source,
        status: ProjectStatus::Pending,
        error: None,
        progress: None,
        snapshot: None,
        kept_snapshots: Vec::new(),
        wanted_generation: 1,
        username,
        password: generate_password(),
        database,
        created_at: now(),
        idle_stop_after_secs,
        default_ttl_secs,
        masking: devdb_shared::api::Masking::default(),
        mask_key: String::new(),
        restores_begun: 0,
        backup,
    };
    let record = match state.store.insert_project(&record).await {
        // An admin may know of every project; an owner, only of its own.
        Err(StoreError::Exists { .. }) if caller == Caller::Admin => {
            return Err(ApiError::conflict(
                "already_exists",
                format!("project {} already exists (or is still being deleted)", req.name),
            ));
        }
        Err(StoreError::Exists { .. }) => {
            let existing = state.store.project(req.name.as_str()).await.ok().flatten().filter(|p| p.name == req.name);
            return Err(match existing.filter(|p| caller.may_access(&p.owner)) {
                Some(p) => ApiError::conflict(
                    "already_exists",
                    format!("project {} already exists: it is yours (`devdb project show {}`)", p.name, p.name),
                ),
                None => super::name_not_available("project", &req.name),
            });
        }
        inserted => inserted?,
    };
    tracing::info!(project = %record.name, owner = %record.owner, "project created");
    state.reconciler.trigger(Key::Project(record.name.clone()));
    Ok((StatusCode::CREATED, Json(project_view(&record))))
}

#[utoipa::path(
    get, path = "/v1/projects", tag = "projects", params(("owner" = Option<String>, Query, description = "Only this owner's")),
    responses((status = 200, body = Vec<Project>))
)]
pub async fn list<P: Platform>(
    axum::extract::State(state): Shared<P>,
    // Every caller may list projects (engineers clone shared ones); the token must be valid.
    _caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Project>>, ApiError> {
    let Query(query) = query?;
    let projects = state.store.projects(query.owner.as_deref()).await?;
    Ok(Json(projects.iter().map(project_view).collect()))
}

#[utoipa::path(
    get, path = "/v1/projects/{name}", tag = "projects", params(("name" = String, Path, description = "Name or id")),
    responses((status = 200, body = Project), (status = 404, body = ErrorBody))
)]
pub async fn show<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Project>, ApiError> {
    Ok(Json(project_view(&super::project_for(&state, &caller, &name, Access::Read).await?)))
}

#[utoipa::path(
    delete, path = "/v1/projects/{name}", tag = "projects", params(("name" = String, Path)),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody), (status = 409, description = "It still has databases", body = ErrorBody))
)]
pub async fn delete<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let project = super::project_for(&state, &caller, &name, Access::Change).await?;
    match state.store.delete_project(&project.name).await {
        Err(StoreError::Exists { .. }) => {
            // Only the databases the caller may see are named: others' stay unnamed and uncounted.
            let databases = state.store.databases(None, Some(project.name.as_str())).await?;
            let visible: Vec<&str> =
                databases.iter().filter(|d| caller.may_access(&d.owner)).map(|d| d.name.as_str()).collect();
            return Err(ApiError::conflict(
                "has_databases",
                if visible.is_empty() {
                    format!(
                        "project {} still has databases, of other owners: they (or an admin) must delete them first",
                        project.name
                    )
                } else {
                    format!("project {} still has databases ({}): delete them first", project.name, visible.join(", "))
                },
            ));
        }
        other => other?,
    }
    tracing::info!(project = %project.name, "project deleted");
    // A restore in flight stops now (download, tools, files), not when it would have ended.
    state.reconciler.cancel_restore(&project.name);
    state.reconciler.trigger(Key::Project(project.name));
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post, path = "/v1/projects/{name}/refresh", tag = "projects", params(("name" = String, Path)),
    responses((status = 202, body = Project), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn refresh<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let project = super::project_for(&state, &caller, &name, Access::Change).await?;
    let (updated, ()) = crate::state::update_project(&*state.store, &project.name, transitions::ask_refresh).await?;
    state.reconciler.trigger(Key::Project(updated.name.clone()));
    Ok((StatusCode::ACCEPTED, Json(project_view(&updated))))
}

#[utoipa::path(
    post, path = "/v1/projects/{name}/rollback", tag = "projects", params(("name" = String, Path)), request_body = Rollback,
    responses((status = 200, description = "The kept generation is current: new databases and resets are made of it", body = Project),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "Restoring, or the generation is not kept (the message names those kept)", body = ErrorBody))
)]
/// Makes one of the project's kept snapshot generations its current one (without
/// `generation`: the newest older than the current). Databases keep their data until reset.
pub async fn rollback<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<Rollback>, JsonRejection>,
) -> Result<Json<Project>, ApiError> {
    let Json(request) = body?;
    let project = super::project_for(&state, &caller, &name, Access::Change).await?;
    let from = project.snapshot.as_ref().map(|s| s.generation);
    let (updated, generation) =
        crate::state::update_project(&*state.store, &project.name, |p| transitions::rollback(p, request.generation))
            .await?;
    tracing::info!(project = %updated.name, from, generation, "rolled back");
    // Its older snapshots are cleaned by its next pass; none of the kept ones goes.
    state.reconciler.trigger(Key::Project(updated.name.clone()));
    Ok(Json(project_view(&updated)))
}

#[utoipa::path(
    get, path = "/v1/projects/{name}/masking", tag = "projects", params(("name" = String, Path)),
    responses((status = 200, body = Masking), (status = 404, body = ErrorBody))
)]
pub async fn masking<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Masking>, ApiError> {
    let project = super::project_for(&state, &caller, &name, Access::Read).await?;
    Ok(Json(project.masking))
}

#[utoipa::path(
    put, path = "/v1/projects/{name}/masking", tag = "projects", params(("name" = String, Path)), request_body = Masking,
    responses((status = 202, description = "Saved; the project restores again with them", body = Project), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn set_masking<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<Masking>, JsonRejection>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let Json(masking) = body?;
    let project = super::project_for(&state, &caller, &name, Access::Change).await?;
    masking.check().map_err(ApiError::BadRequest)?;
    if project.backup_location.is_none() && !masking.rules.is_empty() {
        return Err(ApiError::BadRequest(format!("project {} has no dump: nothing to mask", project.name)));
    }
    let key = new_mask_key();
    let (updated, changed) =
        crate::state::update_project(&*state.store, &project.name, |p| transitions::set_masking(p, &masking, &key))
            .await?;
    tracing::info!(project = %updated.name, rules = updated.masking.rules.len(), restoring = changed, "masking set");
    if changed {
        state.reconciler.trigger(Key::Project(updated.name.clone()));
    }
    Ok((StatusCode::ACCEPTED, Json(project_view(&updated))))
}

/// A project's masking key: 48 random characters.
fn new_mask_key() -> String {
    format!("{}{}", generate_password(), generate_password())
}

#[utoipa::path(
    post, path = "/v1/projects/{name}/masking/rotate-key", tag = "projects", params(("name" = String, Path)),
    responses((status = 202, description = "A new key; the project restores again, masked under it (clones wait for it)", body = Project),
              (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
/// Gives the project a new masking key (the old one is gone): its next snapshot, restored at
/// once, is masked under it, and no clone is made of one masked under the old key meanwhile.
pub async fn rotate_key<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    let project = super::project_for(&state, &caller, &name, Access::Change).await?;
    if project.masking.rules.is_empty() {
        return Err(ApiError::BadRequest(format!("project {} has no masking rules: no key masks it", project.name)));
    }
    let key = new_mask_key();
    let (updated, ()) =
        crate::state::update_project(&*state.store, &project.name, |p| transitions::rotate_key(p, &key)).await?;
    tracing::info!(project = %updated.name, key_version = updated.masking.key_version, "masking key rotated");
    state.reconciler.trigger(Key::Project(updated.name.clone()));
    Ok((StatusCode::ACCEPTED, Json(project_view(&updated))))
}

#[utoipa::path(
    post, path = "/v1/projects/{name}/scan", tag = "projects", params(("name" = String, Path)),
    responses((status = 200, body = ScanReport), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn scan<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ScanReport>, ApiError> {
    let project = super::project_for(&state, &caller, &name, Access::Read).await?;
    let Some(snapshot) = &project.snapshot else {
        return Err(ApiError::conflict("no_snapshot", format!("project {} has no snapshot to scan yet", project.name)));
    };
    let findings = snapshot
        .findings
        .iter()
        .map(|f| devdb_shared::api::PiiFinding { covered: project.masking.covers(f), ..f.clone() })
        .collect();
    Ok(Json(ScanReport {
        snapshot_created_at: Some(snapshot.created_at.clone()),
        findings,
        unlisted: snapshot.unlisted_findings,
    }))
}

/// Whether `name` has the shape of a project id (`prj-` and 24 letters and digits here, a UUID
/// on Kubernetes): such names are reserved, as every lookup takes a name or an id, and a project
/// named after another's id would answer for it.
fn looks_like_a_project_id(name: &str) -> bool {
    let local = name
        .strip_prefix("prj-")
        .is_some_and(|rest| rest.len() == 24 && rest.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    let groups: Vec<&str> = name.split('-').collect();
    let uuid = groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    local || uuid
}

/// Usernames and database names: lower-case SQL identifiers, so they never need escaping.
fn check_identifier(what: &str, value: &str) -> Result<(), ApiError> {
    let ok = value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "defaultCredentials.{what} {value:?} must be a lower-case identifier ([a-z_][a-z0-9_]*, at most 63 characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::looks_like_a_project_id;

    #[test]
    fn names_shaped_like_project_ids_are_reserved() {
        for id in ["prj-0123456789abcdefghijklmn", "a1b2c3d4-e5f6-4789-abcd-0123456789ef"] {
            assert!(looks_like_a_project_id(id), "{id}");
        }
        for name in ["shop", "prj-shop", "prj-0123456789abcdefghijklm", "a1b2c3d4-e5f6-4789-abcd-0123456789eg"] {
            assert!(!looks_like_a_project_id(name), "{name}");
        }
    }
}
