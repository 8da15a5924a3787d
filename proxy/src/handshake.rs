//! Stage 1 of a connection: from the first byte to a StartupMessage (or a CancelRequest).
//!
//! ```text
//! 0x16 (TLS ClientHello) ─────────────────────────────► TLS (ALPN required) ─┐
//! SSLRequest ─► 'S' ─► TLS (nothing may be buffered) ────────────────────────┤
//! GSSENCRequest ─► 'N' ─► (read the next packet)                             ├─► StartupMessage | CancelRequest
//! CancelRequest (plaintext) ─────────────────────────────────────────────────┘
//! StartupMessage (plaintext) ─► refused unless --allow-plaintext
//! ```
//!
//! A client sees what PostgreSQL would show it: a malformed or oversized packet is closed
//! without a word, a protocol it does not speak or a repeated negotiation gets PostgreSQL's own
//! FATAL, and bytes pipelined behind an SSLRequest are refused inside TLS with PostgreSQL's
//! message. Only where PostgreSQL would admit what DevDB refuses (plaintext, ALPN) does the
//! client get an explanation of DevDB's own.
//!
//! The connection is any byte stream ([`ClientIo`]): the accepted TCP stream in the proxy, an
//! in-memory one in tests, served by the same code.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use pgwire::messages::startup::Startup;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

use crate::error::{ClientFacing, Side, client_error, sqlstate};
use crate::pq_stream::{PqStream, ReadError};
use crate::protocol::{self, CancelKey, ClientError, FirstMessage, TLS_HANDSHAKE_RECORD};
use crate::tls::{Accepted, AlpnProblem, Negotiation, Tls};

/// What a client connection can be carried over: the accepted [`TcpStream`], or any other byte
/// stream (an in-memory one in tests).
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> ClientIo for S {}

/// A client connection: plaintext (only with `--allow-plaintext`) or TLS.
pub type ClientStream<S = TcpStream> = Either<S, Box<TlsStream<Rewind<S>>>>;

/// What the client wants once the handshake is over.
pub enum Handshake<S = TcpStream> {
    /// A session to relay.
    Session(ClientSession<S>),
    /// A cancel request for another session; the connection carries nothing else and is
    /// closed once the request has been acted on.
    Cancel { key: CancelKey, client: PqStream<ClientStream<S>> },
}

/// A client that has sent its StartupMessage.
pub struct ClientSession<S = TcpStream> {
    pub client: PqStream<ClientStream<S>>,
    pub startup: Startup,
    /// The TLS server name, if the client sent one.
    pub sni: Option<String>,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// A load balancer's health check, or a port scan: not worth a log line.
    #[error("client closed the connection before sending anything")]
    ClosedBeforeFirstByte,
    #[error("client closed the connection during the handshake")]
    Closed,
    #[error("i/o error during the handshake: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("invalid startup packet: {0}")]
    InvalidStartup(crate::protocol::StartupPacketError),
    #[error("plaintext StartupMessage refused")]
    TlsRequired,
    #[error("client sent unencrypted data after its SSLRequest")]
    DataAfterSslRequest,
    /// An SSLRequest inside TLS, or a second GSSENCRequest (the code is the request's).
    #[error("client repeated a negotiation request")]
    RepeatedNegotiation { code: i32 },
    #[error("ALPN mismatch: {0:?}")]
    Alpn(AlpnProblem),
}

impl From<ReadError> for HandshakeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Closed => Self::Closed,
            ReadError::Io(e) => Self::Io(e),
            ReadError::InvalidStartup(e) => Self::InvalidStartup(e),
            // Backend framing is never read on a client stream.
            ReadError::InvalidBackendMessage => Self::Closed,
        }
    }
}

impl ClientFacing for HandshakeError {
    fn client_error(&self) -> Option<ClientError> {
        use sqlstate::PROTOCOL_VIOLATION as P;
        Some(match self {
            Self::ClosedBeforeFirstByte | Self::Closed | Self::Io(_) | Self::Tls(_) => return None,
            // PostgreSQL's own answers: see `reply`.
            Self::InvalidStartup(_) | Self::RepeatedNegotiation { .. } => return None,
            Self::TlsRequired => client_error(P, "DevDB requires TLS: connect with sslmode=require")
                .hint("add sslmode=require (or verify-full with sslrootcert) to the connection string"),
            Self::DataAfterSslRequest => client_error(P, "received unencrypted data after SSL request").detail(
                "This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.",
            ),
            Self::Alpn(AlpnProblem::Mismatch { offered }) => {
                client_error(P, "TLS ALPN mismatch: DevDB speaks only \"postgresql\"")
                    .detail(format!("the client offered {offered:?}"))
                    .hint("connect with a PostgreSQL client, or offer ALPN \"postgresql\"")
            }
            Self::Alpn(AlpnProblem::MissingForDirect) => client_error(P, "direct TLS requires ALPN \"postgresql\"")
                .hint("use a client that offers ALPN postgresql (libpq 17+), or sslnegotiation=postgres"),
        })
    }

    fn reply(&self) -> Option<BytesMut> {
        match self {
            Self::InvalidStartup(e) => e.reply(),
            Self::RepeatedNegotiation { code } => Some(protocol::unsupported_protocol(1234, (code & 0xffff) as u16)),
            _ => self.client_error().map(|e| protocol::encode_error(&e)),
        }
    }

    fn side(&self) -> Side {
        Side::Client
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::ClosedBeforeFirstByte => "health_check",
            Self::Closed => "client_closed",
            Self::Io(_) => "io",
            Self::Tls(_) => "tls",
            Self::InvalidStartup(_) | Self::DataAfterSslRequest | Self::RepeatedNegotiation { .. } => "invalid_startup",
            Self::TlsRequired => "tls_required",
            Self::Alpn(_) => "alpn",
        }
    }
}

/// Runs the handshake on a fresh connection (after any PROXY protocol header).
///
/// Refusals are sent to the client before the error is returned.
///
/// # Errors
/// [`HandshakeError`] for every refusal and I/O failure.
pub async fn handshake<S: ClientIo>(
    stream: S,
    tls: &Tls,
    allow_plaintext: bool,
) -> Result<Handshake<S>, HandshakeError> {
    let mut client = PqStream::new(stream);
    if client.fill().await? == 0 {
        return Err(HandshakeError::ClosedBeforeFirstByte);
    }
    if client.first_buffered() == Some(TLS_HANDSHAKE_RECORD) {
        // A direct-TLS ClientHello: the bytes read to tell it from PostgreSQL go back in front of
        // the stream, so that it reaches rustls untouched.
        let (stream, read) = client.into_parts();
        let accepted = tls.accept(Rewind::new(stream, read), Negotiation::Direct).await.map_err(HandshakeError::Tls)?;
        return after_tls(accepted).await;
    }

    let mut gssenc_refused = false;
    loop {
        let message = match client.read_first_message().await {
            Ok(message) => message,
            Err(e) => return Err(refuse(&mut client, e.into()).await),
        };
        match message {
            FirstMessage::SslRequest => {
                // Bytes behind the SSLRequest would be taken as if they came over TLS
                // (CVE-2021-23214). PostgreSQL answers 'S', completes TLS, then refuses: so do we,
                // and the plaintext bytes are dropped unread.
                let injected = client.has_buffered();
                client.write_all(b"S").await?;
                let (stream, _) = client.into_parts();
                let accepted = tls
                    .accept(Rewind::new(stream, BytesMut::new()), Negotiation::SslRequest)
                    .await
                    .map_err(HandshakeError::Tls)?;
                if injected {
                    let mut client: PqStream<ClientStream<S>> = PqStream::new(Either::Right(Box::new(accepted.stream)));
                    return Err(refuse(&mut client, HandshakeError::DataAfterSslRequest).await);
                }
                return after_tls(accepted).await;
            }
            FirstMessage::GssEncRequest if !gssenc_refused => {
                gssenc_refused = true;
                client.write_all(b"N").await?;
            }
            FirstMessage::GssEncRequest => {
                let repeated = HandshakeError::RepeatedNegotiation { code: protocol::GSSENC_REQUEST_CODE };
                return Err(refuse(&mut client, repeated).await);
            }
            FirstMessage::Cancel(key) => {
                let (stream, buf) = client.into_parts();
                return Ok(Handshake::Cancel { key, client: PqStream::with_buffer(Either::Left(stream), buf) });
            }
            FirstMessage::Startup(startup) if allow_plaintext => {
                let (stream, buf) = client.into_parts();
                let client = PqStream::with_buffer(Either::Left(stream), buf);
                return Ok(Handshake::Session(ClientSession { client, startup, sni: None }));
            }
            FirstMessage::Startup(_) => return Err(refuse(&mut client, HandshakeError::TlsRequired).await),
        }
    }
}

/// Inside TLS: the client's first packet must be a StartupMessage or a CancelRequest.
async fn after_tls<S: ClientIo>(accepted: Accepted<Rewind<S>>) -> Result<Handshake<S>, HandshakeError> {
    let mut client = PqStream::new(Either::Right(Box::new(accepted.stream)));
    if let Some(problem) = accepted.alpn_problem {
        return Err(refuse(&mut client, HandshakeError::Alpn(problem)).await);
    }
    match client.read_first_message().await {
        Ok(FirstMessage::Startup(startup)) => {
            Ok(Handshake::Session(ClientSession { client, startup, sni: accepted.sni }))
        }
        Ok(FirstMessage::Cancel(key)) => Ok(Handshake::Cancel { key, client }),
        Ok(FirstMessage::SslRequest) => {
            let repeated = HandshakeError::RepeatedNegotiation { code: protocol::SSL_REQUEST_CODE };
            Err(refuse(&mut client, repeated).await)
        }
        Ok(FirstMessage::GssEncRequest) => {
            let repeated = HandshakeError::RepeatedNegotiation { code: protocol::GSSENC_REQUEST_CODE };
            Err(refuse(&mut client, repeated).await)
        }
        Err(e) => Err(refuse(&mut client, e.into()).await),
    }
}

async fn refuse<S>(client: &mut PqStream<S>, err: HandshakeError) -> HandshakeError
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    client.send_error(&err).await;
    err
}

/// A stream with bytes already read from it put back in front of it: what was read of a
/// direct-TLS ClientHello to tell it from PostgreSQL is read again by rustls. Writes go straight
/// through.
pub struct Rewind<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Rewind<S> {
    /// `inner`, to be read after `prefix`.
    pub fn new(inner: S, prefix: BytesMut) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_rewound_stream_reads_its_prefix_first_and_writes_through() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut rewound = Rewind::new(near, BytesMut::from(&b"\x16\x03"[..]));
        far.write_all(b"rest").await.expect("write");
        let mut got = [0u8; 6];
        rewound.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\x16\x03rest");
        rewound.write_all(b"back").await.expect("write through");
        let mut back = [0u8; 4];
        far.read_exact(&mut back).await.expect("read");
        assert_eq!(&back, b"back");
    }
}
