//! `devdb certs` makes a CA and a wildcard certificate the proxy serves and clients verify.

use crate::common::tls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_certificates_are_served_by_the_proxy_and_verified_by_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("certs");
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb"))
        .args(["certs", "--domain", "db.example.test", "--out", &out.to_string_lossy()])
        .output()
        .await
        .expect("devdb certs");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stdout).contains("kubectl create secret tls"));
    let mode = |f: &str| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(out.join(f)).expect("file").permissions()) & 0o777
    };
    assert_eq!((mode("server.key"), mode("ca.key"), mode("ca.crt")), (0o600, 0o600, 0o644));

    // A proxy serving them: a verify-full client gets through TLS to the proxy's own refusal.
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, r#"{"routes":[]}"#).expect("routes");
    let tls_files = devdb_proxy::config::TlsSource::Files { cert: out.join("server.crt"), key: out.join("server.key") };
    let config = devdb_proxy::config::Config::new(
        devdb_shared::Domain::new("db.example.test").expect("domain"),
        tls_files,
        devdb_proxy::config::RoutesConfig::File(routes),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stop = tokio_util::sync::CancellationToken::new();
    let proxy = tokio::spawn(devdb_proxy::run(config, listener, admin, stop.clone().cancelled_owned()));
    let mut client = tokio_postgres::Config::new();
    client
        .host("anything.db.example.test")
        .hostaddr([127, 0, 0, 1].into())
        .port(port)
        .user("u")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let err = client
        .connect(tls(&out.join("ca.crt")))
        .await
        .err()
        .map(|e| e.as_db_error().map(|d| d.code().code().to_string()));
    assert_eq!(err, Some(Some("3D000".to_string())), "TLS verified; the unknown instance was refused by the proxy");
    stop.cancel();
    proxy.await.expect("joined").expect("ran");
}
