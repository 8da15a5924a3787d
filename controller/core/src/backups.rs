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
use devdb_shared::api::DatabaseStatus;
use tokio_util::sync::CancellationToken;

use crate::backup_settings::Schedule;
use crate::lifecycle::timestamp;
use crate::model::{DatabaseRecord, Want};
use crate::runtime::{Platform, Runtime};
use crate::store::{Store, StoreError};

/// How long after a failed backup the next is tried.
pub const RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

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

    /// Backs up, one after the other, the databases due at `now`.
    ///
    /// # Errors
    /// When the store cannot be read or written (a failed backup is the database's, not this).
    pub async fn once(&self, now: SystemTime) -> Result<(), StoreError> {
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
}
