//! The local runtime: each project's snapshot is a stopped PostgreSQL data directory, each
//! database a copy of it (reflink where the filesystem allows) running on its own port.
//!
//! ```text
//! <data-dir>/projects/<project>/snapshot-<gen>/        stopped, cleanly checkpointed template
//! <data-dir>/projects/<project>/gen-<gen>.restoring/   a restore in progress (removed on failure)
//! <data-dir>/databases/<name>/{data,sock,log}          a running clone
//! <data-dir>/databases/<name>.cloning/                 a clone in progress
//! ```
//! Work happens in `*.restoring` / `*.cloning` and becomes visible by rename, so a crash at any
//! point leaves either the old state or the new one, plus debris the reconciler removes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use devdb_pgctl::{PgCtl, StopMode, conf_quote};
use devdb_shared::Name;

use super::{ProgressFn, Runtime, RuntimeError};
use crate::clock::now;
use crate::restore::{self, Dump, DumpFormat};
use crate::store::{DatabaseRecord, ProjectRecord, SnapshotRecord};

/// The superuser of every instance; reached only over the private Unix socket.
const SUPERUSER: &str = "postgres";
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The restore server listens only on its private socket, named after this port.
const TEMPLATE_PORT: u16 = 5432;
/// Settings every instance keeps: a small pg_wal (clones copy it), and sockets only for the
/// PostgreSQL user (local connections are trusted, so the socket is the boundary).
const BASE_CONF: &str = "max_wal_size = '64MB'\nmin_wal_size = '32MB'\nunix_socket_permissions = 0700\n";

/// PostgreSQL processes under a data directory.
#[derive(Clone)]
pub struct LocalRuntime {
    pg: Arc<PgCtl>,
    root: PathBuf,
    /// The address instances listen on and the proxy relays to.
    host: String,
}

impl LocalRuntime {
    pub fn new(pg: PgCtl, root: &Path) -> Self {
        Self { pg: Arc::new(pg), root: root.into(), host: "127.0.0.1".into() }
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
    async fn restore(
        &self,
        project: &ProjectRecord,
        generation: u64,
        progress: ProgressFn,
    ) -> Result<SnapshotRecord, RuntimeError> {
        let work = self.project_dir(&project.name).join(format!("gen-{generation}.restoring"));
        // A controller killed mid-restore may have left its restore server running.
        if self.pg.is_running(&work.join("data")) {
            let _ = self.pg.stop(&work.join("data"), StopMode::Immediate);
        }
        remove_dir(&work)?;
        self.pg.make_dir(&work).map_err(RuntimeError::step("creating the restore directory"))?;
        let result = async {
            let fetched = match &project.backup_location {
                Some(location) => Some(restore::fetch(location, &work.join("download"), |d, t| progress(d, t)).await?),
                None => None,
            };
            let (this, project, work2) = (self.clone(), project.clone(), work.clone());
            blocking(move || {
                let dump = fetched.map(|f| restore::prepare(&f.path, &work2)).transpose()?;
                this.restore_into_template(&project, dump.as_ref(), &work2)
            })
            .await
        }
        .await;
        let outcome = match result {
            Ok(()) => {
                let snapshot = self.snapshot_dir(&project.name, generation);
                remove_dir(&snapshot)?;
                std::fs::rename(work.join("data"), &snapshot).map_err(RuntimeError::io("publishing the snapshot"))?;
                let size_bytes = dir_size(&snapshot);
                Ok(SnapshotRecord { generation, created_at: now(), size_bytes })
            }
            Err(e) => Err(e),
        };
        // Success or not, the work directory goes (a failed restore leaves no half-made template).
        let data = work.join("data");
        if self.pg.is_running(&data) {
            let _ = self.pg.stop(&data, StopMode::Immediate);
        }
        remove_dir(&work)?;
        // After a first restore fails, nothing of the project remains (remove_dir only removes
        // an empty directory).
        let _ = std::fs::remove_dir(self.project_dir(&project.name));
        outcome
    }

    async fn clean_project(&self, project: &Name, keep: Option<u64>) -> Result<(), RuntimeError> {
        let dir = self.project_dir(project);
        let keep = keep.map(|g| format!("snapshot-{g}"));
        let pg = self.pg.clone();
        blocking(move || {
            let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(()) };
            for entry in entries.flatten() {
                if Some(entry.file_name().to_string_lossy().as_ref()) != keep.as_deref() {
                    let data = entry.path().join("data");
                    if pg.is_running(&data) {
                        let _ = pg.stop(&data, StopMode::Immediate);
                    }
                    remove_dir(&entry.path())?;
                }
            }
            if keep.is_none() {
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
        let (this, database, user) = (self.clone(), database.clone(), project.username.clone());
        blocking(move || this.clone_blocking(&database, &snapshot, &user)).await
    }

    async fn ensure_running(&self, database: &DatabaseRecord) -> Result<(), RuntimeError> {
        let dir = self.database_dir(&database.name);
        let data = dir.join("data");
        if !data.join("PG_VERSION").is_file() {
            return Err(RuntimeError::DataMissing(database.name.clone()));
        }
        let pg = self.pg.clone();
        blocking(move || {
            if !pg.is_running(&data) {
                pg.make_dir(&dir.join("sock")).map_err(RuntimeError::step("preparing the socket directory"))?;
                pg.start(&data, &dir.join("log"), START_TIMEOUT).map_err(RuntimeError::step("starting PostgreSQL"))?;
            }
            Ok(())
        })
        .await
    }

    async fn remove_database(&self, name: &Name) -> Result<(), RuntimeError> {
        let (dir, pg) = (self.database_dir(name), self.pg.clone());
        let cloning = dir.with_extension("cloning");
        blocking(move || {
            for d in [&dir, &cloning] {
                if pg.is_running(&d.join("data")) {
                    pg.stop(&d.join("data"), StopMode::Fast).map_err(RuntimeError::step("stopping PostgreSQL"))?;
                }
                remove_dir(d)?;
            }
            Ok(())
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
}

impl LocalRuntime {
    /// initdb, start on a private socket, create the project's user and database, restore the
    /// dump, then checkpoint and stop cleanly so the data directory is a consistent template.
    fn restore_into_template(
        &self,
        project: &ProjectRecord,
        dump: Option<&Dump>,
        work: &Path,
    ) -> Result<(), RuntimeError> {
        let data = work.join("data");
        self.pg.make_dir(work).map_err(RuntimeError::step("preparing the restore directory"))?;
        self.pg.initdb(&data, SUPERUSER, &[]).map_err(RuntimeError::step("initdb"))?;
        // Loading is faster without fsync; the template is synced once, after a clean stop.
        let conf = format!(
            "{BASE_CONF}port = {TEMPLATE_PORT}\nlisten_addresses = ''\nunix_socket_directories = {}\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_wal_size = '1GB'\n",
            conf_quote(work)
        );
        write_conf(&data, &conf)?;
        self.pg
            .start(&data, &work.join("log"), START_TIMEOUT)
            .map_err(RuntimeError::step("starting the restore server"))?;

        // Not a superuser: every instance's server runs as the same OS user, so a superuser could
        // reach the others (COPY … TO PROGRAM). The user owns its database and may create more.
        let role = format!("CREATE ROLE {} LOGIN CREATEDB PASSWORD '{}'", ident(&project.username), project.password);
        let database = format!("CREATE DATABASE {} OWNER {}", ident(&project.database), ident(&project.username));
        self.psql(work, TEMPLATE_PORT, "postgres", SUPERUSER, &["-c", &role, "-c", &database])
            .map_err(RuntimeError::step("creating the user and database"))?;

        if let Some(dump) = dump {
            self.restore_dump(project, dump, work)?;
        }

        // Statistics make the clones' plans realistic; a small max_wal_size keeps pg_wal (and
        // so every clone) small.
        let finish = [
            "-c",
            "ANALYZE",
            "-c",
            "ALTER SYSTEM SET max_wal_size = '64MB'",
            "-c",
            "ALTER SYSTEM SET min_wal_size = '32MB'",
            "-c",
            "SELECT pg_reload_conf()",
        ];
        self.psql(work, TEMPLATE_PORT, &project.database, SUPERUSER, &finish)
            .map_err(RuntimeError::step("analyzing"))?;
        self.psql(work, TEMPLATE_PORT, "postgres", SUPERUSER, &["-c", "CHECKPOINT", "-c", "CHECKPOINT"])
            .map_err(RuntimeError::step("checkpoint"))?;
        self.pg.stop(&data, StopMode::Fast).map_err(RuntimeError::step("stopping the restore server"))?;
        write_conf(&data, BASE_CONF)?;
        let _ = Command::new("sync").status();
        Ok(())
    }

    /// pg_restore (parallel where the format allows) or psql, into the project's database as its
    /// user, without the source's owners and grants; the first error stops the restore.
    fn restore_dump(&self, project: &ProjectRecord, dump: &Dump, work: &Path) -> Result<(), RuntimeError> {
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get()).to_string();
        let target =
            ["-h", &work.to_string_lossy(), "-U", &project.username, "-d", &project.database].map(str::to_owned);
        let mut cmd = match dump.format {
            DumpFormat::Plain => {
                // psql runs meta-commands (\! runs a shell): refuse any outside COPY data, and run
                // psql as the unprivileged PostgreSQL user with the dump on stdin.
                restore::check_plain_sql(&dump.path)?;
                let file = std::fs::File::open(&dump.path).map_err(RuntimeError::io("opening the dump"))?;
                let mut c = self.pg.command("psql");
                c.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"]).args(&target).stdin(file);
                c
            }
            format => {
                let mut c = self.pg.client("pg_restore");
                c.args(["--no-owner", "--no-acl", "--exit-on-error"]).args(&target);
                if matches!(format, DumpFormat::Custom | DumpFormat::Directory) {
                    c.args(["-j", &jobs]);
                }
                c.arg(&dump.path);
                c
            }
        };
        let tool = if dump.format == DumpFormat::Plain { "psql" } else { "pg_restore" };
        devdb_pgctl::output(&mut cmd, tool).map_err(RuntimeError::step("restoring the dump"))?;
        Ok(())
    }

    /// Copies the snapshot into `<name>.cloning`, configures its port and socket, swaps it in
    /// for any previous clone, starts it and sets the database's own password.
    fn clone_blocking(&self, database: &DatabaseRecord, snapshot: &Path, user: &str) -> Result<(), RuntimeError> {
        let dir = self.database_dir(&database.name);
        let staging = dir.with_extension("cloning");
        if self.pg.is_running(&staging.join("data")) {
            let _ = self.pg.stop(&staging.join("data"), StopMode::Immediate);
        }
        remove_dir(&staging)?;
        self.pg.make_dir(&staging).map_err(RuntimeError::step("creating the clone directory"))?;
        copy_tree(snapshot, &staging.join("data")).map_err(RuntimeError::io("copying the snapshot"))?;
        self.pg.give(&staging).map_err(RuntimeError::step("handing the clone to PostgreSQL"))?;
        let sock = dir.join("sock");
        let conf = format!(
            "{BASE_CONF}port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {}\ncluster_name = {}\n",
            database.port,
            conf_quote(&sock),
            conf_quote(database.name.as_str())
        );
        write_conf(&staging.join("data"), &conf)?;
        if self.pg.is_running(&dir.join("data")) {
            self.pg.stop(&dir.join("data"), StopMode::Fast).map_err(RuntimeError::step("stopping the old clone"))?;
        }
        remove_dir(&dir)?;
        std::fs::rename(&staging, &dir).map_err(RuntimeError::io("publishing the clone"))?;
        self.pg.make_dir(&sock).map_err(RuntimeError::step("preparing the socket directory"))?;
        self.pg
            .start(&dir.join("data"), &dir.join("log"), START_TIMEOUT)
            .map_err(RuntimeError::step("starting PostgreSQL"))?;
        let sql = format!("ALTER ROLE {} PASSWORD '{}'", ident(user), database.password);
        self.psql(&sock, database.port, "postgres", SUPERUSER, &["-c", &sql])
            .map_err(RuntimeError::step("setting the password"))?;
        Ok(())
    }

    /// Runs psql against the server on `socket_dir` (whose socket file is named after `port`).
    fn psql(
        &self,
        socket_dir: &Path,
        port: u16,
        db: &str,
        user: &str,
        args: &[&str],
    ) -> Result<(), devdb_pgctl::PgError> {
        let mut cmd = self.pg.client("psql");
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h"]).arg(socket_dir);
        cmd.args(["-p", &port.to_string(), "-d", db, "-U", user]).args(args);
        devdb_pgctl::output(&mut cmd, "psql").map(|_| ())
    }
}

/// Replaces `postgresql.auto.conf` (the file `ALTER SYSTEM` writes).
fn write_conf(data: &Path, conf: &str) -> Result<(), RuntimeError> {
    std::fs::write(data.join("postgresql.auto.conf"), conf).map_err(RuntimeError::io("writing postgresql.auto.conf"))
}

/// Quotes an SQL identifier. Usernames and database names are validated lower-case words, so
/// this never meets a quote, but quoting keeps reserved words working.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
/// Copies a stopped data directory file by file, as reflinks where the filesystem allows. In
/// this process, not a `cp` child: a controller killed mid-copy leaves no copier behind to race
/// the next attempt.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    let mut stack = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((source, target)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&source)?;
        if meta.is_dir() {
            std::fs::create_dir(&target)?;
            std::fs::set_permissions(&target, meta.permissions())?;
            for entry in std::fs::read_dir(&source)? {
                let entry = entry?;
                stack.push((entry.path(), target.join(entry.file_name())));
            }
        } else if meta.file_type().is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&source)?, &target)?;
        } else {
            reflink_copy::reflink_or_copy(&source, &target)?;
            std::fs::set_permissions(&target, meta.permissions())?;
        }
    }
    Ok(())
}

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

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_copied_tree_keeps_contents_modes_and_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        let from = dir.path().join("from");
        std::fs::create_dir_all(from.join("base/1")).expect("dirs");
        std::fs::write(from.join("PG_VERSION"), "15\n").expect("file");
        std::fs::write(from.join("base/1/1259"), vec![7_u8; 100_000]).expect("file");
        std::fs::set_permissions(from.join("base"), std::fs::Permissions::from_mode(0o700)).expect("mode");
        std::fs::set_permissions(from.join("PG_VERSION"), std::fs::Permissions::from_mode(0o600)).expect("mode");
        std::os::unix::fs::symlink("base/1", from.join("link")).expect("symlink");
        let to = dir.path().join("to");
        copy_tree(&from, &to).expect("copies");
        assert_eq!(std::fs::read(to.join("base/1/1259")).expect("read"), vec![7_u8; 100_000]);
        assert_eq!(std::fs::read_to_string(to.join("PG_VERSION")).expect("read"), "15\n");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&to.join("base")), 0o700);
        assert_eq!(mode(&to.join("PG_VERSION")), 0o600);
        assert_eq!(std::fs::read_link(to.join("link")).expect("link"), Path::new("base/1"));
        assert!(copy_tree(&from, &to).is_err(), "never copies over an existing tree");
    }
}
