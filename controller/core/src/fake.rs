//! A [`Runtime`] that runs nothing: instances are names in a set, and tests script its failures.
//! With [`crate::memory::MemoryStore`] it lets the router and the reconciler be tested
//! in-process, in milliseconds, with `tokio::time::pause`.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use devdb_shared::Name;

use crate::clock::now;
use crate::model::{DatabaseRecord, ProjectRecord, SnapshotRecord};
use crate::runtime::{Platform, ProgressFn, Runtime, RuntimeError};

/// The operations a script can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Restore,
    Clone,
    Start,
    Stop,
    Remove,
    Settings,
    /// Readying a restore in place ([`Runtime::keep_before_restore`]).
    KeepBefore,
    RestoreInPlace,
    /// Checking a database's backups ([`Runtime::verify_backups`]).
    Verify,
}

#[derive(Default)]
struct State {
    /// Instances running now.
    running: HashSet<Name>,
    /// Instances stopped, with their data.
    stopped: HashSet<Name>,
    /// Failures to return, per operation, in order.
    failures: HashMap<Op, VecDeque<RuntimeError>>,
    /// Every operation, as `op name`, in order.
    calls: Vec<String>,
    /// Restores wait until released or cancelled (a source that takes its time).
    hold_restores: bool,
    /// What [`Runtime::sample`] answers for a running instance.
    counters: HashMap<Name, crate::runtime::Counters>,
    /// What restores report the personal-data scan found.
    findings: Vec<devdb_shared::api::PiiFinding>,
    /// The disk allowance each restore was given, in order.
    allowances: Vec<Option<crate::runtime::DiskAllowance>>,
    /// Each restore in place done, with its moment, in order.
    restored_to: Vec<(Name, std::time::SystemTime)>,
    /// The snapshot generations each project has (restored, not cleaned yet).
    snapshots: HashMap<Name, BTreeSet<u64>>,
    /// The snapshot generation each database was last cloned from.
    cloned_from: HashMap<Name, u64>,
    /// What [`Runtime::archive_status`] answers for an instance.
    archiving: HashMap<Name, crate::runtime::ArchiveStatus>,
}

/// The fake runtime.
#[derive(Default)]
pub struct FakeRuntime {
    /// The port every database gets, if one (else each its own).
    fixed_port: Option<u16>,
    state: Mutex<State>,
}

/// The fake platform: the in-memory store and the fake runtime.
pub struct FakePlatform;

impl Platform for FakePlatform {
    type Store = crate::memory::MemoryStore;
    type Runtime = FakeRuntime;
}

impl FakeRuntime {
    /// A runtime that gives every database `port`.
    pub fn with_fixed_port(port: u16) -> Self {
        Self { fixed_port: Some(port), state: Mutex::default() }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The next `op` fails with `error`.
    pub fn fail_next(&self, op: Op, error: RuntimeError) {
        self.with(|s| s.failures.entry(op).or_default().push_back(error));
    }

    /// From now on, restores wait until released (or cancelled).
    pub fn hold_restores(&self) {
        self.with(|s| s.hold_restores = true);
    }

    /// Held restores (and later ones) go on.
    pub fn release_restores(&self) {
        self.with(|s| s.hold_restores = false);
    }

    /// From now on, restores report `findings` from their scan.
    pub fn set_findings(&self, findings: Vec<devdb_shared::api::PiiFinding>) {
        self.with(|s| s.findings = findings);
    }

    /// From now on, a sample of the running instance `name` reads `counters`.
    pub fn set_counters(&self, name: &Name, counters: crate::runtime::Counters) {
        self.with(|s| s.counters.insert(name.clone(), counters));
    }

    /// The instance of `name` dies (as a SIGKILL would leave it).
    pub fn kill(&self, name: &Name) {
        self.with(|s| s.running.remove(name));
    }

    /// Whether the instance of `name` runs.
    pub fn is_running(&self, name: &Name) -> bool {
        self.with(|s| s.running.contains(name))
    }

    /// The disk allowance of each restore so far.
    pub fn allowances(&self) -> Vec<Option<crate::runtime::DiskAllowance>> {
        self.with(|s| s.allowances.clone())
    }

    /// From now on, the archiving of the instance `name` is `status`.
    pub fn set_archiving(&self, name: &Name, status: crate::runtime::ArchiveStatus) {
        self.with(|s| s.archiving.insert(name.clone(), status));
    }

    /// Each restore in place done so far, with its moment.
    pub fn restored_to(&self) -> Vec<(Name, std::time::SystemTime)> {
        self.with(|s| s.restored_to.clone())
    }

    /// The snapshot generations `project` has, oldest first.
    pub fn snapshots(&self, project: &Name) -> Vec<u64> {
        self.with(|s| s.snapshots.get(project).map(|g| g.iter().copied().collect()).unwrap_or_default())
    }

    /// The snapshot generation `database` was last cloned from.
    pub fn cloned_from(&self, database: &Name) -> Option<u64> {
        self.with(|s| s.cloned_from.get(database).copied())
    }

    /// Every operation so far, as `"op name"`.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    fn call(&self, op: Op, name: &Name) -> Result<(), RuntimeError> {
        self.with(|s| {
            s.calls.push(format!("{op:?} {name}").to_lowercase());
            match s.failures.get_mut(&op).and_then(VecDeque::pop_front) {
                Some(error) => Err(error),
                None => Ok(()),
            }
        })
    }
}

impl Runtime for FakeRuntime {
    fn postgres_version(&self) -> u32 {
        15
    }

    fn backups(&self) -> bool {
        true
    }

    /// As a clone (nothing runs).
    async fn restore_database(
        &self,
        database: &DatabaseRecord,
        _source: &DatabaseRecord,
        project: &ProjectRecord,
        _at: std::time::SystemTime,
    ) -> Result<(), RuntimeError> {
        let generation = project.snapshot.as_ref().map_or(0, |s| s.generation);
        self.clone_database(database, project, generation).await
    }

    /// Now.
    async fn keep_before_restore(&self, database: &DatabaseRecord) -> Result<std::time::SystemTime, RuntimeError> {
        self.call(Op::KeepBefore, &database.name)?;
        Ok(std::time::SystemTime::now())
    }

    /// It runs (as it did on an error).
    async fn restore_in_place(
        &self,
        database: &DatabaseRecord,
        _project: &ProjectRecord,
        to: std::time::SystemTime,
    ) -> Result<(), RuntimeError> {
        let outcome = self.call(Op::RestoreInPlace, &database.name);
        self.with(|s| {
            s.stopped.remove(&database.name);
            s.running.insert(database.name.clone());
            if outcome.is_ok() {
                s.restored_to.push((database.name.clone(), to));
            }
        });
        outcome
    }

    /// A backup of nothing: restorable from the first one to now.
    async fn back_up(&self, database: &DatabaseRecord) -> Result<crate::runtime::BackedUp, RuntimeError> {
        let now = std::time::SystemTime::now();
        let from = match database.backup.as_ref().and_then(|b| b.restorable_from.as_deref()) {
            Some(from) => humantime::parse_rfc3339_weak(from).unwrap_or(now),
            None => now,
        };
        Ok(crate::runtime::BackedUp { at: now, restorable_from: from, restorable_to: now, repository_bytes: 1 << 20 })
    }

    /// Checked, unless a [`Op::Verify`] failure is scripted.
    async fn verify_backups(&self, database: &DatabaseRecord) -> Result<bool, RuntimeError> {
        self.call(Op::Verify, &database.name).map(|()| true)
    }

    /// As set by [`FakeRuntime::set_archiving`], else nothing to say.
    async fn archive_status(
        &self,
        database: &DatabaseRecord,
    ) -> Result<Option<crate::runtime::ArchiveStatus>, RuntimeError> {
        Ok(self.with(|s| s.archiving.get(&database.name).copied()))
    }

    /// The fixed port, or the first from 20000 up that no database holds (nothing listens).
    fn new_port(&self, taken: &std::collections::HashSet<u16>) -> Result<u16, RuntimeError> {
        if let Some(port) = self.fixed_port {
            return Ok(port);
        }
        (20000..=u16::MAX)
            .find(|p| !taken.contains(p))
            .ok_or_else(|| RuntimeError::Step { step: "finding a free port", detail: "none left".into() })
    }

    /// Sources on `private.example` are private addresses; `ftp://` is unsupported.
    async fn check_source(&self, location: &str, allow_private: bool) -> Result<(), String> {
        if location.starts_with("ftp://") {
            return Err("this runtime restores from http:// and https:// URLs".into());
        }
        if !allow_private && location.contains("private.example") {
            return Err("refused source: private.example is a private address".into());
        }
        Ok(())
    }

    async fn restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        allowance: Option<crate::runtime::DiskAllowance>,
        progress: ProgressFn,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Result<SnapshotRecord, RuntimeError> {
        self.with(|s| s.allowances.push(allowance));
        progress(1, Some(2));
        self.call(Op::Restore, &project.name)?;
        // A held restore ends when released, or cancelled.
        while self.with(|s| s.hold_restores) {
            tokio::select! {
                () = cancel.cancelled() => return Err(RuntimeError::Cancelled),
                () = tokio::time::sleep(std::time::Duration::from_millis(1)) => {}
            }
        }
        progress(2, Some(2));
        self.with(|s| s.snapshots.entry(project.name.clone()).or_default().insert(generation));
        Ok(SnapshotRecord {
            generation,
            created_at: now(),
            size_bytes: 1 << 20,
            findings: self.with(|s| s.findings.clone()),
            unlisted_findings: 0,
            unlisted_unmasked: 0,
            // Set by the reconciler.
            masked_with: Vec::new(),
            masked_key_version: 0,
            masking_verified: None,
        })
    }

    async fn clean_project(&self, project: &Name, keep: &[u64]) -> Result<(), RuntimeError> {
        self.with(|s| {
            if let Some(snapshots) = s.snapshots.get_mut(project) {
                snapshots.retain(|g| keep.contains(g));
            }
        });
        Ok(())
    }

    /// A clone of a snapshot the project no longer has fails, as the real runtimes' do.
    async fn clone_database(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        generation: u64,
    ) -> Result<(), RuntimeError> {
        self.call(Op::Clone, &database.name)?;
        self.with(|s| {
            if !s.snapshots.get(&project.name).is_some_and(|g| g.contains(&generation)) {
                return Err(RuntimeError::NoSnapshot(project.name.clone()));
            }
            s.cloned_from.insert(database.name.clone(), generation);
            s.running.insert(database.name.clone());
            Ok(())
        })
    }

    async fn ensure_running(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        if self.is_running(&database.name) {
            return Ok(());
        }
        self.call(Op::Start, &database.name)?;
        self.with(|s| s.running.insert(database.name.clone()));
        Ok(())
    }

    async fn stop_database(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        self.call(Op::Stop, &database.name)?;
        self.with(|s| {
            s.running.remove(&database.name);
            s.stopped.insert(database.name.clone());
        });
        Ok(())
    }

    async fn start_database(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        self.call(Op::Start, &database.name)?;
        self.with(|s| {
            s.stopped.remove(&database.name);
            s.running.insert(database.name.clone());
        });
        Ok(())
    }

    async fn apply_settings(&self, database: &DatabaseRecord, restart: bool) -> Result<(), RuntimeError> {
        self.call(Op::Settings, &database.name)?;
        let how = if restart { "restart" } else { "reload" };
        self.with(|s| s.calls.push(format!("settings {} ({how})", database.name)));
        Ok(())
    }

    async fn remove_database(&self, name: &Name) -> Result<(), RuntimeError> {
        self.call(Op::Remove, name)?;
        self.with(|s| {
            s.running.remove(name);
            s.stopped.remove(name);
        });
        Ok(())
    }

    async fn dead(&self, running: &[DatabaseRecord]) -> Result<Vec<Name>, RuntimeError> {
        Ok(self.with(|s| running.iter().filter(|d| !s.running.contains(&d.name)).map(|d| d.name.clone()).collect()))
    }

    async fn existing_databases(&self) -> Result<Vec<Name>, RuntimeError> {
        Ok(self.with(|s| s.running.iter().chain(&s.stopped).cloned().collect()))
    }

    async fn existing_projects(&self) -> Result<Vec<Name>, RuntimeError> {
        Ok(Vec::new())
    }

    fn backend(&self, database: &DatabaseRecord) -> String {
        format!("127.0.0.1:{}", database.port)
    }

    async fn sample(
        &self,
        database: &DatabaseRecord,
        _project: &ProjectRecord,
    ) -> Result<Option<crate::runtime::Counters>, RuntimeError> {
        Ok(self.with(|s| s.running.contains(&database.name).then(|| s.counters.get(&database.name).copied()).flatten()))
    }
}
