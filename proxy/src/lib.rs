//! The DevDB proxy: one TLS-terminating PostgreSQL proxy that reads the SNI host name
//! `<name>.<domain>`, routes the session to that database instance's backend, and relays it.
//!
//! # The data path
//! accept ([`listener`]) → [`proxy_protocol`] header (optional) → [`handshake`] (SSLRequest or
//! direct TLS, StartupMessage) → [`route`] (SNI or `endpoint=`) → [`admission`] (a place among
//! the sessions authenticating) → [`backend`] (connect, forward startup) → [`relay`]
//! (authentication with rewritten cancel keys, then splice). The story of one connection, stage
//! by stage, is [`connection`].
//!
//! # Beside the path
//! - [`routes`]: the routing table and the sources keeping it current.
//! - [`controller`]: the one typed client of the controller (route feed, wakes, reports).
//! - [`cancel`]: proxy-issued cancel keys and forwarding of CancelRequests.
//! - [`activity`]: sessions per database reported to the controller, and waking asleep ones;
//!   [`wake`]: how often clients that have not authenticated may wake them.
//! - [`tls`], [`certs`]: the certificate (hot reload) and development certificates.
//! - [`protocol`], [`pq_stream`]: wire messages (via pgwire) and the pre-relay framed stream.
//! - [`error`]: what a client may be told, with SQLSTATEs.
//! - [`admin`], [`metrics`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`config`], [`net`], [`watch`]: settings, socket options, file watching.

pub mod activity;
pub mod admin;
pub mod admission;
pub mod backend;
pub mod cancel;
/// Development certificates (the CA and wildcard certificate made when none is given).
pub use devdb_certs as certs;
pub mod config;
pub mod connection;
pub mod controller;
pub mod error;
pub mod handshake;
pub mod listener;
pub mod metrics;
pub mod net;
pub mod pq_stream;
/// Wire messages, decoded and encoded (the pure part lives in `devdb-proxy-protocol`, fuzzed).
pub use devdb_proxy_protocol as protocol;
pub mod proxy_protocol;
pub mod relay;
pub mod route;
pub mod routes;
pub mod tls;
pub mod wake;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::cancel::CancelMap;
use crate::certs::DevCertificates;
use crate::config::{Config, RoutesConfig, TlsSource};
use crate::controller::ControllerClient;
use crate::metrics::Metrics;
use crate::routes::{ControllerSource, FileSource, RouteSource, Routes};
use crate::tls::Tls;
use crate::watch::FileWatch;

/// Everything a connection shares with the others.
pub struct Context {
    pub config: Config,
    pub tls: Tls,
    pub routes: Routes,
    pub cancels: Arc<CancelMap>,
    pub admission: Arc<Admission>,
    pub metrics: Metrics,
    /// Sessions per database here, reported to the controller.
    pub sessions: Arc<activity::Sessions>,
    /// The controller, when routes come from it: wakes asleep databases, takes activity reports.
    pub controller: Option<Arc<activity::Controller>>,
    /// Cancelled when shutdown begins: `/readyz` answers 503 so load balancers stop sending.
    pub draining: CancellationToken,
    /// Cancelled when the grace period is over: remaining sessions are closed.
    pub closing: CancellationToken,
}

impl Context {
    /// What the connections of a proxy configured by `config` share: its certificate, its
    /// routing table (kept current by whoever holds `routes`), and the controller's API when
    /// routes come from it (`controller`: wakes and activity reports). `port`: the port clients
    /// reach the replicas on, where cancel requests are forwarded to peers.
    pub fn new(config: Config, tls: Tls, routes: Routes, controller: Option<ControllerClient>, port: u16) -> Self {
        let wakes = Arc::new(wake::WakeLimiter::new(config.wakes));
        Self {
            tls,
            routes,
            cancels: Arc::new(CancelMap::new(config.replica_addr, port, config.proxy_protocol)),
            admission: Arc::new(Admission::new(config.authenticating)),
            metrics: Metrics::new(config.metrics_name_databases()),
            sessions: Arc::new(activity::Sessions::new(wakes.clone())),
            controller: controller.map(|api| Arc::new(activity::Controller::new(api, wakes))),
            config,
            draining: CancellationToken::new(),
            closing: CancellationToken::new(),
        }
    }
}

/// Runs the proxy on already-bound listeners until `shutdown` resolves and sessions drain: one
/// event loop, on the calling runtime.
///
/// # Errors
/// When the certificate or the routes file cannot be loaded at start.
pub async fn run(
    config: Config,
    listener: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    serve(config, listener, Vec::new(), admin, shutdown).await
}

/// Runs the proxy with one event loop per listener (see [`listener::bind`]): the first on the
/// calling runtime, with the background work (routes, certificates, admin port), each other on
/// a thread of its own. A session stays on the loop that accepted it, so no thread wakes another.
///
/// # Errors
/// As [`run`]; also when no listener is given or a loop's thread cannot start.
pub async fn run_loops(
    config: Config,
    listeners: Vec<std::net::TcpListener>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut listeners = listeners.into_iter();
    let first = listeners.next().context("no listening socket")?;
    let first = TcpListener::from_std(first).context("registering the listening socket")?;
    serve(config, first, listeners.collect(), admin, shutdown).await
}

async fn serve(
    config: Config,
    listener: TcpListener,
    others: Vec<std::net::TcpListener>,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let (cert, key) = match &config.tls {
        TlsSource::Files { cert, key } => (cert.clone(), key.clone()),
        TlsSource::Dev { dir } => {
            let (paths, generated) = DevCertificates::ensure_in(dir, config.domain.as_str())?;
            tracing::warn!(
                ca = %paths.ca_cert.display(),
                generated,
                "using a development certificate; clients verify it with sslrootcert=<ca>"
            );
            (paths.server_cert, paths.server_key)
        }
    };
    let tls_watch = FileWatch::new(vec![cert.clone(), key.clone()], config.reload_interval);
    let tls = Tls::load(&cert, &key).with_context(|| format!("loading the TLS certificate {}", cert.display()))?;
    let routes = Routes::default();
    // Routes from a file, or from the controller, which then also takes wakes and activity reports.
    let (source, api): (Box<dyn RouteSource>, _) = match &config.routes {
        RoutesConfig::File(path) => (Box::new(FileSource::open(path, config.reload_interval, &routes)?), None),
        RoutesConfig::Controller { url, token } => {
            let api = ControllerClient::new(url, token.clone()).context("making the HTTP client for the controller")?;
            (Box::new(ControllerSource::new(api.clone())), Some(api))
        }
    };

    tracing::info!(
        listen = %listener.local_addr()?,
        admin = %admin.local_addr()?,
        domain = %config.domain,
        routes = routes.len(),
        proxy_protocol = config.proxy_protocol,
        allow_plaintext = config.allow_plaintext,
        "devdb-proxy started"
    );
    let peers = config.peers.clone();
    // A name for this replica in activity reports: the pod's, else this process's.
    let replica = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("proxy-{}", std::process::id()));
    let ctx = Arc::new(Context::new(config, tls, routes.clone(), api, listener.local_addr()?.port()));
    let background = CancellationToken::new();
    tokio::spawn(source.run(routes, background.clone()));
    tokio::spawn(reload_certificates(ctx.clone(), tls_watch, background.clone()));
    tokio::spawn(admin::serve(admin, ctx.clone(), background.clone()));
    if let Some(controller) = ctx.controller.clone() {
        let (sessions, shutdown, every) = (ctx.sessions.clone(), background.clone(), ctx.config.activity_report_every);
        tokio::spawn(async move { controller.report_activity(sessions, replica, every, shutdown).await });
    }
    if !peers.is_empty() {
        let cancels = ctx.cancels.clone();
        tokio::spawn(cancel::follow_peers(cancels, peers, std::time::Duration::from_secs(10), background.clone()));
    }

    let stop = CancellationToken::new();
    let loops = others
        .into_iter()
        .enumerate()
        .map(|(i, other)| listener::spawn_loop(i + 1, other, ctx.clone(), stop.clone()))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot start an event loop thread")?;
    let stopping = stop.clone();
    listener::serve(listener, ctx, async move {
        shutdown.await;
        stopping.cancel();
    })
    .await;
    stop.cancel();
    for event_loop in loops {
        let _ = tokio::task::spawn_blocking(move || event_loop.join()).await;
    }
    background.cancel();
    Ok(())
}

async fn reload_certificates(ctx: Arc<Context>, mut watch: FileWatch, shutdown: CancellationToken) {
    while shutdown.run_until_cancelled(watch.changed()).await.is_some() {
        match ctx.tls.reload() {
            Ok(()) => tracing::info!("TLS certificate reloaded"),
            Err(error) => tracing::warn!(%error, "keeping the previous TLS certificate"),
        }
    }
}
