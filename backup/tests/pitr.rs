//! pgBackRest against a real PostgreSQL 15 with a directory repository: a stanza is created and
//! backed up, rows are committed one at a time, and a restore to a moment between them, into a
//! new data directory while the source keeps running, holds exactly the rows committed before
//! it. A stanza written under one installation's secret cannot be read under another's.

use std::path::Path;
use std::time::{Duration, SystemTime};

use devdb_backup::config::stanza_key;
use devdb_backup::{BackupKind, PgBackRest, Repository, Stanza, Target};
use devdb_pgctl::{StopMode, conf_quote};
use devdb_testkit::{PASSWORD, TestPostgres, USER, free_port, pg};

/// Polls are bounded by about a minute (a condition ends them as soon as it holds).
const POLLS: usize = 600;

fn stanza(source: &TestPostgres, work: &str) -> Stanza {
    Stanza {
        name: "db-pitr-0001".into(),
        data_dir: source.dir().join("data"),
        port: source.port,
        socket_dir: source.dir().to_path_buf(),
        superuser: USER.into(),
        work_dir: source.dir().join(work),
        retention_full: 2,
    }
}

/// A moment by the server's own clock.
async fn server_now(client: &tokio_postgres::Client) -> SystemTime {
    let row = client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint", &[]).await.expect("now");
    let micros: i64 = row.get(0);
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).expect("after 1970"))
}

async fn ids(client: &tokio_postgres::Client) -> Vec<i32> {
    let rows = client.query("SELECT id FROM t ORDER BY id", &[]).await.expect("rows");
    rows.iter().map(|r| r.get(0)).collect()
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    client
}

/// Switches to a new WAL segment and waits until the one written is archived; the time of
/// that archiving.
async fn archive_what_was_written(client: &tokio_postgres::Client) -> SystemTime {
    let wal: String = client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.expect("switch").get(0);
    for _ in 0..POLLS {
        let row = client
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), (extract(epoch FROM last_archived_time) * 1e6)::bigint \
                 FROM pg_stat_archiver",
                &[],
            )
            .await
            .expect("archiver");
        let (archived, at): (String, Option<i64>) = (row.get(0), row.get(1));
        if archived >= wal
            && let Some(at) = at
        {
            return SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(at).expect("after 1970"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{wal} was never archived");
}

/// Starts the restored data directory on a port of its own and waits until it is promoted.
async fn start_restored(dir: &Path) -> (tokio_postgres::Client, u16) {
    let data = dir.join("restored");
    let port = free_port();
    // After what the backup carried (the source's port and socket): later lines win.
    let auto = data.join("postgresql.auto.conf");
    let current = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
    std::fs::write(&auto, format!("{current}\nport = {port}\ncluster_name = 'restored'\n")).expect("conf");
    pg().start(&data, &dir.join("restored.log"), Duration::from_secs(60)).expect("the restored copy starts");
    let client = connect(port).await;
    for _ in 0..POLLS {
        let recovering: bool = client.query_one("SELECT pg_is_in_recovery()", &[]).await.expect("state").get(0);
        if !recovering {
            return (client, port);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the restored copy never left recovery:\n{}",
        std::fs::read_to_string(dir.join("restored.log")).unwrap_or_default()
    );
}

#[tokio::test]
async fn a_restore_to_a_moment_holds_exactly_the_rows_committed_before_it() {
    let source = TestPostgres::start("pitr-source");
    let repository = Repository::Posix(source.dir().join("repo"));
    let stanza = stanza(&source, "backup");
    let key = stanza_key(b"installation-one", &stanza.name);
    let backrest = PgBackRest::configure(&repository, stanza, &key, pg().run_as()).expect("configured");
    source.reconfigure(&format!(
        "archive_mode = on\narchive_command = {}\narchive_timeout = 60\n",
        conf_quote(backrest.archive_command())
    ));
    backrest.stanza_create().await.expect("the stanza");
    backrest.backup(BackupKind::Full).await.expect("a full backup");

    let client = source.direct().await;
    // Moments from here on are after the backup's end as pgBackRest records it (whole seconds).
    let restorable_from = backrest.info().await.expect("info").window(None).expect("a window").from;
    while server_now(&client).await <= restorable_from {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .await
        .expect("table");
    for id in 1..=5 {
        client.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await.expect("insert");
    }
    let moment = server_now(&client).await;
    for id in 6..=8 {
        client.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await.expect("insert");
    }
    let archived_at = archive_what_was_written(&client).await;

    let info = backrest.info().await.expect("info");
    assert_eq!((info.status_code, info.backups.len()), (0, 1), "{info:?}");
    let window = info.window(Some(archived_at)).expect("a window");
    window.check(moment).expect("the moment is restorable");
    let before = info.backups[0].started_at - Duration::from_secs(60);
    let refused = window.check(before).expect_err("before the first backup");
    assert!(refused.to_string().contains("outside the restorable window"), "{refused}");

    let restored = source.dir().join("restored");
    pg().make_dir(&restored).expect("the restore's directory");
    backrest.restore(Target::Time(moment), &restored).await.expect("restored");
    let (copy, port) = start_restored(source.dir()).await;
    assert_eq!(ids(&copy).await, [1, 2, 3, 4, 5], "exactly what was committed before the moment");
    let last: bool = copy
        .query_one("SELECT max(at) <= to_timestamp($1::float8 / 1e6) FROM t", &[&(micros(moment) as f64)])
        .await
        .expect("times")
        .get(0);
    assert!(last, "no row after the moment");
    // The source kept running, with everything.
    assert_eq!(ids(&client).await, [1, 2, 3, 4, 5, 6, 7, 8]);
    drop(copy);
    assert_ne!(port, source.port);
    pg().stop(&restored, StopMode::Fast).expect("the copy stops");
}

fn micros(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_micros()).expect("fits")
}

#[tokio::test]
async fn a_stanza_written_under_one_secret_cannot_be_read_under_another() {
    let source = TestPostgres::start("pitr-keys");
    let repository = Repository::Posix(source.dir().join("repo"));
    let ours = stanza(&source, "ours");
    let key = stanza_key(b"installation-one", &ours.name);
    let backrest = PgBackRest::configure(&repository, ours, &key, pg().run_as()).expect("configured");
    backrest.stanza_create().await.expect("the stanza");

    // Another installation, the same repository and stanza name, its own secret.
    let theirs = stanza(&source, "theirs");
    let other_key = stanza_key(b"installation-two", &theirs.name);
    let other = PgBackRest::configure(&repository, theirs, &other_key, pg().run_as()).expect("configured");
    match other.info().await {
        Err(error) => assert!(!error.to_string().contains(&key), "no key in the error: {error}"),
        Ok(info) => assert_ne!(info.status_code, 0, "read under another key: {info:?}"),
    }
    let refused = other.stanza_create().await.expect_err("not taken over");
    assert!(!refused.to_string().contains(&other_key), "no key in the error: {refused}");
    // Its own installation still reads it.
    assert_eq!(backrest.info().await.expect("info").name, "db-pitr-0001");
}
