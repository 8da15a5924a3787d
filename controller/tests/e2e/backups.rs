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
        assert_eq!(backup.error, None, "{}", devdb.log());
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
    let repo = devdb.data_dir.join("backup/repo");
    let archived =
        || walkdir(&repo.join("archive")).into_iter().filter(|p| p.to_string_lossy().contains("00000001")).count();
    assert!(archived() > 0, "the backup's own WAL is archived");
    // Nothing in the repository is readable as plain PostgreSQL data: it is encrypted.
    let manifest =
        walkdir(&repo.join("backup")).into_iter().find(|p| p.ends_with("backup.manifest")).expect("a manifest");
    let bytes = std::fs::read(&manifest).expect("manifest");
    assert!(!String::from_utf8_lossy(&bytes).contains("pg_control"), "the manifest is encrypted");
}

/// Every file under `dir`.
fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { pending.push(path) } else { files.push(path) }
        }
    }
    files
}
