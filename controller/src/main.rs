//! `devdb-controller`: the DevDB API server, with the local or the Kubernetes runtime, and
//! `devdb-controller up` (what `devdb up` runs). See `--help`. The composition root: which store
//! and which runtime go under the core, and what is served beside its API (`app`: the
//! dashboard), are decided here and nowhere else.

mod app;
mod down;
mod dr;
mod server;
mod up;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use devdb_core::config::{ApiArgs, ApiConfig};
use devdb_kube::{KubeArgs, KubeConfig};
use devdb_local::LocalArgs;
use devdb_process::telemetry::LogFormat;
use tokio::net::TcpListener;

/// DevDB controller: REST API for projects (restored dumps) and databases (clones), with
/// PostgreSQL instances run locally under --data-dir (--runtime local) or on Kubernetes
/// (--runtime kube: state as Project and Database resources, one namespace per project).
#[derive(Parser)]
#[command(name = "devdb-controller", version, max_term_width = 100)]
struct Args {
    #[command(flatten)]
    api: ApiArgs,

    /// Where database instances run: `local` (PostgreSQL processes under --data-dir) or `kube`.
    #[arg(long, env = "DEVDB_CONTROLLER_RUNTIME", value_enum, default_value = "local")]
    runtime: RuntimeKind,

    #[command(flatten)]
    local: LocalArgs,

    #[command(flatten)]
    kube: KubeArgs,

    /// Log format: `text` for people, `json` (one object a line) for a cluster's log collector;
    /// `RUST_LOG` filters (default `info`).
    #[arg(long, global = true, env = "DEVDB_CONTROLLER_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Option<Command>,
}

/// The runtimes a controller can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RuntimeKind {
    Local,
    Kube,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (Project, Database), or write them into a directory.
    Crds {
        /// Write one file per CRD into this directory (the chart keeps them in charts/devdb/crds).
        #[arg(long)]
        write: Option<std::path::PathBuf>,
    },
    /// Run DevDB on this machine: the controller (local runtime) and the proxy, with
    /// development certificates (what `devdb up` runs).
    Up(Box<up::UpArgs>),
    /// Stop every database instance under --data-dir while no controller runs (what `devdb
    /// down` runs after `devdb up` stopped); a connection wakes each at the next `devdb up`.
    Down(Box<LocalArgs>),
    /// Disaster recovery from a backup repository: what it holds (`status`), and databases
    /// restored from it into a new data directory (`restore`).
    Dr(Box<dr::DrArgs>),
}

#[tokio::main]
async fn main() -> ExitCode {
    devdb_process::exit::exit(run().await.map(|()| ExitCode::SUCCESS))
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.command {
        Some(Command::Crds { write }) => return crds(write.as_deref()),
        Some(Command::Down(local)) => return down::run(&local).await,
        Some(Command::Dr(dr)) => return dr::run(*dr).await,
        Some(Command::Up(up)) => {
            devdb_process::telemetry::init(args.log_format);
            return up::run(*up).await;
        }
        None => {}
    }
    devdb_process::telemetry::init(args.log_format);
    let config = ApiConfig::try_from(args.api)?;
    let listener = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.api_listen))?;
    let shutdown = devdb_process::shutdown::signal();
    match args.runtime {
        RuntimeKind::Local => server::run_local(config, &args.local, listener, shutdown).await,
        RuntimeKind::Kube => {
            // The same backup flags as the local runtime's, with no default repository here.
            let kube = KubeConfig::try_from(args.kube)?.with_backups(args.local.backups.configured()?)?;
            server::run_kube(config, kube, listener, shutdown).await
        }
    }
}

fn crds(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use devdb_kube::crd;
    for definition in crd::definitions() {
        match dir {
            Some(dir) => {
                let path = dir.join(crd::manifest_file(&definition));
                std::fs::write(&path, crd::manifest(&definition))
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
            None => print!("{}", crd::manifest(&definition)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Every flag of every part (the API, both runtimes, `up`, `down`) has a name of its own.
    #[test]
    fn the_flags_of_every_part_fit_together() {
        Args::command().debug_assert();
    }

    /// A cluster's log collector gets JSON: the flag, or its variable as the chart sets it.
    #[test]
    fn logs_are_text_unless_json_is_asked_for() {
        let parse = |extra: &[&str]| Args::try_parse_from([&["devdb-controller"], extra].concat()).expect("parses");
        assert_eq!(parse(&[]).log_format, LogFormat::Text);
        assert_eq!(parse(&["--log-format", "json"]).log_format, LogFormat::Json);
        assert_eq!(
            parse(&["up", "--log-format", "json"]).log_format,
            LogFormat::Json,
            "global: after a subcommand too"
        );
        assert!(Args::try_parse_from(["devdb-controller", "--log-format", "xml"]).is_err());
    }
}
