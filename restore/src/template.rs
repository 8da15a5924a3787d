//! The template: a data directory holding the project's role and database with the dump
//! restored, stopped cleanly so that it can be copied or snapshotted and cloned.
//!
//! [`Template::build`] runs the whole procedure in the restore's
//! [`Sandbox`](devdb_pgctl::sandbox::Sandbox), every step as the role it needs and no more:
//! 1. initdb; a server on a private socket only (no TCP), tuned for loading, in the foreground
//!    of its sandbox (it ends with the restore, however the restore ends);
//! 2. as superuser (`search_path` = `pg_catalog, pg_temp`): the project's role (LOGIN CREATEDB,
//!    never superuser) and its database;
//! 3. as the project's role: the dump ([`crate::load`]), then ANALYZE, the personal-data
//!    [`scan`](crate::scan) and the [`masking`](crate::masking);
//! 4. as superuser: the catalog check ([`privileged_roles`]), a small `max_wal_size`,
//!    checkpoints, a clean stop.
//!
//! Then the caller, once nothing of the sandbox runs any more, takes the directory back and
//! [seals](crate::seal) it (links, recovery files and configuration checked or replaced), and
//! syncs it to disk.
//!
//! The restore's [`Guard`] is asked between steps and statements, watches the directory while
//! the server writes, and kills the server when the restore must end.

use std::io::BufReader;
use std::path::PathBuf;
use std::time::Duration;

use devdb_pgctl::StopMode;
use devdb_pgctl::conf::{BASE_CONF, write_conf};
use devdb_pgctl::conf_quote;
use devdb_pgctl::sandbox::{PORT, Sandbox, Server};
use devdb_pgctl::session::Session;
use devdb_pgctl::sql::{ident, literal};

use crate::RestoreError;
use crate::format::{Dump, DumpFormat};
use crate::guard::Guard;
use crate::load::{self, Loaded};

/// The superuser of every instance; reached only over the private Unix socket.
pub const SUPERUSER: &str = devdb_pgctl::session::SUPERUSER;
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Less free space than this after a failure: the disk was full.
const ALMOST_FULL: u64 = 32 << 20;
/// What bounds a restore server's memory besides its sandbox's per-process limit: few sessions,
/// no background or parallel workers, no autovacuum (the dump's code cannot multiply processes).
const RESTORE_BOUNDS: &str = "max_connections = 6\nsuperuser_reserved_connections = 0\nmax_worker_processes = 0\nmax_parallel_workers = 0\nmax_parallel_maintenance_workers = 0\nmax_parallel_workers_per_gather = 0\nautovacuum = off\n";

/// The project's role and database, as the restored data must hold them.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub user: &'a str,
    pub password: &'a str,
    pub database: &'a str,
}

/// Where and how a template is built.
#[derive(Debug)]
pub struct Template<'a> {
    /// The restore's sandbox.
    pub sandbox: &'a mut Sandbox,
    /// The data directory to create (its parent must exist; in the sandbox's directory when
    /// the sandbox isolates).
    pub data: PathBuf,
    /// A directory for the server's socket and logs (likewise).
    pub scratch: PathBuf,
    /// The project's masking, applied after the load (see [`crate::masking`]).
    pub masking: Option<&'a crate::masking::MaskPlan>,
    pub guard: &'a Guard,
}

impl<'a> Template<'a> {
    /// A template built in `sandbox`'s own directory (`data`, and `sock` for the server).
    pub fn in_sandbox(
        sandbox: &'a mut Sandbox,
        masking: Option<&'a crate::masking::MaskPlan>,
        guard: &'a Guard,
    ) -> Template<'a> {
        let (data, scratch) = (sandbox.dir().join("data"), sandbox.dir().join("sock"));
        Template { sandbox, data, scratch, masking, guard }
    }

    /// The data directory it builds.
    pub fn data(&self) -> PathBuf {
        self.data.clone()
    }

    /// The server's socket and log directory.
    fn socket(&self) -> PathBuf {
        self.scratch.clone()
    }

    /// Builds the template: see the module documentation. On failure the server is stopped;
    /// the caller removes the directories. When the guard ended the restore, its reason is the
    /// error.
    ///
    /// # Errors
    /// [`RestoreError`] saying which step failed and why.
    pub fn build(&mut self, owner: &Owner<'_>, dump: Option<&Dump>) -> Result<Loaded, RestoreError> {
        let guard = self.guard.clone();
        let result = guard.watching(|| self.build_running(owner, dump));
        self.guard.set_server(None);
        result.map_err(|error| match self.guard.halted() {
            Some(halt) => halt.into(),
            None => self.disk_full_or(error),
        })
    }

    /// A failure on a disk with (next to) nothing left is the disk being full, whatever the
    /// failing tool said (a server may crash on a write it cannot make).
    fn disk_full_or(&self, error: RestoreError) -> RestoreError {
        let full = |code: &str| code == "53100";
        let said_so =
            matches!(&error, RestoreError::Load(crate::load::LoadError::Statement { error, .. }) if full(&error.code));
        match crate::limits::free_bytes(self.sandbox.dir()) {
            Ok(free) if said_so || free < ALMOST_FULL => RestoreError::DiskFull { need: None, free },
            _ => error,
        }
    }

    fn start(&self) -> Result<Server, RestoreError> {
        let socket = self.socket();
        let server = self
            .sandbox
            .start_server(&self.data(), &socket, &socket.join("server.log"), START_TIMEOUT)
            .map_err(RestoreError::step("starting the restore server"))?;
        self.guard.set_server(server.pid());
        Ok(server)
    }

    fn build_running(&mut self, owner: &Owner<'_>, dump: Option<&Dump>) -> Result<Loaded, RestoreError> {
        let (data, socket) = (self.data(), self.socket());
        self.sandbox.make_dir(&socket).map_err(RestoreError::step("preparing the restore directory"))?;
        self.sandbox.initdb(&data, SUPERUSER).map_err(RestoreError::step("initdb"))?;
        // Before any dump code runs: what the sealed template gets back.
        let pristine = crate::seal::Pristine::read(&data)?;
        self.guard.check()?;
        // Loading is faster without fsync; the template is synced once, after a clean stop.
        let inner_socket =
            self.sandbox.inside(&socket).map_err(RestoreError::step("preparing the restore directory"))?;
        let conf = format!(
            "{BASE_CONF}port = {PORT}\nlisten_addresses = ''\nunix_socket_directories = {}\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_wal_size = '1GB'\nlog_min_messages = warning\n{RESTORE_BOUNDS}",
            conf_quote(&inner_socket)
        );
        write_conf(&data, &conf).map_err(RestoreError::step("writing postgresql.auto.conf"))?;
        self.sandbox
            .give(&data.join("postgresql.auto.conf"))
            .map_err(RestoreError::step("writing postgresql.auto.conf"))?;
        let server = self.start()?;

        let admin = |database: &str| {
            Session::admin(&socket, PORT, database).map_err(RestoreError::step("connecting as superuser"))
        };
        let mut postgres = admin("postgres")?;
        let (user, database) = (ident(owner.user), ident(owner.database));
        let role = format!("CREATE ROLE {user} LOGIN CREATEDB PASSWORD {}", literal(owner.password));
        postgres
            .execute_each(&[&role, &format!("CREATE DATABASE {database} OWNER {user}")])
            .map_err(RestoreError::step("creating the user and database"))?;
        drop(postgres);

        let mut loaded = match dump {
            Some(dump) => {
                let mut session = Session::connect(&socket, PORT, owner.user, owner.database, None)
                    .map_err(RestoreError::step("connecting as the project's user"))?;
                let stop = self.guard.flag();
                let loaded = match dump.format {
                    DumpFormat::Plain => {
                        let file = std::fs::File::open(&dump.path)?;
                        load::run_script_until(&mut session, BufReader::with_capacity(256 << 10, file), stop)?
                    }
                    _ => load::run_archive(&mut session, self.sandbox, dump, &socket.join("pg_restore.log"), stop)?,
                };
                self.guard.check()?;
                // Statistics make the clones' plans realistic. As the owner of what it analyzes.
                session.execute("ANALYZE").map_err(RestoreError::step("analyzing"))?;
                loaded
            }
            None => Loaded::default(),
        };
        self.guard.check()?;
        let masked = match dump {
            Some(_) => {
                let options = Some(crate::sql::PINNED_OPTIONS);
                let mut as_owner = Session::connect(&socket, PORT, owner.user, owner.database, options)
                    .map_err(RestoreError::step("connecting as the project's user"))?;
                // Scanned before masking: what the dump holds.
                loaded.findings =
                    crate::scan::scan(&mut as_owner).map_err(RestoreError::step("scanning for personal data"))?;
                let rules = self.masking.map(|plan| plan.rules.as_slice()).unwrap_or_default();
                crate::scan::cover(&mut loaded.findings, rules);
                self.guard.check()?;
                match self.masking {
                    Some(plan) => {
                        let mut as_admin = admin(owner.database)?;
                        crate::masking::apply(
                            &mut as_owner,
                            &mut as_admin,
                            plan,
                            self.guard,
                            &self.sandbox.dir().with_extension("masking"),
                        )
                        .map_err(|e| RestoreError::Masking(e.to_string()))?
                    }
                    None => crate::masking::Masked::default(),
                }
            }
            None => crate::masking::Masked::default(),
        };
        self.guard.check()?;

        let mut postgres = admin("postgres")?;
        check_catalog(&mut postgres, owner.database)?;
        // A small max_wal_size keeps pg_wal, and so every clone, small.
        postgres
            .execute_each(&[
                "ALTER SYSTEM SET max_wal_size = '64MB'",
                "ALTER SYSTEM SET min_wal_size = '32MB'",
                "SELECT pg_catalog.pg_reload_conf()",
                "CHECKPOINT",
                "CHECKPOINT",
            ])
            .map_err(RestoreError::step("checkpoint"))?;
        drop(postgres);
        server.stop(StopMode::Fast).map_err(RestoreError::step("stopping the restore server"))?;
        self.guard.set_server(None);
        if !masked.tables.is_empty() {
            // The WAL of the load holds every original row: after the clean stop, a new empty
            // WAL replaces it.
            let mut reset = self.sandbox.command("pg_resetwal");
            reset
                .arg("-D")
                .arg(self.sandbox.inside(&data).map_err(RestoreError::step("discarding the WAL of the load"))?);
            self.sandbox.run(reset, "pg_resetwal").map_err(RestoreError::step("discarding the WAL of the load"))?;
        }
        if self.masking.is_some_and(|plan| plan.verify) {
            let needles: Vec<&str> = masked.originals.iter().map(String::as_str).collect();
            let leaks = crate::masking::leaks(&data, &needles);
            if let Some((file, _)) = leaks.first() {
                let file = file.strip_prefix(&data.display().to_string()).unwrap_or(file);
                return Err(RestoreError::Masking(format!(
                    "masking verification: {} sampled original values are still in the snapshot's files (first in {file})",
                    leaks.len()
                )));
            }
            loaded.verified = Some(u64::try_from(needles.len()).unwrap_or(u64::MAX));
        }
        loaded.pristine = pristine;
        Ok(loaded)
    }
}

/// What a template (or a clone of one, which may have been changed since) must not hold: a
/// privileged role ([`privileged_roles`]), or a database besides the project's (a copy made with
/// `CREATE DATABASE … TEMPLATE` would escape the scan and the masking).
///
/// # Errors
/// [`RestoreError::PrivilegedRoles`] or [`RestoreError::OtherDatabases`] naming them.
pub fn check_catalog(admin: &mut Session, database: &str) -> Result<(), RestoreError> {
    let privileged = privileged_roles(admin).map_err(RestoreError::step("checking the roles"))?;
    if !privileged.is_empty() {
        return Err(RestoreError::PrivilegedRoles(privileged.join(", ")));
    }
    let others = admin
        .rows(&format!(
            "SELECT datname FROM pg_catalog.pg_database WHERE datname NOT IN ('postgres', 'template0', 'template1', {}) ORDER BY 1",
            literal(database)
        ))
        .map_err(RestoreError::step("checking the databases"))?;
    let others: Vec<String> = others.into_iter().filter_map(|r| r.into_iter().next().flatten()).collect();
    if !others.is_empty() {
        return Err(RestoreError::OtherDatabases(others.join(", ")));
    }
    Ok(())
}

/// Roles other than the bootstrap superuser that are superuser, may replicate or bypass row
/// security, or may read and write the server's files or run programs on it: each is a way out
/// of the database. Described as `name (what)`.
///
/// # Errors
/// When the catalog cannot be read.
pub fn privileged_roles(admin: &mut Session) -> Result<Vec<String>, devdb_pgctl::session::SessionError> {
    // oid 10 is the bootstrap superuser (initdb's -U). The session's search_path is pinned to
    // pg_catalog, and the functions are qualified all the same.
    let rows = admin.rows(
        "WITH server_access AS ( \
             SELECT m.member, pg_catalog.string_agg(g.rolname, ', ') AS roles \
               FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles g ON g.oid = m.roleid \
              WHERE g.rolname IN ('pg_execute_server_program', 'pg_read_server_files', 'pg_write_server_files') \
              GROUP BY m.member) \
         SELECT r.rolname, pg_catalog.concat_ws(', ', \
                CASE WHEN r.rolsuper THEN 'superuser' END, \
                CASE WHEN r.rolreplication THEN 'replication' END, \
                CASE WHEN r.rolbypassrls THEN 'bypassrls' END, \
                s.roles) \
           FROM pg_catalog.pg_roles r LEFT JOIN server_access s ON s.member = r.oid \
          WHERE r.oid <> 10 AND (r.rolsuper OR r.rolreplication OR r.rolbypassrls OR s.roles IS NOT NULL) \
          ORDER BY 1",
    )?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let name = row.first().cloned().flatten().unwrap_or_default();
            let what = row.get(1).cloned().flatten().unwrap_or_default();
            format!("role {name:?} ({what})")
        })
        .collect())
}
