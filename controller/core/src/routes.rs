//! The routing table the controller publishes to proxies: derived from the store's databases
//! after every change ([`follow`]) and broadcast on a watch channel (`GET /v1/routes`,
//! `GET /v1/routes/watch`). The same in every runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use devdb_shared::api::DatabaseStatus;
use devdb_shared::{Route, RouteState, RouteTable};
use tokio::sync::watch;

use crate::model::DatabaseRecord;
use crate::runtime::{Platform, Runtime};
use crate::store::Store;

/// The current routing table and its subscribers.
#[derive(Clone)]
pub struct RouteFeed {
    table: Arc<watch::Sender<RouteTable>>,
    /// Versions start at the start time in milliseconds, so they keep increasing across
    /// controller restarts.
    version: Arc<AtomicU64>,
}

impl Default for RouteFeed {
    fn default() -> Self {
        let start = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_millis() as u64);
        Self { table: Arc::new(watch::channel(RouteTable::default()).0), version: Arc::new(AtomicU64::new(start)) }
    }
}

impl RouteFeed {
    /// Publishes the routes of `databases`, each reached at `backend(database)`.
    pub fn publish(&self, databases: &[DatabaseRecord], backend: impl Fn(&DatabaseRecord) -> String) {
        let routes = databases
            .iter()
            .filter_map(|d| {
                let state = match d.status {
                    DatabaseStatus::Running => RouteState::Ready,
                    DatabaseStatus::Creating | DatabaseStatus::Recovering | DatabaseStatus::Starting => {
                        RouteState::Starting
                    }
                    DatabaseStatus::Stopped => RouteState::Asleep,
                    DatabaseStatus::Error => RouteState::Stopped,
                    DatabaseStatus::Deleting => return None,
                };
                Some(Route { name: d.name.clone(), backend: backend(d), state })
            })
            .collect::<Vec<_>>();
        // Only a change of the routes is news to the proxies (each gets the whole table): not
        // the other fields of a database's record (`lastActiveAt` as sessions are reported…).
        if self.table.borrow().routes == routes {
            return;
        }
        let version = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        self.table.send_replace(RouteTable { version, routes });
    }

    /// The current table.
    pub fn current(&self) -> RouteTable {
        self.table.borrow().clone()
    }

    /// A receiver that sees every later table.
    pub fn subscribe(&self) -> watch::Receiver<RouteTable> {
        self.table.subscribe()
    }
}

/// Keeps `feed` equal to the store's databases, each reached where the runtime says, until the
/// store stops publishing.
pub async fn follow<P: Platform>(store: Arc<P::Store>, runtime: Arc<P::Runtime>, feed: RouteFeed) {
    let mut databases = store.watch_databases();
    loop {
        let current = databases.borrow_and_update().clone();
        feed.publish(&current, |d| runtime.backend(d));
        if databases.changed().await.is_err() {
            return;
        }
    }
}
