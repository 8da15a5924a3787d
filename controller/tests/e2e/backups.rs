//! Backups with the real pgBackRest: `devdb db create --backup` archives the database's WAL and
//! the schedule takes its first backup once it runs; `devdb db show` then gives the window it
//! can be restored to, and the repository under the data directory holds it, encrypted.

use std::time::Duration;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_created_with_backups_is_archived_and_backed_up() {
    let devdb = with_empty_project(&["--lifecycle-check-every", "200ms"]).await;
    let (ok, out, err) = devdb.cli(&["db", "create", "kate-pg", "--project", "shop", "--backup"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("on, the first backup is under way") || out.contains("restorable from"), "{out}");

    // The schedule takes the first backup as soon as it runs.
    let mut backed_up = None;
    for _ in 0..600 {
        let database = devdb.database("kate-pg").await.expect("the database");
        let backup = database.backup.expect("backups on");
        assert_eq!(backup.warning, None, "{}", devdb.log());
        if backup.restorable_from.is_some() {
            backed_up = Some(backup);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backup = backed_up.unwrap_or_else(|| panic!("never backed up:\n{}", devdb.log()));
    assert!(backup.last_backup_at.is_some() && backup.restorable_to.is_some(), "{backup:?}");
    let (ok, out, _) = devdb.cli(&["db", "show", "kate-pg"]).await;
    assert!(ok && out.contains("restorable from"), "{out}");

    // Its WAL is archived: a segment switched out reaches the repository.
    let database = devdb.database("kate-pg").await.expect("the database");
    let client = devdb.connect_retrying(&database).await;
    client.batch_execute("CREATE TABLE t (id int); INSERT INTO t VALUES (1)").await.expect("write");
    let repo = devdb.data_dir.join("backups");
    let archived =
        || files_under(&repo.join("archive")).into_iter().filter(|p| p.to_string_lossy().contains("00000001")).count();
    assert!(archived() > 0, "the backup's own WAL is archived");
    // Nothing in the repository is readable as plain PostgreSQL data: it is encrypted.
    let manifest =
        files_under(&repo.join("backup")).into_iter().find(|p| p.ends_with("backup.manifest")).expect("a manifest");
    let bytes = std::fs::read(&manifest).expect("manifest");
    assert!(!String::from_utf8_lossy(&bytes).contains("pg_control"), "the manifest is encrypted");
}

/// Backups that cannot be set up (here: something that is not a directory where the repository
/// goes) never keep a database from running: it runs without archiving, and its backups fail
/// with the reason on the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_that_cannot_be_set_up_leave_the_database_running_and_say_why() {
    let devdb = DevDb::start_in(&["--lifecycle-check-every", "200ms"], |data| {
        std::fs::write(data.join("backup"), "not a directory").expect("a file in the way");
    })
    .await;
    let (status, body) =
        devdb.call(reqwest::Method::POST, "/v1/projects", Some(serde_json::json!({"name": "shop"}))).await;
    assert_eq!(status, 201, "{body}");
    devdb.settled_project("shop").await;
    let (status, created) = devdb
        .call(
            reqwest::Method::POST,
            "/v1/databases?wait=true",
            Some(serde_json::json!({"name": "kate-pg", "project": "shop", "backup": {"enabled": true}})),
        )
        .await;
    assert_eq!((status, created["status"].as_str()), (201, Some("running")), "{created}\n{}", devdb.log());
    let mut error = None;
    for _ in 0..600 {
        let database = devdb.database("kate-pg").await.expect("the database");
        if let Some(reason) = database.backup.and_then(|b| b.warning) {
            error = Some(reason);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = error.unwrap_or_else(|| panic!("no backup error shown:\n{}", devdb.log()));
    assert!(error.contains("backup"), "{error}");
    // It serves all the while.
    let database = devdb.database("kate-pg").await.expect("the database");
    let client = devdb.connect_retrying(&database).await;
    client.batch_execute("CREATE TABLE t (id int)").await.expect("it serves");
}

/// A moment by the database's own clock, through the proxy.
async fn server_now(client: &tokio_postgres::Client) -> String {
    let row = client
        .query_one("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", &[])
        .await
        .expect("now");
    row.get(0)
}

async fn ids(client: &tokio_postgres::Client) -> Vec<i32> {
    client.query("SELECT id FROM t ORDER BY id", &[]).await.expect("rows").iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_is_made_from_anothers_backups_as_it_was_at_a_moment() {
    let devdb = with_empty_project(&["--lifecycle-check-every", "200ms"]).await;
    let (source, client, moment) = rows_around_a_moment(&devdb, "kate-pg").await;

    // A moment before the window is refused, with the window.
    let (ok, _, err) =
        devdb.cli(&["db", "create", "too-early", "--from-database", "kate-pg", "--at", "2020-01-01T00:00:00Z"]).await;
    assert!(!ok && err.contains("outside database kate-pg's restorable window"), "{err}");

    let (ok, out, err) = devdb.cli(&["db", "create", "kate-then", "--from-database", "kate-pg", "--at", &moment]).await;
    assert!(ok, "{out}{err}\n{}", devdb.log());
    let copy = devdb.database("kate-then").await.expect("the copy");
    assert_ne!(copy.password, source.password, "credentials of its own");
    let then = devdb.connect_retrying(&copy).await;
    assert_eq!(ids(&then).await, [1, 2, 3, 4, 5], "exactly what was committed before the moment");
    then.batch_execute("INSERT INTO t VALUES (100)").await.expect("it is a database of its own, writable");
    assert_eq!(ids(&client).await, [1, 2, 3, 4, 5, 6, 7, 8], "the source keeps running, untouched");
}

/// `name` made with backups and backed up; then, inside its window, rows 1–5 committed before a
/// moment and 6–8 after it. The database, a session and the moment.
async fn rows_around_a_moment(
    devdb: &DevDb,
    name: &str,
) -> (devdb_shared::api::Database, tokio_postgres::Client, String) {
    let (ok, out, err) = devdb.cli(&["db", "create", name, "--project", "shop", "--backup"]).await;
    assert!(ok, "{out}{err}");
    let mut opens = None;
    for _ in 0..600 {
        let backup = devdb.database(name).await.and_then(|d| d.backup).expect("backups on");
        if let Some(from) = backup.restorable_from {
            opens = Some(from);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let opens = opens.unwrap_or_else(|| panic!("never backed up:\n{}", devdb.log()));
    let database = devdb.database(name).await.expect("the database");
    let client = devdb.connect_retrying(&database).await;
    // Moments from the window's start on.
    while server_now(&client).await <= opens {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.batch_execute("CREATE TABLE t (id int PRIMARY KEY)").await.expect("table");
    for id in 1..=5 {
        client.execute("INSERT INTO t VALUES ($1)", &[&id]).await.expect("insert");
    }
    let moment = server_now(&client).await;
    for id in 6..=8 {
        client.execute("INSERT INTO t VALUES ($1)", &[&id]).await.expect("insert");
    }
    (database, client, moment)
}

/// `devdb db restore NAME --to TIME`: in place, only once confirmed; exactly the rows committed
/// before the moment, same name and credentials; `--undo` brings back the state it replaced,
/// and undoing the undo the state after the restore (each on its own timeline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_is_restored_in_place_to_a_moment_and_the_restore_undone() {
    let devdb = with_empty_project(&["--lifecycle-check-every", "200ms"]).await;
    let (database, client, moment) = rows_around_a_moment(&devdb, "kate-pg").await;

    let (ok, _, err) = devdb.cli(&["db", "restore", "kate-pg", "--to", &moment]).await;
    assert!(!ok && err.contains("Confirm with --yes"), "no terminal to ask on: {err}");
    let (ok, _, err) = devdb.cli(&["db", "restore", "kate-pg", "--to", "2020-01-01T00:00:00Z", "--yes"]).await;
    assert!(!ok && err.contains("outside database kate-pg's restorable window"), "{err}");
    let (ok, _, err) = devdb.cli(&["db", "restore", "kate-pg", "--undo", "--yes"]).await;
    assert!(!ok && err.contains("has not been restored in place"), "{err}");
    assert_eq!(ids(&client).await, [1, 2, 3, 4, 5, 6, 7, 8], "nothing changed, the session kept");

    let (ok, out, err) = devdb.cli(&["db", "restore", "kate-pg", "--to", &moment, "--yes"]).await;
    assert!(ok, "{out}{err}\n{}", devdb.log());
    assert!(out.contains("restored in place, the state before kept"), "{out}");
    let restored = devdb.database("kate-pg").await.expect("the database");
    assert_eq!((restored.password.as_str(), restored.port), (database.password.as_str(), database.port));
    let after = devdb.connect_retrying(&restored).await;
    assert_eq!(ids(&after).await, [1, 2, 3, 4, 5], "exactly what was committed before the moment");
    after.batch_execute("INSERT INTO t VALUES (100)").await.expect("writable");

    let (ok, out, err) = devdb.cli(&["db", "restore", "kate-pg", "--undo", "--yes"]).await;
    assert!(ok, "{out}{err}\n{}", devdb.log());
    let undone = devdb.connect_retrying(&restored).await;
    assert_eq!(ids(&undone).await, [1, 2, 3, 4, 5, 6, 7, 8], "the state before the restore");

    let (ok, out, err) = devdb.cli(&["db", "restore", "kate-pg", "--undo", "--yes"]).await;
    assert!(ok, "{out}{err}\n{}", devdb.log());
    let redone = devdb.connect_retrying(&restored).await;
    assert_eq!(ids(&redone).await, [1, 2, 3, 4, 5, 100], "the undo undone: the restored state and what followed");
}

/// The database's backups, once `ready` says they are.
async fn backup_when(
    devdb: &DevDb,
    name: &str,
    what: &str,
    ready: impl Fn(&devdb_shared::api::BackupStatus) -> bool,
) -> devdb_shared::api::BackupStatus {
    for _ in 0..1200 {
        let backup = devdb.database(name).await.and_then(|d| d.backup).expect("backups on");
        if ready(&backup) {
            return backup;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name}: never {what}: {:?}\n{}", devdb.database(name).await.and_then(|d| d.backup), devdb.log());
}

/// A repository the instance cannot write to turns into a warning on a database that keeps
/// running, and the warning goes once the repository is back and the waiting WAL is archived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_repository_is_a_warning_on_a_database_that_keeps_running() {
    use std::os::unix::fs::PermissionsExt as _;
    let devdb = with_empty_project(&["--lifecycle-check-every", "200ms"]).await;
    let (ok, out, err) = devdb.cli(&["db", "create", "kate-pg", "--project", "shop", "--backup"]).await;
    assert!(ok, "{out}{err}");
    backup_when(&devdb, "kate-pg", "archived", |b| b.last_backup_at.is_some() && b.last_archived_at.is_some()).await;

    let repo = devdb.data_dir.join("backups");
    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o000)).expect("the repository away");
    let database = devdb.database("kate-pg").await.expect("the database");
    let client = devdb.connect_retrying(&database).await;
    // More than a WAL segment (16 MiB): a finished segment to archive.
    client
        .batch_execute("CREATE TABLE t AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 120000) g")
        .await
        .expect("it keeps committing");
    let failing =
        backup_when(&devdb, "kate-pg", "warned", |b| b.warning.as_deref().is_some_and(|w| w.contains("archiving")))
            .await;
    assert!(failing.archive_failures > 0 && failing.archive_failing_since.is_some(), "{failing:?}");
    let (ok, out, _) = devdb.cli(&["db", "show", "kate-pg"]).await;
    assert!(ok && out.contains("archiving its WAL has failed") && out.contains("running"), "{out}");
    client.batch_execute("INSERT INTO t VALUES (0, 'still serving')").await.expect("it keeps serving");

    std::fs::set_permissions(&repo, std::fs::Permissions::from_mode(0o700)).expect("the repository back");
    let back = backup_when(&devdb, "kate-pg", "caught up", |b| {
        b.warning.is_none() && b.archive_failing_since.is_none() && b.archive_lag_seconds == Some(0)
    })
    .await;
    assert!(back.last_archived_at > failing.last_archived_at, "{back:?}");
}
