//! The controller as a server: the composition of the core with one runtime adapter.
//!
//! - local: SQLite and PostgreSQL processes under `--data-dir`, one task per object;
//! - kube: custom resources; every replica serves the API and follows the routes, the leader
//!   (a Lease) also runs the controllers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use devdb_core::api::AppState;
use devdb_core::config::ApiConfig;
use devdb_core::reconcile::{Reconciler, SUPERVISE_EVERY};
use devdb_core::routes::{self, RouteFeed};
use devdb_core::runtime::{Platform, Runtime};
use devdb_kube::leader::LeaderLease;
use devdb_kube::operator;
use devdb_kube::{CrdStore, KubeConfig, KubePlatform, KubeRuntime, Passwords};
use devdb_local::{Local, LocalArgs, LocalPlatform};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The Lease the controller replicas compete for.
const LEASE: &str = "devdb-controller";
const LEASE_DURATION: Duration = Duration::from_secs(15);

/// How long a stopping controller waits for its background work to finish what it writes.
const STOPPING: Duration = Duration::from_secs(10);

/// Runs the controller with the local runtime on `listener` until `shutdown` resolves.
/// Database instances keep running after it returns: the next start adopts them.
///
/// # Errors
/// When the data directory, the state or the PostgreSQL binaries cannot be used.
pub async fn run_local(
    config: ApiConfig,
    local: &LocalArgs,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Held until this returns: the data directory's lock.
    let local = Local::open(local, config.reconciler())?;
    let (reconciler, data_dir) = (local.reconciler.clone(), &local.data_dir);
    let routes = RouteFeed::default();
    let following = follow_routes::<LocalPlatform>(&reconciler, &routes);
    let stop = CancellationToken::new();
    // Passes run from now on: recovery asks for them.
    tokio::spawn(devdb_core::queue::run(reconciler.clone(), local.passes, Default::default(), stop.clone()));
    reconciler.recover().await.context("recovering state")?;
    let monitor = monitor_for(&reconciler, &config);
    let state = AppState::new(config, reconciler.clone(), monitor.clone(), routes);
    let backups =
        devdb_core::backups::Backups::<LocalPlatform>::new(reconciler.store().clone(), reconciler.runtime().clone());
    let supervising = {
        let (reconciler, stop) = (reconciler.clone(), stop.clone());
        let lifecycle_every = state.config.lifecycle_check_every;
        tokio::spawn(async move {
            tokio::join!(
                backups.run(lifecycle_every, stop.clone()),
                reconciler.supervise(SUPERVISE_EVERY, stop.clone()),
                reconciler.enforce_lifecycle(lifecycle_every, stop.clone()),
                monitor.run(stop.clone()),
                devdb_local::dr::writer::run(reconciler.clone(), stop),
            )
        })
    };
    tracing::info!(
        api = %listener.local_addr()?,
        data_dir = %data_dir.display(),
        postgres = reconciler.runtime().postgres_version(),
        auth = if state.config.tokens.is_empty() { "none (loopback)" } else { "bearer tokens" },
        "devdb-controller started"
    );
    let served = serve(state, listener, shutdown).await;
    // The monitor writes the histories' latest points as it stops: waited for, boundedly.
    stop.cancel();
    if tokio::time::timeout(STOPPING, supervising).await.is_err() {
        tracing::warn!("the monitor and checks took too long to stop");
    }
    following.abort();
    served?;
    tracing::info!("devdb-controller stopped; database instances keep running");
    Ok(())
}

/// Runs the controller with the Kubernetes runtime.
///
/// # Errors
/// When the cluster cannot be reached, or the leader lease is lost.
pub async fn run_kube(
    config: ApiConfig,
    kube: KubeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API (in-cluster service account or ~/.kube/config)")?;
    devdb_kube::preflight::check(&client, &kube.cluster).await.context("the cluster cannot run DevDB as configured")?;
    match devdb_kube::preflight::readiness_gates(&client, &kube.cluster.controller_namespace).await {
        Ok(Some(warning)) => tracing::warn!("{warning}"),
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot read the release's namespace for its readiness gates"),
    }
    let passwords = Passwords::new(kube.secret_key.as_bytes());
    devdb_kube::key_guard::check(&client, &kube.cluster.controller_namespace, &passwords).await?;
    let mut runtime = KubeRuntime::new(
        client.clone(),
        kube.cluster.clone(),
        kube.db_version,
        config.domain.clone(),
        config.public_port,
        kube.waits.clone(),
    )
    .with_backups(kube.backups.clone());
    if let Some(address) = kube.monitor_through.clone() {
        // Sampling feeds charts and usage reports; the API and the databases do not need it, so
        // a sampler that cannot be set up is logged, not fatal.
        match devdb_kube::monitor::ThroughProxy::new(address, config.domain.clone(), kube.monitor_ca.as_deref()) {
            Ok(monitor) => runtime = runtime.sampling_through(monitor.with_proxy_protocol(kube.monitor_proxy_protocol)),
            Err(error) => tracing::error!(%error, "databases are not sampled"),
        }
    }
    let statefulsets = tokio::spawn(runtime.watch_statefulsets());
    let runtime = Arc::new(runtime);
    let reporter = kube::runtime::events::Reporter {
        controller: "devdb-controller".into(),
        instance: Some(kube.identity.clone()),
    };
    let store = Arc::new(CrdStore::new(client.clone(), &kube.cluster.controller_namespace, passwords, reporter));
    let watching = {
        let store = store.clone();
        tokio::spawn(async move { store.follow_databases().await })
    };
    let (scheduler, queue) = devdb_core::queue::channel();
    let reconciler = Reconciler::<KubePlatform>::new(store, runtime, scheduler, config.reconciler());
    let routes = RouteFeed::default();
    let following = follow_routes::<KubePlatform>(&reconciler, &routes);
    tracing::info!(
        api = %listener.local_addr()?,
        namespace = %kube.cluster.controller_namespace,
        identity = %kube.identity,
        "devdb-controller started (kube runtime)"
    );
    let stop = CancellationToken::new();
    let monitor = monitor_for(&reconciler, &config);
    let state = AppState::new(config, reconciler.clone(), monitor.clone(), routes);
    let lifecycle_every = state.config.lifecycle_check_every;
    let backups =
        devdb_core::backups::Backups::<KubePlatform>::new(reconciler.store().clone(), reconciler.runtime().clone());
    let lease = Arc::new(LeaderLease::new(
        client.clone(),
        &kube.cluster.controller_namespace,
        LEASE,
        &kube.identity,
        LEASE_DURATION,
    ));
    let lead = {
        let (reconciler, stop, lease) = (reconciler.clone(), stop.clone(), lease.clone());
        async move {
            tokio::select! {
                () = lease.acquire() => {}
                () = stop.cancelled() => return Ok(()),
            }
            tracing::info!(identity = %kube.identity, "leading: reconciling projects and databases");
            reconciler.recover().await?;
            let context = operator::Context::new(reconciler.clone());
            // All run until `stop`, and each finishes what it writes (the monitor its histories).
            let work = async {
                tokio::join!(
                    operator::run(client, context, queue, stop.clone()),
                    reconciler.supervise(SUPERVISE_EVERY, stop.clone()),
                    reconciler.enforce_lifecycle(lifecycle_every, stop.clone()),
                    monitor.run(stop.clone()),
                    backups.run(lifecycle_every, stop.clone()),
                )
            };
            tokio::select! {
                _ = work => Ok(()),
                lost = lease.hold() => Err(anyhow::Error::from(lost)),
            }
        }
    };
    let serving = serve(state, listener, shutdown);
    tokio::pin!(lead);
    let outcome = tokio::select! {
        served = serving => {
            // The leader's work finishes what it writes, boundedly.
            stop.cancel();
            if tokio::time::timeout(STOPPING, &mut lead).await.is_err() {
                tracing::warn!("the controllers and the monitor took too long to stop");
            }
            served
        }
        led = &mut lead => led,
    };
    stop.cancel();
    following.abort();
    watching.abort();
    statefulsets.abort();
    // Stopping (a rollout, a drain): the other replica leads at once, not a lease later.
    if tokio::time::timeout(Duration::from_secs(3), lease.release()).await.is_err() {
        tracing::warn!("releasing the leader lease took too long");
    }
    outcome
}

/// The monitor of `reconciler`'s databases, sampling as `config` says.
fn monitor_for<P: Platform>(reconciler: &Reconciler<P>, config: &ApiConfig) -> Arc<devdb_core::monitor::Monitor<P>> {
    devdb_core::monitor::Monitor::new(reconciler.store().clone(), reconciler.runtime().clone(), config.sample_every)
}

/// Keeps `routes` following the store's databases.
fn follow_routes<P: Platform>(reconciler: &Reconciler<P>, routes: &RouteFeed) -> tokio::task::JoinHandle<()> {
    let (store, runtime, routes) = (reconciler.store().clone(), reconciler.runtime().clone(), routes.clone());
    tokio::spawn(routes::follow::<P>(store, runtime, routes))
}

async fn serve<P: Platform>(
    state: Arc<AppState<P>>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stopping = state.shutdown.clone();
    let signal = async move {
        shutdown.await;
        stopping.cancel();
    };
    axum::serve(listener, crate::app::router(state)).with_graceful_shutdown(signal).await?;
    Ok(())
}
