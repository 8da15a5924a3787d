//! The proxy's life around its sessions: certificate reloads without restart, readiness on the
//! admin port, and a graceful drain on SIGTERM (the real binary). Routes-file reloads and PROXY
//! protocol headers: `inproc`.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;
use devdb_proxy::certs::DevCertificates;
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_is_served_after_its_files_change() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let old_ca = proxy.certs.ca_cert.clone();
    assert!(proxy.connect("alpha").await.is_ok());

    // A certificate from a new CA replaces the files (as cert-manager renews a Secret).
    let renewed = tempfile::tempdir().expect("tempdir");
    let new = DevCertificates::generate(DOMAIN).expect("certs").write_to(renewed.path()).expect("write");
    for (from, to) in [(&new.server_key, &proxy.certs.server_key), (&new.server_cert, &proxy.certs.server_cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).expect("copy");
        std::fs::rename(&tmp, to).expect("rename");
    }
    let mut served_new = false;
    for _ in 0..1200 {
        if connect_with(&proxy.config("alpha"), make_tls(&new.ca_cert, false)).await.is_ok() {
            served_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_new, "the renewed certificate is served");
    let err = refused(connect_with(&proxy.config("alpha"), make_tls(&old_ca, false)).await);
    assert!(format!("{err:?}").contains("InvalidCertificate"), "{err:?}");
    proxy.stop().await;
}

/// The real binary: `--help`, flags from the environment, readiness, and a drain on SIGTERM.
/// Run with two event loops (`--worker-threads 2`): sessions land on both, and draining covers
/// both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_before_exit() {
    let alpha = TestPostgres::start("alpha");
    let dir = tempfile::tempdir().expect("tempdir");
    let routes = dir.path().join("routes.json");
    std::fs::write(&routes, routes_json(&[("alpha", alpha.addr())])).expect("routes");
    let (port, admin_port) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb-proxy"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--domain", DOMAIN])
        .args(["--dev-certs-dir", &dir.path().join("certs").to_string_lossy()])
        .env("DEVDB_PROXY_ROUTES_FILE", &routes)
        .env("DEVDB_PROXY_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
        .env("DEVDB_PROXY_SHUTDOWN_GRACE", "60s")
        .env("DEVDB_PROXY_WORKER_THREADS", "2")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("devdb-proxy");
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin_port}").parse().expect("addr");
    wait_ready(admin).await;

    // The generated development CA verifies the proxy.
    let ca = dir.path().join("certs/ca.crt");
    let mut config = tokio_postgres::Config::new();
    config
        .host(host("alpha"))
        .hostaddr([127, 0, 0, 1].into())
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let setup = connect_with(&config, make_tls(&ca, false)).await.expect("connect via the binary");
    setup.batch_execute("CREATE TABLE drained (v int)").await.expect("table");
    drop(setup);
    // Six sessions: the kernel spreads them over both loops' sockets.
    let mut clients = Vec::new();
    for _ in 0..6 {
        let client = connect_with(&config, make_tls(&ca, false)).await.expect("connect via the binary");
        client.batch_execute("BEGIN; INSERT INTO drained VALUES (1)").await.expect("txn");
        clients.push(client);
    }

    let pid = nix::unistd::Pid::from_raw(child.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    // Draining: not ready any more, and no new sessions.
    for _ in 0..1200 {
        if http_get(admin, "/readyz").await.0.contains("503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(http_get(admin, "/readyz").await.0.contains("503"), "draining proxies are not ready");
    // Each event loop closes its own listener as it sees the signal: soon none accepts.
    let mut refused = false;
    for _ in 0..1200 {
        if connect_with(&config, make_tls(&ca, false)).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "no new sessions while draining");

    // The open sessions go on: they commit, and the proxy exits once they close.
    for client in clients {
        client.batch_execute("INSERT INTO drained VALUES (2); COMMIT").await.expect("commit during drain");
    }
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.expect("exits").expect("status");
    assert!(status.success(), "clean exit: {status}");
    let direct = alpha.direct().await;
    assert_eq!(query_one(&direct, "SELECT sum(v) FROM drained").await, "18");
}

/// A rollout: after SIGTERM the proxy is not ready at once, yet accepts every new connection for
/// `--drain-delay` (while the load balancer deregisters it), then closes its listener; the open
/// session goes on meanwhile and ends normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_the_drain_delay_no_connection_is_refused() {
    let alpha = TestPostgres::start("alpha");
    let mut proxy = TestProxy::start_with(&[("alpha", alpha.addr())], |c| {
        c.drain_delay = Duration::from_secs(10);
    })
    .await;
    let open = proxy.connect("alpha").await.expect("an open session");
    open.batch_execute("CREATE TABLE rolled (v int); BEGIN; INSERT INTO rolled VALUES (1)").await.expect("txn");

    proxy.begin_shutdown();
    for _ in 0..300 {
        if proxy.admin_get("/readyz").await.0.contains("503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(proxy.admin_get("/readyz").await.0.contains("503"), "not ready as soon as shutdown begins");
    // Clients keep connecting, as they would while the load balancer still sends: none refused.
    for i in 0..3 {
        let client = proxy.connect("alpha").await.unwrap_or_else(|e| panic!("connection {i} refused: {e}"));
        assert_eq!(query_one(&client, "SELECT 1").await, "1");
    }
    // Once the delay is over the listener closes.
    let mut closed = false;
    for _ in 0..1200 {
        if TcpStream::connect(proxy.addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the listener closes after the drain delay");
    open.batch_execute("INSERT INTO rolled VALUES (2); COMMIT").await.expect("the open session goes on");
    drop(open);
    proxy.stop().await;
    assert_eq!(query_one(&alpha.direct().await, "SELECT sum(v) FROM rolled").await, "3");
}

/// Until a routing table arrives every name would look unknown: a proxy whose controller cannot
/// be reached yet is alive but not ready, so a load balancer sends it nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_routing_table_yet_means_not_ready() {
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let proxy = TestProxy::start_with(&[], |c| {
        c.routes = devdb_proxy::config::RoutesConfig::Controller { url: unreachable, token: None };
    })
    .await;
    let (status, body) = proxy.admin_get("/readyz").await;
    assert!(status.contains("503") && body.contains("no routing table yet"), "{status} {body}");
    assert!(proxy.admin_get("/healthz").await.0.contains("200"), "alive all the same");
    proxy.stop().await;
}

async fn wait_ready(admin: std::net::SocketAddr) {
    for _ in 0..1200 {
        if TcpStream::connect(admin).await.is_ok() && http_get(admin, "/readyz").await.0.contains("200") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("devdb-proxy never became ready");
}

#[tokio::test]
async fn the_binary_explains_itself_and_refuses_bad_flags() {
    let help =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb-proxy")).arg("--help").output().await.expect("run");
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success());
    for flag in [
        "--listen",
        "--domain",
        "--tls-cert",
        "--tls-key",
        "--routes-file",
        "--admin-listen",
        "--proxy-protocol",
        "--allow-plaintext",
        "--admin-token",
        "--metrics-per-database",
        "DEVDB_PROXY_LISTEN",
        "DEVDB_PROXY_ADMIN_TOKEN",
    ] {
        assert!(text.contains(flag), "--help mentions {flag}");
    }
    let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_devdb-proxy"))
        .args(["--routes-file", "/nonexistent/routes.json", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--dev-certs-dir", &std::env::temp_dir().join("devdb-help-test").to_string_lossy()])
        .output()
        .await
        .expect("run");
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("cannot read routes file /nonexistent/routes.json"), "{stderr}");
}
