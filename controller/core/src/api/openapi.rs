//! `GET /v1/openapi.json`: the API described from its own types and handler annotations.

use axum::Json;
use utoipa::OpenApi;

use super::{activity, databases, monitoring, projects, restore, routes};

#[derive(OpenApi)]
#[openapi(
    info(title = "DevDB API", description = "Projects (restored dumps) and databases (their clones). \
        Send `Authorization: Bearer <token>` when the server has tokens."),
    paths(
        projects::create, projects::list, projects::show, projects::delete, projects::refresh, projects::rollback, projects::masking, projects::set_masking, projects::rotate_key, projects::scan,
        databases::create, databases::list, databases::show, databases::delete, databases::reset,
        databases::stop, databases::start, databases::extend, databases::patch, restore::restore, monitoring::history, monitoring::usage_report, activity::report, activity::usage,
        routes::snapshot, routes::watch,
    ),
    tags((name = "projects"), (name = "databases"), (name = "reports"), (name = "routes", description = "For proxies (admin tokens)"))
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_path_and_schema() {
        let doc = serde_json::to_value(ApiDoc::openapi()).expect("json");
        for path in [
            "/v1/projects",
            "/v1/projects/{name}",
            "/v1/projects/{name}/refresh",
            "/v1/projects/{name}/rollback",
            "/v1/projects/{name}/masking",
            "/v1/projects/{name}/masking/rotate-key",
            "/v1/projects/{name}/scan",
            "/v1/databases",
            "/v1/databases/{name}",
            "/v1/databases/{name}/reset",
            "/v1/databases/{name}/stop",
            "/v1/databases/{name}/start",
            "/v1/databases/{name}/extend",
            "/v1/databases/{name}/restore",
            "/v1/activity",
            "/v1/databases/{name}/metrics",
            "/v1/reports/usage",
            "/v1/usage",
            "/v1/routes",
            "/v1/routes/watch",
        ] {
            assert!(doc["paths"][path].is_object(), "{path}");
        }
        // Among them the types the proxy, the CLI and the dashboard read too (defined in shared).
        for schema in [
            "CreateProject",
            "Project",
            "CreateDatabase",
            "Database",
            "ErrorBody",
            "RouteTable",
            "Name",
            "ActivityReport",
            "Usage",
            "Limits",
            "UsageReport",
            "UsageRow",
            "ScanReport",
            "DatabaseMetrics",
            "Point",
            "Range",
            "BackupStatus",
            "SnapshotGeneration",
            "Rollback",
            "RestoreDatabase",
        ] {
            assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
        }
        let project = &doc["components"]["schemas"]["Project"]["properties"];
        for field in [
            "id",
            "name",
            "owner",
            "dbType",
            "dbVersion",
            "backupLocation",
            "status",
            "progress",
            "snapshot",
            "snapshots",
            "defaultCredentials",
            "createdAt",
        ] {
            assert!(project[field].is_object(), "Project.{field}");
        }
    }
}
