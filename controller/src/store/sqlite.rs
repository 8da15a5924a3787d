//! The local runtime's state: an embedded SQLite database under `--data-dir`.
//!
//! Each project and database is one JSON document keyed by name, with the columns lists filter
//! on beside it. Every write is a transaction.

use std::path::Path;
use std::sync::Mutex;

use devdb_shared::Name;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{DatabaseRecord, ProjectRecord, StoreError};

/// The embedded state database.
pub struct SqliteStore {
    /// rusqlite connections are not `Sync`; every operation is a short critical section.
    conn: Mutex<Connection>,
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
";

/// The directory of the state database inside the data directory: `0700`, so that neither
/// `state.db` nor SQLite's `-wal` and `-shm` files beside it are reachable by anyone else,
/// whatever mode SQLite gives them.
pub const STATE_DIR: &str = "state";

impl SqliteStore {
    /// Opens (creating if needed) the state database of `data_dir`: `state/state.db`, the file
    /// `0600` and its directory `0700` before SQLite writes a byte. A `state.db` of the older
    /// layout (directly in `data_dir`) is moved there first.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] when the database cannot be opened, [`StoreError::Io`] when its
    /// directory cannot be made private.
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
    /// [`StoreError::Sqlite`] when the file cannot be opened.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(dir.join("state.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back), so a poisoned lock is still usable.
        let mut conn = self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut conn)
    }

    /// Adds a project.
    ///
    /// # Errors
    /// [`StoreError::Exists`] when the name is taken.
    pub fn insert_project(&self, p: &ProjectRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(p)?;
        self.with(|c| {
            let inserted = c.execute(
                "INSERT INTO projects (name, id, owner, doc) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![p.name.as_str(), p.id, p.owner, doc],
            )?;
            if inserted == 0 {
                return Err(StoreError::Exists { kind: "project", name: p.name.to_string() });
            }
            Ok(())
        })
    }

    /// A project by name or id.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Corrupt`].
    pub fn project(&self, name_or_id: &str) -> Result<Option<ProjectRecord>, StoreError> {
        self.with(|c| {
            let doc: Option<String> = c
                .query_row("SELECT doc FROM projects WHERE name = ?1 OR id = ?1", [name_or_id], |r| r.get(0))
                .optional()?;
            Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
        })
    }

    /// Projects, optionally of one owner, by name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Corrupt`].
    pub fn projects(&self, owner: Option<&str>) -> Result<Vec<ProjectRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare("SELECT doc FROM projects WHERE ?1 IS NULL OR owner = ?1 ORDER BY name")?;
            let docs = stmt.query_map([owner], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(docs.iter().map(|d| serde_json::from_str(d)).collect::<Result<_, _>>()?)
        })
    }

    /// Changes a project in one transaction and returns the new record.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it does not exist.
    pub fn update_project(&self, name: &Name, f: impl FnMut(&mut ProjectRecord)) -> Result<ProjectRecord, StoreError> {
        self.update("projects", "project", name, f)
    }

    /// Removes a project if it has no databases.
    ///
    /// # Errors
    /// [`StoreError::Exists`] (kind "database") when databases still use it.
    pub fn delete_project(&self, name: &Name) -> Result<(), StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let in_use: Option<String> = tx
                .query_row("SELECT name FROM databases WHERE project = ?1 LIMIT 1", [name.as_str()], |r| r.get(0))
                .optional()?;
            if let Some(database) = in_use {
                return Err(StoreError::Exists { kind: "database", name: database });
            }
            tx.execute("DELETE FROM projects WHERE name = ?1", [name.as_str()])?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Adds a database, checking in the same transaction that its project exists.
    ///
    /// # Errors
    /// [`StoreError::Exists`] when the name is taken, [`StoreError::NotFound`] for the project.
    pub fn insert_database(&self, d: &DatabaseRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(d)?;
        self.with(|c| {
            let tx = c.transaction()?;
            let project: Option<String> = tx
                .query_row("SELECT name FROM projects WHERE name = ?1", [d.project.as_str()], |r| r.get(0))
                .optional()?;
            if project.is_none() {
                return Err(StoreError::NotFound { kind: "project", name: d.project.to_string() });
            }
            let inserted = tx.execute(
                "INSERT INTO databases (name, project, owner, doc) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![d.name.as_str(), d.project.as_str(), d.owner, doc],
            )?;
            if inserted == 0 {
                return Err(StoreError::Exists { kind: "database", name: d.name.to_string() });
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// A database by name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Corrupt`].
    pub fn database(&self, name: &str) -> Result<Option<DatabaseRecord>, StoreError> {
        self.with(|c| {
            let doc: Option<String> =
                c.query_row("SELECT doc FROM databases WHERE name = ?1", [name], |r| r.get(0)).optional()?;
            Ok(doc.map(|d| serde_json::from_str(&d)).transpose()?)
        })
    }

    /// Databases, optionally of one owner and/or project, by name.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`] or [`StoreError::Corrupt`].
    pub fn databases(&self, owner: Option<&str>, project: Option<&str>) -> Result<Vec<DatabaseRecord>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT doc FROM databases WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR project = ?2) ORDER BY name",
            )?;
            let docs =
                stmt.query_map(params![owner, project], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            Ok(docs.iter().map(|d| serde_json::from_str(d)).collect::<Result<_, _>>()?)
        })
    }

    /// Changes a database in one transaction and returns the new record.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it does not exist.
    pub fn update_database(
        &self,
        name: &Name,
        f: impl FnMut(&mut DatabaseRecord),
    ) -> Result<DatabaseRecord, StoreError> {
        self.update("databases", "database", name, f)
    }

    /// Read-modify-write of one document of `table`, in one transaction.
    fn update<T: Serialize + DeserializeOwned>(
        &self,
        table: &'static str,
        kind: &'static str,
        name: &Name,
        mut f: impl FnMut(&mut T),
    ) -> Result<T, StoreError> {
        self.with(|c| {
            let tx = c.transaction()?;
            let doc: Option<String> = tx
                .query_row(&format!("SELECT doc FROM {table} WHERE name = ?1"), [name.as_str()], |r| r.get(0))
                .optional()?;
            let mut record: T =
                serde_json::from_str(&doc.ok_or_else(|| StoreError::NotFound { kind, name: name.to_string() })?)?;
            f(&mut record);
            tx.execute(
                &format!("UPDATE {table} SET doc = ?2 WHERE name = ?1"),
                params![name.as_str(), serde_json::to_string(&record)?],
            )?;
            tx.commit()?;
            Ok(record)
        })
    }

    /// Removes a database record.
    ///
    /// # Errors
    /// [`StoreError::Sqlite`].
    pub fn delete_database(&self, name: &Name) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute("DELETE FROM databases WHERE name = ?1", [name.as_str()])?;
            Ok(())
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::Want;
    use devdb_shared::api::{DatabaseStatus, ProjectStatus};

    fn name(s: &str) -> Name {
        Name::new(s).expect("valid")
    }

    pub(crate) fn project(n: &str, owner: &str) -> ProjectRecord {
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
            wanted_generation: 1,
            username: "app".into(),
            password: "pw".into(),
            database: "app".into(),
            created_at: "now".into(),
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
        }
    }

    #[test]
    fn records_survive_reopening_and_updates_are_transactional() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = SqliteStore::open(dir.path()).expect("open");
            store.insert_project(&project("shop", "kate")).expect("insert");
            store.update_project(&name("shop"), |p| p.status = ProjectStatus::Ready).expect("update");
        }
        let store = SqliteStore::open(dir.path()).expect("reopen");
        let p = store.project("shop").expect("read").expect("present");
        assert_eq!(p.status, ProjectStatus::Ready);
        assert_eq!(store.project("id-shop").expect("read").map(|p| p.name), Some(name("shop")), "by id too");
    }

    #[test]
    fn duplicates_and_missing_parents_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store.insert_project(&project("shop", "kate")).expect("insert");
        assert!(matches!(store.insert_project(&project("shop", "bob")), Err(StoreError::Exists { .. })));
        assert!(matches!(store.insert_database(&database("db", "nope")), Err(StoreError::NotFound { .. })));
        store.insert_database(&database("db", "shop")).expect("insert");
        assert!(matches!(store.insert_database(&database("db", "shop")), Err(StoreError::Exists { .. })));
        assert!(matches!(store.delete_project(&name("shop")), Err(StoreError::Exists { kind: "database", .. })));
        store.delete_database(&name("db")).expect("delete");
        store.delete_project(&name("shop")).expect("now deletable");
        assert!(store.project("shop").expect("read").is_none());
    }

    #[test]
    fn lists_filter_by_owner_and_project() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path()).expect("open");
        store.insert_project(&project("a", "kate")).expect("insert");
        store.insert_project(&project("b", "bob")).expect("insert");
        store.insert_database(&database("x", "a")).expect("insert");
        store.insert_database(&database("y", "b")).expect("insert");
        assert_eq!(store.projects(Some("kate")).expect("list").len(), 1);
        assert_eq!(store.projects(None).expect("list").len(), 2);
        assert_eq!(store.databases(None, Some("b")).expect("list")[0].name, name("y"));
        assert_eq!(store.databases(Some("nobody"), None).expect("list").len(), 0);
    }
}
