//! Query cancellation through the proxy: a CancelRequest with the proxy-issued key, over TLS
//! (with SNI) or plaintext (psql's Ctrl-C), stops `pg_sleep(60)` with SQLSTATE 57014.

use std::time::Duration;

use crate::common::*;
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
    wait_until_sleeping(server, 1).await;
    (token, query)
}

/// Waits until `count` backends are running `pg_sleep`.
async fn wait_until_sleeping(server: &TestPostgres, count: usize) {
    let direct = server.direct().await;
    for _ in 0..2400 {
        let active = query_one(
            &direct,
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'",
        )
        .await;
        if active == count.to_string() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the queries never started");
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
    wait_until_sleeping(&alpha, 1).await;
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
async fn a_cancel_reaching_another_replica_is_forwarded_to_the_one_holding_the_session() {
    cancel_across_replicas(false).await;
}

/// The same behind a load balancer that sends PROXY protocol headers (the chart's default): the
/// forwarded cancel carries one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_forwarding_works_with_proxy_protocol() {
    cancel_across_replicas(true).await;
}

fn proxy_header() -> Vec<u8> {
    use ppp::v2::{Builder, Command, IPv4, Protocol, Version};
    let addresses = IPv4::new([198, 51, 100, 20], [10, 0, 0, 1], 50000, 5432);
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses).build().expect("header")
}

/// Two replicas on the same port (127.0.0.1 and 127.0.0.2): a session through one, its cancel
/// through the other, which asks its peer. The client connects from 127.0.0.3, not a replica.
async fn cancel_across_replicas(proxy_protocol: bool) {
    use tokio::io::AsyncWriteExt;
    let alpha = TestPostgres::start("alpha");
    alpha.trust_local_tcp();
    let table = routes_json(&[("alpha", alpha.addr())]);
    let port = free_port();
    let peers = vec!["127.0.0.1".to_string(), "127.0.0.2".to_string()];
    let replica = |ip: [u8; 4], peers: Vec<String>| {
        move |c: &mut devdb_proxy::config::Config| {
            c.replica_addr = Some(ip.into());
            c.peers = peers;
            c.proxy_protocol = proxy_protocol;
        }
    };
    let a =
        TestProxy::start_on(&format!("127.0.0.1:{port}"), table.clone(), replica([127, 0, 0, 1], peers.clone())).await;
    let b = TestProxy::start_on(&format!("127.0.0.2:{port}"), table, replica([127, 0, 0, 2], peers)).await;

    // A raw session through replica A, keeping the key A issues.
    let mut tcp = from_client_address(a.addr).await;
    if proxy_protocol {
        write_all(&mut tcp, &proxy_header()).await;
    }
    write_all(&mut tcp, &request_packet(SSL_REQUEST)).await;
    assert_eq!(tcp.read_u8().await.expect("S"), b'S');
    let mut session = tls_handshake(&a.certs.ca_cert, tcp, &host("alpha"), &[]).await;
    write_all(&mut session, &startup_packet(3, 0, &[("user", USER), ("database", "postgres")])).await;
    let mut key = None;
    loop {
        let (tag, body) = read_message(&mut session).await.expect("start-up message");
        match tag {
            b'K' => key = Some(body),
            b'Z' => break,
            b'E' => panic!("refused: {:?}", parse_error(&body)),
            _ => {}
        }
    }
    let key = key.expect("BackendKeyData");
    let sql = b"SELECT pg_sleep(60)\0";
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((4 + sql.len()) as i32).to_be_bytes());
    query.extend_from_slice(sql);
    session.write_all(&query).await.expect("query");
    session.flush().await.expect("flush");
    wait_until_sleeping(&alpha, 1).await;
    let pid =
        query_one(&alpha.direct().await, "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'").await;
    assert_eq!(i32::from_be_bytes(key[..4].try_into().expect("pid")).to_string(), pid, "the real backend pid");

    // The cancel lands on replica B.
    let cancel = cancel_packet(i32::from_be_bytes(key[..4].try_into().expect("pid")), &key[4..]);
    let mut tcp = from_client_address(b.addr).await;
    if proxy_protocol {
        write_all(&mut tcp, &proxy_header()).await;
    }
    write_all(&mut tcp, &cancel).await;
    let mut rest = Vec::new();
    tcp.read_to_end(&mut rest).await.expect("closed");

    // RowDescription comes first; then the query ends with an error, not a CommandComplete.
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match read_message(&mut session).await.expect("a message") {
                (b'E', body) => return parse_error(&body).code,
                (b'C', _) => return "completed".to_string(),
                _ => {}
            }
        }
    })
    .await
    .expect("cancelled well before 60 s");
    assert_eq!(outcome, "57014");
    wait_for_metric(&b, "devdb_proxy_cancel_requests_total{outcome=\"to_peer\"} 1").await;
    wait_for_metric(&a, "devdb_proxy_cancel_requests_total{outcome=\"forwarded\"} 1").await;
    drop(session);
    a.stop().await;
    b.stop().await;
}

/// A connection from 127.0.0.3: a client, not one of the replicas.
async fn from_client_address(to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.bind("127.0.0.3:0".parse().expect("addr")).expect("bind 127.0.0.3");
    socket.connect(to).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_valid_cancels_at_once_all_cancel() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let mut tokens = Vec::new();
    let mut queries = Vec::new();
    for _ in 0..40 {
        let client = connect_with(&proxy.config("alpha"), proxy.tls()).await.expect("connect");
        tokens.push(client.cancel_token());
        queries.push(tokio::spawn(async move { client.batch_execute("SELECT pg_sleep(60)").await }));
    }
    wait_until_sleeping(&alpha, 40).await;
    // Every session's cancel from one client address, all at once: none is dropped.
    let cancels = tokens.iter().map(|token| token.cancel_query(proxy.tls()));
    for sent in futures_util::future::join_all(cancels).await {
        sent.expect("cancel sent");
    }
    for query in queries {
        expect_cancelled(query).await;
    }
    wait_for_metric(&proxy, "devdb_proxy_cancel_requests_total{outcome=\"forwarded\"} 40").await;
    proxy.stop().await;
}
