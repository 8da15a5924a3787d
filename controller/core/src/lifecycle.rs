//! When databases stop and end: idle periods, time to live, protection. Pure decisions here
//! ([`due`]); the reconciler acts on them ([`crate::reconcile::Reconciler::enforce_lifecycle_once`]).
//! Sessions are what [`crate::activity`] records of the proxies' reports.
//!
//! A start is not activity: `lastActiveAt` is only ever a session's. A database's idle period
//! runs from its last session or, if none came since, from its start ([`Runs`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use devdb_shared::Name;
use devdb_shared::api::DatabaseStatus;

use crate::model::{DatabaseRecord, ProjectRecord, Want};

/// What this controller knows of each database's current run, in memory: when its instance
/// started (the origin of its idle period until a session comes, as a start is not activity),
/// and whether a proxy woke it for a client that has not authenticated since (such a run holds
/// no running place against its owner's own start: see [`crate::api`]'s quota check).
///
/// A controller that restarts knows no run: a running database counts as started when first
/// seen ([`Runs::started_at`]), so none is stopped early (at worst one idles a period longer),
/// and a wake from before is no longer told from a start (it idles out in its period). With
/// several controller replicas, each knows the wakes it took.
#[derive(Debug, Default)]
pub struct Runs(Mutex<HashMap<Name, Run>>);

#[derive(Debug, Clone, Copy, Default)]
struct Run {
    /// When its instance last started (set once the start is done).
    started: Option<SystemTime>,
    /// When a proxy woke it, while no session has authenticated since and its owner has not
    /// asked for it.
    unclaimed_wake: Option<SystemTime>,
}

impl Runs {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Name, Run>) -> T) -> T {
        // Held only to read or change the map, never across an await.
        f(&mut self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// `name`'s instance started at `at` (created, reset, started or woken).
    pub fn started(&self, name: &Name, at: SystemTime) {
        self.with(|runs| runs.entry(name.clone()).or_default().started = Some(at));
    }

    /// When `name` (running) started; one this process never saw start counts as started `now`,
    /// from now on.
    pub fn started_at(&self, name: &Name, now: SystemTime) -> SystemTime {
        self.with(|runs| *runs.entry(name.clone()).or_default().started.get_or_insert(now))
    }

    /// A proxy asked for `name` to start, for a client that has not authenticated.
    pub fn woken(&self, name: &Name, at: SystemTime) {
        self.with(|runs| runs.entry(name.clone()).or_default().unclaimed_wake = Some(at));
    }

    /// A session of `name` authenticated, or its owner asked for it: its run is wanted.
    pub fn claimed(&self, name: &Name) {
        self.with(|runs| {
            if let Some(run) = runs.get_mut(name) {
                run.unclaimed_wake = None;
            }
        });
    }

    /// When a proxy woke `name` for a client that has not authenticated since, if so.
    pub fn unclaimed_wake(&self, name: &Name) -> Option<SystemTime> {
        self.with(|runs| runs.get(name).and_then(|run| run.unclaimed_wake))
    }

    /// `name` stopped, or is gone: its run is over.
    pub fn ended(&self, name: &Name) {
        self.with(|runs| runs.remove(name));
    }

    /// Forgets every run but those of `keep` (the databases that should run).
    pub fn retain(&self, keep: impl Fn(&Name) -> bool) {
        self.with(|runs| runs.retain(|name, _| keep(name)));
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

/// `time` in RFC 3339 to the microsecond: a moment to restore to.
pub fn timestamp_micros(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
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

/// What, if anything, is due for `database` at `now`; `busy`: a session is open on it; `seen`:
/// when this process last heard of a session of it (fresher than `lastActiveAt`);
/// `started`: when its instance started (its idle period runs from its last session, or from
/// then if none came since).
pub fn due(
    database: &DatabaseRecord,
    project: Option<&ProjectRecord>,
    default_idle: Duration,
    now: SystemTime,
    busy: bool,
    seen: Option<SystemTime>,
    started: Option<SystemTime>,
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
    let last_session = database.lifecycle.last_active_at.as_deref().and_then(parse_time);
    let since = [last_session, seen, started, parse_time(&database.created_at)].into_iter().flatten().max()?;
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
            backup: None,
            restore_from: None,
            restoring: None,
            before_restore: None,
        }
    }

    const MIN30: Duration = Duration::from_secs(1800);

    #[test]
    fn a_running_database_stops_after_its_idle_period_without_a_session() {
        let active = Lifecycle { last_active_at: Some("2026-12-01T10:00:00Z".into()), ..Lifecycle::default() };
        let d = database(active);
        assert_eq!(due(&d, None, MIN30, at("2026-12-01T10:29:59Z"), false, None, None), None);
        assert_eq!(due(&d, None, MIN30, at("2026-12-01T10:30:00Z"), false, None, None), Some(Due::IdleStop));
        assert_eq!(due(&d, None, MIN30, at("2026-12-01T12:00:00Z"), true, None, None), None, "a session is open");
        // Never active: idle since it was created.
        assert_eq!(
            due(&database(Lifecycle::default()), None, MIN30, at("2026-12-01T09:31:00Z"), false, None, None),
            Some(Due::IdleStop)
        );
        // Not running, or asked to be something else: not stopped (again).
        for (status, want) in [
            (DatabaseStatus::Stopped, Want::Stop),
            (DatabaseStatus::Creating, Want::Run),
            (DatabaseStatus::Running, Want::Reset),
        ] {
            let d = DatabaseRecord { status, want, ..database(Lifecycle::default()) };
            assert_eq!(
                due(&d, None, MIN30, at("2026-12-02T00:00:00Z"), false, None, None),
                None,
                "{status:?} {want:?}"
            );
        }
    }

    #[test]
    fn a_start_is_not_activity_but_the_idle_period_runs_from_it_until_a_session_comes() {
        // Last used at 10:00, slept, started again at 11:00 (woken, say), no session since.
        let slept = database(Lifecycle { last_active_at: Some("2026-12-01T10:00:00Z".into()), ..Lifecycle::default() });
        let started = Some(at("2026-12-01T11:00:00Z"));
        assert_eq!(due(&slept, None, MIN30, at("2026-12-01T11:29:59Z"), false, None, started), None, "a whole period");
        assert_eq!(due(&slept, None, MIN30, at("2026-12-01T11:30:00Z"), false, None, started), Some(Due::IdleStop));
        // A session after the start: from the session.
        let used = database(Lifecycle { last_active_at: Some("2026-12-01T11:20:00Z".into()), ..Lifecycle::default() });
        assert_eq!(due(&used, None, MIN30, at("2026-12-01T11:49:59Z"), false, None, started), None);
    }

    #[test]
    fn runs_tell_unclaimed_wakes_and_a_run_never_seen_starting_counts_from_when_first_seen() {
        let runs = Runs::default();
        let (kate, bob) = (Name::new("kate-pg").expect("name"), Name::new("bob-pg").expect("name"));
        assert_eq!(runs.started_at(&kate, at("2026-12-01T10:00:00Z")), at("2026-12-01T10:00:00Z"), "first seen");
        assert_eq!(runs.started_at(&kate, at("2026-12-01T12:00:00Z")), at("2026-12-01T10:00:00Z"), "kept");
        runs.woken(&bob, at("2026-12-01T10:00:00Z"));
        runs.started(&bob, at("2026-12-01T10:00:01Z"));
        assert_eq!(runs.unclaimed_wake(&bob), Some(at("2026-12-01T10:00:00Z")), "a start keeps the mark");
        runs.claimed(&bob);
        assert_eq!(runs.unclaimed_wake(&bob), None);
        runs.woken(&bob, at("2026-12-01T11:00:00Z"));
        runs.ended(&bob);
        assert_eq!(runs.unclaimed_wake(&bob), None, "stopped: over");
        runs.retain(|name| name != &kate);
        assert_eq!(runs.started_at(&kate, at("2026-12-01T13:00:00Z")), at("2026-12-01T13:00:00Z"));
    }

    #[test]
    fn a_session_this_process_heard_of_counts_before_last_active_at_is_written() {
        let stale = database(Lifecycle { last_active_at: Some("2026-12-01T10:00:00Z".into()), ..Lifecycle::default() });
        let now = at("2026-12-01T10:40:00Z");
        assert_eq!(due(&stale, None, MIN30, now, false, None, None), Some(Due::IdleStop), "written 40 minutes ago");
        let seen = Some(at("2026-12-01T10:35:00Z"));
        assert_eq!(due(&stale, None, MIN30, now, false, seen, None), None, "reported 5 minutes ago");
        assert_eq!(due(&stale, None, MIN30, at("2026-12-01T11:05:00Z"), false, seen, None), Some(Due::IdleStop));
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
        assert_eq!(due(&own, Some(&project), MIN30, at("2027-01-01T00:00:00Z"), false, None, None), None);
    }

    #[test]
    fn expiry_deletes_unless_protected() {
        let expiring = Lifecycle { expires_at: Some("2026-12-03T09:00:00Z".into()), ..Lifecycle::default() };
        let d = database(expiring.clone());
        assert_eq!(due(&d, None, MIN30, at("2026-12-03T08:59:59Z"), true, None, None), None);
        assert_eq!(
            due(&d, None, MIN30, at("2026-12-03T09:00:00Z"), true, None, None),
            Some(Due::Expire),
            "sessions do not matter"
        );
        let stopped = DatabaseRecord { status: DatabaseStatus::Stopped, want: Want::Stop, ..d };
        assert_eq!(due(&stopped, None, MIN30, at("2026-12-04T00:00:00Z"), false, None, None), Some(Due::Expire));
        let protected = database(Lifecycle { protected: true, ..expiring });
        assert_eq!(due(&protected, None, MIN30, at("2027-01-01T00:00:00Z"), false, None, None), None);
    }
}
