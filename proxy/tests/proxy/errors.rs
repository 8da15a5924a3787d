//! Every refusal in the contract's error table reaches the client as a FATAL ErrorResponse with
//! its SQLSTATE (or, where no channel exists, a clean close), and the proxy keeps serving.

use std::time::Duration;

use crate::common::*;
use tokio::net::TcpStream;

async fn still_serves(proxy: &TestProxy, name: &str) {
    let client = proxy.connect(name).await.expect("the proxy still serves good clients");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, name);
}

async fn raw(proxy: &TestProxy, bytes: &[u8]) -> ErrorFields {
    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    write_all(&mut tcp, bytes).await;
    expect_refusal(&mut tcp).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_startup_is_refused_with_the_fix_named() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;

    let plaintext = raw(&proxy, &startup_packet(3, 0, &[("user", USER)])).await;
    assert_eq!(
        (plaintext.code.as_str(), plaintext.message.as_str()),
        ("08P01", "DevDB requires TLS: connect with sslmode=require")
    );
    assert!(plaintext.hint.is_some_and(|h| h.contains("sslmode=require")));

    let mut config = proxy.config("alpha");
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let err = refused(config.connect(tokio_postgres::NoTls).await);
    assert_eq!(db_error(&err), ("08P01".into(), "DevDB requires TLS: connect with sslmode=require".into()));

    // Malformed first packets are answered exactly as PostgreSQL answers them: transparency.rs.
    still_serves(&proxy, "alpha").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_refusals_name_the_problem() {
    let alpha = TestPostgres::start("alpha");
    let gone = free_port();
    let proxy = TestProxy::start(&[("alpha", alpha.addr()), ("gone", format!("127.0.0.1:{gone}"))]).await;

    let err = refused(proxy.connect("nobody").await);
    assert_eq!(db_error(&err), ("3D000".into(), "database instance \"nobody\" does not exist".into()));

    let err = refused(proxy.connect("gone").await);
    assert_eq!(db_error(&err), ("08006".into(), "database instance \"gone\" is not reachable".into()));
    let detail = format!("{:?}", err.as_db_error());
    assert!(!detail.contains(&gone.to_string()), "the backend address stays internal: {detail}");

    // No SNI (a driver that sends none) and no endpoint= option.
    let mut tls = client_tls_config(&proxy.certs.ca_cert, &[]);
    tls.enable_sni = false;
    let err = connect_with(&proxy.config("alpha"), tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await;
    let (code, message) = db_error(&refused(err));
    assert_eq!(code, "08P01");
    assert_eq!(message, format!("no database instance named: use host <name>.{DOMAIN} or options=endpoint=<name>"));

    // psql with the host given as an IP address sends no SNI either; the message says what to do.
    let conninfo = format!("host=127.0.0.1 port={} sslmode=require user={USER} dbname=postgres", proxy.addr.port());
    let (ok, _, stderr) = psql(&conninfo, "SELECT 1").await;
    assert!(!ok && stderr.contains("no database instance named"), "{stderr}");

    // A host outside the domain (sslmode=require does not verify the name, so TLS succeeds).
    let conninfo = format!(
        "host=alpha.example.com hostaddr=127.0.0.1 port={} sslmode=require user={USER} dbname=postgres",
        proxy.addr.port()
    );
    let (ok, _, stderr) = psql(&conninfo, "SELECT 1").await;
    assert!(!ok && stderr.contains(&format!("host \"alpha.example.com\" is not under \"{DOMAIN}\"")), "{stderr}");

    still_serves(&proxy, "alpha").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_instances_are_awaited_then_refused_and_stopped_ones_refused_at_once() {
    let alpha = TestPostgres::start("alpha");
    let proxy =
        TestProxy::start_with(&[("alpha", alpha.addr())], |c| c.wake_timeout = Duration::from_millis(300)).await;
    let table = |state: &str| {
        serde_json::json!({ "routes": [ { "name": "alpha", "backend": alpha.addr(), "state": state } ] }).to_string()
    };
    proxy.set_table(table("starting"));
    let refused = wait_for_refusal(&proxy, |db| db.code().code() == "57P03").await;
    assert_eq!(refused, "database instance \"alpha\" is starting, retry");

    proxy.set_table(table("stopped"));
    let refused = wait_for_refusal(&proxy, |db| db.message().contains("is stopped")).await;
    assert_eq!(refused, "database instance \"alpha\" is stopped");

    // A connection that arrives while the instance is starting goes through once it is ready.
    let slow = TestProxy::start_with_table(table("starting"), |c| c.wake_timeout = Duration::from_secs(60)).await;
    let waiting = tokio::spawn({
        let config = slow.config("alpha");
        let tls = slow.tls();
        async move { connect_with(&config, tls).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "held while starting");
    slow.set_table(table("ready"));
    let client = waiting.await.expect("joined").expect("connected once ready");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");
    drop(client);
    slow.stop().await;
    proxy.stop().await;
}

/// Retries until the routes-file change is seen and the refusal for `alpha` satisfies `wanted`;
/// returns its message.
async fn wait_for_refusal(proxy: &TestProxy, wanted: impl Fn(&tokio_postgres::error::DbError) -> bool) -> String {
    for _ in 0..1200 {
        if let Err(err) = proxy.connect("alpha").await
            && let Some(db) = err.as_db_error()
            && wanted(db)
        {
            return db.message().to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never refused as expected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_level_failures_close_cleanly_or_explain() {
    let alpha = TestPostgres::start("alpha");
    let proxy =
        TestProxy::start_with(&[("alpha", alpha.addr())], |c| c.handshake_timeout = Duration::from_millis(500)).await;

    // TLS garbage after 'S': no channel to speak on, so a clean close.
    let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
    write_all(&mut tcp, &request_packet(SSL_REQUEST)).await;
    assert_eq!(tokio::io::AsyncReadExt::read_u8(&mut tcp).await.expect("S"), b'S');
    write_all(&mut tcp, &[0x16, 0x03, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5, 0xde, 0xad]).await;
    assert!(closes(&mut tcp).await, "closed after TLS garbage");

    // A client that stalls mid-handshake is closed at the handshake timeout.
    for partial in [&[0u8, 0, 0][..], &request_packet(SSL_REQUEST)[..], &[0u8, 0, 0, 40, 0, 3][..]] {
        let mut tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        write_all(&mut tcp, partial).await;
        assert!(closes(&mut tcp).await, "stalled client {partial:?} closed");
    }

    // ALPN offered without "postgresql": the handshake completes, then the refusal explains.
    let mut tls = tls_via_ssl_request(&proxy, &TestProxy::host("alpha"), &[b"http/1.1"]).await;
    let refusal = expect_refusal(&mut tls).await;
    assert_eq!(refusal.code, "08P01");
    assert!(refusal.message.contains("ALPN") && refusal.detail.is_some_and(|d| d.contains("http/1.1")));

    // Direct TLS demands ALPN.
    let mut tls = tls_direct(&proxy, &TestProxy::host("alpha"), &[]).await;
    let refusal = expect_refusal(&mut tls).await;
    assert_eq!(refusal.message, "direct TLS requires ALPN \"postgresql\"");

    // channel_binding=require cannot hold across two TLS legs: libpq refuses the plaintext hop's
    // SCRAM without channel binding, and says so.
    let conninfo = format!("{} channel_binding=require", proxy.psql_conninfo("alpha"));
    let (ok, _, stderr) = psql(&conninfo, "SELECT 1").await;
    assert!(!ok && stderr.contains("channel binding"), "{stderr}");

    still_serves(&proxy, "alpha").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_not_counted_as_errors_but_refusals_are() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    for _ in 0..3 {
        let tcp = TcpStream::connect(proxy.addr).await.expect("connect");
        drop(tcp);
    }
    let _ = refused(proxy.connect("nobody").await);
    still_serves(&proxy, "alpha").await;
    wait_for_metric(&proxy, "devdb_proxy_handshake_errors_total{reason=\"unknown_name\"} 1").await;
    wait_for_metric(&proxy, "devdb_proxy_connections_total{route=\"*\"} 1").await;
    let (status, metrics) = proxy.admin_get("/metrics").await;
    assert!(status.contains("200"), "{status}");
    assert!(!metrics.contains("health_check"), "{metrics}");
    proxy.stop().await;
}

/// Whoever reaches the admin port learns no database's name from `/metrics` unless an admin
/// token guards it; with one, `/metrics` needs it (and keeps series per database), while the
/// probes stay open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_name_no_database_unless_an_admin_token_guards_them() {
    let alpha = TestPostgres::start("alpha");
    let open = TestProxy::start(&[("alpha", alpha.addr())]).await;
    still_serves(&open, "alpha").await;
    wait_for_metric(&open, "devdb_proxy_connections_total{route=\"*\"} 1").await;
    let (status, metrics) = open.admin_get("/metrics").await;
    assert!(status.contains("200") && !metrics.contains("alpha"), "{status}\n{metrics}");
    open.stop().await;

    const TOKEN: &str = "metrics-token-0123456789";
    let guarded =
        TestProxy::start_with(&[("alpha", alpha.addr())], |c| c.admin_token = Some(TOKEN.parse().expect("token")))
            .await;
    still_serves(&guarded, "alpha").await;
    for headers in [&[][..], &["Authorization: Bearer metrics-token-012345678x"], &[&format!("Authorization: {TOKEN}")]]
    {
        let (status, body) = http_get_with(guarded.admin, "/metrics", headers).await;
        assert!(status.contains("401") && !body.contains("alpha"), "{headers:?}: {status} {body}");
    }
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let mut metrics = String::new();
    for _ in 0..1200 {
        metrics = http_get_with(guarded.admin, "/metrics", &[&bearer]).await.1;
        if metrics.contains("devdb_proxy_connections_total{route=\"alpha\"} 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(metrics.contains("devdb_proxy_connections_total{route=\"alpha\"} 1"), "{metrics}");
    for probe in ["/healthz", "/readyz"] {
        assert!(guarded.admin_get(probe).await.0.contains("200"), "{probe} needs no token");
    }
    guarded.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_unauthenticated_connections_cannot_lock_the_owner_out() {
    let alpha = TestPostgres::start("alpha");
    // The default limits; refused sessions wait a moment rather than the default 10 s.
    let proxy =
        TestProxy::start_with(&[("alpha", alpha.addr())], |c| c.authenticating.wait = Duration::from_millis(300)).await;
    // One abuser address, 300 sessions that never authenticate, all at once.
    let attempts: Vec<_> = (0..300).map(|_| async { unauthenticated(&proxy, [127, 0, 0, 2], "alpha").await }).collect();
    let results = futures_util::future::join_all(attempts).await;
    let held: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(held.len(), 16, "the default per-client limit");
    for refusal in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refusal.code, "53300");
        assert!(refusal.message.contains("from 127.0.0.2 are still authenticating"), "{}", refusal.message);
        assert!(refusal.hint.is_some());
    }
    // The owner, from another address, gets in and works.
    let client = proxy.connect("alpha").await.expect("the owner connects");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
    wait_for_metric(&proxy, "devdb_proxy_handshake_errors_total{reason=\"too_many_authenticating_client\"} 284").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_count_against_the_limits_only_until_they_authenticate() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start_with(&[("alpha", alpha.addr())], |c| {
        c.authenticating =
            devdb_proxy::admission::Limits { per_database: 4, per_client: 2, wait: Duration::from_secs(2) };
    })
    .await;
    let from = |last: u8| [127, 0, 0, last];
    let a = [unauthenticated(&proxy, from(2), "alpha").await, unauthenticated(&proxy, from(2), "alpha").await];
    let refused = unauthenticated(&proxy, from(2), "alpha").await.expect_err("per client");
    assert!(refused.message.contains("from 127.0.0.2") && refused.message.contains("at most 2"), "{}", refused.message);
    let b = [unauthenticated(&proxy, from(3), "alpha").await, unauthenticated(&proxy, from(3), "alpha").await];
    assert!(a.iter().chain(&b).all(Result::is_ok));
    let refused = unauthenticated(&proxy, from(4), "alpha").await.expect_err("per database");
    assert_eq!(refused.code, "53300");
    assert!(refused.message.contains("database instance \"alpha\"") && refused.message.contains("at most 4"));
    let err = refused_db(proxy.connect("alpha").await);
    assert_eq!(err.0, "53300", "a real client is refused the same way: {}", err.1);

    // Places come back when the sessions go, a burst waits for them rather than failing, and
    // authenticated sessions hold none: eight at once from one address, over a limit of two.
    // (Waiting up to 30 s for a place here: four rounds of TLS and SCRAM in a debug build take
    // seconds on a loaded machine, and this is about waiting, not about how long.)
    drop((a, b));
    proxy.stop().await;
    let proxy = TestProxy::start_with(&[("alpha", alpha.addr())], |c| {
        c.authenticating =
            devdb_proxy::admission::Limits { per_database: 4, per_client: 2, wait: Duration::from_secs(30) };
    })
    .await;
    let burst = (0..8).map(|_| proxy.connect("alpha"));
    let clients: Vec<_> =
        futures_util::future::join_all(burst).await.into_iter().map(|c| c.expect("admitted")).collect();
    for client in &clients {
        assert_eq!(query_one(client, "SELECT 1").await, "1");
    }
}

fn refused_db<T>(result: Result<T, tokio_postgres::Error>) -> (String, String) {
    db_error(&refused(result))
}
