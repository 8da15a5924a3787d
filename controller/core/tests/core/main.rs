//! The core in-process, in milliseconds: the REST API driven with `oneshot` over the in-memory
//! store and the fake runtime (every status code and scoping rule), and the reconciler with
//! paused time (retries, supervision, failures recorded with two faces). One binary, a module
//! per topic; `common` is the harness. The dashboard's pages are tested in its own crate.

mod api;
mod backup_settings;
mod backups;
mod common;
mod compat;
mod lifecycle;
mod masking;
mod monitoring;
mod quotas;
mod reconciler;
mod rollback;
mod settings;
