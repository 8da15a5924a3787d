//! The DevDB API that existing clients and the older Go CLI speak (`/projects`,
//! `/projects/{id}/databases[/{name}]`, `/health`), served from the same store by calling the
//! `/v1` handlers and reshaping their answers. `{id}` is a project's id or its name.
//!
//! Differences from the original, on purpose: errors are JSON (`{error:{code,message}}`) with
//! the same status codes, names are validated, and databases carry `password` and `uri`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use devdb_shared::Name;
use devdb_shared::api::{CreateDatabase, CreateProject, Database, DbType};
use serde::{Deserialize, Serialize};

use super::databases::WaitQuery;
use super::{Access, ApiError, Shared, databases, project_for, projects};
use crate::auth::Caller;
use crate::runtime::Platform;
use crate::store::Store;

/// `POST /projects`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompatCreateProject {
    #[serde(default)]
    owner: Option<String>,
    name: Name,
    #[serde(default)]
    db_type: DbType,
    #[serde(default)]
    db_version: Option<String>,
    #[serde(default)]
    backup_location: Option<String>,
}

/// A project as the original API shows it: with its databases and default credentials.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CompatProject {
    id: String,
    owner: String,
    name: String,
    db_type: DbType,
    db_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    backup_location: Option<String>,
    databases: Vec<Database>,
    default_credentials: CompatCredentials,
}

#[derive(Debug, Serialize)]
pub struct CompatCredentials {
    username: String,
    password: String,
    database: String,
}

/// `POST /projects/{id}/databases`.
#[derive(Debug, Deserialize)]
pub struct CompatCreateDatabase {
    name: Name,
}

#[derive(Deserialize)]
pub struct OwnerQuery {
    owner: Option<String>,
}

pub async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "healthy" }))
}

pub async fn create_project<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    body: Result<Json<CompatCreateProject>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CompatProject>), ApiError> {
    let Json(req) = body?;
    let request = CreateProject {
        name: req.name,
        owner: req.owner,
        db_type: req.db_type,
        db_version: req.db_version,
        backup_location: req.backup_location,
        default_credentials: None,
        idle_stop_after: None,
        default_ttl: None,
        backup: None,
    };
    let (status, Json(created)) = projects::create(State(state.clone()), caller.clone(), Ok(Json(request))).await?;
    let record = project_for(&state, &caller, created.name.as_str(), Access::Read).await?;
    Ok((status, Json(compat_project(&state, &caller, record).await?)))
}

pub async fn list_projects<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Query(query): Query<OwnerQuery>,
) -> Result<Json<Vec<CompatProject>>, ApiError> {
    let mut out = Vec::new();
    for project in state.store.projects(query.owner.as_deref()).await? {
        out.push(compat_project(&state, &caller, project).await?);
    }
    Ok(Json(out))
}

pub async fn show_project<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CompatProject>, ApiError> {
    let record = project_for(&state, &caller, &id, Access::Read).await?;
    Ok(Json(compat_project(&state, &caller, record).await?))
}

pub async fn delete_project<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let project = project_for(&state, &caller, &id, Access::Read).await?;
    projects::delete(State(state), caller, Path(project.name.to_string())).await?;
    Ok(Json(serde_json::json!({ "message": format!("project {} deleted", project.name) })))
}

pub async fn create_database<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<CompatCreateDatabase>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Database>), ApiError> {
    let Json(req) = body?;
    let project = project_for(&state, &caller, &id, Access::Read).await?;
    let request = CreateDatabase {
        name: req.name,
        project: project.name,
        owner: None,
        ttl: None,
        protected: false,
        idle_stop_after: None,
        backup: None,
        from_database: None,
        at: None,
    };
    databases::create(State(state), caller, Ok(Query(WaitQuery::default())), Ok(Json(request))).await
}

pub async fn list_databases<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Database>>, ApiError> {
    let project = project_for(&state, &caller, &id, Access::Read).await?;
    Ok(Json(project_databases(&state, &caller, project.name.as_str()).await?))
}

pub async fn show_database<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<Database>, ApiError> {
    let database = database_in(&state, &caller, &id, &name).await?;
    Ok(Json(database))
}

pub async fn delete_database<P: Platform>(
    State(state): Shared<P>,
    caller: Caller,
    Path((id, name)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let database = database_in(&state, &caller, &id, &name).await?;
    let _ = databases::delete(State(state), caller, Path(database.name.to_string())).await?;
    Ok(Json(serde_json::json!({ "message": format!("database {} deleted", database.name) })))
}

/// The database `name` if it belongs to project `id` (else 404).
async fn database_in<P: Platform>(
    state: &std::sync::Arc<super::AppState<P>>,
    caller: &Caller,
    id: &str,
    name: &str,
) -> Result<Database, ApiError> {
    let project = project_for(state, caller, id, Access::Read).await?;
    let Json(database) = databases::show(State(state.clone()), caller.clone(), Path(name.to_string())).await?;
    if database.project != project.name {
        return Err(ApiError::NotFound(format!("database {name:?} does not exist in project {}", project.name)));
    }
    Ok(database)
}

async fn project_databases<P: Platform>(
    state: &std::sync::Arc<super::AppState<P>>,
    caller: &Caller,
    project: &str,
) -> Result<Vec<Database>, ApiError> {
    let Json(all) =
        databases::list(State(state.clone()), caller.clone(), Ok(Query(databases::ListQuery::for_project(project))))
            .await?;
    Ok(all)
}

async fn compat_project<P: Platform>(
    state: &std::sync::Arc<super::AppState<P>>,
    caller: &Caller,
    p: crate::model::ProjectRecord,
) -> Result<CompatProject, ApiError> {
    let databases = project_databases(state, caller, p.name.as_str()).await?;
    let view = super::project_view(&p);
    // The project's own credentials are for its owner and admins.
    let password = if caller.may_access(&p.owner) { p.password } else { String::new() };
    Ok(CompatProject {
        id: p.id,
        owner: p.owner,
        name: p.name.to_string(),
        db_type: DbType::Postgres,
        db_version: p.db_version,
        backup_location: view.backup_location,
        databases,
        default_credentials: CompatCredentials { username: p.username, password, database: p.database },
    })
}
