//! `devdb-loadtest`: a load generator for DevDB. It opens TLS sessions with tokio-postgres, either
//! through the proxy (each client's host name `<name>.<domain>` is sent as SNI) or straight to a
//! server or pooler (no SNI), and runs one workload:
//!
//! - [`config::Mode::Connect`]: a new session per transaction (connection setup rate and latency);
//! - [`config::Mode::Query`]: persistent sessions cycling a simple `SELECT`, a prepared `SELECT`
//!   and a small `INSERT`;
//! - [`config::Mode::Idle`]: hold N idle sessions, and report a process's memory per session.
//!
//! It counts what it did ([`report::Report`]): errors are counted and sampled, never dropped.
//!
//! - [`config`]: the flags; [`tls`]: the client TLS connector;
//! - [`workload`]: the clients; [`report`]: latency histograms, the table and the JSON.

pub mod config;
pub mod report;
pub mod tls;
pub mod workload;
