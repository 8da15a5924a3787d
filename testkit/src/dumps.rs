//! Dumps for restore tests: a real source database dumped by pg_dump in every format (and
//! damaged or foreign files beside them), and an HTTP server for them inside the test.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use tempfile::TempDir;

use crate::{PASSWORD, TestPostgres, USER, pg};

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
            .route("/trickle", axum::routing::get(trickle))
            .route("/endless", axum::routing::get(endless))
            .route("/hold", axum::routing::get(hold))
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

    /// A source that sends a few bytes of SQL a second, forever.
    pub fn trickle_url(&self) -> String {
        format!("{}/trickle", self.base)
    }

    /// A source that sends SQL comments as fast as it can, forever (no length given).
    pub fn endless_url(&self) -> String {
        format!("{}/endless", self.base)
    }

    /// A source that sends a line and then holds the connection open (a download in progress);
    /// the number of such connections open now is [`DumpServer::held`].
    pub fn hold_url(&self) -> String {
        format!("{}/hold", self.base)
    }

    /// Connections of [`DumpServer::hold_url`] still open.
    pub fn held(&self) -> usize {
        HELD.load(Ordering::SeqCst)
    }
}

/// Open connections of `/hold` (one server per test process is enough).
static HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn trickle() -> Response {
    let stream = futures_util::stream::unfold((), |()| async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        Some((Ok::<_, std::io::Error>(Bytes::from_static(b"-")), ()))
    });
    let head = futures_util::stream::iter([Ok(Bytes::from_static(b"-- a slow source\n"))]);
    Body::from_stream(head.chain(stream)).into_response()
}

async fn endless() -> Response {
    let line = Bytes::from(format!("-- {}\n", "x".repeat(64 << 10)));
    let stream = futures_util::stream::repeat_with(move || Ok::<_, std::io::Error>(line.clone()));
    Body::from_stream(stream).into_response()
}

/// Counts itself in [`HELD`] while its response body lives.
struct Held;

impl Held {
    fn new() -> Self {
        HELD.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn hold() -> Response {
    let held = Held::new();
    let head = futures_util::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"-- in progress\n"))]);
    let forever = futures_util::stream::pending().map(move |()| {
        let _ = &held;
        Ok(Bytes::new())
    });
    Body::from_stream(head.chain(forever)).into_response()
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
