//! Waking asleep databases, against a controller the test plays (its route feed, the starts the
//! proxy asks for, the activity it reports) and fake backends that ask for the password: clients
//! that never authenticate (a wrong password, or none) wake a database only as often as the
//! limits allow, keep nothing up, leave no activity, and learn nothing of its owner.

use std::time::Duration;

use devdb_shared::RouteState;

use crate::common::fakes::{FakeBackend, FakeController};
use crate::common::inproc::InProc;
use crate::common::*;

/// A proxy following `fake`, with these wake limits.
fn proxy(fake: &FakeController, per_client: usize, per_database: usize) -> InProc {
    InProc::following(fake, |c| {
        c.wake_timeout = Duration::from_secs(5);
        c.wakes = devdb_proxy::wake::Limits { per_client, per_database, window: Duration::from_secs(3600) };
    })
}

/// The same with a wrong password (tokio-postgres): the server's refusal or the proxy's.
async fn wrong_password(proxy: &InProc, name: &str) -> (String, String) {
    let mut config = proxy.config(name);
    config.password("not-the-password");
    db_error(&refused(proxy.connect_with(&config, proxy.tls()).await))
}

#[tokio::test]
async fn a_flood_of_clients_that_never_authenticate_wakes_a_database_only_as_the_limits_allow() {
    let alpha = FakeBackend::start("alpha").await;
    let fake = FakeController::start(&["alpha"], &alpha.addr()).await;
    let proxy = proxy(&fake, 5, 1);

    // The flood: thirty clients at once, from eleven addresses, without the password or with a
    // wrong one. One wake (a proxy's: `wake=true`); each client meets the server's password
    // request, and none gets in.
    let held: Vec<_> = (0..20).map(|i| proxy.unauthenticated([127, 0, 0, 2 + i % 10], "alpha")).collect();
    let wrong: Vec<_> = (0..10).map(|_| wrong_password(&proxy, "alpha")).collect();
    let (held, wrong) = tokio::join!(futures_util::future::join_all(held), futures_util::future::join_all(wrong));
    let held: Vec<_> = held.into_iter().map(|r| r.unwrap_or_else(|e| panic!("refused: {e:?}"))).collect();
    for (code, message) in &wrong {
        assert_eq!(code, "28P01", "the server's own refusal: {message}");
    }
    assert_eq!(fake.starts("alpha"), [true], "one wake, marked as a proxy's");

    // Held open without the password, they count for nothing: reported neither open nor active.
    let before = fake.reports().len();
    for report in fake.reports_after(before).await.iter().skip(before) {
        assert_eq!((&report["open"], &report["active"]), (&serde_json::json!([]), &serde_json::json!([])), "{report}");
    }
    drop(held);

    // It goes back to sleep (the controller stops it); the next flood is over the database's
    // limit (one wake nobody used): no more wakes, and one answer for all.
    fake.set("alpha", RouteState::Asleep);
    proxy.wait_for("alpha", RouteState::Asleep).await;
    let again: Vec<_> = (0..10).map(|i| proxy.unauthenticated([127, 0, 0, 30 + i], "alpha")).collect();
    for refusal in futures_util::future::join_all(again).await {
        let refusal = refusal.expect_err("not woken");
        assert_eq!(refusal.code, "57P03");
        assert_eq!(refusal.message, "database instance \"alpha\" is asleep and cannot be woken now");
    }
    let (code, message) = wrong_password(&proxy, "alpha").await;
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("57P03", "database instance \"alpha\" is asleep and cannot be woken now")
    );
    assert_eq!(fake.starts("alpha").len(), 1, "still one wake");
    proxy.assert_metric("devdb_proxy_handshake_errors_total{reason=\"wake_limited\"} 11").await;
}

#[tokio::test]
async fn one_address_wakes_so_many_databases_a_session_claims_its_wake_and_a_refusal_says_nothing() {
    let backend = FakeBackend::start("alpha").await;
    let names = ["one", "two", "three", "four", "kate-pg"];
    let fake = FakeController::start(&names, &backend.addr()).await;
    let proxy = proxy(&fake, 2, 1);

    // One address wakes two databases, not a third; another address can.
    for name in ["one", "two"] {
        assert!(proxy.unauthenticated([127, 0, 0, 2], name).await.is_ok(), "{name}");
    }
    let refusal = proxy.unauthenticated([127, 0, 0, 2], "three").await.expect_err("per client");
    assert_eq!(refusal.code, "57P03");
    assert!(fake.starts("three").is_empty());
    assert!(proxy.unauthenticated([127, 0, 0, 3], "three").await.is_ok());

    // A session that authenticates shows the wake was wanted: it counts no more.
    let client = proxy.connect("four").await.expect("the owner, with the password, wakes it");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
    drop(client);
    fake.set("four", RouteState::Asleep);
    proxy.wait_for("four", RouteState::Asleep).await;
    let client = proxy.connect("four").await.expect("woken again: the first wake was claimed");
    drop(client);
    assert_eq!(fake.starts("four"), [true, true]);
    // It was reported as activity; the flood's databases never were.
    let so_far = fake.reports().len();
    let reports = fake.reports_after(so_far).await;
    let named =
        |key: &str, name: &str| reports.iter().any(|r| r[key].as_array().is_some_and(|a| a.iter().any(|n| n == name)));
    assert!(named("active", "four"));
    for name in ["one", "two", "three"] {
        assert!(!named("active", name) && !named("open", name), "{name} never had a session");
    }

    // The controller refuses a wake (its owner's running quota): the client is told nothing of
    // the owner, the quota or its use; the same answer as over a limit.
    fake.over_quota.lock().expect("lock").insert("kate-pg".into());
    let refusal = proxy.unauthenticated([127, 0, 0, 4], "kate-pg").await.expect_err("refused");
    assert_eq!(
        (refusal.code.as_str(), refusal.message.as_str()),
        ("57P03", "database instance \"kate-pg\" is asleep and cannot be woken now")
    );
    let shown = format!("{refusal:?}");
    for secret in ["kate has", "quota", "3 of 3"] {
        assert!(!shown.contains(secret), "{secret}: {shown}");
    }
    // A flood at it does not become a flood of requests to the controller: refused moments ago,
    // it is not asked again for a while.
    let again: Vec<_> = (0..10).map(|i| proxy.unauthenticated([127, 0, 0, 40 + i], "kate-pg")).collect();
    for refusal in futures_util::future::join_all(again).await {
        assert_eq!(refusal.expect_err("refused").code, "57P03");
    }
    assert_eq!(fake.starts("kate-pg").len(), 1, "asked once");
    // A refused wake counts nothing: the address may still wake another. (The proxy's memory of
    // the refusal runs out on paused time.)
    fake.over_quota.lock().expect("lock").clear();
    tokio::time::pause();
    tokio::time::advance(devdb_proxy::activity::REFUSED_FOR).await;
    tokio::time::resume();
    fake.set("one", RouteState::Asleep);
    proxy.wait_for("one", RouteState::Asleep).await;
    let refusal = proxy.unauthenticated([127, 0, 0, 4], "one").await.expect_err("one's own limit: woken once");
    assert_eq!(refusal.code, "57P03");
    assert!(proxy.unauthenticated([127, 0, 0, 4], "kate-pg").await.is_ok(), "the refusal was not counted");
}
