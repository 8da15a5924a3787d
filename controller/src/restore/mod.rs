//! Getting a project's dump onto disk and knowing what it is.
//!
//! [`fetch`] streams `backupLocation` (http, https, file) to a file, reporting progress;
//! [`prepare`] recognises the dump from its content (never its name), unpacking gzip and
//! tar-packed directory dumps on the way, and returns a [`Dump`] that says how to restore it.

mod fetch;
mod format;

pub use fetch::{Fetched, fetch};
pub use format::{Dump, DumpFormat, check_plain_sql, prepare};

/// Why a dump could not be fetched or recognised. Messages are shown to users as is.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("unsupported backup location {0:?}: use http://, https:// or file:// (s3:// needs the kube runtime)")]
    UnsupportedLocation(String),
    #[error("cannot reach {location}: {reason}")]
    Unreachable { location: String, reason: String },
    #[error("{location} answered HTTP {status}")]
    HttpStatus { location: String, status: u16 },
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error(
        "{0} is not a PostgreSQL dump (expected pg_dump output: plain SQL, custom, tar or directory, optionally gzipped)"
    )]
    NotADump(String),
    #[error("the dump is truncated: {0}")]
    Truncated(String),
    #[error("the SQL dump runs the psql command {command} on line {line}; DevDB restores SQL, not psql scripts")]
    PsqlCommand { command: String, line: usize },
    #[error("i/o error while preparing the dump: {0}")]
    Io(#[from] std::io::Error),
}
