//! The controller's core, which knows no platform: the [`model`], the [`store::Store`] and
//! [`runtime::Runtime`] traits the adapters implement, the [`reconcile`]r that drives records
//! to reality, the routing table ([`routes`]), the [`state`] machines of databases and projects, when databases stop and end ([`lifecycle`]), the
//! owners' [`quota`]s, the PostgreSQL [`settings`] owners may change and the REST API ([`api`],
//! with [`auth`]), the
//! [`dashboard`] beside it, and the [`monitor`] and [`usage`] ledger behind its charts and reports.
//!
//! `memory` and `fake` are a store and a runtime with nothing underneath: the core's own tests
//! drive the API and the reconciler over them, in-process. They are test doubles, built only for
//! tests (the `test-support` feature), never into a binary.
//!
//! Dependencies point one way: the binaries pick adapters (local: SQLite and processes;
//! Kubernetes: custom resources and the kube-rs operator), adapters implement this crate's
//! traits, and this crate knows only `devdb-shared`.

pub mod activity;
pub mod api;
pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod dashboard;
#[cfg(any(test, feature = "test-support"))]
pub mod fake;
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
