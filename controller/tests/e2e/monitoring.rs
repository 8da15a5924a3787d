//! End to end: sampling a database whose owner holds a lock on it, with `devdb up`, real
//! PostgreSQL and the real proxy. Both samplers connect to the instance's `postgres` database
//! and name the owner's, so neither waits on the owner: the Kubernetes runtime's (through the
//! proxy, as the owner) reads it, and the controller's own (the local runtime's) keeps
//! recording points.

use std::time::Duration;

use crate::common::*;

/// Only so that a sample that never ends fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(60);

/// How many points the database's history holds now.
async fn points(devdb: &DevDb, name: &str) -> usize {
    let (status, metrics) = devdb.call(reqwest::Method::GET, &format!("/v1/databases/{name}/metrics"), None).await;
    assert_eq!(status, 200, "{metrics}");
    metrics["points"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_holding_a_rename_of_its_database_open_stops_neither_sampler() {
    let devdb = with_empty_project(&["--sample-every", "1s"]).await;
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let database = devdb.database("kate-pg").await.expect("exists");

    // The owner, in its instance's postgres database, renames its own database in a transaction
    // it keeps open: every new session to that database now waits in its start-up.
    let mut maintenance = database.clone();
    maintenance.database = "postgres".into();
    let owner = devdb.connect_retrying(&maintenance).await;
    let rename = format!("BEGIN; ALTER DATABASE \"{}\" RENAME TO held", database.database);
    owner.batch_execute(&rename).await.expect("the owner renames its database");

    let monitor = devdb.through_proxy(&database);
    for _ in 0..3 {
        let sample = monitor.sample(&database.name, &database.username, &database.password, &database.database);
        let counters = tokio::time::timeout(HANG, sample)
            .await
            .expect("the sample ended")
            .expect("the Kubernetes runtime's sampler reads the held database through the proxy");
        assert!(counters.size_bytes > 1 << 20, "{counters:?}");
    }
    assert_eq!(monitor.samples().running(), 0);

    // The controller's own sampling records new points meanwhile.
    let before = points(&devdb, "kate-pg").await;
    let mut now = before;
    for _ in 0..600 {
        now = points(&devdb, "kate-pg").await;
        if now >= before + 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(now >= before + 2, "no new points while the owner holds the lock ({before}, then {now}):\n{}", devdb.log());

    owner.batch_execute("ROLLBACK").await.expect("the owner's transaction is still open");
}
