//! End-to-end harness: `devdb up` as a real process, the `devdb` CLI, dumps made by pg_dump
//! from a real source server, and an HTTP server for them inside the test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use devdb_shared::api::{Database, Project};
use devdb_testkit::{PASSWORD, TestPostgres, USER, free_port, pg};
use serde_json::Value;
use tempfile::TempDir;

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
        let dir = tempfile::Builder::new().prefix("devdb-e2e-").tempdir().expect("tempdir");
        let (api_port, proxy_port, admin_port) = (free_port(), free_port(), free_port());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut devdb = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            proxy_port,
            data_dir: dir.path().join("data"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
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
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("devdb up");
        self.child = Some(child);
        for _ in 0..200 {
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
        let mut config = tokio_postgres::Config::new();
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

    /// Connects, retrying while the proxy's table catches up with the controller.
    pub async fn connect_retrying(&self, database: &Database) -> tokio_postgres::Client {
        let mut last = None;
        for _ in 0..100 {
            match self.connect(database).await {
                Ok(client) => return client,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("cannot connect to {} through the proxy: {last:?}", database.name);
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

/// A source database and pg_dump output of it in every format.
pub struct Dumps {
    pub dir: TempDir,
    pub source: TestPostgres,
    /// Rows in `items`.
    pub rows: i64,
}

impl Dumps {
    pub fn make() -> Self {
        let source = TestPostgres::start("source");
        let dir = tempfile::Builder::new().prefix("devdb-dumps-").tempdir().expect("tempdir");
        let sql = "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
                   INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2500) g;
                   CREATE TABLE orders (id serial PRIMARY KEY, item int REFERENCES items, qty int);
                   INSERT INTO orders (item, qty) SELECT g % 2500 + 1, g FROM generate_series(1, 500) g;
                   CREATE VIEW big_orders AS SELECT * FROM orders WHERE qty > 250;";
        psql_blocking(&source, "postgres", sql);
        let dumps = Self { dir, source, rows: 2500 };
        for (file, format) in [("plain.sql", "p"), ("custom.dump", "c"), ("archive.tar", "t"), ("dir", "d")] {
            dumps.pg_dump(format, &dumps.dir.path().join(file));
        }
        let read = |f: &str| std::fs::read(dumps.dir.path().join(f)).expect("dump");
        write(&dumps.dir.path().join("dir.tar"), &tar_dir(&dumps.dir.path().join("dir"), "shop"));
        write(&dumps.dir.path().join("plain.sql.gz"), &gzip(&read("plain.sql")));
        write(&dumps.dir.path().join("custom.gz"), &gzip(&read("custom.dump")));
        write(&dumps.dir.path().join("dir.tar.gz"), &gzip(&read("dir.tar")));
        let custom = read("custom.dump");
        write(&dumps.dir.path().join("truncated.dump"), &custom[..custom.len() / 2]);
        write(&dumps.dir.path().join("page.html"), b"<html><body>Sign in to download</body></html>");
        dumps
    }

    fn pg_dump(&self, format: &str, out: &Path) {
        let status = pg()
            .client("pg_dump")
            .args(["-h", "127.0.0.1", "-p", &self.source.port.to_string(), "-U", USER, "-d", "postgres"])
            .args(["-F", format, "-f"])
            .arg(out)
            .env("PGPASSWORD", PASSWORD)
            .status()
            .expect("pg_dump");
        assert!(status.success(), "pg_dump -F{format}");
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).expect("write");
}

pub fn psql_blocking(server: &TestPostgres, db: &str, sql: &str) {
    let out = pg()
        .client("psql")
        .args([
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            USER,
            "-d",
            db,
            "-c",
            sql,
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn tar_dir(dir: &Path, prefix: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_dir_all(prefix, dir).expect("tar");
    builder.into_inner().expect("tar")
}

/// Serves files of a directory over HTTP: `/files/<name>`, and `/stall-once/<name>` which, the
/// first time, sends half the file and then stalls (a download in progress, for crash tests),
/// and afterwards serves it whole.
pub struct DumpServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl DumpServer {
    pub async fn start(dir: &Path) -> Self {
        let router = axum::Router::new()
            .route("/files/{name}", axum::routing::get(serve_file))
            .route("/stall-once/{name}", axum::routing::get(stall_once))
            .with_state(Arc::new(Files { dir: dir.to_path_buf(), stalled: AtomicBool::new(false) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Self { base, task }
    }

    pub fn url(&self, file: &str) -> String {
        format!("{}/files/{file}", self.base)
    }

    pub fn stall_once_url(&self, file: &str) -> String {
        format!("{}/stall-once/{file}", self.base)
    }
}

impl Drop for DumpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Files {
    dir: PathBuf,
    stalled: AtomicBool,
}

async fn serve_file(State(files): State<Arc<Files>>, UrlPath(name): UrlPath<String>) -> Response {
    match tokio::fs::read(files.dir.join(&name)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

async fn stall_once(State(files): State<Arc<Files>>, UrlPath(name): UrlPath<String>) -> Response {
    if files.stalled.swap(true, Ordering::SeqCst) {
        return serve_file(State(files), UrlPath(name)).await;
    }
    let Ok(bytes) = tokio::fs::read(files.dir.join(&name)).await else { return StatusCode::NOT_FOUND.into_response() };
    let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
    let stream = futures_util::stream::iter([Ok::<_, std::io::Error>(half)]).chain(futures_util::stream::pending());
    Response::builder().header("content-length", bytes.len()).body(Body::from_stream(stream)).unwrap_or_default()
}

use futures_util::StreamExt as _;
