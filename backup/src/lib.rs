//! Backups and point-in-time restore of a database instance, through pgBackRest (Debian's
//! `pgbackrest`), not hand-written archiving: PostgreSQL hands each WAL segment to
//! `pgbackrest archive-push` (asynchronous, compressed, encrypted), backups are pgBackRest's full,
//! differential and incremental ones with its retention, and a restore is pgBackRest's, with a
//! recovery target.
//!
//! Each database is a stanza of its own, with its own configuration file ([`config`]) and its
//! own repository key ([`config::stanza_key`], derived from the controller's secret and the
//! stanza): a database's WAL and backups are readable only with its key, so a repository
//! written by one installation is refused by another unless given its secret, and one tenant's
//! stanza cannot be read with another's configuration. Nothing here takes a repository or a key
//! from a user: the controller chooses both.
//!
//! - [`args`]: the controller's flags naming the repository, for either runtime;
//! - [`repository`]: where backups go (a directory, or S3 and its settings), parsed from what an
//!   operator gives, credentials from the environment;
//! - [`config`]: a stanza's settings, its configuration file and the `archive_command`
//!   PostgreSQL runs;
//! - [`pgbackrest`]: the commands (stanza-create, backup, info, restore, verify, expire), run as
//!   the PostgreSQL user;
//! - [`info`]: what `info --output=json` says of a stanza, and the window it can be restored to;
//! - [`verify`]: what `verify` finds wrong in a repository (bad files, named).

pub mod args;
pub mod config;
pub mod info;
pub mod pgbackrest;
pub mod repository;
pub mod verify;

pub use args::{BackupRepoArgs, BackupRepoError};
pub use config::{Retention, Stanza};
pub use info::{BackupKind, StanzaInfo, Window};
pub use pgbackrest::{BackupError, PgBackRest, Target};
pub use repository::{Repository, RepositoryError, S3Credentials, S3Settings};
