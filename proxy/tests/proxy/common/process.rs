//! The process harness: the whole proxy ([`devdb_proxy::run`]: its routes file, certificate
//! reloads, admin port and listener) on ephemeral ports with a generated CA, in front of real
//! PostgreSQL servers. For what needs PostgreSQL itself: relay transparency, cancels, SCRAM
//! through the proxy, a real wake of a real server, and the proxy's life as a process.

use std::net::SocketAddr;
use std::time::Duration;

use devdb_proxy::certs::{DevCertificatePaths, DevCertificates};
use devdb_proxy::config::{Config, RoutesConfig, TlsSource};
use devdb_shared::Domain;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// The proxy, running in this process on ephemeral ports, with a generated CA.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub certs: DevCertificatePaths,
    _dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestProxy {
    pub async fn start(routes: RouteList<'_>) -> Self {
        Self::start_with(routes, |_| {}).await
    }

    /// Starts with the test defaults (fast reloads), then `tweak`.
    pub async fn start_with(routes: RouteList<'_>, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on("127.0.0.1:0", routes_json(routes), tweak).await
    }

    /// Starts listening on `listen` with a routes file of exactly `table` (JSON).
    pub async fn start_on(listen: &str, table: String, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new().prefix("devdb-proxy-").tempdir().expect("tempdir");
        let certs =
            DevCertificates::generate(DOMAIN).expect("certs").write_to(&dir.path().join("certs")).expect("write");
        let routes_file = dir.path().join("routes.json");
        std::fs::write(&routes_file, table).expect("routes");
        let tls = TlsSource::Files { cert: certs.server_cert.clone(), key: certs.server_key.clone() };
        let mut config = Config::new(Domain::new(DOMAIN).expect("domain"), tls, RoutesConfig::File(routes_file));
        config.reload_interval = Duration::from_millis(50);
        config.shutdown_grace = Duration::from_secs(5);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind(listen).await.expect("bind");
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let (addr, admin_addr) = (listener.local_addr().expect("addr"), admin.local_addr().expect("addr"));
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(devdb_proxy::run(config, listener, admin, async move {
            let _ = rx.await;
        }));
        Self { addr, admin: admin_addr, certs, _dir: dir, shutdown: Some(tx), task: Some(task) }
    }

    /// A tokio-postgres config for instance `name` through the proxy (SNI = `<name>.<domain>`).
    pub fn config(&self, name: &str) -> tokio_postgres::Config {
        let mut config = pg_config(name);
        config.hostaddr([127, 0, 0, 1].into()).port(self.addr.port());
        config
    }

    pub fn tls(&self) -> tokio_postgres_rustls::MakeRustlsConnect {
        make_tls(&self.certs.ca_cert, false)
    }

    pub async fn connect(&self, name: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        connect_with(&self.config(name), self.tls()).await
    }

    /// A psql connection string that verifies the certificate, as a user would write it.
    pub fn psql_conninfo(&self, name: &str) -> String {
        psql_conninfo(self.addr.port(), &self.certs.ca_cert, name)
    }

    /// `GET path` on the admin port; returns (status line, body).
    pub async fn admin_get(&self, path: &str) -> (String, String) {
        http_get(self.admin, path).await
    }

    /// Signals shutdown (as SIGTERM does) without waiting for the proxy to finish.
    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("proxy task").expect("proxy ran");
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Opens TLS to the proxy the way libpq does (SSLRequest, 'S'), with `sni` and `alpn`.
pub async fn tls_via_ssl_request(
    proxy: &TestProxy,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    ssl_request(&mut tcp).await;
    tls_handshake(&proxy.certs.ca_cert, tcp, sni, alpn).await
}

/// Waits until `/metrics` contains `line` (metrics of a connection are counted as it ends, which
/// may be just after the client returns); panics with the metrics text if it never does.
pub async fn wait_for_metric(proxy: &TestProxy, line: &str) {
    let mut metrics = String::new();
    for _ in 0..1200 {
        metrics = proxy.admin_get("/metrics").await.1;
        if metrics.contains(line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("metrics never showed {line:?}:\n{metrics}");
}
