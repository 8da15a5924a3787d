//! Waking asleep databases, against a controller the test plays (its route feed, the starts the
//! proxy asks for, the activity it reports) and a real PostgreSQL behind the routes: clients that
//! never authenticate (a wrong password, or none) wake a database only as often as the limits
//! allow, keep nothing up, leave no activity, and learn nothing of its owner.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use devdb_proxy::config::RoutesConfig;
use devdb_shared::{Name, Route, RouteState, RouteTable};
use tokio::sync::watch;

use crate::common::*;

/// What the controller the proxy follows saw and says.
struct Fake {
    table: watch::Sender<RouteTable>,
    /// `name` of each start asked for, with `?wake=true` or not.
    starts: Mutex<Vec<(String, bool)>>,
    /// Every activity report.
    reports: Mutex<Vec<serde_json::Value>>,
    /// Databases whose start the controller refuses, with its quota message.
    over_quota: Mutex<HashSet<String>>,
}

impl Fake {
    fn set(&self, name: &str, state: RouteState) {
        self.table.send_modify(|t| {
            t.version += 1;
            for route in t.routes.iter_mut().filter(|r| r.name.as_str() == name) {
                route.state = state;
            }
        });
    }

    fn starts(&self, name: &str) -> Vec<bool> {
        self.starts.lock().expect("lock").iter().filter(|(n, _)| n == name).map(|(_, wake)| *wake).collect()
    }
}

#[derive(serde::Deserialize)]
struct StartQuery {
    #[serde(default)]
    wake: bool,
}

/// Serves a controller with `names` asleep, each routed to `backend`.
async fn controller(names: &[&str], backend: &str) -> (String, Arc<Fake>) {
    let routes = names
        .iter()
        .map(|n| Route { name: Name::new(*n).expect("name"), backend: backend.into(), state: RouteState::Asleep })
        .collect();
    let fake = Arc::new(Fake {
        table: watch::channel(RouteTable { version: 1, routes }).0,
        starts: Mutex::default(),
        reports: Mutex::default(),
        over_quota: Mutex::default(),
    });
    let watch = |State(fake): State<Arc<Fake>>| async move {
        let changes = fake.table.subscribe();
        let lines = futures_util::stream::unfold((changes, true), |(mut changes, first)| async move {
            if !first && changes.changed().await.is_err() {
                return None;
            }
            let line = format!("{}\n", serde_json::to_string(&*changes.borrow_and_update()).expect("json"));
            Some((Ok::<_, std::io::Error>(line), (changes, false)))
        });
        axum::body::Body::from_stream(lines)
    };
    let start = |State(fake): State<Arc<Fake>>, Path(name): Path<String>, Query(q): Query<StartQuery>| async move {
        fake.starts.lock().expect("lock").push((name.clone(), q.wake));
        if fake.over_quota.lock().expect("lock").contains(&name) {
            let body = serde_json::json!({"error": {"code": "quota_exceeded", "message": "quota exceeded: running databases: kate has 3 of 3"}});
            return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
        }
        fake.set(&name, RouteState::Ready);
        (StatusCode::ACCEPTED, axum::Json(serde_json::json!({}))).into_response()
    };
    let report = |State(fake): State<Arc<Fake>>, axum::Json(body): axum::Json<serde_json::Value>| async move {
        fake.reports.lock().expect("lock").push(body);
        StatusCode::NO_CONTENT
    };
    let app = axum::Router::new()
        .route("/v1/routes/watch", get(watch))
        .route("/v1/databases/{name}/start", post(start))
        .route("/v1/activity", post(report))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

/// The proxy following `url`, reporting activity every 100 ms, with these wake limits.
async fn proxy(url: String, per_client: usize, per_database: usize) -> TestProxy {
    TestProxy::start_with(&[], |c| {
        c.routes = RoutesConfig::Controller { url, token: None };
        c.activity_report_every = Duration::from_millis(100);
        c.wake_timeout = Duration::from_secs(5);
        c.wakes = devdb_proxy::wake::Limits { per_client, per_database, window: Duration::from_secs(3600) };
    })
    .await
}

/// The same with a wrong password (tokio-postgres, from 127.0.0.1): the server's refusal or the
/// proxy's.
async fn wrong_password(proxy: &TestProxy, name: &str) -> (String, String) {
    let mut config = proxy.config(name);
    config.password("not-the-password");
    db_error(&refused(connect_with(&config, proxy.tls()).await))
}

/// Waits until the proxy has reported twice more; returns every report so far.
async fn reports_after(fake: &Fake, from: usize) -> Vec<serde_json::Value> {
    for _ in 0..2400 {
        let reports = fake.reports.lock().expect("lock").clone();
        if reports.len() >= from + 2 {
            return reports;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the proxy stopped reporting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_clients_that_never_authenticate_wakes_a_database_only_as_the_limits_allow() {
    let alpha = TestPostgres::start("alpha");
    let (url, fake) = controller(&["alpha"], &alpha.addr()).await;
    let proxy = proxy(url, 5, 1).await;

    // The flood: thirty clients at once, from ten addresses, without the password or with a
    // wrong one. One wake (a proxy's: `wake=true`); each client meets the server's password
    // request, and none gets in.
    let held: Vec<_> = (0..20).map(|i| unauthenticated(&proxy, [127, 0, 0, 2 + i % 10], "alpha")).collect();
    let wrong: Vec<_> = (0..10).map(|_| wrong_password(&proxy, "alpha")).collect();
    let (held, wrong) = tokio::join!(futures_util::future::join_all(held), futures_util::future::join_all(wrong));
    let held: Vec<_> = held.into_iter().map(|r| r.unwrap_or_else(|e| panic!("refused: {e:?}"))).collect();
    for (code, message) in &wrong {
        assert_eq!(code, "28P01", "the server's own refusal: {message}");
    }
    assert_eq!(fake.starts("alpha"), [true], "one wake, marked as a proxy's");

    // Held open without the password, they count for nothing: reported neither open nor active.
    let before = fake.reports.lock().expect("lock").len();
    for report in reports_after(&fake, before).await.iter().skip(before) {
        assert_eq!((&report["open"], &report["active"]), (&serde_json::json!([]), &serde_json::json!([])), "{report}");
    }
    drop(held);

    // It goes back to sleep (the controller stops it); the next flood is over the database's
    // limit (one wake nobody used): no more wakes, and one answer for all.
    fake.set("alpha", RouteState::Asleep);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again: Vec<_> = (0..10).map(|i| unauthenticated(&proxy, [127, 0, 0, 30 + i], "alpha")).collect();
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
    wait_for_metric(&proxy, "devdb_proxy_handshake_errors_total{reason=\"wake_limited\"} 11").await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_wakes_so_many_databases_a_session_claims_its_wake_and_a_refusal_says_nothing() {
    let alpha = TestPostgres::start("alpha");
    let names = ["one", "two", "three", "four", "kate-pg"];
    let (url, fake) = controller(&names, &alpha.addr()).await;
    let proxy = proxy(url, 2, 1).await;

    // One address wakes two databases, not a third; another address can.
    for name in ["one", "two"] {
        assert!(unauthenticated(&proxy, [127, 0, 0, 2], name).await.is_ok(), "{name}");
    }
    let refusal = unauthenticated(&proxy, [127, 0, 0, 2], "three").await.expect_err("per client");
    assert_eq!(refusal.code, "57P03");
    assert!(fake.starts("three").is_empty());
    assert!(unauthenticated(&proxy, [127, 0, 0, 3], "three").await.is_ok());

    // A session that authenticates shows the wake was wanted: it counts no more.
    let client = proxy.connect("four").await.expect("the owner, with the password, wakes it");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
    drop(client);
    fake.set("four", RouteState::Asleep);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let client = proxy.connect("four").await.expect("woken again: the first wake was claimed");
    drop(client);
    assert_eq!(fake.starts("four"), [true, true]);
    // It was reported as activity; the flood's databases never were.
    let so_far = fake.reports.lock().expect("lock").len();
    let reports = reports_after(&fake, so_far).await;
    let named =
        |key: &str, name: &str| reports.iter().any(|r| r[key].as_array().is_some_and(|a| a.iter().any(|n| n == name)));
    assert!(named("active", "four"));
    for name in ["one", "two", "three"] {
        assert!(!named("active", name) && !named("open", name), "{name} never had a session");
    }

    // The controller refuses a wake (its owner's running quota): the client is told nothing of
    // the owner, the quota or its use; the same answer as over a limit.
    fake.over_quota.lock().expect("lock").insert("kate-pg".into());
    let refusal = unauthenticated(&proxy, [127, 0, 0, 4], "kate-pg").await.expect_err("refused");
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
    let again: Vec<_> = (0..10).map(|i| unauthenticated(&proxy, [127, 0, 0, 40 + i], "kate-pg")).collect();
    for refusal in futures_util::future::join_all(again).await {
        assert_eq!(refusal.expect_err("refused").code, "57P03");
    }
    assert_eq!(fake.starts("kate-pg").len(), 1, "asked once");
    // A refused wake counts nothing: the address may still wake another.
    fake.over_quota.lock().expect("lock").clear();
    tokio::time::sleep(devdb_proxy::activity::REFUSED_FOR).await;
    fake.set("one", RouteState::Asleep);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refusal = unauthenticated(&proxy, [127, 0, 0, 4], "one").await.expect_err("one's own limit: woken once");
    assert_eq!(refusal.code, "57P03");
    assert!(unauthenticated(&proxy, [127, 0, 0, 4], "kate-pg").await.is_ok(), "the refusal was not counted");
    proxy.stop().await;
}
