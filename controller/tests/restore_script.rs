//! `postgres-db/restore.sh`, the Kubernetes restore Job's entrypoint, run for real against
//! Debian's PostgreSQL with pg_dump output of every format.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use common::*;
use devdb_pgctl::{RunAs, StopMode, conf_quote};
use devdb_testkit::{free_port, pg};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../postgres-db/restore.sh");

/// Runs the script as the PostgreSQL user: (success, stderr).
fn restore(pgdata: &Path, url: &str) -> (bool, String) {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(SCRIPT)
        .env("PGDATA", pgdata)
        .env("BACKUP_URL", url)
        .env("DB_USER", "app")
        .env("DB_NAME", "shop")
        .env("DB_PASSWORD", "pa'ss-word")
        .env("PG_BIN", pg().binaries().dir())
        .env("JOBS", "2")
        .current_dir("/tmp");
    if let Some(RunAs { uid, gid }) = RunAs::detect().expect("user") {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("bash");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Starts the restored volume and counts `items` as the project's user over SCRAM.
async fn count_items(work: &Path, pgdata: &Path) -> String {
    let pg = pg();
    let port = free_port();
    let conf =
        format!("port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {}\n", conf_quote(work));
    std::fs::write(pgdata.join("postgresql.auto.conf"), conf).expect("conf");
    pg.start(pgdata, &work.join("log"), std::time::Duration::from_secs(60)).expect("restored volume starts");
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password("pa'ss-word")
        .dbname("shop")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as the project's user");
    tokio::spawn(conn);
    let count = query_one(&client, "SELECT count(*) FROM items").await;
    drop(client);
    pg.stop(pgdata, StopMode::Fast).expect("stop");
    count
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    pg().make_dir(dir.path()).expect("hand to postgres");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dump_format_restores_into_a_clean_stopped_volume() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    // The file:// case reads the dump as the postgres user.
    pg().give(dumps.dir.path()).expect("readable dumps");
    let sources = [
        files.url("plain.sql"),
        files.url("custom.dump"),
        files.url("archive.tar"),
        files.url("dir.tar"),
        files.url("custom.gz"),
        files.url("dir.tar.gz"),
        format!("file://{}", dumps.path("plain.sql.gz").display()),
    ];
    for url in sources {
        let work = workdir();
        let pgdata = work.path().join("pgdata");
        let (ok, stderr) = restore(&pgdata, &url);
        assert!(ok, "{url}: {stderr}");
        assert!(!pgdata.join("postmaster.pid").exists(), "{url}: stopped cleanly");
        assert_eq!(count_items(work.path(), &pgdata).await, "2500", "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_fail_with_the_reason() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    for (url, reason) in [
        (files.url("nope.dump"), "cannot download"),
        (files.url("page.html"), "is not a PostgreSQL dump"),
        (files.url("truncated.dump"), "restoring the dump failed"),
        ("ftp://example/x".to_string(), "unsupported backup location"),
    ] {
        let work = workdir();
        let (ok, stderr) = restore(&work.path().join("pgdata"), &url);
        assert!(!ok, "{url}");
        assert!(stderr.contains(reason), "{url}: {stderr}");
        assert!(pg().binaries().dir().exists());
        let running = std::fs::read_dir(work.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("postmaster.pid").exists());
        assert!(!running, "{url}: no server left running");
    }
    // A volume that already holds data is never overwritten.
    let work = workdir();
    let pgdata = work.path().join("pgdata");
    assert!(restore(&pgdata, "").0, "an empty project");
    let (ok, stderr) = restore(&pgdata, &files.url("custom.dump"));
    assert!(!ok && stderr.contains("already holds a database"), "{stderr}");
}
