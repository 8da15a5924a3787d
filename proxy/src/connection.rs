//! One client connection from accept to close. This file is the data path, one stage per line:
//! [PROXY header] → handshake → route → admission → backend → authenticate → splice.
//!
//! [`handle`] serves any byte stream ([`ClientIo`]): the listener's TCP streams, or in-memory
//! ones (the integration tests' in-process harness), through the same stages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use devdb_shared::Name;
use pgwire::messages::startup::Startup;
use tokio::net::TcpStream;
use tracing::{Instrument, Span, field};

use crate::Context;
use crate::activity::SessionGuard;
use crate::admission::{AdmissionError, Ticket};
use crate::backend::{self, BackendError};
use crate::cancel::CancelOutcome;
use crate::error::{ClientFacing, Side};
use crate::handshake::{ClientIo, ClientSession, Handshake, HandshakeError, handshake};
use crate::metrics::{ActiveGuard, OutcomeLabel, ReasonLabel};
use crate::pq_stream::PqStream;
use crate::protocol::ClientError;
use crate::proxy_protocol::{self, ProxyProtocolError};
use crate::relay::{self, RelayError, Transferred};
use crate::route::{self, RouteError, Waker};

/// Why a connection ended before or during its session.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    ProxyProtocol(#[from] ProxyProtocolError),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error("handshake timed out")]
    HandshakeTimeout,
    #[error(transparent)]
    Route(#[from] RouteError),
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Relay(#[from] RelayError),
    #[error("closed at the end of the shutdown grace period")]
    ShutDown,
}

impl ConnectionError {
    fn inner(&self) -> Option<&dyn ClientFacing> {
        match self {
            Self::ProxyProtocol(e) => Some(e),
            Self::Handshake(e) => Some(e),
            Self::Route(e) => Some(e),
            Self::Admission(e) => Some(e),
            Self::Backend(e) => Some(e),
            Self::Relay(e) => Some(e),
            Self::HandshakeTimeout | Self::ShutDown => None,
        }
    }
}

impl ClientFacing for ConnectionError {
    fn client_error(&self) -> Option<ClientError> {
        self.inner().and_then(ClientFacing::client_error)
    }

    fn side(&self) -> Side {
        self.inner().map_or(Side::Client, ClientFacing::side)
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::ShutDown => "shutdown",
            _ => self.inner().map_or("unknown", ClientFacing::reason),
        }
    }
}

/// How a connection ended well.
enum Done {
    Session(Transferred),
    Cancel(CancelOutcome),
}

/// Serves one accepted connection from `peer` to its end, inside its own span, and logs the
/// outcome.
pub async fn handle<S: ClientIo>(ctx: Arc<Context>, stream: S, peer: SocketAddr) {
    let span = tracing::info_span!(
        "conn",
        %peer,
        client = field::Empty,
        sni = field::Empty,
        database = field::Empty,
        backend = field::Empty
    );
    async move {
        let result = tokio::select! {
            result = serve(&ctx, stream, peer) => result,
            () = ctx.closing.cancelled() => Err(ConnectionError::ShutDown),
        };
        report(&ctx, result);
    }
    .instrument(span)
    .await;
}

async fn serve<S: ClientIo>(ctx: &Context, mut stream: S, peer: SocketAddr) -> Result<Done, ConnectionError> {
    let accepted = Instant::now();
    let mut client_addr = peer;
    let opening = async {
        if ctx.config.proxy_protocol
            && let Some(client) = proxy_protocol::read_header(&mut stream).await?
        {
            Span::current().record("client", field::display(client));
            client_addr = client;
        }
        Ok::<_, ConnectionError>(handshake(stream, &ctx.tls, ctx.config.allow_plaintext).await?)
    };
    let opened = tokio::time::timeout(ctx.config.handshake_timeout, opening)
        .await
        .map_err(|_| ConnectionError::HandshakeTimeout)??;
    let ClientSession { mut client, mut startup, sni } = match opened {
        Handshake::Session(session) => session,
        Handshake::Cancel { key, mut client } => {
            // Another replica asking about a key is known by where the connection comes from
            // (the TCP peer, not what a PROXY header claims), and gets a one-byte answer.
            let asked_by_peer = ctx.cancels.is_peer(peer.ip());
            let outcome = ctx.cancels.forward(&key, client_addr, asked_by_peer).await;
            if asked_by_peer {
                // The asking peer counts silence as "not here".
                let _ = client.write_all(&[outcome.peer_answer()]).await;
            }
            // As PostgreSQL does: a clean close (close_notify over TLS) once the cancel is sent.
            client.close().await;
            ctx.metrics.cancels.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
            return Ok(Done::Cancel(outcome));
        }
    };
    if let Some(sni) = &sni {
        Span::current().record("sni", sni.as_str());
    }
    let (name, mut client_guard, ticket, backend, backend_addr) =
        match route_and_connect(ctx, sni.as_deref(), &mut startup, client_addr).await {
            Ok(connected) => connected,
            Err(e) => {
                client.send_error(&e).await;
                return Err(e);
            }
        };
    let session = relay::authenticate(client, backend, backend_addr, &ctx.cancels).await?;
    if let Some(guard) = client_guard.as_mut() {
        guard.authenticated();
    }
    drop(ticket);
    ctx.metrics.handshake_seconds.observe(accepted.elapsed().as_secs_f64());
    let _active = ActiveGuard::new(&ctx.metrics, name.as_str());
    let transferred = relay::splice(session).await?;
    ctx.metrics.add_bytes(transferred.up, transferred.down);
    Ok(Done::Session(transferred))
}

/// Route, a place among the sessions authenticating, backend: the ticket is held until the
/// session has authenticated. The client's guard counts it once it has authenticated (never the
/// controller's sampling); an asleep database is woken for it within the wake limits; see
/// [`crate::activity`] and [`crate::wake`].
async fn route_and_connect(
    ctx: &Context,
    sni: Option<&str>,
    startup: &mut Startup,
    client: SocketAddr,
) -> Result<(Name, Option<SessionGuard>, Ticket, PqStream<TcpStream>, SocketAddr), ConnectionError> {
    let name = route::target(sni, startup, &ctx.config.domain)?;
    Span::current().record("database", name.as_str());
    let monitor = route::is_monitor(startup);
    let client_guard = (!monitor).then(|| ctx.sessions.open(&name));
    let waker =
        ctx.controller.as_deref().filter(|_| !monitor).map(|controller| Waker { controller, client: client.ip() });
    let route = route::ready(&ctx.routes, &name, ctx.config.wake_timeout, waker).await?;
    let ticket = ctx.admission.admit(&name, client.ip()).await?;
    let (backend, addr) = backend::connect(&route, startup, ctx.config.connect_timeout).await?;
    Span::current().record("backend", field::display(addr));
    Ok((name, client_guard, ticket, backend, addr))
}

/// Logs how the connection ended, at a level chosen by who caused it, and counts failures.
fn report(ctx: &Context, result: Result<Done, ConnectionError>) {
    match result {
        Ok(Done::Session(t)) => tracing::info!(bytes_up = t.up, bytes_down = t.down, "session closed"),
        Ok(Done::Cancel(outcome)) => tracing::info!(outcome = outcome.label(), "cancel request"),
        // A load balancer health check: connect, then close before a byte.
        Err(
            ConnectionError::Handshake(HandshakeError::ClosedBeforeFirstByte)
            | ConnectionError::ProxyProtocol(ProxyProtocolError::ClosedBeforeHeader),
        ) => {}
        Err(error) => {
            if !matches!(error, ConnectionError::Relay(RelayError::Splice(_)) | ConnectionError::ShutDown) {
                ctx.metrics.errors.get_or_create(&ReasonLabel { reason: error.reason() }).inc();
            }
            let reason = error.reason();
            match error.side() {
                Side::Client => tracing::info!(%error, reason, "connection refused or ended"),
                Side::Backend | Side::Proxy => tracing::warn!(%error, reason, "connection failed"),
            }
        }
    }
}
