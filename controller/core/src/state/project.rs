//! A project's state machine: its snapshot generations (wanted and restored) and its status.
//! Every transition is here, with its guard and the fields it writes; the API and the
//! reconciler change a project's state only through these functions, applied inside the
//! store's update. So are the reasons a project refuses a clone of its snapshot.
//!
//! ```text
//!   create ──► pending ──restore──► restoring ──restored──► ready ──refresh, masking──► ready
//!                                      │  ▲                   ▲      (a newer generation wanted;
//!                                failed│  │retry              │       the current one serves)
//!                                      ▼  │                   │
//!                  failed (no snapshot yet), or ready with the previous one
//! ```

use devdb_shared::Name;
use devdb_shared::api::{Masking, Progress, ProjectStatus};

use crate::model::{ProjectRecord, SnapshotRecord};

/// Why a project cannot take the change asked for (a 409 in the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("project {0} is already restoring")]
    AlreadyRestoring(Name),
    /// A change that would restore it again, asked for while it restores.
    #[error("project {project} is restoring; {then} once it is done")]
    Restoring { project: Name, then: &'static str },
}

impl Refusal {
    /// The API's stable code for it.
    pub fn code(&self) -> &'static str {
        "restoring"
    }
}

/// Why a project's snapshot may not be cloned now (a 409 in the API; a reset the reconciler
/// drops, or a clone it fails).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloneRefusal {
    /// Its snapshot was not masked by its current rules and no restore applying them runs.
    #[error(
        "project {project}'s snapshot is not masked by its current rules{}; correct them with \
         `devdb project masking`, or refresh the project",
        .restore_error.as_deref().map(|e| format!(" (its masked restore failed: {e})")).unwrap_or_default()
    )]
    NotMasked { project: Name, restore_error: Option<String> },
    /// With `requireRules`: its scan found columns no rule masks.
    #[error(
        "project {project} requires masking rules for every personal column, and these have none: {}; \
         see `devdb project scan {project}`",
        .columns.join(", ")
    )]
    Unmasked { project: Name, columns: Vec<String> },
}

impl CloneRefusal {
    /// The API's stable code for it.
    pub fn code(&self) -> &'static str {
        "project_not_ready"
    }
}

/// Whether a project's snapshot is masked as its rules say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotMasking {
    /// By its current rules and key (or it has no rules, or no snapshot yet).
    Current,
    /// Not yet: the restore applying them is under way (a clone waits for it).
    Pending,
    /// Not, and no restore applying them is under way (it failed).
    Stale,
}

/// Whether `p`'s snapshot is masked by its current rules and key.
pub fn snapshot_masking(p: &ProjectRecord) -> SnapshotMasking {
    let Some(snapshot) = p.snapshot.as_ref() else { return SnapshotMasking::Current };
    if p.masking.rules.is_empty()
        || (snapshot.masked_with == p.masking.rules && snapshot.masked_key_version == p.masking.key_version)
    {
        return SnapshotMasking::Current;
    }
    if p.wanted_generation > snapshot.generation { SnapshotMasking::Pending } else { SnapshotMasking::Stale }
}

/// Why `p`'s snapshot may not be cloned now, if so: it was not masked by the project's current
/// rules and no restore applying them is under way; or, with `requireRules`, its scan found
/// columns no rule masks. (While the masked restore runs, a clone waits: see
/// [`SnapshotMasking::Pending`].)
pub fn clone_refusal(p: &ProjectRecord) -> Option<CloneRefusal> {
    if snapshot_masking(p) == SnapshotMasking::Stale {
        return Some(CloneRefusal::NotMasked { project: p.name.clone(), restore_error: p.error.clone() });
    }
    let columns = p.unmasked_columns();
    (!columns.is_empty()).then(|| CloneRefusal::Unmasked { project: p.name.clone(), columns })
}

/// Whether a restore should run for `p`: a generation newer than its snapshot is wanted, and
/// its last restore did not fail for good.
pub fn needs_restore(p: &ProjectRecord) -> bool {
    p.snapshot.as_ref().map(|s| s.generation) < Some(p.wanted_generation) && p.status != ProjectStatus::Failed
}

// ---- Asked for by people (the API) ----

fn refuse_restoring(p: &ProjectRecord, then: Option<&'static str>) -> Result<(), Refusal> {
    if !matches!(p.status, ProjectStatus::Pending | ProjectStatus::Restoring) {
        return Ok(());
    }
    Err(match then {
        None => Refusal::AlreadyRestoring(p.name.clone()),
        Some(then) => Refusal::Restoring { project: p.name.clone(), then },
    })
}

/// A new snapshot of its source.
///
/// # Errors
/// [`Refusal::AlreadyRestoring`].
pub fn ask_refresh(p: &mut ProjectRecord) -> Result<(), Refusal> {
    refuse_restoring(p, None)?;
    restore_again(p);
    Ok(())
}

/// New masking rules (the key's version stays the controller's, whatever `masking` says);
/// `key` becomes its key if it has none. Changed rules take a new snapshot: the current one was
/// masked otherwise (or not at all). Whether the rules changed.
///
/// # Errors
/// [`Refusal::Restoring`].
pub fn set_masking(p: &mut ProjectRecord, masking: &Masking, key: &str) -> Result<bool, Refusal> {
    refuse_restoring(p, Some("set its masking"))?;
    let changed = masking.rules != p.masking.rules;
    p.masking = Masking { key_version: p.masking.key_version, ..masking.clone() };
    if p.mask_key.is_empty() {
        p.mask_key = key.to_string();
    }
    if changed {
        restore_again(p);
    }
    Ok(changed)
}

/// A new masking key (the old one is gone): its next snapshot, restored at once, is masked
/// under it.
///
/// # Errors
/// [`Refusal::Restoring`].
pub fn rotate_key(p: &mut ProjectRecord, key: &str) -> Result<(), Refusal> {
    refuse_restoring(p, Some("rotate its key"))?;
    p.masking.key_version += 1;
    p.mask_key = key.to_string();
    restore_again(p);
    Ok(())
}

/// Asks for a new snapshot: the generation after the current snapshot's; the current one
/// serves clones meanwhile.
fn restore_again(p: &mut ProjectRecord) {
    p.wanted_generation = p.snapshot.as_ref().map_or(p.wanted_generation, |s| s.generation) + 1;
    p.status = if p.snapshot.is_some() { ProjectStatus::Ready } else { ProjectStatus::Pending };
    p.error = None;
    p.restores_begun = 0;
}

// ---- Observed by the reconciler as it restores ----

/// A restore of its wanted generation begins. It is counted as begun before it begins: one the
/// controller never saw end (it was killed, perhaps by what the restore did) is not begun for
/// ever.
pub fn restore_begun(p: &mut ProjectRecord) {
    p.status = ProjectStatus::Restoring;
    p.error = None;
    p.progress = Some(Progress { bytes_done: 0, bytes_total: None });
    p.restores_begun += 1;
}

/// How far its restore has come.
pub fn restore_progress(p: &mut ProjectRecord, progress: Option<Progress>) {
    if p.status == ProjectStatus::Restoring {
        p.progress = progress;
    }
}

/// The restore of `generation` of the project `id` is done. Only for the same project and
/// generation: it may have been deleted and recreated, or refreshed, while the restore ran.
pub fn restored(p: &mut ProjectRecord, id: &str, generation: u64, snapshot: &SnapshotRecord) {
    if p.id == id && p.wanted_generation == generation {
        p.status = ProjectStatus::Ready;
        p.progress = None;
        p.snapshot = Some(snapshot.clone());
        p.restores_begun = 0;
    }
}

/// The restore of `generation` failed and is tried again.
pub fn restore_retrying(p: &mut ProjectRecord, id: &str, generation: u64, error: &str) {
    if p.id == id && p.wanted_generation == generation {
        p.error = Some(format!("{error}; retrying"));
    }
}

/// The restore of `generation` failed for good: a refresh that fails keeps the previous
/// snapshot usable.
pub fn restore_failed(p: &mut ProjectRecord, id: &str, generation: u64, error: String) {
    if p.id != id || p.wanted_generation != generation {
        return;
    }
    p.status = if p.snapshot.is_some() { ProjectStatus::Ready } else { ProjectStatus::Failed };
    p.wanted_generation = p.snapshot.as_ref().map_or(p.wanted_generation, |s| s.generation);
    p.error = Some(error);
    p.progress = None;
    p.restores_begun = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectRecord {
        serde_json::from_value(serde_json::json!({
            "id": "prj-1", "name": "shop", "owner": "kate", "db_version": "16", "backup_location": "s3://d/x",
            "status": "ready", "error": null, "progress": null, "wanted_generation": 1, "username": "app",
            "password": "pw", "database": "shop", "created_at": "now",
            "snapshot": { "generation": 1, "created_at": "now", "size_bytes": 1 },
        }))
        .expect("a record")
    }

    fn rules() -> Masking {
        serde_json::from_value(
            serde_json::json!({ "rules": [{ "table": "customers", "column": "email", "strategy": "email" }] }),
        )
        .expect("rules")
    }

    #[test]
    fn new_rules_restore_again_and_clones_wait_then_a_failed_restore_refuses_them() {
        let mut p = project();
        assert_eq!(set_masking(&mut p, &rules(), "key"), Ok(true));
        assert_eq!((p.wanted_generation, p.mask_key.as_str()), (2, "key"));
        assert!(needs_restore(&p));
        assert_eq!(snapshot_masking(&p), SnapshotMasking::Pending);
        assert_eq!(clone_refusal(&p), None, "a clone waits for the masked restore");
        restore_begun(&mut p);
        assert_eq!(
            set_masking(&mut p, &rules(), "other").map_err(|r| r.to_string()).unwrap_err(),
            "project shop is restoring; set its masking once it is done"
        );
        assert_eq!(ask_refresh(&mut p), Err(Refusal::AlreadyRestoring(p.name.clone())));
        restore_failed(&mut p, "prj-1", 2, "the dump is gone".into());
        assert_eq!((p.status, p.wanted_generation), (ProjectStatus::Ready, 1), "the previous snapshot serves");
        assert_eq!(snapshot_masking(&p), SnapshotMasking::Stale);
        let refusal = clone_refusal(&p).expect("refused");
        assert_eq!(refusal.code(), "project_not_ready");
        assert!(refusal.to_string().contains("(its masked restore failed: the dump is gone)"), "{refusal}");
        assert!(!needs_restore(&p));
    }

    #[test]
    fn a_restore_of_another_incarnation_or_generation_writes_nothing() {
        let mut p = project();
        ask_refresh(&mut p).expect("refresh");
        restore_begun(&mut p);
        let before = p.clone();
        let snapshot = p.snapshot.clone().expect("snapshot");
        restored(&mut p, "prj-other", 2, &snapshot);
        restored(&mut p, "prj-1", 3, &snapshot);
        restore_failed(&mut p, "prj-1", 1, "old".into());
        restore_retrying(&mut p, "prj-other", 2, "x");
        assert_eq!(p, before);
        restore_progress(&mut p, Some(Progress { bytes_done: 5, bytes_total: None }));
        restored(&mut p, "prj-1", 2, &SnapshotRecord { generation: 2, ..snapshot });
        assert_eq!((p.status, p.progress, p.restores_begun, needs_restore(&p)), (ProjectStatus::Ready, None, 0, false));
        restore_progress(&mut p, Some(Progress { bytes_done: 9, bytes_total: None }));
        assert_eq!(p.progress, None, "no progress once restored");
    }

    #[test]
    fn a_rotated_key_takes_a_snapshot_masked_under_it() {
        let mut p = project();
        set_masking(&mut p, &rules(), "key").expect("rules");
        let snapshot = SnapshotRecord { generation: 2, masked_with: rules().rules, ..p.snapshot.clone().expect("s") };
        restored(&mut p, "prj-1", 2, &snapshot);
        assert_eq!(snapshot_masking(&p), SnapshotMasking::Current);
        rotate_key(&mut p, "new").expect("rotate");
        assert_eq!((p.masking.key_version, p.mask_key.as_str(), p.wanted_generation), (1, "new", 3));
        assert_eq!(snapshot_masking(&p), SnapshotMasking::Pending);
    }
}
