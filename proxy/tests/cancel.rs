//! Query cancellation through the proxy: a CancelRequest with the proxy-issued key, over TLS
//! (with SNI) or plaintext (psql's Ctrl-C), stops `pg_sleep(60)` with SQLSTATE 57014.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Starts `SELECT pg_sleep(60)` and waits until the backend is running it.
async fn sleeping_query(
    proxy: &TestProxy,
    config: &tokio_postgres::Config,
    server: &TestPostgres,
) -> (tokio_postgres::CancelToken, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let client = connect_with(config, proxy.tls()).await.expect("connect");
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(60)").await });
    wait_until_sleeping(server).await;
    (token, query)
}

async fn wait_until_sleeping(server: &TestPostgres) {
    let direct = server.direct().await;
    for _ in 0..200 {
        let active = query_one(
            &direct,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'",
        )
        .await;
        if active == "1" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the query never started");
}

async fn expect_cancelled(query: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let result = tokio::time::timeout(Duration::from_secs(30), query).await.expect("cancelled well before 60 s");
    let err = result.expect("joined").expect_err("the query was cancelled");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("57014"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_over_tls_stops_the_query() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let (token, query) = sleeping_query(&proxy, &proxy.config("alpha"), &alpha).await;
    // sslmode=require: tokio-postgres sends SSLRequest, TLS with SNI, then the CancelRequest.
    token.cancel_query(proxy.tls()).await.expect("cancel sent");
    expect_cancelled(query).await;
    wait_for_metric(&proxy, "devdb_proxy_cancel_requests_total{outcome=\"forwarded\"} 1").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_cancel_stops_the_query() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    // sslmode=prefer: the session uses TLS, and a connector without TLS sends the cancel in plaintext.
    let mut config = proxy.config("alpha");
    config.ssl_mode(tokio_postgres::config::SslMode::Prefer);
    let (token, query) = sleeping_query(&proxy, &config, &alpha).await;
    token.cancel_query(tokio_postgres::NoTls).await.expect("cancel sent");
    expect_cancelled(query).await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_ctrl_c_cancels_through_the_proxy() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let mut psql = tokio::process::Command::new("psql")
        .arg(proxy.psql_conninfo("alpha"))
        .args(["-X", "-c", "SELECT pg_sleep(60)"])
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql");
    wait_until_sleeping(&alpha).await;
    // What Ctrl-C does: psql's SIGINT handler sends a (plaintext) CancelRequest via PQcancel.
    let pid = nix::unistd::Pid::from_raw(psql.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let out = tokio::time::timeout(Duration::from_secs(30), async {
        let mut stderr = String::new();
        psql.stderr.take().expect("stderr").read_to_string(&mut stderr).await.expect("read");
        (psql.wait().await.expect("exit"), stderr)
    })
    .await
    .expect("psql ended well before 60 s");
    assert!(!out.0.success());
    assert!(out.1.contains("canceling statement due to user request"), "{}", out.1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_cancel_keys_are_dropped_silently() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let client = proxy.connect("alpha").await.expect("connect");
    for key_len in [4usize, 32] {
        let mut cancel = ((12 + key_len) as i32).to_be_bytes().to_vec();
        cancel.extend_from_slice(&80877102i32.to_be_bytes());
        cancel.extend_from_slice(&12345i32.to_be_bytes());
        cancel.extend(std::iter::repeat_n(0xab, key_len));
        let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        write_all(&mut tcp, &cancel).await;
        let mut rest = Vec::new();
        tcp.read_to_end(&mut rest).await.expect("closed");
        assert!(rest.is_empty(), "nothing is answered to a cancel request");
    }
    assert_eq!(query_one(&client, "SELECT 1").await, "1", "other sessions are untouched");
    wait_for_metric(&proxy, "devdb_proxy_cancel_requests_total{outcome=\"unknown_key\"} 2").await;
    drop(client);
    proxy.stop().await;
}
