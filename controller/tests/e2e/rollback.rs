//! End to end: a refresh from a changed dump rolled back with `devdb project rollback`; a reset
//! database and a new one hold the earlier generation's data again, and both generations'
//! snapshots stay on disk.

use crate::common::*;
use devdb_shared::api::{Database, Project, ProjectStatus};

/// Rows in `items` of `database`, through the proxy.
async fn items(devdb: &DevDb, database: &Database) -> String {
    query_one(&devdb.connect_retrying(database).await, "SELECT count(*) FROM items").await
}

async fn reset(devdb: &DevDb, database: &str) {
    let (ok, _, err) = devdb.cli(&["db", "reset", database]).await;
    assert!(ok, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_from_a_changed_dump_is_rolled_back_and_a_reset_database_shows_the_old_data() {
    let dumps = Dumps::make();
    let devdb = DevDb::start().await;
    let dump = dumps.path("plain.sql");
    devdb.create_project("shop", &format!("file://{}", dump.display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);
    let (status, body) = devdb.create_database("kate-pg", "shop").await;
    assert_eq!(status, 201, "{body}");
    let kate = devdb.database("kate-pg").await.expect("kate");
    assert_eq!(items(&devdb, &kate).await, dumps.rows.to_string());

    // The source changes; the refresh restores it as generation 2, which a reset shows.
    let mut sql = std::fs::read_to_string(&dump).expect("dump");
    sql.push_str("\nINSERT INTO public.items VALUES (2501, 'new in the refresh');\n");
    std::fs::write(&dump, sql).expect("changed dump");
    let (ok, _, err) = devdb.cli(&["project", "refresh", "shop"]).await;
    assert!(ok, "{err}");
    reset(&devdb, "kate-pg").await;
    assert_eq!(items(&devdb, &kate).await, "2501");

    // Rolled back: generation 1 is current again, both are kept (on disk too).
    let (ok, out, err) = devdb.cli(&["project", "rollback", "shop", "--json"]).await;
    assert!(ok, "{err}");
    let project: Project = serde_json::from_str(&out).expect("a project");
    assert_eq!(project.snapshot.map(|s| s.generation), Some(1));
    assert_eq!(project.snapshots.iter().map(|s| s.generation).collect::<Vec<_>>(), [2, 1]);
    for generation in [1, 2] {
        let snapshot = devdb.data_dir.join(format!("projects/shop/snapshot-{generation}"));
        assert!(snapshot.is_dir(), "{} kept", snapshot.display());
    }
    let (ok, out, err) = devdb.cli(&["project", "show", "shop"]).await;
    assert!(ok && out.contains("generation 1,") && out.contains("kept"), "{out}{err}");

    // A reset, and a new database, hold the old data.
    reset(&devdb, "kate-pg").await;
    assert_eq!(items(&devdb, &kate).await, dumps.rows.to_string(), "the old data");
    let (status, body) = devdb.create_database("fresh", "shop").await;
    assert_eq!(status, 201, "{body}");
    let fresh: Database = serde_json::from_value(body).expect("database");
    assert_eq!(items(&devdb, &fresh).await, dumps.rows.to_string());

    // A generation not kept: refused, naming those kept.
    let (ok, _, err) = devdb.cli(&["project", "rollback", "shop", "--to", "7"]).await;
    assert!(!ok && err.contains("it keeps 1 (current), 2"), "{err}");
}
