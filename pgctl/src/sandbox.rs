//! The sandbox a restore's PostgreSQL programs run in: `initdb`, the restore server that runs a
//! dump's code, `pg_restore` reading a hostile archive, `pg_resetwal`.
//!
//! With [`Isolation::Bubblewrap`] (the local runtime's default when it runs as root) every
//! program of one restore runs under `bwrap`:
//! - as a **user id of its own** ([`UidLease`], from a range no account owns), not shared with
//!   any other restore, instance or the controller: the kernel keeps it from every other file
//!   and process, and bounds its processes ([`Limits::processes`] is per user id);
//! - in **private mount, PID, network, IPC and UTS namespaces**: it sees `/usr` (the PostgreSQL
//!   binaries and their libraries) read-only, its own directory at [`INSIDE`], the dump (when it
//!   must read one by path) read-only at [`DUMP`], a `/etc` holding only a passwd and group
//!   entry for itself, and its own `/proc`, `/dev` and `/tmp`; no other process, no network;
//! - with an **empty environment** (nothing but `PATH`) and no secret in its arguments;
//! - with **no capabilities** and `no_new_privs`, bounded **memory per process**, **file
//!   size** and no core files ([`Limits`], set by `prlimit` before `setpriv` drops to the
//!   user id);
//! - dying with the thread that started it (`--die-with-parent`, bwrap's own init first in the
//!   PID namespace, so the kernel ends everything in it): a controller killed mid-restore leaves
//!   no restore behind.
//!
//! [`Isolation::Off`] runs the same programs directly, with the same empty environment: for a
//! restore Job, whose pod is its sandbox, and where bubblewrap cannot run.
//!
//! The restore server is not started with `pg_ctl` (whose server would outlive the sandbox's
//! PID namespace): [`Sandbox::start_server`] runs `postgres` in the foreground and returns a
//! [`Server`] that stops it.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::session::{Session, SessionError};
use crate::{PgBinaries, PgError, RunAs, StopMode};

/// Where the sandbox's own directory appears inside it.
pub const INSIDE: &str = "/restore";
/// Where a dump read by path (a directory-format dump) appears inside, read-only.
pub const DUMP: &str = "/dump";
/// The port the restore server's socket is named after (it listens on no TCP port).
pub const PORT: u16 = 5432;
/// The size of a sandbox's `/dev/shm`.
const SHM_SIZE: &str = "268435456";
/// The size of a sandbox's `/tmp`.
const TMP_SIZE: &str = "67108864";

/// How a restore's programs are isolated.
#[derive(Debug)]
pub enum Isolation {
    /// Under `bwrap` (see the module documentation). `uid`: the user id of this restore (when
    /// this process is root); without one (an unprivileged controller) the programs keep this
    /// process's user id, in a user namespace.
    Bubblewrap { tools: Tools, uid: Option<UidLease> },
    /// Directly, as `run_as` (the PostgreSQL user, when this process is root) or as this
    /// process's user.
    Off { run_as: Option<RunAs> },
}

/// The programs that build the sandbox.
#[derive(Debug, Clone)]
pub struct Tools {
    pub bwrap: PathBuf,
    /// util-linux's `prlimit` and `setpriv` (needed when root).
    pub prlimit: PathBuf,
    pub setpriv: PathBuf,
}

impl Tools {
    /// Finds `bwrap`, `prlimit` and `setpriv` on `PATH` (or in `/usr/bin`).
    ///
    /// # Errors
    /// [`PgError::Sandbox`] naming what is missing.
    pub fn find() -> Result<Self, PgError> {
        let find = |name: &str| {
            let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/bin")])
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| PgError::Sandbox(format!("{name} is not installed (apt-get install {})", package(name))))
        };
        Ok(Self { bwrap: find("bwrap")?, prlimit: find("prlimit")?, setpriv: find("setpriv")? })
    }
}

fn package(program: &str) -> &'static str {
    if program == "bwrap" { "bubblewrap" } else { "util-linux" }
}

/// Bounds on each program of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Address space of each process (`RLIMIT_AS`).
    pub memory: u64,
    /// Processes of the restore's user id at once (`RLIMIT_NPROC`; only with a user id of its
    /// own, where it counts this restore alone).
    pub processes: u64,
    /// The largest file it may write (`RLIMIT_FSIZE`).
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory: 2 << 30, processes: 64, file_size: 4 << 30 }
    }
}

/// The user ids restores lease by default (`--restore-uids`): high, and owned by no account.
pub const DEFAULT_UIDS: (u32, u32) = (2_146_435_072, 2_146_436_095);

/// A user id leased for one restore: no other restore of any controller on this machine holds
/// it meanwhile (a lock file per id, released when the lease or its process ends). Processes
/// still running as it when it is taken or given back are killed.
#[derive(Debug)]
pub struct UidLease {
    uid: u32,
    _lock: File,
}

/// Where the lease locks live (root only).
const LEASES: &str = "/run/devdb/restore-uids";

impl UidLease {
    /// The first free user id of `first..=last`.
    ///
    /// # Errors
    /// [`PgError::Sandbox`] when the lock directory cannot be used or every id is taken.
    pub fn acquire(first: u32, last: u32) -> Result<Self, PgError> {
        let dir = Path::new(LEASES);
        std::fs::create_dir_all(dir).map_err(|e| PgError::Sandbox(format!("cannot create {LEASES}: {e}")))?;
        // Root's alone: nobody else may take or fake a lease.
        let meta = std::fs::symlink_metadata(dir).map_err(|e| PgError::Sandbox(format!("{LEASES}: {e}")))?;
        if !meta.is_dir() || std::os::unix::fs::MetadataExt::uid(&meta) != 0 {
            return Err(PgError::Sandbox(format!("{LEASES} is not a directory of root's")));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| PgError::Sandbox(format!("{LEASES}: {e}")))?;
        for uid in first..=last {
            let lock = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(uid.to_string()))
                .map_err(|e| PgError::Sandbox(format!("{LEASES}/{uid}: {e}")))?;
            if lock.try_lock().is_ok() {
                kill_processes_of(uid);
                return Ok(Self { uid, _lock: lock });
            }
        }
        Err(PgError::Sandbox(format!("every restore user id ({first}-{last}) is in use: too many restores at once")))
    }

    /// Kills what runs as a user id of `first..=last` that no restore holds (what a controller
    /// killed before its restores' sandboxes could follow it left running). For a controller
    /// starting up.
    ///
    /// # Errors
    /// [`PgError::Sandbox`] when the lock directory cannot be used.
    pub fn sweep(first: u32, last: u32) -> Result<Vec<u32>, PgError> {
        let mut swept = Vec::new();
        for uid in uids_running(first, last) {
            // Taken and given back at once: nobody holds it, its processes are killed.
            match Self::acquire(uid, uid) {
                Ok(lease) => {
                    drop(lease);
                    swept.push(uid);
                }
                Err(PgError::Sandbox(e)) if e.contains("in use") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(swept)
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }
}

impl Drop for UidLease {
    fn drop(&mut self) {
        kill_processes_of(self.uid);
    }
}

/// The user ids of `first..=last` some process runs as.
fn uids_running(first: u32, last: u32) -> Vec<u32> {
    let mut uids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("status")).ok())
        .filter_map(|status| {
            let ids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.to_string();
            ids.split_whitespace().next()?.parse::<u32>().ok()
        })
        .filter(|uid| (first..=last).contains(uid))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    uids
}

/// Kills every process whose real or effective user id is `uid`.
fn kill_processes_of(uid: u32) {
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else { continue };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else { continue };
        let owned = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .is_some_and(|ids| ids.split_whitespace().take(2).any(|id| id.parse::<u32>().is_ok_and(|id| id == uid)));
        if owned {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// One restore's sandbox: its directory (the programs' only writable place) and how they run.
#[derive(Debug)]
pub struct Sandbox {
    bins: PgBinaries,
    /// The directory shown as [`INSIDE`]; owned by the sandbox's user.
    dir: PathBuf,
    /// A dump directory shown read-only as [`DUMP`].
    dump: Option<PathBuf>,
    isolation: Isolation,
    limits: Limits,
}

impl Sandbox {
    /// A sandbox whose programs write only in `dir` (created, private to the sandbox's user).
    /// Its `/etc` files are written beside it (`<dir>.passwd`, `<dir>.group`), so `dir`'s
    /// parent must be this process's.
    ///
    /// # Errors
    /// [`PgError`] when the directories cannot be made.
    pub fn new(bins: PgBinaries, dir: &Path, isolation: Isolation, limits: Limits) -> Result<Self, PgError> {
        let sandbox = Self { bins, dir: dir.to_path_buf(), dump: None, isolation, limits };
        sandbox.make_dir(dir)?;
        if matches!(sandbox.isolation, Isolation::Bubblewrap { .. }) {
            let uid = sandbox.user().map_or_else(|| nix::unistd::geteuid().as_raw(), |u| u.uid);
            write_public(
                &dir.with_extension("passwd"),
                &format!("postgres:x:{uid}:{uid}::{INSIDE}:/usr/sbin/nologin\n"),
            )?;
            write_public(&dir.with_extension("group"), &format!("postgres:x:{uid}:\n"))?;
        }
        Ok(sandbox)
    }

    /// The user the programs run as, when it is not this process's.
    fn user(&self) -> Option<RunAs> {
        match &self.isolation {
            Isolation::Bubblewrap { uid: Some(lease), .. } => Some(RunAs { uid: lease.uid, gid: lease.uid }),
            Isolation::Bubblewrap { uid: None, .. } => None,
            Isolation::Off { run_as } => *run_as,
        }
    }

    /// The sandbox's directory (outside).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether its programs run in namespaces of their own.
    pub fn is_isolated(&self) -> bool {
        matches!(self.isolation, Isolation::Bubblewrap { .. })
    }

    /// Shows `dir` (a directory dump) read-only inside, at [`DUMP`]; returns where.
    pub fn show_dump(&mut self, dir: &Path) -> PathBuf {
        if self.is_isolated() {
            self.dump = Some(dir.to_path_buf());
            PathBuf::from(DUMP)
        } else {
            dir.to_path_buf()
        }
    }

    /// Where `path` (in the sandbox's directory) is, as the programs see it.
    ///
    /// # Errors
    /// [`PgError::Sandbox`] for a path outside the sandbox's directory.
    pub fn inside(&self, path: &Path) -> Result<PathBuf, PgError> {
        if !self.is_isolated() {
            return Ok(path.to_path_buf());
        }
        let rest = path
            .strip_prefix(&self.dir)
            .map_err(|_| PgError::Sandbox(format!("{} is outside the sandbox", path.display())))?;
        Ok(Path::new(INSIDE).join(rest))
    }

    /// Creates `path` (and parents) private (0700) to the sandbox's user.
    ///
    /// # Errors
    /// [`PgError::Chown`].
    pub fn make_dir(&self, path: &Path) -> Result<(), PgError> {
        std::fs::create_dir_all(path).map_err(|source| PgError::Chown { path: path.into(), source })?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| PgError::Chown { path: path.into(), source })?;
        match self.user() {
            Some(user) => crate::chown_tree(path, user),
            None => Ok(()),
        }
    }

    /// Hands `path` (a file or a tree this process wrote, e.g. a configuration file) to the
    /// sandbox's user.
    ///
    /// # Errors
    /// [`PgError::Chown`].
    pub fn give(&self, path: &Path) -> Result<(), PgError> {
        match self.user() {
            Some(user) => crate::chown_tree(path, user),
            None => Ok(()),
        }
    }

    /// Ends the sandbox (its user id given back: whatever still runs as it is killed) and hands
    /// what it made under `path` to this process's user, so that no later restore leased the
    /// same user id can change it and nothing of the sandbox runs when the caller looks at it.
    ///
    /// # Errors
    /// [`PgError::Chown`].
    pub fn release(self, path: &Path) -> Result<(), PgError> {
        let user = self.user();
        drop(self);
        match user {
            Some(_) => {
                let me = RunAs { uid: nix::unistd::geteuid().as_raw(), gid: nix::unistd::getegid().as_raw() };
                crate::chown_tree(path, me)
            }
            None => Ok(()),
        }
    }

    /// A command running PostgreSQL's `program` in the sandbox, in [`INSIDE`], with an empty
    /// environment. Paths in its arguments must be as seen inside ([`Sandbox::inside`]).
    pub fn command(&self, program: &str) -> Command {
        let binary = self.bins.path(program);
        let mut cmd = match &self.isolation {
            Isolation::Off { run_as } => {
                let mut cmd = Command::new(binary);
                cmd.env_clear().env("PATH", "/usr/bin:/bin").current_dir(&self.dir);
                if let Some(RunAs { uid, gid }) = run_as {
                    cmd.uid(*uid).gid(*gid);
                }
                cmd
            }
            Isolation::Bubblewrap { tools, uid } => self.bwrap(tools, uid.as_ref().map(UidLease::uid), &binary),
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn bwrap(&self, tools: &Tools, uid: Option<u32>, binary: &Path) -> Command {
        let mut cmd = Command::new(&tools.bwrap);
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        let arg = |cmd: &mut Command, args: &[&str]| {
            cmd.args(args);
        };
        arg(&mut cmd, &["--ro-bind", "/usr", "/usr"]);
        for (link, to) in [("/bin", "usr/bin"), ("/sbin", "usr/sbin"), ("/lib", "usr/lib"), ("/lib64", "usr/lib64")] {
            arg(&mut cmd, &["--symlink", to, link]);
        }
        // The binaries may live outside /usr (--pg-bin).
        if !self.bins.dir().starts_with("/usr") {
            cmd.arg("--ro-bind").arg(self.bins.dir()).arg(self.bins.dir());
        }
        arg(&mut cmd, &["--perms", "0755", "--dir", "/etc"]);
        for file in ["/etc/ld.so.cache", "/etc/localtime"] {
            arg(&mut cmd, &["--ro-bind-try", file, file]);
        }
        cmd.arg("--ro-bind").arg(self.dir.with_extension("passwd")).arg("/etc/passwd");
        cmd.arg("--ro-bind").arg(self.dir.with_extension("group")).arg("/etc/group");
        // Memory file systems, bounded: what is written there is memory no limit of a process
        // counts. PostgreSQL's dynamic shared memory lives in /dev/shm.
        arg(
            &mut cmd,
            &["--dev", "/dev", "--perms", "1777", "--size", SHM_SIZE, "--tmpfs", "/dev/shm", "--proc", "/proc"],
        );
        arg(&mut cmd, &["--perms", "1777", "--size", TMP_SIZE, "--tmpfs", "/tmp"]);
        cmd.arg("--bind").arg(&self.dir).arg(INSIDE);
        if let Some(dump) = &self.dump {
            cmd.arg("--ro-bind").arg(dump).arg(DUMP);
        }
        arg(&mut cmd, &["--chdir", INSIDE]);
        arg(&mut cmd, &["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]);
        // Not --as-pid-1: bwrap's own init is then the namespace's first process, and when it
        // dies with its parent (--die-with-parent) the kernel kills everything in the namespace;
        // a program that is itself the first process ignores the parent-death signal.
        arg(&mut cmd, &["--hostname", "restore", "--die-with-parent", "--new-session"]);
        arg(&mut cmd, &["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--"]);
        if let Some(uid) = uid {
            // Root: bounds first (prlimit, as root), then down to the restore's own user id
            // with nothing left (setpriv), then the program.
            let Limits { memory, processes, file_size } = self.limits;
            cmd.arg(&tools.prlimit).args([
                format!("--as={memory}"),
                format!("--nproc={processes}"),
                format!("--fsize={file_size}"),
                "--core=0".into(),
                "--".into(),
            ]);
            // Changing the user id clears the parent-death signal: set again, so the program also
            // dies with bwrap should bwrap's init not take it along.
            cmd.arg(&tools.setpriv).args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--bounding-set=-all".into(),
                "--no-new-privs".into(),
                "--pdeathsig=KILL".into(),
            ]);
        } else {
            let Limits { memory, file_size, .. } = self.limits;
            cmd.arg(&tools.prlimit).args([
                format!("--as={memory}"),
                format!("--fsize={file_size}"),
                "--core=0".into(),
                "--".into(),
            ]);
        }
        cmd.arg(binary);
        cmd
    }

    /// Runs `cmd` (from [`Sandbox::command`]) to its end.
    ///
    /// # Errors
    /// [`PgError::Spawn`] or [`PgError::Failed`] with the end of its stderr.
    pub fn run(&self, mut cmd: Command, program: &str) -> Result<(), PgError> {
        crate::output(&mut cmd, program).map(drop)
    }

    /// `initdb` of `data` (in the sandbox's directory) with superuser `superuser`, UTF8, trust
    /// on the Unix socket (which is private to the sandbox's user).
    ///
    /// # Errors
    /// [`PgError`] with initdb's message.
    pub fn initdb(&self, data: &Path, superuser: &str) -> Result<(), PgError> {
        self.make_dir(data)?;
        let mut cmd = self.command("initdb");
        cmd.arg("-D").arg(self.inside(data)?).args(["-U", superuser, "-E", "UTF8", "--locale=C.UTF-8"]);
        cmd.args(["--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"]);
        self.run(cmd, "initdb")
    }

    /// Writes the (stopped) data directory `data` to disk.
    ///
    /// # Errors
    /// [`PgError`] with initdb's message.
    pub fn sync_data_dir(&self, data: &Path) -> Result<(), PgError> {
        let mut cmd = self.command("initdb");
        cmd.arg("--sync-only").arg("-D").arg(self.inside(data)?);
        self.run(cmd, "initdb --sync-only")
    }

    /// Starts `postgres` on `data` in the foreground, its messages to `log` (a new file, read
    /// back through its handle only), and
    /// waits until it takes connections on its socket in `socket_dir` (which its configuration
    /// must name as seen inside).
    ///
    /// # Errors
    /// [`PgError::Failed`] with the end of the log when it exits or does not get ready within
    /// `timeout`.
    pub fn start_server(
        &self,
        data: &Path,
        socket_dir: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<Server, PgError> {
        let log_error = |source| PgError::Chown { path: log.into(), source };
        let _ = std::fs::remove_file(log);
        let log_file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(log)
            .map_err(log_error)?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(self.inside(data)?);
        cmd.stdout(Stdio::null()).stderr(log_file.try_clone().map_err(log_error)?);
        let child = cmd.spawn().map_err(|source| PgError::Spawn { program: "postgres".into(), source })?;
        let mut server = Server { child, isolated: self.is_isolated(), log: log_file };
        let started = Instant::now();
        loop {
            if let Some(status) =
                server.child.try_wait().map_err(|source| PgError::Spawn { program: "postgres".into(), source })?
            {
                return Err(server.failed(&format!("the restore server exited ({status})")));
            }
            match Session::admin(socket_dir, PORT, "postgres") {
                Ok(_) => return Ok(server),
                Err(SessionError::Server(e)) if e.code != "57P03" => {
                    return Err(
                        server.failed(&format!("the restore server refused the controller: {}", e.without_values()))
                    );
                }
                Err(_) if started.elapsed() > timeout => {
                    return Err(server.failed("the restore server did not get ready in time"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    }
}

/// Writes a file anyone may read (the sandbox's `/etc` entries), replacing what was there.
fn write_public(path: &Path, text: &str) -> Result<(), PgError> {
    let error = |source| PgError::Chown { path: path.into(), source };
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(error)?;
    file.write_all(text.as_bytes()).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).map_err(error)
}

/// A restore server running in its sandbox. Dropped while running, it is killed.
#[derive(Debug)]
pub struct Server {
    /// `bwrap` (isolated), or `postgres` itself.
    child: Child,
    isolated: bool,
    /// Its messages, read through this handle (the path is in a directory the sandbox writes).
    log: File,
}

impl Server {
    /// The postmaster's process id as this process sees it: under bwrap, the child of bwrap's
    /// init (itself bwrap's one child).
    pub fn pid(&self) -> Option<Pid> {
        let pid = self.child.id();
        if !self.isolated {
            return i32::try_from(pid).ok().map(Pid::from_raw);
        }
        let child_of = |pid: u32| -> Option<u32> {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        };
        child_of(child_of(pid)?).and_then(|p| i32::try_from(p).ok()).map(Pid::from_raw)
    }

    /// Stops the server (`Fast`: sessions rolled back, a checkpoint, a clean stop; `Immediate`:
    /// at once) and waits for it.
    ///
    /// # Errors
    /// [`PgError::Failed`] when it did not stop cleanly (for `Fast`).
    pub fn stop(mut self, mode: StopMode) -> Result<(), PgError> {
        let signal = match mode {
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        if let Some(pid) = self.pid() {
            let _ = kill(pid, signal);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() || mode == StopMode::Immediate => return Ok(()),
                Ok(Some(status)) => return Err(self.failed(&format!("the restore server stopped with {status}"))),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                _ => {
                    self.kill();
                    return Err(self.failed("the restore server did not stop"));
                }
            }
        }
    }

    /// Kills it (and everything in its sandbox) and reaps it.
    pub fn kill(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn failed(&self, what: &str) -> PgError {
        use std::io::{Read as _, Seek as _};
        let mut file = &self.log;
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(std::io::SeekFrom::Start(len.saturating_sub(16 << 10)));
        let mut bytes = Vec::new();
        let _ = file.take(16 << 10).read_to_end(&mut bytes);
        let log = String::from_utf8_lossy(&bytes);
        let tail: Vec<&str> = log.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        PgError::Failed { program: "postgres".into(), stderr: format!("{what}: {}", tail.join(" | ")) }
    }
}

impl Drop for Server {
    /// A server dropped while running (its restore failed) stops at once: an immediate
    /// shutdown (which leaves no `postmaster.pid` behind), or killed if that takes long.
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if let Some(pid) = self.pid() {
            let _ = kill(pid, Signal::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

/// Whether bubblewrap can make a sandbox here (as this process would, with `uid`): runs `true`
/// in one.
///
/// # Errors
/// [`PgError::Sandbox`] with bwrap's own words.
pub fn probe(tools: &Tools, as_root: bool) -> Result<(), PgError> {
    let mut cmd = Command::new(&tools.bwrap);
    cmd.env_clear().args([
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
    ]);
    cmd.args(["--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev"]);
    cmd.args(["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--die-with-parent", "--"]);
    if as_root {
        cmd.arg(&tools.setpriv).args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]);
    }
    cmd.arg("/usr/bin/true");
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| PgError::Sandbox(format!("cannot run bwrap: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    Err(PgError::Sandbox(format!("bwrap cannot make a sandbox here: {}", said.trim())))
}
