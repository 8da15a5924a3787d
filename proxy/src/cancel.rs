//! Query cancellation through the proxy.
//!
//! Each session's `BackendKeyData` is replaced by a proxy-issued key of the same size (4 bytes in
//! protocol 3.0, up to 256 in 3.2). A CancelRequest carrying that key, over TLS or plaintext, is
//! looked up here and a CancelRequest with the real key is sent to the session's backend.
//! Unknown keys are dropped silently, as PostgreSQL does, so a guesser learns nothing, and each
//! client network may send only so many cancels (a burst of 20, then 10 per second): guessing a
//! key takes far more tries than that.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use governor::{DefaultKeyedRateLimiter, Quota};
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::{self, CancelKey};

/// A cancel has done its job once the backend has read it; bound the whole exchange.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Cancel requests a client network may send at once, and per second after that.
const CANCEL_BURST: NonZeroU32 = NonZeroU32::new(20).expect("non-zero");
const CANCELS_PER_SECOND: NonZeroU32 = NonZeroU32::new(10).expect("non-zero");
/// Past this many tracked networks, idle ones are forgotten.
const MAX_TRACKED_NETWORKS: usize = 10_000;

/// Proxy-issued keys of live sessions, by the issued process id.
pub struct CancelMap {
    sessions: DashMap<i32, Target>,
    /// Keyed by client network (/24 for IPv4, /64 for IPv6).
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Default for CancelMap {
    fn default() -> Self {
        let quota = Quota::per_second(CANCELS_PER_SECOND).allow_burst(CANCEL_BURST);
        Self { sessions: DashMap::new(), limiter: DefaultKeyedRateLimiter::keyed(quota) }
    }
}

/// The network a client address belongs to, for rate limiting: a /24 or a /64.
fn network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(v4.to_bits() & !0xff)),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => IpAddr::V6(Ipv6Addr::from(v6.to_bits() & !u128::from(u64::MAX))),
        },
    }
}

/// Where a cancel for one session must go.
#[derive(Clone)]
struct Target {
    /// The secret the proxy issued to the client.
    issued_secret: Bytes,
    backend: SocketAddr,
    /// The key the backend issued.
    backend_key: CancelKey,
}

/// Keeps a session's key registered; dropping it (the session ended) removes the key.
pub struct Registration {
    map: Weak<CancelMap>,
    pid: i32,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            map.sessions.remove(&self.pid);
        }
    }
}

/// What happened to a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Forwarded,
    UnknownKey,
    BackendFailed,
    RateLimited,
}

impl CancelOutcome {
    /// Label for `cancel_requests_total{outcome=…}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::UnknownKey => "unknown_key",
            Self::BackendFailed => "backend_failed",
            Self::RateLimited => "rate_limited",
        }
    }
}

impl CancelMap {
    /// Registers a session whose backend at `backend` issued `backend_key`; returns the
    /// registration and the key to give the client instead.
    pub fn register(self: &Arc<Self>, backend: SocketAddr, backend_key: CancelKey) -> (Registration, CancelKey) {
        let mut rng = rand::rng();
        let mut secret = vec![0u8; backend_key.secret.len()];
        rng.fill_bytes(&mut secret);
        let issued_secret = Bytes::from(secret);
        loop {
            let pid = rng.next_u32() as i32;
            if pid == 0 {
                continue;
            }
            if let Entry::Vacant(slot) = self.sessions.entry(pid) {
                slot.insert(Target { issued_secret: issued_secret.clone(), backend, backend_key });
                let registration = Registration { map: Arc::downgrade(self), pid };
                return (registration, CancelKey { pid, secret: issued_secret });
            }
        }
    }

    /// Finds the backend and real key for a proxy-issued `key` (secret compared in constant time).
    fn lookup(&self, key: &CancelKey) -> Option<(SocketAddr, CancelKey)> {
        let target = self.sessions.get(&key.pid)?;
        let matches = target.issued_secret.len() == key.secret.len()
            && bool::from(target.issued_secret.as_ref().ct_eq(key.secret.as_ref()));
        matches.then(|| (target.backend, target.backend_key.clone()))
    }

    /// Number of live sessions with a key.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session has a key.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Forwards a cancel request from `client` to the backend its key belongs to.
    pub async fn forward(&self, key: &CancelKey, client: IpAddr) -> CancelOutcome {
        if self.limiter.len() > MAX_TRACKED_NETWORKS {
            self.limiter.retain_recent();
        }
        if self.limiter.check_key(&network(client)).is_err() {
            return CancelOutcome::RateLimited;
        }
        let Some((backend, backend_key)) = self.lookup(key) else {
            return CancelOutcome::UnknownKey;
        };
        let send = async {
            let mut stream = TcpStream::connect(backend).await?;
            stream.write_all(&protocol::encode_cancel_request(&backend_key)).await?;
            // PostgreSQL closes the connection once it has acted on the request.
            let mut sink = [0u8; 64];
            while stream.read(&mut sink).await? > 0 {}
            std::io::Result::Ok(())
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, send).await {
            Ok(Ok(())) => CancelOutcome::Forwarded,
            Ok(Err(error)) => {
                tracing::warn!(%error, %backend, "cannot forward cancel request");
                CancelOutcome::BackendFailed
            }
            Err(_) => {
                tracing::warn!(%backend, "forwarding cancel request timed out");
                CancelOutcome::BackendFailed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i32, secret: &[u8]) -> CancelKey {
        CancelKey { pid, secret: Bytes::copy_from_slice(secret) }
    }

    #[test]
    fn issued_keys_match_the_backend_key_size_and_map_back() {
        let map = Arc::new(CancelMap::default());
        let backend: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
        for len in [4usize, 32, 256] {
            let real = key(7, &vec![9u8; len]);
            let (_reg, issued) = map.register(backend, real.clone());
            assert_eq!(issued.secret.len(), len);
            assert_ne!(issued, real);
            assert_eq!(map.lookup(&issued), Some((backend, real)));
        }
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(network(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(network(ip("::ffff:203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[tokio::test]
    async fn a_flood_of_cancels_from_one_network_is_limited_and_others_are_not() {
        let map = CancelMap::default();
        let unknown = key(1, &[0, 0, 0, 0]);
        let flooder = "198.51.100.1".parse().expect("ip");
        let mut outcomes = Vec::new();
        for _ in 0..(CANCEL_BURST.get() * 2) {
            outcomes.push(map.forward(&unknown, flooder).await);
        }
        assert_eq!(outcomes[0], CancelOutcome::UnknownKey);
        assert!(outcomes.contains(&CancelOutcome::RateLimited), "{outcomes:?}");
        let neighbour = "198.51.100.200".parse().expect("ip");
        assert_eq!(map.forward(&unknown, neighbour).await, CancelOutcome::RateLimited, "same /24");
        let other = "192.0.2.1".parse().expect("ip");
        assert_eq!(map.forward(&unknown, other).await, CancelOutcome::UnknownKey);
    }

    #[test]
    fn wrong_secrets_and_ended_sessions_do_not_match() {
        let map = Arc::new(CancelMap::default());
        let backend: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
        let (reg, issued) = map.register(backend, key(7, &[1, 2, 3, 4]));
        let mut wrong = issued.secret.to_vec();
        wrong[0] ^= 1;
        assert_eq!(map.lookup(&key(issued.pid, &wrong)), None);
        assert_eq!(map.lookup(&key(issued.pid, &issued.secret[..3])), None);
        drop(reg);
        assert_eq!(map.lookup(&issued), None);
        assert!(map.is_empty());
    }
}
