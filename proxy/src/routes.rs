//! The routing table ([`Routes`]) and how it is kept current ([`RouteSource`]).
//!
//! The table is a concurrent map from route key to [`Route`], shared by every connection. A
//! version counter on a watch channel lets a connection waiting for a `starting` instance wake
//! as soon as the table changes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use devdb_shared::{Name, Route, RouteChanges, RouteTable, RouteUpdate};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::controller::{ControllerClient, ControllerError};
use crate::watch::FileWatch;

/// The in-memory routing table. Cloning is cheap and shares the table.
#[derive(Clone)]
pub struct Routes(Arc<Inner>);

struct Inner {
    table: DashMap<Name, Route>,
    /// Bumped after every change.
    version: watch::Sender<u64>,
    /// Whether a whole table has arrived once (the file read, the controller's first snapshot).
    loaded: std::sync::atomic::AtomicBool,
}

impl Default for Routes {
    fn default() -> Self {
        Self(Arc::new(Inner {
            table: DashMap::new(),
            version: watch::channel(0).0,
            loaded: std::sync::atomic::AtomicBool::new(false),
        }))
    }
}

impl Routes {
    /// The route for `name`, cloned out so no map guard outlives the call.
    pub fn get(&self, name: &Name) -> Option<Route> {
        self.0.table.get(name).map(|r| r.value().clone())
    }

    /// Replaces the whole table with `table`'s routes.
    pub fn replace(&self, table: RouteTable) {
        let keep: std::collections::HashSet<Name> = table.routes.iter().map(|r| r.name.clone()).collect();
        self.0.table.retain(|name, _| keep.contains(name));
        for route in table.routes {
            self.0.table.insert(route.name.clone(), route);
        }
        self.0.loaded.store(true, std::sync::atomic::Ordering::Release);
        self.bump();
    }

    /// Whether a whole table has arrived: until then every name would look unknown (3D000), so
    /// the proxy is not ready.
    pub fn loaded(&self) -> bool {
        self.0.loaded.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Applies a change of the whole table (the controller's watch stream after its first
    /// table).
    pub fn apply(&self, changes: RouteChanges) {
        for name in &changes.removed {
            self.0.table.remove(name);
        }
        for route in changes.changed {
            self.0.table.insert(route.name.clone(), route);
        }
        self.bump();
    }

    /// Adds or replaces one route.
    pub fn upsert(&self, route: Route) {
        self.0.table.insert(route.name.clone(), route);
        self.bump();
    }

    /// Removes one route.
    pub fn remove(&self, name: &Name) {
        self.0.table.remove(name);
        self.bump();
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.0.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.0.table.is_empty()
    }

    /// A receiver that sees every change after this call.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.version.subscribe()
    }

    fn bump(&self) {
        self.0.version.send_modify(|v| *v += 1);
    }
}

/// Something that keeps a [`Routes`] table current until shutdown: a routes file now, the
/// controller's watch stream later.
pub trait RouteSource: Send + 'static {
    /// Runs until `shutdown` is cancelled. Errors are logged and the last good table is kept.
    fn run(self: Box<Self>, routes: Routes, shutdown: CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Why a routes file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RoutesFileError {
    #[error("cannot read routes file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("routes file {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("routes file {path} names {name:?} twice")]
    Duplicate { path: PathBuf, name: Name },
}

/// A JSON routes file (`{ "routes": [ { "name", "backend", "state"? } ] }`), reloaded when its
/// contents change.
pub struct FileSource {
    path: PathBuf,
    watch: FileWatch,
}

impl FileSource {
    /// Loads `path` into `routes` and returns a source that keeps reloading it.
    ///
    /// # Errors
    /// [`RoutesFileError`] when the file cannot be read or parsed: a proxy should not start with
    /// a broken table.
    pub fn open(path: &Path, every: Duration, routes: &Routes) -> Result<Self, RoutesFileError> {
        let watch = FileWatch::new(vec![path.into()], every);
        routes.replace(read_routes_file(path)?);
        Ok(Self { path: path.into(), watch })
    }
}

impl RouteSource for FileSource {
    fn run(self: Box<Self>, routes: Routes, shutdown: CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let Self { path, mut watch } = *self;
        Box::pin(async move {
            while shutdown.run_until_cancelled(watch.changed()).await.is_some() {
                match read_routes_file(&path) {
                    Ok(table) => {
                        let count = table.routes.len();
                        routes.replace(table);
                        tracing::info!(path = %path.display(), routes = count, "routes file reloaded");
                    }
                    Err(error) => tracing::warn!(%error, "keeping the previous routes"),
                }
            }
        })
    }
}

/// Reads and validates a routes file.
///
/// # Errors
/// See [`RoutesFileError`].
pub fn read_routes_file(path: &Path) -> Result<RouteTable, RoutesFileError> {
    let bytes = std::fs::read(path).map_err(|source| RoutesFileError::Read { path: path.into(), source })?;
    let table: RouteTable =
        serde_json::from_slice(&bytes).map_err(|source| RoutesFileError::Parse { path: path.into(), source })?;
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = table.routes.iter().find(|r| !seen.insert(&r.name)) {
        return Err(RoutesFileError::Duplicate { path: path.into(), name: dup.name.clone() });
    }
    Ok(table)
}

/// Follows the controller's `GET /v1/routes/watch?changes=true` stream (newline-delimited JSON:
/// the whole table, then what changes), replacing the table with a whole one and applying each
/// change (a controller that sends whole tables only is followed as well). When the controller
/// is unreachable the last table keeps serving and the subscription is retried with backoff
/// (0.5 s doubling to 10 s).
pub struct ControllerSource {
    api: ControllerClient,
}

impl ControllerSource {
    /// Follows `api`'s route feed.
    pub fn new(api: ControllerClient) -> Self {
        Self { api }
    }

    async fn follow(&self, routes: &Routes) -> Result<(), ControllerError> {
        let mut feed = self.api.route_updates().await?;
        // Changes apply only over a whole table of this stream.
        let mut whole = false;
        loop {
            match feed.next().await? {
                RouteUpdate::Table(table) => {
                    tracing::debug!(version = table.version, routes = table.routes.len(), "routes replaced");
                    routes.replace(table);
                    whole = true;
                }
                RouteUpdate::Changes(_) if !whole => return Err(ControllerError::ChangeBeforeTable),
                RouteUpdate::Changes(changes) if changes.changed.is_empty() && changes.removed.is_empty() => {}
                RouteUpdate::Changes(changes) => {
                    tracing::debug!(
                        version = changes.version,
                        changed = changes.changed.len(),
                        removed = changes.removed.len(),
                        "routes changed"
                    );
                    routes.apply(changes);
                }
            }
        }
    }
}

impl RouteSource for ControllerSource {
    fn run(self: Box<Self>, routes: Routes, shutdown: CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            let mut backoff = Duration::from_millis(500);
            loop {
                let Some(Err(error)) = shutdown.run_until_cancelled(self.follow(&routes)).await else { return };
                tracing::warn!(url = %self.api.routes_url(), %error, retry_in = ?backoff, routes = routes.len(), "route feed lost; serving the last table");
                if shutdown.run_until_cancelled(tokio::time::sleep(backoff)).await.is_none() {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_shared::RouteState;

    fn route(name: &str, backend: &str) -> Route {
        Route { name: Name::new(name).expect("valid"), backend: backend.into(), state: RouteState::Ready }
    }

    #[test]
    fn replace_drops_missing_routes_and_bumps_the_version() {
        let routes = Routes::default();
        let rx = routes.subscribe();
        assert!(!routes.loaded(), "no table yet");
        routes.replace(RouteTable { version: 1, routes: vec![route("a", "x:1"), route("b", "x:2")] });
        assert!(routes.loaded());
        routes.replace(RouteTable { version: 2, routes: vec![route("b", "x:3")] });
        assert_eq!(routes.len(), 1);
        assert_eq!(routes.get(&Name::new("b").expect("valid")).map(|r| r.backend), Some("x:3".into()));
        assert_eq!(*rx.borrow(), 2);
    }

    #[test]
    fn a_change_replaces_and_removes_only_the_routes_it_names() {
        let routes = Routes::default();
        routes
            .replace(RouteTable { version: 1, routes: vec![route("a", "x:1"), route("b", "x:2"), route("c", "x:3")] });
        let rx = routes.subscribe();
        let removed = vec![Name::new("c").expect("valid")];
        routes.apply(RouteChanges { version: 2, changed: vec![route("b", "y:2"), route("d", "x:4")], removed });
        assert_eq!(routes.len(), 3);
        assert_eq!(routes.get(&Name::new("a").expect("valid")).map(|r| r.backend), Some("x:1".into()), "untouched");
        assert_eq!(routes.get(&Name::new("b").expect("valid")).map(|r| r.backend), Some("y:2".into()));
        assert!(routes.get(&Name::new("c").expect("valid")).is_none());
        assert!(routes.get(&Name::new("d").expect("valid")).is_some());
        assert!(rx.has_changed().expect("open"), "waiting connections see it");
    }

    #[test]
    fn routes_files_with_errors_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("routes.json");
        for (content, want) in [
            ("{", "not valid"),
            (r#"{"routes":[{"name":"Bad","backend":"x:1"}]}"#, "lower-case"),
            (r#"{"routes":[{"name":"a","backend":"x:1"},{"name":"a","backend":"x:2"}]}"#, "twice"),
        ] {
            std::fs::write(&path, content).expect("write");
            let err = read_routes_file(&path).expect_err(content).to_string();
            assert!(err.contains(want), "{content}: {err}");
        }
        let err = read_routes_file(&dir.path().join("none.json")).expect_err("missing").to_string();
        assert!(err.contains("none.json"), "{err}");
    }
}
