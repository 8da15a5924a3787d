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

/// The dump's only customer: its check constraint makes masking it take a few seconds (the
/// masked value matches `user_%`), which leaves time to kill the controller mid-masking.
const SLOW_TO_MASK: &str = "CREATE FUNCTION slow_ok(text) RETURNS boolean LANGUAGE sql AS $$\n\
    SELECT CASE WHEN $1 LIKE 'user\\_%' THEN (SELECT true FROM pg_sleep(3)) ELSE true END $$;\n\
    CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL CHECK (slow_ok(email)));\n\
    INSERT INTO customers VALUES (1, 'secret-customer@acme-private.test');\n";

/// Processes whose command line names `needle` (a server left running in a removed directory).
/// Processes running as user id `uid`.
fn processes_of(uid: u32) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let real = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|ids| ids.split_whitespace().next());
        if real.is_some_and(|id| id == uid.to_string()) {
            found.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    found
}

fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(cmdline);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_masking_leaves_no_half_masked_data_and_masks_after_restart() {
    let dumps = tempfile::tempdir().expect("tempdir");
    let dump = dumps.path().join("customers.sql");
    std::fs::write(&dump, SLOW_TO_MASK).expect("dump");
    devdb_testkit::pg().give(dumps.path()).expect("readable");
    let mut devdb = DevDb::start().await;
    devdb.create_project("shop", &format!("file://{}", dump.display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, devdb_shared::api::ProjectStatus::Ready);

    let rules = serde_json::json!({
        "rules": [{"table": "customers", "column": "email", "strategy": "email"}], "verify": true,
    });
    let (status, body) = devdb.call(reqwest::Method::PUT, "/v1/projects/shop/masking", Some(rules)).await;
    assert_eq!(status, 202, "{body}");
    // The masked restore's server is up: the load and the scan take milliseconds, the masking
    // seconds. Killed now, the controller leaves a half-masked directory, and its restore's
    // sandbox (the server, as the restore's own user id) dies with it.
    let work = devdb.data_dir.join("projects/shop/gen-2.restoring");
    let pid_file = work.join("box/data/postmaster.pid");
    for _ in 0..3000 {
        if pid_file.exists() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(pid_file.exists(), "the masked restore started:\n{}", devdb.log());
    let sandbox_uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(work.join("box")).expect("box"));
    let sandboxed = processes_of(sandbox_uid);
    assert!(!sandboxed.is_empty(), "the restore server runs as its sandbox's user");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    devdb.kill().await;
    // Those processes (the user id itself may go to another test's restore at once).
    let alive = || sandboxed.iter().filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()).count();
    for _ in 0..3000 {
        if alive() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(alive(), 0, "the restore died with its controller\n{}", devdb.log());
    // (By its whole path: other tests' restores run beside this one.) Waited for as above: a
    // process of the restore may still be on its way out when the sandbox's are gone.
    let server = work.display().to_string();
    for _ in 0..3000 {
        if processes_naming(&server).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let left = processes_naming(&server);
    assert!(left.is_empty(), "nothing of the restore outlives the controller: {left:?}");

    devdb.restart().await;
    let mut project = devdb.project("shop").await;
    for _ in 0..600 {
        if project.snapshot.as_ref().is_some_and(|s| s.masking_verified.is_some()) || project.error.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        project = devdb.project("shop").await;
    }
    assert_eq!(project.snapshot.as_ref().and_then(|s| s.masking_verified), Some(1), "{project:?}\n{}", devdb.log());
    let projects = devdb.data_dir.join("projects/shop");
    let entries = || -> Vec<String> {
        let names = std::fs::read_dir(&projects).expect("project dir").flatten();
        names.map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    // The older snapshot goes in the pass that records the new one (a busy machine may take
    // seconds to get there: the bound is a minute, as for the masking itself).
    for _ in 0..600 {
        if entries().len() == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(entries(), ["snapshot-2"], "the half-masked work and the unmasked snapshot are gone\n{}", devdb.log());
    assert!(processes_naming(&server).is_empty(), "no restore of the first controller runs");
    let leaks = files_holding(&projects, &["secret-customer@acme-private.test"]);
    assert!(leaks.is_empty(), "originals left: {leaks:?}");
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let client = devdb.connect_retrying(&devdb.database("kate-pg").await.expect("exists")).await;
    assert_eq!(query_one(&client, "SELECT count(*) FROM customers WHERE email LIKE 'user\\_%@example.com'").await, "1");
}
