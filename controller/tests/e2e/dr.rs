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

/// Measures what a lost installation loses and how long it takes to come back (run by hand:
/// `cargo test -p devdb-controller --test e2e dr::measure -- --ignored --nocapture`): ten
/// databases with backups commit a row every 200 ms each; then the installation is lost
/// without a clean stop (the controller and every PostgreSQL server killed, the data directory
/// deleted). RPO: per database, the seconds between its last commit and the last one restored;
/// RTO: from `devdb dr restore --all` starting to every database answering through the proxy
/// of the new installation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: minutes long"]
async fn measure_rpo_and_rto_with_ten_databases() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
    const DATABASES: usize = 10;
    let outside = tempfile::tempdir().expect("tempdir");
    let repo = outside.path().join("repo");
    let repo = repo.to_str().expect("utf-8");
    let mut first = with_empty_project(&["--lifecycle-check-every", "200ms", "--backup-repo", repo]).await;
    let names: Vec<String> = (0..DATABASES).map(|i| format!("db-{i}")).collect();
    let (stop, mut writers, mut last_commits) = (Arc::new(AtomicBool::new(false)), Vec::new(), Vec::new());
    for name in &names {
        let (status, body) = first
            .call(
                reqwest::Method::POST,
                "/v1/databases?wait=true",
                Some(serde_json::json!({"name": name, "project": "shop", "backup": {"enabled": true}})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        let client = first.connect_retrying(&backed_up(&first, name).await).await;
        client
            .batch_execute(
                "CREATE TABLE t (id serial, at timestamptz DEFAULT clock_timestamp(), note text); \
                 INSERT INTO t (note) SELECT repeat('x', 100) FROM generate_series(1, 10000)",
            )
            .await
            .expect("its rows");
        let (stop, last) = (stop.clone(), Arc::new(AtomicI64::new(0)));
        last_commits.push(last.clone());
        writers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let Ok(row) = client
                    .query_one("INSERT INTO t (note) VALUES ('w') RETURNING (extract(epoch FROM at) * 1e6)::int8", &[])
                    .await
                else {
                    break;
                };
                last.store(row.get(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let key = outside.path().join("backup-secret");
    std::fs::copy(first.data_dir.join("backup/secret"), &key).expect("a copy of the backup secret");
    listed(repo, &key, &names.iter().map(String::as_str).collect::<Vec<_>>());
    // Long enough for every database to pass an archive_timeout (60 s) at least once.
    tokio::time::sleep(Duration::from_secs(75)).await;
    first.kill().await;
    for (pid, _) in first.postmasters() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    std::fs::remove_dir_all(&first.data_dir).expect("the data directory deleted");

    let key = key.to_str().expect("utf-8").to_string();
    let started = Instant::now();
    let mut restored_in = Duration::ZERO;
    let second = DevDb::start_in(&["--backup-repo", repo], |data| {
        let data = data.to_str().expect("utf-8");
        let (ok, out, err) =
            devdb_blocking(&["dr", "restore", "--repo", repo, "--key-file", &key, "--all", "--data-dir", data]);
        assert!(ok, "{out}{err}");
        restored_in = started.elapsed();
    })
    .await;
    let mut lost = Vec::new();
    for (name, last) in names.iter().zip(&last_commits) {
        let database = second.database(name).await.expect("back");
        let client = second.connect_retrying(&database).await;
        let row = client
            .query_one("SELECT (extract(epoch FROM max(at)) * 1e6)::int8 FROM t", &[])
            .await
            .expect("its newest row");
        let restored: i64 = row.get(0);
        lost.push((last.load(Ordering::Relaxed) - restored) as f64 / 1e6);
    }
    let answering_in = started.elapsed();
    lost.sort_by(f64::total_cmp);
    eprintln!(
        "RPO (seconds of commits lost, {DATABASES} databases, archive_timeout 60 s): min {:.1}, median {:.1}, max {:.1}",
        lost[0],
        lost[DATABASES / 2],
        lost[DATABASES - 1]
    );
    eprintln!(
        "RTO: {DATABASES} databases restored in {:.1} s (devdb dr restore --all); all answering through the new \
         installation's proxy after {:.1} s",
        restored_in.as_secs_f64(),
        answering_in.as_secs_f64()
    );
}
