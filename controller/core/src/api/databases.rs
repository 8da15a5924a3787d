//! `/v1/databases`: create (clone the project's snapshot), list, show, delete, reset; stop,
//! start, extend and change (protection, idle period, settings, backups).

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use devdb_shared::api::{CreateDatabase, Database, DatabaseStatus, ExtendDatabase, PatchDatabase, StopReason};
use serde::Deserialize;

use super::{ApiError, AppState, Shared, Starter, database_view, owner_for};
use crate::auth::Caller;
use crate::auth::generate_password;
use crate::clock::now;
use crate::model::{DatabaseRecord, Lifecycle, Want};
use crate::quota::Adding;
use crate::reconcile::Key;
use crate::runtime::{Platform, Runtime};
use crate::state::database as transitions;
use crate::store::{Store, StoreError};
#[allow(unused_imports)]
use devdb_shared::api::ErrorBody;

#[derive(Deserialize)]
pub struct ListQuery {
    owner: Option<String>,
    project: Option<String>,
}

impl ListQuery {
    /// Every database (the caller may see) of `project`.
    pub fn for_project(project: &str) -> Self {
        Self { owner: None, project: Some(project.into()) }
    }
}

#[derive(Deserialize, Default)]
pub struct WaitQuery {
    #[serde(default)]
    pub(super) wait: bool,
}

#[utoipa::path(
    post, path = "/v1/databases", tag = "databases", request_body = CreateDatabase, params(("wait" = Option<bool>, Query, description = "Answer once it is running")),
    responses((status = 201, body = Database), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, description = "With wait: it failed", body = ErrorBody))
)]
pub async fn create<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    wait: Result<Query<WaitQuery>, QueryRejection>,
    body: Result<Json<CreateDatabase>, JsonRejection>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let (Query(wait), Json(req)) = (wait?, body?);
    let project = super::project_for(&state, &caller, req.project.as_str(), super::Access::Read).await?;
    refuse_unmasked(&project)?;
    let owner = owner_for(&caller, req.owner.clone())?;
    // Asked for, else the project's default, else on for protected ones where the runtime can.
    let backup = crate::backup_settings::for_new_database(
        req.backup.as_ref(),
        project.backup.as_ref(),
        req.protected,
        state.runtime().backups(),
    )?;
    let restore_from = restore_source(&state, &caller, &req, &project).await?;
    let disk = project.snapshot.as_ref().map_or(0, |s| s.size_bytes);
    // The runtime picks its port, avoiding those of the databases the store last published.
    let taken: std::collections::HashSet<u16> = state.store.watch_databases().borrow().iter().map(|d| d.port).collect();
    let port = state.runtime().new_port(&taken).map_err(|e| ApiError::Internal(e.to_string()))?;
    let quota = super::check_quota(&state, &owner, Adding::Database { disk }, Starter::Owner).await?;
    let ttl = match &req.ttl {
        Some(ttl) => Some(crate::lifecycle::parse_duration("ttl", ttl).map_err(ApiError::BadRequest)?),
        None => project.default_ttl_secs.map(std::time::Duration::from_secs),
    };
    let idle_stop_after_secs = crate::lifecycle::parse_seconds("idleStopAfter", req.idle_stop_after.as_deref())
        .map_err(ApiError::BadRequest)?;
    let lifecycle = Lifecycle {
        expires_at: ttl.map(|ttl| crate::lifecycle::timestamp(std::time::SystemTime::now() + ttl)),
        protected: req.protected,
        idle_stop_after_secs,
        ..Lifecycle::default()
    };
    let record = DatabaseRecord {
        id: format!("db-{}", generate_password().to_lowercase()),
        name: req.name.clone(),
        project: project.name.clone(),
        owner,
        status: DatabaseStatus::Creating,
        want: Want::Run,
        port,
        password: generate_password(),
        snapshot_generation: None,
        error: None,
        created_at: now(),
        lifecycle,
        settings: crate::model::Settings::default(),
        backup,
        restore_from,
        restoring: None,
        before_restore: None,
    };
    let record = match state.store.insert_database(&record).await {
        Err(StoreError::Exists { .. }) => return Err(name_taken(&state, &caller, &req.name).await),
        inserted => inserted?,
    };
    drop(quota);
    tracing::info!(database = %record.name, project = %project.name, owner = %record.owner, "database created");
    state.reconciler.trigger(Key::Database(record.name.clone()));
    let record = if wait.wait { wait_until(&state, &record, DatabaseStatus::Running).await? } else { record };
    Ok((StatusCode::CREATED, Json(database_view(&state.config, &record, Some(&project)))))
}

#[utoipa::path(
    get, path = "/v1/databases", tag = "databases", params(("owner" = Option<String>, Query), ("project" = Option<String>, Query)),
    responses((status = 200, body = Vec<Database>))
)]
pub async fn list<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<Database>>, ApiError> {
    let Query(query) = query?;
    let Some(owner) = caller.scope(query.owner.as_deref()) else {
        return Ok(Json(Vec::new()));
    };
    let databases = state.store.databases(owner, query.project.as_deref()).await?;
    let projects = state.store.projects(None).await?;
    let sessions = state.reconciler.activity().recorded(&*state.store).await?;
    let views = databases
        .into_iter()
        .map(|d| crate::activity::with_last_session(&sessions, d))
        .map(|d| database_view(&state.config, &d, projects.iter().find(|p| p.name == d.project)))
        .collect();
    Ok(Json(views))
}

#[utoipa::path(
    get, path = "/v1/databases/{name}", tag = "databases", params(("name" = String, Path)),
    responses((status = 200, body = Database), (status = 404, body = ErrorBody))
)]
pub async fn show<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Database>, ApiError> {
    let database = database_for(&state, &caller, &name).await?;
    Ok(Json(view(&state, &database).await?))
}

#[utoipa::path(
    delete, path = "/v1/databases/{name}", tag = "databases", params(("name" = String, Path)),
    responses((status = 202, description = "Deleting", body = Database), (status = 404, body = ErrorBody))
)]
pub async fn delete<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let database = database_for(&state, &caller, &name).await?;
    let (record, ()) = crate::state::update_database(&*state.store, &database.name, |d| {
        transitions::ask_delete(d);
        Ok(())
    })
    .await?;
    state.reconciler.trigger(Key::Database(record.name.clone()));
    Ok((StatusCode::ACCEPTED, Json(view(&state, &record).await?)))
}

#[utoipa::path(
    post, path = "/v1/databases/{name}/reset", tag = "databases", params(("name" = String, Path), ("wait" = Option<bool>, Query)),
    responses((status = 202, body = Database), (status = 403, description = "A stopped one would go over the running quota", body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn reset<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let Query(wait) = wait?;
    let database = database_for(&state, &caller, &name).await?;
    if let Some(project) = state.store.project(database.project.as_str()).await? {
        refuse_unmasked(&project)?;
    }
    rebuild(&state, &database, wait.wait, transitions::ask_reset).await
}

/// Has `database` made again (a reset, a restore in place) through `transition`, answering
/// once it runs when `wait`.
pub(super) async fn rebuild<P: Platform>(
    state: &AppState<P>,
    database: &DatabaseRecord,
    wait: bool,
    transition: impl FnMut(&mut DatabaseRecord) -> Result<(), transitions::Refusal> + Send,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    // It runs once made: a stopped (or failed) database takes a running place, as a start would.
    let quota = if crate::quota::counts_as_running(database) || database.want == Want::Delete {
        None
    } else {
        Some(super::check_quota(state, &database.owner, Adding::Running, Starter::Owner).await?)
    };
    // Decided inside the transaction, so a delete committed meanwhile is never undone.
    let asked = crate::state::update_database(&*state.store, &database.name, transition).await;
    drop(quota);
    let (record, ()) = asked?;
    // Its owner wants it: no longer a run a proxy woke for nobody.
    state.reconciler.runs().claimed(&record.name);
    state.reconciler.trigger(Key::Database(record.name.clone()));
    let record = if wait { wait_until(state, &record, DatabaseStatus::Running).await? } else { record };
    Ok((StatusCode::ACCEPTED, Json(view(state, &record).await?)))
}

#[utoipa::path(
    post, path = "/v1/databases/{name}/stop", tag = "databases", params(("name" = String, Path), ("wait" = Option<bool>, Query, description = "Answer once it is stopped")),
    responses((status = 202, body = Database), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn stop<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    wait: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let Query(wait) = wait?;
    let database = database_for(&state, &caller, &name).await?;
    let (record, ()) =
        crate::state::update_database(&*state.store, &database.name, |d| transitions::ask_stop(d, StopReason::Manual))
            .await?;
    state.reconciler.trigger(Key::Database(record.name.clone()));
    let record = if wait.wait { wait_until(&state, &record, DatabaseStatus::Stopped).await? } else { record };
    Ok((StatusCode::ACCEPTED, Json(view(&state, &record).await?)))
}

#[derive(Deserialize, Default)]
pub struct StartQuery {
    #[serde(default)]
    wait: bool,
    /// A proxy's wake, for a client that has not authenticated (admin tokens: proxies).
    #[serde(default)]
    wake: bool,
}

#[utoipa::path(
    post, path = "/v1/databases/{name}/start", tag = "databases",
    params(
        ("name" = String, Path),
        ("wait" = Option<bool>, Query, description = "Answer once it is running"),
        ("wake" = Option<bool>, Query, description = "A proxy's wake for a client that has not authenticated (admin tokens): until a session authenticates, the database holds no running place against its owner's own start"),
    ),
    responses((status = 202, body = Database), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody))
)]
pub async fn start<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<StartQuery>, QueryRejection>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let Query(query) = query?;
    if query.wake && caller != Caller::Admin {
        return Err(ApiError::forbidden("admin_only", "wakes come from proxies, with an admin token"));
    }
    let starter = if query.wake { Starter::Proxy } else { Starter::Owner };
    let database = database_for(&state, &caller, &name).await?;
    let quota = match database.want {
        Want::Stop => Some(super::check_quota(&state, &database.owner, Adding::Running, starter).await?),
        _ => None,
    };
    // Idempotent: many clients waking one database cause one start.
    let started = crate::state::update_database(&*state.store, &database.name, transitions::ask_start).await;
    drop(quota);
    let (record, asked) = started?;
    let runs = state.reconciler.runs();
    match starter {
        Starter::Proxy if asked => runs.woken(&record.name, std::time::SystemTime::now()),
        Starter::Proxy => {}
        // Its owner wants it, whoever started it.
        Starter::Owner => runs.claimed(&record.name),
    }
    if asked {
        tracing::info!(database = %record.name, wake = query.wake, "start asked");
        state.reconciler.trigger(Key::Database(record.name.clone()));
    }
    let record = if query.wait { wait_until(&state, &record, DatabaseStatus::Running).await? } else { record };
    Ok((StatusCode::ACCEPTED, Json(view(&state, &record).await?)))
}

#[utoipa::path(
    post, path = "/v1/databases/{name}/extend", tag = "databases", params(("name" = String, Path)), request_body = ExtendDatabase,
    responses((status = 200, body = Database), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn extend<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<ExtendDatabase>, JsonRejection>,
) -> Result<Json<Database>, ApiError> {
    let Json(req) = body?;
    let ttl = crate::lifecycle::parse_duration("ttl", &req.ttl).map_err(ApiError::BadRequest)?;
    let database = database_for(&state, &caller, &name).await?;
    let expires_at = crate::lifecycle::timestamp(std::time::SystemTime::now() + ttl);
    let record =
        state.store.update_database(&database.name, |d| d.lifecycle.expires_at = Some(expires_at.clone())).await?;
    tracing::info!(database = %record.name, %expires_at, "extended");
    Ok(Json(view(&state, &record).await?))
}

#[utoipa::path(
    patch, path = "/v1/databases/{name}", tag = "databases", params(("name" = String, Path)), request_body = PatchDatabase,
    responses((status = 200, body = Database), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn patch<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<PatchDatabase>, JsonRejection>,
) -> Result<Json<Database>, ApiError> {
    let Json(req) = body?;
    let idle = crate::lifecycle::parse_seconds("idleStopAfter", req.idle_stop_after.as_deref())
        .map_err(ApiError::BadRequest)?;
    // Every parameter checked before any is kept: a request is taken whole or not at all.
    let mut changes = Vec::new();
    for (key, value) in req.settings.iter().flatten() {
        crate::settings::allowed(key).map_err(ApiError::BadRequest)?;
        let value =
            value.as_deref().map(|v| crate::settings::check(key, v)).transpose().map_err(ApiError::BadRequest)?;
        changes.push((key.clone(), value));
    }
    let database = database_for(&state, &caller, &name).await?;
    // Checked before anything is kept; applied below to the record as committed.
    let default = match &req.backup {
        Some(_) => state.store.project(database.project.as_str()).await?.and_then(|p| p.backup),
        None => None,
    };
    let available = state.runtime().backups();
    let backup_of = |current: Option<&devdb_shared::api::BackupStatus>| {
        req.backup.as_ref().map(|asked| crate::backup_settings::patched(current, asked, default.as_ref(), available))
    };
    backup_of(database.backup.as_ref()).transpose()?;
    let mut archiving = false;
    let record = state
        .store
        .update_database(&database.name, |d| {
            if let Some(Ok(backup)) = backup_of(d.backup.as_ref()) {
                archiving = transitions::set_backup(d, backup);
            }
            if let Some(protected) = req.protected {
                d.lifecycle.protected = protected;
            }
            if idle.is_some() {
                d.lifecycle.idle_stop_after_secs = idle;
            }
            for (key, value) in &changes {
                match value {
                    Some(value) => d.settings.wanted.insert(key.clone(), value.clone()),
                    None => d.settings.wanted.remove(key),
                };
            }
        })
        .await?;
    if req.backup.is_some() {
        let (schedule, retention) = record.backup.as_ref().map(|b| (b.schedule.clone(), b.retention.clone())).unzip();
        tracing::info!(database = %record.name, on = record.backup.is_some(), ?schedule, ?retention, archiving, "backups changed");
    }
    if !changes.is_empty() {
        tracing::info!(database = %record.name, settings = ?record.settings.wanted, "settings changed");
    }
    if !changes.is_empty() || archiving {
        state.reconciler.trigger(Key::Database(record.name.clone()));
    }
    Ok(Json(view(&state, &record).await?))
}

/// The conflict of a create whose name is taken: plain about the caller's own database (or any,
/// for an admin), and for anyone else's the same answer as for a name that is not free for any
/// other reason ([`super::name_not_available`]).
async fn name_taken<P: Platform>(state: &AppState<P>, caller: &Caller, name: &devdb_shared::Name) -> ApiError {
    if *caller == Caller::Admin {
        return ApiError::conflict(
            "already_exists",
            format!("database {name} already exists (or is still being deleted)"),
        );
    }
    let existing = state.store.database(name.as_str()).await.ok().flatten();
    match existing.filter(|d| caller.may_access(&d.owner)) {
        Some(d) if d.want == Want::Delete => ApiError::conflict(
            "being_deleted",
            format!("database {name} already exists and is being deleted: its name is free once it is gone"),
        ),
        Some(_) => ApiError::conflict(
            "already_exists",
            format!("database {name} already exists: it is yours (`devdb db show {name}`, `devdb db reset {name}`)"),
        ),
        None => super::name_not_available("database", name),
    }
}

/// Where a database made from another's backups comes from, checked: a database the caller may
/// see (else 404, as for any other), of the same project, backed up, and a moment from its
/// window's start to now.
async fn restore_source<P: Platform>(
    state: &AppState<P>,
    caller: &Caller,
    req: &CreateDatabase,
    project: &crate::model::ProjectRecord,
) -> Result<Option<crate::model::RestoreFrom>, ApiError> {
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
    Ok(Some(crate::model::RestoreFrom {
        id: source.id,
        database: source.name,
        at: crate::lifecycle::timestamp_micros(moment),
    }))
}

/// `at`, checked to be a moment `database` can be restored to: it is backed up (else 409
/// `no_backup`) and `at` is from its window's start to now (else 400, naming the window).
pub(super) fn restorable_moment<P: Platform>(
    state: &AppState<P>,
    database: &DatabaseRecord,
    at: &str,
) -> Result<std::time::SystemTime, ApiError> {
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
    if moment < opens || moment > std::time::SystemTime::now() {
        return Err(ApiError::BadRequest(format!(
            "{at} is outside database {name}'s restorable window, {} to now",
            crate::lifecycle::timestamp(opens)
        )));
    }
    Ok(moment)
}

/// No clone its project refuses now (see [`crate::state::project::clone_refusal`]).
fn refuse_unmasked(project: &crate::model::ProjectRecord) -> Result<(), ApiError> {
    crate::state::project::clone_refusal(project).map_or(Ok(()), |refusal| Err(refusal.into()))
}

/// The database `name` if it exists and the caller may see it (else 404, so names of others'
/// databases are not revealed).
pub(super) async fn database_for<P: Platform>(
    state: &AppState<P>,
    caller: &Caller,
    name: &str,
) -> Result<DatabaseRecord, ApiError> {
    state
        .store
        .database(name)
        .await?
        .filter(|d| caller.may_access(&d.owner))
        .ok_or_else(|| ApiError::NotFound(format!("database {name:?} does not exist")))
}

pub(super) async fn view<P: Platform>(state: &AppState<P>, d: &DatabaseRecord) -> Result<Database, ApiError> {
    let project = state.store.project(d.project.as_str()).await?;
    let sessions = state.reconciler.activity().recorded(&*state.store).await?;
    let d = crate::activity::with_last_session(&sessions, d.clone());
    Ok(database_view(&state.config, &d, project.as_ref()))
}

/// Waits until the database is `target` (or failed: then the error is the response).
pub(super) async fn wait_until<P: Platform>(
    state: &AppState<P>,
    record: &DatabaseRecord,
    target: DatabaseStatus,
) -> Result<DatabaseRecord, ApiError> {
    let wanted = if target == DatabaseStatus::Stopped { Want::Stop } else { Want::Run };
    let mut changes = state.store.watch_databases();
    let deadline = tokio::time::Instant::now() + state.config.wait_timeout;
    loop {
        let current = state
            .store
            .database(record.name.as_str())
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("database {} was deleted", record.name)))?;
        if current.status == target && current.want == wanted {
            return Ok(current);
        }
        if current.status == DatabaseStatus::Error {
            return Err(ApiError::Failed(format!(
                "database {} failed: {}",
                record.name,
                current.error.unwrap_or_default()
            )));
        }
        // A start that failed and put it back to sleep.
        if target == DatabaseStatus::Running
            && current.want == Want::Stop
            && current.status == DatabaseStatus::Stopped
            && let Some(error) = current.error
        {
            return Err(ApiError::Failed(format!("database {}: {error}", record.name)));
        }
        let changed = state.shutdown.run_until_cancelled(tokio::time::timeout_at(deadline, changes.changed())).await;
        if changed.is_none() {
            return Err(ApiError::Unavailable(
                "the controller is shutting down; the database is still being changed".into(),
            ));
        }
        if changed.is_some_and(|c| c.is_err()) {
            return Err(ApiError::Timeout(format!(
                "database {} is still {} after {}; check again later (devdb db show {})",
                record.name,
                serde_json::to_value(current.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                humantime::format_duration(state.config.wait_timeout),
                record.name,
            )));
        }
    }
}
