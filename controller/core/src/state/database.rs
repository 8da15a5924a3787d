//! A database's state machine: what should become of it ([`Want`]) and where it is
//! ([`DatabaseStatus`]). Every transition is here, with its guard and the fields it writes; the
//! API, the reconciler, the idle and expiry checks and `devdb down` change a database's state
//! only through these functions, applied inside the store's update so that each guard sees the
//! record as committed (a delete asked for meanwhile is never undone).
//!
//! Transitions asked for by people ([`ask_delete`], [`ask_reset`], [`ask_stop`],
//! [`ask_start`]) are refused with a typed [`Refusal`] the API renders; those the controller
//! takes as it works are guarded no-ops when the record has moved on, and say whether they
//! applied. [`step`] is what the reconciler does next for a record.
//!
//! ```text
//!             create ──► creating ──cloned──► running ◄──started── starting
//!                           │                  │   ▲                  ▲
//!                     clone failed       stop  │   │ recovered        │ start / wake
//!                           ▼                  ▼   │                  │
//!   reset ◄───────────── error          stopped ───┴── recovering ────┘
//!   (any state but deleting: creating again)        (found dead)
//!   delete, expiry (any state) ──► deleting ──removed──► gone
//! ```

use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, StopReason};

use crate::model::{Configured, DatabaseRecord, InPlaceRestore, Want};

/// Why a database cannot take the transition asked for (a 409 in the API).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("database {0} is being deleted")]
    BeingDeleted(Name),
    #[error("database {0} failed; reset it to run it again")]
    Failed(Name),
    #[error("database {0} has no backups to restore from (its backups are off)")]
    NoBackup(Name),
}

impl Refusal {
    /// The API's stable code for it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BeingDeleted(_) => "being_deleted",
            Self::Failed(_) => "database_failed",
            Self::NoBackup(_) => "no_backup",
        }
    }
}

/// What the reconciler does next for a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Remove its instance, then its record.
    Remove,
    /// Clone the project's snapshot for it (a new database, or a reset).
    Clone,
    /// Clone it, then stop it (stopped while it was being made).
    CloneThenStop,
    /// Make sure its instance runs (adopt or restart it) and has its settings.
    KeepRunning,
    /// Start its stopped instance.
    Start,
    /// Stop its instance.
    Stop,
    /// Nothing: it is where it should be, or only a person can move it on (a failed one).
    Nothing,
}

/// What the reconciler does next for `d`.
pub fn step(d: &DatabaseRecord) -> Step {
    use DatabaseStatus as S;
    match (d.want, d.status) {
        (Want::Delete, _) => Step::Remove,
        (Want::Reset, _) | (Want::Run, S::Creating) => Step::Clone,
        (Want::Run, S::Running | S::Recovering) => Step::KeepRunning,
        (Want::Run, S::Stopped | S::Starting) => Step::Start,
        (Want::Stop, S::Running | S::Recovering | S::Starting) => Step::Stop,
        (Want::Stop, S::Creating) => Step::CloneThenStop,
        (Want::Run, S::Error | S::Deleting) | (Want::Stop, S::Stopped | S::Error | S::Deleting) => Step::Nothing,
    }
}

// ---- Asked for by people (the API, `devdb down`) ----

/// Delete it, whatever its state.
pub fn ask_delete(d: &mut DatabaseRecord) {
    d.want = Want::Delete;
    d.status = DatabaseStatus::Deleting;
}

/// Clone it again from its project's snapshot, keeping name and credentials (a failed one
/// too: a reset is how it runs again).
///
/// # Errors
/// [`Refusal::BeingDeleted`].
pub fn ask_reset(d: &mut DatabaseRecord) -> Result<(), Refusal> {
    refuse_deleted(d)?;
    d.want = Want::Reset;
    d.status = DatabaseStatus::Creating;
    d.error = None;
    d.restoring = None;
    Ok(())
}

/// Make its data what it was at `to`, from its own backups, in place: rebuilt as a reset is,
/// keeping name and credentials, and keeping the state it replaces (see [`before_kept`]). A
/// restore asked for while another is under way replaces it, keeping the moment that one
/// kept: what was there before either.
///
/// # Errors
/// [`Refusal::BeingDeleted`], [`Refusal::NoBackup`].
pub fn ask_restore(d: &mut DatabaseRecord, to: String) -> Result<(), Refusal> {
    refuse_deleted(d)?;
    if d.backup.is_none() {
        return Err(Refusal::NoBackup(d.name.clone()));
    }
    let before = d.restoring.take().and_then(|r| r.before);
    d.want = Want::Reset;
    d.status = DatabaseStatus::Creating;
    d.error = None;
    d.restoring = Some(InPlaceRestore { to, before });
    Ok(())
}

/// Its backups turned on or off, or their schedule or retention changed (`backup`, as
/// [`crate::backup_settings::patched`] made it). Its instance archives as they say once it
/// restarts, which the reconciler has it do ([`DatabaseRecord::archiving_changed`]): turned
/// on, it archives into a stanza of its own and its first backup is due once it does; turned
/// off, nothing more is archived (its backups stay in the repository). Whether its archiving
/// changes.
pub fn set_backup(d: &mut DatabaseRecord, backup: Option<devdb_shared::api::BackupStatus>) -> bool {
    // What it archives by now, before the change (records from before this was kept).
    d.settings.archiving.get_or_insert(d.backup.is_some());
    d.backup = backup;
    d.archiving_changed()
}

/// Stop it, keeping its data and credentials; one already stopping stays so.
///
/// # Errors
/// [`Refusal::BeingDeleted`], [`Refusal::Failed`].
pub fn ask_stop(d: &mut DatabaseRecord, reason: StopReason) -> Result<(), Refusal> {
    runnable(d)?;
    if matches!(d.want, Want::Run | Want::Reset) {
        d.want = Want::Stop;
        d.lifecycle.stop_reason = Some(reason);
    }
    Ok(())
}

/// Start it (an owner's start or a proxy's wake); one running or starting stays so. Whether
/// this asked for a start (many clients waking one database cause one start).
///
/// # Errors
/// [`Refusal::BeingDeleted`], [`Refusal::Failed`].
pub fn ask_start(d: &mut DatabaseRecord) -> Result<bool, Refusal> {
    runnable(d)?;
    let asked = d.want == Want::Stop;
    if asked {
        d.want = Want::Run;
    }
    Ok(asked)
}

/// Whether it can be started or stopped at all.
///
/// # Errors
/// [`Refusal::BeingDeleted`], [`Refusal::Failed`].
pub fn runnable(d: &DatabaseRecord) -> Result<(), Refusal> {
    refuse_deleted(d)?;
    if d.status == DatabaseStatus::Error {
        return Err(Refusal::Failed(d.name.clone()));
    }
    Ok(())
}

fn refuse_deleted(d: &DatabaseRecord) -> Result<(), Refusal> {
    if d.want == Want::Delete {
        return Err(Refusal::BeingDeleted(d.name.clone()));
    }
    Ok(())
}

// ---- Decided by the controller: idleness, expiry, room for an owner's start ----

/// Its time to live is up: deleted unless protected. Whether it applied.
pub fn expire(d: &mut DatabaseRecord) -> bool {
    if d.lifecycle.protected {
        return false;
    }
    ask_delete(d);
    true
}

/// Idle for its period: stopped, if it still runs as it should and is not protected. Whether
/// it applied.
pub fn idle_stop(d: &mut DatabaseRecord) -> bool {
    if d.want != Want::Run || d.status != DatabaseStatus::Running || d.lifecycle.protected {
        return false;
    }
    d.want = Want::Stop;
    d.lifecycle.stop_reason = Some(StopReason::Idle);
    true
}

/// Woken by a proxy for nobody who authenticated, it makes room for its owner's own start:
/// stopped as an idle one is. Whether it applied.
pub fn give_way(d: &mut DatabaseRecord) -> bool {
    if d.want != Want::Run {
        return false;
    }
    d.want = Want::Stop;
    d.lifecycle.stop_reason = Some(StopReason::Idle);
    true
}

// ---- Observed by the reconciler as it works ----

/// Its removal has begun.
pub fn deleting(d: &mut DatabaseRecord) {
    d.status = DatabaseStatus::Deleting;
}

/// Its clone is being made.
pub fn cloning(d: &mut DatabaseRecord) {
    d.status = DatabaseStatus::Creating;
    d.error = None;
}

/// Its clone of snapshot `generation` runs, configured as it was made.
pub fn cloned(d: &mut DatabaseRecord, generation: u64, applied: &Configured) {
    d.status = DatabaseStatus::Running;
    // A delete asked for meanwhile stays asked for; a reset is done.
    if d.want == Want::Reset {
        d.want = Want::Run;
    }
    d.snapshot_generation = Some(generation);
    // A new clone archives into a stanza of its own: its first backup is due at once (the
    // moments before it stay restorable from the stanzas before).
    if let Some(backup) = d.backup.as_mut() {
        backup.last_backup_at = None;
    }
    // A reset of a stopped database runs it: no longer stopped (unless a stop is asked for,
    // which the next pass does).
    if d.want != Want::Stop {
        d.lifecycle.stopped_at = None;
        d.lifecycle.stop_reason = None;
    }
    configured(d, applied);
}

/// Its instance runs `applied`.
pub fn configured(d: &mut DatabaseRecord, applied: &Configured) {
    d.settings.applied = applied.settings.clone();
    d.settings.archiving = Some(applied.archiving);
}

/// The state a restore in place replaces is kept: restorable at `before`.
pub fn before_kept(d: &mut DatabaseRecord, before: String) {
    if let Some(restoring) = d.restoring.as_mut() {
        restoring.before = Some(before);
    }
}

/// Its restore in place is done: it runs with the data of the moment asked for, and the
/// moment before the restore is what an undo restores.
pub fn restored_in_place(d: &mut DatabaseRecord, applied: &Configured) {
    let Some(restoring) = d.restoring.take() else { return };
    let generation = d.snapshot_generation;
    cloned(d, 0, applied);
    d.snapshot_generation = generation;
    d.error = None;
    if restoring.before.is_some() {
        d.before_restore = restoring.before;
    }
}

/// Its restore in place failed: it runs as it was before, saying why.
pub fn restore_failed(d: &mut DatabaseRecord, error: &str) {
    if d.restoring.take().is_none() {
        return;
    }
    if d.want == Want::Reset {
        d.want = Want::Run;
    }
    if d.status == DatabaseStatus::Creating {
        d.status = DatabaseStatus::Running;
    }
    d.error = Some(format!("the restore failed, nothing changed: {error}"));
}

/// A reset its project now refuses is dropped, with the reason: its clone is there, untouched.
pub fn reset_refused(d: &mut DatabaseRecord, refusal: &str) {
    d.want = Want::Run;
    d.error = Some(format!("the reset was refused: {refusal}"));
}

/// What the reconciler tried cannot succeed: only a reset moves it on.
pub fn failed(d: &mut DatabaseRecord, error: String) {
    d.status = DatabaseStatus::Error;
    d.error = Some(error);
}

/// Its stopped instance is being started (a wake). Whether it applied.
pub fn starting(d: &mut DatabaseRecord) -> bool {
    let applies = d.want == Want::Run && d.status == DatabaseStatus::Stopped;
    if applies {
        d.status = DatabaseStatus::Starting;
    }
    applies
}

/// Its instance started and answers, configured as it was started.
pub fn started(d: &mut DatabaseRecord, applied: &Configured) {
    if d.want == Want::Run && d.status == DatabaseStatus::Starting {
        d.status = DatabaseStatus::Running;
        d.error = None;
        d.lifecycle.stopped_at = None;
        d.lifecycle.stop_reason = None;
        configured(d, applied);
    }
}

/// A start that cannot succeed now loses nothing: back to sleep with the reason, startable.
pub fn start_failed(d: &mut DatabaseRecord, reason: &str) {
    if d.want == Want::Run && d.status == DatabaseStatus::Starting {
        d.want = Want::Stop;
        d.status = DatabaseStatus::Stopped;
        d.error = Some(reason.to_string());
    }
}

/// Its instance stopped at `at` (a start or a delete asked for meanwhile is the next pass's).
pub fn stopped(d: &mut DatabaseRecord, at: &str) {
    if d.want == Want::Stop {
        d.status = DatabaseStatus::Stopped;
        d.lifecycle.stopped_at = Some(at.to_string());
        d.error = None;
    }
}

/// Its instance was found dead while it should run. Whether it applied.
pub fn found_dead(d: &mut DatabaseRecord, reason: &str) -> bool {
    let applies = d.status == DatabaseStatus::Running;
    if applies {
        d.status = DatabaseStatus::Recovering;
        d.error = Some(reason.to_string());
    }
    applies
}

/// Its instance cannot be started again yet; retried with backoff, recovering meanwhile.
pub fn recovering(d: &mut DatabaseRecord, reason: String) {
    d.status = DatabaseStatus::Recovering;
    d.error = Some(reason);
}

/// Its instance runs again after it was found dead.
pub fn recovered(d: &mut DatabaseRecord) {
    if d.status == DatabaseStatus::Recovering {
        d.status = DatabaseStatus::Running;
        d.error = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_shared::api::DatabaseStatus as S;

    fn record(want: Want, status: S) -> DatabaseRecord {
        serde_json::from_value(serde_json::json!({
            "name": "kate-pg", "project": "shop", "owner": "kate", "status": status, "want": want,
            "port": 5432, "password": "pw", "snapshot_generation": 1, "error": null, "created_at": "now",
        }))
        .expect("a record")
    }

    fn moment(at: &str) -> String {
        at.into()
    }

    #[test]
    fn a_restore_in_place_keeps_the_state_before_it_and_an_undo_goes_back_to_it() {
        let mut d = record(Want::Run, S::Running);
        assert_eq!(ask_restore(&mut d, moment("2026-12-06T10:15:00Z")).map_err(|r| r.code()), Err("no_backup"));
        assert_eq!(d, record(Want::Run, S::Running), "a refusal writes nothing");

        d.backup = Some(devdb_shared::api::BackupStatus::default());
        ask_restore(&mut d, moment("2026-12-06T10:15:00Z")).expect("asked");
        assert_eq!((d.want, d.status, step(&d)), (Want::Reset, S::Creating, Step::Clone));
        let before = moment("2026-12-06T11:00:00Z");
        before_kept(&mut d, before.clone());
        // Asked again mid-way (a corrected moment): what was there before either is kept.
        ask_restore(&mut d, moment("2026-12-06T10:10:00Z")).expect("asked again");
        assert_eq!(d.restoring.as_ref().and_then(|r| r.before.clone()), Some(before.clone()));
        restored_in_place(&mut d, &Default::default());
        assert_eq!(
            (d.want, d.status, d.snapshot_generation),
            (Want::Run, S::Running, Some(1)),
            "its snapshot unchanged"
        );
        assert_eq!((d.restoring.clone(), d.before_restore.clone()), (None, Some(before.clone())));

        // A reset drops a restore asked for; a failed restore leaves it running as it was.
        ask_restore(&mut d, before.clone()).expect("an undo");
        ask_reset(&mut d).expect("a reset");
        assert_eq!(d.restoring, None, "a reset clones the snapshot");
        ask_restore(&mut d, before.clone()).expect("an undo");
        restore_failed(&mut d, "the repository is gone");
        assert_eq!((d.want, d.status, d.restoring.clone()), (Want::Run, S::Running, None));
        assert_eq!(d.error.as_deref(), Some("the restore failed, nothing changed: the repository is gone"));
        assert_eq!(d.before_restore, Some(before), "the last undo point stays");
    }

    #[test]
    fn backups_turned_on_or_off_change_its_archiving_until_it_restarts() {
        let on = || Some(devdb_shared::api::BackupStatus { enabled: true, ..Default::default() });
        let mut d = record(Want::Run, S::Running);
        assert!(!d.archiving_changed(), "a record from before: as its backups say");
        assert!(set_backup(&mut d, on()), "turned on: a restart to archive");
        assert_eq!(d.settings.archiving, Some(false), "not archiving yet");
        assert!(!set_backup(&mut d, None), "off again before it restarted: nothing to change");
        assert!(set_backup(&mut d, on()));
        let applied = d.configured();
        configured(&mut d, &applied);
        assert_eq!((d.settings.archiving, d.archiving_changed()), (Some(true), false), "restarted archiving");
        assert!(set_backup(&mut d, None), "turned off: a restart to stop");
        // A stopped one started again, a reset: configured as they are then.
        let mut stopped = record(Want::Run, S::Starting);
        set_backup(&mut stopped, on());
        let applied = stopped.configured();
        started(&mut stopped, &applied);
        assert!(!stopped.archiving_changed());
        let mut reset = record(Want::Reset, S::Creating);
        set_backup(&mut reset, on());
        let applied = reset.configured();
        cloned(&mut reset, 2, &applied);
        assert!(!reset.archiving_changed());
    }

    const WANTS: [Want; 4] = [Want::Run, Want::Reset, Want::Delete, Want::Stop];
    const STATUSES: [S; 7] = [S::Creating, S::Running, S::Stopped, S::Starting, S::Recovering, S::Error, S::Deleting];

    #[test]
    fn a_delete_asked_for_is_never_undone_by_any_other_transition() {
        type Transition = fn(&mut DatabaseRecord);
        let others: [(&str, Transition); 16] = [
            ("restore", |d| {
                d.backup = Some(devdb_shared::api::BackupStatus::default());
                let _ = ask_restore(d, moment("2026-12-06T10:15:00Z"));
            }),
            ("restored in place", |d| {
                d.restoring = Some(InPlaceRestore { to: moment("2026-12-06T10:15:00Z"), before: None });
                restored_in_place(d, &Default::default());
            }),
            ("restore failed", |d| {
                d.restoring = Some(InPlaceRestore { to: moment("2026-12-06T10:15:00Z"), before: None });
                restore_failed(d, "no WAL");
            }),
            ("reset", |d| {
                let _ = ask_reset(d);
            }),
            ("stop", |d| {
                let _ = ask_stop(d, StopReason::Manual);
            }),
            ("start", |d| {
                let _ = ask_start(d);
            }),
            ("idle", |d| {
                let _ = idle_stop(d);
            }),
            ("give way", |d| {
                let _ = give_way(d);
            }),
            ("cloned", |d| cloned(d, 2, &Default::default())),
            ("starting", |d| {
                let _ = starting(d);
            }),
            ("started", |d| started(d, &Default::default())),
            ("start failed", |d| start_failed(d, "no room")),
            ("stopped", |d| stopped(d, "now")),
            ("found dead", |d| {
                let _ = found_dead(d, "gone");
            }),
            ("recovered", recovered),
            ("expire", |d| {
                let _ = expire(d);
            }),
        ];
        for status in STATUSES {
            for (what, transition) in others {
                let mut d = record(Want::Delete, status);
                transition(&mut d);
                assert_eq!(d.want, Want::Delete, "{what} from deleting/{status:?}");
                assert_eq!(step(&d), Step::Remove);
            }
        }
    }

    #[test]
    fn people_are_refused_with_the_reason_and_nothing_is_written() {
        let mut deleted = record(Want::Delete, S::Deleting);
        let before = deleted.clone();
        assert_eq!(ask_reset(&mut deleted), Err(Refusal::BeingDeleted(before.name.clone())));
        assert_eq!(ask_stop(&mut deleted, StopReason::Manual).map_err(|r| r.code()), Err("being_deleted"));
        assert_eq!(ask_start(&mut deleted).map_err(|r| r.code()), Err("being_deleted"));
        assert_eq!(deleted, before);

        let mut failed = record(Want::Stop, S::Error);
        let before = failed.clone();
        assert_eq!(ask_start(&mut failed), Err(Refusal::Failed(before.name.clone())));
        assert_eq!(
            ask_stop(&mut failed, StopReason::Manual).map_err(|r| r.to_string()).unwrap_err(),
            "database kate-pg failed; reset it to run it again"
        );
        assert_eq!(failed, before, "a failed database is not asked to run by a refused start");
        ask_reset(&mut failed).expect("a reset is how a failed one runs again");
        assert_eq!((failed.want, failed.status, step(&failed)), (Want::Reset, S::Creating, Step::Clone));
    }

    #[test]
    fn a_stop_and_a_start_are_idempotent_and_say_when_they_asked() {
        let mut d = record(Want::Run, S::Running);
        ask_stop(&mut d, StopReason::Manual).expect("stop");
        assert_eq!((d.want, step(&d)), (Want::Stop, Step::Stop));
        ask_stop(&mut d, StopReason::Idle).expect("again");
        assert_eq!(d.lifecycle.stop_reason, Some(StopReason::Manual), "the first stop's reason stays");
        stopped(&mut d, "t1");
        assert_eq!((d.status, step(&d)), (S::Stopped, Step::Nothing));
        assert_eq!(ask_start(&mut d), Ok(true));
        assert_eq!(ask_start(&mut d), Ok(false), "a second wake asks for nothing");
        assert_eq!(step(&d), Step::Start);
        assert!(starting(&mut d));
        started(&mut d, &Default::default());
        assert_eq!((d.status, d.lifecycle.stopped_at.as_deref(), d.lifecycle.stop_reason), (S::Running, None, None));
    }

    #[test]
    fn controller_transitions_apply_only_from_the_states_they_name() {
        for want in WANTS {
            for status in STATUSES {
                let mut d = record(want, status);
                let applied = idle_stop(&mut d);
                assert_eq!(applied, want == Want::Run && status == S::Running, "idle stop from {want:?}/{status:?}");
                let mut d = record(want, status);
                assert_eq!(found_dead(&mut d, "gone"), status == S::Running);
                let mut d = record(want, status);
                assert_eq!(starting(&mut d), want == Want::Run && status == S::Stopped);
                let mut d = record(want, status);
                start_failed(&mut d, "no room");
                let fell_back = want == Want::Run && status == S::Starting;
                assert_eq!(d.status == S::Stopped && d.error.is_some(), fell_back, "{want:?}/{status:?}");
            }
        }
        let mut protected = record(Want::Run, S::Running);
        protected.lifecycle.protected = true;
        assert!(!idle_stop(&mut protected) && !expire(&mut protected));
        assert_eq!(protected.want, Want::Run);
        assert!(give_way(&mut protected), "a wake for nobody gives way even to a protected one's owner");
    }

    #[test]
    fn every_state_has_a_step() {
        for want in WANTS {
            for status in STATUSES {
                let d = record(want, status);
                let s = step(&d);
                if want == Want::Delete {
                    assert_eq!(s, Step::Remove);
                }
                if status == S::Error && want != Want::Delete && want != Want::Reset {
                    assert_eq!(s, Step::Nothing, "only a reset moves a failed one on");
                }
            }
        }
    }
}
