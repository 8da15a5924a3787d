//! The controller as a server: set up the runtime and its state, recover, serve the API.
//!
//! - local: SQLite and PostgreSQL processes under `--data-dir`, reconciled by in-process tasks;
//! - kube: custom resources; every replica serves the API and follows the routes, the leader
//!   (a Lease) also runs the controllers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use devdb_pgctl::PgCtl;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{KubeConfig, ServerConfig};
use crate::reconcile::{Reconciler, Scheduler};
use crate::routes::RouteFeed;
use crate::runtime::Runtime;
use crate::runtime::kubernetes::leader::LeaderLease;
use crate::runtime::kubernetes::{KubeRuntime, Waits, controller};
use crate::runtime::local::LocalRuntime;
use crate::store::crd::{CrdStore, Passwords};
use crate::store::sqlite::SqliteStore;
use crate::store::{BackendFn, Store};

/// The Lease the controller replicas compete for.
const LEASE: &str = "devdb-controller";
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// Runs the controller on `listener` until `shutdown` resolves. Database instances keep running
/// after it returns: the next start adopts them.
///
/// # Errors
/// When the runtime cannot be set up (data directory, PostgreSQL binaries, cluster access), or
/// the leader lease is lost.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    match config.kube.clone() {
        None => run_local(config, listener, shutdown).await,
        Some(kube) => run_kube(config, kube, listener, shutdown).await,
    }
}

fn backend_of<R: Runtime>(runtime: &Arc<R>) -> BackendFn {
    let runtime = runtime.clone();
    Arc::new(move |d| runtime.backend(d))
}

async fn run_local(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Whatever this process creates (state, keys, logs of the servers it starts) is private
    // unless it is opened up on purpose.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&config.data_dir)?;
    // The PostgreSQL user must pass through to its data directories, but nobody else may list
    // them; the state (every instance's password) is the controller's alone.
    std::fs::set_permissions(&data_dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    // One controller per data directory: two would reconcile the same files. The lock is
    // released when this process ends, however it ends.
    let lock = std::fs::File::create(data_dir.join("controller.lock"))?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("another devdb-controller is using {}; stop it first", data_dir.display()))?;
    let db = SqliteStore::open_private(&data_dir).context("opening the state database")?;
    let pg = PgCtl::discover(config.pg_bin.as_deref())?.with_sandbox_user(&config.restore_user)?;
    let pg_version = pg.binaries().version();
    let runtime = Arc::new(LocalRuntime::new(pg, &data_dir).context("preparing the data directory")?);
    let routes = RouteFeed::default();
    let store = Arc::new(Store::local(db, routes.clone(), backend_of(&runtime))?);
    let reconciler = Reconciler::new(store.clone(), runtime, Scheduler::Tasks);
    reconciler.recover().await.context("recovering state")?;
    tracing::info!(
        api = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        postgres = pg_version,
        auth = if config.tokens.is_empty() { "none (loopback)" } else { "bearer tokens" },
        "devdb-controller started"
    );
    serve(AppState::new(config, store, reconciler, routes, pg_version), listener, shutdown).await?;
    tracing::info!("devdb-controller stopped; database instances keep running");
    drop(lock);
    Ok(())
}

async fn run_kube(
    config: ServerConfig,
    kube: KubeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster service account or ~/.kube/config)")?;
    let runtime = Arc::new(KubeRuntime::new(
        client.clone(),
        kube.cluster.clone(),
        config.domain.clone(),
        config.public_port,
        Waits::default(),
    ));
    let reporter = kube::runtime::events::Reporter {
        controller: "devdb-controller".into(),
        instance: Some(kube.identity.clone()),
    };
    let crds = CrdStore::new(client.clone(), Passwords::new(kube.secret_key.as_bytes()), reporter);
    let routes = RouteFeed::default();
    let following = {
        let (crds, routes, backend) = (crds.clone(), routes.clone(), backend_of(&runtime));
        tokio::spawn(async move { crds.publish_routes(routes, backend).await })
    };
    let store = Arc::new(Store::Kube(Box::new(crds)));
    let (passes, queue) = tokio::sync::mpsc::unbounded_channel();
    let reconciler = Reconciler::new(store.clone(), runtime, Scheduler::Channel(passes));
    tracing::info!(
        api = %listener.local_addr()?,
        namespace = %kube.cluster.controller_namespace,
        identity = %kube.identity,
        "devdb-controller started (kube runtime)"
    );
    let stop = CancellationToken::new();
    let lead = {
        let (reconciler, stop) = (reconciler.clone(), stop.clone());
        let lease =
            LeaderLease::new(client.clone(), &kube.cluster.controller_namespace, LEASE, &kube.identity, LEASE_DURATION);
        async move {
            tokio::select! {
                () = lease.acquire() => {}
                () = stop.cancelled() => return Ok(()),
            }
            tracing::info!(identity = %kube.identity, "leading: reconciling projects and databases");
            reconciler.recover().await?;
            let context = controller::Context::new(reconciler);
            tokio::select! {
                () = controller::run(client, context, queue, stop.clone()) => Ok(()),
                lost = lease.hold() => Err(anyhow::Error::from(lost)),
            }
        }
    };
    let state = AppState::new(config, store, reconciler, routes, kube.db_version);
    let serving = serve(state, listener, shutdown);
    let outcome = tokio::select! {
        served = serving => served,
        led = lead => led,
    };
    stop.cancel();
    following.abort();
    outcome
}

async fn serve<R: Runtime>(
    state: Arc<AppState<R>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = state.shutdown.clone();
    let signal = async move {
        shutdown.await;
        stopping.cancel();
    };
    axum::serve(listener, api::router(state)).with_graceful_shutdown(signal).await?;
    Ok(())
}
