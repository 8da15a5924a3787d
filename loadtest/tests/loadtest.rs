//! The load generator against real PostgreSQL through the real proxy (in-process, TLS with a
//! development CA): it does what it says it did, and reports failures instead of hiding them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::Parser;
use devdb_loadtest::config::{LoadArgs, Mode};
use devdb_loadtest::report::Report;
use devdb_loadtest::workload::Load;
use devdb_testkit::{PASSWORD, TestPostgres, query_one};
use tokio::net::TcpListener;

const DOMAIN: &str = "db.loadtest.test";

/// The proxy routing `bench` and `other` to `pg`, on a free port: (address, CA file, dir).
async fn proxy(pg: &TestPostgres) -> (std::net::SocketAddr, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = dir.path().join("routes.json");
    let table = serde_json::json!({ "routes": [
        { "name": "bench", "backend": pg.addr() },
        { "name": "other", "backend": pg.addr() },
    ] });
    std::fs::write(&routes, table.to_string()).expect("routes");
    let certs = dir.path().join("certs");
    let config = devdb_proxy::config::Config::new(
        DOMAIN.parse().expect("domain"),
        devdb_proxy::config::TlsSource::Dev { dir: certs.clone() },
        devdb_proxy::config::RoutesConfig::File(routes),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(devdb_proxy::run(config, listener, admin, std::future::pending()));
    let ca = certs.join("ca.crt");
    for _ in 0..3000 {
        if ca.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ca.exists(), "the proxy never wrote its development CA {}", ca.display());
    (addr, ca, dir)
}

fn args(addr: std::net::SocketAddr, ca: &std::path::Path, extra: &[&str]) -> LoadArgs {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        load: LoadArgs,
    }
    let mut argv = vec![
        "devdb-loadtest".to_string(),
        "--addr".into(),
        addr.to_string(),
        "--domain".into(),
        DOMAIN.into(),
        "--names".into(),
        "bench,other".into(),
        "--password".into(),
        PASSWORD.into(),
        "--dbname".into(),
        "postgres".into(),
        "--ca".into(),
        ca.display().to_string(),
    ];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::parse_from(argv).load
}

async fn run(args: LoadArgs) -> Report {
    Arc::new(Load::new(args).expect("load")).run(Arc::new(AtomicU64::new(0))).await.expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_mode_does_exactly_the_transactions_it_reports() {
    let pg = TestPostgres::start("loadtest-query");
    let (addr, ca, _dir) = proxy(&pg).await;
    let report = run(args(addr, &ca, &["--mode", "query", "--clients", "3", "--count", "300"])).await;
    assert_eq!(report.mode, Mode::Query);
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.transactions, 300);
    assert_eq!(report.by_kind.values().sum::<u64>(), 300);
    assert_eq!(report.by_kind.len(), 3, "simple, prepared and insert: {:?}", report.by_kind);
    assert!(report.latency.p50_ms > 0.0 && report.latency.p50_ms <= report.latency.max_ms);
    // Every insert it counted is in the table (both names lead to the same server here).
    let client = pg.direct().await;
    let rows = query_one(&client, "SELECT count(*) FROM devdb_loadtest").await;
    assert_eq!(rows, report.by_kind["insert"].to_string());
    let table = report.table();
    assert!(table.contains("query") && table.contains("300"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_mode_opens_a_session_per_transaction() {
    let pg = TestPostgres::start("loadtest-connect");
    let (addr, ca, _dir) = proxy(&pg).await;
    let report = run(args(addr, &ca, &["--mode", "connect", "--clients", "2", "--count", "20"])).await;
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.transactions, 20);
    let connect = report.connect.expect("connect latency");
    assert_eq!(connect.count, 20);
    assert!(connect.p50_ms <= report.latency.p50_ms, "connecting is part of the transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_mode_holds_the_sessions_and_reports_memory() {
    let pg = TestPostgres::start("loadtest-idle");
    let (addr, ca, _dir) = proxy(&pg).await;
    let pid = std::process::id().to_string();
    let report =
        run(args(addr, &ca, &["--mode", "idle", "--clients", "20", "--duration", "1s", "--watch-pid", &pid])).await;
    assert_eq!(report.errors, 0, "{:?}", report.error_samples);
    assert_eq!(report.transactions, 20, "sessions opened");
    let memory = report.memory.expect("memory of the watched process");
    assert!(memory.rss_after_bytes > 0 && memory.rss_before_bytes > 0);
    let client = pg.direct().await;
    // Closed again at the end (the pool of the test's own direct session aside).
    let left: i64 =
        query_one(&client, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND pid <> pg_backend_pid()")
            .await
            .parse()
            .unwrap_or(-1);
    assert!(left <= 20, "{left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_and_shown_not_hidden() {
    let pg = TestPostgres::start("loadtest-errors");
    let (addr, ca, _dir) = proxy(&pg).await;
    let mut bad = args(addr, &ca, &["--mode", "connect", "--clients", "2", "--count", "10"]);
    bad.password = "wrong".into();
    let report = run(bad).await;
    assert_eq!(report.transactions, 0);
    assert_eq!(report.errors, 10);
    assert!(report.error_samples.iter().any(|e| e.contains("password")), "{:?}", report.error_samples);
    assert!(report.table().contains("error:"));

    // The binary says so in its exit status, and writes the same report as JSON.
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("report.json");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb-loadtest"))
        .args(["--addr", &addr.to_string(), "--domain", DOMAIN, "--names", "nosuch", "--quiet"])
        .args(["--ca", &ca.display().to_string(), "--mode", "connect", "--count", "3", "--clients", "1"])
        .args(["--password", PASSWORD, "--json", &json.display().to_string()])
        .output()
        .await
        .expect("runs");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let written: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).expect("json")).expect("json");
    assert_eq!(written["errors"], 3);
    assert!(written["error_samples"][0].as_str().is_some_and(|e| e.contains("nosuch")), "{written}");
}
