//! Through the proxy a client sees what it would see from PostgreSQL itself: the same answer to
//! every malformed first packet (compared byte for byte with a real server), a clean TLS close
//! wherever PostgreSQL closes cleanly, and the backend's real process id.

use std::time::Duration;

use crate::common::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GSSENC_REQUEST: i32 = (1234 << 16) | 5680;
const CANCEL_REQUEST: i32 = (1234 << 16) | 5678;

/// How a connection ended, as a client can tell.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Plaintext: the server closed (FIN or reset: the bytes before it are what counts).
    Closed,
    /// TLS: close_notify, then the end of the stream.
    CloseNotify,
    /// TLS: the stream ended without close_notify.
    Unclean,
    /// Nothing more within the wait: the server waits for the client.
    Waiting,
}

/// Everything a client received: the plaintext bytes, the bytes inside TLS (if the server
/// answered 'S' and a TLS phase was given), and how it ended. ErrorResponses are kept without
/// their source-location fields (file, line, routine), which differ between PostgreSQL builds.
#[derive(Debug, PartialEq, Eq)]
struct Transcript {
    plaintext: Vec<String>,
    tls: Option<Vec<String>>,
    end: End,
}

/// Reads until the end of the stream, or until `stop` says the bytes so far are an answer to
/// act on, or until nothing comes for a while.
async fn read_until(stream: &mut (impl AsyncRead + Unpin), tls: bool, stop: impl Fn(&[u8]) -> bool) -> (Vec<u8>, End) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Err(_) => return (got, End::Waiting),
            Ok(Ok(0)) => return (got, if tls { End::CloseNotify } else { End::Closed }),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if stop(&got) {
                    return (got, End::Waiting);
                }
            }
            Ok(Err(_)) => return (got, if tls { End::Unclean } else { End::Closed }),
        }
    }
}

/// Splits protocol-3 messages and drops the F, L and R fields of ErrorResponses. Bytes that are
/// not protocol-3 messages (a single 'S', a version-2 error) are kept whole. Each message is
/// shown with non-printable bytes escaped.
fn messages(bytes: &[u8]) -> Vec<String> {
    split_messages(bytes).iter().map(|m| m.escape_ascii().to_string()).collect()
}

fn split_messages(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        if !(4..=rest.len() - 1).contains(&len) {
            break;
        }
        let (message, tail) = rest.split_at(len + 1);
        if message[0] == b'E' {
            let fields: Vec<&[u8]> = message[5..].split(|b| *b == 0).filter(|f| !f.is_empty()).collect();
            let kept: Vec<u8> =
                fields.iter().filter(|f| !b"FLR".contains(&f[0])).flat_map(|f| f.iter().copied().chain([0])).collect();
            let mut e = vec![b'E'];
            e.extend_from_slice(&kept);
            out.push(e);
        } else {
            out.push(message.to_vec());
        }
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest.to_vec());
    }
    out
}

/// Sends `first` in plaintext; if the answer is 'S', completes TLS (SNI `sni`) and sends `inside`.
async fn transcript(
    addr: std::net::SocketAddr,
    proxy: &TestProxy,
    sni: &str,
    first: &[u8],
    inside: Option<&[u8]>,
) -> Transcript {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    write_all(&mut tcp, first).await;
    let (plaintext, end) = read_until(&mut tcp, false, |got| got == b"S").await;
    match inside {
        Some(inside) if plaintext == b"S" => {
            let mut tls = tls_handshake(&proxy.certs.ca_cert, tcp, sni, &[]).await;
            tls.write_all(inside).await.expect("write inside TLS");
            tls.flush().await.expect("flush");
            let (got, end) = read_until(&mut tls, true, |_| false).await;
            Transcript { plaintext: messages(&plaintext), tls: Some(messages(&got)), end }
        }
        _ => Transcript { plaintext: messages(&plaintext), tls: None, end },
    }
}

fn with_length(len: i32, body: &[u8]) -> Vec<u8> {
    let mut packet = len.to_be_bytes().to_vec();
    packet.extend_from_slice(body);
    packet
}

fn packet(code: i32, body: &[u8]) -> Vec<u8> {
    let mut packet = with_length(8 + body.len() as i32, &code.to_be_bytes());
    packet.extend_from_slice(body);
    packet
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

type Case = (&'static str, Vec<u8>, Option<Vec<u8>>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_packets_are_answered_byte_for_byte_as_postgresql_answers_them() {
    let alpha = TestPostgres::start("alpha");
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    alpha.enable_tls(&proxy.certs.server_cert, &proxy.certs.server_key);
    let direct: std::net::SocketAddr = alpha.addr().parse().expect("addr");
    // The reload that turns TLS on takes effect shortly after pg_ctl returns.
    for _ in 0..1200 {
        let t = transcript(direct, &proxy, "x", &request_packet(SSL_REQUEST), None).await;
        if t.plaintext == ["S"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let ssl = request_packet(SSL_REQUEST);
    let v3 = |params: &[u8]| packet(3 << 16, params);
    // (what, first bytes, bytes sent inside TLS if the server answers 'S')
    let cases: Vec<Case> = vec![
        ("length below 8", vec![0, 0, 0, 3], None),
        ("length above 10000", with_length(20_000, &[0; 64]), None),
        ("negative length", vec![0xff, 0xff, 0xff, 0xf0], None),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), None),
        // node-postgres's connect(); end(): Terminate queued before the SSLRequest.
        ("Terminate before SSLRequest", concat(&[b"X\0\0\0\x04", &ssl]), None),
        ("an unknown request code", request_packet((1234 << 16) | 9999), None),
        ("protocol 2.0", packet(2 << 16, b"user\0app\0\0"), None),
        ("protocol 4.0", packet(4 << 16, b"user\0app\0\0"), None),
        ("a short cancel request", packet(CANCEL_REQUEST, &[0, 0, 0, 1]), None),
        ("a cancel request with an unknown key", packet(CANCEL_REQUEST, &[0, 0, 0, 1, 0, 0, 0, 2]), None),
        ("parameters without their terminator", v3(b"user\0app"), None),
        ("an empty parameter list", v3(b"user\0\0"), None),
        ("an SSLRequest with a body", packet((1234 << 16) | 5679, b"xx"), Some(v3(b"database\0postgres\0\0"))),
        ("bytes pipelined behind the SSLRequest", concat(&[&ssl, b"junk"]), Some(v3(b"user\0app\0\0"))),
        ("an SSLRequest inside TLS", ssl.clone(), Some(ssl.clone())),
        ("a GSSENCRequest inside TLS", ssl.clone(), Some(request_packet(GSSENC_REQUEST))),
        ("an oversized packet inside TLS", ssl.clone(), Some(with_length(20_000, &[]))),
        ("a short packet inside TLS", ssl.clone(), Some(vec![0, 0, 0, 2])),
        ("protocol 2.0 inside TLS", ssl.clone(), Some(packet(2 << 16, b"user\0app\0\0"))),
        ("protocol 1234.9999 inside TLS", ssl.clone(), Some(request_packet((1234 << 16) | 9999))),
        ("a broken parameter list inside TLS", ssl.clone(), Some(v3(b"user\0app"))),
        ("no user name inside TLS", ssl.clone(), Some(v3(b"database\0postgres\0\0"))),
        (
            "a cancel with an unknown key inside TLS",
            ssl.clone(),
            Some(packet(CANCEL_REQUEST, &[0, 0, 0, 1, 0, 0, 0, 2])),
        ),
        ("a client that closes after 'S'", ssl.clone(), Some(Vec::new())),
    ];
    let sni = host("alpha");
    let mut differences = Vec::new();
    for (what, first, inside) in &cases {
        let postgres = transcript(direct, &proxy, &sni, first, inside.as_deref()).await;
        let proxied = transcript(proxy.addr, &proxy, &sni, first, inside.as_deref()).await;
        // A test that can fail: PostgreSQL really answered, in every case but the silent ones.
        assert_ne!(postgres.end, End::Unclean, "{what}: PostgreSQL itself closed TLS uncleanly");
        if postgres != proxied {
            differences.push(format!("{what}:\n  postgres {postgres:?}\n  proxy    {proxied:?}"));
        }
    }
    assert!(differences.is_empty(), "the proxy answers differently:\n{}", differences.join("\n"));
    still_serves(&proxy).await;
    proxy.stop().await;
}

async fn still_serves(proxy: &TestProxy) {
    let client = proxy.connect("alpha").await.expect("the proxy still serves good clients");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
}

/// A raw TLS session through the proxy: its `BackendKeyData` and a way to run one query.
async fn raw_session(proxy: &TestProxy) -> (tokio_rustls::client::TlsStream<TcpStream>, i32, Vec<u8>) {
    let mut tls = tls_via_ssl_request(proxy, &host("alpha"), &[]).await;
    write_all(&mut tls, &startup_packet(3, 0, &[("user", USER), ("database", "postgres")])).await;
    let mut key = None;
    loop {
        let (tag, body) = read_message(&mut tls).await.expect("start-up message");
        match tag {
            b'K' => key = Some((i32::from_be_bytes(body[..4].try_into().expect("pid")), body[4..].to_vec())),
            b'Z' => break,
            b'E' => panic!("refused: {:?}", parse_error(&body)),
            _ => {}
        }
    }
    let (pid, secret) = key.expect("BackendKeyData");
    (tls, pid, secret)
}

/// Runs `sql` on a raw session and returns the first column of the first row.
async fn raw_query(session: &mut (impl AsyncRead + tokio::io::AsyncWrite + Unpin), sql: &str) -> String {
    let mut query = vec![b'Q'];
    query.extend_from_slice(&((4 + sql.len() + 1) as i32).to_be_bytes());
    query.extend_from_slice(sql.as_bytes());
    query.push(0);
    write_all(session, &query).await;
    let mut value = None;
    loop {
        match read_message(session).await.expect("a message") {
            (b'D', body) if value.is_none() => {
                let len = i32::from_be_bytes(body[2..6].try_into().expect("len")) as usize;
                value = Some(String::from_utf8_lossy(&body[6..6 + len]).into_owned());
            }
            (b'Z', _) => return value.expect("a row"),
            (b'E', body) => panic!("query failed: {:?}", parse_error(&body)),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_sees_the_backends_real_process_id_and_can_terminate_by_it() {
    let alpha = TestPostgres::start("alpha");
    alpha.trust_local_tcp();
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let (mut victim, victim_pid, _) = raw_session(&proxy).await;
    assert_eq!(raw_query(&mut victim, "SELECT pg_backend_pid()").await, victim_pid.to_string());

    // What pools do to recycle a connection: terminate it by the pid the driver was given.
    let (mut admin, admin_pid, _) = raw_session(&proxy).await;
    assert_ne!(admin_pid, victim_pid);
    let terminated = raw_query(&mut admin, &format!("SELECT pg_terminate_backend({victim_pid})")).await;
    assert_eq!(terminated, "t");
    let (_, end) = read_until(&mut victim, true, |_| false).await;
    assert_ne!(end, End::Waiting, "the terminated session ends");

    // LISTEN/NOTIFY: the notifying session's pid is the one its driver was given.
    let (mut listener, _, _) = raw_session(&proxy).await;
    raw_query(&mut listener, "LISTEN devdb; SELECT 1").await;
    raw_query(&mut admin, "NOTIFY devdb, 'hello'; SELECT 1").await;
    let notification = loop {
        match read_message(&mut listener).await.expect("notification") {
            (b'A', body) => break body,
            _ => continue,
        }
    };
    assert_eq!(i32::from_be_bytes(notification[..4].try_into().expect("pid")), admin_pid);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_over_tls_is_closed_with_close_notify_and_cancels() {
    let alpha = TestPostgres::start("alpha");
    alpha.trust_local_tcp();
    let proxy = TestProxy::start(&[("alpha", alpha.addr())]).await;
    let (mut session, pid, secret) = raw_session(&proxy).await;
    write_all(&mut session, b"Q\0\0\0\x18SELECT pg_sleep(60)\0").await;
    let direct = alpha.direct().await;
    for _ in 0..2400 {
        if query_one(&direct, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'").await == "1"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // libpq 17's PQcancelBlocking: SSLRequest, TLS, CancelRequest, then read to a clean end.
    let mut cancel = tls_via_ssl_request(&proxy, &host("alpha"), &[]).await;
    let mut body = pid.to_be_bytes().to_vec();
    body.extend_from_slice(&secret);
    write_all(&mut cancel, &packet(CANCEL_REQUEST, &body)).await;
    let mut rest = Vec::new();
    cancel.read_to_end(&mut rest).await.expect("a clean TLS close (close_notify), not an unexpected EOF");
    assert!(rest.is_empty());
    let code = loop {
        match read_message(&mut session).await.expect("a message") {
            (b'E', body) => break parse_error(&body).code,
            (b'C', _) => panic!("the query completed"),
            _ => {}
        }
    };
    assert_eq!(code, "57014");
    proxy.stop().await;
}
