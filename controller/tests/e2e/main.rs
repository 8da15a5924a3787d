//! End-to-end tests of the controller binaries, one binary: `devdb up` as a real process, the
//! `devdb` CLI, real restores and clients (`common` is the harness). What the core decides
//! without a process (status codes, scoping, retries) is tested in-process in `devdb-core`.

mod access;
mod backup_settings;
mod backups;
mod backups_s3;
mod certs;
mod chart;
mod common;
mod dr;
mod failures;
mod help;
mod lifecycle;
mod masking;
mod monitoring;
mod recovery;
mod rollback;
mod settings;
mod sleep;
