//! Stage 4 of a connection: relay the authentication exchange unchanged while replacing the
//! secret in the backend's `BackendKeyData` with a proxy-issued one (the process id stays the
//! backend's), then splice bytes both ways.
//!
//! Until `ReadyForQuery` the backend's output is parsed message by message (it is small); the
//! client's bytes go through untouched. After it, the proxy no longer looks at the bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::cancel::{CancelMap, Registration};
use crate::error::{ClientFacing, Side};
use crate::handshake::{ClientIo, ClientStream};
use crate::pq_stream::PqStream;
use crate::protocol::{self, BackendMessage, ClientError};

/// Why a session ended abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client closed the connection during authentication")]
    ClientClosed,
    #[error("backend closed the connection during authentication")]
    BackendClosed,
    #[error("backend refused the session (the client was told why)")]
    Refused,
    #[error("{side:?} i/o error during authentication: {source}")]
    Io { side: Side, source: std::io::Error },
    #[error("backend sent a malformed message during start-up")]
    InvalidBackendMessage,
    #[error("i/o error while relaying: {0}")]
    Splice(std::io::Error),
}

impl ClientFacing for RelayError {
    fn client_error(&self) -> Option<ClientError> {
        // Once the backend speaks, it is the backend's errors the client sees.
        None
    }

    fn side(&self) -> Side {
        match self {
            Self::ClientClosed | Self::Refused | Self::Splice(_) => Side::Client,
            Self::BackendClosed | Self::InvalidBackendMessage => Side::Backend,
            Self::Io { side, .. } => *side,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::BackendClosed => "backend_closed",
            Self::Refused => "auth_failed",
            Self::Io { .. } | Self::Splice(_) => "io",
            Self::InvalidBackendMessage => "backend_protocol",
        }
    }
}

/// An authenticated session, ready to splice.
pub struct Authenticated<S = TcpStream> {
    client: ClientStream<S>,
    backend: TcpStream,
    /// Keeps the session's cancel key valid until the session ends.
    _cancel: Option<Registration>,
}

/// Relays start-up and authentication until the backend's `ReadyForQuery`.
///
/// # Errors
/// [`RelayError`] when either side closes or fails first, or the backend refuses the session;
/// the client's connection is then closed as PostgreSQL closes it (close_notify over TLS).
pub async fn authenticate<S: ClientIo>(
    mut client: PqStream<ClientStream<S>>,
    mut backend: PqStream<TcpStream>,
    backend_addr: SocketAddr,
    cancels: &Arc<CancelMap>,
) -> Result<Authenticated<S>, RelayError> {
    let registration = match start_up(&mut client, &mut backend, backend_addr, cancels).await {
        Ok(registration) => registration,
        Err(e) => {
            client.close().await;
            return Err(e);
        }
    };
    let client_io = |source| RelayError::Io { side: Side::Client, source };
    let backend_io = |source| RelayError::Io { side: Side::Backend, source };
    let (client, client_rest) = client.into_parts();
    let (backend, backend_rest) = backend.into_parts();
    let mut session = Authenticated { client, backend, _cancel: registration };
    // Pipelined bytes read past ReadyForQuery belong to the relay.
    if !backend_rest.is_empty() {
        session.client.write_all(&backend_rest).await.map_err(client_io)?;
    }
    if !client_rest.is_empty() {
        session.backend.write_all(&client_rest).await.map_err(backend_io)?;
    }
    Ok(session)
}

/// The start-up exchange itself: returns the session's cancel registration at `ReadyForQuery`.
async fn start_up<S: ClientIo>(
    client: &mut PqStream<ClientStream<S>>,
    backend: &mut PqStream<TcpStream>,
    backend_addr: SocketAddr,
    cancels: &Arc<CancelMap>,
) -> Result<Option<Registration>, RelayError> {
    let client_io = |source| RelayError::Io { side: Side::Client, source };
    let backend_io = |source| RelayError::Io { side: Side::Backend, source };
    let mut registration = None;
    let mut to_client = BytesMut::new();
    let mut refused = false;
    loop {
        let mut ready = false;
        while let Some(message) = backend.next_backend_message().map_err(|_| RelayError::InvalidBackendMessage)? {
            match message.tag() {
                BackendMessage::BACKEND_KEY_DATA => {
                    let real = protocol::decode_backend_key(&message).ok_or(RelayError::InvalidBackendMessage)?;
                    let (reg, issued) = cancels.register(backend_addr, real);
                    registration = Some(reg);
                    to_client.extend_from_slice(&protocol::encode_backend_key(&issued));
                }
                tag => {
                    refused = tag == BackendMessage::ERROR_RESPONSE;
                    ready = tag == BackendMessage::READY_FOR_QUERY;
                    to_client.extend_from_slice(&message.bytes);
                }
            }
            if ready {
                break;
            }
        }
        if !to_client.is_empty() {
            client.write_all(&to_client).await.map_err(client_io)?;
            to_client.clear();
        }
        if ready {
            return Ok(registration);
        }
        tokio::select! {
            read = client.fill() => {
                if read.map_err(client_io)? == 0 {
                    return Err(RelayError::ClientClosed);
                }
                backend.write_all(&client.take_buffered()).await.map_err(backend_io)?;
            }
            read = backend.fill() => {
                if read.map_err(backend_io)? == 0 {
                    return Err(if refused { RelayError::Refused } else { RelayError::BackendClosed });
                }
            }
        }
    }
}

/// Byte counts of a finished session.
#[derive(Debug, Clone, Copy, Default)]
pub struct Transferred {
    /// Client to backend.
    pub up: u64,
    /// Backend to client.
    pub down: u64,
}

/// Copies bytes both ways until both sides have closed.
///
/// # Errors
/// [`RelayError::Splice`] on an I/O error on either side.
pub async fn splice<S: ClientIo>(mut session: Authenticated<S>) -> Result<Transferred, RelayError> {
    let (up, down) =
        tokio::io::copy_bidirectional(&mut session.client, &mut session.backend).await.map_err(RelayError::Splice)?;
    Ok(Transferred { up, down })
}
