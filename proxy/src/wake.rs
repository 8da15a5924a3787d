//! Beside the route stage: how often clients that have not authenticated may wake asleep
//! databases.
//!
//! An asleep database is woken before its client authenticates (PostgreSQL itself asks for the
//! password, once it runs), so anyone who can reach the proxy can wake any database by name,
//! and each wake runs it for its idle period. Wakes are therefore limited, per client address
//! (an IPv6 client by its /64) and per database: at most so many in a sliding window. A wake
//! counts against both until a session of its database authenticates here, which shows it was
//! wanted (it is then forgotten); a wake the controller did not take counts nothing. A client
//! over a limit is told only that the database cannot be woken now.
//!
//! The counts are this replica's, in memory: several replicas each allow as many, and a
//! restarted one starts afresh. What a wake costs its owner is bounded by the controller: a
//! database woken for nobody holds no running place against its owner's own start.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use devdb_shared::Name;
use tokio::time::Instant;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wakes one client address (IPv6: /64) may cause in a window.
    pub per_client: usize,
    /// Wakes of one database in a window.
    pub per_database: usize,
    /// How long a wake nobody claimed counts.
    pub window: Duration,
}

impl Default for Limits {
    /// The flags' defaults.
    fn default() -> Self {
        Self { per_client: 5, per_database: 2, window: Duration::from_secs(3600) }
    }
}

/// Which limit a wake would go over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limited {
    #[error("its client address has woken {0} databases nobody used within the window")]
    Client(usize),
    #[error("it was woken {0} times for clients that never authenticated within the window")]
    Database(usize),
}

/// A wake that counts: identified so that it can be taken back when the controller did not
/// take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge(u64);

/// One wake in the window.
#[derive(Debug)]
struct Wake {
    charge: Charge,
    at: Instant,
    database: Name,
    client: IpAddr,
}

/// The wakes of this replica that no session has claimed yet, in the window.
#[derive(Debug)]
pub struct WakeLimiter {
    limits: Limits,
    /// Oldest first. A std mutex: held only to look at or change the queue, never across an
    /// await. Its length is bounded by `per_database` times the number of asleep databases.
    wakes: Mutex<(VecDeque<Wake>, u64)>,
}

impl Default for WakeLimiter {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl WakeLimiter {
    pub fn new(limits: Limits) -> Self {
        Self { limits, wakes: Mutex::new((VecDeque::new(), 0)) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut VecDeque<Wake>, &mut u64) -> T) -> T {
        let mut guard = self.wakes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (wakes, next) = &mut *guard;
        let now = Instant::now();
        while wakes.front().is_some_and(|w| now.duration_since(w.at) >= self.limits.window) {
            wakes.pop_front();
        }
        f(wakes, next)
    }

    /// Counts a wake of `database` by `client`, if both are under their limits.
    ///
    /// # Errors
    /// [`Limited`]: the limit the wake would go over (nothing is counted).
    pub fn charge(&self, database: &Name, client: IpAddr) -> Result<Charge, Limited> {
        let client = client_key(client);
        self.with(|wakes, next| {
            let by_client = wakes.iter().filter(|w| w.client == client).count();
            if by_client >= self.limits.per_client {
                return Err(Limited::Client(by_client));
            }
            let of_database = wakes.iter().filter(|w| &w.database == database).count();
            if of_database >= self.limits.per_database {
                return Err(Limited::Database(of_database));
            }
            *next += 1;
            let charge = Charge(*next);
            wakes.push_back(Wake { charge, at: Instant::now(), database: database.clone(), client });
            Ok(charge)
        })
    }

    /// Takes back a wake the controller did not take.
    pub fn refund(&self, charge: Charge) {
        self.with(|wakes, _| wakes.retain(|w| w.charge != charge));
    }

    /// A session of `database` authenticated: the wakes that brought it up were wanted, and count
    /// against nobody. Whether there were any.
    pub fn claim(&self, database: &Name) -> bool {
        self.with(|wakes, _| {
            let before = wakes.len();
            wakes.retain(|w| &w.database != database);
            wakes.len() < before
        })
    }
}

/// The address a client is counted by: an IPv4 address (also when mapped into IPv6) as is, an
/// IPv6 one by its /64 (what one subscriber or host gets).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !u128::from(u64::MAX)).into()),
        v4 => v4,
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

    const HOUR: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn each_database_and_each_client_gets_so_many_wakes_in_a_window() {
        let limiter = WakeLimiter::new(Limits { per_client: 3, per_database: 2, window: HOUR });
        let kate = name("kate-pg");
        limiter.charge(&kate, ip("192.0.2.1")).expect("first");
        limiter.charge(&kate, ip("192.0.2.2")).expect("second, from elsewhere");
        assert_eq!(limiter.charge(&kate, ip("192.0.2.3")), Err(Limited::Database(2)), "per database");
        // One address, many databases.
        for db in ["a", "b"] {
            limiter.charge(&name(db), ip("::ffff:192.0.2.1")).expect("the same client, mapped");
        }
        assert_eq!(limiter.charge(&name("c"), ip("192.0.2.1")), Err(Limited::Client(3)), "per client");
        // An IPv6 client counts by its /64.
        for (db, from) in [("d", "2001:db8:1:2::1"), ("e", "2001:db8:1:2::2"), ("f", "2001:db8:1:2:a::3")] {
            limiter.charge(&name(db), ip(from)).expect("under the limit");
        }
        assert_eq!(limiter.charge(&name("g"), ip("2001:db8:1:2:ffff::1")), Err(Limited::Client(3)));
        limiter.charge(&name("g"), ip("2001:db8:1:3::1")).expect("another /64");
        // The window slides.
        tokio::time::advance(HOUR).await;
        limiter.charge(&kate, ip("192.0.2.3")).expect("an hour later");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_claimed_by_a_session_or_not_taken_counts_against_nobody() {
        let limiter = WakeLimiter::new(Limits { per_client: 1, per_database: 1, window: HOUR });
        let kate = name("kate-pg");
        limiter.charge(&kate, ip("192.0.2.1")).expect("first");
        assert!(limiter.charge(&kate, ip("192.0.2.2")).is_err());
        assert!(limiter.claim(&kate));
        assert!(!limiter.claim(&kate), "nothing more to claim");
        let charge = limiter.charge(&kate, ip("192.0.2.1")).expect("claimed: counts no more");
        limiter.refund(charge);
        limiter.charge(&name("bob-pg"), ip("192.0.2.1")).expect("refunded: counts no more");
        assert_eq!(limiter.charge(&kate, ip("192.0.2.1")), Err(Limited::Client(1)));
    }
}
