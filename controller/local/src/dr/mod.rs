//! Disaster recovery: the controller's own state (projects, databases with their owners,
//! credentials, settings and lifetimes, and each backed-up database's stanzas) kept in the
//! backup repository beside the backups, encrypted ([`seal`]) under a key derived from the
//! installation's backup secret; and a new installation brought back from it.
//!
//! - [`writer`]: writes the document at start and after every change of the state;
//! - [`restore`]: reads it (`devdb dr status`) and restores databases from their latest stanza
//!   into a new data directory (`devdb dr restore`, `devdb up --restore-from`).
//!
//! The document is `<repository>/devdb/state.enc` in a directory repository. S3 repositories
//! do not hold it yet.

pub mod restore;
pub mod seal;
pub mod writer;

use std::path::{Path, PathBuf};

use devdb_backup::Repository;
use devdb_core::model::{DatabaseRecord, ProjectRecord};
use serde::{Deserialize, Serialize};

/// The state document's format version.
const FORMAT: u32 = 1;

/// What a repository keeps of the controller's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDocument {
    pub format: u32,
    /// When it was written (RFC 3339).
    pub written_at: String,
    pub projects: Vec<ProjectRecord>,
    pub databases: Vec<SavedDatabase>,
}

/// A database's record and, with backups on, its stanzas (oldest first, as
/// `backup/stanzas/<database>` lists them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDatabase {
    pub record: DatabaseRecord,
    #[serde(default)]
    pub stanzas: Vec<String>,
}

impl StateDocument {
    /// Whether `other` holds the same state (whenever each was written).
    pub fn same_state(&self, other: &Self) -> bool {
        (&self.projects, &self.databases) == (&other.projects, &other.databases)
    }

    /// With what `pending` holds that this does not (by name): a lost installation's projects
    /// and databases not restored yet stay listed, and restorable, once the new one writes.
    #[must_use]
    pub fn with_pending(mut self, pending: Pending) -> Self {
        for project in pending.projects {
            if !self.projects.iter().any(|p| p.name == project.name) {
                self.projects.push(project);
            }
        }
        for database in pending.databases {
            if !self.databases.iter().any(|d| d.record.name == database.record.name) {
                self.databases.push(database);
            }
        }
        self
    }
}

/// The store document keeping what a restore left out ([`Pending`]).
const PENDING: &str = "dr/pending";

/// What a restore of some databases left in the lost installation's state: kept in the new
/// installation's store and written with its own state until restored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub projects: Vec<ProjectRecord>,
    pub databases: Vec<SavedDatabase>,
}

/// Why disaster recovery cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum DrError {
    #[error(
        "disaster recovery needs a directory repository for now ({0} is in S3): copy the repository to a \
         directory first"
    )]
    S3(String),
    #[error("no DevDB state at {path} (is the repository the one the installation used as --backup-repo?)")]
    NoDocument { path: PathBuf },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Sealed { path: PathBuf, source: seal::SealError },
    #[error("{path}: the state document cannot be read: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("the key file {path} is empty: give a copy of the installation's <data-dir>/backup/secret")]
    EmptyKey { path: PathBuf },
    #[error(
        "{data_dir} already has another backup secret: restore into a new data directory (or give that \
         installation's key)"
    )]
    OtherSecret { data_dir: PathBuf },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] devdb_core::store::StoreError),
    #[error(transparent)]
    Runtime(#[from] devdb_core::runtime::RuntimeError),
}

/// Where `repository` keeps the state document.
///
/// # Errors
/// [`DrError::S3`] for an S3 repository.
pub fn document_path(repository: &Repository) -> Result<PathBuf, DrError> {
    match repository {
        Repository::Posix(dir) => Ok(dir.join("devdb").join("state.enc")),
        Repository::S3 { bucket, prefix, .. } => Err(DrError::S3(format!("s3://{bucket}/{prefix}"))),
    }
}

/// Reads a backup secret from `path` (a copy of `<data-dir>/backup/secret`).
///
/// # Errors
/// [`DrError::Io`], [`DrError::EmptyKey`].
pub fn read_key(path: &Path) -> Result<Vec<u8>, DrError> {
    let key = std::fs::read(path).map_err(|source| DrError::Io { path: path.into(), source })?;
    if key.is_empty() {
        return Err(DrError::EmptyKey { path: path.into() });
    }
    Ok(key)
}

/// The state document `repository` holds, opened with `secret`.
///
/// # Errors
/// [`DrError`]: none there, the wrong key, or one that cannot be read.
pub fn read(repository: &Repository, secret: &[u8]) -> Result<StateDocument, DrError> {
    let path = document_path(repository)?;
    let sealed = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DrError::NoDocument { path }),
        read => read.map_err(|source| DrError::Io { path: path.clone(), source })?,
    };
    let plain = seal::open(secret, &sealed).map_err(|source| DrError::Sealed { path: path.clone(), source })?;
    serde_json::from_slice(&plain).map_err(|source| DrError::Json { path, source })
}

/// Writes `document` into `repository`, sealed with `secret`, whole or not at all (a new file
/// renamed over the old).
///
/// # Errors
/// [`DrError`] when it cannot be written.
pub fn write(repository: &Repository, secret: &[u8], document: &StateDocument) -> Result<(), DrError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = document_path(repository)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DrError::Io { path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let plain = serde_json::to_vec(document).map_err(|source| DrError::Json { path: path.clone(), source })?;
    let sealed = seal::seal(secret, &plain).map_err(|source| DrError::Sealed { path: path.clone(), source })?;
    let staged = dir.join(".state.enc.new");
    let _ = std::fs::remove_file(&staged);
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staged).map_err(io(&staged))?;
    file.write_all(&sealed).and_then(|()| file.sync_all()).map_err(io(&staged))?;
    std::fs::rename(&staged, &path).map_err(io(&path))
}

#[cfg(test)]
mod tests;
