//! The controller's state: projects and databases as records, kept by one of two backends
//! behind [`Store`]:
//! - [`sqlite`]: an embedded SQLite database under `--data-dir` (local runtime);
//! - [`crd`]: the custom resources `Project` and `Database` in the cluster (kube runtime), so
//!   state survives the controller and is visible with kubectl.
//!
//! Handlers and the reconciler only see [`Store`]. Every write is atomic in both backends, so a
//! controller killed at any point restarts from a consistent state and the reconciler finishes
//! what the records say is in flight.

pub mod crd;
pub mod sqlite;

use std::sync::Arc;

use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, Progress, ProjectStatus};
use serde::{Deserialize, Serialize};

use crate::routes::RouteFeed;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name:?} already exists")]
    Exists { kind: &'static str, name: String },
    #[error("{kind} {name:?} does not exist")]
    NotFound { kind: &'static str, name: String },
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("{kind} {name:?} kept changing while it was updated; try again")]
    Contended { kind: &'static str, name: String },
    #[error("invalid resource: {0}")]
    Invalid(String),
    #[error("state directory: {0}")]
    Io(#[from] std::io::Error),
}

/// A project as the controller keeps it (the API view is derived from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub id: String,
    pub name: Name,
    pub owner: String,
    pub db_version: String,
    /// `None`: databases start empty.
    pub backup_location: Option<String>,
    /// Whether the source may be fetched from private addresses: decided when the project is
    /// created (by an admin, or with `--allow-private-sources`), used by every restore.
    #[serde(default)]
    pub allow_private_source: bool,
    pub status: ProjectStatus,
    pub error: Option<String>,
    pub progress: Option<Progress>,
    /// The ready snapshot new databases are cloned from.
    pub snapshot: Option<SnapshotRecord>,
    /// The snapshot generation wanted: bumped by refresh; a restore runs while it is ahead of
    /// `snapshot`'s.
    pub wanted_generation: u64,
    pub username: String,
    pub password: String,
    pub database: String,
    pub created_at: String,
}

/// One restored snapshot of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub generation: u64,
    pub created_at: String,
    pub size_bytes: u64,
}

/// What should become of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    /// Exist and run.
    Run,
    /// Be cloned again from the project's snapshot, keeping name and credentials.
    Reset,
    /// Be stopped and removed.
    Delete,
}

/// A database as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// Unique per incarnation: a database deleted and created again gets a new one.
    #[serde(default)]
    pub id: String,
    pub name: Name,
    pub project: Name,
    pub owner: String,
    pub status: DatabaseStatus,
    pub want: Want,
    /// Where the instance listens (loopback in local mode, 5432 in its pod on Kubernetes).
    pub port: u16,
    pub password: String,
    /// The project snapshot generation this clone was made from.
    pub snapshot_generation: Option<u64>,
    pub error: Option<String>,
    pub created_at: String,
}

/// Where a database's sessions are relayed to (`host:port`), as the runtime decides.
pub type BackendFn = Arc<dyn Fn(&DatabaseRecord) -> String + Send + Sync>;

/// The state, in whichever backend the runtime uses.
pub enum Store {
    /// Local runtime: every database write republishes the routing table at once, so a
    /// database reported `running` is already routable.
    Sqlite { db: sqlite::SqliteStore, routes: RouteFeed, backend: BackendFn },
    /// Kube runtime: routes follow the `Database` resources through a watch
    /// ([`crd::CrdStore::publish_routes`]), on every controller replica.
    Kube(Box<crd::CrdStore>),
}

impl Store {
    /// The local store, publishing its databases' routes to `routes` now and after each change.
    ///
    /// # Errors
    /// When the database cannot be read.
    pub fn local(db: sqlite::SqliteStore, routes: RouteFeed, backend: BackendFn) -> Result<Self, StoreError> {
        let store = Self::Sqlite { db, routes, backend };
        store.publish()?;
        Ok(store)
    }

    fn publish(&self) -> Result<(), StoreError> {
        if let Self::Sqlite { db, routes, backend } = self {
            routes.publish(&db.databases(None, None)?, |d| backend(d));
        }
        Ok(())
    }

    /// Adds a project and returns it as stored (a backend may assign its id and password).
    ///
    /// # Errors
    /// [`StoreError::Exists`] when the name is taken.
    pub async fn insert_project(&self, p: &ProjectRecord) -> Result<ProjectRecord, StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.insert_project(p).map(|()| p.clone()),
            Self::Kube(k) => k.insert_project(p).await,
        }
    }

    /// A project by name or id. Projects being deleted are gone already.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn project(&self, name_or_id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.project(name_or_id),
            Self::Kube(k) => k.project(name_or_id).await,
        }
    }

    /// Projects, optionally of one owner, by name.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn projects(&self, owner: Option<&str>) -> Result<Vec<ProjectRecord>, StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.projects(owner),
            Self::Kube(k) => k.projects(owner).await,
        }
    }

    /// Changes a project atomically and returns the new record. `f` may run more than once
    /// when the backend retries a contended write.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it does not exist.
    pub async fn update_project(
        &self,
        name: &Name,
        f: impl FnMut(&mut ProjectRecord) + Send,
    ) -> Result<ProjectRecord, StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.update_project(name, f),
            Self::Kube(k) => k.update_project(name, f).await,
        }
    }

    /// Deletes a project if it has no databases; the reconciler then removes what it had.
    ///
    /// # Errors
    /// [`StoreError::Exists`] (kind "database") when databases still use it.
    pub async fn delete_project(&self, name: &Name) -> Result<(), StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.delete_project(name),
            Self::Kube(k) => k.delete_project(name).await,
        }
    }

    /// After the runtime removed everything a deleted project had: forget it for good.
    ///
    /// # Errors
    /// When the backend cannot be written.
    pub async fn project_cleaned(&self, name: &Name) -> Result<(), StoreError> {
        match self {
            // The row went with the delete.
            Self::Sqlite { .. } => Ok(()),
            Self::Kube(k) => k.project_cleaned(name).await,
        }
    }

    /// Adds a database (its project must exist) and returns it as stored.
    ///
    /// # Errors
    /// [`StoreError::Exists`] when the name is taken, [`StoreError::NotFound`] for the project.
    pub async fn insert_database(&self, d: &DatabaseRecord) -> Result<DatabaseRecord, StoreError> {
        let stored = match self {
            Self::Sqlite { db, .. } => db.insert_database(d).map(|()| d.clone())?,
            Self::Kube(k) => k.insert_database(d).await?,
        };
        self.publish()?;
        Ok(stored)
    }

    /// A database by name.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.database(name),
            Self::Kube(k) => k.database(name).await,
        }
    }

    /// Databases, optionally of one owner and/or project, by name.
    ///
    /// # Errors
    /// When the backend cannot be read.
    pub async fn databases(
        &self,
        owner: Option<&str>,
        project: Option<&str>,
    ) -> Result<Vec<DatabaseRecord>, StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.databases(owner, project),
            Self::Kube(k) => k.databases(owner, project).await,
        }
    }

    /// Changes a database atomically and returns the new record (`f` may run more than once).
    /// Setting `want` to [`Want::Delete`] starts its deletion.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it does not exist.
    pub async fn update_database(
        &self,
        name: &Name,
        f: impl FnMut(&mut DatabaseRecord) + Send,
    ) -> Result<DatabaseRecord, StoreError> {
        let updated = match self {
            Self::Sqlite { db, .. } => db.update_database(name, f)?,
            Self::Kube(k) => k.update_database(name, f).await?,
        };
        self.publish()?;
        Ok(updated)
    }

    /// Forgets a database whose instance the runtime has removed.
    ///
    /// # Errors
    /// When the backend cannot be written.
    pub async fn delete_database(&self, name: &Name) -> Result<(), StoreError> {
        match self {
            Self::Sqlite { db, .. } => db.delete_database(name)?,
            Self::Kube(k) => k.delete_database(name).await?,
        }
        self.publish()
    }
}
