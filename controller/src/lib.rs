//! The DevDB controller: the REST API, the reconciler that provisions projects and database
//! instances, the runtimes that run them, and the `devdb` CLI.
//!
//! # Layout
//! - [`api`]: HTTP in (axum): projects, databases, the routes feed; [`auth`]: API tokens.
//! - [`store`]: the embedded state (SQLite under `--data-dir`).
//! - [`reconcile`]: drives records to reality, recovers after a crash.
//! - [`runtime`]: where instances run ([`runtime::local`]: PostgreSQL processes).
//! - [`routes`]: the routing table published to proxies.
//! - [`server`], [`config`]: the server process; [`cli`]: the `devdb` command.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod http;
pub mod reconcile;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod store;
