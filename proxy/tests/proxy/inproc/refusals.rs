//! Every refusal in the contract's error table reaches the client as a FATAL ErrorResponse with
//! its SQLSTATE (or, where no channel exists, a clean close), is counted, and leaves the proxy
//! serving; the same for a missing PROXY protocol header and unknown cancel keys.

use std::time::Duration;

use devdb_shared::RouteState;
use tokio::io::AsyncReadExt;

use crate::common::fakes::{FakeBackend, route};
use crate::common::inproc::InProc;
use crate::common::*;

async fn still_serves(proxy: &InProc, name: &str) {
    let client = proxy.connect(name).await.expect("the proxy still serves good clients");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, name);
}

#[tokio::test]
async fn a_plaintext_startup_is_refused_with_the_fix_named() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});

    let mut raw = proxy.open_client();
    write_all(&mut raw, &startup_packet(3, 0, &[("user", USER)])).await;
    let plaintext = expect_refusal(&mut raw).await;
    assert_eq!(
        (plaintext.code.as_str(), plaintext.message.as_str()),
        ("08P01", "DevDB requires TLS: connect with sslmode=require")
    );
    assert!(plaintext.hint.is_some_and(|h| h.contains("sslmode=require")));

    let mut config = proxy.config("alpha");
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = refused(config.connect_raw(proxy.open_client(), tokio_postgres::NoTls).await);
    assert_eq!(db_error(&err), ("08P01".into(), "DevDB requires TLS: connect with sslmode=require".into()));

    // Malformed first packets are answered exactly as PostgreSQL answers them: transparency.rs.
    still_serves(&proxy, "alpha").await;
}

#[tokio::test]
async fn routing_refusals_name_the_problem() {
    let alpha = FakeBackend::start("alpha").await;
    let gone = free_port();
    let proxy =
        InProc::start(vec![alpha.route(), route("gone", &format!("127.0.0.1:{gone}"), RouteState::Ready)], |_| {});

    let err = refused(proxy.connect("nobody").await);
    assert_eq!(db_error(&err), ("3D000".into(), "database instance \"nobody\" does not exist".into()));

    let err = refused(proxy.connect("gone").await);
    assert_eq!(db_error(&err), ("08006".into(), "database instance \"gone\" is not reachable".into()));
    let detail = format!("{:?}", err.as_db_error());
    assert!(!detail.contains(&gone.to_string()), "the backend address stays internal: {detail}");

    // No SNI (a driver that sends none) and no endpoint= option.
    let mut tls = client_tls_config(&proxy.certs.ca_cert, &[]);
    tls.enable_sni = false;
    let err = proxy.connect_with(&proxy.config("alpha"), tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await;
    let (code, message) = db_error(&refused(err));
    assert_eq!(code, "08P01");
    assert_eq!(message, format!("no database instance named: use host <name>.{DOMAIN} or options=endpoint=<name>"));

    // psql with the host given as an IP address sends no SNI either; the message says what to do.
    let port = proxy.listen().await;
    let conninfo = format!("host=127.0.0.1 port={port} sslmode=require user={USER} dbname=postgres");
    let (ok, _, stderr) = psql(&conninfo, "SELECT 1").await;
    assert!(!ok && stderr.contains("no database instance named"), "{stderr}");

    // A host outside the domain (sslmode=require does not verify the name, so TLS succeeds).
    let conninfo =
        format!("host=alpha.example.com hostaddr=127.0.0.1 port={port} sslmode=require user={USER} dbname=postgres");
    let (ok, _, stderr) = psql(&conninfo, "SELECT 1").await;
    assert!(!ok && stderr.contains(&format!("host \"alpha.example.com\" is not under \"{DOMAIN}\"")), "{stderr}");

    still_serves(&proxy, "alpha").await;
}

#[tokio::test(start_paused = true)]
async fn starting_instances_are_awaited_then_refused_and_stopped_ones_refused_at_once() {
    let alpha = FakeBackend::start("alpha").await;
    let wait = Duration::from_millis(300);
    let starting = route("alpha", &alpha.addr(), RouteState::Starting);
    let proxy = InProc::start(vec![starting.clone()], |c| c.wake_timeout = wait);
    let asked = tokio::time::Instant::now();
    let err = refused(proxy.connect("alpha").await);
    assert_eq!(db_error(&err), ("57P03".into(), "database instance \"alpha\" is starting, retry".into()));
    assert!(asked.elapsed() >= wait, "held for the wake timeout first");

    proxy.set("alpha", RouteState::Stopped);
    let asked = tokio::time::Instant::now();
    let err = refused(proxy.connect("alpha").await);
    assert_eq!(db_error(&err), ("57P03".into(), "database instance \"alpha\" is stopped".into()));
    assert!(asked.elapsed() < wait, "refused at once");

    // A connection that arrives while the instance is starting goes through once it is ready.
    let slow = InProc::start(vec![starting], |c| c.wake_timeout = Duration::from_secs(60));
    let waiting = slow.connect("alpha");
    tokio::pin!(waiting);
    tokio::select! {
        _ = &mut waiting => panic!("not held while starting"),
        () = tokio::time::sleep(Duration::from_secs(30)) => {}
    }
    // The backend is reached over TCP: real time from here.
    tokio::time::resume();
    slow.set("alpha", RouteState::Ready);
    let client = waiting.await.expect("connected once ready");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");
}

#[tokio::test(start_paused = true)]
async fn tls_level_failures_close_cleanly_or_explain() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |c| c.handshake_timeout = Duration::from_millis(500));

    // TLS garbage after 'S': no channel to speak on, so a clean close.
    let mut raw = proxy.open_client();
    ssl_request(&mut raw).await;
    write_all(&mut raw, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xde, 0xad]).await;
    assert!(closes(&mut raw).await, "closed after TLS garbage");

    // A client that stalls mid-handshake is closed at the handshake timeout.
    for partial in [&[0u8, 0, 0][..], &request_packet(SSL_REQUEST)[..], &[0u8, 0, 0, 40, 0, 3][..]] {
        let mut raw = proxy.open_client();
        let opened = tokio::time::Instant::now();
        write_all(&mut raw, partial).await;
        assert!(closes(&mut raw).await, "stalled client {partial:?} closed");
        assert!(opened.elapsed() >= Duration::from_millis(500), "at the handshake timeout: {partial:?}");
    }

    // ALPN offered without "postgresql": the handshake completes, then the refusal explains.
    let mut tls = proxy.tls_via_ssl_request(&host("alpha"), &[b"http/1.1"]).await;
    let refusal = expect_refusal(&mut tls).await;
    assert_eq!(refusal.code, "08P01");
    assert!(refusal.message.contains("ALPN") && refusal.detail.is_some_and(|d| d.contains("http/1.1")));

    // Direct TLS demands ALPN.
    let mut tls = proxy.tls_direct(&host("alpha"), &[]).await;
    let refusal = expect_refusal(&mut tls).await;
    assert_eq!(refusal.message, "direct TLS requires ALPN \"postgresql\"");

    // channel_binding=require, refused by libpq itself: routing.rs (it needs a real server).
    tokio::time::resume();
    still_serves(&proxy, "alpha").await;
}

#[tokio::test]
async fn health_checks_are_not_counted_as_errors_but_refusals_are() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});
    let admin = proxy.admin().await;
    for _ in 0..3 {
        drop(proxy.open_client());
    }
    let _ = refused(proxy.connect("nobody").await);
    still_serves(&proxy, "alpha").await;
    proxy.assert_metric("devdb_proxy_handshake_errors_total{reason=\"unknown_name\"} 1").await;
    proxy.assert_metric("devdb_proxy_connections_total{route=\"*\"} 1").await;
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(!metrics.contains("health_check"), "{metrics}");
}

/// Whoever reaches the admin port learns no database's name from `/metrics` unless an admin
/// token guards it; with one, `/metrics` needs it (and keeps series per database), while the
/// probes stay open.
#[tokio::test]
async fn metrics_name_no_database_unless_an_admin_token_guards_them() {
    let alpha = FakeBackend::start("alpha").await;
    let open = InProc::start(vec![alpha.route()], |_| {});
    let admin = open.admin().await;
    still_serves(&open, "alpha").await;
    open.assert_metric("devdb_proxy_connections_total{route=\"*\"} 1").await;
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert!(status.contains("200") && !metrics.contains("alpha"), "{status}\n{metrics}");

    const TOKEN: &str = "metrics-token-0123456789";
    let guarded = InProc::start(vec![alpha.route()], |c| c.admin_token = Some(TOKEN.parse().expect("token")));
    let admin = guarded.admin().await;
    still_serves(&guarded, "alpha").await;
    for headers in [&[][..], &["Authorization: Bearer metrics-token-012345678x"], &[&format!("Authorization: {TOKEN}")]]
    {
        let (status, body) = http_get_with(admin, "/metrics", headers).await;
        assert!(status.contains("401") && !body.contains("alpha"), "{headers:?}: {status} {body}");
    }
    guarded.settled().await;
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let metrics = http_get_with(admin, "/metrics", &[&bearer]).await.1;
    assert!(metrics.contains("devdb_proxy_connections_total{route=\"alpha\"} 1"), "{metrics}");
    for probe in ["/healthz", "/readyz"] {
        assert!(http_get(admin, probe).await.0.contains("200"), "{probe} needs no token");
    }
}

#[tokio::test]
async fn proxy_protocol_headers_are_required_and_accepted() {
    use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |c| c.proxy_protocol = true);
    let header = Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        IPv4::new([198, 51, 100, 20], [10, 0, 0, 1], 50000, 6432),
    )
    .build()
    .expect("header");
    let mut stream = proxy.open_client();
    write_all(&mut stream, &header).await;
    let client = connect_over(stream, &proxy.config("alpha"), proxy.tls()).await.expect("session after header");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");

    // Without the header the connection is dropped: only the load balancer may connect.
    assert!(proxy.connect("alpha").await.is_err());
    drop(client);
    proxy.assert_metric("devdb_proxy_handshake_errors_total{reason=\"proxy_protocol\"} 1").await;
}

#[tokio::test]
async fn unknown_and_malformed_cancel_keys_are_dropped_silently() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});
    let client = proxy.connect("alpha").await.expect("connect");
    for key_len in [4usize, 32] {
        let mut raw = proxy.open_client();
        write_all(&mut raw, &cancel_packet(12345, &vec![0xab; key_len])).await;
        let mut rest = Vec::new();
        raw.read_to_end(&mut rest).await.expect("closed");
        assert!(rest.is_empty(), "nothing is answered to a cancel request");
    }
    assert_eq!(query_one(&client, "SELECT 1").await, "1", "other sessions are untouched");
    drop(client);
    proxy.assert_metric("devdb_proxy_cancel_requests_total{outcome=\"unknown_key\"} 2").await;
}
