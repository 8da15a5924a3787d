//! Where database instances run: the [`Runtime`] trait. Each adapter implements it (local
//! PostgreSQL processes under a data directory; namespaces, volume snapshots and StatefulSets
//! on Kubernetes); the reconciler above them is the same.

use std::future::Future;
use std::sync::Arc;

use devdb_shared::Name;
use devdb_shared::size::human;

use crate::model::{DatabaseRecord, ProjectRecord, SnapshotRecord};

/// Receives restore progress: bytes done and, when known, the total.
pub type ProgressFn = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// What a restore may take of its owner's disk quota: `bytes` (what the quota left when it
/// began), shared with the owner's other restores in flight: [`DiskAllowance::fits`] is told
/// this restore's use now and says whether all of them together still fit.
#[derive(Clone)]
pub struct DiskAllowance {
    pub bytes: u64,
    fits: Arc<dyn Fn(u64) -> bool + Send + Sync>,
}

impl DiskAllowance {
    pub fn new(bytes: u64, fits: impl Fn(u64) -> bool + Send + Sync + 'static) -> Self {
        Self { bytes, fits: Arc::new(fits) }
    }

    /// Whether this restore, using `used` bytes now, fits with the owner's others.
    pub fn fits(&self, used: u64) -> bool {
        (self.fits)(used)
    }
}

impl std::fmt::Debug for DiskAllowance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskAllowance").field("bytes", &self.bytes).finish_non_exhaustive()
    }
}

/// Why a runtime operation failed. Messages are shown to users (a project's or a database's
/// `error`), so they never carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The source or its dump is at fault (unreachable, refused, not a dump, a failing
    /// statement): the message says what; restoring again will not help until it changes.
    #[error("{0}")]
    Source(String),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    /// The platform cannot go on until someone acts (no node can take the instance, its image
    /// cannot be pulled, its volume cannot be provisioned): the reason is the platform's own,
    /// meant for the user, and what was half made is removed first.
    #[error("{step} cannot go on: {reason}")]
    Stuck { step: &'static str, reason: String },
    #[error("project {0} has no ready snapshot to clone")]
    NoSnapshot(Name),
    #[error("the data of database {0} is gone; reset it to clone it again")]
    DataMissing(Name),
    /// Out of disk space (what it left half-done is removed first).
    #[error("the disk is full{}", disk_need(*need, *free))]
    DiskFull { need: Option<u64>, free: u64 },
    /// Stopped on purpose (the project was deleted meanwhile).
    #[error("cancelled")]
    Cancelled,
    /// The platform underneath failed (the cluster API, say).
    #[error("{0}")]
    Platform(Box<dyn std::error::Error + Send + Sync>),
}

impl RuntimeError {
    /// What the API shows (a project's or a database's `error`): the user's own problem in
    /// full, the platform's in a sentence. The whole chain goes to the log.
    pub fn public(&self) -> String {
        match self {
            Self::Source(message) => message.clone(),
            Self::Step { step, .. } => format!("{step} failed (the controller's log has the details)"),
            Self::Stuck { .. }
            | Self::NoSnapshot(_)
            | Self::DataMissing(_)
            | Self::DiskFull { .. }
            | Self::Cancelled => self.to_string(),
            Self::Platform(_) => "the platform underneath failed".into(),
        }
    }

    /// Whether trying again later may succeed on its own (then the pass is retried with backoff
    /// instead of recording a terminal error).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Platform(_))
    }

    /// A step that failed with `detail`.
    pub fn step<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Step { step, detail: e.to_string() }
    }

    /// A step that failed on an I/O error.
    pub fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |e| Self::Step { step, detail: e.to_string() }
    }
}

/// ": need 1.2 GiB, 300.0 MiB free", or nothing when neither is known.
fn disk_need(need: Option<u64>, free: u64) -> String {
    match need {
        Some(need) => format!(": need {}, {} free", human(need), human(free)),
        None if free > 0 => format!(" ({} free)", human(free)),
        None => String::new(),
    }
}

/// The operations the reconciler and the API need from a place that runs PostgreSQL. Each
/// operation is idempotent: after a crash the reconciler simply calls it again.
pub trait Runtime: Send + Sync + 'static {
    /// The PostgreSQL major version this runtime provides.
    fn postgres_version(&self) -> u32;

    /// The port a new database's instance will listen on, given the ports databases hold: where
    /// instances share an address, one no database holds (locally a free loopback port, bound
    /// moments later); where each has its own (a pod per database), the same for all.
    ///
    /// # Errors
    /// When no port is free.
    fn new_port(&self, taken: &std::collections::HashSet<u16>) -> Result<u16, RuntimeError>;

    /// Whether this runtime can restore from `location`, reachable under the source policy
    /// (`allow_private`: private addresses too). `Err` is the reason, for the caller.
    fn check_source(&self, location: &str, allow_private: bool) -> impl Future<Output = Result<(), String>> + Send;

    /// Restores `project`'s dump as snapshot `generation`, reporting progress, until done or
    /// `cancel`led ([`RuntimeError::Cancelled`]: its processes stopped at once). Nothing of a
    /// failed or cancelled restore is left behind. `allowance`: what its owner's disk quota
    /// leaves it (`None`: no quota), counted while it runs, where the runtime can.
    fn restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        allowance: Option<DiskAllowance>,
        progress: ProgressFn,
        cancel: tokio_util::sync::CancellationToken,
    ) -> impl Future<Output = Result<SnapshotRecord, RuntimeError>> + Send;

    /// Removes whatever a project has in the runtime except the snapshots of generations `keep`
    /// (keeping none: everything, the project's own place too).
    fn clean_project(&self, project: &Name, keep: &[u64]) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Makes `database` a fresh clone of `project`'s snapshot `generation`, running with its
    /// port and password (replacing any previous clone: reset).
    fn clone_database(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        generation: u64,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Makes `database` from `source`'s backups as it was at `at` (instead of a clone of the
    /// project's snapshot), started with its own password; `source` keeps running.
    fn restore_database(
        &self,
        database: &DatabaseRecord,
        source: &DatabaseRecord,
        project: &ProjectRecord,
        at: std::time::SystemTime,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Readies `database` (backups on) for a restore in place: ends its sessions, backs it up
    /// and archives its WAL until now (a stopped one is started first). The moment returned is
    /// what the restore replaces: restoring to it undoes the restore.
    fn keep_before_restore(
        &self,
        database: &DatabaseRecord,
    ) -> impl Future<Output = Result<std::time::SystemTime, RuntimeError>> + Send;

    /// Makes `database`'s data what it was at `to`, from its own backups, in place, and runs it
    /// with its own password. On an error it runs with the data it had.
    fn restore_in_place(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        to: std::time::SystemTime,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Makes sure an existing clone runs (adopting it when it already does).
    fn ensure_running(&self, database: &DatabaseRecord) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops a database's instance, keeping its data: it holds no process and no memory until
    /// [`Runtime::start_database`].
    fn stop_database(&self, database: &DatabaseRecord) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Starts a stopped database's instance and returns once it takes connections.
    fn start_database(&self, database: &DatabaseRecord) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Makes a running database's instance run with its wanted settings, restarting it when
    /// `restart` (a parameter PostgreSQL reads only at start changed), else reloading.
    fn apply_settings(
        &self,
        database: &DatabaseRecord,
        restart: bool,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops and removes a database's instance and files.
    fn remove_database(&self, name: &Name) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Of `running` (databases that should be running), those whose instance is not: a cheap
    /// check, made every few seconds.
    fn dead(&self, running: &[DatabaseRecord]) -> impl Future<Output = Result<Vec<Name>, RuntimeError>> + Send;

    /// Databases that exist in the runtime, to find orphans left by a crash.
    fn existing_databases(&self) -> impl Future<Output = Result<Vec<Name>, RuntimeError>> + Send;

    /// Projects that have anything in the runtime, likewise.
    fn existing_projects(&self) -> impl Future<Output = Result<Vec<Name>, RuntimeError>> + Send;

    /// The `host:port` the proxy relays a database's sessions to.
    fn backend(&self, database: &DatabaseRecord) -> String;

    /// A running database's statistics now, read the way [`crate::monitor::sampling`] says (from
    /// its instance's maintenance database, bounded on both sides, at most a few at once);
    /// `None` where this runtime cannot reach its instances (the monitor then has nothing to
    /// chart for it). It ends within its bound whatever the database's owner holds.
    fn sample(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
    ) -> impl Future<Output = Result<Option<Counters>, RuntimeError>> + Send;

    /// Whether this runtime archives and backs up databases that ask for it (`backup`).
    fn backups(&self) -> bool;

    /// Takes a backup of `database` (running, with backups on): the first of each of its
    /// clones a full one, then incremental ones, and a full one again weekly. What its repository then holds.
    fn back_up(&self, database: &DatabaseRecord) -> impl Future<Output = Result<BackedUp, RuntimeError>> + Send;

    /// Reads back every file of `database`'s current backups and archive and checks it
    /// (`pgbackrest verify`): `Ok(false)` where this runtime does not check, an error naming
    /// what is damaged.
    fn verify_backups(&self, database: &DatabaseRecord) -> impl Future<Output = Result<bool, RuntimeError>> + Send;

    /// How a running database's WAL archiving goes, as its instance counts it; `None` where this
    /// runtime cannot say.
    fn archive_status(
        &self,
        database: &DatabaseRecord,
    ) -> impl Future<Output = Result<Option<ArchiveStatus>, RuntimeError>> + Send;
}

/// A database instance's WAL archiving, as PostgreSQL counts it (`pg_stat_archiver`, and the
/// finished segments waiting in `pg_wal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArchiveStatus {
    pub last_archived_at: Option<std::time::SystemTime>,
    pub last_failed_at: Option<std::time::SystemTime>,
    /// Failed attempts since the instance started.
    pub failed_count: u64,
    /// Finished segments not archived yet.
    pub waiting: u64,
}

/// What a database's repository holds after a backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackedUp {
    pub at: std::time::SystemTime,
    /// The moments it can be restored to.
    pub restorable_from: std::time::SystemTime,
    pub restorable_to: std::time::SystemTime,
    /// What the backups of its current clone take in the repository.
    pub repository_bytes: u64,
}

/// A database's statistics at one moment, as PostgreSQL keeps them (`pg_stat_database`,
/// `pg_stat_activity`, `pg_database_size`): the totals count from the instance's start.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counters {
    pub size_bytes: u64,
    pub active: u32,
    pub idle: u32,
    pub idle_in_transaction: u32,
    pub commits: u64,
    pub rollbacks: u64,
    /// Rows returned and fetched.
    pub rows_read: u64,
    /// Rows inserted, updated and deleted.
    pub rows_written: u64,
    pub blocks_hit: u64,
    pub blocks_read: u64,
    pub longest_query_secs: f64,
}

/// A store and a runtime that go together: what the core is generic over.
pub trait Platform: Send + Sync + 'static {
    type Store: crate::store::Store;
    type Runtime: Runtime;
}
