//! A controller killed with SIGKILL at any point restarts into a consistent state: in-flight
//! restores and clones are redone, running instances adopted, orphans removed; proxies keep
//! serving their last table while the controller is away.

use std::time::Duration;

use crate::common::*;
use devdb_shared::api::{DatabaseStatus, ProjectStatus};

fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_interrupted_by_sigkill_is_redone_after_restart() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let mut devdb = DevDb::start().await;
    devdb.create_project("slow", &files.stall_once_url("custom.dump")).await;
    // Wait until the download is under way.
    for _ in 0..1200 {
        let project = devdb.project("slow").await;
        if project.progress.is_some_and(|p| p.bytes_done > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let project_dir = devdb.data_dir.join("projects/slow");
    assert_eq!(entries(&project_dir), ["gen-1.restoring"], "restore in progress\n{}", devdb.log());

    devdb.restart().await;
    let project = devdb.settled_project("slow").await;
    assert_eq!(project.status, ProjectStatus::Ready, "{:?}", project.error);
    assert_eq!(entries(&project_dir), ["snapshot-1"], "only the finished snapshot remains");
    let (status, body) = devdb.create_database("after", "slow").await;
    assert_eq!(status, 201, "{body}");
    let database = devdb.database("after").await.expect("database");
    assert_eq!(query_one(&devdb.connect_retrying(&database).await, "SELECT count(*) FROM items").await, "2500");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_sigkill_running_instances_are_adopted_clones_finished_and_orphans_removed() {
    let dumps = Dumps::make();
    let mut devdb = DevDb::start().await;
    devdb.create_project("shop", &format!("file://{}", dumps.path("custom.dump").display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);
    let (status, _) = devdb.create_database("steady", "shop").await;
    assert_eq!(status, 201);
    // The database's server, alone once the restore's server has exited (it may still be on its
    // way out when the project turns ready).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let steady_pids: Vec<u32> = loop {
        let postmasters = devdb.postmasters();
        if postmasters.len() == 1 {
            break postmasters.iter().map(|(pid, _)| *pid).collect();
        }
        assert!(tokio::time::Instant::now() < deadline, "servers: {postmasters:?}\n{}", devdb.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // Start a clone and kill the controller while it may still be copying.
    let (status, _) = devdb
        .call(reqwest::Method::POST, "/v1/databases", Some(serde_json::json!({"name": "midway", "project": "shop"})))
        .await;
    assert_eq!(status, 201);
    devdb.kill().await;
    // Debris a crash can leave: an instance directory no record claims.
    std::fs::create_dir_all(devdb.data_dir.join("databases/ghost/data")).expect("orphan");

    devdb.restart().await;
    let mut midway = None;
    let mut last = None;
    for _ in 0..1200 {
        last = devdb.database("midway").await;
        if let Some(d) = last.clone().filter(|d| d.status == DatabaseStatus::Running) {
            midway = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(midway) = midway else {
        panic!("the interrupted clone did not finish after the restart: {last:?}\n{}", devdb.log());
    };
    let steady = devdb.database("steady").await.expect("steady");
    assert_eq!(steady.status, DatabaseStatus::Running);
    let pids_now: Vec<u32> = devdb.postmasters().iter().map(|(pid, _)| *pid).collect();
    assert!(pids_now.contains(&steady_pids[0]), "the running instance was adopted, not restarted");
    assert_eq!(pids_now.len(), 2, "one server per database, none orphaned: {:?}", devdb.postmasters());
    for _ in 0..1200 {
        if entries(&devdb.data_dir.join("databases")) == ["midway", "steady"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        entries(&devdb.data_dir.join("databases")),
        ["midway", "steady"],
        "no orphan or half-made clone\n{}",
        devdb.log()
    );
    for database in [&midway, &steady] {
        let client = devdb.connect_retrying(database).await;
        assert_eq!(query_one(&client, "SELECT count(*) FROM items").await, "2500");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_keeps_its_last_table_while_the_controller_is_away_and_resubscribes() {
    let mut devdb = DevDb::start().await;
    // A standalone proxy following this controller's route feed.
    let proxy_port = devdb_testkit::free_port();
    let mut config = devdb_proxy::config::Config::new(
        devdb_shared::Domain::new(DOMAIN).expect("domain"),
        devdb_proxy::config::TlsSource::Dev { dir: devdb.data_dir.join("certs") },
        devdb_proxy::config::RoutesConfig::Controller { url: devdb.api.clone(), token: None },
    );
    config.listen = format!("127.0.0.1:{proxy_port}").parse().expect("addr");
    let listener = tokio::net::TcpListener::bind(config.listen).await.expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stop = tokio_util::sync::CancellationToken::new();
    let proxy = tokio::spawn(devdb_proxy::run(config, listener, admin, stop.clone().cancelled_owned()));
    let via_proxy = |mut d: devdb_shared::api::Database| {
        d.port = proxy_port;
        d
    };

    devdb.call(reqwest::Method::POST, "/v1/projects", Some(serde_json::json!({"name": "shop"}))).await;
    devdb.settled_project("shop").await;
    devdb.create_database("first", "shop").await;
    let first = via_proxy(devdb.database("first").await.expect("first"));
    drop(devdb.connect_retrying(&first).await);

    devdb.kill().await;
    // The controller is gone; the proxy still routes what it knew.
    let client = devdb.connect(&first).await.expect("served from the last table");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
    devdb.restart().await;
    devdb.create_database("second", "shop").await;
    let second = via_proxy(devdb.database("second").await.expect("second"));
    drop(devdb.connect_retrying(&second).await);
    stop.cancel();
    drop(client);
    proxy.await.expect("joined").expect("proxy ran");
}

/// A clone's postmaster killed with SIGKILL: within seconds the API and the routing table say
/// it is recovering, then the controller has started it again and sessions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_noticed_and_restarted() {
    let dumps = Dumps::make();
    let devdb = DevDb::start().await;
    devdb.create_project("shop", &format!("file://{}", dumps.path("custom.dump").display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);
    let (status, _) = devdb.create_database("fragile", "shop").await;
    assert_eq!(status, 201);
    let [(pid, _)] = devdb.postmasters()[..] else { panic!("one instance: {:?}", devdb.postmasters()) };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).expect("kill");

    // Noticed: recovering (with the reason), or already running again on a new postmaster.
    let mut seen = Vec::new();
    let restarted = loop {
        let database = devdb.database("fragile").await.expect("database");
        seen.push((database.status, database.error.clone()));
        let postmasters = devdb.postmasters();
        if database.status == DatabaseStatus::Running && postmasters.len() == 1 && postmasters[0].0 != pid {
            break database;
        }
        assert!(seen.len() < 1200, "never restarted: {seen:?}\n{}", devdb.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        seen.iter().any(|(status, error)| *status == DatabaseStatus::Recovering
            && error.as_deref().is_some_and(|e| e.contains("stopped unexpectedly"))),
        "the API showed it recovering, with the reason: {seen:?}"
    );
    assert_eq!(restarted.error, None);
    let client = devdb.connect_retrying(&restarted).await;
    assert_eq!(query_one(&client, "SELECT count(*) FROM items").await, "2500");
    assert!(devdb.log().contains("the instance stopped unexpectedly"), "and the log says so");
}
