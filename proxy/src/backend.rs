//! Stage 3 of a connection: open a TCP connection to the instance's PostgreSQL and send it the
//! client's (edited) StartupMessage. The hop is plaintext inside the cluster, protected by a
//! NetworkPolicy that admits only the proxy.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use devdb_shared::{Name, Route};
use pgwire::messages::startup::Startup;
use tokio::net::TcpStream;

use crate::error::{ClientFacing, Side, client_error, sqlstate};
use crate::pq_stream::PqStream;
use crate::protocol::{self, ClientError};

/// Why the backend could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot connect to {name} at {backend}: {source}")]
    Connect { name: Name, backend: String, source: std::io::Error },
    #[error("connecting to {name} at {backend} timed out")]
    Timeout { name: Name, backend: String },
}

impl ClientFacing for BackendError {
    fn client_error(&self) -> Option<ClientError> {
        let (Self::Connect { name, .. } | Self::Timeout { name, .. }) = self;
        // The backend address is internal: it goes to the log, not to the client.
        Some(
            client_error(sqlstate::CONNECTION_FAILURE, format!("database instance \"{name}\" is not reachable"))
                .hint("it may be restarting: retry in a moment, or check `devdb db show`"),
        )
    }

    fn side(&self) -> Side {
        Side::Backend
    }

    fn reason(&self) -> &'static str {
        "backend_unreachable"
    }
}

/// Connects to `route`'s backend and forwards `startup`.
///
/// # Errors
/// [`BackendError`] when the address does not resolve, refuses, or does not answer in time.
pub async fn connect(
    route: &Route,
    startup: &Startup,
    timeout: Duration,
) -> Result<(PqStream<TcpStream>, SocketAddr), BackendError> {
    let fail = |source| BackendError::Connect { name: route.name.clone(), backend: route.backend.clone(), source };
    let connecting = async {
        let stream = TcpStream::connect(route.backend.as_str()).await.map_err(fail)?;
        crate::net::configure(&stream);
        let addr = stream.peer_addr().map_err(fail)?;
        let mut backend = PqStream::new(stream);
        let mut message = BytesMut::new();
        protocol::encode_startup(startup, &mut message);
        backend.write_all(&message).await.map_err(fail)?;
        Ok((backend, addr))
    };
    tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| BackendError::Timeout { name: route.name.clone(), backend: route.backend.clone() })?
}
