//! The REST API (axum): `/v1` per the contract, plus the routes feed and health.
//!
//! Handlers are generic over the [`Platform`] (a store and a runtime), so the same API serves
//! every runtime, and the core's tests drive it in-process over an in-memory store and a fake
//! runtime.

mod activity;
mod compat;
mod databases;
mod error;
mod metrics;
mod monitoring;
mod openapi;
mod projects;
mod restore;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use devdb_shared::api::{Database, Project};

pub use error::ApiError;

use crate::auth::Caller;
use crate::config::ApiConfig;
use crate::model::{DatabaseRecord, ProjectRecord};
use crate::reconcile::Reconciler;
use crate::routes::RouteFeed;
use crate::runtime::Platform;
use crate::store::Store;

/// What every handler shares.
pub struct AppState<P: Platform> {
    pub config: ApiConfig,
    pub store: Arc<P::Store>,
    pub reconciler: Arc<Reconciler<P>>,
    /// Samples databases (run by the leading controller) and keeps their histories.
    pub monitor: Arc<crate::monitor::Monitor<P>>,
    pub routes: RouteFeed,
    /// Cancelled when the server begins to shut down: long-lived responses (the route stream,
    /// `?wait=true`) end, so a graceful shutdown does not wait on them forever.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Held from a quota check to the write it allows, so two requests cannot both take the
    /// last place (within this controller).
    quota_lock: tokio::sync::Mutex<()>,
}

impl<P: Platform> AppState<P> {
    /// What the handlers share: `reconciler` made with [`ApiConfig::reconciler`] and
    /// `monitor` sampling every [`ApiConfig::sample_every`] (the binaries compose them).
    pub fn new(
        config: ApiConfig,
        reconciler: Arc<Reconciler<P>>,
        monitor: Arc<crate::monitor::Monitor<P>>,
        routes: RouteFeed,
    ) -> Arc<Self> {
        let shutdown = tokio_util::sync::CancellationToken::new();
        Arc::new(Self {
            config,
            monitor,
            store: reconciler.store().clone(),
            reconciler,
            routes,
            shutdown,
            quota_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn runtime(&self) -> &P::Runtime {
        self.reconciler.runtime()
    }
}

type Shared<P> = State<Arc<AppState<P>>>;

/// The whole API (the binary adds the dashboard beside it, and wraps both in what every request
/// passes: [`crate::app::with_request_layers`]).
pub fn router<P: Platform>(state: Arc<AppState<P>>) -> Router {
    let v1 = Router::new()
        .route("/projects", post(projects::create::<P>).get(projects::list::<P>))
        .route("/projects/{name}", get(projects::show::<P>).delete(projects::delete::<P>))
        .route("/projects/{name}/refresh", post(projects::refresh::<P>))
        .route("/projects/{name}/rollback", post(projects::rollback::<P>))
        .route("/projects/{name}/masking", get(projects::masking::<P>).put(projects::set_masking::<P>))
        .route("/projects/{name}/masking/rotate-key", post(projects::rotate_key::<P>))
        .route("/projects/{name}/scan", post(projects::scan::<P>))
        .route("/databases", post(databases::create::<P>).get(databases::list::<P>))
        .route(
            "/databases/{name}",
            get(databases::show::<P>).delete(databases::delete::<P>).patch(databases::patch::<P>),
        )
        .route("/databases/{name}/reset", post(databases::reset::<P>))
        .route("/databases/{name}/stop", post(databases::stop::<P>))
        .route("/databases/{name}/start", post(databases::start::<P>))
        .route("/databases/{name}/extend", post(databases::extend::<P>))
        .route("/databases/{name}/restore", post(restore::restore::<P>))
        .route("/databases/{name}/metrics", get(monitoring::history::<P>))
        .route("/reports/usage", get(monitoring::usage_report::<P>))
        .route("/activity", post(activity::report::<P>))
        .route("/usage", get(activity::usage::<P>))
        .route("/routes", get(routes::snapshot::<P>))
        .route("/routes/watch", get(routes::watch::<P>));
    let compat = Router::new()
        .route("/projects", post(compat::create_project::<P>).get(compat::list_projects::<P>))
        .route("/projects/{id}", get(compat::show_project::<P>).delete(compat::delete_project::<P>))
        .route("/projects/{id}/databases", post(compat::create_database::<P>).get(compat::list_databases::<P>))
        .route("/projects/{id}/databases/{name}", get(compat::show_database::<P>).delete(compat::delete_database::<P>));
    Router::new()
        .nest("/v1", v1)
        .merge(compat)
        .route("/metrics", get(metrics::metrics::<P>))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate::<P>))
        .route("/v1/openapi.json", get(openapi::document))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/health", get(compat::health))
        .with_state(state)
}

/// Refuses requests without a valid token (when tokens are configured) and records the caller.
async fn authenticate<P: Platform>(
    State(state): Shared<P>,
    mut request: axum::extract::Request,
    next: Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.config.tokens.caller(header) {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => ApiError::Unauthorized.into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or(ApiError::Unauthorized)
    }
}

/// The API view of a project. Its source is shown in its display form to every caller, owner
/// included: secrets in the URL (`https://user:secret@…`, presigned signatures) never leave.
pub fn project_view(p: &ProjectRecord) -> Project {
    Project {
        id: p.id.clone(),
        name: p.name.clone(),
        owner: p.owner.clone(),
        db_type: devdb_shared::api::DbType::Postgres,
        db_version: p.db_version.clone(),
        backup_location: p.backup_location.as_deref().map(devdb_shared::source::display),
        status: p.status,
        progress: p.progress,
        error: p.error.clone(),
        snapshot: p.snapshot.as_ref().map(|s| devdb_shared::api::Snapshot {
            generation: s.generation,
            created_at: s.created_at.clone(),
            size_bytes: s.size_bytes,
            masking_verified: s.masking_verified,
        }),
        snapshots: snapshot_generations(p),
        default_credentials: devdb_shared::api::CredentialsRequest {
            username: p.username.clone(),
            database: p.database.clone(),
        },
        created_at: p.created_at.clone(),
        idle_stop_after: p.idle_stop_after_secs.map(human_seconds),
        default_ttl: p.default_ttl_secs.map(human_seconds),
        masking: p.masking.clone(),
        backup: p.backup.clone(),
    }
}

/// The snapshot generations `p` keeps, its current one among them, newest first.
fn snapshot_generations(p: &ProjectRecord) -> Vec<devdb_shared::api::SnapshotGeneration> {
    let mut kept: Vec<_> = p
        .snapshot
        .iter()
        .chain(&p.kept_snapshots)
        .map(|s| devdb_shared::api::SnapshotGeneration {
            generation: s.generation,
            created_at: s.created_at.clone(),
            size_bytes: s.size_bytes,
        })
        .collect();
    kept.sort_by_key(|s| std::cmp::Reverse(s.generation));
    kept
}

/// `5400` as `"1h 30m"`.
fn human_seconds(seconds: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds)).to_string()
}

/// The API view of a database: connection details point at the proxy.
pub fn database_view(config: &ApiConfig, d: &DatabaseRecord, project: Option<&ProjectRecord>) -> Database {
    let idle = crate::lifecycle::idle_period(d, project, config.idle_stop_after);
    let host = config.domain.host_for(&d.name);
    let (username, database) = project.map(|p| (p.username.clone(), p.database.clone())).unwrap_or_default();
    let uri = format!(
        "postgresql://{username}:{password}@{host}:{port}/{database}?sslmode=require",
        password = d.password,
        port = config.public_port
    );
    Database {
        name: d.name.clone(),
        project: d.project.clone(),
        owner: d.owner.clone(),
        status: d.status,
        host,
        port: config.public_port,
        username,
        password: d.password.clone(),
        database,
        uri,
        created_at: d.created_at.clone(),
        error: d.error.clone(),
        last_active_at: d.lifecycle.last_active_at.clone(),
        stopped_at: d.lifecycle.stopped_at.clone(),
        stop_reason: d.lifecycle.stop_reason,
        expires_at: d.lifecycle.expires_at.clone(),
        protected: d.lifecycle.protected,
        idle_stop_after: idle.filter(|_| !d.lifecycle.protected).map(|p| human_seconds(p.as_secs())),
        settings: d.settings.wanted.clone(),
        backup: d.backup.clone().map(|b| devdb_shared::api::BackupStatus {
            before_restore: d.before_restore.clone(),
            warning: b.warning.clone().or_else(|| crate::backups::standing_warning(&b)),
            ..b
        }),
    }
}

/// Who asks for a database to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Starter {
    /// Its owner (or an admin): the API, the CLI, the dashboard.
    Owner,
    /// A proxy, for a client that has not authenticated (yet): a wake.
    Proxy,
}

/// Refuses (403) what would take `owner` over a quota; else returns a guard to hold until the
/// write the check allowed is done.
///
/// Databases a proxy woke for clients that have not authenticated since hold no running place
/// against their owner's own start (anyone who reaches a proxy can wake any database): when
/// only they stand in the way, as many as needed are stopped, the longest-woken first, so the
/// quota stays a bound on what runs. A proxy's wake gets no such room.
async fn check_quota<'a, P: Platform>(
    state: &'a AppState<P>,
    owner: &str,
    adding: crate::quota::Adding,
    starter: Starter,
) -> Result<tokio::sync::MutexGuard<'a, ()>, ApiError> {
    use crate::quota::Quotas;
    let guard = state.quota_lock.lock().await;
    let (databases, projects) = (state.store.databases(Some(owner), None).await?, state.store.projects(None).await?);
    let mut usage = state.config.quotas.usage(owner, &databases, &projects);
    let Err(refusal) = Quotas::check(&usage, adding) else { return Ok(guard) };
    if starter == Starter::Proxy {
        return Err(ApiError::forbidden("quota_exceeded", refusal));
    }
    let runs = state.reconciler.runs();
    let mut woken: Vec<(std::time::SystemTime, &DatabaseRecord)> = databases
        .iter()
        .filter(|d| crate::quota::counts_as_running(d))
        .filter_map(|d| runs.unclaimed_wake(&d.name).map(|at| (at, d)))
        .collect();
    woken.sort_by_key(|(at, _)| *at);
    let mut making_room = Vec::new();
    for (_, database) in woken {
        if Quotas::check(&usage, adding).is_ok() {
            break;
        }
        usage.running -= 1;
        making_room.push(database);
    }
    Quotas::check(&usage, adding).map_err(|_| ApiError::forbidden("quota_exceeded", refusal))?;
    for database in making_room {
        state
            .store
            .update_database(&database.name, |d| {
                crate::state::database::give_way(d);
            })
            .await?;
        tracing::info!(database = %database.name, owner, "woken by a proxy for nobody who authenticated: stopping it to make room for its owner's start");
        state.reconciler.trigger(crate::reconcile::Key::Database(database.name.clone()));
    }
    Ok(guard)
}

/// The refusal (409) of a create whose name is not free and not the caller's to know about:
/// held by another owner, reserved, or still being released. Names are global (each is a host
/// name), so such a create must fail; the answer is the same in every case and names neither
/// holder nor state.
pub(crate) fn name_not_available(kind: &str, name: &devdb_shared::Name) -> ApiError {
    ApiError::conflict(
        "name_not_available",
        format!("the name {:?} is not available for a {kind}: choose another", name.as_str()),
    )
}

/// The owner of a new object: an owner token always creates its own; an admin may name anyone.
pub fn owner_for(caller: &Caller, requested: Option<String>) -> Result<String, ApiError> {
    match (caller, requested) {
        (Caller::Admin, requested) => Ok(requested.unwrap_or_else(|| "default".into())),
        (Caller::Owner(me), Some(other)) if &other != me => {
            Err(ApiError::forbidden("not_yours", format!("your token creates objects for owner {me:?}, not {other:?}")))
        }
        (Caller::Owner(me), _) => Ok(me.clone()),
    }
}

/// How a handler uses a project: every caller may read one (engineers clone shared projects);
/// only its owner or an admin may change it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Change,
}

/// The project `name_or_id`, if it exists and the caller may use it that way.
pub async fn project_for<P: Platform>(
    state: &AppState<P>,
    caller: &Caller,
    name_or_id: &str,
    access: Access,
) -> Result<ProjectRecord, ApiError> {
    let project = state
        .store
        .project(name_or_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("project {name_or_id:?} does not exist")))?;
    if access == Access::Change && !caller.may_access(&project.owner) {
        return Err(ApiError::forbidden(
            "not_yours",
            format!("project {} belongs to {:?}", project.name, project.owner),
        ));
    }
    Ok(project)
}
