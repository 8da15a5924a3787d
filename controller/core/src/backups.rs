//! When databases with backups on are backed up: the first backup of each as soon as it runs
//! (and archives), then on its schedule ([`Schedule`]: hourly, daily by default, or weekly,
//! from its last backup); a failed one is tried again after [`RETRY_AFTER`], with the
//! reason on the database meanwhile. The runtime takes the backups ([`Runtime::back_up`]); the
//! outcome goes into the database's record (`backup`), which the API shows. Only running
//! databases are backed up: an asleep one changes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use devdb_shared::Name;
use devdb_shared::api::{BackupStatus, DatabaseStatus};
use tokio_util::sync::CancellationToken;

use crate::backup_settings::Schedule;
use crate::lifecycle::timestamp;
use crate::model::{DatabaseRecord, Want};
use crate::runtime::{ArchiveStatus, Platform, Runtime};
use crate::store::{Store, StoreError};

/// How long after a failed backup the next is tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

/// How often every file of a database's backups is read back and checked, after a backup.
pub const VERIFY_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Whether `backup`'s repository is due a check at `now` (after a backup that succeeded): weekly,
/// and again after each backup while a check found damage.
pub fn verify_due(backup: &BackupStatus, now: SystemTime) -> bool {
    let last = backup.last_verified_at.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    backup.verify_error.is_some()
        || last.is_none_or(|last| now.duration_since(last).unwrap_or_default() >= VERIFY_EVERY)
}

/// Whether `d` is due a backup at `now`, given this controller's last attempt at it.
pub fn due(d: &DatabaseRecord, now: SystemTime, last_attempt: Option<SystemTime>) -> bool {
    let Some(backup) = &d.backup else { return false };
    // Turned on and not archiving yet: once it restarts to archive.
    if d.want != Want::Run || d.status != DatabaseStatus::Running || d.archiving_changed() {
        return false;
    }
    if last_attempt.is_some_and(|at| now.duration_since(at).unwrap_or_default() < RETRY_AFTER)
        && backup.warning.is_some()
    {
        return false;
    }
    let last = backup.last_backup_at.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
    last.is_none_or(|last| now.duration_since(last).unwrap_or_default() >= Schedule::of(backup).every())
}

/// Takes the backups due.
pub struct Backups<P: Platform> {
    store: Arc<P::Store>,
    runtime: Arc<P::Runtime>,
    /// When this controller last tried each database's backup.
    attempts: Mutex<HashMap<Name, SystemTime>>,
}

impl<P: Platform> Backups<P> {
    pub fn new(store: Arc<P::Store>, runtime: Arc<P::Runtime>) -> Arc<Self> {
        Arc::new(Self { store, runtime, attempts: Mutex::default() })
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<Name, SystemTime>> {
        self.attempts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads how each running database with backups archives, then backs up, one after the
    /// other, the databases due at `now`.
    ///
    /// # Errors
    /// When the store cannot be read or written (a failed backup is the database's, not this).
    pub async fn once(&self, now: SystemTime) -> Result<(), StoreError> {
        self.observe_archiving(now).await?;
        let published = self.store.watch_databases().borrow().clone();
        let due: Vec<DatabaseRecord> = {
            let attempts = self.attempts();
            published.iter().filter(|d| due(d, now, attempts.get(&d.name).copied())).cloned().collect()
        };
        for database in due {
            self.attempts().insert(database.name.clone(), now);
            let outcome = self.runtime.back_up(&database).await;
            match &outcome {
                Ok(backed_up) => tracing::info!(database = %database.name, at = %timestamp(backed_up.at), "backed up"),
                Err(error) => tracing::warn!(database = %database.name, %error, "backup failed; trying again later"),
            }
            self.store
                .update_database(&database.name, |d| {
                    let Some(backup) = d.backup.as_mut() else { return };
                    match &outcome {
                        Ok(backed_up) => {
                            backup.last_backup_at = Some(timestamp(backed_up.at));
                            backup.repository_bytes = Some(backed_up.repository_bytes);
                            // The window opens with the first backup of its first clone (those of
                            // earlier clones stay restorable).
                            let opens =
                                backup.restorable_from.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
                            let opens = opens.map_or(backed_up.restorable_from, |o| o.min(backed_up.restorable_from));
                            backup.restorable_from = Some(timestamp(opens));
                            backup.restorable_to = Some(timestamp(backed_up.restorable_to));
                            backup.warning = None;
                        }
                        Err(error) => backup.warning = Some(error.public()),
                    }
                })
                .await?;
            if outcome.is_ok() {
                self.verify_if_due(&database, now).await?;
            }
        }
        Ok(())
    }

    /// Checks `database`'s backups when due (see [`verify_due`]); what is damaged stays on it
    /// until a check finds nothing.
    async fn verify_if_due(&self, database: &DatabaseRecord, now: SystemTime) -> Result<(), StoreError> {
        let Some(record) = self.store.database(database.name.as_str()).await? else { return Ok(()) };
        if !record.backup.as_ref().is_some_and(|b| verify_due(b, now)) {
            return Ok(());
        }
        let verified = self.runtime.verify_backups(database).await;
        match &verified {
            Ok(true) => tracing::info!(database = %database.name, "its backups are whole"),
            Ok(false) => return Ok(()),
            Err(error) => tracing::error!(database = %database.name, %error, "its backups hold damaged files"),
        }
        self.store
            .update_database(&database.name, |d| {
                let Some(backup) = d.backup.as_mut() else { return };
                match &verified {
                    Ok(_) => {
                        backup.last_verified_at = Some(timestamp(now));
                        backup.verify_error = None;
                    }
                    Err(error) => backup.verify_error = Some(error.public()),
                }
            })
            .await
            .map(drop)
    }

    /// Records how each running database with backups archives (a database whose archiving
    /// cannot be read keeps what was recorded).
    async fn observe_archiving(&self, now: SystemTime) -> Result<(), StoreError> {
        let published = self.store.watch_databases().borrow().clone();
        let running = published
            .iter()
            .filter(|d| d.backup.is_some() && d.want == Want::Run && d.status == DatabaseStatus::Running);
        for database in running {
            let status = match self.runtime.archive_status(database).await {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(error) => {
                    tracing::debug!(database = %database.name, %error, "cannot read its archiving");
                    continue;
                }
            };
            let mut observed = database.backup.clone().unwrap_or_default();
            archiving_observed(&mut observed, &status, now);
            if Some(&observed) != database.backup.as_ref() {
                if observed.archive_failing_since.is_some()
                    && database.backup.as_ref().and_then(|b| b.archive_failing_since.as_ref()).is_none()
                {
                    tracing::warn!(database = %database.name, failures = status.failed_count, "archiving its WAL fails; it is retried");
                }
                self.store
                    .update_database(&database.name, |d| {
                        if let Some(backup) = d.backup.as_mut() {
                            archiving_observed(backup, &status, now);
                        }
                    })
                    .await?;
            }
        }
        Ok(())
    }

    /// [`Backups::once`] every `every`, until `stop`.
    pub async fn run(&self, every: Duration, stop: CancellationToken) {
        while stop.run_until_cancelled(tokio::time::sleep(every)).await.is_some() {
            if let Err(error) = self.once(SystemTime::now()).await {
                tracing::warn!(%error, "cannot look for backups due");
            }
        }
    }
}

/// What a database's backups show of its archiving as its instance counts it at `now`: the
/// last segment archived (and so the window's end), how long finished segments have waited, the
/// failures, and since when it fails (the last attempt failed after the last success).
pub fn archiving_observed(backup: &mut BackupStatus, status: &ArchiveStatus, now: SystemTime) {
    let failing = match (status.last_failed_at, status.last_archived_at) {
        (Some(failed), Some(archived)) => failed > archived,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if let Some(archived) = status.last_archived_at {
        backup.last_archived_at = Some(timestamp(archived));
        let to = backup.restorable_to.as_deref().and_then(|t| humantime::parse_rfc3339_weak(t).ok());
        if backup.restorable_from.is_some() && to.is_none_or(|to| to < archived) {
            backup.restorable_to = Some(timestamp(archived));
        }
    }
    let waiting_since = status.last_archived_at.or(status.last_failed_at);
    backup.archive_lag_seconds = Some(match waiting_since {
        Some(since) if status.waiting > 0 => now.duration_since(since).unwrap_or_default().as_secs(),
        _ => 0,
    });
    backup.archive_failures = status.failed_count;
    backup.archive_failing_since = match (failing, backup.archive_failing_since.take()) {
        (false, _) => None,
        (true, Some(since)) => Some(since),
        (true, None) => status.last_failed_at.map(timestamp),
    };
}

/// What a database is warned with besides its last backup's failure: damaged files in its
/// repository, then a failing archive.
pub fn standing_warning(backup: &BackupStatus) -> Option<String> {
    if let Some(damage) = &backup.verify_error {
        return Some(format!("its repository holds damaged backup files ({damage}); the next backup is checked again"));
    }
    backup.archive_failing_since.as_ref().map(|since| {
        format!(
            "archiving its WAL has failed since {since} ({} attempts): the repository may be full or unreachable; \
             finished segments wait in pg_wal (up to 1 GiB, then they are dropped) and are archived once it is back",
            backup.archive_failures
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: DatabaseStatus, backup: Option<devdb_shared::api::BackupStatus>) -> DatabaseRecord {
        let mut d: DatabaseRecord = serde_json::from_value(serde_json::json!({
            "name": "kate-pg", "project": "shop", "owner": "kate", "status": status, "want": "Run",
            "port": 5432, "password": "pw", "snapshot_generation": 1, "error": null, "created_at": "now",
        }))
        .expect("a record");
        d.backup = backup;
        d
    }

    #[test]
    fn each_schedule_is_due_its_period_after_the_last_backup_and_only_once_it_archives() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000 + s);
        let hour = 3600;
        for (schedule, period) in
            [(None, 24 * hour), (Some("hourly"), hour), (Some("daily"), 24 * hour), (Some("weekly"), 7 * 24 * hour)]
        {
            let backup = devdb_shared::api::BackupStatus {
                schedule: schedule.map(Into::into),
                last_backup_at: Some(timestamp(t(0))),
                ..Default::default()
            };
            let d = record(DatabaseStatus::Running, Some(backup));
            assert!(!due(&d, t(period - 1), None), "{schedule:?}: not a second early");
            assert!(due(&d, t(period), None), "{schedule:?}: due after {period}s");
        }
        // Just turned on: not while its instance does not archive yet.
        let mut turned_on = record(DatabaseStatus::Running, None);
        crate::state::database::set_backup(&mut turned_on, Some(Default::default()));
        assert!(!due(&turned_on, t(0), None), "not before it archives");
        let applied = turned_on.configured();
        crate::state::database::configured(&mut turned_on, &applied);
        assert!(due(&turned_on, t(0), None), "its first backup once it archives");
    }

    #[test]
    fn a_running_database_with_backups_on_is_due_at_once_then_daily() {
        let now = SystemTime::now();
        let on = devdb_shared::api::BackupStatus::default();
        assert!(due(&record(DatabaseStatus::Running, Some(on.clone())), now, None), "first backup at once");
        assert!(!due(&record(DatabaseStatus::Running, None), now, None), "backups off");
        assert!(!due(&record(DatabaseStatus::Stopped, Some(on.clone())), now, None), "asleep: nothing changes");
        let recent = devdb_shared::api::BackupStatus { last_backup_at: Some(timestamp(now)), ..on.clone() };
        assert!(!due(&record(DatabaseStatus::Running, Some(recent.clone())), now + Duration::from_secs(3600), None));
        assert!(due(&record(DatabaseStatus::Running, Some(recent)), now + Schedule::Daily.every(), None));
        let failed = devdb_shared::api::BackupStatus { warning: Some("disk full".into()), ..on };
        let failing = record(DatabaseStatus::Running, Some(failed));
        assert!(!due(&failing, now + Duration::from_secs(60), Some(now)), "not again at once");
        assert!(due(&failing, now + RETRY_AFTER, Some(now)), "tried again later");
    }

    #[test]
    fn archiving_shows_the_last_segment_the_wait_and_since_when_it_fails() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000 + s);
        let mut b = BackupStatus {
            restorable_from: Some(timestamp(t(0))),
            restorable_to: Some(timestamp(t(10))),
            ..Default::default()
        };
        let healthy =
            ArchiveStatus { last_archived_at: Some(t(100)), last_failed_at: None, failed_count: 0, waiting: 0 };
        archiving_observed(&mut b, &healthy, t(130));
        assert_eq!(b.last_archived_at, Some(timestamp(t(100))));
        assert_eq!(b.restorable_to, Some(timestamp(t(100))), "the window runs to the last segment archived");
        assert_eq!(
            (b.archive_lag_seconds, b.archive_failing_since.as_deref(), standing_warning(&b)),
            (Some(0), None, None)
        );

        // The repository goes away: segments wait, attempts fail.
        let down = ArchiveStatus { last_failed_at: Some(t(160)), failed_count: 3, waiting: 2, ..healthy };
        archiving_observed(&mut b, &down, t(200));
        assert_eq!((b.archive_lag_seconds, b.archive_failures), (Some(100), 3));
        assert_eq!(b.archive_failing_since, Some(timestamp(t(160))));
        assert!(standing_warning(&b).is_some_and(|w| w.contains("since") && w.contains("3 attempts")), "{b:?}");
        let still = ArchiveStatus { last_failed_at: Some(t(260)), failed_count: 9, ..down };
        archiving_observed(&mut b, &still, t(300));
        assert_eq!(b.archive_failing_since, Some(timestamp(t(160))), "failing since the first failure seen");

        // It is back: the waiting segments are archived, the warning goes.
        let back =
            ArchiveStatus { last_archived_at: Some(t(310)), last_failed_at: Some(t(260)), failed_count: 9, waiting: 0 };
        archiving_observed(&mut b, &back, t(320));
        assert_eq!((b.archive_failing_since, b.archive_lag_seconds), (None, Some(0)));
        assert_eq!(b.restorable_to, Some(timestamp(t(310))));
    }
}
