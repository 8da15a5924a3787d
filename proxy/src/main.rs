//! `devdb-proxy`: see `devdb-proxy --help` and the crate docs.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use devdb_proxy::config::{Args, Config};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let config = Config::from(Args::parse());
    devdb_process::exit::exit(
        runtime(&config).and_then(|runtime| runtime.block_on(run(config))).map(|()| ExitCode::SUCCESS),
    )
}

/// One thread runs everything (no wake-ups between threads); more share the sessions.
fn runtime(config: &Config) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match config.worker_threads.get() {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build().context("cannot start the async runtime")
}

async fn run(config: Config) -> anyhow::Result<()> {
    devdb_process::telemetry::init(config.log_format);
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    devdb_proxy::run(config, listener, admin, devdb_process::shutdown::signal()).await
}
