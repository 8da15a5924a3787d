//! `devdb-controller`: the DevDB API server, with the local or the Kubernetes runtime. See `--help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use devdb_controller::config::{KubeArgs, KubeConfig, RuntimeKind, ServerArgs, ServerConfig};
use tokio::net::TcpListener;

/// DevDB controller: REST API for projects (restored dumps) and databases (clones), with
/// PostgreSQL instances run locally under --data-dir (--runtime local) or on Kubernetes
/// (--runtime kube: state as Project and Database resources, one namespace per project).
#[derive(Parser)]
#[command(name = "devdb-controller", version, max_term_width = 100)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,

    /// Where database instances run: `local` (PostgreSQL processes under --data-dir) or `kube`.
    #[arg(long, env = "DEVDB_CONTROLLER_RUNTIME", value_enum, default_value = "local")]
    runtime: RuntimeKind,

    #[command(flatten)]
    kube: KubeArgs,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (Project, Database), or write them into a directory.
    Crds {
        /// Write one file per CRD into this directory (the chart keeps them in charts/devdb/crds).
        #[arg(long)]
        write: Option<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    devdb_process::exit::exit(run().await.map(|()| ExitCode::SUCCESS))
}

async fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Command::Crds { write }) = args.command {
        return crds(write.as_deref());
    }
    devdb_process::telemetry::init(devdb_process::telemetry::LogFormat::Text);
    let mut config = ServerConfig::try_from(args.server)?;
    if args.runtime == RuntimeKind::Kube {
        config.kube = Some(KubeConfig::try_from(args.kube)?);
    }
    let listener = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.api_listen))?;
    devdb_controller::server::run(config, listener, devdb_process::shutdown::signal()).await
}

fn crds(dir: Option<&std::path::Path>) -> anyhow::Result<()> {
    use devdb_controller::runtime::kubernetes::crd;
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
