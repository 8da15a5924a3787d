//! The controller's core, which knows no platform: the [`model`], the [`store::Store`] and
//! [`runtime::Runtime`] traits the adapters implement, the [`reconcile`]r that drives records
//! to reality, the routing table ([`routes`]), the [`state`] machines of databases and projects, when databases stop and end ([`lifecycle`]), the
//! owners' [`quota`]s, the PostgreSQL [`settings`] owners may change, when databases are backed
//! up and what is kept ([`backup_settings`], [`backups`]), the REST API ([`api`],
//! with [`auth`]) and what every request passes ([`app`]: the origin guard, a span, the release
//! header), and the [`monitor`] and [`usage`] ledger behind the API's metrics and reports.
//!
//! The dashboard is not here: it is a crate of its own (`devdb-dashboard`) that calls this API
//! in-process, and the binary composes the two ([`app::with_request_layers`] wraps them).
//!
//! `memory` and `fake` are a store and a runtime with nothing underneath, and `harness` the core
//! over them with an HTTP application to call: the core's own tests (and the dashboard's) drive
//! the API and the reconciler over them, in-process. They are test doubles, built only for tests
//! (the `test-support` feature), never into a binary.
//!
//! Dependencies point one way: the binaries pick adapters (local: SQLite and processes;
//! Kubernetes: custom resources and the kube-rs operator) and the dashboard, adapters implement
//! this crate's traits, and this crate knows only `devdb-shared`.

pub mod activity;
pub mod api;
pub mod app;
pub mod auth;
pub mod backup_settings;
pub mod backups;
pub mod clock;
pub mod config;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
#[cfg(any(test, feature = "test-support"))]
pub mod harness;
pub mod lifecycle;
#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod model;
pub mod monitor;
pub mod origin;
pub mod queue;
pub mod quota;
pub mod reconcile;
pub mod routes;
pub mod runtime;
pub mod settings;
pub mod state;
pub mod store;
pub mod usage;
