//! Sessions that never authenticate cannot hold a database's connection slots: at most so many
//! may be authenticating at once, per client address and per database; more wait for a place,
//! then get FATAL 53300, and authenticated sessions count for nothing.

use std::time::Duration;

use devdb_proxy::admission::Limits;

use crate::common::fakes::FakeBackend;
use crate::common::inproc::InProc;
use crate::common::*;

#[tokio::test]
async fn three_hundred_unauthenticated_connections_cannot_lock_the_owner_out() {
    let alpha = FakeBackend::start("alpha").await;
    // The default limits; refused sessions wait a moment rather than the default 10 s.
    let proxy = InProc::start(vec![alpha.route()], |c| c.authenticating.wait = Duration::from_millis(300));
    // One abuser address, 300 sessions that never authenticate, all at once.
    let attempts: Vec<_> = (0..300).map(|_| proxy.unauthenticated([127, 0, 0, 2], "alpha")).collect();
    let results = futures_util::future::join_all(attempts).await;
    let held: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(held.len(), 16, "the default per-client limit");
    for refusal in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(refusal.code, "53300");
        assert!(refusal.message.contains("from 127.0.0.2 are still authenticating"), "{}", refusal.message);
        assert!(refusal.hint.is_some());
    }
    // The owner, from another address, gets in and works.
    let client = proxy.connect("alpha").await.expect("the owner connects");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
    drop((results, client));
    proxy.assert_metric("devdb_proxy_handshake_errors_total{reason=\"too_many_authenticating_client\"} 284").await;
}

#[tokio::test]
async fn sessions_count_against_the_limits_only_until_they_authenticate() {
    let alpha = FakeBackend::start("alpha").await;
    let proxy = InProc::start(vec![alpha.route()], |c| {
        c.authenticating = Limits { per_database: 4, per_client: 2, wait: Duration::from_secs(2) };
    });
    let from = |last: u8| [127, 0, 0, last];
    let a = [proxy.unauthenticated(from(2), "alpha").await, proxy.unauthenticated(from(2), "alpha").await];
    let b = [proxy.unauthenticated(from(3), "alpha").await, proxy.unauthenticated(from(3), "alpha").await];
    assert!(a.iter().chain(&b).all(Result::is_ok));
    // The held sessions wait for a password and the refused ones never reach the backend: their
    // wait for a place runs on paused time.
    tokio::time::pause();
    let refused = proxy.unauthenticated(from(2), "alpha").await.expect_err("per client");
    assert!(refused.message.contains("from 127.0.0.2") && refused.message.contains("at most 2"), "{}", refused.message);
    let waited = tokio::time::Instant::now();
    let refused = proxy.unauthenticated(from(4), "alpha").await.expect_err("per database");
    assert!(waited.elapsed() >= Duration::from_secs(2), "refused once the wait for a place is over");
    assert_eq!(refused.code, "53300");
    assert!(refused.message.contains("database instance \"alpha\"") && refused.message.contains("at most 4"));
    let err = db_error(&crate::common::refused(proxy.connect("alpha").await));
    assert_eq!(err.0, "53300", "a real client is refused the same way: {}", err.1);
    tokio::time::resume();

    // Places come back when the sessions go, a burst waits for them rather than failing, and
    // authenticated sessions hold none: eight at once from one address, over a limit of two.
    drop((a, b));
    let proxy = InProc::start(vec![alpha.route()], |c| {
        c.authenticating = Limits { per_database: 4, per_client: 2, wait: Duration::from_secs(30) };
    });
    let burst = (0..8).map(|_| proxy.connect("alpha"));
    let clients: Vec<_> =
        futures_util::future::join_all(burst).await.into_iter().map(|c| c.expect("admitted")).collect();
    for client in &clients {
        assert_eq!(query_one(client, "SELECT 1").await, "1");
    }
}
