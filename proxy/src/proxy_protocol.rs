//! Stage 0 (with `--proxy-protocol`): the PROXY protocol v2 header a load balancer (AWS NLB with
//! proxy protocol on, HAProxy) puts before the client's bytes, carrying the real client address.
//!
//! Exactly the header's bytes are read, so nothing of the client's stream is consumed.

use std::net::SocketAddr;

use ppp::v2::{Addresses, Command, Header, PROTOCOL_PREFIX};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{ClientFacing, Side};
use crate::protocol::ClientError;

/// Signature (12), version/command, family/protocol, length (2).
const FIXED_LEN: usize = 16;

/// Why the header was refused. The client is not told: on this port, only the load balancer
/// should ever connect.
#[derive(Debug, thiserror::Error)]
pub enum ProxyProtocolError {
    /// The load balancer's TCP health check: connect, close.
    #[error("connection closed before the PROXY protocol header")]
    ClosedBeforeHeader,
    #[error("connection does not start with a PROXY protocol v2 header")]
    Missing,
    #[error("invalid PROXY protocol v2 header: {0}")]
    Invalid(String),
    #[error("i/o error reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

impl ClientFacing for ProxyProtocolError {
    fn client_error(&self) -> Option<ClientError> {
        None
    }

    fn side(&self) -> Side {
        Side::Client
    }

    fn reason(&self) -> &'static str {
        "proxy_protocol"
    }
}

/// Reads the header and returns the client address it carries; `None` for a `LOCAL` header
/// (the load balancer's own health check) or one without IP addresses.
///
/// # Errors
/// [`ProxyProtocolError`] when the stream does not start with a valid v2 header.
pub async fn read_header(stream: &mut (impl AsyncRead + Unpin)) -> Result<Option<SocketAddr>, ProxyProtocolError> {
    let mut header = vec![0u8; FIXED_LEN];
    let mut filled = 0;
    // Check the signature as bytes arrive: a client speaking PostgreSQL directly (8-byte
    // SSLRequest, then silence) is refused at once instead of at the handshake timeout.
    while filled < FIXED_LEN {
        let read = stream.read(&mut header[filled..]).await?;
        if read == 0 && filled == 0 {
            return Err(ProxyProtocolError::ClosedBeforeHeader);
        }
        if read == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        filled += read;
        let signature = filled.min(PROTOCOL_PREFIX.len());
        if header[..signature] != PROTOCOL_PREFIX[..signature] {
            return Err(ProxyProtocolError::Missing);
        }
    }
    let rest = usize::from(u16::from_be_bytes([header[14], header[15]]));
    header.resize(FIXED_LEN + rest, 0);
    stream.read_exact(&mut header[FIXED_LEN..]).await?;
    let parsed = Header::try_from(header.as_slice()).map_err(|e| ProxyProtocolError::Invalid(e.to_string()))?;
    if parsed.command == Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        Addresses::Unspecified | Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppp::v2::{Builder, IPv4, Protocol, Version};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn the_client_address_is_read_and_following_bytes_are_left() {
        let (mut client, mut server) = pair().await;
        let header = Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            IPv4::new([203, 0, 113, 7], [10, 0, 0, 1], 40000, 6432),
        )
        .build()
        .expect("header");
        client.write_all(&header).await.expect("write");
        client.write_all(b"next").await.expect("write");
        let addr = read_header(&mut server).await.expect("valid");
        assert_eq!(addr, Some("203.0.113.7:40000".parse().expect("addr")));
        let mut next = [0u8; 4];
        server.read_exact(&mut next).await.expect("read");
        assert_eq!(&next, b"next");
    }

    #[tokio::test]
    async fn a_local_header_has_no_client_address() {
        let (mut client, mut server) = pair().await;
        let header =
            Builder::with_addresses(Version::Two | Command::Local, Protocol::Unspecified, Addresses::Unspecified)
                .build()
                .expect("header");
        client.write_all(&header).await.expect("write");
        assert_eq!(read_header(&mut server).await.expect("valid"), None);
    }

    #[tokio::test]
    async fn a_connection_without_the_header_is_refused() {
        let (mut client, mut server) = pair().await;
        // An SSLRequest, and then the client waits for the answer.
        client.write_all(&[0, 0, 0, 8, 4, 210, 22, 47]).await.expect("write");
        assert!(matches!(read_header(&mut server).await, Err(ProxyProtocolError::Missing)));
    }
}
