//! What may be shown to a client, and who caused a failure.
//!
//! Every refusal reaches the client as a FATAL `ErrorResponse` built from [`ClientFacing`], or
//! exactly as PostgreSQL would answer where the client sent something PostgreSQL refuses itself;
//! internal detail (I/O errors, backend addresses) stays in the logs.

use bytes::BytesMut;

use crate::protocol::{self, ClientError};

/// Which end of a proxied session an error came from. Decides the log level: a client that
/// goes away is routine, a backend that does is worth a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Backend,
    Proxy,
}

/// An error that knows what the client may be told about it.
pub trait ClientFacing: std::error::Error {
    /// The FATAL error to send, or `None` when the client cannot be told (it is gone, or TLS
    /// failed so there is no channel to speak on).
    fn client_error(&self) -> Option<ClientError>;
    /// The bytes to send before closing: [`ClientFacing::client_error`] encoded, unless the
    /// error is one PostgreSQL answers in a form of its own (see `StartupPacketError::reply`).
    fn reply(&self) -> Option<BytesMut> {
        self.client_error().map(|e| protocol::encode_error(&e))
    }
    /// Who caused the failure.
    fn side(&self) -> Side;
    /// A short stable label for metrics (`handshake_errors_total{reason=…}`).
    fn reason(&self) -> &'static str;
}

/// Builds a [`ClientError`]; `hint` and `detail` are added with the builder methods.
pub fn client_error(code: &'static str, message: impl Into<String>) -> ClientError {
    ClientError { code, message: message.into(), detail: None, hint: None }
}

/// SQLSTATEs the proxy uses (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
pub mod sqlstate {
    /// protocol_violation
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// invalid_catalog_name: the named database instance does not exist
    pub const UNKNOWN_DATABASE: &str = "3D000";
    /// cannot_connect_now: the instance is starting
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// connection_failure: the backend cannot be reached
    pub const CONNECTION_FAILURE: &str = "08006";
    /// admin_shutdown: the proxy is shutting down
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// too_many_connections: too many sessions are authenticating at once
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
}
