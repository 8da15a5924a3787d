//! Socket options applied to both legs of every session.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Idle time before the first keepalive probe. Cloud NLBs drop idle flows after 350 s and
/// kube-proxy IPVS after 900 s, while Linux waits 7200 s by default.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;

/// Turns on TCP keepalive (60 s / 10 s / 6) and disables Nagle (PostgreSQL messages are small
/// and latency-sensitive). Failures are logged: the session still works without them.
pub fn configure(stream: &TcpStream) {
    let keepalive =
        TcpKeepalive::new().with_time(KEEPALIVE_IDLE).with_interval(KEEPALIVE_INTERVAL).with_retries(KEEPALIVE_RETRIES);
    let socket = SockRef::from(stream);
    if let Err(error) = socket.set_tcp_keepalive(&keepalive).and_then(|()| socket.set_tcp_nodelay(true)) {
        tracing::debug!(%error, "cannot set socket options");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_and_nodelay_are_set() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let stream = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        configure(&stream);
        let socket = SockRef::from(&stream);
        assert!(socket.keepalive().expect("keepalive"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(socket.tcp_keepalive_interval().expect("interval"), KEEPALIVE_INTERVAL);
        assert_eq!(socket.tcp_keepalive_retries().expect("retries"), KEEPALIVE_RETRIES);
        assert!(socket.tcp_nodelay().expect("nodelay"));
    }
}
