//! The local runtime adapter: PostgreSQL processes under a data directory, the state in an
//! embedded SQLite database, and a task per object running the core's reconciler.
//!
//! - [`sqlite`]: the [`Store`](devdb_core::store::Store), off the async threads;
//! - [`runtime`]: the [`Runtime`](devdb_core::runtime::Runtime): clones, instances on loopback
//!   ports, and [`restore`]s (through `devdb-restore`, each in a sandbox of its own);
//! - [`monitor`]: samples of an instance's statistics, as a monitoring role, bounded;
//! - [`backup`]: databases' backups through pgBackRest, into the repository [`repository`]
//!   parses from `--backup-repo` (a directory, or S3);
//! - [`dr`]: the controller's own state kept in that repository, encrypted, and a new
//!   installation brought back from it (disaster recovery);
//!
//! Passes run as tasks, one per object ([`devdb_core::queue::run`]).
//!
//! [`Local::open`] sets all of it up on a data directory, the way `devdb-controller` and
//! `devdb up` run it.

pub mod backup;
pub mod dr;
pub mod monitor;
pub mod repository;
pub mod restore;
pub mod runtime;
pub mod sqlite;

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use devdb_core::reconcile::Reconciler;
use devdb_pgctl::PgCtl;

pub use runtime::LocalRuntime;
pub use sqlite::SqliteStore;

/// The local platform: SQLite and processes.
pub struct LocalPlatform;

impl devdb_core::runtime::Platform for LocalPlatform {
    type Store = SqliteStore;
    type Runtime = LocalRuntime;
}

/// Flags of the local runtime.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Local runtime (--runtime local)")]
pub struct LocalArgs {
    /// Where the controller keeps its state, snapshots and database instances.
    #[arg(long, env = "DEVDB_CONTROLLER_DATA_DIR", default_value = ".devdb")]
    pub data_dir: PathBuf,

    /// PostgreSQL binaries directory (default: pg_config --bindir, else the newest
    /// /usr/lib/postgresql/*/bin).
    #[arg(long, env = "DEVDB_CONTROLLER_PG_BIN")]
    pub pg_bin: Option<PathBuf>,

    #[command(flatten)]
    pub limits: devdb_restore::LimitArgs,

    #[command(flatten)]
    pub sandbox: restore::SandboxArgs,

    #[command(flatten)]
    pub backups: repository::BackupRepoArgs,
}

/// Why the local runtime cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("cannot prepare the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("another devdb-controller is using {0}; stop it first")]
    Locked(PathBuf),
    #[error("opening the state database: {0}")]
    Store(#[from] devdb_core::store::StoreError),
    #[error(transparent)]
    Postgres(#[from] devdb_pgctl::PgError),
    #[error(transparent)]
    BackupRepo(#[from] repository::BackupRepoError),
}

/// The local runtime set up on a data directory.
pub struct Local {
    pub data_dir: PathBuf,
    pub reconciler: Arc<Reconciler<LocalPlatform>>,
    /// The passes the reconciler asks for, for [`devdb_core::queue::run`].
    pub passes: devdb_core::queue::Passes,
    /// One controller per data directory: two would reconcile the same files. Released when
    /// this process ends, however it ends.
    _lock: std::fs::File,
}

impl Local {
    /// Prepares `args.data_dir` (private by default: the process's umask becomes 077), takes its
    /// lock, opens the state and finds the PostgreSQL binaries.
    ///
    /// # Errors
    /// [`LocalError`] saying what is wrong.
    pub fn open(args: &LocalArgs, config: devdb_core::reconcile::ReconcilerConfig) -> Result<Self, LocalError> {
        use std::os::unix::fs::PermissionsExt;
        // Whatever this process creates (state, keys, logs of the servers it starts) is private
        // unless it is opened up on purpose.
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        let dir_error = |source| LocalError::DataDir { path: args.data_dir.clone(), source };
        std::fs::create_dir_all(&args.data_dir).map_err(dir_error)?;
        let data_dir = std::fs::canonicalize(&args.data_dir).map_err(dir_error)?;
        let backup_repo = args.backups.repository(&data_dir)?;
        // The PostgreSQL user must pass through to its data directories, but nobody else may
        // list them; the state (every instance's password) is the controller's alone.
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o711)).map_err(dir_error)?;
        let lock = std::fs::File::create(data_dir.join("controller.lock")).map_err(dir_error)?;
        lock.try_lock().map_err(|_| LocalError::Locked(data_dir.clone()))?;
        let store = Arc::new(SqliteStore::open_private(&data_dir)?);
        let pg = PgCtl::discover(args.pg_bin.as_deref())?;
        let sandbox = restore::RestoreSandbox::new(&args.sandbox)?;
        let runtime = Arc::new(
            LocalRuntime::new(pg, &data_dir)
                .map_err(dir_error)?
                .with_limits((&args.limits).into())
                .with_sandbox(sandbox)
                .with_backup_repository(backup_repo),
        );
        let (scheduler, passes) = devdb_core::queue::channel();
        let reconciler = Reconciler::new(store, runtime, scheduler, config);
        Ok(Self { data_dir, reconciler, passes, _lock: lock })
    }
}
