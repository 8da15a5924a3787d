//! The reconciler: drives each project and database from what its record says it should be to
//! what the runtime has, one pass per object at a time. The same logic runs over every runtime.
//!
//! Every step is idempotent and every state change is written to the store first, so after a
//! crash [`Reconciler::recover`] just reconciles everything again: in-flight restores and clones
//! are redone or adopted, running instances are adopted, and what no record claims is removed.
//!
//! Who runs passes ([`Scheduler`]) is the adapter's business: locally, one task per object;
//! on Kubernetes, the kube-rs controllers. The reconciler only asks for them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, Progress, ProjectStatus};

pub use crate::model::Key;
use crate::model::{DatabaseRecord, MAX_INTERRUPTED_RESTORES, ProjectRecord, SnapshotRecord, Want};
use crate::runtime::{DiskAllowance, Platform, ProgressFn, Runtime, RuntimeError};
use crate::state::database::{self as database_state, Step};
use crate::state::project::{self as project_state, SnapshotMasking};
use crate::store::{Store, StoreError};

/// Why a pass ended early: it is retried with backoff by the scheduler. Store failures, and
/// runtime failures that may pass on their own ([`RuntimeError::is_transient`]); other runtime
/// failures are recorded on the object instead.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A runtime failure the pass did not record yet.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A runtime failure recorded on the object (with "retrying"); the pass is retried.
    #[error("{0}; retrying")]
    Retry(RuntimeError),
}

/// How often [`Reconciler::supervise`] looks at the instances: a dead one is noticed within
/// this, plus the check itself.
pub const SUPERVISE_EVERY: Duration = Duration::from_secs(2);

/// The first retry of a failed pass; doubled on each further failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The delay after `failures` consecutive failed passes of an object: 2 s, 4 s, 8 s, … at most
/// 5 minutes. Every scheduler uses it.
pub fn backoff_after(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// The idle period unless configured.
const LIFECYCLE_DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);

/// Progress is written to the store at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs reconcile passes when asked: at most one pass per object at a time, and one more when
/// asked again during a pass.
pub trait Scheduler: Send + Sync + 'static {
    fn schedule(&self, key: Key);
}

/// Restores one owner may run at once, unless told otherwise.
pub const RESTORES_PER_OWNER: usize = 2;

/// Snapshot generations each project keeps (its current one among them), unless told otherwise.
pub const SNAPSHOTS_KEPT: usize = 3;

/// What a reconciler is configured with (the API server's flags: [`crate::config::ApiConfig`]).
#[derive(Debug, Clone)]
pub struct ReconcilerConfig {
    /// Restores one owner may run at once (more wait, `pending`).
    pub restores_per_owner: usize,
    /// Databases stop after this long without a session unless their project or they say
    /// otherwise (zero: never).
    pub idle_stop_after: Duration,
    /// Owners' quotas: a restore may use what its owner's disk quota leaves.
    pub quotas: crate::quota::Quotas,
    /// Snapshot generations each project keeps, its current one among them (at least 1): the
    /// others are what it can be rolled back to.
    pub snapshots_kept: usize,
}

impl Default for ReconcilerConfig {
    fn default() -> Self {
        Self {
            restores_per_owner: RESTORES_PER_OWNER,
            idle_stop_after: LIFECYCLE_DEFAULT_IDLE,
            quotas: crate::quota::Quotas::default(),
            snapshots_kept: SNAPSHOTS_KEPT,
        }
    }
}

/// Reconciles objects on demand.
pub struct Reconciler<P: Platform> {
    store: Arc<P::Store>,
    runtime: Arc<P::Runtime>,
    scheduler: Arc<dyn Scheduler>,
    /// Restores in flight (or waiting for their turn), by project: a delete cancels them.
    restores: Mutex<HashMap<Name, CancellationToken>>,
    /// Turns of each owner's restores, so one owner cannot take every restore slot.
    turns: Mutex<HashMap<String, Arc<Semaphore>>>,
    restores_per_owner: usize,
    /// The proxies' reports of sessions, for idle stops.
    activity: crate::activity::Activity,
    /// When each running database started, and which a proxy woke for nobody yet.
    runs: crate::lifecycle::Runs,
    /// Databases stop after this long without a session unless their project or they say
    /// otherwise (seconds; 0: never).
    idle_stop_after: Duration,
    /// Databases deleted at expiry since this process started.
    expired: std::sync::atomic::AtomicU64,
    /// Whether a proxy had reported recently at the last lifecycle check (to warn once when
    /// they fall silent).
    proxies_heard: std::sync::atomic::AtomicBool,
    /// Owners' quotas: a restore may use what its owner's disk quota leaves.
    quotas: crate::quota::Quotas,
    /// The disk each owner's restores in flight use now (by project): what one takes, its
    /// owner's others cannot.
    restoring_disk: Arc<Mutex<HashMap<String, HashMap<Name, u64>>>>,
    /// Snapshot generations each project keeps, its current one among them.
    snapshots_kept: usize,
}

impl<P: Platform> Reconciler<P> {
    pub fn new(
        store: Arc<P::Store>,
        runtime: Arc<P::Runtime>,
        scheduler: Arc<dyn Scheduler>,
        config: ReconcilerConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            runtime,
            scheduler,
            restores: Mutex::default(),
            turns: Mutex::default(),
            restores_per_owner: config.restores_per_owner.max(1),
            activity: crate::activity::Activity::default(),
            runs: crate::lifecycle::Runs::default(),
            idle_stop_after: config.idle_stop_after,
            expired: std::sync::atomic::AtomicU64::new(0),
            proxies_heard: std::sync::atomic::AtomicBool::new(true),
            quotas: config.quotas,
            restoring_disk: Arc::default(),
            snapshots_kept: config.snapshots_kept.max(1),
        })
    }

    /// What `owner`'s disk quota leaves `project`'s restore (`None`: no disk quota): the quota
    /// less the owner's use now, shared with the owner's other restores in flight (their use is
    /// counted as they go). Released when the returned guard drops.
    async fn disk_allowance(
        &self,
        owner: &str,
        project: &Name,
    ) -> Result<(Option<DiskAllowance>, RestoringDisk), ReconcileError> {
        let release = RestoringDisk::count(&self.restoring_disk, owner, project);
        let quotas = &self.quotas;
        if quotas.limits(owner).disk.is_none() {
            return Ok((None, release));
        }
        let (databases, projects) = (self.store.databases(None, None).await?, self.store.projects(None).await?);
        let usage = quotas.usage(owner, &databases, &projects);
        let Some(left) = usage.quota.disk.map(|disk| disk.saturating_sub(usage.disk)) else {
            return Ok((None, release));
        };
        let (all, owner, project) = (self.restoring_disk.clone(), owner.to_string(), project.clone());
        let allowance = DiskAllowance::new(left, move |used| {
            let mut all = lock(&all);
            let Some(restores) = all.get_mut(&owner) else {
                return used <= left;
            };
            // Counted only while the restore is (a measure after its end must not come back).
            let others: u64 = restores.iter().filter(|(p, _)| **p != project).map(|(_, u)| u).sum();
            if let Some(mine) = restores.get_mut(&project) {
                *mine = used;
            }
            others.saturating_add(used) <= left
        });
        Ok((Some(allowance), release))
    }

    /// Databases deleted at expiry since this process started.
    pub fn expired_total(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }

    /// The proxies' activity reports.
    pub fn activity(&self) -> &crate::activity::Activity {
        &self.activity
    }

    /// What this controller knows of each database's run (its start, a proxy's wake).
    pub fn runs(&self) -> &crate::lifecycle::Runs {
        &self.runs
    }

    /// Stops `project`'s restore now, if one runs or waits (its project was deleted).
    pub fn cancel_restore(&self, project: &Name) {
        if let Some(token) = lock(&self.restores).get(project) {
            tracing::info!(%project, "cancelling the restore");
            token.cancel();
        }
    }

    pub fn runtime(&self) -> &Arc<P::Runtime> {
        &self.runtime
    }

    pub fn store(&self) -> &Arc<P::Store> {
        &self.store
    }

    /// Asks for `key` to be reconciled.
    pub fn trigger(&self, key: Key) {
        self.scheduler.schedule(key);
    }

    /// After a start: reconciles every recorded object and removes what no record claims.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn recover(self: &Arc<Self>) -> Result<(), ReconcileError> {
        let projects = self.store.projects(None).await?;
        let databases = self.store.databases(None, None).await?;
        // Nothing else names an orphan, so it is cleaned up here rather than scheduled.
        for orphan in self.runtime.existing_databases().await? {
            if !databases.iter().any(|d| d.name == orphan) {
                tracing::info!(database = %orphan, "removing an instance no record claims");
                self.reconcile(&Key::Database(orphan)).await?;
            }
        }
        for orphan in self.runtime.existing_projects().await? {
            if !projects.iter().any(|p| p.name == orphan) {
                tracing::info!(project = %orphan, "removing what a deleted project left");
                self.reconcile(&Key::Project(orphan)).await?;
            }
        }
        for p in projects {
            self.trigger(Key::Project(p.name));
        }
        for d in databases {
            self.trigger(Key::Database(d.name));
        }
        Ok(())
    }

    /// One pass over `key`. Callers make sure passes over one object never overlap.
    ///
    /// # Errors
    /// When the store fails, or the runtime fails in a way that may pass: the pass should be
    /// retried with backoff ([`backoff_after`]).
    pub async fn reconcile(self: &Arc<Self>, key: &Key) -> Result<(), ReconcileError> {
        use tracing::Instrument as _;
        // What a pass logs carries the object it is for.
        match key {
            Key::Project(name) => {
                self.reconcile_project(name).instrument(tracing::info_span!("reconcile", project = %name)).await
            }
            Key::Database(name) => {
                self.reconcile_database(name).instrument(tracing::info_span!("reconcile", database = %name)).await
            }
        }
    }

    async fn reconcile_project(self: &Arc<Self>, name: &Name) -> Result<(), ReconcileError> {
        let Some(project) = self.store.project(name.as_str()).await? else {
            // Deleted (or an orphan): remove everything it had, then let the record go. A failure
            // is retried: the record stays until everything is gone.
            self.runtime.clean_project(name, &[]).await?;
            self.store.project_cleaned(name).await?;
            return Ok(());
        };
        if !project_state::needs_restore(&project) {
            if project.status == ProjectStatus::Ready {
                // Older snapshots, and debris of an interrupted refresh.
                self.clean_unused_snapshots(name).await?;
            }
            return Ok(());
        }
        let cancel = CancellationToken::new();
        let _registered = Registered::new(&self.restores, name, cancel.clone());
        // The owner's turn (waiting, the project stays pending); a delete meanwhile ends it.
        let Some(_turn) = self.turn(&project.owner, &cancel).await else { return Ok(()) };
        // The project as it is now, not as it was before the wait: its masking may have changed.
        let project = self.store.update_project(name, project_state::restore_begun).await?;
        let generation = project.wanted_generation;
        if project.restores_begun > MAX_INTERRUPTED_RESTORES {
            let error = RuntimeError::Source(format!(
                "the restore was interrupted {MAX_INTERRUPTED_RESTORES} times (the controller stopped while it ran); \
                 it is not tried again on its own: refresh the project to try again"
            ));
            tracing::warn!(project = %name, generation, "restore interrupted too often; failing it");
            self.fail_restore(&project, generation, &error).await?;
            return self.wake_waiting(name).await;
        }
        tracing::info!(project = %name, generation, "restoring");
        let started = Instant::now();
        let (allowance, counted) = self.disk_allowance(&project.owner, name).await?;
        let restored = self.restore_with_progress(&project, generation, allowance, cancel).await;
        // Its use leaves the owner's count before anyone can see it ended.
        drop(counted);
        match restored {
            Ok(snapshot) => {
                tracing::info!(project = %name, generation, size = snapshot.size_bytes, elapsed = ?started.elapsed(), "restored");
                let snapshot = SnapshotRecord {
                    masked_with: project.masking.rules.clone(),
                    masked_key_version: project.masking.key_version,
                    ..snapshot
                };
                self.store
                    .update_project(name, |p| {
                        project_state::restored(p, &project.id, generation, &snapshot, self.snapshots_kept)
                    })
                    .await?;
                self.clean_unused_snapshots(name).await?;
            }
            Err(RuntimeError::Cancelled) => {
                // Deleted meanwhile: the pass the delete asked for removes what it had.
                tracing::info!(project = %name, generation, "restore cancelled");
                return Ok(());
            }
            Err(error) if error.is_transient() => {
                tracing::warn!(project = %name, %error, "restore failed; retrying");
                let public = error.public();
                self.store
                    .update_project(name, |p| project_state::restore_retrying(p, &project.id, generation, &public))
                    .await?;
                return Err(ReconcileError::Retry(error));
            }
            Err(error) => {
                tracing::warn!(project = %name, %error, "restore failed");
                self.fail_restore(&project, generation, &error).await?;
            }
        }
        self.wake_waiting(name).await
    }

    /// Records a failed restore of `generation`: a refresh that fails keeps the previous
    /// snapshot usable.
    async fn fail_restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        error: &RuntimeError,
    ) -> Result<(), ReconcileError> {
        self.store
            .update_project(&project.name, |p| {
                project_state::restore_failed(p, &project.id, generation, error.public())
            })
            .await?;
        Ok(())
    }

    /// Databases waiting for project `name` can go on (or learn that it failed).
    async fn wake_waiting(&self, name: &Name) -> Result<(), ReconcileError> {
        for d in self.store.databases(None, Some(name.as_str())).await? {
            self.trigger(Key::Database(d.name));
        }
        Ok(())
    }

    /// Removes all but the snapshots the project keeps, unless a clone of the project is in
    /// flight (it may be copying another); the project is reconciled again when that clone ends.
    async fn clean_unused_snapshots(&self, name: &Name) -> Result<(), ReconcileError> {
        let cloning =
            self.store.databases(None, Some(name.as_str())).await?.iter().any(|d| d.status == DatabaseStatus::Creating);
        let Some(project) = self.store.project(name.as_str()).await? else { return Ok(()) };
        if !cloning {
            self.runtime.clean_project(name, &project_state::kept_generations(&project)).await?;
        }
        Ok(())
    }

    /// Runs a restore, writing its progress to the project at most every [`PROGRESS_EVERY`].
    async fn restore_with_progress(
        &self,
        project: &ProjectRecord,
        generation: u64,
        allowance: Option<DiskAllowance>,
        cancel: CancellationToken,
    ) -> Result<SnapshotRecord, RuntimeError> {
        let (sender, mut latest) = tokio::sync::watch::channel(None);
        let progress: ProgressFn = Arc::new(move |done, total| {
            sender.send_replace(Some(Progress { bytes_done: done, bytes_total: total }));
        });
        let restore = self.runtime.restore(project, generation, allowance, progress, cancel);
        tokio::pin!(restore);
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                result = &mut restore => return result,
                _ = ticker.tick() => if latest.has_changed().unwrap_or(false) {
                    let progress = *latest.borrow_and_update();
                    let update = self.store.update_project(&project.name, |p| project_state::restore_progress(p, progress));
                    if let Err(error) = update.await {
                        tracing::debug!(project = %project.name, %error, "progress not recorded");
                    }
                }
            }
        }
    }

    /// A turn among `owner`'s restores, waiting for one; `None` if `cancel`led meanwhile.
    async fn turn(&self, owner: &str, cancel: &CancellationToken) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let limit = self.restores_per_owner;
            let mut turns = lock(&self.turns);
            turns.entry(owner.to_string()).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
        };
        cancel.run_until_cancelled(semaphore.acquire_owned()).await.and_then(Result::ok)
    }

    async fn reconcile_database(self: &Arc<Self>, name: &Name) -> Result<(), ReconcileError> {
        let Some(database) = self.store.database(name.as_str()).await? else {
            // No record (deleted, or an orphan): the instance goes; a failure is retried.
            self.runtime.remove_database(name).await?;
            return Ok(());
        };
        let result = match database_state::step(&database) {
            Step::Remove => {
                self.set_database(name, database_state::deleting).await?;
                if let Err(error) = self.runtime.remove_database(name).await {
                    // Kept in `deleting` with the reason, and retried until it is gone.
                    tracing::warn!(database = %name, %error, "cannot remove the instance; retrying");
                    self.set_database(name, |d| d.error = Some(format!("{}; retrying", error.public()))).await?;
                    return Err(ReconcileError::Retry(error));
                }
                self.store.delete_database(name).await?;
                self.runs.ended(name);
                tracing::info!(database = %name, "deleted");
                return Ok(());
            }
            Step::Clone => self.clone_database(&database).await,
            Step::KeepRunning => match self.keep_running(&database).await {
                Ok(()) => self.sync_settings(&database).await,
                failed => failed,
            },
            Step::Start => self.start_database(&database).await,
            Step::Stop => self.stop_database(&database).await,
            // Made first, then stopped by the next pass.
            Step::CloneThenStop => {
                let cloned = self.clone_database(&database).await;
                self.trigger(Key::Database(name.clone()));
                cloned
            }
            Step::Nothing => Ok(()),
        };
        match result {
            Err(ReconcileError::Runtime(error)) if !error.is_transient() => {
                tracing::warn!(database = %name, %error, "database failed");
                self.set_database(name, |d| database_state::failed(d, error.public())).await?;
                Ok(())
            }
            Err(ReconcileError::Runtime(error)) => {
                tracing::warn!(database = %name, %error, "database failed; retrying");
                self.set_database(name, |d| d.error = Some(format!("{}; retrying", error.public()))).await?;
                Err(ReconcileError::Retry(error))
            }
            other => other,
        }
    }

    /// Makes sure a database that should run does: adopts or starts its instance. One that was
    /// found dead ([`DatabaseStatus::Recovering`]) is running again once this succeeds; while it
    /// fails, it stays recovering with the reason, and the pass is retried with backoff.
    async fn keep_running(&self, database: &DatabaseRecord) -> Result<(), ReconcileError> {
        match self.runtime.ensure_running(database).await {
            Ok(()) if database.status == DatabaseStatus::Recovering => {
                tracing::info!(database = %database.name, "recovered");
                self.set_database(&database.name, database_state::recovered).await?;
                Ok(())
            }
            Ok(()) => Ok(()),
            // Its data is gone: nothing to restart; the user resets it.
            Err(error @ RuntimeError::DataMissing(_)) => Err(error.into()),
            Err(error) => {
                tracing::warn!(database = %database.name, %error, "cannot start the instance; retrying");
                let reason = format!("{}; retrying", error.public());
                self.set_database(&database.name, |d| database_state::recovering(d, reason.clone())).await?;
                Err(ReconcileError::Retry(error))
            }
        }
    }

    /// Applies a running database's changed settings (a reload, or a restart when one of them
    /// is read only at start, or its backups were turned on or off: `archive_mode` is).
    async fn sync_settings(&self, database: &DatabaseRecord) -> Result<(), ReconcileError> {
        let settings = &database.settings;
        let refused = |e: &Option<String>| e.as_deref().is_some_and(|e| e.starts_with(SETTINGS_REFUSED));
        let archiving = database.archiving_changed();
        if settings.wanted == settings.applied && !archiving {
            // Reverted to what it runs with: the refusal is over.
            if refused(&database.error) {
                self.set_database(&database.name, |d| {
                    if refused(&d.error) {
                        d.error = None;
                    }
                })
                .await?;
            }
            return Ok(());
        }
        let restart = crate::settings::needs_restart(&settings.applied, &settings.wanted) || archiving;
        match self.runtime.apply_settings(database, restart).await {
            Ok(()) => {}
            // Settings it cannot take (a parameter it cannot start with, an image of another
            // major) are the owner's to change: the database keeps its data and its state, with
            // the reason, and a change of its settings (a revert) brings the next pass. Never
            // `error`, which only a reset (a new clone) leaves.
            Err(error) if !error.is_transient() => {
                tracing::warn!(database = %database.name, %error, settings = ?settings.wanted, "settings not applied");
                let reason = format!("{SETTINGS_REFUSED}: {}; change them to apply others", error.public());
                self.set_database(&database.name, |d| d.error = Some(reason.clone())).await?;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        let applied = database.configured();
        self.set_database(&database.name, |d| {
            database_state::configured(d, &applied);
            if refused(&d.error) {
                d.error = None;
            }
        })
        .await?;
        tracing::info!(database = %database.name, restart, settings = ?settings.wanted, archiving = applied.archiving, "settings applied");
        Ok(())
    }

    /// Stops a database's instance, keeping its data and credentials.
    async fn stop_database(&self, database: &DatabaseRecord) -> Result<(), ReconcileError> {
        self.runtime.stop_database(database).await?;
        self.runs.ended(&database.name);
        let stopped_at = crate::clock::now();
        self.set_database(&database.name, |d| database_state::stopped(d, &stopped_at)).await?;
        let reason = database.lifecycle.stop_reason.map(|r| format!("{r:?}").to_lowercase()).unwrap_or_default();
        tracing::info!(database = %database.name, %reason, "stopped");
        Ok(())
    }

    /// Starts a stopped database (a wake); it is `starting` until it answers.
    async fn start_database(&self, database: &DatabaseRecord) -> Result<(), ReconcileError> {
        if database.status != DatabaseStatus::Starting {
            self.set_database(&database.name, |d| {
                database_state::starting(d);
            })
            .await?;
        }
        let started = Instant::now();
        match self.runtime.start_database(database).await {
            Ok(()) => {}
            // A start that cannot succeed now (no room for the pod in its volume's zone, a
            // crash at start…) loses nothing: the database goes back to sleep with the reason,
            // and may be started again. Only missing data, and failed clones, end in `error`
            // (and a reset, which clones the snapshot anew over what it had).
            Err(error) if !error.is_transient() && !matches!(error, RuntimeError::DataMissing(_)) => {
                tracing::warn!(database = %database.name, %error, "cannot start; stopped again");
                if let Err(stop) = self.runtime.stop_database(database).await {
                    tracing::warn!(database = %database.name, error = %stop, "cannot stop what the failed start made");
                }
                self.runs.ended(&database.name);
                let reason = format!("could not start: {}; its data is kept: start it again", error.public());
                self.set_database(&database.name, |d| database_state::start_failed(d, &reason)).await?;
                return Ok(());
            }
            Err(error) => return Err(error.into()),
        }
        // Idle from now on, not from before it slept; yet a start is no session, so
        // `lastActiveAt` stays the last session's.
        self.runs.started(&database.name, std::time::SystemTime::now());
        self.set_database(&database.name, |d| database_state::started(d, &database.configured())).await?;
        tracing::info!(database = %database.name, elapsed = ?started.elapsed(), "started");
        Ok(())
    }

    /// Looks once for databases whose time is up: expired ones are deleted, idle ones stopped
    /// (neither if protected).
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub async fn enforce_lifecycle_once(&self, now: std::time::SystemTime) -> Result<(), ReconcileError> {
        use crate::lifecycle::Due;
        let projects = self.store.projects(None).await?;
        let default_idle = self.idle_stop_after;
        let databases = self.store.databases(None, None).await?;
        self.runs.retain(|name| databases.iter().any(|d| &d.name == name && d.want == Want::Run));
        // Sessions reported to other controller replicas, and this one's written for them.
        self.activity.consolidate(&*self.store, now, |name| databases.iter().any(|d| &d.name == name)).await?;
        let heard = self.activity.heard_recently();
        // A process just started has not had the time to hear from any: no warning yet.
        let silent = !heard && !self.activity.started_recently();
        let was_heard = self.proxies_heard.swap(!silent, Ordering::Relaxed);
        if silent && was_heard {
            tracing::warn!(
                "no proxy has reported sessions for {:?}: idle stops wait until one does (a proxy that cannot reach \
                 the controller, or one with another admin token?)",
                crate::activity::REPORT_TTL
            );
        }
        for database in databases {
            let project = projects.iter().find(|p| p.name == database.project);
            let busy = self.activity.busy(&database.name);
            let started = (database.status == DatabaseStatus::Running && database.want == Want::Run)
                .then(|| self.runs.started_at(&database.name, now));
            let seen = self.activity.last_seen(&database.name);
            match crate::lifecycle::due(&database, project, default_idle, now, busy, seen, started) {
                Some(Due::Expire) => {
                    let record = self
                        .store
                        .update_database(&database.name, |d| {
                            database_state::expire(d);
                        })
                        .await?;
                    if record.want == Want::Delete {
                        let expired_at = database.lifecycle.expires_at.clone().unwrap_or_default();
                        tracing::info!(database = %database.name, owner = %database.owner, %expired_at, "expired: deleting");
                        self.expired.fetch_add(1, Ordering::Relaxed);
                        self.trigger(Key::Database(database.name.clone()));
                    }
                }
                Some(Due::IdleStop) if !heard => {}
                Some(Due::IdleStop) => {
                    let record = self
                        .store
                        .update_database(&database.name, |d| {
                            // Its last session stays in its record (on Kubernetes, its status).
                            if database_state::idle_stop(d)
                                && let Some(seen) = seen
                            {
                                crate::activity::note_session(d, seen);
                            }
                        })
                        .await?;
                    if record.want == Want::Stop {
                        let last_session = record.lifecycle.last_active_at.clone().unwrap_or_default();
                        let woken_for_nobody = self.runs.unclaimed_wake(&database.name).is_some();
                        tracing::info!(database = %database.name, %last_session, woken_for_nobody, "idle: stopping");
                        self.trigger(Key::Database(database.name.clone()));
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Runs [`Reconciler::enforce_lifecycle_once`] every `every` until `stop`.
    pub async fn enforce_lifecycle(&self, every: Duration, stop: CancellationToken) {
        while stop.run_until_cancelled(tokio::time::sleep(every)).await.is_some() {
            if let Err(error) = self.enforce_lifecycle_once(std::time::SystemTime::now()).await {
                tracing::warn!(%error, "cannot check databases for idleness and expiry");
            }
        }
    }

    /// Clones the project's snapshot for `database` once the project is ready.
    async fn clone_database(self: &Arc<Self>, database: &DatabaseRecord) -> Result<(), ReconcileError> {
        let Some(project) = self.store.project(database.project.as_str()).await? else {
            return Err(RuntimeError::NoSnapshot(database.project.clone()).into());
        };
        if database.want == Want::Reset
            && let Some(restoring) = &database.restoring
        {
            return self.restore_in_place(database, &project, restoring).await;
        }
        let Some(snapshot) = project.snapshot.clone() else {
            if project.status == ProjectStatus::Failed {
                let why = project.error.unwrap_or_default();
                return Err(RuntimeError::Source(format!("the project's restore failed: {why}")).into());
            }
            // Still restoring: the project's reconciler triggers this database when done.
            return Ok(());
        };
        // A snapshot restored before the project's masking rules were set is never cloned: while
        // the masked restore runs, the project's reconciler triggers this database when done.
        if project_state::snapshot_masking(&project) == SnapshotMasking::Pending {
            return Ok(());
        }
        // The API refused such clones when asked; the project may have changed since.
        if let Some(refusal) = project_state::clone_refusal(&project) {
            let refusal = refusal.to_string();
            if database.want == Want::Reset && database.snapshot_generation.is_some() {
                // Its clone is there, untouched: the reset is dropped, saying why.
                self.set_database(&database.name, |d| database_state::reset_refused(d, &refusal)).await?;
                return Ok(());
            }
            return Err(RuntimeError::Source(refusal).into());
        }
        self.set_database(&database.name, database_state::cloning).await?;
        match &database.restore_from {
            // Made once from another database's backups; a reset clones the snapshot.
            Some(from) if database.snapshot_generation.is_none() && database.want != Want::Reset => {
                let found = self.store.database(from.database.as_str()).await?;
                let Some(source) = found.filter(|s| s.id == from.id) else {
                    return Err(RuntimeError::Source(format!(
                        "database {} it is restored from is gone",
                        from.database
                    ))
                    .into());
                };
                let at = moment(&from.at)?;
                self.runtime.restore_database(database, &source, &project, at).await?;
            }
            _ => self.runtime.clone_database(database, &project, snapshot.generation).await?,
        }
        // Idle from now on (a new clone has had no session, and its making is none).
        self.runs.started(&database.name, std::time::SystemTime::now());
        // The clone started with the settings it was asked for then.
        self.set_database(&database.name, |d| database_state::cloned(d, snapshot.generation, &database.configured()))
            .await?;
        tracing::info!(database = %database.name, project = %project.name, "running");
        // Snapshots this clone kept from removal can go now.
        self.trigger(Key::Project(project.name.clone()));
        Ok(())
    }

    /// Restores `database` in place from its own backups: first keeps the state it replaces
    /// (once: a controller restarted mid-restore goes on from the moment kept), then restores.
    /// A failure leaves it running as it was, with the reason on it.
    async fn restore_in_place(
        self: &Arc<Self>,
        database: &DatabaseRecord,
        project: &crate::model::ProjectRecord,
        restoring: &crate::model::InPlaceRestore,
    ) -> Result<(), ReconcileError> {
        self.set_database(&database.name, database_state::cloning).await?;
        let mut outcome = moment(&restoring.to);
        if outcome.is_ok() && restoring.before.is_none() {
            match self.runtime.keep_before_restore(database).await {
                Ok(before) => {
                    let before = crate::lifecycle::timestamp_micros(before);
                    self.set_database(&database.name, |d| database_state::before_kept(d, before.clone())).await?;
                }
                Err(error) => outcome = Err(error),
            }
        }
        let outcome = match outcome {
            Ok(to) => self.runtime.restore_in_place(database, project, to).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(()) => {
                self.runs.started(&database.name, std::time::SystemTime::now());
                self.set_database(&database.name, |d| database_state::restored_in_place(d, &database.configured()))
                    .await?;
                tracing::info!(database = %database.name, to = %restoring.to, "restored in place");
            }
            Err(error) => {
                tracing::warn!(database = %database.name, to = %restoring.to, %error, "the restore failed; it runs as it was");
                self.set_database(&database.name, |d| database_state::restore_failed(d, &error.public())).await?;
            }
        }
        Ok(())
    }

    /// Looks at every instance that should be running, once: one found dead is marked
    /// recovering, with the reason, and a pass restarts it. The routing table then shows it not
    /// ready, until it runs again.
    ///
    /// # Errors
    /// When the store or the runtime cannot be read.
    pub async fn supervise_once(&self) -> Result<(), ReconcileError> {
        // What the store last published: every 2 s, no list of the store (on Kubernetes, a
        // request to the API server); marking one recovering reads and checks its record.
        let published = self.store.watch_databases().borrow().clone();
        let running: Vec<DatabaseRecord> =
            published.iter().filter(|&d| d.want == Want::Run && d.status == DatabaseStatus::Running).cloned().collect();
        for name in self.runtime.dead(&running).await? {
            tracing::warn!(database = %name, "the instance stopped unexpectedly; restarting it");
            self.set_database(&name, |d| {
                database_state::found_dead(d, "the instance stopped unexpectedly; restarting it");
            })
            .await?;
            self.trigger(Key::Database(name));
        }
        Ok(())
    }

    /// [`Reconciler::supervise_once`] every `every`, until `stop`.
    pub async fn supervise(&self, every: Duration, stop: tokio_util::sync::CancellationToken) {
        while stop.run_until_cancelled(tokio::time::sleep(every)).await.is_some() {
            if let Err(error) = self.supervise_once().await {
                tracing::warn!(%error, "cannot check the instances");
            }
        }
    }

    async fn set_database(&self, name: &Name, f: impl FnMut(&mut DatabaseRecord) + Send) -> Result<(), StoreError> {
        self.store.update_database(name, f).await.map(drop)
    }
}

/// A moment a record keeps to restore to (RFC 3339, as the API wrote it).
fn moment(at: &str) -> Result<std::time::SystemTime, RuntimeError> {
    humantime::parse_rfc3339_weak(at).map_err(|e| RuntimeError::Source(format!("the moment {at:?}: {e}")))
}

/// How a database's error begins when its settings could not be applied.
const SETTINGS_REFUSED: &str = "settings not applied";

/// A restore's use in its owner's count of restores in flight, until dropped.
struct RestoringDisk {
    all: Arc<Mutex<HashMap<String, HashMap<Name, u64>>>>,
    owner: String,
    project: Name,
}

impl RestoringDisk {
    /// Counts `project`'s restore among `owner`'s (using nothing yet).
    fn count(all: &Arc<Mutex<HashMap<String, HashMap<Name, u64>>>>, owner: &str, project: &Name) -> Self {
        lock(all).entry(owner.to_string()).or_default().insert(project.clone(), 0);
        Self { all: all.clone(), owner: owner.to_string(), project: project.clone() }
    }
}

impl Drop for RestoringDisk {
    fn drop(&mut self) {
        let mut all = lock(&self.all);
        if let Some(restores) = all.get_mut(&self.owner) {
            restores.remove(&self.project);
            if restores.is_empty() {
                all.remove(&self.owner);
            }
        }
    }
}

/// A std mutex held only to look up or change a map, never across an await.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A restore's cancel handle in [`Reconciler::restores`] while it runs.
struct Registered<'a> {
    restores: &'a Mutex<HashMap<Name, CancellationToken>>,
    name: Name,
}

impl<'a> Registered<'a> {
    fn new(restores: &'a Mutex<HashMap<Name, CancellationToken>>, name: &Name, token: CancellationToken) -> Self {
        lock(restores).insert(name.clone(), token);
        Self { restores, name: name.clone() }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        lock(self.restores).remove(&self.name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_passes_back_off_exponentially_up_to_a_limit() {
        let delays: Vec<u64> = (1..=10).map(|n| backoff_after(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_after(u32::MAX), MAX_BACKOFF);
    }
}
