//! An in-memory [`Store`]: the reference implementation of the store's contract, and the store
//! the core's own tests run on (the router and the reconciler, in-process, in milliseconds).

use std::collections::BTreeMap;
use std::sync::Mutex;

use devdb_shared::Name;
use tokio::sync::watch;

use crate::model::{DatabaseRecord, ProjectRecord};
use crate::store::{DatabaseFeed, Databases, Store, StoreError};

#[derive(Default)]
struct Records {
    projects: BTreeMap<Name, ProjectRecord>,
    databases: BTreeMap<Name, DatabaseRecord>,
    documents: BTreeMap<String, String>,
    /// Writes of documents whose key starts with each first segment (`history`, `usage`…).
    document_writes: BTreeMap<String, u64>,
    /// Document writes refuse while set (a store that cannot be written).
    refuse_document_writes: bool,
}

/// Projects and databases in memory; lost with the process.
#[derive(Default)]
pub struct MemoryStore {
    /// Held only to read or change the maps, never across an await.
    records: Mutex<Records>,
    feed: DatabaseFeed,
}

impl MemoryStore {
    /// How many times documents of `kind` (a key's first segment, as `history`) were written.
    pub fn document_writes(&self, kind: &str) -> u64 {
        self.with(|r| r.document_writes.get(kind).copied().unwrap_or_default())
    }

    /// Makes document writes fail (`true`) or succeed again.
    pub fn refuse_document_writes(&self, refuse: bool) {
        self.with(|r| r.refuse_document_writes = refuse);
    }

    fn with<T>(&self, f: impl FnOnce(&mut Records) -> T) -> T {
        f(&mut self.records.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Publishes the databases after a change.
    fn changed(&self) {
        self.feed.publish(self.with(|r| r.databases.values().cloned().collect()));
    }
}

impl Store for MemoryStore {
    async fn insert_project(&self, p: &ProjectRecord) -> Result<ProjectRecord, StoreError> {
        self.with(|r| {
            if r.projects.contains_key(&p.name) {
                return Err(StoreError::Exists { kind: "project", name: p.name.to_string() });
            }
            r.projects.insert(p.name.clone(), p.clone());
            Ok(p.clone())
        })
    }

    async fn project(&self, name_or_id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        Ok(self.with(|r| r.projects.values().find(|p| p.name.as_str() == name_or_id || p.id == name_or_id).cloned()))
    }

    async fn projects(&self, owner: Option<&str>) -> Result<Vec<ProjectRecord>, StoreError> {
        let projects =
            self.with(|r| r.projects.values().filter(|p| owner.is_none_or(|o| p.owner == o)).cloned().collect());
        // Other tasks run before the answer arrives, as with a real store, so what was read may
        // be stale by then: races between requests show in tests.
        tokio::task::yield_now().await;
        Ok(projects)
    }

    async fn update_project(
        &self,
        name: &Name,
        mut f: impl FnMut(&mut ProjectRecord) + Send,
    ) -> Result<ProjectRecord, StoreError> {
        self.with(|r| {
            let p = r
                .projects
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound { kind: "project", name: name.to_string() })?;
            f(p);
            Ok(p.clone())
        })
    }

    async fn delete_project(&self, name: &Name) -> Result<(), StoreError> {
        self.with(|r| {
            if let Some(d) = r.databases.values().find(|d| &d.project == name) {
                return Err(StoreError::Exists { kind: "database", name: d.name.to_string() });
            }
            r.projects.remove(name);
            Ok(())
        })
    }

    async fn project_cleaned(&self, _name: &Name) -> Result<(), StoreError> {
        Ok(())
    }

    async fn insert_database(&self, d: &DatabaseRecord) -> Result<DatabaseRecord, StoreError> {
        self.with(|r| {
            if !r.projects.contains_key(&d.project) {
                return Err(StoreError::NotFound { kind: "project", name: d.project.to_string() });
            }
            if r.databases.contains_key(&d.name) {
                return Err(StoreError::Exists { kind: "database", name: d.name.to_string() });
            }
            r.databases.insert(d.name.clone(), d.clone());
            Ok(d.clone())
        })
        .inspect(|_| self.changed())
    }

    async fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, StoreError> {
        Ok(self.with(|r| r.databases.values().find(|d| d.name.as_str() == name).cloned()))
    }

    async fn databases(&self, owner: Option<&str>, project: Option<&str>) -> Result<Vec<DatabaseRecord>, StoreError> {
        let databases = self.with(|r| {
            r.databases
                .values()
                .filter(|d| owner.is_none_or(|o| d.owner == o) && project.is_none_or(|p| d.project.as_str() == p))
                .cloned()
                .collect()
        });
        tokio::task::yield_now().await;
        Ok(databases)
    }

    async fn update_database(
        &self,
        name: &Name,
        mut f: impl FnMut(&mut DatabaseRecord) + Send,
    ) -> Result<DatabaseRecord, StoreError> {
        self.with(|r| {
            let d = r
                .databases
                .get_mut(name)
                .ok_or_else(|| StoreError::NotFound { kind: "database", name: name.to_string() })?;
            f(d);
            Ok(d.clone())
        })
        .inspect(|_| self.changed())
    }

    async fn delete_database(&self, name: &Name) -> Result<(), StoreError> {
        self.with(|r| r.databases.remove(name));
        self.changed();
        Ok(())
    }

    fn watch_databases(&self) -> watch::Receiver<Databases> {
        self.feed.subscribe()
    }

    async fn document(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|r| r.documents.get(key).cloned()))
    }

    async fn put_document(&self, key: &str, value: &str) -> Result<(), StoreError> {
        if self.with(|r| r.refuse_document_writes) {
            return Err(StoreError::Backend("document writes refused (a test's failure)".into()));
        }
        self.with(|r| {
            let kind = key.split('/').next().unwrap_or_default().to_string();
            *r.document_writes.entry(kind).or_default() += 1;
            r.documents.insert(key.to_string(), value.to_string())
        });
        Ok(())
    }

    async fn documents(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        let under = format!("{prefix}/");
        Ok(self.with(|r| {
            r.documents
                .range(under.clone()..)
                .take_while(|(k, _)| k.starts_with(&under))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }))
    }

    async fn delete_document(&self, key: &str) -> Result<(), StoreError> {
        self.with(|r| r.documents.remove(key));
        Ok(())
    }
}
