//! The local runtime: each project's snapshot is a stopped PostgreSQL data directory, each
//! database a copy of it (reflink where the filesystem allows) running on its own port.
//!
//! ```text
//! <data-dir>/projects/<project>/snapshot-<gen>/        stopped, cleanly checkpointed template
//! <data-dir>/projects/<project>/gen-<gen>.restoring/   a restore in progress (removed after it;
//!                                                      see crate::restore)
//! <data-dir>/databases/<name>/{data,sock,log}          a running clone
//! <data-dir>/databases/<name>.cloning/                 a clone in progress
//! ```
//! Work happens in `*.restoring` / `*.cloning` and becomes visible by rename, so a crash at any
//! point leaves either the old state or the new one, plus debris the reconciler removes.
//!
//! Directories on the way to instances are `0711` (the PostgreSQL user passes through, nobody
//! lists them); each instance's own directory is private to the PostgreSQL user, and its socket
//! with it, so no other local user can reach it. Restores go through [`devdb_restore`], the
//! same code restore Jobs run, each in a sandbox of its own ([`crate::restore`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use devdb_pgctl::conf::{BASE_CONF, write_conf};
use devdb_pgctl::session::Session;
use devdb_pgctl::sql::{ident, literal};
use devdb_pgctl::{PgCtl, StopMode, conf_quote, passable_dir};
use devdb_restore::SourcePolicy;
use devdb_restore::files::dir_size;
use devdb_shared::Name;

use devdb_core::clock::now;
use devdb_core::model::{DatabaseRecord, ProjectRecord, SnapshotRecord};
use devdb_core::monitor::sampling::SampleLimit;
use devdb_core::runtime::Counters;
use devdb_core::runtime::{ProgressFn, Runtime, RuntimeError};

use crate::restore::{LocalRestore, RestoreSandbox};

mod archiving;
mod in_place;
mod recovery;

const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Room a clone needs beyond its snapshot.
const CLONE_MARGIN: u64 = 64 << 20;

/// PostgreSQL processes under a data directory.
#[derive(Clone)]
pub struct LocalRuntime {
    pg: Arc<PgCtl>,
    /// Bounds on what a source may cost.
    limits: devdb_restore::Limits,
    /// What restores run in.
    sandbox: RestoreSandbox,
    /// The PostgreSQL major version of the binaries.
    version: u32,
    root: PathBuf,
    /// The address instances listen on and the proxy relays to.
    host: String,
    /// Bounds the samples running at once (see [`crate::monitor`]).
    samples: SampleLimit,
    /// Databases' backups (`backup: true`).
    backups: crate::backup::LocalBackups,
}

impl LocalRuntime {
    /// A runtime keeping its instances under `root`, restoring without a sandbox until given
    /// one ([`LocalRuntime::with_sandbox`]).
    ///
    /// # Errors
    /// When the directories of projects and databases cannot be made.
    pub fn new(pg: PgCtl, root: &Path) -> std::io::Result<Self> {
        for dir in [root.join("projects"), root.join("databases")] {
            passable_dir(&dir)?;
        }
        let version = pg.binaries().version();
        let limits = devdb_restore::Limits::default();
        let backups = crate::backup::LocalBackups::new(
            root.join("backup"),
            crate::repository::default_repository(root),
            pg.run_as(),
        );
        Ok(Self {
            backups,
            pg: Arc::new(pg),
            limits,
            sandbox: RestoreSandbox::off(),
            version,
            root: root.into(),
            host: "127.0.0.1".into(),
            samples: SampleLimit::default(),
        })
    }

    /// The same, restoring in `sandbox`.
    #[must_use]
    pub fn with_sandbox(mut self, sandbox: RestoreSandbox) -> Self {
        self.sandbox = sandbox;
        self
    }

    /// The samples running now, and the most that ever ran at once.
    pub fn samples(&self) -> &SampleLimit {
        &self.samples
    }

    /// The same, restoring within `limits`.
    #[must_use]
    pub fn with_limits(mut self, limits: devdb_restore::Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The same, keeping databases' backups in `repository` (`--backup-repo`).
    #[must_use]
    pub fn with_backup_repository(mut self, repository: devdb_backup::Repository) -> Self {
        self.backups = self.backups.with_repository(repository);
        self
    }

    /// Databases' backups: their repository, secret and stanzas.
    pub fn local_backups(&self) -> &crate::backup::LocalBackups {
        &self.backups
    }

    fn project_dir(&self, project: &Name) -> PathBuf {
        self.root.join("projects").join(project.as_str())
    }

    fn snapshot_dir(&self, project: &Name, generation: u64) -> PathBuf {
        self.project_dir(project).join(format!("snapshot-{generation}"))
    }

    fn database_dir(&self, name: &Name) -> PathBuf {
        self.root.join("databases").join(name.as_str())
    }
}

/// Runs blocking work (processes, file copies) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RuntimeError> + Send + 'static,
) -> Result<T, RuntimeError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(RuntimeError::Step { step: "background task", detail: e.to_string() }))
}

impl Runtime for LocalRuntime {
    fn postgres_version(&self) -> u32 {
        self.version
    }

    /// A free loopback port no database holds (the OS picks; the instance binds it moments
    /// later).
    fn new_port(&self, taken: &std::collections::HashSet<u16>) -> Result<u16, RuntimeError> {
        let no_port = |detail: String| RuntimeError::Step { step: "finding a free port", detail };
        for _ in 0..100 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|e| no_port(e.to_string()))?;
            if !taken.contains(&port) {
                return Ok(port);
            }
        }
        Err(no_port("every port the system offered is held by a database".into()))
    }

    async fn check_source(&self, location: &str, allow_private: bool) -> Result<(), String> {
        let what = "the local runtime restores from http://, https:// and file:// URLs (s3:// needs the kube runtime)";
        let policy = if allow_private { SourcePolicy::Any } else { SourcePolicy::PublicOnly };
        devdb_restore::policy::check_source(location, &["http://", "https://", "file://"], what, policy).await
    }

    async fn restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        allowance: Option<devdb_core::runtime::DiskAllowance>,
        progress: ProgressFn,
        cancel: CancellationToken,
    ) -> Result<SnapshotRecord, RuntimeError> {
        let work = self.project_dir(&project.name).join(format!("gen-{generation}.restoring"));
        let (this, name) = (self.clone(), project.name.clone());
        let prepared = {
            let (this, name, work) = (this.clone(), name.clone(), work.clone());
            blocking(move || this.prepare_restore(&name, &work)).await
        };
        let restore =
            Arc::new(LocalRestore::new(self.pg.clone(), self.sandbox.clone(), self.limits, work.clone(), allowance));
        // A cancel (the project deleted, or restored again) ends every step within a chunk or a
        // statement, and kills the restore server under a statement still running.
        let guard = restore.guard.clone();
        let cancelled = cancel.clone();
        let canceller = tokio::spawn(async move {
            cancelled.cancelled().await;
            guard.cancel();
        });
        // The download stops when its future is dropped.
        let fetched = match prepared {
            Ok(()) => tokio::select! {
                fetched = restore.fetch(project, progress) => fetched,
                () = cancel.cancelled() => Err(RuntimeError::Cancelled),
            },
            Err(e) => Err(e),
        };
        let built = match fetched {
            Ok(fetched) => {
                let (restore, project) = (restore.clone(), project.clone());
                blocking(move || restore.build(&project, fetched.as_deref())).await
            }
            Err(e) => Err(e),
        };
        canceller.abort();
        blocking(move || {
            // Success or not, the work directory goes (a failed restore leaves no half-made
            // template), and whatever ran in it with it.
            let published = built.and_then(|loaded| this.publish_snapshot(&name, generation, &work, loaded));
            LocalRestore::stop_leftover(&this.pg, &work);
            remove_dir(&work)?;
            // After a first restore fails, nothing of the project remains (remove_dir only
            // removes an empty directory).
            let _ = std::fs::remove_dir(this.project_dir(&name));
            published
        })
        .await
    }

    async fn clean_project(&self, project: &Name, keep: &[u64]) -> Result<(), RuntimeError> {
        let dir = self.project_dir(project);
        let keep: Vec<PathBuf> = keep.iter().map(|g| self.snapshot_dir(project, *g)).collect();
        let pg = self.pg.clone();
        blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
            for entry in entries.flatten() {
                if !keep.contains(&entry.path()) {
                    LocalRestore::stop_leftover(&pg, &entry.path());
                    remove_dir(&entry.path())?;
                }
            }
            if keep.is_empty() {
                remove_dir(&dir)?;
            }
            Ok(())
        })
        .await
    }

    async fn clone_database(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        generation: u64,
    ) -> Result<(), RuntimeError> {
        let snapshot = self.snapshot_dir(&project.name, generation);
        if !snapshot.is_dir() {
            return Err(RuntimeError::NoSnapshot(project.name.clone()));
        }
        let (this, database, project) = (self.clone(), database.clone(), project.clone());
        blocking(move || this.clone_blocking(&database, &snapshot, &project)).await
    }

    async fn ensure_running(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let dir = self.database_dir(&database.name);
        let data = dir.join("data");
        if !data.join("PG_VERSION").is_file() {
            return Err(RuntimeError::DataMissing(database.name.clone()));
        }
        let (this, database) = (self.clone(), database.clone());
        blocking(move || {
            let pg = &this.pg;
            if !pg.is_running(&data) {
                // With the settings wanted now: settings it could not start with, reverted
                // since, are reverted in its files too.
                this.write_instance_conf(&database, &data)?;
                pg.make_dir(&dir.join("sock")).map_err(RuntimeError::step("preparing the socket directory"))?;
                pg.start(&data, &dir.join("log"), START_TIMEOUT).map_err(RuntimeError::step("starting PostgreSQL"))?;
            }
            Ok(())
        })
        .await
    }

    async fn stop_database(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let (data, pg) = (self.database_dir(&database.name).join("data"), self.pg.clone());
        blocking(move || {
            if pg.is_running(&data) {
                // A clean shutdown: the next start needs no recovery, so a wake is quick.
                pg.stop(&data, StopMode::Fast).map_err(RuntimeError::step("stopping PostgreSQL"))?;
            }
            Ok(())
        })
        .await
    }

    async fn start_database(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        // With the settings wanted now (they may have changed while it slept): ensure_running
        // writes them.
        self.ensure_running(database).await
    }

    async fn apply_settings(&self, database: &DatabaseRecord, restart: bool) -> Result<(), RuntimeError> {
        let dir = self.database_dir(&database.name);
        let data = dir.join("data");
        let (this, database) = (self.clone(), database.clone());
        blocking(move || {
            let pg = &this.pg;
            let running = pg.is_running(&data);
            if running && restart {
                pg.stop(&data, StopMode::Fast).map_err(RuntimeError::step("restarting PostgreSQL"))?;
            }
            this.write_instance_conf(&database, &data)?;
            if !running {
                return Ok(());
            }
            if restart {
                pg.start(&data, &dir.join("log"), START_TIMEOUT).map_err(RuntimeError::step("restarting PostgreSQL"))
            } else {
                pg.reload(&data).map_err(RuntimeError::step("reloading PostgreSQL's settings"))
            }
        })
        .await
    }

    async fn remove_database(&self, name: &Name) -> Result<(), RuntimeError> {
        let (dir, pg) = (self.database_dir(name), self.pg.clone());
        let (cloning, previous) = (dir.with_extension("cloning"), in_place::previous(&dir));
        blocking(move || {
            for d in [&dir, &cloning, &previous] {
                if pg.is_running(&d.join("data")) {
                    pg.stop(&d.join("data"), StopMode::Fast).map_err(RuntimeError::step("stopping PostgreSQL"))?;
                }
                remove_dir(d)?;
            }
            Ok(())
        })
        .await
    }

    async fn dead(&self, running: &[DatabaseRecord]) -> Result<Vec<Name>, RuntimeError> {
        let (pg, dirs): (_, Vec<(Name, PathBuf)>) =
            (self.pg.clone(), running.iter().map(|d| (d.name.clone(), self.database_dir(&d.name))).collect());
        blocking(move || {
            Ok(dirs.into_iter().filter(|(_, dir)| !pg.postmaster_alive(&dir.join("data"))).map(|(n, _)| n).collect())
        })
        .await
    }

    async fn existing_databases(&self) -> Result<Vec<Name>, RuntimeError> {
        Ok(names_in(&self.root.join("databases")))
    }

    async fn existing_projects(&self) -> Result<Vec<Name>, RuntimeError> {
        Ok(names_in(&self.root.join("projects")))
    }

    fn backend(&self, database: &DatabaseRecord) -> String {
        format!("{}:{}", self.host, database.port)
    }

    fn backups(&self) -> bool {
        true
    }

    async fn keep_before_restore(&self, database: &DatabaseRecord) -> Result<std::time::SystemTime, RuntimeError> {
        self.keep_before(database).await
    }

    async fn restore_in_place(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        to: std::time::SystemTime,
    ) -> Result<(), RuntimeError> {
        self.restore_to(database, project, to).await
    }

    async fn restore_database(
        &self,
        database: &DatabaseRecord,
        source: &DatabaseRecord,
        project: &ProjectRecord,
        at: std::time::SystemTime,
    ) -> Result<(), RuntimeError> {
        in_place::no_backups(source)?;
        let backrest = self.backups.backrest_at(source, &self.database_dir(&source.name), at)?;
        let (this, from) = (self.clone(), source.clone());
        blocking(move || this.archive_now(&from)).await?;
        self.restore_staged(database, project, &backrest, devdb_backup::Target::Time(at), Publish::Replace).await
    }

    async fn back_up(&self, database: &DatabaseRecord) -> Result<devdb_core::runtime::BackedUp, RuntimeError> {
        use in_place::failed;
        let _busy = self.backups.exclusive(database).await;
        let backrest = self.backups.backrest(database, &self.database_dir(&database.name))?;
        backrest.ensure_stanza().await.map_err(failed("creating the database's backup stanza"))?;
        let before = backrest.info().await.map_err(failed("reading the database's backups"))?;
        backrest.backup(before.next_kind(std::time::SystemTime::now())).await.map_err(failed("backing up"))?;
        let info = backrest.info().await.map_err(failed("reading the database's backups"))?;
        match (info.last_backup(), info.window(None)) {
            (Some(last), Some(window)) => Ok(devdb_core::runtime::BackedUp {
                at: last.stopped_at,
                restorable_from: window.from,
                restorable_to: window.to,
                repository_bytes: info.backups.iter().map(|b| b.repository_bytes).sum(),
            }),
            _ => Err(RuntimeError::Step { step: "backing up", detail: "no backup listed after it".into() }),
        }
    }

    async fn verify_backups(&self, database: &DatabaseRecord) -> Result<bool, RuntimeError> {
        let _busy = self.backups.exclusive(database).await;
        let backrest = self.backups.backrest(database, &self.database_dir(&database.name))?;
        backrest.verify().await.map_err(|e| RuntimeError::Source(e.to_string()))?;
        Ok(true)
    }

    async fn archive_status(
        &self,
        database: &DatabaseRecord,
    ) -> Result<Option<devdb_core::runtime::ArchiveStatus>, RuntimeError> {
        let (this, database) = (self.clone(), database.clone());
        blocking(move || this.archiving(&database).map(Some)).await
    }

    async fn sample(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
    ) -> Result<Option<Counters>, RuntimeError> {
        let sock = self.database_dir(&database.name).join("sock");
        crate::monitor::sample(&self.samples, sock, database.port, &project.database).await.map(Some)
    }
}

impl LocalRuntime {
    /// A clean work directory for a restore (the controller's alone; the PostgreSQL user may
    /// pass through when restores are not sandboxed): what a killed controller left there is
    /// stopped and removed.
    fn prepare_restore(&self, project: &Name, work: &Path) -> Result<(), RuntimeError> {
        use std::os::unix::fs::PermissionsExt as _;
        LocalRestore::stop_leftover(&self.pg, work);
        remove_dir(work)?;
        passable_dir(&self.project_dir(project)).map_err(RuntimeError::io("creating the project directory"))?;
        std::fs::create_dir(work).map_err(RuntimeError::io("creating the restore directory"))?;
        let mode = if self.sandbox.isolates() { 0o700 } else { 0o711 };
        std::fs::set_permissions(work, std::fs::Permissions::from_mode(mode))
            .map_err(RuntimeError::io("creating the restore directory"))
    }

    /// Renames the built template into place as snapshot `generation`.
    fn publish_snapshot(
        &self,
        project: &Name,
        generation: u64,
        work: &Path,
        loaded: devdb_restore::load::Loaded,
    ) -> Result<SnapshotRecord, RuntimeError> {
        let snapshot = self.snapshot_dir(project, generation);
        remove_dir(&snapshot)?;
        std::fs::rename(LocalRestore::data(work), &snapshot).map_err(RuntimeError::io("publishing the snapshot"))?;
        let size_bytes = dir_size(&snapshot);
        Ok(SnapshotRecord {
            generation,
            created_at: now(),
            size_bytes,
            findings: loaded.findings,
            unlisted_findings: 0,
            unlisted_unmasked: 0,
            // Set by the reconciler.
            masked_with: Vec::new(),
            masked_key_version: 0,
            masking_verified: loaded.verified,
        })
    }

    /// Fails with [`RuntimeError::DiskFull`] unless `need` bytes are free where `path` is.
    fn check_space(&self, path: &Path, need: u64) -> Result<(), RuntimeError> {
        match devdb_restore::limits::free_bytes(path) {
            Ok(free) if free < need => Err(RuntimeError::DiskFull { need: Some(need), free }),
            _ => Ok(()),
        }
    }

    /// A database instance's `postgresql.auto.conf`: its port and socket, its archiving when its
    /// backups are on, then the settings its owner asked for (read last, so they win; none of
    /// them touches archiving).
    fn instance_conf(&self, database: &DatabaseRecord) -> String {
        let dir = self.database_dir(&database.name);
        // Backups that cannot be set up never keep a database from running: it runs without
        // archiving, and its next backup fails with the reason, on the database.
        let archiving = match database.backup.as_ref().map(|_| self.backups.backrest(database, &dir)) {
            Some(Ok(backrest)) => format!(
                "archive_mode = on\narchive_command = {}\narchive_timeout = 60\n",
                conf_quote(backrest.archive_command())
            ),
            Some(Err(error)) => {
                tracing::warn!(database = %database.name, %error, "backups not set up; running without archiving");
                String::new()
            }
            None => String::new(),
        };
        format!(
            "{BASE_CONF}port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {}\ncluster_name = {}\n{archiving}{}",
            database.port,
            conf_quote(dir.join("sock")),
            conf_quote(database.name.as_str()),
            devdb_core::settings::conf_lines(&database.settings.wanted),
        )
    }

    /// Copies the snapshot into `<name>.cloning`, configures its port and socket, swaps it in
    /// for any previous clone, starts it and sets the database's own password.
    fn clone_blocking(
        &self,
        database: &DatabaseRecord,
        snapshot: &Path,
        project: &ProjectRecord,
    ) -> Result<(), RuntimeError> {
        let staging = self.database_dir(&database.name).with_extension("cloning");
        let result = self.clone_into(database, snapshot, project, &staging);
        if result.is_err() {
            // A failed clone leaves nothing behind: on a full disk, that is what frees it.
            let _ = self.clear_staging(&staging);
        }
        result
    }

    fn clone_into(
        &self,
        database: &DatabaseRecord,
        snapshot: &Path,
        project: &ProjectRecord,
        staging: &Path,
    ) -> Result<(), RuntimeError> {
        self.clear_staging(staging)?;
        self.check_space(&self.root.join("databases"), dir_size(snapshot).saturating_add(CLONE_MARGIN))?;
        self.pg.make_dir(staging).map_err(RuntimeError::step("creating the clone directory"))?;
        devdb_restore::files::copy_tree(snapshot, &staging.join("data")).map_err(|e| match e.kind() {
            std::io::ErrorKind::StorageFull => RuntimeError::DiskFull { need: None, free: 0 },
            _ => RuntimeError::Step { step: "copying the snapshot", detail: e.to_string() },
        })?;
        self.pg.give(staging).map_err(RuntimeError::step("handing the clone to PostgreSQL"))?;
        if database.backup.is_some() {
            // Its WAL starts again from the snapshot's: a stanza of its own.
            self.new_stanza(database, &staging.join("data"));
        }
        write_conf(&staging.join("data"), &self.instance_conf(database))
            .map_err(RuntimeError::step("writing the clone's settings"))?;
        self.start_published(database, project, staging, Publish::Replace)
    }

    /// Gives `database`'s new clone (its data in `data`, not started yet) a backup stanza of
    /// its own, created in the repository before it archives anything (once it runs, its
    /// asynchronous archiving holds the lock stanza-create needs). One that cannot be made never
    /// keeps it from being made: its backups then fail, saying why. Called on a blocking thread.
    fn new_stanza(&self, database: &DatabaseRecord, data: &Path) {
        let made = self.backups.new_stanza(database).and_then(|()| {
            let backrest = self.backups.backrest(database, &self.database_dir(&database.name))?;
            tokio::runtime::Handle::current()
                .block_on(backrest.stanza_create_offline(data))
                .map_err(in_place::failed("creating the clone's backup stanza"))
        });
        if let Err(error) = made {
            tracing::warn!(database = %database.name, %error, "backups not set up");
        }
    }

    /// Writes `database`'s configuration into its data directory `data`, its instance stopped
    /// (or about to restart). One whose backups were just turned on first gets a stanza of its
    /// own, as a new clone does: nothing was archived while they were off, so it cannot go on in
    /// the stanza before. Called on a blocking thread.
    fn write_instance_conf(&self, database: &DatabaseRecord, data: &Path) -> Result<(), RuntimeError> {
        if database.backup.is_some() && database.settings.archiving == Some(false) {
            self.new_stanza(database, data);
        }
        write_conf(data, &self.instance_conf(database)).map_err(RuntimeError::step("writing the settings"))
    }

    /// Removes what a clone or a restore interrupted left in `staging`.
    fn clear_staging(&self, staging: &Path) -> Result<(), RuntimeError> {
        if self.pg.is_running(&staging.join("data")) {
            let _ = self.pg.stop(&staging.join("data"), StopMode::Immediate);
        }
        remove_dir(staging)
    }

    /// Configures, publishes and starts a data directory pgBackRest restored into `staging`:
    /// the recovery settings it wrote are kept after the instance's own (its archiving, when
    /// its backups are on, goes to a stanza of its own).
    fn finish_restore(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        staging: &Path,
        publish: Publish,
    ) -> Result<(), RuntimeError> {
        let data = staging.join("data");
        let written = std::fs::read_to_string(data.join("postgresql.auto.conf"))
            .map_err(RuntimeError::io("reading the restore's recovery settings"))?;
        // pgBackRest named the directory it restored into; the instance runs where it is
        // published.
        let published = self.database_dir(&database.name).join("data");
        let recovery: String = written
            .lines()
            .filter(|l| l.starts_with("restore_command") || l.starts_with("recovery_target"))
            .map(|l| format!("{}\n", l.replace(&data.display().to_string(), &published.display().to_string())))
            .collect();
        self.pg.give(staging).map_err(RuntimeError::step("handing the restored copy to PostgreSQL"))?;
        // Its WAL goes on from the moment's: a stanza of its own, which it archives into.
        if database.backup.is_some() {
            self.new_stanza(database, &data);
        }
        write_conf(&data, &format!("{}{recovery}", self.instance_conf(database)))
            .map_err(RuntimeError::step("writing the restored copy's settings"))?;
        self.start_published(database, project, staging, publish)
    }

    /// Swaps the data directory made in `staging` in for any previous one, starts it, waits
    /// until it is out of recovery (a restore to a moment is promoted once there), checks its
    /// catalog and sets the database's own password.
    fn start_published(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        staging: &Path,
        publish: Publish,
    ) -> Result<(), RuntimeError> {
        let dir = self.database_dir(&database.name);
        let sock = dir.join("sock");
        if self.pg.is_running(&dir.join("data")) {
            self.pg.stop(&dir.join("data"), StopMode::Fast).map_err(RuntimeError::step("stopping the old clone"))?;
        }
        match publish {
            Publish::Replace => remove_dir(&dir)?,
            Publish::KeepPrevious => {
                remove_dir(&in_place::previous(&dir))?;
                std::fs::rename(&dir, in_place::previous(&dir))
                    .map_err(RuntimeError::io("keeping the data it replaces"))?;
            }
        }
        std::fs::rename(staging, &dir).map_err(RuntimeError::io("publishing the clone"))?;
        self.pg.make_dir(&sock).map_err(RuntimeError::step("preparing the socket directory"))?;
        self.pg
            .start(&dir.join("data"), &dir.join("log"), START_TIMEOUT)
            .map_err(RuntimeError::step("starting PostgreSQL"))?;
        let mut admin =
            Session::admin(&sock, database.port, "postgres").map_err(RuntimeError::step("setting the password"))?;
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while admin.rows("SELECT pg_is_in_recovery()").map_err(RuntimeError::step("waiting for recovery"))?
            != [[Some("f".to_string())]]
        {
            if std::time::Instant::now() > deadline {
                return Err(RuntimeError::Step {
                    step: "recovering to the moment",
                    detail: "still in recovery".into(),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Checked again in every clone, before anyone can log in to it: what its restore
        // checked is still so (a snapshot changed since would otherwise hand its owner a
        // superuser among everyone's instances).
        if let Err(error) = devdb_restore::template::check_catalog(&mut admin, &project.database) {
            drop(admin);
            let _ = self.pg.stop(&dir.join("data"), StopMode::Immediate);
            return Err(RuntimeError::Source(format!(
                "project {}'s snapshot is not what its restore made ({error}); refresh the project",
                project.name
            )));
        }
        let sql = format!("ALTER ROLE {} PASSWORD {}", ident(&project.username), literal(&database.password));
        admin.execute(&sql).map_err(RuntimeError::step("setting the password"))?;
        Ok(())
    }
}

/// How a restored data directory takes the place of the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publish {
    /// The one before is removed (a new database, a reset).
    Replace,
    /// The one before is kept aside until the restored one runs (a restore in place).
    KeepPrevious,
}

fn remove_dir(dir: &Path) -> Result<(), RuntimeError> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::Step { step: "removing files", detail: format!("{}: {e}", dir.display()) })
        }
        _ => Ok(()),
    }
}

/// Object names among a directory's entries (ignoring `.cloning` suffixes).
fn names_in(dir: &Path) -> Vec<Name> {
    let mut names: Vec<Name> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            Name::new(file.strip_suffix(".cloning").unwrap_or(&file)).ok()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sources_it_cannot_read_are_refused_with_what_it_can() {
        let dir = tempfile::tempdir().expect("tempdir");
        let runtime = LocalRuntime::new(PgCtl::discover(None).expect("binaries"), dir.path()).expect("runtime");
        let s3 = runtime.check_source("s3://bucket/shop.dump", true).await.expect_err("no S3 here");
        assert!(s3.contains("kube runtime") && s3.contains("file://"), "{s3}");
        let private = runtime.check_source("http://127.0.0.1:9/x", false).await.expect_err("loopback");
        assert!(private.contains("a loopback address"), "{private}");
        assert!(runtime.check_source("http://127.0.0.1:9/x", true).await.is_ok(), "admins may");
        assert!(runtime.check_source("file:///srv/dumps/shop.sql", false).await.is_ok());
        let first = runtime.new_port(&Default::default()).expect("a port");
        let second = runtime.new_port(&[first].into()).expect("another");
        assert_ne!(first, second, "a port a database holds is not given again");
        std::net::TcpListener::bind(("127.0.0.1", second)).expect("a free one");
    }
}
