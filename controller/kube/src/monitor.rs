//! Sampling databases on Kubernetes. A database's NetworkPolicy admits only the proxy (and the
//! isolation check proves the controller is refused), so the controller samples each database
//! the way its owner connects: through the proxy's Service, over TLS verified for
//! `<name>.<domain>` (the system's roots, plus `--monitor-ca`), as the project's user, with
//! `application_name=devdb-monitor`, which the proxy neither counts as activity nor lets wake
//! an asleep database.
//!
//! Like every sampler ([`devdb_core::monitor::sampling`]) it connects to the instance's
//! `postgres` database, not the owner's (whose locks would hold its start-up), asks the server
//! to bound lock waits and the statement, ends the whole sample after [`SAMPLE_BOUND`] (the
//! connection is driven inside the sample, so it closes with it), and runs at most
//! [`SampleLimit`]'s number at once. The project's user is no superuser; it sees its own
//! sessions, which are all an owner's instance serves but the controller's.

use std::path::Path;
use std::sync::Arc;

use devdb_core::monitor::sampling::{SAMPLE_BOUND, SAMPLE_DATABASE, SAMPLE_OPTIONS, SampleLimit, sample_sql};
use devdb_core::runtime::Counters;
use devdb_core::runtime::RuntimeError;
use devdb_shared::{Domain, Name};
use tokio_postgres::SimpleQueryMessage;

/// The step failed samples name.
const STEP: &str = "sampling through the proxy";

/// Why sampling through the proxy cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot read --monitor-ca {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("cannot set up TLS for sampling: {0}")]
    Tls(String),
}

/// What every sample fails with when there is no root to verify the proxy's certificate with.
const NO_ROOTS: &str = "no certificate to verify the proxy with: the image has no system roots (ca-certificates) \
                        and the TLS Secret no ca.crt (--monitor-ca)";

/// Samples databases through the proxy at `address` (`host:port` of its Service).
pub struct ThroughProxy {
    address: String,
    domain: Domain,
    /// None: no root to verify the proxy with (every sample says so; the controller runs on).
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// Whether each connection starts with a PROXY protocol v2 header, as the proxy expects
    /// when it runs with `--proxy-protocol` (behind an NLB that sends one).
    proxy_protocol: bool,
    /// Bounds the samples running at once.
    samples: SampleLimit,
}

impl ThroughProxy {
    /// `ca`: a PEM file of extra roots (the CA of a private issuer); a missing file is
    /// skipped, so a mounted Secret without `ca.crt` leaves the system's roots. With no root at
    /// all the sampler is still made (the controller serves on), and each sample fails saying so.
    ///
    /// # Errors
    /// [`MonitorError`] when `ca` exists but is not PEM certificates (or TLS cannot be set up).
    pub fn new(address: String, domain: Domain, ca: Option<&Path>) -> Result<Self, MonitorError> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca.filter(|p| p.exists()) {
            let shown = path.display().to_string();
            let fail = |detail: String| MonitorError::Ca { path: shown.clone(), detail };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| fail(e.to_string()))? {
                roots.add(cert.map_err(|e| fail(e.to_string()))?).map_err(|e| fail(e.to_string()))?;
            }
        }
        Self::with_roots(address, domain, roots)
    }

    fn with_roots(address: String, domain: Domain, roots: rustls::RootCertStore) -> Result<Self, MonitorError> {
        let tls = if roots.is_empty() {
            tracing::warn!("{NO_ROOTS}: databases are not sampled");
            None
        } else {
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| MonitorError::Tls(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Some(tokio_postgres_rustls::MakeRustlsConnect::new(config))
        };
        Ok(Self { address, domain, tls, proxy_protocol: false, samples: SampleLimit::default() })
    }

    /// Starts each connection with a PROXY protocol v2 header (the proxy runs with
    /// `--proxy-protocol`): without one, such a proxy refuses every sample.
    #[must_use]
    pub fn with_proxy_protocol(mut self, on: bool) -> Self {
        self.proxy_protocol = on;
        self
    }

    /// The samples running now, and the most that ever ran at once.
    pub fn samples(&self) -> &SampleLimit {
        &self.samples
    }

    /// The counters of the owner's database `dbname` on the running database instance `name`,
    /// connecting as `user` with `password`.
    ///
    /// # Errors
    /// [`RuntimeError::Step`] when the proxy or the database cannot be reached, refuses (an
    /// asleep database refuses: sampling never wakes one), does not answer within
    /// [`SAMPLE_BOUND`], or has no database `dbname`; at once when too many samples still run.
    pub async fn sample(
        &self,
        name: &Name,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<Counters, RuntimeError> {
        let _running = self.samples.admit()?.start();
        tokio::time::timeout(SAMPLE_BOUND, self.read(name, user, password, dbname)).await.unwrap_or_else(|_| {
            Err(RuntimeError::Step {
                step: STEP,
                detail: format!("the database did not answer within {SAMPLE_BOUND:?}"),
            })
        })
    }

    async fn read(&self, name: &Name, user: &str, password: &str, dbname: &str) -> Result<Counters, RuntimeError> {
        use tokio_postgres::tls::MakeTlsConnect;
        let mut tls = self.tls.clone().ok_or_else(|| RuntimeError::step(STEP)(NO_ROOTS))?;
        let (host, port) =
            self.address.rsplit_once(':').ok_or_else(|| RuntimeError::step(STEP)("an address without a port"))?;
        let port: u16 = port.parse().map_err(|_| RuntimeError::step(STEP)("a bad port"))?;
        let to = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(RuntimeError::step(STEP))?
            .next()
            .ok_or_else(|| RuntimeError::step(STEP)(format!("{host} has no address")))?;
        let mut stream = tokio::net::TcpStream::connect(to).await.map_err(RuntimeError::step(STEP))?;
        // The PROXY header, then the SSL request: small writes back to back, which Nagle's
        // algorithm would hold until the first is acknowledged (a delayed ACK, tens of ms).
        stream.set_nodelay(true).map_err(RuntimeError::step(STEP))?;
        if self.proxy_protocol {
            use tokio::io::AsyncWriteExt as _;
            let from = stream.local_addr().map_err(RuntimeError::step(STEP))?;
            let header = devdb_proxy_protocol::proxy_v2_header(from, to);
            stream.write_all(&header).await.map_err(RuntimeError::step(STEP))?;
        }
        let server_name = self.domain.host_for(name);
        let mut config = tokio_postgres::Config::new();
        config
            .user(user)
            .password(password)
            .dbname(SAMPLE_DATABASE)
            .options(SAMPLE_OPTIONS)
            .application_name(devdb_shared::MONITOR_APPLICATION_NAME)
            .ssl_mode(tokio_postgres::config::SslMode::Require);
        let tls = MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut tls, &server_name)
            .map_err(RuntimeError::step(STEP))?;
        let (client, connection) = config.connect_raw(stream, tls).await.map_err(RuntimeError::step(STEP))?;
        // Driven here rather than spawned: a sample given up drops the connection with it.
        let query = async move {
            let messages = client.simple_query(&sample_sql(dbname)).await;
            drop(client);
            messages
        };
        let (messages, _) = tokio::join!(query, connection);
        let row = messages.map_err(RuntimeError::step(STEP))?.into_iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect::<Vec<_>>())
            }
            _ => None,
        });
        let row =
            row.ok_or_else(|| RuntimeError::step(STEP)(format!("the instance has no database named {dbname}")))?;
        Ok(Counters::from_row(&row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_core::monitor::sampling::MAX_SAMPLES_IN_FLIGHT;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Only so that a sample that never ends fails the test instead of hanging it.
    const HANG: std::time::Duration = std::time::Duration::from_secs(60);

    /// A server that speaks TLS as the proxy run with `--proxy-protocol` does, for
    /// `*.db.example.com` signed by a CA whose certificate is at the path returned, reads each
    /// session's PROXY header (the addresses it names become the `proxy-source` and
    /// `proxy-destination` parameters) and start packet, sends its parameters on the channel,
    /// and then answers nothing (as a start-up waiting on a lock).
    async fn silent_server(
        dir: &Path,
    ) -> (String, std::path::PathBuf, tokio::sync::mpsc::UnboundedReceiver<Vec<(String, String)>>) {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let certs = devdb_proxy::certs::DevCertificates::generate("db.example.com").expect("certificates");
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, &certs.ca_cert_pem).expect("write CA");
        let chain = CertificateDer::pem_slice_iter(certs.server_cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>();
        let key = PrivateKeyDer::from_pem_slice(certs.server_key_pem.as_bytes()).expect("key");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain.expect("chain"), key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let mut head = [0_u8; 16];
                    tcp.read_exact(&mut head).await.expect("a PROXY header");
                    let mut header = head.to_vec();
                    header.resize(16 + usize::from(u16::from_be_bytes([head[14], head[15]])), 0);
                    tcp.read_exact(&mut header[16..]).await.expect("the header's addresses");
                    let proxied = match ppp::v2::Header::try_from(header.as_slice()).expect("PROXY v2").addresses {
                        ppp::v2::Addresses::IPv4(a) => vec![
                            ("proxy-source".to_string(), format!("{}:{}", a.source_address, a.source_port)),
                            (
                                "proxy-destination".to_string(),
                                format!("{}:{}", a.destination_address, a.destination_port),
                            ),
                        ],
                        other => panic!("an IPv4 connection: {other:?}"),
                    };
                    let mut ssl_request = [0_u8; 8];
                    tcp.read_exact(&mut ssl_request).await.expect("SSLRequest");
                    tcp.write_all(b"S").await.expect("S");
                    let mut tls = acceptor.accept(tcp).await.expect("TLS");
                    let len = usize::try_from(tls.read_u32().await.expect("length")).expect("length");
                    let mut body = vec![0_u8; len - 4];
                    tls.read_exact(&mut body).await.expect("start packet");
                    let fields: Vec<String> =
                        body[4..].split(|b| *b == 0).map(|f| String::from_utf8_lossy(f).into_owned()).collect();
                    let _ = tx.send(
                        fields
                            .chunks(2)
                            .filter(|p| p.len() == 2 && !p[0].is_empty())
                            .map(|p| (p[0].clone(), p[1].clone()))
                            .chain(proxied)
                            .collect(),
                    );
                    // Silent until the client goes.
                    let mut sink = [0_u8; 1024];
                    while matches!(tls.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
        (address, ca, rx)
    }

    #[tokio::test]
    async fn samples_ask_the_maintenance_database_for_server_side_bounds_and_end_when_nothing_answers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (address, ca, mut startups) = silent_server(dir.path()).await;
        let domain = Domain::new("db.example.com").expect("domain");
        let monitor = ThroughProxy::new(address.clone(), domain, Some(&ca)).expect("sampler").with_proxy_protocol(true);
        let name = Name::new("kate-pg").expect("name");
        let samples = (0..MAX_SAMPLES_IN_FLIGHT + 2).map(|_| monitor.sample(&name, "shop_owner", "pw", "shop"));
        let outcomes = tokio::time::timeout(HANG, futures_util::future::join_all(samples))
            .await
            .expect("every sample ended on its own");
        let mut unanswered = 0;
        for outcome in &outcomes {
            match outcome {
                Err(e) if e.to_string().contains("did not answer within") => unanswered += 1,
                Err(e) => assert!(e.to_string().contains("earlier samples are still running"), "{e}"),
                Ok(counters) => panic!("nothing answered: {counters:?}"),
            }
        }
        assert_eq!(unanswered, MAX_SAMPLES_IN_FLIGHT, "{outcomes:?}");
        assert_eq!((monitor.samples().peak(), monitor.samples().running()), (MAX_SAMPLES_IN_FLIGHT, 0));

        let startup = startups.recv().await.expect("a start packet");
        let value = |key: &str| startup.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(value("database"), Some("postgres"), "never the owner's database: {startup:?}");
        assert_eq!(value("user"), Some("shop_owner"));
        assert_eq!(value("application_name"), Some(devdb_shared::MONITOR_APPLICATION_NAME));
        let options = value("options").unwrap_or_default();
        assert!(options.contains("lock_timeout=1s") && options.contains("statement_timeout=3s"), "{options}");
        assert_eq!(value("proxy-destination"), Some(address.as_str()), "the header names the proxy's address");
        assert!(value("proxy-source").is_some_and(|s| s.starts_with("127.0.0.1:")), "{startup:?}");
    }

    #[test]
    fn an_unreadable_ca_is_refused_and_a_missing_one_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let domain = Domain::new("db.example.com").expect("domain");
        let bad = dir.path().join("ca.crt");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").expect("write");
        let err = ThroughProxy::new("proxy:5432".into(), domain.clone(), Some(&bad)).err().expect("refused");
        assert!(err.to_string().contains("--monitor-ca"), "{err}");
        let missing = dir.path().join("absent.crt");
        assert!(ThroughProxy::new("proxy:5432".into(), domain, Some(&missing)).is_ok(), "a missing file is skipped");
    }

    /// An image without system roots and a TLS Secret without `ca.crt`: the controller still
    /// starts (the sampler is made), and each sample says what is missing.
    #[tokio::test]
    async fn without_any_root_the_sampler_is_made_and_each_sample_says_why_it_fails() {
        let domain = Domain::new("db.example.com").expect("domain");
        let monitor =
            ThroughProxy::with_roots("127.0.0.1:9".into(), domain, rustls::RootCertStore::empty()).expect("made");
        let name = Name::new("kate-pg").expect("name");
        let error = monitor.sample(&name, "shop_owner", "pw", "shop").await.expect_err("no root").to_string();
        assert!(error.contains("no certificate to verify the proxy with"), "{error}");
        assert_eq!(monitor.samples().running(), 0);
    }
}
