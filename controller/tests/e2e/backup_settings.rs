//! Backups turned on and off on a running database with the real pgBackRest: `devdb db backup
//! NAME --on` restarts it archiving, with its stanza keeping full backups for the days asked
//! for, and it is backed up; `--off` restarts it without archiving, and what was backed up stays
//! in the repository.

use std::time::Duration;

use crate::common::*;

async fn archive_mode(devdb: &DevDb) -> String {
    let database = devdb.database("kate-pg").await.expect("the database");
    let client = devdb.connect_retrying(&database).await;
    client.query_one("SHOW archive_mode", &[]).await.expect("SHOW archive_mode").get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_turned_on_archive_and_back_up_a_running_database_and_turned_off_stop_archiving() {
    let devdb = with_empty_project(&["--lifecycle-check-every", "200ms"]).await;
    let (ok, out, err) = devdb.cli(&["db", "create", "kate-pg", "--project", "shop"]).await;
    assert!(ok, "{out}{err}");
    assert_eq!(archive_mode(&devdb).await, "off");

    let (ok, out, err) =
        devdb.cli(&["db", "backup", "kate-pg", "--on", "--schedule", "hourly", "--retention", "7d"]).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("hourly, full backups kept 7d"), "{out}");
    let mut backed_up = None;
    for _ in 0..600 {
        let backup = devdb.database("kate-pg").await.and_then(|d| d.backup).expect("backups on");
        assert_eq!(backup.warning, None, "{}", devdb.log());
        if backup.last_backup_at.is_some() {
            backed_up = Some(backup);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let backup = backed_up.unwrap_or_else(|| panic!("never backed up:\n{}", devdb.log()));
    assert_eq!((backup.schedule.as_deref(), backup.retention.as_deref()), (Some("hourly"), Some("7d")));
    assert_eq!(archive_mode(&devdb).await, "on", "restarted archiving");
    let configs: Vec<String> = files_under(&devdb.data_dir.join("backup"))
        .into_iter()
        .filter(|p| p.ends_with("pgbackrest.conf"))
        .map(|p| std::fs::read_to_string(p).expect("a stanza's configuration"))
        .collect();
    assert!(
        configs.iter().any(|c| c.contains("\nrepo1-retention-full-type=time\nrepo1-retention-full=7\n")),
        "its stanza keeps full backups 7 days: {configs:?}"
    );
    let repository = devdb.data_dir.join("backups").join("backup");
    let kept = files_under(&repository).len();
    assert!(kept > 0, "the backup is in the repository");

    let (ok, out, err) = devdb.cli(&["db", "backup", "kate-pg", "--off"]).await;
    assert!(ok, "{out}{err}");
    let mut mode = String::new();
    for _ in 0..300 {
        mode = archive_mode(&devdb).await;
        if mode == "off" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mode, "off", "restarted without archiving:\n{}", devdb.log());
    assert_eq!(devdb.database("kate-pg").await.and_then(|d| d.backup), None);
    assert_eq!(files_under(&repository).len(), kept, "what was backed up stays");
}
