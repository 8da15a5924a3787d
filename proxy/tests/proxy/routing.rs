//! Sessions reach the right backend by name: psql and tokio-postgres by SNI (SCRAM through the
//! proxy), `endpoint=` without SNI, direct TLS with ALPN, GSSENC refused then TLS.

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
async fn without_sni_the_endpoint_option_routes_and_is_stripped() {
    let (alpha, beta) = (TestPostgres::start("alpha"), TestPostgres::start("beta"));
    let proxy = TestProxy::start(&[("alpha", alpha.addr()), ("beta", beta.addr())]).await;
    // libpq sends no SNI when host is an IP address.
    let conninfo = format!(
        "host=127.0.0.1 port={} sslmode=require user={USER} dbname=postgres options='endpoint=beta -c search_path=from_options'",
        proxy.addr.port()
    );
    let (ok, out, err) =
        psql(&conninfo, "SELECT current_setting('cluster_name') || ' ' || current_setting('search_path')").await;
    assert!(ok, "{err}");
    assert_eq!(out, "beta from_options", "routed by endpoint=, other options forwarded");

    // A driver that sends no SNI at all (the certificate is still verified against the name).
    let mut tls = client_tls_config(&proxy.certs.ca_cert, &[]);
    tls.enable_sni = false;
    let mut config = proxy.config("beta");
    config.options("endpoint=alpha");
    let client = connect_with(&config, tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await.expect("no SNI");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_with_alpn_postgresql_works() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let mut config = proxy.config("alpha");
    config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    let client = connect_with(&config, make_tls(&proxy.certs.ca_cert, true)).await.expect("direct TLS");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");

    // A raw direct-TLS client sees ALPN "postgresql" selected.
    let tls = tls_direct(&proxy, &TestProxy::host("alpha"), &[b"postgresql"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    drop((tls, client));
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alpn_postgresql_is_selected_after_an_ssl_request_too() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let tls = tls_via_ssl_request(&proxy, &TestProxy::host("alpha"), &[b"postgresql"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let tls = tls_via_ssl_request(&proxy, &TestProxy::host("alpha"), &[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "clients without ALPN (libpq < 17) are served");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_is_declined_and_the_client_continues_with_tls() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.expect("connect");
    write_all(&mut tcp, &request_packet(GSSENC_REQUEST)).await;
    assert_eq!(tokio::io::AsyncReadExt::read_u8(&mut tcp).await.expect("answer"), b'N');
    // libpq then falls back to SSLRequest on the same connection.
    write_all(&mut tcp, &request_packet(SSL_REQUEST)).await;
    assert_eq!(tokio::io::AsyncReadExt::read_u8(&mut tcp).await.expect("answer"), b'S');

    // And with libpq itself: gssencmode=prefer tries GSSENC first when it has credentials;
    // gssencmode=disable must work regardless.
    let conninfo = format!("{} gssencmode=prefer", proxy.psql_conninfo("alpha"));
    let (ok, out, err) = psql(&conninfo, "SHOW cluster_name").await;
    assert!(ok && out == "alpha", "{err}");
    drop(tcp);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_protocol_versions_and_pq_options_reach_the_backend() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let mut tls = tls_via_ssl_request(&proxy, &TestProxy::host("alpha"), &[b"postgresql"]).await;
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
