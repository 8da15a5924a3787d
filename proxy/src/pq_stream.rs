//! A connection before the relay starts: framed PostgreSQL messages over a buffer, with no raw
//! `AsyncRead`/`AsyncWrite`, so handshake code cannot lose or inject bytes by accident. The raw
//! stream and whatever was read ahead come out only through [`PqStream::into_parts`].

use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ClientFacing;
use crate::protocol::{self, BackendMessage, FirstMessage, StartupPacketError};

/// Buffer for the start-up phase; messages there are small.
const INITIAL_CAPACITY: usize = 1024;

/// Why reading a framed message failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("connection closed")]
    Closed,
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("invalid startup packet: {0}")]
    InvalidStartup(#[from] StartupPacketError),
    #[error("backend sent a message with an impossible length")]
    InvalidBackendMessage,
}

/// A stream carrying PostgreSQL messages, plus bytes read but not yet consumed.
pub struct PqStream<S> {
    io: S,
    buf: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PqStream<S> {
    pub fn new(io: S) -> Self {
        Self::with_buffer(io, BytesMut::with_capacity(INITIAL_CAPACITY))
    }

    /// Continues a stream whose first bytes were already read into `buf`.
    pub fn with_buffer(io: S, buf: BytesMut) -> Self {
        Self { io, buf }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read are kept in the buffer.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.io.read_buf(&mut self.buf).await
    }

    /// Reads a client's first packet (see [`protocol::decode_first_message`]).
    pub async fn read_first_message(&mut self) -> Result<FirstMessage, ReadError> {
        loop {
            if let Some(message) = protocol::decode_first_message(&mut self.buf)? {
                return Ok(message);
            }
            if self.fill().await? == 0 {
                return Err(ReadError::Closed);
            }
        }
    }

    /// Takes the next complete backend message already buffered, if any.
    pub fn next_backend_message(&mut self) -> Result<Option<BackendMessage>, ReadError> {
        protocol::decode_backend_message(&mut self.buf).map_err(|_| ReadError::InvalidBackendMessage)
    }

    /// The first byte read that no message has consumed yet, if any.
    pub fn first_buffered(&self) -> Option<u8> {
        self.buf.first().copied()
    }

    /// Whether bytes were read that no message has consumed yet.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Takes every buffered byte.
    pub fn take_buffered(&mut self) -> BytesMut {
        self.buf.split()
    }

    /// Writes and flushes `bytes`.
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Tells the client why it is refused, as far as it can still be told, and closes: over TLS
    /// with a close_notify, as PostgreSQL closes, also where it says nothing. Write errors are
    /// ignored: the client may already be gone, and the refusal is logged by the caller.
    pub async fn send_error(&mut self, err: &impl ClientFacing) {
        if let Some(reply) = err.reply() {
            let _ = self.write_all(&reply).await;
        }
        self.close().await;
    }

    /// Ends the connection cleanly (TLS close_notify, then FIN); errors are ignored, the client
    /// may be gone already.
    pub async fn close(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// The raw stream and the bytes read ahead of the consumer.
    pub fn into_parts(self) -> (S, BytesMut) {
        (self.io, self.buf)
    }
}
