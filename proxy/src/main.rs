//! `devdb-proxy`: see `devdb-proxy --help` and the crate docs.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use devdb_proxy::config::{Args, Config};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> ExitCode {
    devdb_process::exit::exit(run().await.map(|()| ExitCode::SUCCESS))
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from(Args::parse());
    devdb_process::telemetry::init(config.log_format);
    let listener =
        TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    devdb_proxy::run(config, listener, admin, devdb_process::shutdown::signal()).await
}
