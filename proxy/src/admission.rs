//! Between route and backend: how many sessions may be authenticating at once.
//!
//! A session holds one of its database's `max_connections` slots from the moment the proxy
//! connects to the backend, and a client that never answers the authentication request keeps it
//! until the server's `authentication_timeout` (60 s): without a limit, anyone who can reach the
//! proxy, with no credential at all, could fill a database's slots and lock its owner out. So
//! at most so many sessions may be authenticating at once per database, and per client address;
//! the one over the limit gets FATAL 53300 before any backend connection is opened. A session
//! leaves the count when its backend says `ReadyForQuery` (or it ends), so authenticated
//! sessions never count.
//!
//! The per-database limit bounds what any number of clients can hold; the per-client limit
//! keeps one address from using all of it. Behind a load balancer that hides client addresses
//! (no PROXY protocol), every client is the load balancer, and the per-client limit is global.

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;

use dashmap::DashMap;
use devdb_shared::Name;

use crate::error::{ClientFacing, Side, client_error, sqlstate};
use crate::protocol::ClientError;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_database: usize,
    pub per_client: usize,
}

/// A session refused because too many are authenticating.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("{limit} sessions to {name} are already authenticating")]
    Database { name: Name, limit: usize },
    #[error("{limit} sessions from {client} are already authenticating")]
    Client { client: IpAddr, limit: usize },
}

impl ClientFacing for AdmissionError {
    fn client_error(&self) -> Option<ClientError> {
        Some(match self {
            Self::Database { name, limit } => client_error(
                sqlstate::TOO_MANY_CONNECTIONS,
                format!("too many connections to database instance \"{name}\" are still authenticating (at most {limit} at once)"),
            )
            .hint("retry in a moment; sessions that never finish authenticating hold these slots until they time out"),
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

/// Counts of sessions authenticating, by database and by client address.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    databases: DashMap<Name, usize>,
    clients: DashMap<IpAddr, usize>,
}

/// A session's place in the counts; dropping it (authenticated, or gone) frees the place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    database: Name,
    client: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        release(&self.admission.databases, &self.database);
        release(&self.admission.clients, &self.client);
    }
}

/// Takes a place under `limit`; false (nothing taken) when there is none.
fn take<K: Hash + Eq + Clone>(counts: &DashMap<K, usize>, key: &K, limit: usize) -> bool {
    let mut count = counts.entry(key.clone()).or_insert(0);
    if *count >= limit {
        return false;
    }
    *count += 1;
    true
}

fn release<K: Hash + Eq>(counts: &DashMap<K, usize>, key: &K) {
    counts.remove_if_mut(key, |_, count| {
        *count = count.saturating_sub(1);
        *count == 0
    });
}

impl Admission {
    pub fn new(limits: Limits) -> Self {
        Self { limits, databases: DashMap::new(), clients: DashMap::new() }
    }

    /// A place for a session from `client` to `database`, if both are under their limits.
    ///
    /// # Errors
    /// [`AdmissionError`] naming the limit that is reached.
    pub fn admit(self: &Arc<Self>, database: &Name, client: IpAddr) -> Result<Ticket, AdmissionError> {
        let client = client.to_canonical();
        if !take(&self.clients, &client, self.limits.per_client) {
            return Err(AdmissionError::Client { client, limit: self.limits.per_client });
        }
        if !take(&self.databases, database, self.limits.per_database) {
            release(&self.clients, &client);
            return Err(AdmissionError::Database { name: database.clone(), limit: self.limits.per_database });
        }
        Ok(Ticket { admission: self.clone(), database: database.clone(), client })
    }

    /// Sessions authenticating now to `database`.
    pub fn authenticating(&self, database: &Name) -> usize {
        self.databases.get(database).map_or(0, |count| *count)
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

    #[test]
    fn each_limit_holds_and_places_come_back_when_tickets_drop() {
        let admission = Arc::new(Admission::new(Limits { per_database: 3, per_client: 2 }));
        let db = name("kate-pg");
        let a = [admission.admit(&db, ip("192.0.2.1")), admission.admit(&db, ip("::ffff:192.0.2.1"))];
        let a: Vec<Ticket> = a.into_iter().map(|t| t.expect("under the limits")).collect();
        let third = admission.admit(&db, ip("192.0.2.1")).expect_err("per client");
        assert!(matches!(third, AdmissionError::Client { limit: 2, .. }), "{third}");
        let b = admission.admit(&db, ip("192.0.2.2")).expect("another client");
        let refused = admission.admit(&db, ip("192.0.2.3")).expect_err("per database");
        assert!(matches!(refused, AdmissionError::Database { limit: 3, .. }), "{refused}");
        assert_eq!(admission.authenticating(&db), 3, "a refused session took nothing");
        let other = admission.admit(&name("bob-pg"), ip("192.0.2.3")).expect("other databases are unaffected");
        drop((a, b, other));
        assert_eq!(admission.authenticating(&db), 0);
        assert!(admission.clients.is_empty() && admission.databases.is_empty(), "nothing is kept for idle keys");
    }

    #[test]
    fn refusals_are_fatal_53300_with_a_hint() {
        let err = AdmissionError::Database { name: name("kate-pg"), limit: 32 }.client_error().expect("error");
        assert_eq!(err.code, "53300");
        assert!(err.message.contains("\"kate-pg\"") && err.message.contains("32") && err.hint.is_some());
    }
}
