//! Sessions through the proxy to real PostgreSQL servers: psql and tokio-postgres reach the named
//! one and authenticate with SCRAM across the plaintext hop (and libpq's channel_binding=require
//! refuses it, saying why), sessions carry queries, data and errors both ways, and a newer
//! protocol version and `_pq_` options reach the server. Routing decisions themselves:
//! `inproc::routing`.

use crate::common::*;
use tokio::io::AsyncWriteExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_and_tokio_postgres_reach_the_named_backend_with_scram() {
    let (alpha, beta) = (TestPostgres::start("alpha"), TestPostgres::start("beta"));
    let proxy = TestProxy::start(&[("alpha", alpha.addr()), ("beta", beta.addr())]).await;

    for server in [&alpha, &beta] {
        let (ok, out, err) = psql(&proxy.psql_conninfo(&server.name), "SHOW cluster_name").await;
        assert!(ok, "psql via the proxy failed: {err}");
        assert_eq!(out, server.name);

        let client = proxy.connect(&server.name).await.expect("tokio-postgres via the proxy");
        assert_eq!(query_one(&client, "SHOW cluster_name").await, server.name);
        // The backend sees a plaintext hop authenticated with SCRAM.
        let method = query_one(&client, "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await;
        assert_eq!(method, "false");
    }

    let wrong_password = refused(connect_with(proxy.config("alpha").password("nope"), proxy.tls()).await);
    assert_eq!(db_error(&wrong_password).0, "28P01", "the backend's own SCRAM refusal reaches the client");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_binding_require_is_refused_by_libpq_and_says_so() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    // channel_binding=require cannot hold across two TLS legs: libpq refuses the plaintext hop's
    // SCRAM without channel binding, and says so.
    let conninfo = format!("{} channel_binding=require", proxy.psql_conninfo("alpha"));
    let (ok, _, stderr) = psql(&conninfo, "SELECT 1").await;
    assert!(!ok && stderr.contains("channel binding"), "{stderr}");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_carries_queries_data_and_errors_both_ways() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let client = proxy.connect("alpha").await.expect("connect");
    client.batch_execute("CREATE TABLE t (id int primary key, body text)").await.expect("ddl");
    let body = "x".repeat(1 << 20);
    let insert = client.prepare("INSERT INTO t VALUES ($1, $2)").await.expect("prepare");
    for id in 0..5 {
        client.execute(&insert, &[&id, &body]).await.expect("insert");
    }
    let rows = client.query("SELECT id, body FROM t ORDER BY id", &[]).await.expect("select");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.get::<_, String>(1) == body), "1 MiB values round-trip intact");
    let err = client.batch_execute("SELECT * FROM missing").await.expect_err("error");
    assert_eq!(err.as_db_error().map(|e| e.code().code()), Some("42P01"));
    assert_eq!(query_one(&client, "SELECT count(*) FROM t").await, "5", "the session survives an error");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_versions_and_pq_options_reach_the_backend() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let mut tls = tls_via_ssl_request(&proxy, &host("alpha"), &[b"postgresql"]).await;
    let startup = startup_packet(3, 2, &[("user", USER), ("database", "postgres"), ("_pq_.test_option", "on")]);
    tls.write_all(&startup).await.expect("startup");
    tls.flush().await.expect("flush");
    // PostgreSQL 15 answers NegotiateProtocolVersion (3.0, the unknown option), then asks for
    // SCRAM: the proxy forwarded both the version and the option.
    let (tag, body) = read_message(&mut tls).await.expect("a message");
    assert_eq!(tag, b'v', "NegotiateProtocolVersion");
    assert_eq!(&body[..4], &196608i32.to_be_bytes(), "newest minor the backend supports: 3.0");
    assert!(body.windows(16).any(|w| w == b"_pq_.test_option"), "option named back");
    let (tag, _) = read_message(&mut tls).await.expect("auth request");
    assert_eq!(tag, b'R');
    drop(tls);
    proxy.stop().await;
}
