//! Monitoring: every `--sample-every` the leading controller asks the runtime for each running
//! database's statistics ([`Counters`], cumulative as PostgreSQL keeps them; a few databases at
//! a time, [`MAX_SAMPLES_IN_FLIGHT`]), turns two successive ones into a [`Point`] (rates per
//! second over the interval), adds it to the database's bounded [`History`], keeps the latest
//! point for `/metrics`, and hands the tick to the usage [`Ledger`]. How runtimes sample (where
//! they connect, the bounds, the query) is [`sampling`]'s.
//!
//! Histories are kept in memory by the sampling controller and written to the store (a
//! ConfigMap on Kubernetes, where every byte written goes to etcd) every [`PERSIST_EVERY`] per
//! database, spread evenly over the ticks, compactly ([`History::to_document`]), and all of
//! them when the monitor stops: at 500 running databases, about half a write a second instead
//! of 17. A crash loses at most that much of the charts; other controller replicas serve the
//! histories as last written.

pub mod history;
pub mod sampling;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use devdb_shared::api::DatabaseStatus;
use devdb_shared::metrics::Point;
use futures_util::StreamExt as _;
pub use history::History;
use tokio_util::sync::CancellationToken;

use crate::clock::unix;
use crate::model::DatabaseRecord;
use crate::runtime::{Counters, Platform, Runtime};
use crate::store::{Store, StoreError};
use crate::usage::Ledger;
use sampling::{MAX_SAMPLES_IN_FLIGHT, SAMPLE_TIMEOUT};

/// How often each database's history is written to the store.
pub const PERSIST_EVERY: Duration = Duration::from_secs(15 * 60);

/// How many histories a tick writes at once.
const WRITES_IN_FLIGHT: usize = 4;

impl Counters {
    /// The counters of [`sampling::sample_sql`]'s row, as text (missing or unreadable values are 0).
    pub fn from_row(row: &[Option<String>]) -> Self {
        let number = |i: usize| row.get(i).cloned().flatten().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let whole = |i: usize| number(i).max(0.0) as u64;
        let count = |i: usize| u32::try_from(whole(i)).unwrap_or(u32::MAX);
        Self {
            size_bytes: whole(0),
            active: count(1),
            idle: count(2),
            idle_in_transaction: count(3),
            commits: whole(4),
            rollbacks: whole(5),
            rows_read: whole(6),
            rows_written: whole(7),
            blocks_hit: whole(8),
            blocks_read: whole(9),
            longest_query_secs: number(10),
        }
    }

    /// The point at `at` (Unix seconds), with rates since `before` when there is one to compare
    /// with: taken earlier, by the same instance (no total went down).
    pub fn point(&self, at: i64, before: Option<&(i64, Counters)>) -> Point {
        let since = before.filter(|(then, b)| {
            *then < at
                && [
                    (b.commits, self.commits),
                    (b.rollbacks, self.rollbacks),
                    (b.rows_read, self.rows_read),
                    (b.rows_written, self.rows_written),
                    (b.blocks_hit, self.blocks_hit),
                    (b.blocks_read, self.blocks_read),
                ]
                .iter()
                .all(|(b, a)| a >= b)
        });
        #[allow(clippy::cast_precision_loss)]
        let rate = |f: fn(&Counters) -> u64| since.map(|(then, b)| (f(self) - f(b)) as f64 / (at - then) as f64);
        #[allow(clippy::cast_precision_loss)]
        let cache_hit = since.and_then(|(_, b)| {
            let hit = self.blocks_hit - b.blocks_hit;
            let all = hit + (self.blocks_read - b.blocks_read);
            (all > 0).then(|| hit as f64 / all as f64)
        });
        Point {
            at,
            size_bytes: self.size_bytes,
            active: self.active,
            idle: self.idle,
            idle_in_transaction: self.idle_in_transaction,
            commits: rate(|c| c.commits),
            rollbacks: rate(|c| c.rollbacks),
            rows_read: rate(|c| c.rows_read),
            rows_written: rate(|c| c.rows_written),
            cache_hit,
            longest_query_secs: self.longest_query_secs,
            samples: 1,
            rated: u32::from(since.is_some()),
        }
    }
}

/// The store document of a database's history (by its id: a database created again under
/// the same name starts afresh).
pub fn history_key(database_id: &str) -> String {
    format!("history/{}", document_id(database_id))
}

/// An id as a document key segment (`[a-z0-9-]`).
pub(crate) fn document_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

/// Where in `every` seconds a database's history is first written: the same for a database
/// every time, spread evenly across databases.
fn stagger(id: &str, every: i64) -> i64 {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    i64::try_from(hash % u64::try_from(every.max(1)).unwrap_or(1)).unwrap_or(0)
}

/// What the monitor keeps of one database between ticks.
#[derive(Default)]
struct Tracked {
    /// The counters of the last sample, to compute rates from.
    last: Option<(i64, Counters)>,
    history: History,
    /// When the history is next written to the store (Unix seconds), and whether it has
    /// points the store lacks.
    persist_at: i64,
    dirty: bool,
}

/// The sampler, its histories and the usage ledger.
pub struct Monitor<P: Platform> {
    store: Arc<P::Store>,
    runtime: Arc<P::Runtime>,
    every: Duration,
    /// By database id.
    tracked: tokio::sync::Mutex<HashMap<String, Tracked>>,
    /// The latest point of each running database, by name, for `/metrics`.
    latest: Mutex<HashMap<String, Point>>,
    ledger: tokio::sync::Mutex<Ledger>,
}

impl<P: Platform> Monitor<P> {
    pub fn new(store: Arc<P::Store>, runtime: Arc<P::Runtime>, every: Duration) -> Arc<Self> {
        Arc::new(Self {
            store,
            runtime,
            every,
            tracked: tokio::sync::Mutex::default(),
            latest: Mutex::default(),
            ledger: tokio::sync::Mutex::new(Ledger::new(every)),
        })
    }

    /// The sampling interval.
    pub fn every(&self) -> Duration {
        self.every
    }

    /// The latest point of every database sampled by this controller, by name.
    pub fn latest(&self) -> HashMap<String, Point> {
        self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A database's history as last kept (by whichever controller replica sampled it).
    ///
    /// # Errors
    /// When the store cannot be read or the document is corrupt.
    pub async fn history(&self, database: &DatabaseRecord) -> Result<History, StoreError> {
        if let Some(tracked) = self.tracked.lock().await.get(&database.id) {
            return Ok(tracked.history.clone());
        }
        self.stored_history(database).await
    }

    async fn stored_history(&self, database: &DatabaseRecord) -> Result<History, StoreError> {
        match self.store.document(&history_key(&database.id)).await? {
            Some(doc) => Ok(History::from_document(&doc)?),
            None => Ok(History::default()),
        }
    }

    /// Samples every running database once, at `now`, and records the tick in the ledger.
    ///
    /// # Errors
    /// When the store cannot be read or written (a database that cannot be sampled is
    /// skipped, logged).
    pub async fn sample_once(&self, now: SystemTime) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let at = unix(now);
        let databases = self.store.databases(None, None).await?;
        let projects = self.store.projects(None).await?;
        let listing = started.elapsed();
        let mut pending = Vec::new();
        for database in databases.iter().filter(|d| d.status == DatabaseStatus::Running) {
            if let Some(project) = projects.iter().find(|p| p.name == database.project) {
                pending.push(self.sample(database, project));
            }
        }
        let mut sampled = Vec::new();
        let mut samples = futures_util::stream::iter(pending).buffer_unordered(MAX_SAMPLES_IN_FLIGHT);
        while let Some(sample) = samples.next().await {
            sampled.extend(sample);
        }
        drop(samples);
        let sampling = started.elapsed();
        let mut tracked = self.tracked.lock().await;
        let mut points = HashMap::new();
        let persist_every = i64::try_from(PERSIST_EVERY.as_secs()).unwrap_or(i64::MAX);
        let mut due = Vec::new();
        for (database, counters) in sampled {
            let entry = match tracked.entry(database.id.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => e.insert(Tracked {
                    history: self.stored_history(database).await.unwrap_or_default(),
                    // The first write falls anywhere in the interval, so writes spread evenly.
                    persist_at: at + stagger(&database.id, persist_every),
                    ..Tracked::default()
                }),
            };
            let point = counters.point(at, entry.last.as_ref());
            entry.last = Some((at, counters));
            entry.history.push(point);
            entry.dirty = true;
            if at >= entry.persist_at {
                due.push((database.id.clone(), entry.history.to_document()?));
                entry.persist_at = at + persist_every;
            }
            points.insert(database.id.clone(), point);
        }
        // A few at a time: one after another, a tick waits for each write's round trip.
        let writes = due.into_iter().map(|(id, document)| async move {
            let written = self.store.put_document(&history_key(&id), &document).await;
            (id, written)
        });
        let mut writes = futures_util::stream::iter(writes).buffer_unordered(WRITES_IN_FLIGHT);
        let mut failed = None;
        while let Some((id, written)) = writes.next().await {
            let Some(entry) = tracked.get_mut(&id) else { continue };
            match written {
                Ok(()) => entry.dirty = false,
                // Tried again at the next tick.
                Err(error) => {
                    entry.persist_at = at;
                    failed.get_or_insert(error);
                }
            }
        }
        drop(writes);
        if let Some(error) = failed {
            return Err(error);
        }
        // Databases gone: their histories go too (those this process never saw, through the ledger).
        tracked.retain(|id, _| databases.iter().any(|d| &d.id == id));
        drop(tracked);
        let gone = self.ledger.lock().await.record::<P::Store>(&self.store, at, &databases, &points).await?;
        for id in gone {
            self.store.delete_document(&history_key(&id)).await?;
        }
        let latest = databases
            .iter()
            .filter_map(|d| points.get(&d.id).map(|p| (d.name.to_string(), *p)))
            .collect::<HashMap<_, _>>();
        let sampled = latest.len();
        *self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = latest;
        tracing::info!(
            sampled,
            tick_seconds = started.elapsed().as_secs_f64(),
            listing_seconds = listing.as_secs_f64(),
            sampling_seconds = (sampling - listing).as_secs_f64(),
            "monitor tick"
        );
        Ok(())
    }

    /// One database's counters, or `None` when it cannot be sampled now (logged).
    async fn sample<'a>(
        &self,
        database: &'a DatabaseRecord,
        project: &crate::model::ProjectRecord,
    ) -> Option<(&'a DatabaseRecord, Counters)> {
        match tokio::time::timeout(SAMPLE_TIMEOUT, self.runtime.sample(database, project)).await {
            Ok(Ok(Some(counters))) => Some((database, counters)),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(database = %database.name, %error, "cannot sample");
                None
            }
            Err(_) => {
                tracing::debug!(database = %database.name, "sampling timed out");
                None
            }
        }
    }

    /// Runs [`Monitor::sample_once`] every interval until `stop`.
    pub async fn run(&self, stop: CancellationToken) {
        loop {
            if let Err(error) = self.sample_once(SystemTime::now()).await {
                tracing::warn!(%error, "cannot record database samples");
            }
            if stop.run_until_cancelled(tokio::time::sleep(self.every)).await.is_none() {
                if let Err(error) = self.flush().await {
                    tracing::warn!(%error, "cannot write the database histories");
                }
                return;
            }
        }
    }

    /// Writes every history with points the store lacks (when the monitor stops).
    ///
    /// # Errors
    /// When the store cannot be written.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let mut tracked = self.tracked.lock().await;
        for (id, entry) in tracked.iter_mut().filter(|(_, t)| t.dirty) {
            self.store.put_document(&history_key(id), &entry.history.to_document()?).await?;
            entry.dirty = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(commits: u64, hit: u64, read: u64) -> Counters {
        Counters {
            commits,
            rollbacks: 1,
            rows_read: commits * 10,
            blocks_hit: hit,
            blocks_read: read,
            ..Counters::default()
        }
    }

    #[test]
    fn rates_are_per_second_over_the_interval() {
        let before = (100, counters(50, 900, 100));
        let point = counters(110, 1880, 120).point(130, Some(&before));
        assert_eq!(point.commits, Some(2.0));
        assert_eq!(point.rows_read, Some(20.0));
        assert_eq!(point.rollbacks, Some(0.0));
        assert_eq!(point.cache_hit, Some(0.98));
    }

    #[test]
    fn no_rates_without_an_earlier_sample_of_the_same_instance() {
        assert_eq!(counters(10, 0, 0).point(100, None).commits, None);
        let restarted = counters(3, 10, 0).point(130, Some(&(100, counters(50, 900, 100))));
        assert_eq!((restarted.commits, restarted.cache_hit), (None, None), "totals went down: a restart");
        let same_second = counters(60, 900, 100).point(100, Some(&(100, counters(50, 900, 100))));
        assert_eq!(same_second.commits, None);
        let no_reads = counters(60, 900, 100).point(130, Some(&(100, counters(50, 900, 100))));
        assert_eq!(no_reads.cache_hit, None, "no block read in the interval: no ratio");
    }

    #[test]
    fn a_row_of_the_sample_query_reads_as_counters() {
        let row: Vec<Option<String>> = ["8192", "2", "1", "0", "10", "1", "300", "40", "99", "1", "1.5"]
            .iter()
            .map(|v| Some(v.to_string()))
            .collect();
        let counters = Counters::from_row(&row);
        assert_eq!((counters.size_bytes, counters.active, counters.idle, counters.commits), (8192, 2, 1, 10));
        assert_eq!((counters.rows_read, counters.rows_written, counters.longest_query_secs), (300, 40, 1.5));
        assert_eq!(Counters::from_row(&[None]), Counters::default(), "missing values are 0");
    }

    #[test]
    fn document_ids_are_key_segments() {
        assert_eq!(document_id("3F2a_b.c"), "3f2a-b-c");
    }
}
