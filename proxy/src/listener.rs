//! The listening sockets, the accept loop and graceful shutdown: stop accepting, let sessions
//! drain for the grace period, then close what is left.
//!
//! With several event loops each has a listening socket of its own on the same address
//! (`SO_REUSEPORT`: the kernel spreads new connections over them), a thread of its own and a
//! single-threaded runtime: a session lives and dies on the loop that accepted it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::{Context, connection};

/// Connections waiting to be accepted, per listening socket.
const BACKLOG: i32 = 1024;

/// Binds `count` listening sockets on `addr` (one per event loop; with port 0, the port the
/// first was given). Several sockets share the address through `SO_REUSEPORT`; a single one does
/// not set it, so a second proxy on the same port fails to start instead of sharing it.
///
/// # Errors
/// When a socket cannot be created or bound (the address is in use, not local, …).
pub fn bind(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut addr = addr;
    let mut listeners = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if count > 1 {
            socket.set_reuse_port(true)?;
        }
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener = std::net::TcpListener::from(socket);
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Runs an event loop on a thread of its own: a single-threaded runtime accepting on `listener`
/// until `stop`, then draining like the first loop.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn_loop(
    index: usize,
    listener: std::net::TcpListener,
    ctx: Arc<Context>,
    stop: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(format!("devdb-proxy-loop-{index}")).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(error) => return tracing::error!(%error, index, "cannot start an event loop"),
        };
        runtime.block_on(async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => serve(listener, ctx, stop.cancelled_owned()).await,
                Err(error) => tracing::error!(%error, index, "cannot register a listening socket"),
            }
        });
    })
}

/// Accepts connections until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let sessions = TaskTracker::new();
    tokio::pin!(shutdown);
    // Set at shutdown: `/readyz` turns 503 at once, but new connections are still accepted until
    // this passes (`--drain-delay`), while load balancers notice and stop sending.
    let mut accepting_until: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            () = &mut shutdown, if accepting_until.is_none() => {
                ctx.draining.cancel();
                tracing::info!(delay = %humantime::format_duration(ctx.config.drain_delay), "not ready; still accepting");
                accepting_until = Some(Box::pin(tokio::time::sleep(ctx.config.drain_delay)));
            }
            () = async { if let Some(until) = accepting_until.as_mut() { until.await } }, if accepting_until.is_some() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    crate::net::configure(&stream);
                    sessions.spawn(connection::handle(ctx.clone(), stream, peer));
                }
                Err(error) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    sessions.close();
    let grace = ctx.config.shutdown_grace;
    tracing::info!(sessions = sessions.len(), grace = %humantime::format_duration(grace), "draining");
    if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
        tracing::warn!(sessions = sessions.len(), "grace period over: closing remaining sessions");
        ctx.closing.cancel();
        sessions.wait().await;
    }
    tracing::info!("all sessions closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_loops_share_one_port_and_a_single_one_does_not_share_it() {
        let loops = bind("127.0.0.1:0".parse().expect("addr"), 3).expect("bound");
        let ports: Vec<u16> = loops.iter().map(|l| l.local_addr().expect("addr").port()).collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|p| *p == ports[0] && *p != 0), "{ports:?}");
        let single = bind("127.0.0.1:0".parse().expect("addr"), 1).expect("bound");
        let taken = single[0].local_addr().expect("addr");
        assert!(bind(taken, 1).is_err(), "a second proxy on the same port fails to start");
        assert!(bind(taken, 2).is_err(), "even with several loops of its own");
    }
}
