//! Disaster recovery with the real pgBackRest and PostgreSQL: an installation whose backup
//! repository is outside its data directory is stopped and its data directory deleted; a new
//! one on other ports, given the repository and a copy of the lost one's backup secret, lists
//! what the repository holds (`devdb dr status`) and brings every database back (`devdb dr
//! restore NAME`, then `devdb up --restore-from` for the rest) with its name, owner, password
//! and rows, archiving into the same repository from then on. Another key is refused.

use std::path::Path;
use std::time::{Duration, Instant};

use devdb_shared::api::{Database, ProjectStatus};

use crate::common::*;

/// `devdb ARGS` with no controller to talk to: (success, stdout, stderr).
fn devdb_blocking(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_devdb")).args(args).output().expect("run devdb");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Waits until `name` has its first backup (the schedule takes it once it runs).
async fn backed_up(devdb: &DevDb, name: &str) -> Database {
    for _ in 0..1200 {
        let database = devdb.database(name).await.expect("the database");
        if database.backup.as_ref().is_some_and(|b| b.restorable_from.is_some()) {
            return database;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} never backed up:\n{}", devdb.log());
}

/// Waits until the repository's state lists every one of `names` with its backup.
fn listed(repo: &str, key: &Path, names: &[&str]) -> String {
    let key = key.to_str().expect("utf-8");
    let mut last = String::new();
    for _ in 0..300 {
        let (ok, out, err) = devdb_blocking(&["dr", "status", "--repo", repo, "--key-file", key]);
        if ok
            && names
                .iter()
                .all(|n| out.lines().any(|l| l.starts_with(n) && !l.contains("none yet") && !l.contains("no backups")))
        {
            return out;
        }
        last = format!("{out}{err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the repository's state never listed {names:?}:\n{last}");
}

async fn rows(devdb: &DevDb, name: &str) -> Vec<String> {
    let database = devdb.database(name).await.expect("the database");
    let client = devdb.connect_retrying(&database).await;
    let rows = client.query("SELECT note FROM t ORDER BY id", &[]).await.expect("its rows");
    rows.iter().map(|r| r.get::<_, String>(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_installation_comes_back_from_its_repository_with_names_passwords_and_rows() {
    let outside = tempfile::tempdir().expect("tempdir");
    let repo = outside.path().join("repo");
    let repo = repo.to_str().expect("utf-8");
    let mut first = with_empty_project(&["--lifecycle-check-every", "200ms", "--backup-repo", repo]).await;
    let mut passwords = Vec::new();
    for name in ["kate-pg", "tom-pg"] {
        let (ok, out, err) = first.cli(&["db", "create", name, "--project", "shop", "--backup"]).await;
        assert!(ok, "{out}{err}");
        let database = backed_up(&first, name).await;
        let client = first.connect_retrying(&database).await;
        client
            .batch_execute(&format!(
                "CREATE TABLE t (id int, note text); INSERT INTO t VALUES (1, '{name} before'), (2, '{name} after')"
            ))
            .await
            .expect("rows written after its backup");
        passwords.push(database.password);
    }
    let key = outside.path().join("backup-secret");
    std::fs::copy(first.data_dir.join("backup/secret"), &key).expect("a copy of the backup secret");
    let status = listed(repo, &key, &["kate-pg", "tom-pg"]);
    assert!(status.contains("project shop"), "{status}");
    let document = std::fs::read(Path::new(repo).join("devdb/state.enc")).expect("the state document");
    for password in &passwords {
        assert!(!document.windows(password.len()).any(|w| w == password.as_bytes()), "a password in the clear");
    }

    // The installation is lost: its controller gone, its instances stopped (a clean stop
    // archives the last WAL segment), its data directory deleted.
    first.kill().await;
    let data_dir = first.data_dir.to_str().expect("utf-8").to_string();
    let (ok, out, err) = first.cli(&["down", "--data-dir", &data_dir]).await;
    assert!(ok, "{out}{err}");
    std::fs::remove_dir_all(&first.data_dir).expect("the data directory deleted");

    // Another key opens nothing.
    let wrong = outside.path().join("wrong-secret");
    std::fs::write(&wrong, "another installation's secret").expect("a wrong key");
    let (ok, out, err) =
        devdb_blocking(&["dr", "status", "--repo", repo, "--key-file", wrong.to_str().expect("utf-8")]);
    assert!(!ok && err.contains("cannot be opened with this key"), "{out}{err}");

    // A new installation: one database restored by name, then the rest as it starts.
    let key_path = key.to_str().expect("utf-8").to_string();
    let started = Instant::now();
    let second = DevDb::start_in(
        &[
            "--lifecycle-check-every",
            "200ms",
            "--backup-repo",
            repo,
            "--restore-from",
            repo,
            "--backup-key-file",
            &key_path,
        ],
        |data| {
            let data = data.to_str().expect("utf-8");
            let (ok, out, err) = devdb_blocking(&[
                "dr",
                "restore",
                "--repo",
                repo,
                "--key-file",
                &key_path,
                "kate-pg",
                "--data-dir",
                data,
            ]);
            assert!(ok && out.contains("restored kate-pg"), "{out}{err}");
            assert!(!out.contains("tom-pg"), "only the one named: {out}");
        },
    )
    .await;
    eprintln!("both restored and the controller serving in {:?}", started.elapsed());
    for (name, password) in ["kate-pg", "tom-pg"].into_iter().zip(&passwords) {
        let database = second.database(name).await.unwrap_or_else(|| panic!("{name} is back:\n{}", second.log()));
        assert_eq!(&database.password, password, "{name}'s password is the one it had");
        assert_eq!(database.project.as_str(), "shop");
        assert_eq!(rows(&second, name).await, [format!("{name} before"), format!("{name} after")]);
    }
    // It archives into the same repository and is backed up there again.
    let client = second.connect_retrying(&backed_up(&second, "tom-pg").await).await;
    client.batch_execute("INSERT INTO t VALUES (3, 'tom-pg again')").await.expect("written after the restore");
    assert_eq!(second.settled_project("shop").await.status, ProjectStatus::Ready, "restored again from its source");
}
