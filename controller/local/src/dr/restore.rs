//! A new installation brought back from a repository's state document: the projects' records
//! (each to be restored again from its source), and each chosen database restored from its
//! latest stanza with everything archived, under its name, owner, password, settings and
//! lifetime. Restored databases are left stopped: a connection, or a start, wakes them, and they
//! archive into the same repository from then on (a stanza of their own each).

use devdb_core::model::{DatabaseRecord, ProjectRecord, Want};
use devdb_core::runtime::Runtime as _;
use devdb_core::store::Store as _;
use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, ProjectStatus, StopReason};

use super::{DrError, SavedDatabase, StateDocument};
use crate::Local;

/// Which of a document's databases to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Which {
    /// Every database with backups.
    All,
    /// These, by name.
    Names(Vec<Name>),
}

/// What became of one database.
#[derive(Debug)]
pub struct Outcome {
    pub name: Name,
    pub result: Result<Restored, String>,
}

/// How a database was brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restored {
    /// From its backups, with everything archived.
    Restored,
    /// This installation has it already: left as it is.
    AlreadyHere,
}

/// The databases of `document` that `which` names.
///
/// # Errors
/// [`DrError::Refused`] naming one it does not hold, or one without backups.
pub fn chosen<'d>(document: &'d StateDocument, which: &Which) -> Result<Vec<&'d SavedDatabase>, DrError> {
    let restorable = |d: &SavedDatabase| d.record.backup.is_some() && !d.stanzas.is_empty();
    match which {
        Which::All => {
            Ok(document.databases.iter().filter(|d| restorable(d) && d.record.want != Want::Delete).collect())
        }
        Which::Names(names) => names
            .iter()
            .map(|name| match document.databases.iter().find(|d| &d.record.name == name) {
                Some(d) if restorable(d) => Ok(d),
                Some(_) => Err(DrError::Refused(format!("database {name} had no backups: it cannot be restored"))),
                None => Err(DrError::Refused(format!(
                    "the repository holds no database {name} (it holds: {})",
                    document.databases.iter().map(|d| d.record.name.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            })
            .collect(),
    }
}

/// Restores what `which` names of `document` into `local`'s data directory, whose backup secret
/// becomes `secret` (the one the repository's stanzas are encrypted with).
///
/// # Errors
/// [`DrError`] when nothing can be restored (a name it does not hold, another secret, the
/// store); a database that fails is reported in its [`Outcome`] and the others go on.
pub async fn restore(
    local: &Local,
    document: &StateDocument,
    secret: &[u8],
    which: &Which,
) -> Result<Vec<Outcome>, DrError> {
    let chosen = chosen(document, which)?;
    let (store, runtime) = (local.reconciler.store(), local.reconciler.runtime());
    runtime.local_backups().install_secret(secret).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => DrError::OtherSecret { data_dir: local.data_dir.clone() },
        _ => DrError::Io { path: local.data_dir.join("backup/secret"), source: e },
    })?;
    let wanted: Vec<&ProjectRecord> = match which {
        Which::All => document.projects.iter().collect(),
        Which::Names(_) => {
            document.projects.iter().filter(|p| chosen.iter().any(|d| d.record.project == p.name)).collect()
        }
    };
    for project in wanted {
        if store.project(project.name.as_str()).await?.is_none() {
            store.insert_project(&to_refresh(project)).await?;
        }
    }
    let mut outcomes = Vec::new();
    for saved in chosen {
        let result = restore_one(local, saved).await.map_err(|e| e.to_string());
        if let Err(error) = &result {
            tracing::warn!(database = %saved.record.name, %error, "not restored");
        }
        outcomes.push(Outcome { name: saved.record.name.clone(), result });
    }
    keep_pending(local, document).await?;
    Ok(outcomes)
}

/// Keeps what `document` holds and this installation does not, so that it stays in the
/// repository's state once this installation writes its own.
async fn keep_pending(local: &Local, document: &StateDocument) -> Result<(), DrError> {
    let store = local.reconciler.store();
    let (projects, databases) = (store.projects(None).await?, store.databases(None, None).await?);
    let pending = super::Pending {
        projects: document.projects.iter().filter(|p| !projects.iter().any(|h| h.name == p.name)).cloned().collect(),
        databases: document
            .databases
            .iter()
            .filter(|d| d.record.want != Want::Delete && !databases.iter().any(|h| h.name == d.record.name))
            .cloned()
            .collect(),
    };
    let text = serde_json::to_string(&pending).map_err(|source| DrError::Json { path: "dr/pending".into(), source })?;
    store.put_document(super::PENDING, &text).await?;
    Ok(())
}

async fn restore_one(local: &Local, saved: &SavedDatabase) -> Result<Restored, DrError> {
    let (store, runtime) = (local.reconciler.store(), local.reconciler.runtime());
    if store.database(saved.record.name.as_str()).await?.is_some() {
        return Ok(Restored::AlreadyHere);
    }
    let Some(project) = store.project(saved.record.project.as_str()).await? else {
        return Err(DrError::Refused(format!("its project {} is not in the repository's state", saved.record.project)));
    };
    let taken = store.databases(None, None).await?.iter().map(|d| d.port).collect();
    let record = recovered(&saved.record, runtime.new_port(&taken)?);
    runtime.local_backups().adopt_stanzas(&record, &saved.stanzas)?;
    let restored = runtime.restore_latest(&record, &project).await;
    let stopped = match restored {
        Ok(()) => runtime.stop_database(&record).await,
        Err(error) => Err(error),
    };
    if let Err(error) = stopped {
        let _ = runtime.remove_database(&record.name).await;
        return Err(error.into());
    }
    store.insert_database(&record).await?;
    Ok(Restored::Restored)
}

/// `project` as a new installation takes it: its snapshots are not in the repository, so it is
/// restored again from its source (a new generation).
fn to_refresh(project: &ProjectRecord) -> ProjectRecord {
    let newest = project.snapshot.iter().chain(&project.kept_snapshots).map(|s| s.generation).max();
    ProjectRecord {
        status: ProjectStatus::Pending,
        error: None,
        progress: None,
        snapshot: None,
        kept_snapshots: Vec::new(),
        wanted_generation: newest.unwrap_or(0).max(project.wanted_generation) + 1,
        restores_begun: 0,
        ..project.clone()
    }
}

/// `record` as restored on `port`: stopped (a connection wakes it), its backups going on in a
/// stanza of their own, nothing under way.
fn recovered(record: &DatabaseRecord, port: u16) -> DatabaseRecord {
    let mut record = DatabaseRecord {
        port,
        status: DatabaseStatus::Stopped,
        want: Want::Stop,
        error: None,
        restore_from: None,
        restoring: None,
        before_restore: None,
        ..record.clone()
    };
    // Its schedule and retention stay; everything observed (its window, archiving, checks)
    // starts again with its first backup here.
    record.backup = record.backup.take().map(|b| devdb_shared::api::BackupStatus {
        enabled: b.enabled,
        schedule: b.schedule,
        retention: b.retention,
        ..Default::default()
    });
    record.lifecycle.stop_reason = Some(StopReason::Manual);
    record.lifecycle.stopped_at = Some(devdb_core::clock::now());
    record
}
