//! `devdb-controller`: the DevDB API server with the local runtime. See `--help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use devdb_controller::config::{ServerArgs, ServerConfig};
use tokio::net::TcpListener;

/// DevDB controller: REST API for projects (restored dumps) and databases (clones), with
/// PostgreSQL instances run locally under --data-dir.
#[derive(Parser)]
#[command(name = "devdb-controller", version, max_term_width = 100)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
}

#[tokio::main]
async fn main() -> ExitCode {
    devdb_proxy::error::exit(run().await.map(|()| ExitCode::SUCCESS))
}

async fn run() -> anyhow::Result<()> {
    devdb_proxy::telemetry::init(devdb_proxy::telemetry::LogFormat::Text);
    let config = ServerConfig::try_from(Args::parse().server)?;
    let listener = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.api_listen))?;
    devdb_controller::server::run(config, listener, devdb_proxy::shutdown::signal()).await
}
