//! Sessions reach the right backend by name: by SNI, by `endpoint=` without SNI (stripped from
//! what the backend sees), with a server name that is not a host name ignored, over direct TLS
//! with ALPN, after a declined GSSENC; and the routes file is followed without a restart.

use std::time::Duration;

use devdb_shared::Name;

use crate::common::fakes::FakeBackend;
use crate::common::inproc::InProc;
use crate::common::*;

#[tokio::test]
async fn without_sni_the_endpoint_option_routes_and_is_stripped() {
    let (alpha, beta) = (FakeBackend::start("alpha").await, FakeBackend::start("beta").await);
    let proxy = InProc::start(vec![alpha.route(), beta.route()], |_| {});
    let port = proxy.listen().await;
    // libpq sends no SNI when host is an IP address.
    let conninfo = format!(
        "host=127.0.0.1 port={port} sslmode=require user={USER} dbname=postgres options='endpoint=beta -c search_path=from_options'"
    );
    let (ok, out, err) = psql(&conninfo, "SHOW cluster_name").await;
    assert!(ok, "{err}");
    assert_eq!(out, "beta", "routed by endpoint=");
    let options = beta.startups().last().and_then(|s| s.get("options").cloned());
    assert_eq!(options.as_deref(), Some("-c search_path=from_options"), "other options forwarded");

    // A driver that sends no SNI at all (the certificate is still verified against the name).
    let mut tls = client_tls_config(&proxy.certs.ca_cert, &[]);
    tls.enable_sni = false;
    let mut config = proxy.config("beta");
    config.options("endpoint=alpha");
    let client = proxy.connect_with(&config, tokio_postgres_rustls::MakeRustlsConnect::new(tls)).await.expect("no SNI");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");
}

#[tokio::test]
async fn a_server_name_that_is_not_a_host_name_is_ignored() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});
    let port = proxy.listen().await;
    // libpq with hostaddr and no host sends its socket directory as the server name.
    let conninfo =
        format!("hostaddr=127.0.0.1 port={port} sslmode=require user={USER} dbname=postgres options=endpoint=alpha");
    let (ok, stdout, stderr) = psql(&conninfo, "SHOW cluster_name").await;
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "alpha");
}

#[tokio::test]
async fn direct_tls_with_alpn_postgresql_works() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});
    let mut config = proxy.config("alpha");
    config.ssl_negotiation(tokio_postgres::config::SslNegotiation::Direct);
    let client = proxy.connect_with(&config, make_tls(&proxy.certs.ca_cert, true)).await.expect("direct TLS");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");

    // A raw direct-TLS client sees ALPN "postgresql" selected.
    let tls = proxy.tls_direct(&host("alpha"), &[b"postgresql"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
}

#[tokio::test]
async fn alpn_postgresql_is_selected_after_an_ssl_request_too() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});
    let tls = proxy.tls_via_ssl_request(&host("alpha"), &[b"postgresql"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    let tls = proxy.tls_via_ssl_request(&host("alpha"), &[]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), None, "clients without ALPN (libpq < 17) are served");
}

#[tokio::test]
async fn gssenc_is_declined_and_the_client_continues_with_tls() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |_| {});
    let mut raw = proxy.open_client();
    write_all(&mut raw, &request_packet(GSSENC_REQUEST)).await;
    assert_eq!(tokio::io::AsyncReadExt::read_u8(&mut raw).await.expect("answer"), b'N');
    // libpq then falls back to SSLRequest on the same connection.
    ssl_request(&mut raw).await;

    // And with libpq itself: gssencmode=prefer tries GSSENC first when it has credentials;
    // gssencmode=disable must work regardless.
    let port = proxy.listen().await;
    let conninfo = format!("{} gssencmode=prefer", proxy.psql_conninfo(port, "alpha"));
    let (ok, out, err) = psql(&conninfo, "SHOW cluster_name").await;
    assert!(ok && out == "alpha", "{err}");
}

#[tokio::test]
async fn routes_file_changes_take_effect_without_restart() {
    let (alpha, beta) = (FakeBackend::start("alpha").await, FakeBackend::start("beta").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("routes.json");
    replace_file(&file, &routes_json(&[("alpha", alpha.addr())]));
    let every = Duration::from_millis(50);
    let proxy = InProc::reading(&file, |c| c.reload_interval = every);
    let err = refused(proxy.connect("beta").await);
    assert_eq!(db_error(&err).0, "3D000");

    // Add beta, and point alpha at beta's server.
    replace_file(&file, &routes_json(&[("alpha", beta.addr()), ("beta", beta.addr())]));
    let name = |n: &str| Name::new(n).expect("name");
    proxy.wait_until(|routes| routes.get(&name("beta")).is_some()).await;
    let client = proxy.connect("beta").await.expect("beta");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "beta");
    let client = proxy.connect("alpha").await.expect("alpha");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "beta", "alpha now routes to beta's server");

    // A broken file keeps the last good table: the proxy looks at it a few times (on paused
    // time, with nothing but the file in flight).
    std::fs::write(&file, "{ not json").expect("write");
    tokio::time::pause();
    tokio::time::sleep(every * 4).await;
    tokio::time::resume();
    assert!(proxy.connect("beta").await.is_ok(), "still routed after a bad edit");

    // Removing a route refuses new sessions with 3D000.
    replace_file(&file, &routes_json(&[("alpha", alpha.addr())]));
    proxy.wait_until(|routes| routes.get(&name("beta")).is_none()).await;
    assert_eq!(db_error(&refused(proxy.connect("beta").await)).0, "3D000");
    drop(client);
}
