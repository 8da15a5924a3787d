//! The in-process harness: the proxy's own connection code ([`devdb_proxy::connection::handle`])
//! serving in-memory streams (`tokio::io::duplex`) in the test's runtime, with a [`Context`] made
//! as the proxy makes it, a route table set in code (or followed from a [`FakeController`]), and
//! [`FakeBackend`]s behind the routes. No PostgreSQL and no sockets on the client side, so a
//! refusal, a routing decision or a wake is proven in milliseconds, and a timeout under test
//! runs on paused time (`#[tokio::test(start_paused = true)]`, or `tokio::time::pause` once the
//! backends are quiet: only in-memory streams may be in flight while time is paused).
//!
//! Clients that are separate processes (psql) reach the same [`Context`] through the proxy's own
//! accept loop on a loopback port ([`InProc::listen`]), and `/metrics` is read from it directly
//! ([`InProc::metrics`]) or through the admin router ([`InProc::admin`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use devdb_proxy::Context;
use devdb_proxy::certs::{DevCertificatePaths, DevCertificates};
use devdb_proxy::config::{Config, RoutesConfig, TlsSource};
use devdb_proxy::controller::ControllerClient;
use devdb_proxy::routes::{ControllerSource, FileSource, RouteSource, Routes};
use devdb_proxy::tls::Tls;
use devdb_shared::{Domain, Name, Route, RouteState, RouteTable};
use tempfile::TempDir;
use tokio::io::DuplexStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::fakes::FakeController;
use super::*;

/// Room in each direction of an in-memory connection: a TLS record and then some.
const DUPLEX_CAPACITY: usize = 64 * 1024;

/// The address clients connect from unless a test says otherwise.
pub const CLIENT: [u8; 4] = [127, 0, 0, 1];

/// The proxy's connection handling in this runtime.
pub struct InProc {
    pub ctx: Arc<Context>,
    pub certs: DevCertificatePaths,
    /// Every connection served so far (see [`InProc::settled`]).
    served: TaskTracker,
    _dir: TempDir,
    /// Stops the route feed, the activity reports and the listeners when the harness is dropped.
    _background: DropGuard,
    background: CancellationToken,
}

impl InProc {
    /// A proxy with routing table `table`, the flags' defaults changed by `tweak`.
    pub fn start(table: Vec<Route>, tweak: impl FnOnce(&mut Config)) -> Self {
        let proxy = Self::new(None, tweak);
        proxy.ctx.routes.replace(RouteTable { version: 1, routes: table });
        proxy
    }

    /// A proxy that follows `controller`'s route feed and asks it for wakes, reporting activity
    /// every `activity_report_every` (100 ms unless `tweak` says otherwise), as the proxy does
    /// with `--routes-from`.
    pub fn following(controller: &FakeController, tweak: impl FnOnce(&mut Config)) -> Self {
        let api = ControllerClient::new(&controller.url, None).expect("controller client");
        let proxy = Self::new(Some(api.clone()), |c| {
            c.routes = RoutesConfig::Controller { url: controller.url.clone(), token: None };
            c.activity_report_every = Duration::from_millis(100);
            tweak(c);
        });
        let stop = proxy.background.clone();
        tokio::spawn(Box::new(ControllerSource::new(api)).run(proxy.ctx.routes.clone(), stop.clone()));
        if let Some(controller) = proxy.ctx.controller.clone() {
            let (sessions, every) = (proxy.ctx.sessions.clone(), proxy.ctx.config.activity_report_every);
            tokio::spawn(async move { controller.report_activity(sessions, "proxy-test".into(), every, stop).await });
        }
        proxy
    }

    /// A proxy whose routes come from the routes file at `path`, reloaded every
    /// `reload_interval`, as the proxy does with `--routes-file`.
    pub fn reading(path: &std::path::Path, tweak: impl FnOnce(&mut Config)) -> Self {
        let proxy = Self::new(None, tweak);
        let source = FileSource::open(path, proxy.ctx.config.reload_interval, proxy.routes()).expect("routes file");
        tokio::spawn(Box::new(source).run(proxy.routes().clone(), proxy.background.clone()));
        proxy
    }

    fn new(api: Option<ControllerClient>, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new().prefix("devdb-proxy-").tempdir().expect("tempdir");
        let certs = DevCertificates::generate(DOMAIN).expect("certs").write_to(dir.path()).expect("write");
        let tls = TlsSource::Files { cert: certs.server_cert.clone(), key: certs.server_key.clone() };
        let unused = RoutesConfig::File(dir.path().join("routes.json"));
        let mut config = Config::new(Domain::new(DOMAIN).expect("domain"), tls, unused);
        tweak(&mut config);
        let tls = Tls::load(&certs.server_cert, &certs.server_key).expect("certificate");
        let port = config.listen.port();
        let ctx = Arc::new(Context::new(config, tls, Routes::default(), api, port));
        let background = CancellationToken::new();
        Self {
            ctx,
            certs,
            served: TaskTracker::new(),
            _dir: dir,
            _background: background.clone().drop_guard(),
            background,
        }
    }

    pub fn routes(&self) -> &Routes {
        &self.ctx.routes
    }

    /// Sets `name`'s state, keeping its backend.
    pub fn set(&self, name: &str, state: RouteState) {
        let mut route = self.routes().get(&Name::new(name).expect("name")).expect("a route");
        route.state = state;
        self.routes().upsert(route);
    }

    /// Waits until the table says `name` is in `state` (a change the controller's feed brings).
    pub async fn wait_for(&self, name: &str, state: RouteState) {
        let name = Name::new(name).expect("name");
        self.wait_until(|routes| routes.get(&name).is_some_and(|r| r.state == state)).await;
    }

    /// Waits until the table satisfies `done` (a change its source brings).
    pub async fn wait_until(&self, done: impl Fn(&Routes) -> bool) {
        let mut changes = self.routes().subscribe();
        while !done(self.routes()) {
            changes.changed().await.expect("the table lives as long as the proxy");
        }
    }

    /// A new client connection from `from`: the client's end of an in-memory stream whose other
    /// end the proxy serves in a task of its own, as it serves an accepted TCP connection.
    pub fn open(&self, from: SocketAddr) -> DuplexStream {
        let (client, server) = tokio::io::duplex(DUPLEX_CAPACITY);
        self.served.spawn(devdb_proxy::connection::handle(self.ctx.clone(), server, from));
        client
    }

    /// A connection from [`CLIENT`].
    pub fn open_client(&self) -> DuplexStream {
        self.open(SocketAddr::from((CLIENT, 40000)))
    }

    /// TLS the way libpq opens it (SSLRequest, 'S'), from [`CLIENT`], with `sni` and `alpn`.
    pub async fn tls_via_ssl_request(&self, sni: &str, alpn: &[&[u8]]) -> TlsStream<DuplexStream> {
        let mut stream = self.open_client();
        ssl_request(&mut stream).await;
        tls_handshake(&self.certs.ca_cert, stream, sni, alpn).await
    }

    /// Direct TLS (a ClientHello as the first bytes), from [`CLIENT`].
    pub async fn tls_direct(&self, sni: &str, alpn: &[&[u8]]) -> TlsStream<DuplexStream> {
        tls_handshake(&self.certs.ca_cert, self.open_client(), sni, alpn).await
    }

    /// Opens a session from `source` the way an attacker would: TLS with SNI, a StartupMessage,
    /// and then nothing. `Ok` holds an admitted session (the backend asked it to authenticate),
    /// `Err` the proxy's refusal.
    pub async fn unauthenticated(&self, source: [u8; 4], name: &str) -> Result<TlsStream<DuplexStream>, ErrorFields> {
        let mut stream = self.open(SocketAddr::from((IpAddr::from(source), 40000)));
        ssl_request(&mut stream).await;
        start_session(tls_handshake(&self.certs.ca_cert, stream, &host(name), &[]).await).await
    }

    /// tokio-postgres settings for instance `name` (SNI, the test password, `sslmode=require`).
    pub fn config(&self, name: &str) -> tokio_postgres::Config {
        pg_config(name)
    }

    /// A client that trusts this proxy's CA, without ALPN.
    pub fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        make_tls(&self.certs.ca_cert, false)
    }

    /// tokio-postgres with `config` and `tls` from [`CLIENT`].
    pub async fn connect_with(
        &self,
        config: &tokio_postgres::Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect_over(self.open_client(), config, tls).await
    }

    /// tokio-postgres to instance `name` with the password, from [`CLIENT`].
    pub async fn connect(&self, name: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_with(&self.config(name), self.tls()).await
    }

    /// Serves TCP clients (psql) on a loopback port with the proxy's own accept loop, until the
    /// harness is dropped; returns the port.
    pub async fn listen(&self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = self.background.clone();
        tokio::spawn(devdb_proxy::listener::serve(listener, self.ctx.clone(), stop.cancelled_owned()));
        port
    }

    /// A psql connection string for instance `name` through [`InProc::listen`]'s `port`,
    /// verifying the certificate.
    pub fn psql_conninfo(&self, port: u16, name: &str) -> String {
        psql_conninfo(port, &self.certs.ca_cert, name)
    }

    /// Serves the admin routes (`/metrics`, `/healthz`, `/readyz`) on a loopback port.
    pub async fn admin(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(devdb_proxy::admin::serve(listener, self.ctx.clone(), self.background.clone()));
        addr
    }

    /// Waits until every connection opened so far has ended (its outcome logged and counted).
    pub async fn settled(&self) {
        self.served.close();
        self.served.wait().await;
        self.served.reopen();
    }

    /// The `/metrics` text.
    pub fn metrics(&self) -> String {
        self.ctx.metrics.encode()
    }

    /// Asserts that the metrics, once every connection has ended, contain `line`.
    pub async fn assert_metric(&self, line: &str) {
        self.settled().await;
        let metrics = self.metrics();
        assert!(metrics.contains(line), "metrics do not show {line:?}:\n{metrics}");
    }
}
