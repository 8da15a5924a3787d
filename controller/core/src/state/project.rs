//! A project's state machine: its snapshot generations (wanted, current and kept) and its
//! status. Every transition is here, with its guard and the fields it writes; the API and the
//! reconciler change a project's state only through these functions, applied inside the
//! store's update. So are the reasons a project refuses a clone of its snapshot.
//!
//! ```text
//!   create ──► pending ──restore──► restoring ──restored──► ready ──refresh, masking──► ready
//!                                      │  ▲                   ▲ │    (a newer generation wanted;
//!                                failed│  │retry              │ │     the current one serves)
//!                                      ▼  │                   │ └─rollback─► ready (a kept
//!                  failed (no snapshot yet), or ready with the previous one    generation current)
//! ```
//!
//! A restored generation becomes the current snapshot; the one it replaces is kept, with the
//! newest others, up to the controller's `--keep-snapshots` in all. A rollback makes a kept
//! generation current again (the one it replaces stays kept); the next refresh restores a
//! generation newer than every kept one.

use devdb_shared::Name;
use devdb_shared::api::{Masking, Progress, ProjectStatus};

use crate::model::{ProjectRecord, SnapshotRecord};

/// Why a project cannot take the change asked for (a 409 in the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("project {0} is already restoring")]
    AlreadyRestoring(Name),
    /// A change that would restore it again (or a rollback), asked for while it restores or a
    /// restore is asked for.
    #[error("project {project} is restoring; {then} once it is done")]
    Restoring { project: Name, then: &'static str },
    /// A rollback with no generation given, and none older than the current one kept.
    #[error("project {project} keeps no generation older than its current one ({})", generations(.kept))]
    NoEarlierGeneration { project: Name, kept: Vec<u64> },
    /// A rollback to a generation that is not kept (never restored, or removed since).
    #[error("project {project} does not keep generation {generation}; it keeps {}", generations(.kept))]
    NotKept { project: Name, generation: u64, kept: Vec<u64> },
    /// A rollback to the current generation.
    #[error("generation {generation} is project {project}'s current snapshot already")]
    AlreadyCurrent { project: Name, generation: u64 },
    /// A rollback to a generation masked otherwise than the project's rules and key say now.
    #[error(
        "generation {generation} of project {project} was not masked by its current rules and key: it cannot \
         be rolled back to (refresh the project instead)"
    )]
    MaskedOtherwise { project: Name, generation: u64 },
}

impl Refusal {
    /// The API's stable code for it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::AlreadyRestoring(_) | Self::Restoring { .. } => "restoring",
            Self::NoEarlierGeneration { .. } => "no_earlier_generation",
            Self::NotKept { .. } => "not_kept",
            Self::AlreadyCurrent { .. } => "already_current",
            Self::MaskedOtherwise { .. } => "masked_otherwise",
        }
    }
}

/// `[3, 1]` as `"3 (current), 1"`, the first being the current one; none as `"none"`.
fn generations(kept: &[u64]) -> String {
    if kept.is_empty() {
        return "none".into();
    }
    kept.iter()
        .enumerate()
        .map(|(i, g)| if i == 0 { format!("{g} (current)") } else { g.to_string() })
        .collect::<Vec<_>>()
        .join(", ")
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
    if masked_as_ruled(&p.masking, snapshot) {
        return SnapshotMasking::Current;
    }
    if p.wanted_generation > snapshot.generation { SnapshotMasking::Pending } else { SnapshotMasking::Stale }
}

/// Whether `snapshot` was masked by `masking`'s rules and key, or there are none.
fn masked_as_ruled(masking: &Masking, snapshot: &SnapshotRecord) -> bool {
    masking.rules.is_empty()
        || (snapshot.masked_with == masking.rules && snapshot.masked_key_version == masking.key_version)
}

/// The generations `p` keeps: its current snapshot's first, then the others, newest first.
/// What the runtime keeps of it.
pub fn kept_generations(p: &ProjectRecord) -> Vec<u64> {
    p.snapshot.iter().chain(p.kept_snapshots.iter().rev()).map(|s| s.generation).collect()
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

/// Makes kept generation `generation` (without one: the newest older than the current one)
/// the current snapshot: new clones and resets are made of it; the one it replaces stays kept,
/// to roll forward to again. The generation it rolled back to.
///
/// # Errors
/// [`Refusal::Restoring`] while it restores or a restore is asked for;
/// [`Refusal::NoEarlierGeneration`], [`Refusal::NotKept`], [`Refusal::AlreadyCurrent`];
/// [`Refusal::MaskedOtherwise`] for a generation its current masking did not make.
pub fn rollback(p: &mut ProjectRecord, generation: Option<u64>) -> Result<u64, Refusal> {
    refuse_restoring(p, Some("roll it back"))?;
    if needs_restore(p) {
        return Err(Refusal::Restoring { project: p.name.clone(), then: "roll it back" });
    }
    let kept = kept_generations(p);
    let project = p.name.clone();
    let Some(current) = p.snapshot.as_ref().map(|s| s.generation) else {
        return Err(Refusal::NoEarlierGeneration { project, kept });
    };
    let target = match generation {
        Some(generation) if generation == current => return Err(Refusal::AlreadyCurrent { project, generation }),
        Some(generation) => p.kept_snapshots.iter().position(|s| s.generation == generation),
        None => p.kept_snapshots.iter().rposition(|s| s.generation < current),
    };
    let Some(target) = target else {
        return Err(match generation {
            Some(generation) => Refusal::NotKept { project, generation, kept },
            None => Refusal::NoEarlierGeneration { project, kept },
        });
    };
    let generation = p.kept_snapshots[target].generation;
    if !masked_as_ruled(&p.masking, &p.kept_snapshots[target]) {
        return Err(Refusal::MaskedOtherwise { project, generation });
    }
    let snapshot = p.kept_snapshots.remove(target);
    p.kept_snapshots.extend(p.snapshot.replace(snapshot));
    p.kept_snapshots.sort_by_key(|s| s.generation);
    p.wanted_generation = generation;
    p.error = None;
    Ok(generation)
}

/// Asks for a new snapshot: a generation newer than every kept one; the current one serves
/// clones meanwhile.
fn restore_again(p: &mut ProjectRecord) {
    p.wanted_generation = kept_generations(p).into_iter().max().unwrap_or(p.wanted_generation) + 1;
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

/// The restore of `generation` of the project `id` is done: it becomes the current snapshot,
/// and the one it replaces is kept, so that `keep` generations are kept in all (at least the
/// new one), the oldest going first. Those masked otherwise than the project's rules and key
/// now go too: no rollback may return to them, and what they hold unmasked should not stay.
/// Only for the same project and generation: it may have been deleted and recreated, or
/// refreshed, while the restore ran.
pub fn restored(p: &mut ProjectRecord, id: &str, generation: u64, snapshot: &SnapshotRecord, keep: usize) {
    if p.id == id && p.wanted_generation == generation {
        p.status = ProjectStatus::Ready;
        p.progress = None;
        p.kept_snapshots.extend(p.snapshot.replace(snapshot.clone()));
        p.kept_snapshots.retain(|s| s.generation != generation && masked_as_ruled(&p.masking, s));
        p.kept_snapshots.sort_by_key(|s| s.generation);
        let removed = p.kept_snapshots.len().saturating_sub(keep.saturating_sub(1));
        p.kept_snapshots.drain(..removed);
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
        restored(&mut p, "prj-other", 2, &snapshot, 3);
        restored(&mut p, "prj-1", 3, &snapshot, 3);
        restore_failed(&mut p, "prj-1", 1, "old".into());
        restore_retrying(&mut p, "prj-other", 2, "x");
        assert_eq!(p, before);
        restore_progress(&mut p, Some(Progress { bytes_done: 5, bytes_total: None }));
        restored(&mut p, "prj-1", 2, &SnapshotRecord { generation: 2, ..snapshot }, 3);
        assert_eq!((p.status, p.progress, p.restores_begun, needs_restore(&p)), (ProjectStatus::Ready, None, 0, false));
        restore_progress(&mut p, Some(Progress { bytes_done: 9, bytes_total: None }));
        assert_eq!(p.progress, None, "no progress once restored");
    }

    #[test]
    fn a_rotated_key_takes_a_snapshot_masked_under_it() {
        let mut p = project();
        set_masking(&mut p, &rules(), "key").expect("rules");
        let snapshot = SnapshotRecord { generation: 2, masked_with: rules().rules, ..p.snapshot.clone().expect("s") };
        restored(&mut p, "prj-1", 2, &snapshot, 3);
        assert_eq!(snapshot_masking(&p), SnapshotMasking::Current);
        rotate_key(&mut p, "new").expect("rotate");
        assert_eq!((p.masking.key_version, p.mask_key.as_str(), p.wanted_generation), (1, "new", 3));
        assert_eq!(snapshot_masking(&p), SnapshotMasking::Pending);
    }

    /// Refreshes `p` and restores the generation asked for, keeping `keep`.
    fn refresh_and_restore(p: &mut ProjectRecord, keep: usize) -> u64 {
        ask_refresh(p).expect("refresh");
        restore_begun(p);
        let generation = p.wanted_generation;
        let snapshot = SnapshotRecord { generation, ..p.snapshot.clone().expect("a snapshot") };
        restored(p, "prj-1", generation, &snapshot, keep);
        generation
    }

    #[test]
    fn refreshes_keep_the_newest_generations_and_a_rollback_makes_one_current_again() {
        let mut p = project();
        assert_eq!((refresh_and_restore(&mut p, 3), refresh_and_restore(&mut p, 3)), (2, 3));
        assert_eq!(kept_generations(&p), [3, 2, 1]);
        assert_eq!(rollback(&mut p, None), Ok(2), "the one before the current");
        assert_eq!((kept_generations(&p), p.wanted_generation, needs_restore(&p)), (vec![2, 3, 1], 2, false));
        assert_eq!(rollback(&mut p, None), Ok(1));
        assert_eq!(rollback(&mut p, Some(3)), Ok(3), "forward again");
        assert_eq!(rollback(&mut p, Some(1)), Ok(1));
        // A refresh restores a generation newer than every kept one; the oldest goes.
        assert_eq!(refresh_and_restore(&mut p, 3), 4);
        assert_eq!(kept_generations(&p), [4, 3, 2]);
        assert_eq!(p.kept_snapshots.iter().map(|s| s.generation).collect::<Vec<_>>(), [2, 3], "oldest first");
        // Keeping one: nothing to roll back to.
        assert_eq!(refresh_and_restore(&mut p, 1), 5);
        assert_eq!(kept_generations(&p), [5]);
        assert_eq!(rollback(&mut p, None).map_err(|r| r.code()), Err("no_earlier_generation"));
    }

    #[test]
    fn a_rollback_is_refused_while_restoring_and_to_what_is_not_kept_and_changes_nothing() {
        let mut p = project();
        let refusal = rollback(&mut p, None).expect_err("nothing earlier");
        assert_eq!(refusal.to_string(), "project shop keeps no generation older than its current one (1 (current))");
        refresh_and_restore(&mut p, 3);
        refresh_and_restore(&mut p, 3);
        let before = p.clone();
        let refusal = rollback(&mut p, Some(7)).expect_err("not kept");
        assert_eq!(refusal.code(), "not_kept");
        assert_eq!(refusal.to_string(), "project shop does not keep generation 7; it keeps 3 (current), 2, 1");
        assert_eq!(rollback(&mut p, Some(3)), Err(Refusal::AlreadyCurrent { project: p.name.clone(), generation: 3 }));
        assert_eq!(p, before);
        // A refresh asked for, not begun yet; then under way.
        ask_refresh(&mut p).expect("refresh");
        let restoring = Refusal::Restoring { project: p.name.clone(), then: "roll it back" };
        assert_eq!(rollback(&mut p, None), Err(restoring.clone()));
        restore_begun(&mut p);
        assert_eq!(rollback(&mut p, Some(1)), Err(restoring));
        assert_eq!(
            Refusal::Restoring { project: p.name.clone(), then: "roll it back" }.to_string(),
            "project shop is restoring; roll it back once it is done"
        );
        restore_failed(&mut p, "prj-1", 4, "the dump is gone".into());
        assert_eq!(rollback(&mut p, None), Ok(2), "a failed refresh leaves the kept ones");
        assert_eq!(p.error, None);
    }

    /// Restores the generation `p` wants, masked by `masking`'s rules.
    fn restore_masked(p: &mut ProjectRecord, masking: &Masking) {
        restore_begun(p);
        let generation = p.wanted_generation;
        let snapshot = SnapshotRecord {
            generation,
            masked_with: masking.rules.clone(),
            ..p.snapshot.clone().expect("a snapshot")
        };
        restored(p, "prj-1", generation, &snapshot, 3);
    }

    #[test]
    fn generations_masked_otherwise_are_not_kept_nor_rolled_back_to() {
        let mut p = project();
        set_masking(&mut p, &rules(), "key").expect("rules");
        restore_masked(&mut p, &rules());
        assert_eq!(kept_generations(&p), [2], "the unmasked generation goes");
        ask_refresh(&mut p).expect("refresh");
        restore_masked(&mut p, &rules());
        assert_eq!(kept_generations(&p), [3, 2]);
        // Other rules, whose restore fails: the generations kept were masked otherwise.
        let mut other = rules();
        other.rules[0].column = "phone".into();
        set_masking(&mut p, &other, "key").expect("other rules");
        restore_begun(&mut p);
        restore_failed(&mut p, "prj-1", 4, "the dump is gone".into());
        let refusal = rollback(&mut p, None).expect_err("masked otherwise");
        assert_eq!(refusal.code(), "masked_otherwise");
        assert!(refusal.to_string().starts_with("generation 2 of project shop was not masked"), "{refusal}");
    }
}
