//! Restores in place: a database's own backups restored, to a moment, into a staging directory
//! while it still runs, then swapped in. Before it, the state it replaces is made restorable
//! (its sessions ended, a backup, its WAL until now archived: the moment returned is what an
//! undo restores); during the swap the data it had is kept aside (`<name>.previous`) until the
//! restored copy runs, and put back if it does not, or if the controller stopped mid-way.
//!
//! The restored copy archives into a new stanza (see [`crate::backup`]): the one it was restored
//! from keeps the moments up to the restore, so they stay restorable, an undo among them.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use devdb_backup::{BackupKind, Target};
use devdb_core::model::{DatabaseRecord, ProjectRecord};
use devdb_core::runtime::{Runtime as _, RuntimeError};
use devdb_pgctl::StopMode;
use devdb_pgctl::session::Session;

use super::{LocalRuntime, Publish, blocking, remove_dir};

/// Where the data a restore in place replaces waits until the restored copy runs.
pub(super) fn previous(dir: &Path) -> PathBuf {
    dir.with_extension("previous")
}

/// A pgBackRest failure as the runtime's, at `step`.
pub(super) fn failed(step: &'static str) -> impl Fn(devdb_backup::BackupError) -> RuntimeError {
    move |e| RuntimeError::Step { step, detail: e.to_string() }
}

impl LocalRuntime {
    /// [`devdb_core::runtime::Runtime::keep_before_restore`].
    pub(super) async fn keep_before(&self, database: &DatabaseRecord) -> Result<SystemTime, RuntimeError> {
        no_backups(database)?;
        let _busy = self.backups.exclusive(database).await;
        self.put_back_previous(database).await?;
        self.ensure_running(database).await?;
        let backrest = self.backups.backrest(database, &self.database_dir(&database.name))?;
        let (this, d) = (self.clone(), database.clone());
        blocking(move || this.end_sessions(&d)).await?;
        backrest.ensure_stanza().await.map_err(failed("creating the database's backup stanza"))?;
        // Incremental (pgBackRest takes a full one when there is none yet).
        backrest.backup(BackupKind::Incr).await.map_err(failed("backing up before the restore"))?;
        let (this, d) = (self.clone(), database.clone());
        blocking(move || {
            // Sessions opened during the backup end too.
            this.end_sessions(&d)?;
            let at = SystemTime::now();
            // A commit after the moment, and the WAL until then archived.
            this.archive_now(&d)?;
            Ok(at)
        })
        .await
    }

    /// [`devdb_core::runtime::Runtime::restore_in_place`].
    pub(super) async fn restore_to(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        to: SystemTime,
    ) -> Result<(), RuntimeError> {
        no_backups(database)?;
        let _busy = self.backups.exclusive(database).await;
        self.put_back_previous(database).await?;
        self.ensure_running(database).await?;
        let dir = self.database_dir(&database.name);
        let backrest = self.backups.backrest_at(database, &dir, to)?;
        let (this, d) = (self.clone(), database.clone());
        blocking(move || this.archive_now(&d)).await?;
        let restored = self.restore_staged(database, project, &backrest, Target::Time(to), Publish::KeepPrevious).await;
        if let Err(error) = restored {
            self.put_back_previous(database).await?;
            self.ensure_running(database).await?;
            return Err(error);
        }
        blocking(move || remove_dir(&previous(&dir))).await
    }

    /// Puts back the data a restore in place set aside and did not finish replacing (what took
    /// its place, if anything, is stopped and removed).
    async fn put_back_previous(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let (dir, pg) = (self.database_dir(&database.name), self.pg.clone());
        blocking(move || {
            let aside = previous(&dir);
            if !aside.is_dir() {
                return Ok(());
            }
            if pg.is_running(&dir.join("data")) {
                pg.stop(&dir.join("data"), StopMode::Immediate)
                    .map_err(RuntimeError::step("stopping the restored copy"))?;
            }
            remove_dir(&dir)?;
            std::fs::rename(&aside, &dir).map_err(RuntimeError::io("putting back the data it had"))
        })
        .await
    }

    fn admin(&self, database: &DatabaseRecord) -> Result<Session, RuntimeError> {
        let sock = self.database_dir(&database.name).join("sock");
        Session::admin(&sock, database.port, "postgres").map_err(RuntimeError::step("connecting as the superuser"))
    }

    /// Ends its clients' sessions (nothing new reaches it through the proxy while it is being
    /// restored).
    fn end_sessions(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        self.admin(database)?
            .execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity \
                 WHERE backend_type OPERATOR(pg_catalog.=) 'client backend' \
                 AND pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()",
            )
            .map_err(RuntimeError::step("ending its sessions"))
    }
}

/// Refuses a restore from the backups of a database that has none.
pub(super) fn no_backups(database: &DatabaseRecord) -> Result<(), RuntimeError> {
    match database.backup {
        Some(_) => Ok(()),
        None => Err(RuntimeError::Source(format!("database {} has no backups", database.name))),
    }
}
