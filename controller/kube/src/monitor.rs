//! Sampling databases on Kubernetes. A database's NetworkPolicy admits only the proxy (and the
//! isolation check proves the controller is refused), so the controller samples each database
//! the way its owner connects: through the proxy's Service, over TLS verified for
//! `<name>.<domain>` (the system's roots, plus `--monitor-ca`), as the project's user, with
//! `application_name=devdb-monitor`, which the proxy neither counts as activity nor lets wake
//! an asleep database.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use devdb_core::monitor::{Counters, SAMPLE_SQL};
use devdb_core::runtime::RuntimeError;
use devdb_shared::{Domain, Name};
use tokio_postgres::SimpleQueryMessage;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why sampling through the proxy cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("cannot read --monitor-ca {path}: {detail}")]
    Ca { path: String, detail: String },
    #[error("no certificate to verify the proxy with: neither the system's roots nor --monitor-ca")]
    NoRoots,
}

/// Samples databases through the proxy at `address` (`host:port` of its Service).
pub struct ThroughProxy {
    address: String,
    domain: Domain,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl ThroughProxy {
    /// `ca`: a PEM file of extra roots (the CA of a private issuer); a missing file is
    /// skipped, so a mounted Secret without `ca.crt` leaves the system's roots.
    ///
    /// # Errors
    /// [`MonitorError`] when `ca` exists but is not PEM certificates, or there is no root at all.
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
        if roots.is_empty() {
            return Err(MonitorError::NoRoots);
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|_| MonitorError::NoRoots)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { address, domain, tls: tokio_postgres_rustls::MakeRustlsConnect::new(config) })
    }

    /// The counters of the running database `name`, connecting as `user` with `password` to
    /// `dbname`.
    ///
    /// # Errors
    /// [`RuntimeError::Step`] when the proxy or the database cannot be reached or refuses (an
    /// asleep database refuses: sampling never wakes one).
    pub async fn sample(
        &self,
        name: &Name,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> Result<Counters, RuntimeError> {
        let fail = RuntimeError::step("sampling through the proxy");
        let (host, port) = self.address.rsplit_once(':').ok_or_else(|| fail("an address without a port"))?;
        let port: u16 = port.parse().map_err(|_| RuntimeError::step("sampling through the proxy")("a bad port"))?;
        let ip = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(RuntimeError::step("sampling through the proxy"))?
            .next()
            .ok_or_else(|| RuntimeError::step("sampling through the proxy")(format!("{host} has no address")))?
            .ip();
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.domain.host_for(name))
            .hostaddr(ip)
            .port(port)
            .user(user)
            .password(password)
            .dbname(dbname)
            .application_name(devdb_shared::MONITOR_APPLICATION_NAME)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(CONNECT_TIMEOUT);
        let (client, connection) =
            config.connect(self.tls.clone()).await.map_err(RuntimeError::step("sampling through the proxy"))?;
        let connection = tokio::spawn(connection);
        let messages = client.simple_query(SAMPLE_SQL).await.map_err(RuntimeError::step("sampling through the proxy"));
        drop(client);
        let _ = connection.await;
        let row = messages?.into_iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect::<Vec<_>>())
            }
            _ => None,
        });
        Ok(Counters::from_row(&row.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_ca_is_refused_and_a_missing_one_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let domain = Domain::new("db.example.com").expect("domain");
        let bad = dir.path().join("ca.crt");
        std::fs::write(&bad, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").expect("write");
        let err = ThroughProxy::new("proxy:5432".into(), domain.clone(), Some(&bad)).err().expect("refused");
        assert!(err.to_string().contains("--monitor-ca"), "{err}");
        let missing = dir.path().join("absent.crt");
        match ThroughProxy::new("proxy:5432".into(), domain, Some(&missing)) {
            Ok(_) | Err(MonitorError::NoRoots) => {} // a machine without system roots
            Err(other) => panic!("a missing file is skipped: {other}"),
        }
    }
}
