//! The local runtime's state: an embedded SQLite database in `<data-dir>/state/`.
//!
//! Each project and database is one JSON document keyed by name, with the columns lists filter
//! on beside it. SQLite is blocking, so every operation runs on the blocking thread pool, never
//! on the async threads. An update reads, applies the change on the caller's side, and writes
//! only if the document is still the one it read (else it starts over), so a change is never
//! lost to a concurrent one.

use std::path::Path;
use std::sync::{Arc, Mutex};

use devdb_core::model::{DatabaseRecord, ProjectRecord};
use devdb_core::store::{DatabaseFeed, Databases, Store, StoreError};
use devdb_shared::Name;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// Attempts at an update that keeps meeting concurrent ones.
const ATTEMPTS: usize = 10;

/// The embedded state database.
pub struct SqliteStore {
    /// rusqlite connections are not `Sync`; every operation is a short critical section on a
    /// blocking thread.
    conn: Arc<Mutex<Connection>>,
    /// Changed in the same critical section as the write it publishes, so publications follow
    /// the writes' order.
    feed: Arc<DatabaseFeed>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS databases (
    name TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    owner TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS databases_project ON databases (project);
CREATE TABLE IF NOT EXISTS documents (
    key TEXT PRIMARY KEY,
    doc TEXT NOT NULL
);
";

/// The directory of the state database inside the data directory: `0700`, so that neither
/// `state.db` nor SQLite's `-wal` and `-shm` files beside it are reachable by anyone else,
/// whatever mode SQLite gives them.
pub const STATE_DIR: &str = "state";

fn sqlite(e: rusqlite::Error) -> StoreError {
    StoreError::backend(e)
}

impl SqliteStore {
    /// Opens (creating if needed) the state database of `data_dir`: `state/state.db`, the file
    /// `0600` and its directory `0700` before SQLite writes a byte. A `state.db` of the older
    /// layout (directly in `data_dir`) is moved there first.
    ///
    /// # Errors
    /// When the database cannot be opened or its directory made private.
    pub fn open_private(data_dir: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let dir = data_dir.join(STATE_DIR);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join("state.db");
        if !path.exists() && data_dir.join("state.db").exists() {
            for suffix in ["", "-wal", "-shm"] {
                let old = data_dir.join(format!("state.db{suffix}"));
                if old.exists() {
                    std::fs::rename(&old, dir.join(format!("state.db{suffix}")))?;
                }
            }
        }
        std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&path)?;
        for suffix in ["", "-wal", "-shm"] {
            let file = dir.join(format!("state.db{suffix}"));
            if file.exists() {
                std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
            }
        }
        Self::open(&dir)
    }

    /// Opens (creating if needed) `state.db` in `dir`.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(dir.join("state.db")).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        let store = Self { conn: Arc::new(Mutex::new(conn)), feed: Arc::default() };
        store.feed.publish(store.all_databases_now()?);
        Ok(store)
    }

    /// Every database, read on this thread (at open, before any task runs).
    fn all_databases_now(&self) -> Result<Vec<DatabaseRecord>, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut stmt = conn.prepare("SELECT doc FROM databases ORDER BY name").map_err(sqlite)?;
        let docs = stmt.query_map([], |r| r.get::<_, String>(0)).map_err(sqlite)?;
        docs.map(|d| Ok(serde_json::from_str(&d.map_err(sqlite)?)?)).collect()
    }

    /// Runs `f` on the connection, on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock cannot leave SQLite half-written (transactions
            // roll back), so a poisoned lock is still usable.
            let mut conn = conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::backend(std::io::Error::other(e.to_string())))?
    }

    async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
        key: &str,
    ) -> Result<Option<(T, String)>, StoreError> {
        let key = key.to_string();
        let doc: Option<String> = self
            .with(move |c| {
                let sql = format!("SELECT doc FROM {table} WHERE name = ?1");
                c.query_row(&sql, [key], |r| r.get(0)).optional().map_err(sqlite)
            })
            .await?;
        doc.map(|d| Ok((serde_json::from_str(&d)?, d))).transpose()
    }

    async fn list<T: DeserializeOwned + Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<Option<String>>,
    ) -> Result<Vec<T>, StoreError> {
        let docs = self
            .with(move |c| {
                let mut stmt = c.prepare(sql).map_err(sqlite)?;
                let rows =
                    stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(0)).map_err(sqlite)?;
                rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
            })
            .await?;
        docs.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Read, change, write-if-unchanged, for one document of `table`.
    async fn update<T: Serialize + DeserializeOwned + Send + 'static>(
        &self,
        table: &'static str,
        kind: &'static str,
        name: &Name,
        mut f: impl FnMut(&mut T) + Send,
    ) -> Result<T, StoreError> {
        // A database's write is published with it.
        let feed = (table == "databases").then(|| self.feed.clone());
        for _ in 0..ATTEMPTS {
            let (mut record, before) = self
                .get::<T>(table, name.as_str())
                .await?
                .ok_or_else(|| StoreError::NotFound { kind, name: name.to_string() })?;
            f(&mut record);
            let after = serde_json::to_string(&record)?;
            let (key, feed) = (name.to_string(), feed.clone());
            let written = self
                .with(move |c| {
                    let sql = format!("UPDATE {table} SET doc = ?3 WHERE name = ?1 AND doc = ?2");
                    let written = c.execute(&sql, params![key, before, after]).map_err(sqlite)?;
                    if let Some(feed) = feed.filter(|_| written == 1) {
                        feed.upsert(serde_json::from_str(&after)?);
                    }
                    Ok(written)
                })
                .await?;
            if written == 1 {
                return Ok(record);
            }
        }
        Err(StoreError::Contended { kind, name: name.to_string() })
    }
}

impl Store for SqliteStore {
    async fn insert_project(&self, p: &ProjectRecord) -> Result<ProjectRecord, StoreError> {
        let doc = serde_json::to_string(p)?;
        let (name, id, owner) = (p.name.to_string(), p.id.clone(), p.owner.clone());
        self.with(move |c| {
            let inserted = c
                .execute(
                    "INSERT INTO projects (name, id, owner, doc) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![name, id, owner, doc],
                )
                .map_err(sqlite)?;
            if inserted == 0 {
                return Err(StoreError::Exists { kind: "project", name });
            }
            Ok(())
        })
        .await?;
        Ok(p.clone())
    }

    async fn project(&self, name_or_id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        let key = name_or_id.to_string();
        let doc: Option<String> = self
            .with(move |c| {
                c.query_row("SELECT doc FROM projects WHERE name = ?1 OR id = ?1", [key], |r| r.get(0))
                    .optional()
                    .map_err(sqlite)
            })
            .await?;
        Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
    }

    async fn projects(&self, owner: Option<&str>) -> Result<Vec<ProjectRecord>, StoreError> {
        let sql = "SELECT doc FROM projects WHERE ?1 IS NULL OR owner = ?1 ORDER BY name";
        self.list(sql, vec![owner.map(str::to_owned)]).await
    }

    async fn update_project(
        &self,
        name: &Name,
        f: impl FnMut(&mut ProjectRecord) + Send,
    ) -> Result<ProjectRecord, StoreError> {
        self.update("projects", "project", name, f).await
    }

    async fn delete_project(&self, name: &Name) -> Result<(), StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(sqlite)?;
            let in_use: Option<String> = tx
                .query_row("SELECT name FROM databases WHERE project = ?1 LIMIT 1", [&name], |r| r.get(0))
                .optional()
                .map_err(sqlite)?;
            if let Some(database) = in_use {
                return Err(StoreError::Exists { kind: "database", name: database });
            }
            tx.execute("DELETE FROM projects WHERE name = ?1", [&name]).map_err(sqlite)?;
            tx.commit().map_err(sqlite)
        })
        .await
    }

    async fn project_cleaned(&self, _name: &Name) -> Result<(), StoreError> {
        // The row went with the delete.
        Ok(())
    }

    async fn insert_database(&self, d: &DatabaseRecord) -> Result<DatabaseRecord, StoreError> {
        let doc = serde_json::to_string(d)?;
        let (name, project, owner) = (d.name.to_string(), d.project.to_string(), d.owner.clone());
        let (record, feed) = (d.clone(), self.feed.clone());
        self.with(move |c| {
            let tx = c.transaction().map_err(sqlite)?;
            let exists: Option<String> = tx
                .query_row("SELECT name FROM projects WHERE name = ?1", [&project], |r| r.get(0))
                .optional()
                .map_err(sqlite)?;
            if exists.is_none() {
                return Err(StoreError::NotFound { kind: "project", name: project });
            }
            let inserted = tx
                .execute(
                    "INSERT INTO databases (name, project, owner, doc) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                    params![name, project, owner, doc],
                )
                .map_err(sqlite)?;
            if inserted == 0 {
                return Err(StoreError::Exists { kind: "database", name });
            }
            tx.commit().map_err(sqlite)?;
            feed.upsert(record);
            Ok(())
        })
        .await?;
        Ok(d.clone())
    }

    async fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, StoreError> {
        Ok(self.get("databases", name).await?.map(|(record, _)| record))
    }

    async fn databases(&self, owner: Option<&str>, project: Option<&str>) -> Result<Vec<DatabaseRecord>, StoreError> {
        // The published list is the table's content (each write changes both in one critical
        // section): no read, no parse of every record.
        let all = self.feed.subscribe().borrow().clone();
        Ok(all
            .iter()
            .filter(|d| owner.is_none_or(|o| d.owner == o) && project.is_none_or(|p| d.project.as_str() == p))
            .cloned()
            .collect())
    }

    async fn update_database(
        &self,
        name: &Name,
        f: impl FnMut(&mut DatabaseRecord) + Send,
    ) -> Result<DatabaseRecord, StoreError> {
        self.update("databases", "database", name, f).await
    }

    async fn delete_database(&self, name: &Name) -> Result<(), StoreError> {
        let (name, feed) = (name.clone(), self.feed.clone());
        self.with(move |c| {
            c.execute("DELETE FROM databases WHERE name = ?1", [name.as_str()]).map_err(sqlite)?;
            feed.remove(&name);
            Ok(())
        })
        .await
    }

    fn watch_databases(&self) -> watch::Receiver<Databases> {
        self.feed.subscribe()
    }

    async fn document(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.with(move |c| {
            c.query_row("SELECT doc FROM documents WHERE key = ?1", [key], |r| r.get(0)).optional().map_err(sqlite)
        })
        .await
    }

    async fn put_document(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO documents (key, doc) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET doc = excluded.doc",
                [key, value],
            )
            .map(drop)
            .map_err(sqlite)
        })
        .await
    }

    async fn documents(&self, prefix: &str) -> Result<Vec<(String, String)>, StoreError> {
        // Keys are `[a-z0-9-]` segments joined by `/`: those under `prefix/` sort between it
        // and `prefix0` (`0` follows `/`).
        let (from, to) = (format!("{prefix}/"), format!("{prefix}0"));
        self.with(move |c| {
            let mut query = c
                .prepare("SELECT key, doc FROM documents WHERE key >= ?1 AND key < ?2 ORDER BY key")
                .map_err(sqlite)?;
            let rows = query.query_map([&from, &to], |r| Ok((r.get(0)?, r.get(1)?))).map_err(sqlite)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(sqlite)
        })
        .await
    }

    async fn delete_document(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.with(move |c| c.execute("DELETE FROM documents WHERE key = ?1", [key]).map(drop).map_err(sqlite)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_core::model::Want;
    use devdb_shared::api::{DatabaseStatus, ProjectStatus};

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    fn project(n: &str, owner: &str) -> ProjectRecord {
        ProjectRecord {
            id: format!("id-{n}"),
            name: name(n),
            owner: owner.into(),
            db_version: "15".into(),
            backup_location: Some("file:///dump".into()),
            allow_private_source: false,
            status: ProjectStatus::Pending,
            error: None,
            progress: None,
            snapshot: None,
            kept_snapshots: Vec::new(),
            wanted_generation: 1,
            username: "app".into(),
            password: "pw".into(),
            database: "app".into(),
            created_at: "now".into(),
            idle_stop_after_secs: None,
            default_ttl_secs: None,
            masking: devdb_shared::api::Masking::default(),
            mask_key: String::new(),
            restores_begun: 0,
            backup: None,
        }
    }

    fn database(n: &str, p: &str) -> DatabaseRecord {
        DatabaseRecord {
            id: format!("id-{n}"),
            name: name(n),
            project: name(p),
            owner: "kate".into(),
            status: DatabaseStatus::Creating,
            want: Want::Run,
            port: 5500,
            password: "pw".into(),
            snapshot_generation: None,
            error: None,
            created_at: "now".into(),
            lifecycle: devdb_core::model::Lifecycle::default(),
            settings: devdb_core::model::Settings::default(),
            backup: None,
            restore_from: None,
            restoring: None,
            before_restore: None,
        }
    }

    #[tokio::test]
    async fn records_survive_reopening_and_updates_are_transactional() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            store.insert_project(&project("shop", "kate")).await.expect("insert");
            store.update_project(&name("shop"), |p| p.status = ProjectStatus::Ready).await.expect("update");
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let p = store.project("shop").await.expect("read").expect("present");
        assert_eq!(p.status, ProjectStatus::Ready);
        assert_eq!(store.project("id-shop").await.expect("read").map(|p| p.name), Some(name("shop")), "by id too");
    }

    #[tokio::test]
    async fn documents_are_replaced_whole_survive_reopening_and_can_be_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            store.put_document("history/a", "[1]").await.expect("put");
            store.put_document("history/a", "[1,2]").await.expect("replace");
            store.put_document("usage/2026-12-01", "{}").await.expect("put");
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(store.document("history/a").await.expect("read").as_deref(), Some("[1,2]"));
        store.delete_document("history/a").await.expect("delete");
        store.delete_document("history/a").await.expect("deleting again is fine");
        assert_eq!(store.document("history/a").await.expect("read"), None);
        assert_eq!(store.document("usage/2026-12-01").await.expect("read").as_deref(), Some("{}"));
    }

    #[tokio::test]
    async fn duplicates_and_missing_parents_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store.insert_project(&project("shop", "kate")).await.expect("insert");
        assert!(matches!(store.insert_project(&project("shop", "bob")).await, Err(StoreError::Exists { .. })));
        assert!(matches!(store.insert_database(&database("db", "nope")).await, Err(StoreError::NotFound { .. })));
        store.insert_database(&database("db", "shop")).await.expect("insert");
        assert!(matches!(store.insert_database(&database("db", "shop")).await, Err(StoreError::Exists { .. })));
        assert!(matches!(store.delete_project(&name("shop")).await, Err(StoreError::Exists { kind: "database", .. })));
        store.delete_database(&name("db")).await.expect("delete");
        store.delete_project(&name("shop")).await.expect("now deletable");
        assert!(store.project("shop").await.expect("read").is_none());
    }

    #[tokio::test]
    async fn lists_filter_by_owner_and_project() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store.insert_project(&project("a", "kate")).await.expect("insert");
        store.insert_project(&project("b", "bob")).await.expect("insert");
        store.insert_database(&database("x", "a")).await.expect("insert");
        store.insert_database(&database("y", "b")).await.expect("insert");
        assert_eq!(store.projects(Some("kate")).await.expect("list").len(), 1);
        assert_eq!(store.projects(None).await.expect("list").len(), 2);
        assert_eq!(store.databases(None, Some("b")).await.expect("list")[0].name, name("y"));
        assert_eq!(store.databases(Some("nobody"), None).await.expect("list").len(), 0);
    }

    #[tokio::test]
    async fn every_write_publishes_what_a_fresh_read_would_in_name_order_even_when_writes_race() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
        store.insert_project(&project("shop", "kate")).await.expect("insert");
        for n in ["m", "c", "x", "a"] {
            store.insert_database(&database(n, "shop")).await.expect("insert");
        }
        // Writes of one record racing each other: the last published is the last written.
        let mut writes = tokio::task::JoinSet::new();
        for port in 6000..6032 {
            let store = store.clone();
            // One that kept losing gives up (Contended): it wrote nothing, so published nothing.
            writes.spawn(async move {
                match store.update_database(&name("c"), |d| d.port = port).await {
                    Ok(_) | Err(StoreError::Contended { .. }) => {}
                    Err(error) => panic!("{error}"),
                }
            });
        }
        writes.join_all().await;
        store.delete_database(&name("x")).await.expect("delete");
        let published = store.watch_databases().borrow().clone();
        let read = store.databases(None, None).await.expect("list");
        assert_eq!(*published, read);
        let names: Vec<&str> = published.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "m"]);
        let reopened = SqliteStore::open(dir.path()).expect("reopen");
        assert_eq!(*reopened.watch_databases().borrow().clone(), read);
    }
}
