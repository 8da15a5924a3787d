//! The dashboard in-process, in milliseconds: its pages driven as a browser (cookies, forms,
//! `oneshot`) over the core's in-memory store and fake runtime, composed with the API as the
//! binary composes it. One binary, a module per topic; `common` is the harness.

mod access;
mod backup_settings;
mod backups;
mod common;
mod masking;
