//! The kube-rs controllers of `Project` and `Database` resources: they watch the resources and
//! run the shared [`Reconciler`]'s passes, one at a time per object, on every change, on every
//! pass the reconciler asks for (a restored project wakes its databases), and every few minutes
//! to resync. A failed pass is retried with exponential backoff per object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::utils::PredicateConfig;
use kube::runtime::{WatchStreamExt as _, predicates, watcher};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use devdb_core::model::Key;
use devdb_core::queue::Passes;
use devdb_core::reconcile::{ReconcileError, Reconciler, backoff_after};
use devdb_core::runtime::Platform;

use crate::crd::{Database, Project};

/// How often an object is reconciled with nothing changing: a safety net for what no watch
/// reports (an object of a database deleted by hand). Changes come through the watches (a
/// resource's generation), the reconciler's own triggers, the supervisor (a pod that died) and
/// the lifecycle checks; at a thousand databases a 5-minute resync was 3.3 passes and 7 API
/// requests a second on its own.
const RESYNC: Duration = Duration::from_secs(3600);

/// Passes run at once per kind, at most: a new leader reconciles every object, and a thousand
/// passes at once were a burst of thousands of requests at the API server (the kube-rs default
/// is unbounded).
const PASSES_AT_ONCE: u16 = 16;

/// Why a controller pass failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("resource without a valid name: {0}")]
    Name(String),
}

/// What the controllers' passes share.
pub struct Context<P: Platform> {
    reconciler: Arc<Reconciler<P>>,
    /// Consecutive failures per object, for the backoff.
    failures: Mutex<HashMap<Key, u32>>,
}

impl<P: Platform> Context<P> {
    pub fn new(reconciler: Arc<Reconciler<P>>) -> Arc<Self> {
        Arc::new(Self { reconciler, failures: Mutex::new(HashMap::new()) })
    }

    async fn pass(&self, key: Key) -> Result<Action, ControllerError> {
        self.reconciler.reconcile(&key).await?;
        self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
        Ok(Action::requeue(RESYNC))
    }

    /// The delay before retrying `key` after another failure.
    fn backoff(&self, key: Key) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key).or_insert(0);
        *count = count.saturating_add(1);
        backoff_after(*count)
    }
}

fn key_of<K: Resource>(resource: &K, key: fn(devdb_shared::Name) -> Key) -> Result<Key, ControllerError> {
    let name = resource.meta().name.clone().unwrap_or_default();
    devdb_shared::Name::new(&name).map(key).map_err(|_| ControllerError::Name(name))
}

/// [`Passes`] taken while [`run`] runs: leading until dropped, then following again.
struct Leading(Passes);

impl Leading {
    fn new(passes: Passes) -> Self {
        passes.lead();
        Self(passes)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        self.0.follow();
    }
}

/// Runs both controllers until `stop` is cancelled. `passes` are the passes the reconciler asks
/// for ([`devdb_core::queue`]): kept from now on, and dropped again once this returns.
pub async fn run<P: Platform>(client: Client, context: Arc<Context<P>>, passes: Passes, stop: CancellationToken) {
    let (projects_tx, projects_rx) = mpsc::unbounded_channel();
    let (databases_tx, databases_rx) = mpsc::unbounded_channel();
    let mut passes = Leading::new(passes);
    let route = async move {
        // A send fails only once the controllers have stopped.
        while let Some(key) = passes.0.recv().await {
            match key {
                Key::Project(name) => drop(projects_tx.send(ObjectRef::<Project>::new(name.as_str()))),
                Key::Database(name) => drop(databases_tx.send(ObjectRef::<Database>::new(name.as_str()))),
            }
        }
    };
    // Passes follow changes of what is wanted (a resource's spec, its deletion: its generation),
    // not the status writes the passes themselves make, nor `lastActiveAt` as proxies report
    // sessions: at a thousand databases those were most of the controller's requests. What a
    // pass must follow besides is asked for through `passes`.
    let (projects_cache, projects_writer) = kube::runtime::reflector::store();
    let project_changes = watcher(Api::<Project>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(projects_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let (databases_cache, databases_writer) = kube::runtime::reflector::store();
    let database_changes = watcher(Api::<Database>::all(client), watcher::Config::default())
        .default_backoff()
        .reflect(databases_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, PredicateConfig::default());
    let bounded = kube::runtime::controller::Config::default().concurrency(PASSES_AT_ONCE);
    let projects = Controller::for_stream(project_changes, projects_cache)
        .with_config(bounded.clone())
        .reconcile_on(receiver_stream(projects_rx))
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(
            |p: Arc<Project>, ctx: Arc<Context<P>>| async move { ctx.pass(key_of(p.as_ref(), Key::Project)?).await },
            |p: Arc<Project>, error: &ControllerError, ctx: Arc<Context<P>>| {
                retry(p.as_ref(), Key::Project, error, &ctx)
            },
            context.clone(),
        )
        .for_each(|_| async {});
    let databases = Controller::for_stream(database_changes, databases_cache)
        .with_config(bounded)
        .reconcile_on(receiver_stream(databases_rx))
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(
            |d: Arc<Database>, ctx: Arc<Context<P>>| async move { ctx.pass(key_of(d.as_ref(), Key::Database)?).await },
            |d: Arc<Database>, error: &ControllerError, ctx: Arc<Context<P>>| {
                retry(d.as_ref(), Key::Database, error, &ctx)
            },
            context,
        )
        .for_each(|_| async {});
    tokio::select! {
        () = route => {}
        ((), ()) = async { tokio::join!(projects, databases) } => {}
    }
}

/// The error policy: log, then retry with backoff.
fn retry<K: Resource, P: Platform>(
    resource: &K,
    key: fn(devdb_shared::Name) -> Key,
    error: &ControllerError,
    context: &Context<P>,
) -> Action {
    let name = resource.meta().name.clone().unwrap_or_default();
    let Ok(key) = key_of(resource, key) else {
        tracing::warn!(%name, %error, "ignoring a resource with an invalid name");
        return Action::await_change();
    };
    let delay = context.backoff(key);
    tracing::warn!(%name, %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

fn receiver_stream<T: Send + 'static>(
    mut receiver: mpsc::UnboundedReceiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key::Database(devdb_shared::Name::new(name).expect("name"))
    }

    #[test]
    fn run_leads_while_it_runs_and_follows_once_it_ends() {
        use devdb_core::reconcile::Scheduler as _;
        let (scheduler, passes) = devdb_core::queue::channel();
        let mut leading = Leading::new(passes);
        assert!(scheduler.leading());
        scheduler.schedule(key("kate-pg"));
        assert_eq!(leading.0.try_next(), Some(key("kate-pg")));
        drop(leading);
        assert!(!scheduler.leading(), "passes asked for after it ends are dropped");
    }
}
