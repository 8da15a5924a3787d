//! The controller as a server: open the store, adopt what runs, serve the API.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use devdb_pgctl::PgCtl;
use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::ServerConfig;
use crate::reconcile::Reconciler;
use crate::routes::RouteFeed;
use crate::runtime::local::LocalRuntime;
use crate::store::Store;

/// Runs the controller with the local runtime on `listener` until `shutdown` resolves.
/// Database instances keep running after it returns: the next start adopts them.
///
/// # Errors
/// When the data directory, the store or the PostgreSQL binaries are unusable.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&config.data_dir)?;
    // The PostgreSQL user must pass through to its data directories, but nobody else may list
    // them; the state database (every instance's password) is the controller's alone.
    std::fs::set_permissions(&data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    // One controller per data directory: two would reconcile the same files. The lock is
    // released when this process ends, however it ends.
    let lock = std::fs::File::create(data_dir.join("controller.lock"))?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("another devdb-controller is using {}; stop it first", data_dir.display()))?;
    let store = Arc::new(Store::open(&data_dir).context("opening the state database")?);
    std::fs::set_permissions(data_dir.join("state.db"), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let pg = PgCtl::discover(config.pg_bin.as_deref())?;
    let pg_version = pg.binaries().version();
    let routes = RouteFeed::default();
    let reconciler = Reconciler::new(store.clone(), LocalRuntime::new(pg, &data_dir), routes.clone());
    reconciler.recover().await.context("recovering state")?;
    tracing::info!(
        api = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        postgres = pg_version,
        auth = if config.tokens.is_empty() { "none (loopback)" } else { "bearer tokens" },
        "devdb-controller started"
    );
    let stopping = tokio_util::sync::CancellationToken::new();
    let state = Arc::new(AppState { config, store, reconciler, routes, pg_version, shutdown: stopping.clone() });
    let signal = async move {
        shutdown.await;
        stopping.cancel();
    };
    axum::serve(listener, api::router(state)).with_graceful_shutdown(signal).await?;
    tracing::info!("devdb-controller stopped; database instances keep running");
    drop(lock);
    Ok(())
}
