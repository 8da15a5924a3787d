//! `GET /v1/databases/{name}/metrics` (a database's sampled history over the last hour, day or
//! week) and `GET /v1/reports/usage` (use per owner and project over a period, JSON or CSV).

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiError, Shared};
use crate::auth::Caller;
use crate::runtime::Platform;
use crate::usage::{MAX_REPORT_DAYS, parse_date};
#[allow(unused_imports)]
use devdb_shared::api::ErrorBody;
use devdb_shared::metrics::{DatabaseMetrics, Range};
use devdb_shared::reports::UsageReport;

#[derive(Deserialize)]
pub struct RangeQuery {
    range: Option<String>,
}

#[utoipa::path(
    get, path = "/v1/databases/{name}/metrics", tag = "databases",
    params(("name" = String, Path), ("range" = Option<String>, Query, description = "hour (default), day or week")),
    responses((status = 200, body = DatabaseMetrics), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody))
)]
pub async fn history<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    Path(name): Path<String>,
    query: Result<Query<RangeQuery>, QueryRejection>,
) -> Result<Json<DatabaseMetrics>, ApiError> {
    let Query(query) = query?;
    let range = match query.range.as_deref() {
        None => Range::Hour,
        Some(text) => {
            Range::parse(text).ok_or_else(|| ApiError::BadRequest(format!("range {text:?}: use hour, day or week")))?
        }
    };
    let database = super::databases::database_for(&state, &caller, &name).await?;
    let history = state.monitor.history(&database).await?;
    Ok(Json(DatabaseMetrics {
        database: database.name.to_string(),
        range,
        sample_every_secs: state.monitor.every().as_secs(),
        points: history.series(range).to_vec(),
    }))
}

#[derive(Deserialize)]
pub struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    owner: Option<String>,
    project: Option<String>,
    format: Option<String>,
}

/// The days a report covers: `from` and `to` inclusive (default: the last 30 days to today).
pub fn report_period(from: Option<&str>, to: Option<&str>, today: i64) -> Result<(i64, i64), ApiError> {
    let day = |field: &str, text: Option<&str>, default: i64| match text.filter(|t| !t.is_empty()) {
        None => Ok(default),
        Some(text) => parse_date(text).ok_or_else(|| {
            ApiError::BadRequest(format!("{field} {text:?} is not a date (2026-12-01) or RFC 3339 time"))
        }),
    };
    let to = day("to", to, today)?;
    let from = day("from", from, to - 29)?;
    if from > to {
        return Err(ApiError::BadRequest("from is after to".into()));
    }
    if to - from >= MAX_REPORT_DAYS {
        return Err(ApiError::BadRequest(format!("a report covers at most {MAX_REPORT_DAYS} days")));
    }
    Ok((from, to))
}

#[utoipa::path(
    get, path = "/v1/reports/usage", tag = "reports",
    params(
        ("from" = Option<String>, Query, description = "First day (UTC), default 29 days before `to`"),
        ("to" = Option<String>, Query, description = "Last day (UTC), default today"),
        ("owner" = Option<String>, Query, description = "One owner (an owner token sees only its own)"),
        ("project" = Option<String>, Query, description = "One project"),
        ("format" = Option<String>, Query, description = "json (default) or csv; or send Accept: text/csv"),
    ),
    responses((status = 200, body = UsageReport), (status = 400, body = ErrorBody))
)]
pub async fn usage_report<P: Platform>(
    axum::extract::State(state): Shared<P>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let accepts_csv = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/csv")));
    let today = crate::clock::unix(std::time::SystemTime::now()).div_euclid(86_400);
    let (from, to) = report_period(query.from.as_deref(), query.to.as_deref(), today)?;
    let mut report = match caller.scope(query.owner.as_deref()) {
        Some(owner) => crate::usage::report(&*state.store, from, to, owner).await?,
        None => UsageReport { from: crate::usage::date(from), to: crate::usage::date(to), rows: Vec::new() },
    };
    if let Some(project) = query.project.as_deref().filter(|p| !p.is_empty()) {
        report.rows.retain(|r| r.project == project);
    }
    let format = query.format.as_deref().or(accepts_csv.then_some("csv"));
    match format {
        None | Some("json") => Ok(Json(report).into_response()),
        Some("csv") => {
            let filename = format!("attachment; filename=\"devdb-usage-{}-{}.csv\"", report.from, report.to);
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                    (header::CONTENT_DISPOSITION, filename),
                ],
                report.csv(),
            )
                .into_response())
        }
        Some(other) => Err(ApiError::BadRequest(format!("format {other:?}: use json or csv"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_default_to_thirty_days_and_are_bounded() {
        let today = parse_date("2026-12-01").expect("date");
        assert_eq!(report_period(None, None, today).expect("ok"), (today - 29, today));
        assert_eq!(report_period(Some("2026-11-01"), Some(""), today).expect("ok").0, today - 30);
        assert!(report_period(Some("2026-12-02"), Some("2026-12-01"), today).is_err());
        assert!(report_period(Some("2024-01-01"), None, today).is_err(), "over 400 days");
        let err = report_period(Some("last week"), None, today).expect_err("not a date");
        assert!(err.to_string().contains("from \"last week\""), "{err}");
    }
}
