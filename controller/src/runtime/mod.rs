//! Where database instances run. One trait, [`Runtime`], with two implementations:
//! [`local::LocalRuntime`] (PostgreSQL processes under `--data-dir`) and
//! [`kubernetes::KubeRuntime`] (namespaces, volume snapshots and StatefulSets); the reconciler
//! above them is the same.

pub mod kubernetes;
pub mod local;

use std::future::Future;
use std::sync::Arc;

use devdb_shared::Name;

use crate::store::{DatabaseRecord, ProjectRecord, SnapshotRecord};
use devdb_restore::RestoreError;

/// Receives restore progress: bytes done and, when known, the total.
pub type ProgressFn = Arc<dyn Fn(u64, Option<u64>) + Send + Sync>;

/// Why a runtime operation failed. Messages are shown to users (project or database `error`).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("project {0} has no ready snapshot to clone")]
    NoSnapshot(Name),
    #[error("the data of database {0} is gone; reset it to clone it again")]
    DataMissing(Name),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl RuntimeError {
    pub(crate) fn step<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> Self {
        move |e| Self::Step { step, detail: e.to_string() }
    }

    pub(crate) fn io(step: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |e| Self::Step { step, detail: e.to_string() }
    }
}

/// The operations the reconciler needs from a place that runs PostgreSQL. Each is idempotent:
/// after a crash the reconciler simply calls it again.
pub trait Runtime: Send + Sync + 'static {
    /// Restores `project`'s dump as snapshot `generation`, reporting progress. Nothing of a
    /// failed restore is left behind.
    fn restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        progress: ProgressFn,
    ) -> impl Future<Output = Result<SnapshotRecord, RuntimeError>> + Send;

    /// Removes whatever a project has in the runtime except snapshot `keep`.
    fn clean_project(&self, project: &Name, keep: Option<u64>)
    -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Makes `database` a fresh clone of `project`'s snapshot `generation`, running with its
    /// port and password (replacing any previous clone: reset).
    fn clone_database(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        generation: u64,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Makes sure an existing clone runs (adopting it when it already does).
    fn ensure_running(&self, database: &DatabaseRecord) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Stops and removes a database's instance and files.
    fn remove_database(&self, name: &Name) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Databases that exist in the runtime, to find orphans left by a crash.
    fn existing_databases(&self) -> impl Future<Output = Result<Vec<Name>, RuntimeError>> + Send;

    /// Projects that have anything in the runtime, likewise.
    fn existing_projects(&self) -> impl Future<Output = Result<Vec<Name>, RuntimeError>> + Send;

    /// The `host:port` the proxy relays a database's sessions to.
    fn backend(&self, database: &DatabaseRecord) -> String;
}
