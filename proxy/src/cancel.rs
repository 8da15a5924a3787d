//! Query cancellation through the proxy.
//!
//! Each session's `BackendKeyData` is replaced by a proxy-issued key of the same size (4 bytes in
//! protocol 3.0, up to 256 in 3.2). A CancelRequest carrying that key, over TLS or plaintext, is
//! looked up here and a CancelRequest with the real key is sent to the session's backend.
//! Unknown keys are dropped silently, as PostgreSQL does, so a guesser learns nothing.
//!
//! Only unknown keys count against a client network's budget ([`GuessBudget`]: a burst of 20,
//! then 10 per second): guessing a key takes far more tries than that, while a client with valid
//! keys spends nothing, so a burst of cancels (a pool cancelling every session at once) all go
//! through. A network that has spent its budget on unknown keys is refused until it refills.
//!
//! # Several replicas
//! A load balancer may deliver a cancel to any proxy replica. With `--replica-addr`, a replica
//! issues 4-byte (protocol 3.0) keys whose process id *is* its own IPv4 address and whose secret
//! is random and unique on it; a replica receiving a key of another replica forwards the
//! CancelRequest unchanged to that address, which then acts on it. No state is shared. Forwarding
//! goes only to current peers (`--peers`, resolved periodically), so a forged key cannot make
//! the proxy connect anywhere else.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use rand::RngCore;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::protocol::{self, CancelKey};

/// A cancel has done its job once the backend has read it; bound the whole exchange.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Unknown keys a client network may send at once, and per second after that.
const GUESS_BURST: f64 = 20.0;
const GUESSES_PER_SECOND: f64 = 10.0;
/// Past this many tracked networks, those with a full budget are forgotten.
const MAX_TRACKED_NETWORKS: usize = 10_000;

/// What each client network may still spend on unknown keys: a token bucket per network.
#[derive(Default)]
pub struct GuessBudget {
    networks: DashMap<IpAddr, (f64, Instant)>,
}

impl GuessBudget {
    /// The tokens of `network` now (a network never seen has a full budget).
    fn refilled(entry: (f64, Instant), now: Instant) -> f64 {
        let (tokens, at) = entry;
        (tokens + now.saturating_duration_since(at).as_secs_f64() * GUESSES_PER_SECOND).min(GUESS_BURST)
    }

    /// Whether `network` has budget left (spending nothing).
    pub fn allows(&self, network: IpAddr) -> bool {
        self.networks.get(&network).is_none_or(|entry| Self::refilled(*entry, Instant::now()) >= 1.0)
    }

    /// Spends one unknown key of `network`'s budget.
    pub fn spend(&self, network: IpAddr) {
        let now = Instant::now();
        if self.networks.len() > MAX_TRACKED_NETWORKS {
            self.networks.retain(|_, entry| Self::refilled(*entry, now) < GUESS_BURST);
        }
        let mut entry = self.networks.entry(network).or_insert((GUESS_BURST, now));
        *entry = ((Self::refilled(*entry, now) - 1.0).max(0.0), now);
    }
}

/// Proxy-issued keys of live sessions, by slot (see [`CancelMap::slot`]).
pub struct CancelMap {
    sessions: DashMap<u64, Target>,
    /// Unknown keys, by client network (/24 for IPv4, /64 for IPv6).
    guesses: GuessBudget,
    /// This replica's address, encoded in the keys it issues; `None` for a lone proxy.
    replica: Option<Ipv4Addr>,
    /// The other replicas' addresses: the only places cancels are forwarded to. A std lock:
    /// replaced wholesale now and then, read briefly.
    peers: std::sync::RwLock<HashSet<Ipv4Addr>>,
    /// The port every replica accepts clients on.
    port: u16,
    /// Whether replicas expect a PROXY protocol header (then forwarded cancels carry one with
    /// the original client address).
    proxy_protocol: bool,
}

impl Default for CancelMap {
    fn default() -> Self {
        Self::new(None, 0, false)
    }
}

/// The process id a replica puts in the keys it issues: its IPv4 address.
fn replica_pid(ip: Ipv4Addr) -> i32 {
    i32::from_be_bytes(ip.octets())
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
    /// The key the proxy issued to the client.
    issued: CancelKey,
    backend: SocketAddr,
    /// The key the backend issued.
    backend_key: CancelKey,
}

/// Keeps a session's key registered; dropping it (the session ended) removes the key.
pub struct Registration {
    map: Weak<CancelMap>,
    slot: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(map) = self.map.upgrade() {
            map.sessions.remove(&self.slot);
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
    /// Sent on to the replica that holds the session.
    ToPeer,
    /// The key names a replica that is not a known peer: dropped.
    NotAPeer,
}

impl CancelOutcome {
    /// Label for `cancel_requests_total{outcome=…}`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Forwarded => "forwarded",
            Self::UnknownKey => "unknown_key",
            Self::BackendFailed => "backend_failed",
            Self::RateLimited => "rate_limited",
            Self::ToPeer => "to_peer",
            Self::NotAPeer => "not_a_peer",
        }
    }
}

impl CancelMap {
    /// A map for a replica at `replica` (None: a lone proxy) whose clients connect on `port`,
    /// after a PROXY protocol header when `proxy_protocol`.
    pub fn new(replica: Option<Ipv4Addr>, port: u16, proxy_protocol: bool) -> Self {
        Self {
            sessions: DashMap::new(),
            guesses: GuessBudget::default(),
            replica,
            peers: std::sync::RwLock::new(HashSet::new()),
            port,
            proxy_protocol,
        }
    }

    /// Replaces the set of peer replicas.
    pub fn set_peers(&self, peers: HashSet<Ipv4Addr>) {
        *self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner) = peers;
    }

    /// Where a key lives in the map: by its secret for this replica's own 4-byte keys (they all
    /// share the replica's address as process id), else by its process id.
    fn slot(&self, key: &CancelKey) -> u64 {
        match (self.replica, <[u8; 4]>::try_from(key.secret.as_ref())) {
            (Some(ip), Ok(secret)) if key.pid == replica_pid(ip) => (1 << 32) | u64::from(u32::from_be_bytes(secret)),
            _ => u64::from(key.pid as u32),
        }
    }

    /// Registers a session whose backend at `backend` issued `backend_key`; returns the
    /// registration and the key to give the client instead (same size as the backend's).
    pub fn register(self: &Arc<Self>, backend: SocketAddr, backend_key: CancelKey) -> (Registration, CancelKey) {
        let mut rng = rand::rng();
        loop {
            let mut secret = vec![0u8; backend_key.secret.len()];
            rng.fill_bytes(&mut secret);
            let pid = match self.replica {
                Some(ip) if secret.len() == 4 => replica_pid(ip),
                _ => rng.next_u32() as i32,
            };
            let issued = CancelKey { pid, secret: Bytes::from(secret) };
            if pid == 0 {
                continue;
            }
            let slot = self.slot(&issued);
            if let Entry::Vacant(vacant) = self.sessions.entry(slot) {
                vacant.insert(Target { issued: issued.clone(), backend, backend_key });
                return (Registration { map: Arc::downgrade(self), slot }, issued);
            }
        }
    }

    /// Finds the backend and real key for a proxy-issued `key` (compared in constant time).
    fn lookup(&self, key: &CancelKey) -> Option<(SocketAddr, CancelKey)> {
        let target = self.sessions.get(&self.slot(key))?;
        let issued = &target.issued;
        let matches = issued.pid == key.pid
            && issued.secret.len() == key.secret.len()
            && bool::from(issued.secret.as_ref().ct_eq(key.secret.as_ref()));
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

    fn is_peer(&self, ip: IpAddr) -> bool {
        let IpAddr::V4(v4) = ip else { return false };
        self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&v4)
    }

    /// Acts on a cancel request from `client`: sends the real key to the session's backend, or
    /// the request unchanged to the replica that issued the key. Unknown keys spend the client
    /// network's budget; valid ones spend nothing.
    pub async fn forward(&self, key: &CancelKey, client: SocketAddr) -> CancelOutcome {
        let network = network(client.ip());
        // A cancel a peer forwarded was judged there already; a peer's own key is judged by it.
        let from_peer = self.is_peer(client.ip());
        if !from_peer && !self.guesses.allows(network) {
            return CancelOutcome::RateLimited;
        }
        if let Some(own) = self.replica
            && key.secret.len() == 4
            && key.pid != replica_pid(own)
        {
            let peer = Ipv4Addr::from(key.pid as u32);
            if !self.is_peer(IpAddr::V4(peer)) {
                self.guesses.spend(network);
                return CancelOutcome::NotAPeer;
            }
            let to = SocketAddr::from((peer, self.port));
            let header = if self.proxy_protocol { proxy_header(client, to) } else { Vec::new() };
            return match send_cancel(to, &header, key).await {
                Ok(()) => CancelOutcome::ToPeer,
                Err(error) => {
                    tracing::warn!(%error, %peer, "cannot forward cancel request to peer");
                    CancelOutcome::BackendFailed
                }
            };
        }
        let Some((backend, backend_key)) = self.lookup(key) else {
            if !from_peer {
                self.guesses.spend(network);
            }
            return CancelOutcome::UnknownKey;
        };
        match send_cancel(backend, &[], &backend_key).await {
            Ok(()) => CancelOutcome::Forwarded,
            Err(error) => {
                tracing::warn!(%error, %backend, "cannot forward cancel request");
                CancelOutcome::BackendFailed
            }
        }
    }
}

/// A PROXY protocol v2 header naming `client` as the source (empty if it cannot be built).
fn proxy_header(client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    use ppp::v2::{Builder, Command, Protocol, Version};
    let addresses = ppp::v2::Addresses::from((client, to));
    Builder::with_addresses(Version::Two | Command::Proxy, Protocol::Stream, addresses).build().unwrap_or_default()
}

/// Sends `prefix` (a PROXY header, or nothing) and a plaintext CancelRequest for `key` to `to`,
/// and waits until it is acted on (the server closes the connection), within [`FORWARD_TIMEOUT`].
async fn send_cancel(to: SocketAddr, prefix: &[u8], key: &CancelKey) -> std::io::Result<()> {
    let send = async {
        let mut stream = TcpStream::connect(to).await?;
        let mut request = prefix.to_vec();
        request.extend_from_slice(&protocol::encode_cancel_request(key));
        stream.write_all(&request).await?;
        let mut sink = [0u8; 64];
        while stream.read(&mut sink).await? > 0 {}
        std::io::Result::Ok(())
    };
    tokio::time::timeout(FORWARD_TIMEOUT, send)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))
}

/// Keeps the peer set current by resolving `names` (host names or addresses, e.g. a headless
/// Service) every `every` until `shutdown`.
pub async fn follow_peers(
    map: Arc<CancelMap>,
    names: Vec<String>,
    every: Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let mut peers = HashSet::new();
        for name in &names {
            match tokio::net::lookup_host((name.as_str(), map.port)).await {
                Ok(addrs) => peers.extend(addrs.filter_map(|a| match a.ip() {
                    IpAddr::V4(v4) => Some(v4),
                    IpAddr::V6(_) => None,
                })),
                Err(error) => tracing::warn!(%name, %error, "cannot resolve peers"),
            }
        }
        tracing::debug!(peers = peers.len(), "peers resolved");
        map.set_peers(peers);
        if shutdown.run_until_cancelled(tokio::time::sleep(every)).await.is_none() {
            return;
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
    fn a_replica_puts_its_address_in_its_keys_and_they_stay_unique() {
        let map = Arc::new(CancelMap::new(Some(Ipv4Addr::new(10, 1, 2, 3)), 5432, false));
        let backend: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
        let mut regs = Vec::new();
        for _ in 0..1000 {
            let (reg, issued) = map.register(backend, key(7, &[1, 2, 3, 4]));
            assert_eq!(issued.pid, replica_pid(Ipv4Addr::new(10, 1, 2, 3)));
            assert_eq!(map.lookup(&issued).map(|(_, k)| k.pid), Some(7));
            regs.push(reg);
        }
        assert_eq!(map.len(), 1000, "every key has its own slot");
        let (_reg, long) = map.register(backend, key(7, &[9; 32]));
        assert_ne!(long.pid, replica_pid(Ipv4Addr::new(10, 1, 2, 3)), "3.2 keys are not forwarded by address");
        drop(regs);
        assert_eq!(map.len(), 1);
    }

    #[tokio::test]
    async fn keys_of_unknown_replicas_are_not_forwarded_anywhere() {
        let map = CancelMap::new(Some(Ipv4Addr::new(10, 0, 0, 1)), 5432, false);
        map.set_peers(HashSet::from([Ipv4Addr::new(10, 0, 0, 2)]));
        let forged = key(replica_pid(Ipv4Addr::new(192, 0, 2, 99)), &[1, 2, 3, 4]);
        assert_eq!(map.forward(&forged, "198.51.100.7:1".parse().expect("addr")).await, CancelOutcome::NotAPeer);
    }

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(network(ip("203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(network(ip("::ffff:203.0.113.77")), ip("203.0.113.0"));
        assert_eq!(network(ip("2001:db8:1:2:3:4:5:6")), ip("2001:db8:1:2::"));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_keys_spend_a_networks_budget_and_valid_keys_spend_nothing() {
        let map = Arc::new(CancelMap::default());
        // A backend that refuses at once: a valid key's cancel is attempted (and fails), never limited.
        let backend: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let client: SocketAddr = "198.51.100.1:1".parse().expect("addr");
        let registrations: Vec<_> = (0..40).map(|i| map.register(backend, key(i, &[1, 2, 3, 4]))).collect();
        for (_, issued) in &registrations {
            assert_eq!(map.forward(issued, client).await, CancelOutcome::BackendFailed, "40 valid keys at once");
        }
        let unknown = key(1, &[0, 0, 0, 0]);
        let mut outcomes = Vec::new();
        for _ in 0..(GUESS_BURST as usize + 5) {
            outcomes.push(map.forward(&unknown, client).await);
        }
        assert_eq!(outcomes.iter().filter(|o| **o == CancelOutcome::UnknownKey).count(), GUESS_BURST as usize);
        assert_eq!(outcomes.last(), Some(&CancelOutcome::RateLimited), "{outcomes:?}");
        let neighbour = "198.51.100.200:1".parse().expect("addr");
        assert_eq!(map.forward(&unknown, neighbour).await, CancelOutcome::RateLimited, "same /24");
        let other = "192.0.2.1:1".parse().expect("addr");
        assert_eq!(map.forward(&unknown, other).await, CancelOutcome::UnknownKey);
        // The budget refills: a tenth of a second buys one more try.
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert_eq!(map.forward(&unknown, client).await, CancelOutcome::UnknownKey);
        assert_eq!(map.forward(&unknown, client).await, CancelOutcome::RateLimited);
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
