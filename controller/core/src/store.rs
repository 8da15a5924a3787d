//! The state behind the API and the reconciler: the [`Store`] trait, which only persists. Each
//! runtime adapter has its own (SQLite for the local runtime, custom resources on Kubernetes),
//! and `memory::MemoryStore` (a test double) is the reference implementation the core is tested
//! with.
//!
//! Every write is atomic, so a controller killed at any point restarts from a consistent state
//! and the reconciler finishes what the records say is in flight. Every store also publishes
//! its databases after each change ([`Store::watch_databases`]): the routing table and
//! `?wait=true` follow that, in every adapter, without reading the store again.

use std::future::Future;
use std::sync::Arc;

use devdb_shared::Name;
use tokio::sync::watch;

use crate::model::{DatabaseRecord, ProjectRecord};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("{kind} {name:?} kept changing while it was updated; try again")]
    Contended { kind: &'static str, name: String },
    #[error("invalid resource: {0}")]
    Invalid(String),
    #[error("the state store: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    #[error("the state directory: {0}")]
    Io(#[from] std::io::Error),
}

impl StoreError {
    /// A failure of the store's backend (the database file, the cluster API).
    pub fn backend(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend(Box::new(error))
    }
}

/// Persists projects and databases.
pub trait Store: Send + Sync + 'static {
    /// Adds a project and returns it as stored (a backend may assign its id and password).
    ///
    /// [`StoreError::Exists`] when the name is taken.
    fn insert_project(&self, p: &ProjectRecord) -> impl Future<Output = Result<ProjectRecord, StoreError>> + Send;

    /// A project by name or id. Projects being deleted are gone already.
    fn project(&self, name_or_id: &str) -> impl Future<Output = Result<Option<ProjectRecord>, StoreError>> + Send;

    /// Projects, optionally of one owner, by name.
    fn projects(&self, owner: Option<&str>) -> impl Future<Output = Result<Vec<ProjectRecord>, StoreError>> + Send;

    /// Changes a project atomically and returns the new record. `f` may run more than once when
    /// the backend retries a contended write. [`StoreError::NotFound`] when it does not exist.
    fn update_project(
        &self,
        name: &Name,
        f: impl FnMut(&mut ProjectRecord) + Send,
    ) -> impl Future<Output = Result<ProjectRecord, StoreError>> + Send;

    /// Deletes a project if it has no databases (else [`StoreError::Exists`] of kind
    /// "database"); the reconciler then removes what it had.
    fn delete_project(&self, name: &Name) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// After the runtime removed everything a deleted project had: forget it for good.
    fn project_cleaned(&self, name: &Name) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds a database (its project must exist: else [`StoreError::NotFound`]) and returns it
    /// as stored.
    fn insert_database(&self, d: &DatabaseRecord) -> impl Future<Output = Result<DatabaseRecord, StoreError>> + Send;

    /// A database by name.
    fn database(&self, name: &str) -> impl Future<Output = Result<Option<DatabaseRecord>, StoreError>> + Send;

    /// Databases, optionally of one owner and/or project, by name.
    fn databases(
        &self,
        owner: Option<&str>,
        project: Option<&str>,
    ) -> impl Future<Output = Result<Vec<DatabaseRecord>, StoreError>> + Send;

    /// Changes a database atomically and returns the new record (`f` may run more than once).
    /// Setting `want` to [`crate::model::Want::Delete`] starts its deletion.
    fn update_database(
        &self,
        name: &Name,
        f: impl FnMut(&mut DatabaseRecord) + Send,
    ) -> impl Future<Output = Result<DatabaseRecord, StoreError>> + Send;

    /// Forgets a database whose instance the runtime has removed.
    fn delete_database(&self, name: &Name) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every database, published again after each change to any of them.
    fn watch_databases(&self) -> watch::Receiver<Databases>;

    /// A document kept by [`Store::put_document`]: the controller's own bookkeeping beside the
    /// records (each database's monitoring history, the usage ledger's days), JSON of at most a
    /// few hundred KiB. Keys are `[a-z0-9-]` segments joined by `/`.
    fn document(&self, key: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Writes a document whole (the last writer wins; only the leading controller writes).
    fn put_document(&self, key: &str, value: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Every document under `prefix` (its keys' first segment), with its key.
    fn documents(&self, prefix: &str) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// Forgets a document (absent already is fine).
    fn delete_document(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// All databases, as [`Store::watch_databases`] publishes them.
pub type Databases = Arc<Vec<DatabaseRecord>>;

/// The publishing half of [`Store::watch_databases`], for store implementations.
#[derive(Debug)]
pub struct DatabaseFeed(watch::Sender<Databases>);

impl Default for DatabaseFeed {
    fn default() -> Self {
        Self(watch::channel(Databases::default()).0)
    }
}

impl DatabaseFeed {
    /// The databases now.
    pub fn publish(&self, databases: Vec<DatabaseRecord>) {
        self.0.send_replace(Arc::new(databases));
    }

    /// Publishes the databases with `record` added or replaced (by name), keeping their order
    /// by name: a write of one database does not read all of them again.
    pub fn upsert(&self, record: DatabaseRecord) {
        self.0.send_modify(|all| {
            let mut list = all.as_ref().clone();
            match list.binary_search_by(|d| d.name.cmp(&record.name)) {
                Ok(at) => list[at] = record,
                Err(at) => list.insert(at, record),
            }
            *all = Arc::new(list);
        });
    }

    /// Publishes the databases without `name`.
    pub fn remove(&self, name: &Name) {
        self.0.send_modify(|all| {
            if all.iter().any(|d| &d.name == name) {
                *all = Arc::new(all.iter().filter(|d| &d.name != name).cloned().collect());
            }
        });
    }

    /// A receiver for [`Store::watch_databases`].
    pub fn subscribe(&self) -> watch::Receiver<Databases> {
        self.0.subscribe()
    }
}
