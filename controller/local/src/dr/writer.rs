//! Keeps the state document in the repository current: written when the controller starts,
//! after each change of its databases (a moment later, so a burst of changes is one write) and
//! on a slow tick (projects change without a feed of their own), and when it stops. A write that
//! fails is logged and tried again at the next.

use std::sync::Arc;
use std::time::Duration;

use devdb_core::reconcile::Reconciler;
use devdb_core::store::Store as _;
use tokio_util::sync::CancellationToken;

use super::{FORMAT, SavedDatabase, StateDocument};
use crate::LocalPlatform;
use crate::backup::LocalBackups;

/// How long after a change the document is written: the changes around it go with it.
const SETTLE: Duration = Duration::from_secs(1);
/// How often the state is compared with what was written, whatever changed.
const TICK: Duration = Duration::from_secs(15);

/// The state as it is now.
///
/// # Errors
/// When the store cannot be read.
pub async fn current(
    reconciler: &Reconciler<LocalPlatform>,
    backups: &LocalBackups,
) -> Result<StateDocument, devdb_core::store::StoreError> {
    let store = reconciler.store();
    let projects = store.projects(None).await?;
    let databases = store
        .databases(None, None)
        .await?
        .into_iter()
        .map(|record| {
            let stanzas = if record.backup.is_some() { backups.stanza_names(&record) } else { Vec::new() };
            SavedDatabase { record, stanzas }
        })
        .collect();
    let document = StateDocument { format: FORMAT, written_at: devdb_core::clock::now(), projects, databases };
    // Unreadable, it is left out (a restore writes it again).
    let pending = store.document(super::PENDING).await?.and_then(|text| serde_json::from_str(&text).ok());
    Ok(match pending {
        Some(pending) => document.with_pending(pending),
        None => document,
    })
}

/// Writes the state document until `stop`, then once more.
pub async fn run(reconciler: Arc<Reconciler<LocalPlatform>>, stop: CancellationToken) {
    let backups = reconciler.runtime().local_backups().clone();
    if let Err(error) = super::document_path(backups.repository()) {
        tracing::info!(%error, "the controller's state is not kept in the backup repository");
        return;
    }
    let mut changes = reconciler.store().watch_databases();
    let mut written: Option<StateDocument> = None;
    loop {
        written = write_if_changed(&reconciler, &backups, written).await;
        tokio::select! {
            () = stop.cancelled() => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(SETTLE) => {}
                }
            }
            () = tokio::time::sleep(TICK) => {}
        }
    }
    write_if_changed(&reconciler, &backups, written).await;
}

/// Writes the state unless it is what `written` holds; what the repository holds afterwards.
async fn write_if_changed(
    reconciler: &Reconciler<LocalPlatform>,
    backups: &LocalBackups,
    written: Option<StateDocument>,
) -> Option<StateDocument> {
    let document = match current(reconciler, backups).await {
        Ok(document) => document,
        Err(error) => {
            tracing::warn!(%error, "cannot read the state to keep it in the backup repository");
            return written;
        }
    };
    if written.as_ref().is_some_and(|w| w.same_state(&document)) {
        return written;
    }
    let backups = backups.clone();
    let task = tokio::task::spawn_blocking(move || {
        let secret = backups.secret().map_err(|source| super::DrError::Io { path: "backup/secret".into(), source })?;
        super::write(backups.repository(), &secret, &document).map(|()| document)
    });
    match task.await {
        Ok(Ok(document)) => {
            tracing::debug!(databases = document.databases.len(), "the state is kept in the backup repository");
            Some(document)
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot keep the state in the backup repository; trying again at the next change");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "cannot keep the state in the backup repository");
            None
        }
    }
}
