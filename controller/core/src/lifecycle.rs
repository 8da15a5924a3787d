//! When databases stop and end: idle periods, time to live, protection, and the activity the
//! proxies report. Pure decisions here ([`due`]); the reconciler acts on them
//! ([`crate::reconcile::Reconciler::enforce_lifecycle_once`]).
//!
//! Activity comes from every proxy replica ([`Activity::report`]): the databases with a session
//! open on it and those that relayed bytes since its last report. A database is busy while any
//! replica that reported recently has a session open on it, so a silent session keeps it up and
//! a load balancer's health check (TLS, then close: never a session) does not. A replica that
//! stops reporting (restarted, scaled down) stops counting after [`REPORT_TTL`]; what it last
//! said is already in `lastActiveAt`, which the store keeps across controller restarts.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use devdb_shared::Name;
use devdb_shared::api::DatabaseStatus;
use serde::{Deserialize, Serialize};

use crate::model::{DatabaseRecord, ProjectRecord, Want};

/// How long a replica's report counts: three of its reporting periods.
pub const REPORT_TTL: Duration = Duration::from_secs(45);

/// What a proxy replica reports (`POST /v1/activity`, admin token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityReport {
    /// Which replica (its pod name or address): a later report replaces its earlier one.
    pub replica: String,
    /// Databases with at least one session open on this replica now.
    #[serde(default)]
    pub open: Vec<Name>,
    /// Databases that had a session (open, or opened and closed) since the last report.
    #[serde(default)]
    pub active: Vec<Name>,
}

/// The replicas' latest reports.
#[derive(Debug, Default)]
pub struct Activity {
    replicas: Mutex<HashMap<String, (tokio::time::Instant, HashSet<Name>)>>,
}

impl Activity {
    /// Records a replica's report; returns the databases active in it (open or active), whose
    /// `lastActiveAt` is now.
    pub fn report(&self, report: ActivityReport) -> Vec<Name> {
        let open: HashSet<Name> = report.open.iter().cloned().collect();
        let mut active: Vec<Name> = report.open.into_iter().chain(report.active).collect();
        active.sort();
        active.dedup();
        let mut replicas = self.replicas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        replicas.insert(report.replica, (tokio::time::Instant::now(), open));
        active
    }

    /// Whether a session is open on `name` at a replica that reported within [`REPORT_TTL`].
    pub fn busy(&self, name: &Name) -> bool {
        let mut replicas = self.replicas.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        replicas.retain(|_, (at, _)| at.elapsed() < REPORT_TTL);
        replicas.values().any(|(_, open)| open.contains(name))
    }
}

/// Parses a humantime duration (`"30m"`, `"72h"`, `"0s"`), naming the field when it cannot.
///
/// # Errors
/// A message for a 400.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{field} {text:?} is not a duration like 30m or 72h: {e}"))?;
    if duration > LONGEST {
        return Err(format!("{field} {text:?} is longer than ten years"));
    }
    Ok(duration)
}

/// The longest duration a request may give (time to live, idle period): ten years. Far beyond,
/// `now + ttl` would overflow the clock or RFC 3339's four-digit years.
pub const LONGEST: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// An optional duration field of a request in whole seconds (how records keep them).
///
/// # Errors
/// As [`parse_duration`].
pub fn parse_seconds(field: &str, text: Option<&str>) -> Result<Option<u64>, String> {
    text.map(|t| parse_duration(field, t).map(|d| d.as_secs())).transpose()
}

/// RFC 3339, whole seconds, UTC: how the API shows times.
pub fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

/// How long `database` may go without a session before it is stopped; `None`: never.
pub fn idle_period(database: &DatabaseRecord, project: Option<&ProjectRecord>, default: Duration) -> Option<Duration> {
    let seconds = database.lifecycle.idle_stop_after_secs.or_else(|| project.and_then(|p| p.idle_stop_after_secs));
    let period = seconds.map_or(default, Duration::from_secs);
    (!period.is_zero()).then_some(period)
}

/// What is due for a database now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Past its `expiresAt`: it is deleted.
    Expire,
    /// Running without a session for its idle period: it is stopped.
    IdleStop,
}

/// What, if anything, is due for `database` at `now`; `busy`: a session is open on it.
pub fn due(
    database: &DatabaseRecord,
    project: Option<&ProjectRecord>,
    default_idle: Duration,
    now: SystemTime,
    busy: bool,
) -> Option<Due> {
    if database.lifecycle.protected || database.want == Want::Delete {
        return None;
    }
    if database.lifecycle.expires_at.as_deref().and_then(parse_time).is_some_and(|at| at <= now) {
        return Some(Due::Expire);
    }
    if database.status != DatabaseStatus::Running || database.want != Want::Run || busy {
        return None;
    }
    let period = idle_period(database, project, default_idle)?;
    let since =
        database.lifecycle.last_active_at.as_deref().or(Some(database.created_at.as_str())).and_then(parse_time)?;
    (now.duration_since(since).unwrap_or_default() >= period).then_some(Due::IdleStop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Lifecycle;

    fn at(text: &str) -> SystemTime {
        parse_time(text).expect("time")
    }

    fn database(lifecycle: Lifecycle) -> DatabaseRecord {
        DatabaseRecord {
            id: "db-1".into(),
            name: Name::new("kate-pg").expect("name"),
            project: Name::new("shop").expect("name"),
            owner: "kate".into(),
            status: DatabaseStatus::Running,
            want: Want::Run,
            port: 5432,
            password: "pw".into(),
            snapshot_generation: Some(1),
            error: None,
            created_at: "2026-12-01T09:00:00Z".into(),
            lifecycle,
            settings: crate::model::Settings::default(),
        }
    }

    const MIN30: Duration = Duration::from_secs(1800);

    #[test]
    fn a_running_database_stops_after_its_idle_period_without_a_session() {
        let active = Lifecycle { last_active_at: Some("2026-12-01T10:00:00Z".into()), ..Lifecycle::default() };
        let d = database(active);
        assert_eq!(due(&d, None, MIN30, at("2026-12-01T10:29:59Z"), false), None);
        assert_eq!(due(&d, None, MIN30, at("2026-12-01T10:30:00Z"), false), Some(Due::IdleStop));
        assert_eq!(due(&d, None, MIN30, at("2026-12-01T12:00:00Z"), true), None, "a session is open");
        // Never active: idle since it was created.
        assert_eq!(
            due(&database(Lifecycle::default()), None, MIN30, at("2026-12-01T09:31:00Z"), false),
            Some(Due::IdleStop)
        );
        // Not running, or asked to be something else: not stopped (again).
        for (status, want) in [
            (DatabaseStatus::Stopped, Want::Stop),
            (DatabaseStatus::Creating, Want::Run),
            (DatabaseStatus::Running, Want::Reset),
        ] {
            let d = DatabaseRecord { status, want, ..database(Lifecycle::default()) };
            assert_eq!(due(&d, None, MIN30, at("2026-12-02T00:00:00Z"), false), None, "{status:?} {want:?}");
        }
    }

    #[test]
    fn the_idle_period_is_the_databases_then_the_projects_then_the_default_and_zero_is_never() {
        let mut project: ProjectRecord = serde_json::from_value(serde_json::json!({
            "id": "p", "name": "shop", "owner": "kate", "db_version": "15", "backup_location": null,
            "status": "ready", "error": null, "progress": null, "snapshot": null, "wanted_generation": 1,
            "username": "app", "password": "pw", "database": "shop", "created_at": "2026-12-01T09:00:00Z",
        }))
        .expect("project");
        let plain = database(Lifecycle::default());
        assert_eq!(idle_period(&plain, Some(&project), MIN30), Some(MIN30));
        project.idle_stop_after_secs = Some(600);
        assert_eq!(idle_period(&plain, Some(&project), MIN30), Some(Duration::from_secs(600)));
        let own = database(Lifecycle { idle_stop_after_secs: Some(0), ..Lifecycle::default() });
        assert_eq!(idle_period(&own, Some(&project), MIN30), None, "0: never");
        assert_eq!(due(&own, Some(&project), MIN30, at("2027-01-01T00:00:00Z"), false), None);
    }

    #[test]
    fn expiry_deletes_unless_protected() {
        let expiring = Lifecycle { expires_at: Some("2026-12-03T09:00:00Z".into()), ..Lifecycle::default() };
        let d = database(expiring.clone());
        assert_eq!(due(&d, None, MIN30, at("2026-12-03T08:59:59Z"), true), None);
        assert_eq!(due(&d, None, MIN30, at("2026-12-03T09:00:00Z"), true), Some(Due::Expire), "sessions do not matter");
        let stopped = DatabaseRecord { status: DatabaseStatus::Stopped, want: Want::Stop, ..d };
        assert_eq!(due(&stopped, None, MIN30, at("2026-12-04T00:00:00Z"), false), Some(Due::Expire));
        let protected = database(Lifecycle { protected: true, ..expiring });
        assert_eq!(due(&protected, None, MIN30, at("2027-01-01T00:00:00Z"), false), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_open_on_any_live_replica_keeps_a_database_busy() {
        let activity = Activity::default();
        let kate = Name::new("kate-pg").expect("name");
        let report = |replica: &str, open: &[&Name]| ActivityReport {
            replica: replica.into(),
            open: open.iter().map(|n| (*n).clone()).collect(),
            active: Vec::new(),
        };
        assert_eq!(activity.report(report("proxy-a", &[&kate])), std::slice::from_ref(&kate));
        activity.report(report("proxy-b", &[]));
        assert!(activity.busy(&kate));
        // proxy-a's session closed: its next report replaces the last.
        activity.report(report("proxy-a", &[]));
        assert!(!activity.busy(&kate));
        // A replica that stops reporting (restarted) no longer counts after REPORT_TTL.
        activity.report(report("proxy-b", &[&kate]));
        tokio::time::advance(REPORT_TTL).await;
        assert!(!activity.busy(&kate));
    }
}
