//! Restores on the local runtime: each in a sandbox of its own (see
//! [`devdb_pgctl::sandbox`]), under a [`Guard`] that ends it when it is cancelled, when it
//! would take more disk than its owner has left or leave less than the reserve free for
//! everyone else, or at its deadline.
//!
//! ```text
//! <data-dir>/projects/<project>/gen-<gen>.restoring/   the restore's work (the controller's, 0700)
//!     download, layer-1…, dump.dir/                     the source, unpacked by the controller
//!     box/ (+ box.passwd, box.group)                    the sandbox's only writable place
//!         data/ sock/                                   the restore server's
//!     box.masking                                       masked rows on their way back in
//! ```

use std::path::{Path, PathBuf};

use clap::Args;
use devdb_pgctl::sandbox::{self, Isolation, Limits as ProcessLimits, Sandbox, Tools, UidLease};
use devdb_pgctl::{PgCtl, PgError, StopMode};
use devdb_restore::masking::MaskPlan;
use devdb_restore::{Guard, Owner, RestoreError, SourcePolicy, Template};

use devdb_core::model::ProjectRecord;
use devdb_core::runtime::{ProgressFn, RuntimeError};

/// How restores are sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// bubblewrap (a user id of each restore's own when root); required when the controller
    /// runs as root, used when it works otherwise.
    Auto,
    /// bubblewrap, or the controller does not start.
    On,
    /// No sandbox: restores run as the PostgreSQL user. Only for a machine where every dump is
    /// trusted.
    Off,
}

/// Flags of restores on the local runtime.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Restore sandbox (--runtime local)")]
pub struct SandboxArgs {
    /// How each restore (its PostgreSQL server, pg_restore) is isolated: `auto` (bubblewrap,
    /// required when running as root), `on`, or `off` (no sandbox: only where every dump is
    /// trusted).
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_SANDBOX", value_enum, default_value_t = SandboxMode::Auto)]
    pub restore_sandbox: SandboxMode,

    /// The user ids restores run as (when root), each restore one of its own: `FIRST-LAST`. No
    /// account may own them (the default is `devdb_pgctl::sandbox::DEFAULT_UIDS`).
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_UIDS", default_value = "2146435072-2146436095", value_parser = parse_range)]
    pub restore_uids: (u32, u32),

    /// The address space each process of a restore may take.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_PROCESS_MEMORY", default_value = "2GiB", value_parser = devdb_restore::limits::parse_bytes)]
    pub restore_process_memory: u64,

    /// Processes one restore may run at once.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_PROCESSES", default_value_t = 64)]
    pub restore_processes: u64,

    /// What restores leave free on the data directory's file system for databases (clones,
    /// starts): a size (`2GiB`) or a share of the file system (`5%`). A restore that would go
    /// below it fails.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_DISK_RESERVE", default_value = "5%", value_parser = parse_reserve)]
    pub restore_disk_reserve: Reserve,
}

/// Room restores leave free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserve {
    Bytes(u64),
    Percent(u8),
}

impl Reserve {
    /// In bytes, on the file system of `path`.
    pub fn bytes(self, path: &Path) -> u64 {
        match self {
            Self::Bytes(bytes) => bytes,
            Self::Percent(pct) => {
                devdb_restore::limits::total_bytes(path).map_or(0, |total| total / 100 * u64::from(pct))
            }
        }
    }
}

fn parse_reserve(text: &str) -> Result<Reserve, String> {
    match text.trim().strip_suffix('%') {
        Some(pct) => pct
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 90)
            .map(Reserve::Percent)
            .ok_or_else(|| format!("{text:?}: a share is 0% to 90%")),
        None => devdb_restore::limits::parse_bytes(text).map(Reserve::Bytes),
    }
}

fn parse_range(text: &str) -> Result<(u32, u32), String> {
    let (first, last) = text.split_once('-').ok_or_else(|| format!("{text:?}: write FIRST-LAST"))?;
    let number = |s: &str| s.trim().parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
    let (first, last) = (number(first)?, number(last)?);
    if first < 1000 || last < first || last == u32::MAX {
        return Err(format!("{text:?}: a range of unused user ids above 999"));
    }
    Ok((first, last))
}

/// What the local runtime's restores run in.
#[derive(Debug, Clone)]
pub struct RestoreSandbox {
    /// bubblewrap's tools, when restores are sandboxed.
    tools: Option<Tools>,
    uids: (u32, u32),
    limits: ProcessLimits,
    reserve: Reserve,
}

impl RestoreSandbox {
    /// Decides how restores run, from the flags and what this machine can do.
    ///
    /// # Errors
    /// [`PgError::Sandbox`] when a sandbox is required (root, or `--restore-sandbox on`) and
    /// bubblewrap cannot make one here, saying what to install.
    pub fn new(args: &SandboxArgs) -> Result<Self, PgError> {
        let root = nix::unistd::geteuid().is_root();
        let limits = ProcessLimits {
            memory: args.restore_process_memory,
            processes: args.restore_processes,
            ..ProcessLimits::default()
        };
        let tools = match args.restore_sandbox {
            SandboxMode::Off => {
                tracing::warn!("restores run without a sandbox (--restore-sandbox off): only for dumps you trust");
                None
            }
            mode => {
                let found = Tools::find().and_then(|tools| sandbox::probe(&tools, root).map(|()| tools));
                match found {
                    Ok(tools) => Some(tools),
                    Err(error) if mode == SandboxMode::On || root => {
                        return Err(PgError::Sandbox(format!(
                            "{error}; restores need it to run hostile dumps apart (or start with --restore-sandbox off where every dump is trusted)"
                        )));
                    }
                    Err(error) => {
                        tracing::warn!(%error, "restores run without a sandbox: bubblewrap is not usable here");
                        None
                    }
                }
            }
        };
        if tools.is_some() && root {
            // A restore a killed controller left running (it dies with its controller, but not
            // if it was killed before its sandbox was set up) is stopped now.
            let swept = UidLease::sweep(args.restore_uids.0, args.restore_uids.1)?;
            if !swept.is_empty() {
                tracing::warn!(uids = ?swept, "stopped what earlier restores left running");
            }
        }
        Ok(Self { tools, uids: args.restore_uids, limits, reserve: args.restore_disk_reserve })
    }

    /// Whether restores run sandboxed.
    pub fn isolates(&self) -> bool {
        self.tools.is_some()
    }

    /// Unsandboxed (tests of other things).
    pub fn off() -> Self {
        Self { tools: None, uids: (0, 0), limits: ProcessLimits::default(), reserve: Reserve::Bytes(0) }
    }

    /// The isolation of one restore: a user id leased for it when root.
    fn isolation(&self, pg: &PgCtl) -> Result<Isolation, PgError> {
        Ok(match &self.tools {
            Some(tools) => {
                let uid = if nix::unistd::geteuid().is_root() {
                    Some(UidLease::acquire(self.uids.0, self.uids.1)?)
                } else {
                    None
                };
                Isolation::Bubblewrap { tools: tools.clone(), uid }
            }
            None => Isolation::Off { run_as: pg.run_as() },
        })
    }
}

/// One restore of a project on the local runtime.
pub struct LocalRestore {
    pub pg: std::sync::Arc<PgCtl>,
    pub sandbox: RestoreSandbox,
    pub limits: devdb_restore::Limits,
    /// Its work directory (`gen-<gen>.restoring`).
    pub work: PathBuf,
    pub guard: Guard,
}

/// Room a restore needs beyond twice its dump (a fresh cluster: catalogs, a WAL segment). A
/// lower bound: a compressed dump restores larger, and a full disk met later is reported too.
const RESTORE_MARGIN: u64 = 64 << 20;

impl LocalRestore {
    /// A restore working in `work`, within what its owner's disk quota leaves it.
    pub fn new(
        pg: std::sync::Arc<PgCtl>,
        sandbox: RestoreSandbox,
        limits: devdb_restore::Limits,
        work: PathBuf,
        allowance: Option<devdb_core::runtime::DiskAllowance>,
    ) -> Self {
        let reserve = sandbox.reserve.bytes(work.parent().unwrap_or(&work));
        let allowance = allowance
            .map(|a| devdb_restore::Allowance { bytes: a.bytes, fits: std::sync::Arc::new(move |used| a.fits(used)) });
        let guard = Guard::new(&work, allowance, reserve, Some(limits.max_time));
        Self { pg, sandbox, limits, work, guard }
    }

    /// The restore server's data directory.
    pub fn data(work: &Path) -> PathBuf {
        work.join("box").join("data")
    }

    /// Downloads the source into the work directory (`None`: an empty project).
    pub async fn fetch(&self, project: &ProjectRecord, progress: ProgressFn) -> Result<Option<PathBuf>, RuntimeError> {
        let Some(location) = &project.backup_location else { return Ok(None) };
        let policy = if project.allow_private_source { SourcePolicy::Any } else { SourcePolicy::PublicOnly };
        let dest = self.work.join("download");
        let fetching =
            devdb_restore::fetch_guarded(location, &dest, policy, self.limits, &self.guard, |d, t| progress(d, t));
        // The deadline, also while a source trickles just fast enough.
        let fetched = tokio::time::timeout(self.limits.max_time, fetching).await.unwrap_or_else(|_| {
            self.guard.halt(devdb_restore::Halt::Deadline { limit: self.limits.max_time });
            Err(self.guard.check().expect_err("just halted"))
        });
        fetched.map(|f| Some(f.path)).map_err(|e| failed(&self.guard, e))
    }

    /// Unpacks the source and builds the template in a sandbox of its own; on a blocking
    /// thread (the sandbox dies with it).
    pub fn build(
        &self,
        project: &ProjectRecord,
        fetched: Option<&Path>,
    ) -> Result<devdb_restore::load::Loaded, RuntimeError> {
        let dump = fetched.map(|path| devdb_restore::prepare(path, &self.work, &self.limits, &self.guard)).transpose();
        let dump = dump.map_err(|e| failed(&self.guard, e))?;
        if let Some(dump) = &dump {
            let need = devdb_restore::files::dir_size(&dump.path).saturating_mul(2).saturating_add(RESTORE_MARGIN);
            match devdb_restore::limits::free_bytes(&self.work) {
                Ok(free) if free < need => return Err(RuntimeError::DiskFull { need: Some(need), free }),
                _ => {}
            }
        }
        let isolation =
            self.sandbox.isolation(&self.pg).map_err(RuntimeError::step("preparing the restore sandbox"))?;
        let mut sandbox =
            Sandbox::new(self.pg.binaries().clone(), &self.work.join("box"), isolation, self.sandbox.limits)
                .map_err(RuntimeError::step("preparing the restore sandbox"))?;
        let plan = MaskPlan::of(&project.masking, &project.mask_key);
        let owner = Owner { user: &project.username, password: &project.password, database: &project.database };
        let mut template = Template::in_sandbox(&mut sandbox, plan.as_ref(), &self.guard);
        let loaded = template.build(&owner, dump.as_ref()).map_err(|e| failed(&self.guard, e))?;
        let isolated = sandbox.is_isolated();
        // The controller's from now on, with nothing of the sandbox running: no later restore
        // leased the same user id may touch it, and what the sandbox left is checked and the
        // configuration replaced before anything trusts it.
        let data = Self::data(&self.work);
        sandbox.release(&data).map_err(RuntimeError::step("taking the template back"))?;
        devdb_restore::seal::seal(&data, &loaded.pristine).map_err(|e| failed(&self.guard, e))?;
        devdb_restore::seal::sync_tree(&data).map_err(RuntimeError::io("syncing the template to disk"))?;
        tracing::info!(
            project = %project.name,
            statements = loaded.statements,
            skipped = loaded.skipped,
            masking_rules = project.masking.rules.len(),
            personal_columns = loaded.findings.len(),
            sandboxed = isolated,
            "dump restored (ownership and privilege statements skipped)"
        );
        Ok(loaded)
    }

    /// Stops a restore server left in `work` by a controller that ran restores unsandboxed and
    /// was killed (a sandboxed one dies with its controller).
    pub fn stop_leftover(pg: &PgCtl, work: &Path) {
        let data = Self::data(work);
        if pg.is_running(&data) {
            let _ = pg.stop(&data, StopMode::Immediate);
        }
    }
}

/// A restore's failure as the reconciler records it: the guard's reason first (a bound it
/// broke, or a cancel); what the source or dump did wrong is the user's to fix; the rest is a
/// failed step.
pub fn failed(guard: &Guard, error: RestoreError) -> RuntimeError {
    let error = match guard.halted() {
        Some(halt) => RestoreError::from(halt),
        None => error,
    };
    match error {
        RestoreError::DiskFull { need, free } => RuntimeError::DiskFull { need, free },
        RestoreError::Cancelled | RestoreError::Load(devdb_restore::load::LoadError::Stopped) => {
            RuntimeError::Cancelled
        }
        RestoreError::Step { step, detail } => RuntimeError::Step { step, detail },
        RestoreError::Io(e) => RuntimeError::Step { step: "preparing the dump", detail: e.to_string() },
        other => RuntimeError::Source(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_and_uid_ranges_parse_with_their_reasons() {
        assert_eq!(parse_reserve("5%"), Ok(Reserve::Percent(5)));
        assert_eq!(parse_reserve("2GiB"), Ok(Reserve::Bytes(2 << 30)));
        assert!(parse_reserve("95%").is_err());
        assert_eq!(parse_range("2000000-2000010"), Ok((2_000_000, 2_000_010)));
        for bad in ["10-5", "0-100", "abc", "5"] {
            assert!(parse_range(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let total = devdb_restore::limits::total_bytes(dir.path()).expect("statvfs");
        assert_eq!(Reserve::Percent(10).bytes(dir.path()), total / 100 * 10);
    }
}
