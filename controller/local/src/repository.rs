//! Where the local runtime's backups go: the controller's backup flags, shared with the
//! Kubernetes runtime (see [`devdb_backup::args`]), with `<data-dir>/backups` by default.

pub use devdb_backup::args::{BackupRepoArgs, BackupRepoError, default_repository};
