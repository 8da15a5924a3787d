//! Restoring a project's dump into a template data directory, safely: the one restore path of
//! both runtimes (the local runtime calls it in-process; restore Jobs run its `devdb-restore`
//! binary in the database image).
//!
//! A dump is hostile until restored. The pipeline, in the order it runs:
//! - [`fetch`]: the source onto disk, only from addresses the [`policy`] allows, errors naming
//!   the source by its display form only;
//! - [`format`]: what the file is, from its content (plain SQL, custom, tar, directory, gzip),
//!   unpacked by [`unpack`] (bounded; regular files and directories only);
//! - [`template`]: a fresh server in the restore's [sandbox](devdb_pgctl::sandbox) (a user id
//!   and namespaces of its own), the project's role and database, then [`load`]: every
//!   statement sent through a session as the project's (non-superuser) role, the SQL split by
//!   [`script`] (never psql: no meta-command is ever interpreted), archives turned into SQL by
//!   `pg_restore` in the same sandbox; the personal-data [`scan`], the [`masking`] (values
//!   computed here, outside the server); then a catalog check that no role but the bootstrap
//!   superuser is privileged, and a clean stop.
//!
//! Every step asks the restore's [`guard`] whether to go on: a cancel, its owner's disk, the
//! room left for everyone else, its deadline.

pub mod fetch;
pub mod files;
pub mod format;
pub mod guard;
pub mod limits;
pub mod load;
pub mod masking;
pub mod policy;
pub mod report;
pub mod scan;
pub mod seal;
pub mod sql;
/// The SQL splitter (its own crate, pure and fuzzed).
pub use devdb_restore_script as script;
pub mod template;
pub mod unpack;

pub use fetch::{Fetched, Fetcher, fetch, fetch_guarded};
pub use format::{Dump, DumpFormat, prepare};
pub use guard::{Allowance, Guard, Halt};
pub use limits::{LimitArgs, Limits};
pub use policy::SourcePolicy;
pub use template::{Owner, Template};

/// Why a dump could not be fetched, recognised or restored. Messages are shown to users as they
/// are: they name sources by their display form and never quote a server's answer.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("unsupported backup location {0}: use http://, https://, s3:// (restore Jobs) or file:// (local runtime)")]
    UnsupportedLocation(String),
    #[error("refused to fetch {location}: {refused}")]
    Refused { location: String, refused: policy::Refused },
    #[error("cannot reach {location}: {reason}")]
    Unreachable { location: String, reason: String },
    #[error("{location} answered HTTP {status}")]
    HttpStatus { location: String, status: u16 },
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "the source is {0}, not a PostgreSQL dump (expected SQL text, or pg_dump's custom, tar or directory format, optionally gzipped)"
    )]
    NotADump(String),
    #[error("the dump is truncated: {0}")]
    Truncated(String),
    #[error("the source is larger than {} (the limit: --max-source-size)", limits::human(*limit))]
    TooLarge { limit: u64 },
    #[error("the source expands more than {ratio} times when decompressed (the limit: --max-decompression-ratio)")]
    Expands { ratio: u64 },
    #[error("the source stalled: less than {} arrived in {}", limits::human(*min), humantime::format_duration(*window))]
    Stalled { window: std::time::Duration, min: u64 },
    #[error("the disk is full{}", need.map_or_else(String::new, |need| format!(": the restore needs about {}", limits::human(need))))]
    DiskFull { need: Option<u64>, free: u64 },
    #[error("restoring the dump failed at {0}")]
    Load(#[from] load::LoadError),
    #[error(
        "the dump made {0} privileged (superuser, replication, row-security bypass or server file and program access); DevDB refuses such snapshots"
    )]
    PrivilegedRoles(String),
    #[error("the dump made other databases beside the project's ({0}); a snapshot holds the project's database alone")]
    OtherDatabases(String),
    #[error("{0}")]
    Masking(String),
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    /// Cancelled (the project was deleted, or restored again).
    #[error("cancelled")]
    Cancelled,
    /// Ended by its [`Guard`] for a bound (the owner's disk, the disk's reserve, the deadline).
    #[error("{0}")]
    Halted(String),
    #[error("i/o error while preparing the dump: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for RestoreError {
    /// A full disk is named as such, wherever it happens.
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return Self::DiskFull { need: None, free: 0 };
        }
        Self::Io(e)
    }
}

impl RestoreError {
    /// A failed step; a tool that ran out of space says so ("No space left on device").
    pub(crate) fn step<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> Self {
        move |e| {
            let detail = e.to_string();
            if detail.contains("No space left on device") {
                return Self::DiskFull { need: None, free: 0 };
            }
            Self::Step { step, detail }
        }
    }

    /// Whether it is the disk being full.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Self::DiskFull { .. })
    }
}
