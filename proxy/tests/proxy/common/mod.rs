//! Test harness: real PostgreSQL servers, the proxy with generated certificates, and clients
//! (tokio-postgres over rustls, psql, raw sockets).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use devdb_proxy::certs::{DevCertificatePaths, DevCertificates};
use devdb_proxy::config::{Config, RoutesConfig, TlsSource};
use devdb_shared::Domain;
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const DOMAIN: &str = "db.devdb.test";
#[allow(unused_imports)]
pub use devdb_testkit::{PASSWORD, TestPostgres, USER, free_port, psql, query_one};

/// The proxy, running in this process on ephemeral ports, with a generated CA.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub certs: DevCertificatePaths,
    pub routes_file: PathBuf,
    pub dir: TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// `(name, backend address)` pairs.
pub type RouteList<'a> = &'a [(&'a str, String)];

pub fn routes_json(routes: RouteList<'_>) -> String {
    let routes: Vec<_> =
        routes.iter().map(|(name, backend)| serde_json::json!({ "name": name, "backend": backend })).collect();
    serde_json::json!({ "routes": routes }).to_string()
}

impl TestProxy {
    pub async fn start(routes: RouteList<'_>) -> Self {
        Self::start_with(routes, |_| {}).await
    }

    /// Starts with the test defaults (fast reloads), then `tweak`.
    pub async fn start_with(routes: RouteList<'_>, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_with_table(routes_json(routes), tweak).await
    }

    /// Starts with a routes file of exactly `table` (JSON).
    pub async fn start_with_table(table: String, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_on("127.0.0.1:0", table, tweak).await
    }

    /// Starts listening on `listen` with a routes file of exactly `table` (JSON).
    pub async fn start_on(listen: &str, table: String, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::Builder::new().prefix("devdb-proxy-").tempdir().expect("tempdir");
        let certs =
            DevCertificates::generate(DOMAIN).expect("certs").write_to(&dir.path().join("certs")).expect("write");
        let routes_file = dir.path().join("routes.json");
        std::fs::write(&routes_file, table).expect("routes");
        let tls = TlsSource::Files { cert: certs.server_cert.clone(), key: certs.server_key.clone() };
        let mut config =
            Config::new(Domain::new(DOMAIN).expect("domain"), tls, RoutesConfig::File(routes_file.clone()));
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
        Self { addr, admin: admin_addr, certs, routes_file, dir, shutdown: Some(tx), task: Some(task) }
    }

    pub fn set_routes(&self, routes: RouteList<'_>) {
        self.set_table(routes_json(routes));
    }

    /// Replaces the routes file atomically with `table` (JSON).
    pub fn set_table(&self, table: String) {
        let tmp = self.routes_file.with_extension("tmp");
        std::fs::write(&tmp, table).expect("write routes");
        std::fs::rename(&tmp, &self.routes_file).expect("rename routes");
    }

    pub fn host(name: &str) -> String {
        format!("{name}.{DOMAIN}")
    }

    /// A tokio-postgres config for instance `name` through the proxy (SNI = `<name>.<domain>`).
    pub fn config(&self, name: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(Self::host(name))
            .hostaddr([127, 0, 0, 1].into())
            .port(self.addr.port())
            .user(USER)
            .password(PASSWORD)
            .dbname("postgres")
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(20));
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
        format!(
            "host={} hostaddr=127.0.0.1 port={} sslmode=verify-full sslrootcert={} user={USER} dbname=postgres",
            Self::host(name),
            self.addr.port(),
            self.certs.ca_cert.display()
        )
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

pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    http_get_with(addr, path, &[]).await
}

/// `GET path` with extra `headers` (`"Name: value"`); returns (status line, body).
pub async fn http_get_with(addr: SocketAddr, path: &str, headers: &[&str]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect admin");
    let headers: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").as_bytes()).await.expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("response");
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

/// A rustls client configuration trusting `ca` (ring provider), optionally offering ALPN.
pub fn client_tls_config(ca: &Path, alpn: &[&[u8]]) -> rustls::ClientConfig {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca cert")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

pub fn make_tls(ca: &Path, alpn: bool) -> tokio_postgres_rustls::MakeRustlsConnect {
    let protocols: &[&[u8]] = if alpn { &[b"postgresql"] } else { &[] };
    tokio_postgres_rustls::MakeRustlsConnect::new(client_tls_config(ca, protocols))
}

pub async fn connect_with(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// SQLSTATE and message of a connection error from the server (or proxy).
pub fn db_error(err: &tokio_postgres::Error) -> (String, String) {
    let db = err.as_db_error().unwrap_or_else(|| panic!("not a server error: {err:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// A startup packet with protocol `major.minor` and `params`.
pub fn startup_packet(major: u16, minor: u16, params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = BytesMut::new();
    body.put_u16(major);
    body.put_u16(minor);
    for (k, v) in params {
        body.put_slice(k.as_bytes());
        body.put_u8(0);
        body.put_slice(v.as_bytes());
        body.put_u8(0);
    }
    body.put_u8(0);
    let mut packet = (body.len() as i32 + 4).to_be_bytes().to_vec();
    packet.extend_from_slice(&body);
    packet
}

/// An 8-byte negotiation request (SSLRequest, GSSENCRequest) with `code`.
pub fn request_packet(code: i32) -> Vec<u8> {
    let mut packet = 8i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&code.to_be_bytes());
    packet
}

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;

/// A backend message read off a raw stream: (tag, body).
pub async fn read_message(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    let tag = stream.read_u8().await.ok()?;
    let len = stream.read_i32().await.ok()?;
    let mut body = vec![0u8; usize::try_from(len - 4).ok()?];
    stream.read_exact(&mut body).await.ok()?;
    Some((tag, body))
}

/// Fields of an ErrorResponse body: (severity, code, message, hint).
#[derive(Debug, Default)]
pub struct ErrorFields {
    pub severity: String,
    /// The non-localized severity.
    pub severity_v: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

pub fn parse_error(body: &[u8]) -> ErrorFields {
    let mut fields = ErrorFields::default();
    let mut buf = body;
    while buf.has_remaining() && buf[0] != 0 {
        let kind = buf.get_u8();
        let end = buf.iter().position(|b| *b == 0).expect("terminated field");
        let value = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.advance(end + 1);
        match kind {
            b'S' => fields.severity = value,
            b'V' => fields.severity_v = value,
            b'C' => fields.code = value,
            b'M' => fields.message = value,
            b'D' => fields.detail = Some(value),
            b'H' => fields.hint = Some(value),
            _ => {}
        }
    }
    fields
}

/// Reads the proxy's refusal: exactly one FATAL ErrorResponse, then end of stream.
pub async fn expect_refusal(stream: &mut (impl AsyncRead + Unpin)) -> ErrorFields {
    let read = async {
        let (tag, body) = read_message(stream).await.expect("an ErrorResponse");
        assert_eq!(tag, b'E', "expected an ErrorResponse, got {:?}", tag as char);
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "nothing after the error");
        parse_error(&body)
    };
    let fields = tokio::time::timeout(Duration::from_secs(20), read).await.expect("refused in time");
    assert_eq!((fields.severity.as_str(), fields.severity_v.as_str()), ("FATAL", "FATAL"));
    fields
}

/// Waits for the peer to close: true when the stream ends (reads of whatever came before it are
/// discarded, e.g. a TLS alert).
pub async fn closes(stream: &mut (impl AsyncRead + Unpin)) -> bool {
    let mut sink = vec![0u8; 4096];
    let drain = async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), drain).await.unwrap_or(false)
}

/// Opens TLS to the proxy the way libpq does (SSLRequest, 'S'), with `sni` and `alpn`.
pub async fn tls_via_ssl_request(
    proxy: &TestProxy,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    tcp.write_all(&request_packet(SSL_REQUEST)).await.expect("SSLRequest");
    assert_eq!(tcp.read_u8().await.expect("answer"), b'S');
    tls_handshake(proxy, tcp, sni, alpn).await
}

/// Opens direct TLS (ClientHello as the first bytes).
pub async fn tls_direct(proxy: &TestProxy, sni: &str, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    tls_handshake(proxy, tcp, sni, alpn).await
}

pub async fn tls_handshake(
    proxy: &TestProxy,
    tcp: TcpStream,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls_config(&proxy.certs.ca_cert, alpn)));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).expect("server name");
    connector.connect(name, tcp).await.expect("TLS handshake")
}

pub async fn write_all(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
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

/// The error of a connection attempt that must fail (clients are not `Debug`, so no `expect_err`).
pub fn refused<T>(result: Result<T, tokio_postgres::Error>) -> tokio_postgres::Error {
    match result {
        Ok(_) => panic!("the connection was expected to be refused"),
        Err(err) => err,
    }
}

/// Opens a session from `source` the way an attacker would: TLS with SNI, a StartupMessage, and
/// then nothing. `Ok` holds an admitted session (the backend asked it to authenticate), `Err`
/// the proxy's refusal.
pub async fn unauthenticated(
    proxy: &TestProxy,
    source: [u8; 4],
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ErrorFields> {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind((std::net::Ipv4Addr::from(source), 0).into()).expect("bind the source address");
    let mut tcp = socket.connect(proxy.addr).await.expect("connect");
    write_all(&mut tcp, &request_packet(SSL_REQUEST)).await;
    assert_eq!(tokio::io::AsyncReadExt::read_u8(&mut tcp).await.expect("answer"), b'S');
    let mut tls = tls_handshake(proxy, tcp, &TestProxy::host(name), &[]).await;
    write_all(&mut tls, &startup_packet(3, 0, &[("user", USER), ("database", "postgres")])).await;
    match read_message(&mut tls).await.expect("an answer") {
        (b'R', _) => Ok(tls),
        (b'E', body) => Err(parse_error(&body)),
        (tag, _) => panic!("unexpected {:?}", tag as char),
    }
}
