//! End to end: masking rules set with `devdb project masking` restore the project again,
//! masked; its databases see only masked values, and no original is left in the snapshot's or
//! the clone's files.

use devdb_restore::masking::leaks as files_holding;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masking_rules_restore_the_project_masked_and_its_clones_hold_no_original() {
    let dumps = Dumps::make();
    let devdb = DevDb::start_with(&[]).await;
    devdb.create_project("shop", &format!("file://{}", dumps.path("plain.sql").display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, devdb_shared::api::ProjectStatus::Ready);
    let projects = devdb.dir.path().join("data/projects/shop");
    assert!(!files_holding(&projects, &["item 1234"]).is_empty(), "the unmasked snapshot holds the originals");

    let (ok, scanned, err) = devdb.cli(&["project", "scan", "shop"]).await;
    assert!(ok && scanned.contains("No column looks personal."), "item names are not personal: {scanned}{err}");

    let rules = devdb.dir.path().join("rules.json");
    let set = r#"{"rules": [{"table": "items", "column": "name", "strategy": "hash"}], "verify": true}"#;
    std::fs::write(&rules, set).expect("rules");
    let (ok, out, err) = devdb.cli(&["project", "masking", "shop", "--file", &rules.to_string_lossy()]).await;
    assert!(ok, "{err}\n{}", devdb.log());
    assert!(out.contains("ready"), "waited for the masked restore: {out}");
    let (_, project) = devdb.call(reqwest::Method::GET, "/v1/projects/shop", None).await;
    assert_eq!(project["snapshot"]["maskingVerified"], 20, "20 originals looked for, none found: {project}");
    let (ok, shown, err) = devdb.cli(&["project", "masking", "shop"]).await;
    assert!(ok && shown.contains("\"strategy\": \"hash\""), "{shown}{err}");

    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let database = devdb.database("kate-pg").await.expect("exists");
    let client = devdb.connect_retrying(&database).await;
    assert_eq!(
        query_one(&client, "SELECT count(*) FROM items WHERE name ~ '^[0-9a-f]{64}$'").await,
        "2500",
        "{}",
        devdb.log()
    );
    assert_eq!(query_one(&client, "SELECT count(*) FROM orders JOIN items ON items.id = orders.item").await, "500");
    drop(client);
    for dir in [projects, devdb.dir.path().join("data/databases/kate-pg")] {
        let leaks = files_holding(&dir, &["item 1234"]);
        assert!(leaks.is_empty(), "originals left: {leaks:?}");
    }

    let (ok, _, err) = devdb.cli(&["project", "masking", "shop", "--file", "/nonexistent.json"]).await;
    assert!(!ok && err.contains("cannot read /nonexistent.json"), "{err}");
}
