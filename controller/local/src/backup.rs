//! Backups of the local runtime's databases (`backup: true`) through [`devdb_backup`]: the
//! repository `--backup-repo` names (a directory, `<data dir>/backups` by default, or S3; see
//! [`crate::repository`]), a stanza per clone of each database, and a key per stanza derived
//! from this data directory's backup secret (`backup/secret`, made once, private to the
//! controller).
//!
//! A clone's WAL starts again from its snapshot's, so a reset cannot go on archiving into the
//! stanza of the clone before it: each clone (and each restore in place) gets a stanza of its
//! own, listed oldest first in `backup/stanzas/<database>`, each named with the second it
//! began. The stanzas of earlier clones stay in the repository, so a moment before a reset or
//! a restore is restored from the stanza that was current then: each stanza's history is a
//! straight line (no timelines to choose between).

use std::path::{Path, PathBuf};

use devdb_backup::{PgBackRest, Repository, Stanza};
use devdb_core::model::DatabaseRecord;
use devdb_core::runtime::RuntimeError;
use devdb_pgctl::RunAs;

/// The superuser of local instances, which pgBackRest connects as over their socket.
const SUPERUSER: &str = "postgres";

/// How many full backups each stanza keeps when its database's backups name no retention.
const RETENTION_FULL: u32 = 2;

/// The full backups `database`'s stanza keeps: those of its retention's days, else the newest
/// [`RETENTION_FULL`].
fn retention(database: &DatabaseRecord) -> devdb_backup::Retention {
    match database.backup.as_ref().and_then(devdb_core::backup_settings::kept_days) {
        Some(days) => devdb_backup::Retention::Days(days),
        None => devdb_backup::Retention::Full(RETENTION_FULL),
    }
}

/// The backups of one data directory.
#[derive(Debug, Clone)]
pub struct LocalBackups {
    root: PathBuf,
    /// Where every stanza's backups and WAL go.
    repository: Repository,
    run_as: Option<RunAs>,
    /// Held by whatever backs up or restores a database, one at a time per database (a
    /// scheduled backup and a restore in place would otherwise take the same stanza's lock, or
    /// end each other's sessions).
    busy: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>>,
}

impl LocalBackups {
    /// Backups into `repository`, their secret and stanzas' files under `root` (`<data
    /// dir>/backup`), run as `run_as`.
    pub fn new(root: PathBuf, repository: Repository, run_as: Option<RunAs>) -> Self {
        Self { root, repository, run_as, busy: std::sync::Arc::default() }
    }

    /// The same, into `repository`.
    #[must_use]
    pub fn with_repository(self, repository: Repository) -> Self {
        Self { repository, ..self }
    }

    /// Waits until nothing else backs up or restores `database`, and holds it so until dropped.
    pub async fn exclusive(&self, database: &DatabaseRecord) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut busy = self.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            busy.entry(database.id.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Where every stanza's backups and WAL go.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    /// Makes `secret` this data directory's backup secret (a new installation taking over
    /// another's repository): fails with [`std::io::ErrorKind::AlreadyExists`] when it has
    /// another already.
    ///
    /// # Errors
    /// When it cannot be written, or another is there.
    pub fn install_secret(&self, secret: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.root.join("secret");
        match std::fs::read(&path) {
            Ok(existing) if existing == secret => return Ok(()),
            Ok(existing) if !existing.is_empty() => return Err(std::io::ErrorKind::AlreadyExists.into()),
            Ok(_) => std::fs::remove_file(&path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&self.root)?;
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        std::io::Write::write_all(&mut file, secret)
    }

    /// This data directory's backup secret, made on first use.
    ///
    /// # Errors
    /// When it cannot be read or made.
    pub fn secret(&self) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let path = self.root.join("secret");
        match std::fs::read(&path) {
            Ok(secret) if !secret.is_empty() => return Ok(secret),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&self.root)?;
        let secret = format!("{}{}", devdb_core::auth::generate_password(), devdb_core::auth::generate_password());
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
        std::io::Write::write_all(&mut file, secret.as_bytes())?;
        Ok(secret.into_bytes())
    }

    fn stanza_file(&self, database: &DatabaseRecord) -> PathBuf {
        self.root.join("stanzas").join(database.name.as_str())
    }

    /// Gives `database`'s new clone a stanza of its own (at each clone, before it starts).
    ///
    /// # Errors
    /// When its name cannot be written.
    pub fn new_stanza(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        use std::io::Write as _;
        let base = stanza_base(database);
        let since = devdb_core::clock::unix(std::time::SystemTime::now());
        let file = self.stanza_file(database);
        std::fs::create_dir_all(file.parent().unwrap_or(&self.root))
            .map_err(RuntimeError::io("naming the clone's backups"))?;
        let mut list = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(file)
            .map_err(RuntimeError::io("naming the clone's backups"))?;
        writeln!(list, "{base}-{since}").map_err(RuntimeError::io("naming the clone's backups"))
    }

    /// The names of `database`'s stanzas, oldest first (none listed: none). Only this
    /// incarnation's: a database deleted and made again under its name (perhaps by another
    /// owner) finds the list its predecessor left, whose stanzas begin with another id.
    pub fn stanza_names(&self, database: &DatabaseRecord) -> Vec<String> {
        let list = std::fs::read_to_string(self.stanza_file(database)).unwrap_or_default();
        let own = format!("{}-", stanza_base(database));
        list.lines().map(str::trim).filter(|l| l.starts_with(&own)).map(String::from).collect()
    }

    /// Lists `stanzas` (oldest first) as `database`'s, as another installation named them.
    ///
    /// # Errors
    /// When one is not a stanza's name, or the list cannot be written.
    pub fn adopt_stanzas(&self, database: &DatabaseRecord, stanzas: &[String]) -> Result<(), RuntimeError> {
        if let Some(bad) = stanzas.iter().find(|s| !devdb_backup::config::valid_stanza_name(s)) {
            return Err(RuntimeError::Step { step: "naming the database's backups", detail: format!("{bad:?}") });
        }
        let file = self.stanza_file(database);
        std::fs::create_dir_all(file.parent().unwrap_or(&self.root))
            .and_then(|()| std::fs::write(&file, stanzas.iter().map(|s| format!("{s}\n")).collect::<String>()))
            .map_err(RuntimeError::io("naming the database's backups"))
    }

    /// `database`'s stanzas, oldest first, with the second each began; a clone made before its
    /// backups were on gets its first now.
    fn stanzas(&self, database: &DatabaseRecord) -> Result<Vec<(String, i64)>, RuntimeError> {
        let mut names = self.stanza_names(database);
        if names.is_empty() {
            self.new_stanza(database)?;
            names = self.stanza_names(database);
        }
        names
            .iter()
            .map(|name| {
                let since = name.rsplit('-').next().and_then(|s| s.parse().ok());
                match since {
                    Some(since) if devdb_backup::config::valid_stanza_name(name) => Ok((name.to_string(), since)),
                    _ => Err(RuntimeError::Step {
                        step: "reading the clone's backup stanza",
                        detail: format!("{name:?}"),
                    }),
                }
            })
            .collect()
    }

    /// pgBackRest for `database`'s current clone in `db_dir`, its configuration written.
    ///
    /// # Errors
    /// When its files cannot be read or written.
    pub fn backrest(&self, database: &DatabaseRecord, db_dir: &Path) -> Result<PgBackRest, RuntimeError> {
        let stanzas = self.stanzas(database)?;
        let Some((name, _)) = stanzas.last() else {
            return Err(RuntimeError::Step { step: "reading the clone's backup stanza", detail: "none listed".into() });
        };
        self.configure(database, db_dir, name.clone())
    }

    /// pgBackRest for the stanza `database` archived into at `at`: the newest begun in a second
    /// before it (the oldest for a moment before them all, which its window then refuses).
    ///
    /// # Errors
    /// When its files cannot be read or written.
    pub fn backrest_at(
        &self,
        database: &DatabaseRecord,
        db_dir: &Path,
        at: std::time::SystemTime,
    ) -> Result<PgBackRest, RuntimeError> {
        let at = devdb_core::clock::unix(at);
        let stanzas = self.stanzas(database)?;
        let then = stanzas.iter().rev().find(|(_, since)| *since < at).or(stanzas.first());
        let Some((name, _)) = then else {
            return Err(RuntimeError::Step { step: "reading the clone's backup stanza", detail: "none listed".into() });
        };
        self.configure(database, db_dir, name.clone())
    }

    fn configure(&self, database: &DatabaseRecord, db_dir: &Path, name: String) -> Result<PgBackRest, RuntimeError> {
        // The PostgreSQL user passes through to its stanzas' files, and lists nothing.
        for dir in [self.root.clone(), self.root.join("work")] {
            devdb_pgctl::passable_dir(&dir).map_err(RuntimeError::io("preparing the backup directories"))?;
        }
        let secret = self.secret().map_err(RuntimeError::io("reading the backup secret"))?;
        let key = devdb_backup::config::stanza_key(&secret, &name);
        let stanza = Stanza {
            work_dir: self.root.join("work").join(&name),
            name,
            data_dir: db_dir.join("data"),
            port: database.port,
            socket_dir: db_dir.join("sock"),
            superuser: SUPERUSER.into(),
            retention: retention(database),
        };
        PgBackRest::configure(&self.repository, stanza, &key, self.run_as)
            .map_err(|e| RuntimeError::Step { step: "configuring backups", detail: e.to_string() })
    }
}

/// What `database`'s stanzas' names begin with: its id (unique per incarnation), or its name
/// for an id that cannot name a stanza.
fn stanza_base(database: &DatabaseRecord) -> String {
    if devdb_backup::config::valid_stanza_name(&database.id) {
        database.id.clone()
    } else {
        format!("db-{}", database.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_shared::api::BackupStatus;

    #[test]
    fn a_databases_retention_is_what_its_stanza_keeps() {
        let dir = tempfile::tempdir().expect("a directory");
        let backups = LocalBackups::new(dir.path().join("backup"), Repository::Posix(dir.path().join("repo")), None);
        let mut database: DatabaseRecord = serde_json::from_value(serde_json::json!({
            "id": "db-kate", "name": "kate-pg", "project": "shop", "owner": "kate", "status": "running",
            "want": "Run", "port": 5432, "password": "pw", "snapshot_generation": 1, "error": null, "created_at": "now",
        }))
        .expect("a record");
        let conf = |d: &DatabaseRecord| {
            let backrest = backups.backrest(d, &dir.path().join("kate-pg")).expect("configured");
            std::fs::read_to_string(backrest.stanza().work_dir.join("pgbackrest.conf")).expect("its configuration")
        };
        database.backup = Some(BackupStatus { enabled: true, retention: Some("7d".into()), ..Default::default() });
        let kept = conf(&database);
        assert!(kept.contains("\nrepo1-retention-full-type=time\nrepo1-retention-full=7\n"), "{kept}");
        database.backup = Some(BackupStatus { enabled: true, ..Default::default() });
        let kept = conf(&database);
        assert!(kept.contains("\nrepo1-retention-full-type=count\nrepo1-retention-full=2\n"), "{kept}");
    }

    /// A database deleted and made again under its name (perhaps by another owner) never reads
    /// the stanzas of the one before: not for its current clone, not for any moment.
    #[test]
    fn a_name_taken_again_never_reaches_the_stanzas_of_the_database_before() {
        let dir = tempfile::tempdir().expect("a directory");
        let backups = LocalBackups::new(dir.path().join("backup"), Repository::Posix(dir.path().join("repo")), None);
        let record = |id: &str, owner: &str| -> DatabaseRecord {
            serde_json::from_value(serde_json::json!({
                "id": id, "name": "kate-pg", "project": "shop", "owner": owner, "status": "running",
                "want": "Run", "port": 5432, "password": "pw", "snapshot_generation": 1, "error": null,
                "created_at": "now",
            }))
            .expect("a record")
        };
        let (kates, bobs) = (record("db-kate", "kate"), record("db-bob", "bob"));
        backups.new_stanza(&kates).expect("kate's stanza");
        assert_eq!(backups.stanza_names(&bobs), Vec::<String>::new(), "none of kate's");
        let at_kates_time = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        let stanza = |b: devdb_backup::PgBackRest| b.stanza().name.clone();
        let bobs_now = stanza(backups.backrest(&bobs, &dir.path().join("kate-pg")).expect("bob's"));
        let bobs_then = stanza(backups.backrest_at(&bobs, &dir.path().join("kate-pg"), at_kates_time).expect("bob's"));
        assert!(bobs_now.starts_with("db-bob-") && bobs_then.starts_with("db-bob-"), "{bobs_now} {bobs_then}");
        let kates_names = backups.stanza_names(&kates);
        assert!(kates_names.len() == 1 && kates_names[0].starts_with("db-kate-"), "{kates_names:?}");
    }
}
