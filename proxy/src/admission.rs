//! Between route and backend: how many sessions may be authenticating at once.
//!
//! A session holds one of its database's `max_connections` slots from the moment the proxy
//! connects to the backend, and a client that never answers the authentication request keeps it
//! until the server's `authentication_timeout` (60 s): without a limit, anyone who can reach the
//! proxy, with no credential at all, could fill a database's slots and lock its owner out. So
//! at most so many sessions may be authenticating at once per database, and per client address.
//! A session over a limit waits for a place (a pool opening many connections at once just
//! queues: authentication takes milliseconds) and, if none comes within the wait, gets FATAL
//! 53300 without any backend connection having been opened. A session leaves the count when its
//! backend says `ReadyForQuery` (or it ends), so authenticated sessions never count.
//!
//! The per-database limit bounds what any number of clients can hold; the per-client limit
//! keeps one address from using all of it. Behind a load balancer that hides client addresses
//! (no PROXY protocol), every client is the load balancer, and the per-client limit is global.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use devdb_shared::Name;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::{ClientFacing, Side, client_error, sqlstate};
use crate::protocol::ClientError;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_database: usize,
    pub per_client: usize,
    /// How long a session over a limit waits for a place before it is refused.
    pub wait: Duration,
}

/// A session refused because too many are authenticating.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("{limit} sessions to {name} were still authenticating")]
    Database { name: Name, limit: usize },
    #[error("{limit} sessions from {client} were still authenticating")]
    Client { client: IpAddr, limit: usize },
}

impl ClientFacing for AdmissionError {
    fn client_error(&self) -> Option<ClientError> {
        Some(match self {
            Self::Database { name, limit } => client_error(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("too many connections to database instance \"{name}\" are still authenticating (at most {limit} at once)"),
            )
            .hint("retry in a moment; sessions that never finish authenticating hold these places until they time out"),
            Self::Client { client, limit } => client_error(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("too many connections from {client} are still authenticating (at most {limit} at once)"),
            )
            .hint("retry in a moment, or open fewer connections at once (a smaller pool minimum)"),
        })
    }

    fn side(&self) -> Side {
        Side::Client
    }

    fn reason(&self) -> &'static str {
        match self {
            Self::Database { .. } => "too_many_authenticating_database",
            Self::Client { .. } => "too_many_authenticating_client",
        }
    }
}

/// Places for sessions authenticating, by database and by client address: a semaphore per key,
/// kept only while someone uses it.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    databases: DashMap<Name, Arc<Semaphore>>,
    clients: DashMap<IpAddr, Arc<Semaphore>>,
}

/// A session's places; dropping it (authenticated, or gone) gives them back.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    database: Name,
    client: IpAddr,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        drop(self.permits.take());
        forget_if_idle(&self.admission.databases, &self.database, self.admission.limits.per_database);
        forget_if_idle(&self.admission.clients, &self.client, self.admission.limits.per_client);
    }
}

/// The semaphore of `key`, made on first use.
fn semaphore<K: Hash + Eq + Clone>(map: &DashMap<K, Arc<Semaphore>>, key: &K, limit: usize) -> Arc<Semaphore> {
    map.entry(key.clone()).or_insert_with(|| Arc::new(Semaphore::new(limit))).clone()
}

/// Removes `key`'s semaphore when nobody holds or waits for it (the map's is the only handle).
fn forget_if_idle<K: Hash + Eq>(map: &DashMap<K, Arc<Semaphore>>, key: &K, limit: usize) {
    map.remove_if(key, |_, semaphore| Arc::strong_count(semaphore) == 1 && semaphore.available_permits() == limit);
}

/// Takes a place of `key`, waiting until `deadline`; `None` when none came.
async fn take<K: Hash + Eq + Clone>(
    map: &DashMap<K, Arc<Semaphore>>,
    key: &K,
    limit: usize,
    deadline: Instant,
) -> Option<OwnedSemaphorePermit> {
    let acquiring = semaphore(map, key, limit).acquire_owned();
    let permit = tokio::time::timeout_at(deadline, acquiring).await.ok().and_then(Result::ok);
    if permit.is_none() {
        forget_if_idle(map, key, limit);
    }
    permit
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self { limits, databases: DashMap::new(), clients: DashMap::new() }
    }

    /// Places for a session from `client` to `database`, waiting up to the limits' `wait`.
    ///
    /// # Errors
    /// [`AdmissionError`] naming the limit that stayed reached.
    pub async fn admit(self: &Arc<Self>, database: &Name, client: IpAddr) -> Result<Ticket, AdmissionError> {
        let client = client.to_canonical();
        let deadline = Instant::now() + self.limits.wait;
        let Some(client_place) = take(&self.clients, &client, self.limits.per_client, deadline).await else {
            return Err(AdmissionError::Client { client, limit: self.limits.per_client });
        };
        let Some(database_place) = take(&self.databases, database, self.limits.per_database, deadline).await else {
            drop(client_place);
            forget_if_idle(&self.clients, &client, self.limits.per_client);
            return Err(AdmissionError::Database { name: database.clone(), limit: self.limits.per_database });
        };
        Ok(Ticket {
            admission: self.clone(),
            database: database.clone(),
            client,
            permits: Some((client_place, database_place)),
        })
    }

    /// Sessions authenticating now to `database`.
    pub fn authenticating(&self, database: &Name) -> usize {
        self.databases.get(database).map_or(0, |s| self.limits.per_database - s.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s).expect("name")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    const WAIT: Duration = Duration::from_secs(2);

    #[tokio::test(start_paused = true)]
    async fn each_limit_holds_and_places_come_back_when_tickets_drop() {
        let admission = Arc::new(Admission::new(Limits { per_database: 3, per_client: 2, wait: WAIT }));
        let db = name("kate-pg");
        let a = admission.admit(&db, ip("192.0.2.1")).await.expect("under the limits");
        let b = admission.admit(&db, ip("::ffff:192.0.2.1")).await.expect("the same client, mapped");
        let started = Instant::now();
        let third = admission.admit(&db, ip("192.0.2.1")).await.expect_err("per client");
        assert!(matches!(third, AdmissionError::Client { limit: 2, .. }), "{third}");
        assert_eq!(started.elapsed(), WAIT, "refused after waiting for a place");
        let c = admission.admit(&db, ip("192.0.2.2")).await.expect("another client");
        let refused = admission.admit(&db, ip("192.0.2.3")).await.expect_err("per database");
        assert!(matches!(refused, AdmissionError::Database { limit: 3, .. }), "{refused}");
        assert_eq!(admission.authenticating(&db), 3, "a refused session holds nothing");
        let other = admission.admit(&name("bob-pg"), ip("192.0.2.3")).await.expect("other databases are unaffected");
        drop((a, b, c, other));
        assert_eq!(admission.authenticating(&db), 0);
        assert!(admission.clients.is_empty() && admission.databases.is_empty(), "nothing is kept for idle keys");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_waits_for_places_instead_of_being_refused() {
        let admission = Arc::new(Admission::new(Limits { per_database: 2, per_client: 2, wait: WAIT }));
        let db = name("kate-pg");
        let first = admission.admit(&db, ip("192.0.2.1")).await.expect("first");
        let second = admission.admit(&db, ip("192.0.2.1")).await.expect("second");
        let waiting = tokio::spawn({
            let (admission, db) = (admission.clone(), db.clone());
            async move { admission.admit(&db, ip("192.0.2.1")).await.map(drop) }
        });
        tokio::time::sleep(WAIT / 2).await;
        drop(first);
        waiting.await.expect("joined").expect("admitted once a place came back");
        drop(second);
        assert!(admission.clients.is_empty() && admission.databases.is_empty());
    }

    #[test]
    fn refusals_are_fatal_53300_with_a_hint() {
        let err = AdmissionError::Database { name: name("kate-pg"), limit: 32 }.client_error().expect("error");
        assert_eq!(err.code, "53300");
        assert!(err.message.contains("\"kate-pg\"") && err.message.contains("32") && err.hint.is_some());
    }
}
