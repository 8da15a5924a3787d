//! A real S3-compatible store for tests: moto's server mode (PyPI `moto[server]`, installed by
//! [`crate::python`]) on a loopback port, reached over TLS as `localhost:<port>` with a
//! certificate signed by a CA made for this server alone (pgBackRest speaks S3 over TLS only,
//! checks the certificate, and matches host names, not IP addresses). Each [`TestS3`] is a server
//! of its own, empty, gone when dropped.
//!
//! The TLS in front of moto is a small relay in `s3_server.py` rather than moto's own
//! `--ssl-cert`: werkzeug closes TLS connections without a close_notify, which pgBackRest takes
//! for a truncated response.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use tempfile::TempDir;

/// The access key every test server takes (moto checks none, but the clients sign with one).
pub const ACCESS_KEY_ID: &str = "devdb-test-key";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "devdb-test-secret";

const SCRIPT: &str = include_str!("s3_server.py");
/// How long moto may take to start (it imports a lot the first time).
const START_LIMIT: Duration = Duration::from_secs(120);

/// A running S3 endpoint.
pub struct TestS3 {
    child: Child,
    dir: TempDir,
    endpoint: String,
}

impl TestS3 {
    /// Starts one and waits until it listens.
    ///
    /// # Panics
    /// When it cannot be started, with moto's own output.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("devdb-s3-").tempdir().expect("a temporary directory");
        write_certificates(dir.path());
        std::fs::write(dir.path().join("s3_server.py"), SCRIPT).expect("the server's script");
        let log = std::fs::File::create(dir.path().join("moto.log")).expect("moto's log");
        let mut child = crate::python::command("python3")
            .arg(dir.path().join("s3_server.py"))
            .arg("serve")
            .arg(dir.path().join("server.crt"))
            .arg(dir.path().join("server.key"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("python3 from the test tools' environment");
        let stdout = child.stdout.take().expect("its stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(line);
        });
        let port = rx.recv_timeout(START_LIMIT).ok().and_then(|line| line.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "moto's server did not start:\n{}",
                std::fs::read_to_string(dir.path().join("moto.log")).unwrap_or_default()
            );
        };
        Self { child, dir, endpoint: format!("localhost:{port}") }
    }

    /// `localhost:<port>`, as an S3 client's endpoint (over TLS).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The CA (PEM) the endpoint's certificate is signed by.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Creates `bucket`.
    ///
    /// # Panics
    /// When the server refuses.
    pub fn create_bucket(&self, bucket: &str) {
        self.client(&["create-bucket", bucket]);
    }

    /// The keys of the objects in `bucket` under `prefix`.
    ///
    /// # Panics
    /// When the server cannot list them.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.client(&["keys", bucket, prefix]).lines().map(str::to_string).collect()
    }

    /// Runs the script's client `command` (boto3, path-style, checking the certificate).
    fn client(&self, command: &[&str]) -> String {
        let out = crate::python::command("python3")
            .arg(self.dir.path().join("s3_server.py"))
            .arg(command[0])
            .arg(&self.endpoint)
            .arg(self.ca_file())
            .args(&command[1..])
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
            .output()
            .expect("python3 from the test tools' environment");
        assert!(
            out.status.success(),
            "S3 {command:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for TestS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA (`ca.crt`) and a server certificate for `localhost` and 127.0.0.1 signed by it
/// (`server.crt`, `server.key`) in `dir`.
fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "DevDB test S3 CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, ca_key).expect("the CA");
    let key = KeyPair::generate().expect("a server key");
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).expect("server parameters");
    server.subject_alt_names.push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    server.distinguished_name.push(DnType::CommonName, "localhost");
    server.is_ca = IsCa::ExplicitNoCa;
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server.signed_by(&key, &ca).expect("the server certificate");
    for (name, pem) in [("ca.crt", ca.pem()), ("server.crt", server.pem()), ("server.key", key.serialize_pem())] {
        std::fs::write(dir.join(name), pem).expect("a certificate file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bucket made over TLS (the certificate checked against the server's CA) is there, empty;
    /// one never made cannot be listed.
    #[test]
    fn a_bucket_made_over_tls_is_there_and_empty() {
        let s3 = TestS3::start();
        s3.create_bucket("devdb-test");
        assert_eq!(s3.keys("devdb-test", ""), Vec::<String>::new());
        let missing = std::panic::catch_unwind(|| s3.keys("no-such-bucket", ""));
        assert!(missing.is_err(), "a bucket never made is not listed");
    }
}
