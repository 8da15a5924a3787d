//! The accept loop and graceful shutdown: stop accepting, let sessions drain for the grace
//! period, then close what is left.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::{Context, connection};

/// Accepts connections until `shutdown` resolves, then drains.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, shutdown: impl Future<Output = ()>) {
    let sessions = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
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
    ctx.draining.cancel();
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
