//! `devdb-proxy`: see `devdb-proxy --help` and the crate docs.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use devdb_proxy::config::{Args, Config};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let config = Config::from(Args::parse());
    devdb_process::exit::exit(serve(config).map(|()| ExitCode::SUCCESS))
}

/// The first event loop runs on this thread, beside the background work; the others (see
/// `--worker-threads`) on threads of their own.
fn serve(config: Config) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the runtime")?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    devdb_process::telemetry::init(config.log_format);
    let listeners = devdb_proxy::listener::bind(config.listen, config.worker_threads.get())
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let admin = TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (admin)", config.admin_listen))?;
    devdb_proxy::run_loops(config, listeners, admin, devdb_process::shutdown::signal()).await
}
