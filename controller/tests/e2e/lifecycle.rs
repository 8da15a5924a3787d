//! End to end: dumps of every format restored by `devdb up`, cloned, reached through the proxy
//! by SNI; isolation, reset, delete.

use crate::common::*;
use devdb_shared::api::{DatabaseStatus, ProjectStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dump_format_restores_and_its_clone_is_reachable_through_the_proxy() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    // Every format at once (one owner may run two restores at once by default).
    let devdb = DevDb::start_with(&["--max-restores-per-owner", "9"]).await;
    let sources = [
        ("plain", files.url("plain.sql")),
        ("custom", files.url("custom.dump")),
        ("tar", files.url("archive.tar")),
        ("dir", files.url("dir.tar")),
        ("plain-gz", files.url("plain.sql.gz")),
        ("custom-gz", files.url("custom.gz")),
        ("dir-gz", files.url("dir.tar.gz")),
        ("local-file", format!("file://{}", dumps.path("custom.dump").display())),
        ("local-dir", format!("file://{}", dumps.path("dir").display())),
    ];
    for (name, url) in &sources {
        devdb.create_project(name, url).await;
    }
    for (name, _) in &sources {
        let project = devdb.settled_project(name).await;
        assert_eq!(project.status, ProjectStatus::Ready, "{name}: {:?}", project.error);
        assert!(project.snapshot.is_some_and(|s| s.size_bytes > 0));
    }
    let devdb = &devdb;
    let creates =
        sources.iter().map(|(name, _)| async move { (name, devdb.create_database(&format!("{name}-db"), name).await) });
    for (name, (status, body)) in futures_util::future::join_all(creates).await {
        assert_eq!(status, 201, "{name}: {body}");
        let database: devdb_shared::api::Database = serde_json::from_value(body).expect("database");
        assert_eq!(database.status, DatabaseStatus::Running);
        assert_eq!(database.host, format!("{name}-db.{DOMAIN}"));
        assert!(database.uri.starts_with(&format!("postgresql://app:{}@{name}-db.{DOMAIN}:", database.password)));
        let client = devdb.connect_retrying(&database).await;
        assert_eq!(query_one(&client, "SELECT count(*) FROM items").await, dumps.rows.to_string(), "{name}");
        assert_eq!(query_one(&client, "SELECT count(*) FROM big_orders").await, "250", "{name}: views restored");
        assert_eq!(query_one(&client, "SELECT current_user").await, "app");
        // The data belongs to the project's user (restored with --no-owner).
        assert_eq!(query_one(&client, "SELECT tableowner FROM pg_tables WHERE tablename = 'items'").await, "app");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_are_isolated_reset_restores_the_snapshot_and_delete_removes_everything() {
    let dumps = Dumps::make();
    let devdb = DevDb::start().await;
    devdb.create_project("shop", &format!("file://{}", dumps.path("custom.dump").display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);

    // Through the CLI, as a user would.
    let (ok, out, err) = devdb.cli(&["db", "create", "kate-pg", "--project", "shop"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("kate-pg.db.devdb.test") && out.contains("running"), "{out}");
    let (status, _) = devdb.create_database("bob-pg", "shop").await;
    assert_eq!(status, 201);
    let kate = devdb.database("kate-pg").await.expect("kate");
    let bob = devdb.database("bob-pg").await.expect("bob");
    assert_ne!(kate.password, bob.password, "each database has its own password");

    let kate_client = devdb.connect_retrying(&kate).await;
    kate_client
        .batch_execute("DELETE FROM orders; DELETE FROM items WHERE id > 10; CREATE TABLE mine (x int)")
        .await
        .expect("write");
    let bob_client = devdb.connect_retrying(&bob).await;
    assert_eq!(query_one(&bob_client, "SELECT count(*) FROM items").await, "2500", "bob does not see kate's writes");
    assert_eq!(query_one(&kate_client, "SELECT count(*) FROM items").await, "10");
    // Nor does a new clone: the template is untouched.
    let (status, body) = devdb.create_database("fresh", "shop").await;
    assert_eq!(status, 201);
    let fresh: devdb_shared::api::Database = serde_json::from_value(body).expect("database");
    assert_eq!(query_one(&devdb.connect_retrying(&fresh).await, "SELECT count(*) FROM items").await, "2500");
    // Bob's password does not open Kate's database.
    let mut wrong = kate.clone();
    wrong.password = bob.password.clone();
    assert!(devdb.connect(&wrong).await.is_err());

    // Reset: same name and credentials, the snapshot's data again.
    drop(kate_client);
    let (ok, _, err) = devdb.cli(&["db", "reset", "kate-pg"]).await;
    assert!(ok, "{err}");
    let after = devdb.database("kate-pg").await.expect("kate");
    assert_eq!((after.password.as_str(), after.status), (kate.password.as_str(), DatabaseStatus::Running));
    let kate_client = devdb.connect_retrying(&kate).await;
    assert_eq!(query_one(&kate_client, "SELECT count(*) FROM items").await, "2500");
    assert_eq!(query_one(&kate_client, "SELECT count(*) FROM pg_tables WHERE tablename = 'mine'").await, "0");
    drop(kate_client);

    // Delete: the route goes (3D000 through the proxy), and with it the process and the files.
    let bob_dir = devdb.data_dir.join("databases/bob-pg");
    assert!(devdb.postmasters().iter().any(|(_, d)| d.starts_with(&bob_dir)));
    drop(bob_client);
    let (ok, out, err) = devdb.cli(&["db", "delete", "bob-pg"]).await;
    assert!(ok && out.contains("deleted database bob-pg"), "{out}{err}");
    assert!(devdb.database("bob-pg").await.is_none());
    assert!(!bob_dir.exists(), "files removed");
    assert!(!devdb.postmasters().iter().any(|(_, d)| d.starts_with(&bob_dir)), "process stopped");
    let mut refused = None;
    for _ in 0..600 {
        match devdb.connect(&bob).await {
            Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "3D000") => {
                refused = Some(e);
                break;
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    assert!(refused.is_some(), "the deleted database's route is gone\n{}", devdb.log());
}
