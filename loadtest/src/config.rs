//! The load generator's flags.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// What each client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new TLS session per transaction (`SELECT 1`), closed after it.
    Connect,
    /// Persistent sessions cycling a simple SELECT, a prepared SELECT and a small INSERT.
    Query,
    /// Open --clients sessions, hold them idle for --duration, then check each still answers.
    Idle,
}

/// Where to connect and what to run.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Address to connect to: the proxy, a server or a pooler.
    #[arg(long, default_value = "127.0.0.1:6432")]
    pub addr: SocketAddr,

    /// With a domain, clients connect as `<name>.<domain>` (sent as SNI: the proxy routes on it);
    /// without, they send no SNI (a server or pooler straight).
    #[arg(long)]
    pub domain: Option<String>,

    /// Database names, comma-separated; clients take them in turn.
    #[arg(long, value_delimiter = ',', default_value = "bench")]
    pub names: Vec<String>,

    #[arg(long, default_value = "app")]
    pub user: String,

    #[arg(long, env = "LOADTEST_PASSWORD", hide_env_values = true, default_value = "")]
    pub password: String,

    #[arg(long, default_value = "app")]
    pub dbname: String,

    /// CA certificate to verify the server with (else the certificate is not verified, as with
    /// sslmode=require).
    #[arg(long)]
    pub ca: Option<PathBuf>,

    /// Concurrent clients (sessions, in idle mode).
    #[arg(long, default_value_t = 8)]
    pub clients: usize,

    #[arg(long, value_enum, default_value = "query")]
    pub mode: Mode,

    /// How long to measure (idle: how long to hold the sessions).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,

    /// Stop after this many transactions in total instead of after --duration.
    #[arg(long)]
    pub count: Option<u64>,

    /// Run this long before measuring (not counted).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    pub warmup: Duration,

    /// Idle mode: report the memory (RSS) of this process, e.g. the proxy's.
    #[arg(long)]
    pub watch_pid: Option<u32>,
}
