//! Query cancellation through the proxy.
//!
//! A session's `BackendKeyData` reaches the client with the backend's real process id (so
//! `pg_terminate_backend(backend_pid)`, `pg_stat_activity` and `Notify.pid` work as they do
//! directly) and a secret the proxy issues in place of the backend's, of the same length (4
//! bytes in protocol 3.0, up to 256 in 3.2). A CancelRequest carrying that pair, over TLS or
//! plaintext, is looked up here and a CancelRequest with the real key is sent to the session's
//! backend. Unknown keys are dropped silently, as PostgreSQL does, so a guesser learns nothing.
//!
//! Only unknown keys count against a client network's budget ([`GuessBudget`]: a burst of 20,
//! then 10 per second): guessing a key takes far more tries than that, while a client with valid
//! keys spends nothing, so a burst of cancels (a pool cancelling every session at once) all go
//! through. A network that has spent its budget on unknown keys is refused until it refills.
//! The odds: a guess must match a live session's process id and its 32 random secret bits. Even
//! knowing the process id, a network's budget buys 864,000 guesses a day: about one chance in
//! 5,000 a day of cancelling one given query.
//!
//! # Several replicas
//! A load balancer may deliver a cancel to any proxy replica. A replica that does not know a
//! key asks its peers (`--peers`, resolved periodically): it sends each the CancelRequest, and a
//! replica asked by a peer (recognised by the connection's source address, never by anything
//! the client sends) answers one byte: 1 if the key was its own and the cancel went to the
//! backend, 0 if not. No state is shared and the key needs no room for a replica's address, so
//! the client sees the backend's process id. Only the replica first asked spends the client's
//! budget, and only when no peer knew the key; a forged key makes the proxy contact its peers,
//! never anywhere else.

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
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::protocol::{self, CancelKey};

/// A cancel has done its job once the backend has read it; bound the whole exchange (asking
/// the peers included).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Unknown keys a client network may send at once, and per second after that.
const GUESS_BURST: f64 = 20.0;
const GUESSES_PER_SECOND: f64 = 10.0;
/// Past this many tracked networks, those with a full budget are forgotten.
const MAX_TRACKED_NETWORKS: usize = 10_000;

/// A peer's answer to a cancel it was asked about: the key was its own and went to the backend.
const PEER_FOUND: u8 = 1;
/// A peer's answer: not its key.
const PEER_NOT_FOUND: u8 = 0;

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

/// Where a key lives in the map: its process id and the first 4 bytes of its secret (issued
/// secrets are unique per process id on this replica).
type Slot = (i32, [u8; 4]);

fn slot(key: &CancelKey) -> Option<Slot> {
    Some((key.pid, key.secret.get(..4)?.try_into().ok()?))
}

/// Live sessions' keys on this replica, and the peers to ask about the others.
pub struct CancelMap {
    sessions: DashMap<Slot, Target>,
    /// Unknown keys, by client network (/24 for IPv4, /64 for IPv6).
    guesses: GuessBudget,
    /// This replica's address: the source of its questions to peers, and never asked itself.
    replica: Option<IpAddr>,
    /// The other replicas' addresses: the only places cancels are sent besides backends. A std
    /// lock: replaced wholesale now and then, read briefly.
    peers: std::sync::RwLock<HashSet<IpAddr>>,
    /// The port every replica accepts clients on.
    port: u16,
    /// Whether replicas expect a PROXY protocol header (then questions to peers carry one with
    /// the original client address).
    proxy_protocol: bool,
}

impl Default for CancelMap {
    fn default() -> Self {
        Self::new(None, 0, false)
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
struct Target {
    /// The secret the proxy issued to the client (its process id is the backend's).
    issued: Bytes,
    backend: SocketAddr,
    /// The key the backend issued.
    backend_key: CancelKey,
}

/// Keeps a session's key registered; dropping it (the session ended) removes the key.
pub struct Registration {
    map: Weak<CancelMap>,
    slot: Slot,
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
    /// Sent to the session's backend.
    Forwarded,
    /// Neither this replica nor any peer knew the key.
    UnknownKey,
    BackendFailed,
    RateLimited,
    /// A peer knew the key and sent the cancel to its backend.
    ToPeer,
    /// A peer asked about a key that is not this replica's.
    NotHere,
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
            Self::NotHere => "not_here",
        }
    }

    /// The byte that answers a peer's question.
    pub fn peer_answer(self) -> u8 {
        if self == Self::Forwarded { PEER_FOUND } else { PEER_NOT_FOUND }
    }
}

impl CancelMap {
    /// A map for a replica at `replica` (None: a lone proxy, or one that does not know its
    /// address) whose clients connect on `port`, after a PROXY protocol header when
    /// `proxy_protocol`.
    pub fn new(replica: Option<IpAddr>, port: u16, proxy_protocol: bool) -> Self {
        Self {
            sessions: DashMap::new(),
            guesses: GuessBudget::default(),
            replica,
            peers: std::sync::RwLock::new(HashSet::new()),
            port,
            proxy_protocol,
        }
    }

    /// Replaces the set of peer replicas (this replica's own address is left out).
    pub fn set_peers(&self, mut peers: HashSet<IpAddr>) {
        if let Some(own) = self.replica {
            peers.remove(&own);
        }
        *self.peers.write().unwrap_or_else(std::sync::PoisonError::into_inner) = peers;
    }

    /// Registers a session whose backend at `backend` issued `backend_key`; returns the
    /// registration and the key to give the client instead: the same process id, a random
    /// secret of the same length.
    pub fn register(self: &Arc<Self>, backend: SocketAddr, backend_key: CancelKey) -> (Registration, CancelKey) {
        let mut rng = rand::rng();
        loop {
            let mut secret = vec![0u8; backend_key.secret.len()];
            rng.fill_bytes(&mut secret);
            let issued = CancelKey { pid: backend_key.pid, secret: Bytes::from(secret) };
            let Some(slot) = slot(&issued) else { unreachable!("cancel keys are at least 4 bytes") };
            if let Entry::Vacant(vacant) = self.sessions.entry(slot) {
                vacant.insert(Target { issued: issued.secret.clone(), backend, backend_key });
                return (Registration { map: Arc::downgrade(self), slot }, issued);
            }
        }
    }

    /// Finds the backend and real key for a proxy-issued `key` (compared in constant time).
    fn lookup(&self, key: &CancelKey) -> Option<(SocketAddr, CancelKey)> {
        let target = self.sessions.get(&slot(key)?)?;
        let matches =
            target.issued.len() == key.secret.len() && bool::from(target.issued.as_ref().ct_eq(key.secret.as_ref()));
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

    /// Whether a connection from `source` (its TCP peer address, not a PROXY header's) comes
    /// from another replica.
    pub fn is_peer(&self, source: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as IPv4-mapped IPv6 addresses.
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            IpAddr::V4(_) => source,
        };
        self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner).contains(&source)
    }

    /// Acts on a cancel request from `client`: sends the real key to the session's backend, or,
    /// when the key is not this replica's and the request is not itself a peer's question
    /// (`asked_by_peer`), asks the peers. Unknown keys spend the client network's budget;
    /// valid ones spend nothing.
    pub async fn forward(&self, key: &CancelKey, client: SocketAddr, asked_by_peer: bool) -> CancelOutcome {
        let network = network(client.ip());
        if !asked_by_peer && !self.guesses.allows(network) {
            return CancelOutcome::RateLimited;
        }
        if let Some((backend, backend_key)) = self.lookup(key) {
            return match send_cancel(backend, &[], &backend_key).await {
                Ok(()) => CancelOutcome::Forwarded,
                Err(error) => {
                    tracing::warn!(%error, %backend, "cannot forward cancel request");
                    CancelOutcome::BackendFailed
                }
            };
        }
        if asked_by_peer {
            return CancelOutcome::NotHere;
        }
        if self.ask_peers(key, client).await {
            return CancelOutcome::ToPeer;
        }
        self.guesses.spend(network);
        CancelOutcome::UnknownKey
    }

    /// Sends the cancel request to every peer at once; true if one of them knew the key.
    async fn ask_peers(&self, key: &CancelKey, client: SocketAddr) -> bool {
        let peers: Vec<IpAddr> =
            self.peers.read().unwrap_or_else(std::sync::PoisonError::into_inner).iter().copied().collect();
        let mut questions = JoinSet::new();
        for peer in peers {
            let to = SocketAddr::from((peer, self.port));
            let mut request = if self.proxy_protocol { protocol::proxy_v2_header(client, to) } else { Vec::new() };
            request.extend_from_slice(&protocol::encode_cancel_request(key));
            let from = self.replica;
            questions.spawn(async move {
                let answer = tokio::time::timeout(FORWARD_TIMEOUT, ask(from, to, &request)).await;
                match answer {
                    Ok(Ok(answer)) => answer == PEER_FOUND,
                    Ok(Err(error)) => {
                        tracing::warn!(%error, %peer, "cannot ask a peer about a cancel request");
                        false
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "a peer did not answer about a cancel request in time");
                        false
                    }
                }
            });
        }
        let mut found = false;
        while let Some(answer) = questions.join_next().await {
            found |= answer.unwrap_or(false);
        }
        found
    }
}

/// Asks the replica at `to`, from this replica's own address when known, about a cancel.
async fn ask(from: Option<IpAddr>, to: SocketAddr, request: &[u8]) -> std::io::Result<u8> {
    let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(own) = from.filter(|own| own.is_ipv4() == to.is_ipv4()) {
        socket.bind(SocketAddr::from((own, 0)))?;
    }
    let mut stream = socket.connect(to).await?;
    stream.write_all(request).await?;
    stream.read_u8().await
}

/// Sends a plaintext CancelRequest for `key` to `to` and waits until it is acted on (the
/// server closes the connection), within [`FORWARD_TIMEOUT`].
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
                Ok(addrs) => peers.extend(addrs.map(|a| a.ip())),
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
    fn issued_keys_keep_the_backend_pid_and_map_back() {
        let map = Arc::new(CancelMap::default());
        let backend: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
        for len in [4usize, 32, 256] {
            let real = key(7, &vec![9u8; len]);
            let (_reg, issued) = map.register(backend, real.clone());
            assert_eq!((issued.pid, issued.secret.len()), (7, len), "the real pid, a secret of the same size");
            assert_ne!(issued.secret, real.secret);
            assert_eq!(map.lookup(&issued), Some((backend, real)));
        }
    }

    #[test]
    fn sessions_with_the_same_pid_on_different_backends_get_distinct_keys() {
        let map = Arc::new(CancelMap::default());
        let mut regs = Vec::new();
        for port in 0..1000u16 {
            let backend = SocketAddr::from(([127, 0, 0, 1], 10_000 + port));
            let (reg, issued) = map.register(backend, key(4242, &[1, 2, 3, 4]));
            assert_eq!(map.lookup(&issued).map(|(b, _)| b), Some(backend));
            regs.push(reg);
        }
        assert_eq!(map.len(), 1000, "every key has its own slot");
        drop(regs);
        assert!(map.is_empty());
    }

    #[tokio::test]
    async fn unknown_keys_are_asked_of_peers_only() {
        // No peers: nobody is contacted, the key is unknown.
        let map = CancelMap::new(Some(Ipv4Addr::new(10, 0, 0, 1).into()), 5432, false);
        let client: SocketAddr = "198.51.100.7:1".parse().expect("addr");
        assert_eq!(map.forward(&key(99, &[1, 2, 3, 4]), client, false).await, CancelOutcome::UnknownKey);
        // A peer's question about a key that is not ours is answered, never passed on.
        map.set_peers(HashSet::from([Ipv4Addr::new(10, 0, 0, 1).into(), Ipv4Addr::new(10, 0, 0, 2).into()]));
        assert!(map.is_peer("10.0.0.2".parse().expect("ip")) && map.is_peer("::ffff:10.0.0.2".parse().expect("ip")));
        assert!(!map.is_peer("10.0.0.1".parse().expect("ip")), "a replica is not its own peer");
        assert!(!map.is_peer(client.ip()));
        let outcome = map.forward(&key(99, &[1, 2, 3, 4]), client, true).await;
        assert_eq!((outcome, outcome.peer_answer()), (CancelOutcome::NotHere, PEER_NOT_FOUND));
    }

    /// IPv6-only clusters: peers, their questions and this replica's address are IPv6 too.
    #[tokio::test]
    async fn peers_may_be_ipv6() {
        let peer = tokio::net::TcpListener::bind("[::1]:0").await.expect("IPv6 loopback");
        let port = peer.local_addr().expect("addr").port();
        let answering = tokio::spawn(async move {
            let (mut question, from) = peer.accept().await.expect("accept");
            let mut request = [0_u8; 16];
            question.read_exact(&mut request).await.expect("the cancel request");
            question.write_all(&[PEER_FOUND]).await.expect("answer");
            from.ip()
        });
        let replica = CancelMap::new(Some(Ipv6Addr::LOCALHOST.into()), port, false);
        replica.set_peers(HashSet::from([Ipv6Addr::LOCALHOST.into(), "fd00::2".parse().expect("ip")]));
        assert!(replica.is_peer("fd00::2".parse().expect("ip")), "an IPv6 peer is recognised");
        assert!(!replica.is_peer(Ipv6Addr::LOCALHOST.into()), "its own IPv6 address is left out");
        // Another replica asks the peer on ::1 over IPv6, which knows the key.
        let map = CancelMap::new(None, port, false);
        map.set_peers(HashSet::from([Ipv6Addr::LOCALHOST.into()]));
        let client: SocketAddr = "[2001:db8::7]:1".parse().expect("addr");
        assert_eq!(map.forward(&key(99, &[1, 2, 3, 4]), client, false).await, CancelOutcome::ToPeer);
        assert_eq!(answering.await.expect("answered"), IpAddr::from(Ipv6Addr::LOCALHOST));
    }

    /// A peer that accepts the question and never answers costs the asker at most
    /// [`FORWARD_TIMEOUT`], and the key counts as unknown.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_peer_is_given_up_on() {
        let stalled = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = stalled.local_addr().expect("addr").port();
        let held = tokio::spawn(async move {
            let (connection, _) = stalled.accept().await.expect("accept");
            std::future::pending::<()>().await;
            drop(connection);
        });
        let map = CancelMap::new(None, port, false);
        map.set_peers(HashSet::from([Ipv4Addr::LOCALHOST.into()]));
        let started = Instant::now();
        let client: SocketAddr = "198.51.100.7:1".parse().expect("addr");
        assert_eq!(map.forward(&key(99, &[1, 2, 3, 4]), client, false).await, CancelOutcome::UnknownKey);
        assert!(started.elapsed() >= FORWARD_TIMEOUT, "waited for the peer until the timeout");
        held.abort();
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
            assert_eq!(map.forward(issued, client, false).await, CancelOutcome::BackendFailed, "40 valid keys at once");
        }
        let unknown = key(1, &[0, 0, 0, 0]);
        let mut outcomes = Vec::new();
        for _ in 0..(GUESS_BURST as usize + 5) {
            outcomes.push(map.forward(&unknown, client, false).await);
        }
        assert_eq!(outcomes.iter().filter(|o| **o == CancelOutcome::UnknownKey).count(), GUESS_BURST as usize);
        assert_eq!(outcomes.last(), Some(&CancelOutcome::RateLimited), "{outcomes:?}");
        let neighbour = "198.51.100.200:1".parse().expect("addr");
        assert_eq!(map.forward(&unknown, neighbour, false).await, CancelOutcome::RateLimited, "same /24");
        let other = "192.0.2.1:1".parse().expect("addr");
        assert_eq!(map.forward(&unknown, other, false).await, CancelOutcome::UnknownKey);
        // The budget refills: a tenth of a second buys one more try.
        tokio::time::advance(std::time::Duration::from_millis(100)).await;
        assert_eq!(map.forward(&unknown, client, false).await, CancelOutcome::UnknownKey);
        assert_eq!(map.forward(&unknown, client, false).await, CancelOutcome::RateLimited);
    }

    #[test]
    fn wrong_secrets_and_ended_sessions_do_not_match() {
        let map = Arc::new(CancelMap::default());
        let backend: SocketAddr = "127.0.0.1:5432".parse().expect("addr");
        let (reg, issued) = map.register(backend, key(7, &[1, 2, 3, 4]));
        assert_eq!(map.lookup(&key(8, &issued.secret)), None, "another pid");
        let mut wrong = issued.secret.to_vec();
        wrong[0] ^= 1;
        assert_eq!(map.lookup(&key(issued.pid, &wrong)), None);
        assert_eq!(map.lookup(&key(issued.pid, &issued.secret[..3])), None);
        drop(reg);
        assert_eq!(map.lookup(&issued), None);
        assert!(map.is_empty());
    }
}
