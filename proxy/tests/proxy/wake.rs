//! A real wake of a real server: an asleep database, routed by the controller the test plays
//! (`common::fakes::FakeController`), is woken for a client with the password, which then runs
//! its queries on it, and its session is reported to the controller. What the wake limits refuse,
//! and to whom: `inproc::wake`.

use std::time::Duration;

use devdb_proxy::config::RoutesConfig;

use crate::common::fakes::FakeController;
use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asleep_server_is_woken_for_a_client_with_the_password_and_its_session_reported() {
    let alpha = TestPostgres::start("alpha");
    let fake = FakeController::start(&["alpha"], &alpha.addr()).await;
    let proxy = TestProxy::start_with(&[], |c| {
        c.routes = RoutesConfig::Controller { url: fake.url.clone(), token: None };
        c.activity_report_every = Duration::from_millis(100);
        c.wake_timeout = Duration::from_secs(5);
    })
    .await;
    let client = proxy.connect("alpha").await.expect("woken for its owner");
    assert_eq!(query_one(&client, "SHOW cluster_name").await, "alpha");
    assert_eq!(fake.starts("alpha"), [true], "one wake, marked as a proxy's");
    drop(client);
    let so_far = fake.reports().len();
    let reports = fake.reports_after(so_far).await;
    let active = reports.iter().any(|r| r["active"].as_array().is_some_and(|a| a.iter().any(|n| n == "alpha")));
    assert!(active, "reported as activity: {reports:?}");
    proxy.stop().await;
}
