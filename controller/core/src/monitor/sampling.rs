//! What a runtime's sampling session is, the same for every runtime: where it connects (the
//! instance's maintenance database, never the tenant's own), what it asks the server to bound
//! (lock waits, the statement), the one query it runs, and how many may run at once.
//!
//! A tenant owns its database and may lock it (`BEGIN; ALTER DATABASE … RENAME …` held open
//! makes every new session to that database wait in its start-up, before any setting of the
//! start packet applies). It owns nothing in `postgres` and may lock none of the catalogs the
//! query reads there (`LOCK` needs privileges it lacks, `VACUUM FULL` and `REINDEX` of shared
//! catalogs are the superuser's), so a session there reads the same figures, by name, without
//! waiting on it. What the server cannot bound (a hung instance, a lock a superuser holds) the
//! runtimes bound on their side ([`SAMPLE_BOUND`]), and [`SampleLimit`] keeps the samples that
//! stall anyway from piling up.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::runtime::RuntimeError;

/// How long the monitor waits for one database's sample before skipping it.
pub const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a runtime lets a sample wait on its server before ending it itself (the local
/// runtime: each read or write on its socket; the Kubernetes runtime: the whole sample). Below
/// [`SAMPLE_TIMEOUT`], so a sample the monitor gave up on is gone soon after.
pub const SAMPLE_BOUND: Duration = Duration::from_secs(4);

/// The database every sampling session connects to.
pub const SAMPLE_DATABASE: &str = "postgres";

/// The start-packet options of every sampling session: a lock wait ends after 1 s and the
/// statement after 3 s (a start packet's settings win over those a tenant sets on its role),
/// and no object outside `pg_catalog` can stand in for a function or operator of the query.
pub const SAMPLE_OPTIONS: &str = "-c search_path=pg_catalog,pg_temp -c lock_timeout=1s -c statement_timeout=3s";

/// How many samples one runtime runs at once, at most.
pub const MAX_SAMPLES_IN_FLIGHT: usize = 16;

/// The query of a sample of `database`, read from another database of its instance: one row of
/// its size, sessions by state, cumulative counters and the age of its longest running
/// statement ([`super::Counters::from_row`] reads it); no row when no database has that name.
/// Figures of sessions a role may not see (other roles' sessions, for a role without
/// `pg_read_all_stats`) are left out.
pub fn sample_sql(database: &str) -> String {
    let name = literal(database);
    format!(
        "\
WITH sessions AS (
    SELECT state, query_start FROM pg_stat_activity
    WHERE datname = {name} AND backend_type = 'client backend'
)
SELECT pg_database_size(datid),
    (SELECT count(*) FROM sessions WHERE state = 'active'),
    (SELECT count(*) FROM sessions WHERE state = 'idle'),
    (SELECT count(*) FROM sessions WHERE state LIKE 'idle in transaction%'),
    xact_commit, xact_rollback, tup_returned + tup_fetched, tup_inserted + tup_updated + tup_deleted,
    blks_hit, blks_read,
    COALESCE((SELECT extract(epoch FROM max(now() - query_start)) FROM sessions WHERE state = 'active'), 0)
FROM pg_stat_database WHERE datname = {name}"
    )
}

/// `value` as an escape string literal: the same text whatever the session's
/// `standard_conforming_strings`.
fn literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The samples a runtime has running, bounded. A sample is admitted before it starts, or refused
/// at once when [`MAX_SAMPLES_IN_FLIGHT`] are running (skipped, never queued behind samples
/// that stall), and counted from [`Admitted::start`] until the work it started has really ended
/// (its blocking thread returned, its connection closed), not merely until the monitor stopped
/// waiting for it.
#[derive(Clone)]
pub struct SampleLimit {
    permits: Arc<Semaphore>,
    max: usize,
    counts: Arc<Counts>,
}

#[derive(Default)]
struct Counts {
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl Default for SampleLimit {
    fn default() -> Self {
        Self::new(MAX_SAMPLES_IN_FLIGHT)
    }
}

impl SampleLimit {
    /// At most `max` samples at once.
    pub fn new(max: usize) -> Self {
        Self { permits: Arc::new(Semaphore::new(max)), max, counts: Arc::default() }
    }

    /// A place for one more sample.
    ///
    /// # Errors
    /// [`RuntimeError::Step`] when every place is taken.
    pub fn admit(&self) -> Result<Admitted, RuntimeError> {
        let permit = self.permits.clone().try_acquire_owned().map_err(|_| RuntimeError::Step {
            step: "sampling",
            detail: format!("{} earlier samples are still running", self.max),
        })?;
        Ok(Admitted { permit, counts: self.counts.clone() })
    }

    /// Samples running now.
    pub fn running(&self) -> usize {
        self.counts.running.load(Ordering::SeqCst)
    }

    /// The most samples that ever ran at once.
    pub fn peak(&self) -> usize {
        self.counts.peak.load(Ordering::SeqCst)
    }
}

/// An admitted sample's place: moved to where its work runs, it is kept until that work ends.
pub struct Admitted {
    permit: OwnedSemaphorePermit,
    counts: Arc<Counts>,
}

impl Admitted {
    /// Counts the sample as running until the guard is dropped (with the place).
    pub fn start(self) -> Running {
        let now = self.counts.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.counts.peak.fetch_max(now, Ordering::SeqCst);
        Running { _permit: self.permit, counts: self.counts }
    }
}

/// A running sample; dropped when its work has ended.
pub struct Running {
    _permit: OwnedSemaphorePermit,
    counts: Arc<Counts>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.counts.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_is_one_literal_whatever_it_holds() {
        assert_eq!(literal("shop"), "E'shop'");
        assert_eq!(literal(r"a'b\c"), r"E'a''b\\c'");
        let sql = sample_sql("x' OR true --");
        assert!(sql.contains("datname = E'x'' OR true --'"), "{sql}");
    }

    #[test]
    fn samples_beyond_the_limit_are_refused_until_a_running_one_ends() {
        let limit = SampleLimit::new(2);
        let first = limit.admit().expect("first").start();
        let second = limit.admit().expect("second");
        assert!(limit.admit().is_err(), "a third while two are admitted");
        let second = second.start();
        assert_eq!((limit.running(), limit.peak()), (2, 2));
        drop(first);
        assert_eq!(limit.running(), 1);
        let third = limit.admit().expect("a place is free again").start();
        drop((second, third));
        assert_eq!((limit.running(), limit.peak()), (0, 2));
    }
}
