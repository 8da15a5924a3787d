//! End-to-end harness: `devdb up` as a real process and the `devdb` CLI (dumps and the HTTP
//! server for them come from the shared test kit).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use devdb_shared::api::{Database, Project, ProjectStatus};
use devdb_testkit::{free_port, pg};
use serde_json::Value;
use tempfile::TempDir;

#[allow(unused_imports)]
pub use devdb_testkit::dumps::{DumpServer, Dumps, psql_blocking};
#[allow(unused_imports)]
pub use devdb_testkit::query_one;

pub const DOMAIN: &str = "db.devdb.test";

/// `devdb up` on free ports with its own data directory and CLI config.
pub struct DevDb {
    pub api: String,
    pub proxy_port: u16,
    pub data_dir: PathBuf,
    pub dir: TempDir,
    extra: Vec<String>,
    /// Environment given to `devdb up` besides the test's own.
    envs: Vec<(String, String)>,
    child: Option<tokio::process::Child>,
    api_port: u16,
    admin_port: u16,
    http: reqwest::Client,
    pub token: Option<String>,
}

impl DevDb {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        Self::start_in(extra, |_| {}).await
    }

    /// Starts with `extra` flags and `envs` in its environment.
    pub async fn start_with_env(extra: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_prepared(extra, envs, |_| {}).await
    }

    /// Starts with `extra` flags after `prepare` has seen the data directory (made, empty).
    pub async fn start_in(extra: &[&str], prepare: impl FnOnce(&Path)) -> Self {
        Self::start_prepared(extra, &[], prepare).await
    }

    async fn start_prepared(extra: &[&str], envs: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::Builder::new().prefix("devdb-e2e-").tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("data")).expect("data dir");
        prepare(&dir.path().join("data"));
        let (api_port, proxy_port, admin_port) = (free_port(), free_port(), free_port());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut devdb = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            proxy_port,
            data_dir: dir.path().join("data"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            envs: envs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
            child: None,
            api_port,
            admin_port,
            http: reqwest::Client::new(),
            token: None,
        };
        devdb.launch().await;
        devdb
    }

    async fn launch(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("up.log")).expect("log");
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"))
            .arg("up")
            .args(["--data-dir", &self.data_dir.to_string_lossy(), "--domain", DOMAIN])
            .args(["--api-listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--proxy-listen", &format!("127.0.0.1:{}", self.proxy_port)])
            .args(["--proxy-admin-listen", &format!("127.0.0.1:{}", self.admin_port)])
            .args(&self.extra)
            .env("RUST_LOG", std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()))
            .envs(self.envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("devdb up");
        self.child = Some(child);
        for _ in 0..1200 {
            if self.http.get(format!("{}/healthz", self.api)).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("devdb up did not start:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("up.log")).unwrap_or_default()
    }

    /// SIGKILL: no chance to clean anything up.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill");
        }
    }

    pub async fn restart(&mut self) {
        self.kill().await;
        self.launch().await;
    }

    pub fn ca(&self) -> PathBuf {
        self.data_dir.join("certs/ca.crt")
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.api));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Any call: (status, JSON body or Null).
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API call");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A GET's body as text.
    pub async fn text(&self, path: &str) -> String {
        let response = self.request(reqwest::Method::GET, path).send().await.expect("API call");
        response.text().await.expect("body")
    }

    /// The `X-Release` header of a GET.
    pub async fn release_header(&self, path: &str) -> Option<String> {
        let response = self.request(reqwest::Method::GET, path).send().await.expect("API call");
        response.headers().get("x-release").and_then(|v| v.to_str().ok()).map(str::to_owned)
    }

    pub async fn create_project(&self, name: &str, location: &str) -> Project {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/v1/projects",
                Some(serde_json::json!({"name": name, "backupLocation": location})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        serde_json::from_value(body).expect("project")
    }

    pub async fn project(&self, name: &str) -> Project {
        let (status, body) = self.call(reqwest::Method::GET, &format!("/v1/projects/{name}"), None).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("project")
    }

    /// Waits until the project's restore is over (ready or failed).
    pub async fn settled_project(&self, name: &str) -> Project {
        for _ in 0..1200 {
            let project = self.project(name).await;
            let busy = matches!(
                project.status,
                devdb_shared::api::ProjectStatus::Pending | devdb_shared::api::ProjectStatus::Restoring
            );
            if !busy {
                return project;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("project {name} never settled:\n{}", self.log());
    }

    /// `POST /v1/databases?wait=true`: (status, body).
    pub async fn create_database(&self, name: &str, project: &str) -> (u16, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/databases?wait=true",
            Some(serde_json::json!({"name": name, "project": project})),
        )
        .await
    }

    pub async fn database(&self, name: &str) -> Option<Database> {
        let (status, body) = self.call(reqwest::Method::GET, &format!("/v1/databases/{name}"), None).await;
        (status == 200).then(|| serde_json::from_value(body).expect("database"))
    }

    /// Runs the CLI against this instance: (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"));
        cmd.args(args).env("DEVDB_SERVER", &self.api).env("DEVDB_CONFIG", self.dir.path().join("cli.json"));
        cmd.env("DEVDB_CA", self.ca()).env_remove("DEVDB_TOKEN");
        if let Some(token) = &self.token {
            cmd.env("DEVDB_TOKEN", token);
        }
        let out = cmd.output().await.expect("run devdb");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A tokio-postgres session through the proxy at `database.port`, by SNI, verifying the dev CA.
    pub async fn connect(&self, database: &Database) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        self.connect_as(database, "e2e").await
    }

    /// [`DevDb::connect`] with an `application_name`.
    pub async fn connect_as(
        &self,
        database: &Database,
        application: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let mut config = tokio_postgres::Config::new();
        config.application_name(application);
        config
            .host(&database.host)
            .hostaddr([127, 0, 0, 1].into())
            .port(database.port)
            .user(&database.username)
            .password(&database.password)
            .dbname(&database.database)
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .connect_timeout(Duration::from_secs(30));
        let (client, conn) = config.connect(tls(&self.ca())).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// The Kubernetes runtime's sampler, pointed at this proxy and trusting its development CA.
    pub fn through_proxy(&self, database: &Database) -> devdb_kube::monitor::ThroughProxy {
        let domain = database.host.strip_prefix(&format!("{}.", database.name)).expect("host under the domain");
        let domain = devdb_shared::Domain::new(domain).expect("domain");
        devdb_kube::monitor::ThroughProxy::new(format!("127.0.0.1:{}", self.proxy_port), domain, Some(&self.ca()))
            .expect("sampler")
    }

    /// Connects, retrying while the proxy's table catches up with the controller.
    pub async fn connect_retrying(&self, database: &Database) -> tokio_postgres::Client {
        let mut last = None;
        for _ in 0..600 {
            match self.connect(database).await {
                Ok(client) => return client,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, now) = self.call(reqwest::Method::GET, &format!("/v1/databases/{}", database.name), None).await;
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
        panic!(
            "cannot connect to {} through the proxy: {last:?}\nthe database now: {now}\nthe controller's log ends:\n{}",
            database.name,
            tail.join("\n")
        );
    }

    /// Stops `name` and waits until it is.
    pub async fn stop(&self, name: &str) -> Database {
        let (status, body) =
            self.call(reqwest::Method::POST, &format!("/v1/databases/{name}/stop?wait=true"), None).await;
        assert_eq!(status, 202, "{body}");
        serde_json::from_value(body).expect("database")
    }

    /// PIDs of PostgreSQL servers running on data directories under this instance.
    pub fn postmasters(&self) -> Vec<(u32, PathBuf)> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
            let args: Vec<String> =
                cmdline.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            if args.first().is_some_and(|a| a.ends_with("/postgres"))
                && let Some(i) = args.iter().position(|a| a == "-D")
                && let Some(data) = args.get(i + 1)
                && data.starts_with(&*self.data_dir.to_string_lossy())
            {
                found.push((pid, PathBuf::from(data)));
            }
        }
        found
    }
}

/// `devdb up` with an empty project `shop` (its databases start empty: quick).
pub async fn with_empty_project(extra: &[&str]) -> DevDb {
    with_empty_project_env(extra, &[]).await
}

/// The same, with `envs` in `devdb up`'s environment.
pub async fn with_empty_project_env(extra: &[&str], envs: &[(&str, &str)]) -> DevDb {
    let devdb = DevDb::start_with_env(extra, envs).await;
    let (status, body) =
        devdb.call(reqwest::Method::POST, "/v1/projects", Some(serde_json::json!({"name": "shop"}))).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);
    devdb
}

impl Drop for DevDb {
    fn drop(&mut self) {
        // Instances outlive the controller by design; tests must not leave them behind.
        let pg = pg();
        for (_, data) in self.postmasters() {
            let _ = pg.stop(&data, devdb_pgctl::StopMode::Immediate);
        }
    }
}

pub fn tls(ca: &Path) -> tokio_postgres_rustls::MakeRustlsConnect {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
}

/// Every file under `dir`.
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files
}
