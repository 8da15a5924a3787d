//! The reconciler: drives each project and database from what its record says it should be to
//! what the runtime has, one pass per object at a time. The same logic runs over every runtime.
//!
//! Every step is idempotent and every state change is written to the store first, so after a
//! crash [`Reconciler::recover`] just reconciles everything again: in-flight restores and clones
//! are redone or adopted, running instances are adopted, and what no record claims is removed.
//!
//! Who runs passes ([`Scheduler`]) is the adapter's business: locally, one task per object;
//! on Kubernetes, the kube-rs controllers. The reconciler only asks for them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, Progress, ProjectStatus};

pub use crate::model::Key;
use crate::model::{DatabaseRecord, ProjectRecord, SnapshotRecord, Want};
use crate::runtime::{Platform, ProgressFn, Runtime, RuntimeError};
use crate::store::{Store, StoreError};

/// Store failures end a pass (it is retried on the next trigger); runtime failures are recorded
/// on the object instead.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Progress is written to the store at most this often.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// Runs reconcile passes when asked: at most one pass per object at a time, and one more when
/// asked again during a pass.
pub trait Scheduler: Send + Sync + 'static {
    fn schedule(&self, key: Key);
}

/// Reconciles objects on demand.
pub struct Reconciler<P: Platform> {
    store: Arc<P::Store>,
    runtime: Arc<P::Runtime>,
    scheduler: Arc<dyn Scheduler>,
}

impl<P: Platform> Reconciler<P> {
    pub fn new(store: Arc<P::Store>, runtime: Arc<P::Runtime>, scheduler: Arc<dyn Scheduler>) -> Arc<Self> {
        Arc::new(Self { store, runtime, scheduler })
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
        for orphan in self.runtime.existing_databases().await.unwrap_or_default() {
            if !databases.iter().any(|d| d.name == orphan) {
                tracing::info!(database = %orphan, "removing an instance no record claims");
                self.reconcile(&Key::Database(orphan)).await?;
            }
        }
        for orphan in self.runtime.existing_projects().await.unwrap_or_default() {
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
    /// When the store fails; the pass should be retried.
    pub async fn reconcile(self: &Arc<Self>, key: &Key) -> Result<(), ReconcileError> {
        match key {
            Key::Project(name) => self.reconcile_project(name).await,
            Key::Database(name) => self.reconcile_database(name).await,
        }
    }

    async fn reconcile_project(self: &Arc<Self>, name: &Name) -> Result<(), ReconcileError> {
        let Some(project) = self.store.project(name.as_str()).await? else {
            // Deleted (or an orphan): remove everything it had, then let the record go.
            match self.runtime.clean_project(name, None).await {
                Ok(()) => self.store.project_cleaned(name).await?,
                Err(error) => tracing::warn!(project = %name, %error, "cannot remove what the project had"),
            }
            return Ok(());
        };
        let current = project.snapshot.as_ref().map(|s| s.generation);
        if current >= Some(project.wanted_generation) || project.status == ProjectStatus::Failed {
            if project.status == ProjectStatus::Ready {
                // Older snapshots, and debris of an interrupted refresh.
                self.clean_unused_snapshots(name).await?;
            }
            return Ok(());
        }
        let generation = project.wanted_generation;
        self.store
            .update_project(name, |p| {
                p.status = ProjectStatus::Restoring;
                p.error = None;
                p.progress = Some(Progress { bytes_done: 0, bytes_total: None });
            })
            .await?;
        tracing::info!(project = %name, generation, "restoring");
        let started = Instant::now();
        match self.restore_with_progress(&project, generation).await {
            Ok(snapshot) => {
                tracing::info!(project = %name, generation, size = snapshot.size_bytes, elapsed = ?started.elapsed(), "restored");
                // Only for the same project and generation: it may have been deleted and
                // recreated, or refreshed, while this restore ran.
                self.store
                    .update_project(name, |p| {
                        if p.id == project.id && p.wanted_generation == generation {
                            p.status = ProjectStatus::Ready;
                            p.progress = None;
                            p.snapshot = Some(snapshot.clone());
                        }
                    })
                    .await?;
                self.clean_unused_snapshots(name).await?;
            }
            Err(error) => {
                tracing::warn!(project = %name, %error, "restore failed");
                self.store
                    .update_project(name, |p| {
                        if p.id != project.id || p.wanted_generation != generation {
                            return;
                        }
                        // A refresh that fails keeps the previous snapshot usable.
                        p.status = if p.snapshot.is_some() { ProjectStatus::Ready } else { ProjectStatus::Failed };
                        p.wanted_generation = p.snapshot.as_ref().map_or(p.wanted_generation, |s| s.generation);
                        p.error = Some(error.to_string());
                        p.progress = None;
                    })
                    .await?;
            }
        }
        // Databases waiting for this project can go on (or learn that it failed).
        for d in self.store.databases(None, Some(name.as_str())).await? {
            self.trigger(Key::Database(d.name));
        }
        Ok(())
    }

    /// Removes all but the current snapshot, unless a clone of the project is in flight (it may
    /// be copying an older one); the project is reconciled again when that clone ends.
    async fn clean_unused_snapshots(&self, name: &Name) -> Result<(), ReconcileError> {
        let cloning =
            self.store.databases(None, Some(name.as_str())).await?.iter().any(|d| d.status == DatabaseStatus::Creating);
        let Some(project) = self.store.project(name.as_str()).await? else { return Ok(()) };
        if !cloning && let Err(error) = self.runtime.clean_project(name, project.snapshot.map(|s| s.generation)).await {
            tracing::warn!(project = %name, %error, "cannot remove old snapshots");
        }
        Ok(())
    }

    /// Runs a restore, writing its progress to the project at most every [`PROGRESS_EVERY`].
    async fn restore_with_progress(
        &self,
        project: &ProjectRecord,
        generation: u64,
    ) -> Result<SnapshotRecord, RuntimeError> {
        let (sender, mut latest) = tokio::sync::watch::channel(None);
        let progress: ProgressFn = Arc::new(move |done, total| {
            sender.send_replace(Some(Progress { bytes_done: done, bytes_total: total }));
        });
        let restore = self.runtime.restore(project, generation, progress);
        tokio::pin!(restore);
        let mut ticker = tokio::time::interval(PROGRESS_EVERY);
        loop {
            tokio::select! {
                result = &mut restore => return result,
                _ = ticker.tick() => if latest.has_changed().unwrap_or(false) {
                    let progress = *latest.borrow_and_update();
                    let update = self.store.update_project(&project.name, |p| {
                        if p.status == ProjectStatus::Restoring {
                            p.progress = progress;
                        }
                    });
                    if let Err(error) = update.await {
                        tracing::debug!(project = %project.name, %error, "progress not recorded");
                    }
                }
            }
        }
    }

    async fn reconcile_database(self: &Arc<Self>, name: &Name) -> Result<(), ReconcileError> {
        let Some(database) = self.store.database(name.as_str()).await? else {
            if let Err(error) = self.runtime.remove_database(name).await {
                tracing::warn!(database = %name, %error, "cannot remove instance");
            }
            return Ok(());
        };
        let result = match database.want {
            Want::Delete => {
                self.set_database(name, |d| d.status = DatabaseStatus::Deleting).await?;
                match self.runtime.remove_database(name).await {
                    Ok(()) => {
                        self.store.delete_database(name).await?;
                        tracing::info!(database = %name, "deleted");
                        return Ok(());
                    }
                    Err(e) => Err(e),
                }
            }
            Want::Reset => self.clone_database(&database).await,
            Want::Run => match database.status {
                DatabaseStatus::Creating => self.clone_database(&database).await,
                DatabaseStatus::Running => self.runtime.ensure_running(&database).await,
                DatabaseStatus::Stopped | DatabaseStatus::Error | DatabaseStatus::Deleting => Ok(()),
            },
        };
        if let Err(error) = result {
            tracing::warn!(database = %name, %error, "database failed");
            self.set_database(name, |d| {
                d.status = DatabaseStatus::Error;
                d.error = Some(error.to_string());
            })
            .await?;
        }
        Ok(())
    }

    /// Clones the project's snapshot for `database` once the project is ready.
    async fn clone_database(self: &Arc<Self>, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let Some(project) = self.store.project(database.project.as_str()).await.ok().flatten() else {
            return Err(RuntimeError::NoSnapshot(database.project.clone()));
        };
        let Some(snapshot) = project.snapshot.clone() else {
            if project.status == ProjectStatus::Failed {
                let why = project.error.unwrap_or_default();
                return Err(RuntimeError::Step { step: "the project's restore", detail: why });
            }
            // Still restoring: the project's reconciler triggers this database when done.
            return Ok(());
        };
        let _ = self
            .set_database(&database.name, |d| {
                d.status = DatabaseStatus::Creating;
                d.error = None;
            })
            .await;
        self.runtime.clone_database(database, &project, snapshot.generation).await?;
        let _ = self
            .set_database(&database.name, |d| {
                d.status = DatabaseStatus::Running;
                // A delete asked for meanwhile stays asked for; a reset is done.
                if d.want == Want::Reset {
                    d.want = Want::Run;
                }
                d.snapshot_generation = Some(snapshot.generation);
            })
            .await;
        tracing::info!(database = %database.name, project = %project.name, "running");
        // Snapshots this clone kept from removal can go now.
        self.trigger(Key::Project(project.name.clone()));
        Ok(())
    }

    async fn set_database(&self, name: &Name, f: impl FnMut(&mut DatabaseRecord) + Send) -> Result<(), StoreError> {
        self.store.update_database(name, f).await.map(drop)
    }
}
