//! TLS termination: the server certificate (hot-reloaded through [`ArcSwap`]), the handshake,
//! and what the ClientHello tells us (SNI, ALPN).
//!
//! ALPN `postgresql` is always advertised: libpq 17+ offers it even after an SSLRequest and
//! requires it for direct TLS. A client offering only other protocols, or a direct-TLS client
//! offering none, still completes the handshake so that it can be told why it is refused.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::server::Acceptor;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

/// The ALPN protocol id PostgreSQL registered.
pub const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why a certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: rustls_pki_types::pem::Error },
    #[error("{0} holds no PEM certificate")]
    NoCertificate(PathBuf),
    #[error("certificate and key are not usable together: {0}")]
    Invalid(#[from] rustls::Error),
}

/// How the client started TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiation {
    /// SSLRequest answered with `S`, then TLS (every libpq).
    SslRequest,
    /// TLS from the first byte (PostgreSQL 17 `sslnegotiation=direct`).
    Direct,
}

/// What was wrong with the client's ALPN offer, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlpnProblem {
    /// The client offered ALPN protocols, none of them `postgresql`.
    Mismatch { offered: Vec<String> },
    /// A direct-TLS client that offered no ALPN at all.
    MissingForDirect,
}

/// A finished TLS handshake.
pub struct Accepted<S> {
    pub stream: TlsStream<S>,
    /// The host name the client asked for (libpq sends `host` unless it is an IP address).
    pub sni: Option<String>,
    pub alpn_problem: Option<AlpnProblem>,
}

/// Both server configurations share the certificate; they differ in whether ALPN is offered.
struct Configs {
    with_alpn: Arc<ServerConfig>,
    without_alpn: Arc<ServerConfig>,
}

/// The proxy's TLS identity, reloadable from its files.
pub struct Tls {
    cert_path: PathBuf,
    key_path: PathBuf,
    configs: ArcSwap<Configs>,
}

impl Tls {
    /// Loads a PEM certificate chain and private key.
    ///
    /// # Errors
    /// [`TlsError`] when a file cannot be read or the pair is unusable.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let configs = load_configs(cert_path, key_path)?;
        Ok(Self { cert_path: cert_path.into(), key_path: key_path.into(), configs: ArcSwap::from_pointee(configs) })
    }

    /// Re-reads the files; on error the current certificate stays in use.
    ///
    /// # Errors
    /// As [`Tls::load`].
    pub fn reload(&self) -> Result<(), TlsError> {
        self.configs.store(Arc::new(load_configs(&self.cert_path, &self.key_path)?));
        Ok(())
    }

    /// The files to watch for changes.
    pub fn paths(&self) -> Vec<PathBuf> {
        vec![self.cert_path.clone(), self.key_path.clone()]
    }

    /// Runs the server side of a TLS handshake on `stream`.
    ///
    /// # Errors
    /// Any I/O or TLS error of the handshake; the client has then been sent a TLS alert at most.
    pub async fn accept<S>(&self, stream: S, negotiation: Negotiation) -> std::io::Result<Accepted<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let hello = start.client_hello();
        let sni = hello.server_name().map(str::to_owned);
        let offered: Option<Vec<Vec<u8>>> = hello.alpn().map(|protocols| protocols.map(<[u8]>::to_vec).collect());
        let alpn_problem = match (&offered, negotiation) {
            (Some(list), _) if list.iter().any(|p| p == ALPN_POSTGRESQL) => None,
            (Some(list), _) => Some(AlpnProblem::Mismatch {
                offered: list.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect(),
            }),
            (None, Negotiation::Direct) => Some(AlpnProblem::MissingForDirect),
            (None, Negotiation::SslRequest) => None,
        };
        let configs = self.configs.load();
        let config = if alpn_problem.is_some() { &configs.without_alpn } else { &configs.with_alpn };
        let stream = start.into_stream(config.clone()).await?;
        Ok(Accepted { stream, sni, alpn_problem })
    }
}

fn load_configs(cert_path: &Path, key_path: &Path) -> Result<Configs, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert_path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| TlsError::Read { path: cert_path.into(), source })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert_path.into()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key_path).map_err(|source| TlsError::Read { path: key_path.into(), source })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    let without_alpn = Arc::new(config.clone());
    config.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Ok(Configs { with_alpn: Arc::new(config), without_alpn })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::DevCertificates;

    #[test]
    fn load_reports_the_file_at_fault() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = DevCertificates::generate("db.test").expect("certs").write_to(dir.path()).expect("written");
        assert!(Tls::load(&paths.server_cert, &paths.server_key).is_ok());
        let missing = dir.path().join("missing.key");
        let err = Tls::load(&paths.server_cert, &missing).err().expect("fails").to_string();
        assert!(err.contains("missing.key"), "{err}");
        let err = Tls::load(&paths.server_key, &paths.server_key).err().expect("fails").to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
