//! Development certificates: a private CA and a wildcard server certificate `*.<domain>` signed
//! by it, for local use and tests. Production uses certificates from cert-manager or a CA.
//!
//! rustls refuses a self-signed certificate as a server leaf, hence the two-level chain.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A freshly generated CA and server certificate, PEM encoded.
pub struct DevCertificates {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
}

/// Where [`DevCertificates::ensure_in`] keeps the files.
#[derive(Debug, Clone)]
pub struct DevCertificatePaths {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl DevCertificatePaths {
    /// The file names inside `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self { ca_cert: dir.join("ca.crt"), server_cert: dir.join("server.crt"), server_key: dir.join("server.key") }
    }
}

/// Why certificates could not be made or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot generate certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl DevCertificates {
    /// Generates a CA named "DevDB development CA" and a server certificate for `*.<domain>` and
    /// `<domain>`.
    ///
    /// # Errors
    /// [`CertError::Generate`] if key generation or signing fails.
    pub fn generate(domain: &str) -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("DevDB development CA ({domain})"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key)?;

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![format!("*.{domain}"), domain.to_string()])?;
        params.distinguished_name.push(DnType::CommonName, format!("*.{domain}"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&server_key, &ca)?;

        Ok(Self {
            ca_cert_pem: ca.pem(),
            ca_key_pem: ca.key().serialize_pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
        })
    }

    /// Writes the files into `dir` (keys readable by the owner only): `ca.crt`, `ca.key`,
    /// `server.crt`, `server.key`.
    ///
    /// # Errors
    /// [`CertError::Write`] naming the file that could not be written.
    pub fn write_to(&self, dir: &Path) -> Result<DevCertificatePaths, CertError> {
        use std::os::unix::fs::DirBuilderExt;
        // A directory made here is private: it holds the keys.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| CertError::Write { path: dir.into(), source })?;
        let paths = DevCertificatePaths::in_dir(dir);
        for (path, pem, private) in [
            (dir.join("ca.key"), &self.ca_key_pem, true),
            (paths.server_key.clone(), &self.server_key_pem, true),
            (paths.ca_cert.clone(), &self.ca_cert_pem, false),
            (paths.server_cert.clone(), &self.server_cert_pem, false),
        ] {
            write_file(&path, pem, private).map_err(|source| CertError::Write { path, source })?;
        }
        Ok(paths)
    }

    /// Reuses the certificates in `dir` if they were made for `domain`, else generates and
    /// writes new ones. Returns the paths and whether new ones were made.
    ///
    /// # Errors
    /// As [`DevCertificates::generate`] and [`DevCertificates::write_to`].
    pub fn ensure_in(dir: &Path, domain: &str) -> Result<(DevCertificatePaths, bool), CertError> {
        use std::os::unix::fs::PermissionsExt;
        // The development certificates' own directory: private (keys), readable by its owner.
        if dir.is_dir() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|source| CertError::Write { path: dir.into(), source })?;
        }
        let marker = dir.join("domain");
        let current = std::fs::read_to_string(&marker).ok();
        let paths = DevCertificatePaths::in_dir(dir);
        let complete = [&paths.ca_cert, &paths.server_cert, &paths.server_key].iter().all(|p| p.exists());
        if complete && current.as_deref() == Some(domain) {
            return Ok((paths, false));
        }
        let paths = Self::generate(domain)?.write_to(dir)?;
        write_file(&marker, domain, false).map_err(|source| CertError::Write { path: marker, source })?;
        Ok((paths, true))
    }
}

fn write_file(path: &Path, contents: &str, private: bool) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Write beside, then rename: a watcher never reads a half-written certificate.
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_in_reuses_for_the_same_domain_and_regenerates_for_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (paths, made) = DevCertificates::ensure_in(dir.path(), "db.example.test").expect("made");
        assert!(made);
        let first = std::fs::read(&paths.server_cert).expect("read");
        let (_, made_again) = DevCertificates::ensure_in(dir.path(), "db.example.test").expect("reused");
        assert!(!made_again);
        assert_eq!(std::fs::read(&paths.server_cert).expect("read"), first);
        let (_, made_other) = DevCertificates::ensure_in(dir.path(), "db.other.test").expect("made");
        assert!(made_other);
        assert_ne!(std::fs::read(&paths.server_cert).expect("read"), first);
        let mode =
            std::fs::metadata(&paths.server_key).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
        assert_eq!(mode.expect("stat") & 0o777, 0o600);
    }
}
