//! An instance's WAL archiving, read and pushed by the controller: [`LocalRuntime::archive_now`]
//! (switch the current segment out and wait until it is archived, so a moment up to now can be
//! restored) and [`LocalRuntime::archiving`] (what PostgreSQL counts: the last segment archived,
//! failures, and the finished segments still waiting in `pg_wal`).

use std::time::{Duration, SystemTime};

use devdb_core::model::DatabaseRecord;
use devdb_core::runtime::{ArchiveStatus, RuntimeError};
use devdb_pgctl::session::Session;

use super::{LocalRuntime, START_TIMEOUT};

impl LocalRuntime {
    /// Waits until what `source` wrote until now is archived (it runs: its current WAL segment
    /// is switched out first), so that a moment before now can be restored.
    pub(super) fn archive_now(&self, source: &DatabaseRecord) -> Result<(), RuntimeError> {
        let dir = self.database_dir(&source.name);
        if !self.pg.is_running(&dir.join("data")) {
            // A clean stop archived its last segment.
            return Ok(());
        }
        let step = RuntimeError::step("archiving the source's latest WAL");
        let mut admin = Session::admin(&dir.join("sock"), source.port, "postgres").map_err(step)?;
        // A commit now: recovery to a moment stops at the first commit after it, and fails
        // when it finds none (a database nobody wrote to since the moment).
        admin.execute("SELECT pg_catalog.txid_current()").map_err(RuntimeError::step("marking the moment"))?;
        let switched = admin
            .rows("SELECT pg_walfile_name(pg_switch_wal())")
            .map_err(RuntimeError::step("switching the source's WAL"))?;
        let Some(Some(wal)) = switched.first().and_then(|r| r.first()).cloned() else {
            return Err(RuntimeError::Step { step: "switching the source's WAL", detail: "no segment named".into() });
        };
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        loop {
            let archived = admin
                .rows("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                .map_err(RuntimeError::step("reading the source's archiving"))?;
            if archived.first().and_then(|r| r.first()).cloned().flatten().is_some_and(|last| last >= wal) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(RuntimeError::Step {
                    step: "archiving the source's latest WAL",
                    detail: format!("{wal} is not archived yet; try again"),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What PostgreSQL counts of `database`'s archiving (it runs).
    pub(super) fn archiving(&self, database: &DatabaseRecord) -> Result<ArchiveStatus, RuntimeError> {
        let sock = self.database_dir(&database.name).join("sock");
        let step = RuntimeError::step("reading its archiving");
        let mut admin = Session::admin(&sock, database.port, "postgres").map_err(step)?;
        let rows = admin
            .rows(
                "SELECT pg_catalog.date_part('epoch', a.last_archived_time)::pg_catalog.int8, \
                 pg_catalog.date_part('epoch', a.last_failed_time)::pg_catalog.int8, a.failed_count, \
                 (SELECT pg_catalog.count(*) FROM pg_catalog.pg_ls_archive_statusdir() s \
                  WHERE s.name OPERATOR(pg_catalog.~~) '%.ready') \
                 FROM pg_catalog.pg_stat_archiver a",
            )
            .map_err(RuntimeError::step("reading its archiving"))?;
        let row = rows.into_iter().next().unwrap_or_default();
        let field = |i: usize| row.get(i).cloned().flatten().and_then(|v| v.parse::<i64>().ok());
        let at = |i: usize| field(i).map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s.unsigned_abs()));
        let count = |i: usize| field(i).map_or(0, i64::unsigned_abs);
        Ok(ArchiveStatus { last_archived_at: at(0), last_failed_at: at(1), failed_count: count(2), waiting: count(3) })
    }
}
