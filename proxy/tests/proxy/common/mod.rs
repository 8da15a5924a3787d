//! What both harnesses share: the client side. TLS configurations trusting a generated CA,
//! tokio-postgres and psql connection settings, startup and negotiation packets, and reading the
//! proxy's answers (messages, FATAL refusals, closes) off any stream.
//!
//! The harnesses themselves: [`process`] (real PostgreSQL servers behind the whole proxy, for
//! what needs them) and [`inproc`] (the proxy's connection code over in-memory streams, with the
//! [`fakes`] of a backend and a controller, for refusals, routing and wakes).

pub mod fakes;
pub mod inproc;
mod process;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

pub use devdb_testkit::{PASSWORD, TestPostgres, USER, free_port, psql, query_one};
pub use process::*;

pub const DOMAIN: &str = "db.devdb.test";

/// The host name of instance `name` (the SNI the proxy routes by).
pub fn host(name: &str) -> String {
    format!("{name}.{DOMAIN}")
}

/// `(name, backend address)` pairs.
pub type RouteList<'a> = &'a [(&'a str, String)];

/// A routes file of `routes`, each ready.
pub fn routes_json(routes: RouteList<'_>) -> String {
    let routes: Vec<_> =
        routes.iter().map(|(name, backend)| serde_json::json!({ "name": name, "backend": backend })).collect();
    serde_json::json!({ "routes": routes }).to_string()
}

/// Replaces the file at `path` with `contents` at once (write, then rename), as a routes file
/// is updated.
pub fn replace_file(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
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

/// tokio-postgres settings for instance `name` (SNI `<name>.<domain>`), with the test
/// password and `sslmode=require`; where to connect is the caller's.
pub fn pg_config(name: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host(name))
        .user(USER)
        .password(PASSWORD)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(20));
    config
}

pub async fn connect_with(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = config.connect(tls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// tokio-postgres over a stream already open to the proxy (in-memory, or TCP after a PROXY
/// header), with TLS for `config`'s host.
pub async fn connect_over<S>(
    stream: S,
    config: &tokio_postgres::Config,
    mut tls: tokio_postgres_rustls::MakeRustlsConnect,
) -> Result<tokio_postgres::Client, tokio_postgres::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let host = match config.get_hosts() {
        [tokio_postgres::config::Host::Tcp(host), ..] => host.clone(),
        _ => String::new(),
    };
    let connector =
        tokio_postgres::tls::MakeTlsConnect::<S>::make_tls_connect(&mut tls, &host).expect("a TLS connector");
    let (client, conn) = config.connect_raw(stream, connector).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A psql connection string for instance `name` through a proxy on `port`, verifying the
/// certificate with `ca` as a user would.
pub fn psql_conninfo(port: u16, ca: &Path, name: &str) -> String {
    format!(
        "host={} hostaddr=127.0.0.1 port={port} sslmode=verify-full sslrootcert={} user={USER} dbname=postgres",
        host(name),
        ca.display()
    )
}

/// SQLSTATE and message of a connection error from the server (or proxy).
pub fn db_error(err: &tokio_postgres::Error) -> (String, String) {
    let db = err.as_db_error().unwrap_or_else(|| panic!("not a server error: {err:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// The error of a connection attempt that must fail (clients are not `Debug`, so no `expect_err`).
pub fn refused<T>(result: Result<T, tokio_postgres::Error>) -> tokio_postgres::Error {
    match result {
        Ok(_) => panic!("the connection was expected to be refused"),
        Err(err) => err,
    }
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

/// A CancelRequest for process `pid` with `secret`, of any length (malformed ones included).
pub fn cancel_packet(pid: i32, secret: &[u8]) -> Vec<u8> {
    let mut cancel = ((12 + secret.len()) as i32).to_be_bytes().to_vec();
    cancel.extend_from_slice(&80877102i32.to_be_bytes());
    cancel.extend_from_slice(&pid.to_be_bytes());
    cancel.extend_from_slice(secret);
    cancel
}

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

/// Sends an SSLRequest the way libpq does and expects 'S'.
pub async fn ssl_request(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) {
    write_all(stream, &request_packet(SSL_REQUEST)).await;
    assert_eq!(stream.read_u8().await.expect("answer"), b'S');
}

/// Completes TLS on `stream` as a client trusting `ca`, with `sni` and `alpn`.
pub async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    ca: &Path,
    stream: S,
    sni: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<S> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_tls_config(ca, alpn)));
    let name = rustls_pki_types::ServerName::try_from(sni.to_string()).expect("server name");
    connector.connect(name, stream).await.expect("TLS handshake")
}

/// After TLS, sends a StartupMessage for the test user and reads the first answer: `Ok` when the
/// backend asked the client to authenticate (the session is admitted and held), `Err` with the
/// proxy's refusal.
pub async fn start_session<S: AsyncRead + AsyncWrite + Unpin>(mut tls: S) -> Result<S, ErrorFields> {
    write_all(&mut tls, &startup_packet(3, 0, &[("user", USER), ("database", "postgres")])).await;
    match read_message(&mut tls).await.expect("an answer") {
        (b'R', _) => Ok(tls),
        (b'E', body) => Err(parse_error(&body)),
        (tag, _) => panic!("unexpected {:?}", tag as char),
    }
}

pub async fn write_all(stream: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
    stream.flush().await.expect("flush");
}
