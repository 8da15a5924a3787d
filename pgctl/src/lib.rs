//! Running PostgreSQL servers as local processes.
//!
//! - [`PgBinaries`]: where `initdb`, `pg_ctl`, `pg_restore`… live (`--pg-bin`, `pg_config`, or the
//!   newest `/usr/lib/postgresql/*/bin`).
//! - [`PgCtl`]: initdb, start, stop and status of a data directory. PostgreSQL refuses to run as
//!   root, so when this process is root every server program runs as the `postgres` system user
//!   (`Command::uid/gid`, no unsafe code) and the files it needs are handed to that user.
//! - [`sandbox`]: a restore's programs (the server that runs a dump's code, `pg_restore` on a
//!   hostile archive), each restore in namespaces and under a user id of its own.
//! - [`session`]: talking to a server over its private socket (superuser sessions with a safe
//!   `search_path`, and the sessions a dump is restored through); [`sql`]: quoting what goes
//!   into the SQL written for them, and [`conf_quote`] into `postgresql.conf`.
//!
//! Servers are started with `pg_ctl`, so they outlive the process that started them: a
//! restarted controller adopts them instead of losing them.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

pub mod conf;
pub mod sandbox;
pub mod session;
pub mod sql;

/// The restore Job's secret variables (besides cloud credentials, `AWS_*`), kept from the
/// client programs tests run ([`PgCtl::client`]); server programs get no inherited variable.
const JOB_SECRETS: [&str; 4] = ["DB_PASSWORD", "BACKUP_URL", "DEVDB_MASK_KEY", "DEVDB_MASKING"];

/// Why a PostgreSQL program could not be found or failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("no PostgreSQL server binaries found (looked in {looked}); install postgresql-15 or pass --pg-bin")]
    NotFound { looked: String },
    #[error("running as root, but there is no '{0}' user to run PostgreSQL as")]
    NoUnprivilegedUser(String),
    #[error("the restore sandbox: {0}")]
    Sandbox(String),
    #[error("cannot run {program}: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("{program} failed: {stderr}")]
    Failed { program: String, stderr: String },
    #[error("cannot give {path} to the PostgreSQL user: {source}")]
    Chown { path: PathBuf, source: std::io::Error },
}

/// The directory holding a PostgreSQL installation's programs, and its major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    dir: PathBuf,
    version: u32,
}

impl PgBinaries {
    /// Finds the binaries: `explicit` if given, else `pg_config --bindir` if that has a server,
    /// else the newest `/usr/lib/postgresql/<version>/bin`.
    ///
    /// # Errors
    /// [`PgError::NotFound`] listing where it looked.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, PgError> {
        let mut looked = Vec::new();
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(dir) = explicit {
            candidates.push(dir.into());
        } else {
            if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
                && out.status.success()
            {
                candidates.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
            }
            let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
                .collect();
            versioned.sort();
            candidates.extend(versioned.into_iter().rev().map(|(_, p)| p));
        }
        for dir in candidates {
            looked.push(dir.display().to_string());
            if dir.join("postgres").is_file()
                && dir.join("initdb").is_file()
                && let Some(version) = server_version(&dir)
            {
                return Ok(Self { dir, version });
            }
        }
        if looked.is_empty() {
            looked.push("pg_config, /usr/lib/postgresql/*/bin".into());
        }
        Err(PgError::NotFound { looked: looked.join(", ") })
    }

    /// The path of a program, e.g. `pg_restore`.
    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    /// The major version, e.g. 15.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The binaries' directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// `postgres (PostgreSQL) 15.18 (Debian …)` → 15.
fn server_version(dir: &Path) -> Option<u32> {
    let out = Command::new(dir.join("postgres")).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?;
    version.split('.').next()?.parse().ok()
}

/// The unprivileged user PostgreSQL runs as when this process is root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// `None` when not root (programs run as the current user); else the `postgres` user.
    ///
    /// # Errors
    /// [`PgError::NoUnprivilegedUser`] when root and no `postgres` user exists.
    pub fn detect() -> Result<Option<Self>, PgError> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        Self::user("postgres").map(Some).ok_or_else(|| PgError::NoUnprivilegedUser("postgres".into()))
    }

    /// The user named `name`, if it exists.
    pub fn user(name: &str) -> Option<Self> {
        let user = nix::unistd::User::from_name(name).ok().flatten()?;
        Some(Self { uid: user.uid.as_raw(), gid: user.gid.as_raw() })
    }
}

/// How `pg_ctl stop` should stop a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Roll back sessions, checkpoint, exit: a clean stop.
    Fast,
    /// Exit at once; crash recovery at the next start.
    Immediate,
}

/// Runs PostgreSQL programs on data directories.
#[derive(Debug, Clone)]
pub struct PgCtl {
    bins: PgBinaries,
    run_as: Option<RunAs>,
}

impl PgCtl {
    /// Discovers binaries and the user to run them as.
    ///
    /// # Errors
    /// As [`PgBinaries::discover`] and [`RunAs::detect`].
    pub fn discover(explicit_bin: Option<&Path>) -> Result<Self, PgError> {
        Ok(Self { bins: PgBinaries::discover(explicit_bin)?, run_as: RunAs::detect()? })
    }

    /// The user server programs run as (`None`: this process's).
    pub fn run_as(&self) -> Option<RunAs> {
        self.run_as
    }

    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// A command for a server program, running as the PostgreSQL user when this process is root,
    /// with an empty environment (but `PATH`): a server runs its owner's code, and nothing of
    /// this process's environment (an admin token, libpq settings, a restore Job's secrets) may
    /// be in its `/proc/<pid>/environ`.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bins.path(program));
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        if let Some(RunAs { uid, gid }) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    /// A command for a client program (psql, pg_dump), run as this process's own user: it
    /// reaches servers over their Unix socket, whose directory this process can enter. It sees
    /// neither libpq settings nor the secrets a restore Job's environment may hold.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bins.path(program));
        for var in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD", "PGSERVICE", "PGOPTIONS"]
            .into_iter()
            .chain(JOB_SECRETS)
        {
            cmd.env_remove(var);
        }
        for (var, _) in std::env::vars_os() {
            if var.to_str().is_some_and(|v| v.starts_with("AWS_")) {
                cmd.env_remove(var);
            }
        }
        cmd
    }

    /// Creates `path` (and parents), private (0700), and hands it to the PostgreSQL user.
    ///
    /// # Errors
    /// [`PgError::Chown`] when the directory cannot be made or handed over.
    pub fn make_dir(&self, path: &Path) -> Result<(), PgError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path).map_err(|source| PgError::Chown { path: path.into(), source })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| PgError::Chown { path: path.into(), source })?;
        self.give(path)
    }

    /// Hands `path` (recursively) to the PostgreSQL user; a no-op when not root.
    ///
    /// # Errors
    /// [`PgError::Chown`].
    pub fn give(&self, path: &Path) -> Result<(), PgError> {
        self.run_as.map_or(Ok(()), |to| chown_tree(path, to))
    }

    /// `initdb` into `data` (created, private to the PostgreSQL user; its parent must exist)
    /// with superuser `superuser`, UTF8, trust for local socket connections (the socket
    /// directory is private to the PostgreSQL user) and SCRAM for TCP.
    ///
    /// # Errors
    /// [`PgError::Failed`] with initdb's message.
    pub fn initdb(&self, data: &Path, superuser: &str, extra: &[&str]) -> Result<(), PgError> {
        self.make_dir(data)?;
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(data).args(["-U", superuser, "-E", "UTF8", "--locale=C.UTF-8"]);
        cmd.args(["--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"]).args(extra);
        run(cmd, "initdb")
    }

    /// Writes every file of the (stopped) data directory to disk (`initdb --sync-only`), and
    /// nothing else.
    ///
    /// # Errors
    /// [`PgError::Failed`] with initdb's message.
    pub fn sync_data_dir(&self, data: &Path) -> Result<(), PgError> {
        let mut cmd = self.command("initdb");
        cmd.arg("--sync-only").arg("-D").arg(data);
        run(cmd, "initdb --sync-only")
    }

    /// Starts the server on `data` and waits until it accepts connections.
    ///
    /// # Errors
    /// [`PgError::Failed`] with pg_ctl's message and the end of the server log.
    pub fn start(&self, data: &Path, log: &Path, timeout: Duration) -> Result<(), PgError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("start").arg("-D").arg(data).arg("-l").arg(log).arg("-w");
        cmd.args(["-t", &timeout.as_secs().max(1).to_string()]);
        let since = std::time::SystemTime::now();
        let failed = |stderr: String| {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = tail.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            PgError::Failed { program: "pg_ctl start".into(), stderr: format!("{stderr} {}", tail.join(" | ")) }
        };
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| PgError::Spawn { program: "pg_ctl start".into(), source })?;
        // pg_ctl -w looks every 100 ms; the server says it is ready in postmaster.pid sooner, and
        // a wake waits on this: look every 5 ms, and leave pg_ctl to finish on its own.
        loop {
            if let Some(status) =
                child.try_wait().map_err(|source| PgError::Spawn { program: "pg_ctl".into(), source })?
            {
                if status.success() {
                    return Ok(());
                }
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                }
                let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
                return Err(failed(lines[lines.len().saturating_sub(6)..].join(" | ")));
            }
            if self.ready_since(data, since) {
                std::thread::spawn(move || child.wait());
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the postmaster of `data`, started at `since` or later, says in `postmaster.pid`
    /// that it accepts connections (a file left by an earlier server does not count).
    fn ready_since(&self, data: &Path, since: std::time::SystemTime) -> bool {
        let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else { return false };
        let lines: Vec<&str> = pid_file.lines().collect();
        let started = lines.get(2).and_then(|l| l.trim().parse::<u64>().ok());
        let since = since.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let status = lines.get(7).map(|l| l.trim());
        started.is_some_and(|t| t >= since) && status == Some("ready") && self.postmaster_alive(data)
    }

    /// Makes the server on `data` read its configuration again (`pg_ctl reload`).
    ///
    /// # Errors
    /// [`PgError::Failed`] when pg_ctl cannot signal it.
    pub fn reload(&self, data: &Path) -> Result<(), PgError> {
        let mut cmd = self.command("pg_ctl");
        cmd.arg("reload").arg("-D").arg(data);
        run(cmd, "pg_ctl reload")
    }

    /// Stops the server on `data`; succeeds when none was running.
    ///
    /// # Errors
    /// [`PgError::Failed`] when pg_ctl cannot stop it.
    pub fn stop(&self, data: &Path, mode: StopMode) -> Result<(), PgError> {
        if !self.is_running(data) {
            return Ok(());
        }
        let mode = match mode {
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let mut cmd = self.command("pg_ctl");
        cmd.arg("stop").arg("-D").arg(data).args(["-m", mode, "-w", "-t", "60"]);
        run(cmd, "pg_ctl stop")
    }

    /// Whether the postmaster of `data` is alive, without running anything: the process its
    /// `postmaster.pid` names exists and serves `data` (so a recycled process id is not taken
    /// for it). Cheap enough to ask every few seconds for every instance.
    pub fn postmaster_alive(&self, data: &Path) -> bool {
        let Ok(pid_file) = std::fs::read_to_string(data.join("postmaster.pid")) else { return false };
        let Some(pid) = pid_file.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else { return false };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let data = data.as_os_str().as_encoded_bytes();
        args.first().is_some_and(|a| a.ends_with(b"postgres")) && args.windows(2).any(|w| w[0] == b"-D" && w[1] == data)
    }

    /// Whether a server is running on `data` (`pg_ctl status`).
    pub fn is_running(&self, data: &Path) -> bool {
        data.join("postmaster.pid").exists()
            && self.command("pg_ctl").arg("status").arg("-D").arg(data).output().is_ok_and(|o| o.status.success())
    }
}

/// Hands `path` and everything below it to `to` (links themselves, never their targets).
fn chown_tree(path: &Path, to: RunAs) -> Result<(), PgError> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let chown_err = |source| PgError::Chown { path: p.clone(), source };
        std::os::unix::fs::lchown(&p, Some(to.uid), Some(to.gid)).map_err(chown_err)?;
        if p.is_dir() && !p.is_symlink() {
            for entry in std::fs::read_dir(&p).map_err(chown_err)? {
                stack.push(entry.map_err(chown_err)?.path());
            }
        }
    }
    Ok(())
}

/// Runs `cmd`, turning a non-zero exit into [`PgError::Failed`] with its stderr.
///
/// # Errors
/// [`PgError::Spawn`] or [`PgError::Failed`].
pub fn run(mut cmd: Command, program: &str) -> Result<(), PgError> {
    output(&mut cmd, program).map(|_| ())
}

/// Runs `cmd` and returns its output when it succeeds.
///
/// # Errors
/// [`PgError::Spawn`] or [`PgError::Failed`] (with the last lines of stderr).
pub fn output(cmd: &mut Command, program: &str) -> Result<Output, PgError> {
    let out = cmd.output().map_err(|source| PgError::Spawn { program: program.into(), source })?;
    if out.status.success() {
        return Ok(out);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
    let detail = if tail.is_empty() { format!("exit status {}", out.status) } else { tail };
    Err(PgError::Failed { program: program.into(), stderr: detail })
}

/// Creates `dir` (and its parents) as this process's, `0711`: the PostgreSQL user (and others)
/// may pass through to what they own inside, but not list it.
///
/// # Errors
/// When it cannot be made, or its mode set.
pub fn passable_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// Quotes a value for a `postgresql.conf` line.
pub fn conf_quote(value: impl AsRef<OsStr>) -> String {
    format!("'{}'", value.as_ref().to_string_lossy().replace('\\', "\\\\").replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_with_their_major_version() {
        let bins = PgBinaries::discover(None).expect("PostgreSQL is installed for the tests");
        assert!(bins.version() >= 12, "{bins:?}");
        assert!(bins.path("pg_ctl").is_file());
    }

    #[test]
    fn postgresql_programs_never_inherit_the_restore_jobs_secrets() {
        let pg = PgCtl::discover(None).expect("binaries");
        let client = pg.client("pg_dump");
        let removed: Vec<_> = client.get_envs().filter(|(_, v)| v.is_none()).map(|(k, _)| k.to_owned()).collect();
        for secret in ["DB_PASSWORD", "BACKUP_URL", "DEVDB_MASK_KEY", "DEVDB_MASKING", "PGPASSWORD"] {
            assert!(removed.iter().any(|k| k == secret), "{secret} reaches {client:?}");
        }
    }

    #[test]
    fn an_explicit_directory_without_a_server_is_refused_by_name() {
        let err = PgBinaries::discover(Some(Path::new("/nonexistent/bin"))).expect_err("refused").to_string();
        assert!(err.contains("/nonexistent/bin") && err.contains("--pg-bin"), "{err}");
    }

    #[test]
    fn a_server_is_created_started_detected_and_stopped() {
        let pg = PgCtl::discover(None).expect("binaries");
        let dir = tempfile::tempdir().expect("tempdir");
        pg.make_dir(dir.path()).expect("dir");
        let data = dir.path().join("data");
        pg.initdb(&data, "postgres", &[]).expect("initdb");
        let conf = format!("listen_addresses = ''\nunix_socket_directories = {}\n", conf_quote(dir.path()));
        std::fs::write(data.join("postgresql.auto.conf"), conf).expect("conf");
        assert!(!pg.is_running(&data));
        assert!(!pg.postmaster_alive(&data));
        pg.start(&data, &dir.path().join("log"), Duration::from_secs(30)).expect("start");
        assert!(pg.is_running(&data));
        assert!(pg.postmaster_alive(&data));
        assert!(!pg.postmaster_alive(dir.path()), "only for its own data directory");

        // Parameters travel apart from the statement: as values, never as its text.
        let mut session = session::Session::admin(dir.path(), 5432, "postgres").expect("session");
        session.execute("CREATE TABLE public.t (v text, w text)").expect("table");
        session.execute_with("INSERT INTO public.t VALUES ($1, $2 || $1)", &["it's \"x\"", "-"]).expect("insert");
        let rows = session.rows("SELECT v, w FROM public.t").expect("rows");
        assert_eq!(rows, [[Some("it's \"x\"".to_string()), Some("-it's \"x\"".to_string())]]);
        let refused = session
            .execute_with("INSERT INTO public.t VALUES ($1::int::text)", &["secret-value"])
            .expect_err("not an int");
        let session::SessionError::Server(error) = refused else { panic!("{refused}") };
        assert!(error.to_string().contains("secret-value"), "the server quotes it: {error}");
        let summary = error.without_values();
        assert_eq!(summary, "invalid input syntax for type integer: \"…\" (SQLSTATE 22P02)");
        session.execute("CREATE TABLE public.u (v text CONSTRAINT short CHECK (length(v) < 3))").expect("table");
        let refused = session.execute_with("INSERT INTO public.u VALUES ($1)", &["longer"]).expect_err("refused");
        let session::SessionError::Server(error) = refused else { panic!("{refused}") };
        assert!(error.to_string().contains("Failing row contains (longer)"), "the detail quotes the row: {error}");
        assert_eq!(
            error.without_values(),
            "new row for relation \"…\" violates check constraint \"…\" (SQLSTATE 23514, constraint short)"
        );
        drop(session);
        pg.stop(&data, StopMode::Fast).expect("stop");
        assert!(!pg.is_running(&data));
        assert!(!pg.postmaster_alive(&data));
        pg.stop(&data, StopMode::Fast).expect("stopping a stopped server is fine");
    }

    #[test]
    fn conf_values_are_quoted() {
        assert_eq!(conf_quote("/a b/it's"), "'/a b/it''s'");
    }
}
