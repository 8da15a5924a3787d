//! `devdb`: the DevDB command line, a client of the REST API. See `devdb --help`.

use std::process::ExitCode;

use clap::Parser;
use devdb_cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let result = devdb_cli::run(Cli::parse()).await;
    devdb_process::exit::exit(result.map(|code| ExitCode::from(u8::try_from(code).unwrap_or(1))))
}
