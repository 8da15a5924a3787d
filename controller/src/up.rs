//! `devdb up` (`devdb-controller up`): the whole product on one machine: the controller (local
//! runtime, embedded store) and the proxy (routes streamed from the controller, with a token of
//! its own whatever tokens are configured), with development certificates.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;
use devdb_proxy::config::{Config as ProxyConfig, RoutesConfig, TlsSource};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use devdb_core::config::{ApiArgs, ApiConfig};
use devdb_local::LocalArgs;

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    api: ApiArgs,

    #[command(flatten)]
    local: LocalArgs,

    /// Address of the PostgreSQL proxy (clients connect here).
    #[arg(long, env = "DEVDB_PROXY_LISTEN", default_value = "127.0.0.1:6432")]
    proxy_listen: SocketAddr,

    /// Address of the proxy's /metrics, /healthz, /readyz.
    #[arg(long, env = "DEVDB_PROXY_ADMIN_LISTEN", default_value = "127.0.0.1:9187")]
    proxy_admin_listen: SocketAddr,

    /// How often the proxy reports the databases with sessions open (idle ones are stopped).
    #[arg(long, env = "DEVDB_PROXY_ACTIVITY_REPORT_EVERY", default_value = "15s", value_parser = humantime::parse_duration)]
    activity_report_every: std::time::Duration,

    /// Before starting, restore every database of the installation whose backup repository
    /// (a directory) this is, into this data directory (disaster recovery; it then archives
    /// into the same repository). Needs --backup-key-file.
    #[arg(long, value_name = "DIR", requires = "backup_key_file")]
    restore_from: Option<std::path::PathBuf>,

    /// With --restore-from: a copy of that installation's <data-dir>/backup/secret.
    #[arg(long, value_name = "FILE", requires = "restore_from")]
    backup_key_file: Option<std::path::PathBuf>,
}

pub async fn run(mut args: UpArgs) -> anyhow::Result<()> {
    if let (Some(repo), Some(key_file)) = (args.restore_from.clone(), args.backup_key_file.clone()) {
        let from = crate::dr::RecoverFrom { repo, key_file };
        crate::dr::restore(&mut args.local, &from, &devdb_local::dr::restore::Which::All).await?;
    }
    args.api.public_port = args.proxy_listen.port();
    let mut config = ApiConfig::try_from(args.api)?;
    let idle = config.idle_stop_after;
    // The built-in proxy follows the routes with a token of its own, made for this run: with
    // tokens configured the feed needs an admin one, and none of the user's is required.
    let feed_token = (!config.tokens.is_empty()).then(|| {
        let token = devdb_core::auth::generate_password();
        config.tokens.add_admin(token.clone());
        token
    });
    let data_dir = args.local.data_dir.clone();
    let domain = config.domain.clone();
    let api = TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("cannot listen on {} (API)", config.api_listen))?;
    let api_addr = api.local_addr()?;
    let proxy = TcpListener::bind(args.proxy_listen)
        .await
        .with_context(|| format!("cannot listen on {} (proxy)", args.proxy_listen))?;
    let proxy_admin = TcpListener::bind(args.proxy_admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (proxy admin)", args.proxy_admin_listen))?;

    let feed_host =
        if api_addr.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], api_addr.port())) } else { api_addr };
    let routes = RoutesConfig::Controller { url: format!("http://{feed_host}"), token: feed_token };
    let mut proxy_config = ProxyConfig::new(domain.clone(), TlsSource::Dev { dir: data_dir.join("certs") }, routes);
    proxy_config.listen = args.proxy_listen;
    proxy_config.admin_listen = args.proxy_admin_listen;
    proxy_config.activity_report_every = args.activity_report_every;

    let stop = CancellationToken::new();
    let stop_controller = stop.clone();
    let local = args.local.clone();
    let controller =
        tokio::spawn(
            async move { crate::server::run_local(config, &local, api, stop_controller.cancelled_owned()).await },
        );
    let proxy_task = tokio::spawn(devdb_proxy::run(proxy_config, proxy, proxy_admin, stop.clone().cancelled_owned()));

    let ca = data_dir.join("certs").join("ca.crt");
    eprintln!(
        "\nDevDB is up.\n  API    http://{api_addr}  (dashboard: http://{api_addr}/)\n  proxy  {} (host names *.{domain})\n  CA     {} (sslrootcert for sslmode=verify-full)\n\n\
         Next, in another terminal:\n  devdb project create shop --from https://example.com/shop.dump\n  devdb db create kate-pg --project shop\n  devdb db connect kate-pg\n\nPress Ctrl-C to stop (database instances keep running and are adopted at the next start;\n`devdb down` stops them). {}\n",
        args.proxy_listen,
        ca.display(),
        if idle.is_zero() {
            "Databases are not stopped for idleness (--idle-stop-after 0s).".to_string()
        } else {
            format!("Databases idle for {} stop, and wake on the next connection.", humantime::format_duration(idle))
        },
    );

    let mut controller = controller;
    tokio::select! {
        () = devdb_process::shutdown::signal() => {}
        // The controller stops on its own only when it fails (at start, say): its own error.
        ended = &mut controller => {
            stop.cancel();
            let _ = proxy_task.await;
            return ended?.and_then(|()| Err(anyhow::anyhow!("the controller stopped")));
        }
    }
    stop.cancel();
    controller.await??;
    proxy_task.await??;
    Ok(())
}
