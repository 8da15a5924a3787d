//! `devdb`: the DevDB command line. See `devdb --help`.

use std::process::ExitCode;

use clap::Parser;
use devdb_controller::cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Up(_)) {
        devdb_process::telemetry::init(devdb_process::telemetry::LogFormat::Text);
    }
    let result = devdb_controller::cli::run(cli).await;
    devdb_process::exit::exit(result.map(|code| ExitCode::from(u8::try_from(code).unwrap_or(1))))
}
