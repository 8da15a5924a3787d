//! `GET /metrics`: projects and databases by status, each database's lifecycle times and
//! backups, stopped databases by reason, and each owner's use against its quota, read from the
//! store at scrape time, and the latest sample of each running database (OpenMetrics text).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, Shared};
use crate::runtime::Platform;
use crate::store::Store;
use devdb_shared::metrics::Point;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DatabaseLabel {
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionsLabel {
    database: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OwnerLabel {
    owner: String,
}

/// Seconds since the epoch of an RFC 3339 time.
fn epoch(time: Option<&str>) -> Option<i64> {
    let time = humantime::parse_rfc3339_weak(time?).ok()?;
    time.duration_since(std::time::UNIX_EPOCH).ok().and_then(|d| i64::try_from(d.as_secs()).ok())
}

fn status_label<T: serde::Serialize>(status: &T) -> StatusLabel {
    let status = serde_json::to_value(status).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    StatusLabel { status }
}

/// The latest sample of each running database (sampled by this controller: the leader).
fn register_samples(registry: &mut Registry, latest: &std::collections::HashMap<String, Point>) {
    use prometheus_client::metrics::gauge::Gauge as FloatGauge;
    type Floats = Family<DatabaseLabel, FloatGauge<f64, std::sync::atomic::AtomicU64>>;
    let size = Family::<DatabaseLabel, Gauge>::default();
    let connections = Family::<ConnectionsLabel, Gauge>::default();
    type Rate = (&'static str, &'static str, fn(&Point) -> Option<f64>, Floats);
    let rates: [Rate; 6] = [
        ("database_commits_per_second", "Commits per second over the last interval", |p| p.commits, Floats::default()),
        (
            "database_rollbacks_per_second",
            "Rollbacks per second over the last interval",
            |p| p.rollbacks,
            Floats::default(),
        ),
        ("database_rows_read_per_second", "Rows returned and fetched per second", |p| p.rows_read, Floats::default()),
        (
            "database_rows_written_per_second",
            "Rows inserted, updated and deleted per second",
            |p| p.rows_written,
            Floats::default(),
        ),
        (
            "database_cache_hit_ratio",
            "Share of block reads served from shared buffers",
            |p| p.cache_hit,
            Floats::default(),
        ),
        (
            "database_longest_query_seconds",
            "How long the longest running statement has run",
            |p| Some(p.longest_query_secs),
            Floats::default(),
        ),
    ];
    for (name, point) in latest {
        let label = DatabaseLabel { database: name.clone() };
        size.get_or_create(&label).set(i64::try_from(point.size_bytes).unwrap_or(i64::MAX));
        for (state, n) in
            [("active", point.active), ("idle", point.idle), ("idle_in_transaction", point.idle_in_transaction)]
        {
            connections.get_or_create(&ConnectionsLabel { database: name.clone(), state }).set(i64::from(n));
        }
        for (_, _, value, family) in &rates {
            if let Some(value) = value(point) {
                family.get_or_create(&label).set(value);
            }
        }
    }
    registry.register("database_size_bytes", "Size of the database (pg_database_size)", size);
    registry.register("database_connections", "Sessions by state", connections);
    for (name, help, _, family) in rates {
        registry.register(name, help, family);
    }
}

/// For admins only (when tokens are configured): it names every owner's databases.
pub async fn metrics<P: Platform>(
    State(state): Shared<P>,
    caller: crate::auth::Caller,
) -> Result<impl IntoResponse, ApiError> {
    if caller != crate::auth::Caller::Admin {
        return Err(ApiError::forbidden("admin_only", "/metrics names every owner's databases: admin tokens only"));
    }
    let projects = Family::<StatusLabel, Gauge>::default();
    let databases = Family::<StatusLabel, Gauge>::default();
    for p in state.store.projects(None).await? {
        projects.get_or_create(&status_label(&p.status)).inc();
    }
    let last_active = Family::<DatabaseLabel, Gauge>::default();
    let stopped_at = Family::<DatabaseLabel, Gauge>::default();
    let expires_at = Family::<DatabaseLabel, Gauge>::default();
    let stopped = Family::<ReasonLabel, Gauge>::default();
    let (last_backup, restorable_from, backup_failing) = (
        Family::<DatabaseLabel, Gauge>::default(),
        Family::<DatabaseLabel, Gauge>::default(),
        Family::<DatabaseLabel, Gauge>::default(),
    );
    let (last_archived, archive_lag, archive_failures, repository_bytes) = (
        Family::<DatabaseLabel, Gauge>::default(),
        Family::<DatabaseLabel, Gauge>::default(),
        Family::<DatabaseLabel, Gauge>::default(),
        Family::<DatabaseLabel, Gauge>::default(),
    );
    let sessions = state.reconciler.activity().recorded(&*state.store).await?;
    let all: Vec<_> = state
        .store
        .databases(None, None)
        .await?
        .into_iter()
        .map(|d| crate::activity::with_last_session(&sessions, d))
        .collect();
    for d in &all {
        databases.get_or_create(&status_label(&d.status)).inc();
        let label = DatabaseLabel { database: d.name.to_string() };
        let times = [
            (&last_active, &d.lifecycle.last_active_at),
            (&stopped_at, &d.lifecycle.stopped_at),
            (&expires_at, &d.lifecycle.expires_at),
        ];
        for (family, time) in times {
            if let Some(seconds) = epoch(time.as_deref()) {
                family.get_or_create(&label).set(seconds);
            }
        }
        if let Some(backup) = &d.backup {
            let times = [
                (&last_backup, &backup.last_backup_at),
                (&restorable_from, &backup.restorable_from),
                (&last_archived, &backup.last_archived_at),
            ];
            for (family, time) in times {
                if let Some(seconds) = epoch(time.as_deref()) {
                    family.get_or_create(&label).set(seconds);
                }
            }
            let failing =
                backup.warning.is_some() || backup.archive_failing_since.is_some() || backup.verify_error.is_some();
            backup_failing.get_or_create(&label).set(i64::from(failing));
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            archive_failures.get_or_create(&label).set(gauge(backup.archive_failures));
            if let Some(lag) = backup.archive_lag_seconds {
                archive_lag.get_or_create(&label).set(gauge(lag));
            }
            if let Some(bytes) = backup.repository_bytes {
                repository_bytes.get_or_create(&label).set(gauge(bytes));
            }
        }
        if d.status == devdb_shared::api::DatabaseStatus::Stopped {
            let reason = d.lifecycle.stop_reason.map(|r| status_label(&r).status).unwrap_or_default();
            stopped.get_or_create(&ReasonLabel { reason }).inc();
        }
    }
    let (owned, running) = (Family::<OwnerLabel, Gauge>::default(), Family::<OwnerLabel, Gauge>::default());
    let all_projects = state.store.projects(None).await?;
    let mut owners: Vec<&str> = all.iter().map(|d| d.owner.as_str()).collect();
    owners.sort_unstable();
    owners.dedup();
    for owner in owners {
        let usage = state.config.quotas.usage(owner, &all, &all_projects);
        let label = OwnerLabel { owner: owner.to_string() };
        owned.get_or_create(&label).set(i64::try_from(usage.databases).unwrap_or(i64::MAX));
        running.get_or_create(&label).set(i64::try_from(usage.running).unwrap_or(i64::MAX));
    }
    let mut registry = Registry::with_prefix("devdb");
    registry.register("projects", "Projects by status", projects);
    registry.register("databases", "Database instances by status", databases);
    registry.register("databases_stopped", "Stopped databases by reason (manual, idle)", stopped);
    registry.register("database_last_active_timestamp_seconds", "When a session last was open on it", last_active);
    registry.register("database_stopped_timestamp_seconds", "When it was stopped", stopped_at);
    registry.register("database_expires_timestamp_seconds", "When it will be deleted", expires_at);
    registry.register("backup_last_success_timestamp_seconds", "When its last backup ended", last_backup);
    registry.register(
        "backup_restorable_from_timestamp_seconds",
        "The oldest moment it can be restored to",
        restorable_from,
    );
    registry.register(
        "backup_failing",
        "1 while its last backup failed or archiving its WAL fails (both are retried)",
        backup_failing,
    );
    registry.register("backup_last_archived_timestamp_seconds", "When it last archived a WAL segment", last_archived);
    registry.register(
        "backup_archive_lag_seconds",
        "How long finished WAL segments have waited to be archived (0: none waits)",
        archive_lag,
    );
    registry.register(
        "backup_archive_failures",
        "Failed attempts to archive a WAL segment since its instance started",
        archive_failures,
    );
    registry.register(
        "backup_repository_bytes",
        "What the backups of its current clone take in the repository",
        repository_bytes,
    );
    registry.register("owner_databases", "Databases per owner", owned);
    let expired = prometheus_client::metrics::counter::Counter::<u64>::default();
    expired.inc_by(state.reconciler.expired_total());
    registry.register("databases_expired", "Databases deleted at expiry since the controller started", expired);
    registry.register("owner_running_databases", "Running databases per owner", running);
    register_samples(&mut registry, &state.monitor.latest());
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text))
}
