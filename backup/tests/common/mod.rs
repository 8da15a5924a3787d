//! What the backup tests share: a source instance archiving into a stanza, the server's clock,
//! its archiver's state, and restored copies started on ports of their own. Each test file uses
//! part of it.
#![allow(dead_code)]

pub mod scenarios;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use devdb_backup::config::{Limits, stanza_key};
use devdb_backup::{PgBackRest, Repository, Stanza, Target};
use devdb_pgctl::{StopMode, conf_quote};
use devdb_testkit::{PASSWORD, TestPostgres, USER, free_port, pg};

/// Polls are bounded by about a minute (a condition ends them as soon as it holds).
pub const POLLS: usize = 600;
/// Between polls.
pub const POLL: Duration = Duration::from_millis(100);

/// The stanza `name` of `source`'s instance, with its pgBackRest work directory in `work`
/// (under the source's directory).
pub fn stanza(source: &TestPostgres, name: &str, work: &str) -> Stanza {
    Stanza {
        name: name.into(),
        data_dir: source.dir().join("data"),
        port: source.port,
        socket_dir: source.dir().to_path_buf(),
        superuser: USER.into(),
        work_dir: source.dir().join(work),
        retention: devdb_backup::Retention::default(),
    }
}

/// `source` archiving into the stanza `name` of `repository` (configured within `limits`,
/// created, not yet backed up), `extra` appended to its configuration.
pub async fn archiving(
    source: &TestPostgres,
    repository: &Repository,
    name: &str,
    limits: Limits,
    extra: &str,
) -> PgBackRest {
    let stanza = stanza(source, name, "backup");
    let key = stanza_key(b"installation-one", &stanza.name);
    let backrest = PgBackRest::configure_with(repository, stanza, &key, pg().run_as(), limits).expect("configured");
    source.reconfigure(&format!(
        "archive_mode = on\narchive_command = {}\narchive_timeout = 60\n{extra}",
        conf_quote(backrest.archive_command())
    ));
    backrest.stanza_create().await.expect("the stanza");
    backrest
}

/// A moment by the server's own clock.
pub async fn server_now(client: &tokio_postgres::Client) -> SystemTime {
    let row = client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint", &[]).await.expect("now");
    from_micros(row.get(0))
}

/// Waits until the server's clock is past `moment` (pgBackRest records backups' ends in whole
/// seconds).
pub async fn wait_past(client: &tokio_postgres::Client, moment: SystemTime) {
    while server_now(client).await <= moment {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn from_micros(micros: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).expect("after 1970"))
}

pub fn micros(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(SystemTime::UNIX_EPOCH).expect("after 1970").as_micros()).expect("fits")
}

/// The ids in table `t`, in order.
pub async fn ids(client: &tokio_postgres::Client) -> Vec<i32> {
    let rows = client.query("SELECT id FROM t ORDER BY id", &[]).await.expect("rows");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Makes table `t`, whose rows record when they were committed.
pub async fn make_table(client: &tokio_postgres::Client) {
    client
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
        .await
        .expect("table");
}

/// Commits the rows `ids`, one transaction each.
pub async fn insert(client: &tokio_postgres::Client, ids: std::ops::RangeInclusive<i32>) {
    for id in ids {
        client.execute("INSERT INTO t (id) VALUES ($1)", &[&id]).await.expect("insert");
    }
}

pub async fn connect(port: u16) -> tokio_postgres::Client {
    try_connect(port).await.expect("connect")
}

async fn try_connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(USER)
        .password(PASSWORD)
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Switches to a new WAL segment; the name of the one it closed.
pub async fn switch_wal(client: &tokio_postgres::Client) -> String {
    client.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.expect("switch").get(0)
}

/// `pg_stat_archiver`, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archiver {
    pub archived_count: i64,
    pub last_archived_wal: String,
    pub last_archived_at: Option<SystemTime>,
    pub failed_count: i64,
    pub last_failed_wal: String,
}

pub async fn archiver(client: &tokio_postgres::Client) -> Archiver {
    let row = client
        .query_one(
            "SELECT archived_count, coalesce(last_archived_wal, ''), \
             (extract(epoch FROM last_archived_time) * 1e6)::bigint, failed_count, coalesce(last_failed_wal, '') \
             FROM pg_stat_archiver",
            &[],
        )
        .await
        .expect("archiver");
    Archiver {
        archived_count: row.get(0),
        last_archived_wal: row.get(1),
        last_archived_at: row.get::<_, Option<i64>>(2).map(from_micros),
        failed_count: row.get(3),
        last_failed_wal: row.get(4),
    }
}

/// Waits until `wal` is archived (or a later segment); the archiver then.
pub async fn wait_archived(client: &tokio_postgres::Client, wal: &str) -> Archiver {
    for _ in 0..POLLS {
        let state = archiver(client).await;
        if state.last_archived_wal.as_str() >= wal && state.last_archived_at.is_some() {
            return state;
        }
        tokio::time::sleep(POLL).await;
    }
    panic!("{wal} was never archived: {:?}", archiver(client).await);
}

/// Switches to a new WAL segment and waits until the one written is archived; the time of
/// that archiving.
pub async fn archive_what_was_written(client: &tokio_postgres::Client) -> SystemTime {
    let wal = switch_wal(client).await;
    wait_archived(client, &wal).await.last_archived_at.expect("archived at")
}

/// A restored copy, running on a port of its own; stopped on drop.
pub struct Restored {
    pub client: tokio_postgres::Client,
    pub port: u16,
    data: PathBuf,
}

impl Drop for Restored {
    fn drop(&mut self) {
        let _ = pg().stop(&self.data, StopMode::Immediate);
    }
}

/// Restores `backrest`'s stanza to `target` into `dir/<name>` (made for it); the data directory.
pub async fn restore(backrest: &PgBackRest, target: Target, dir: &Path, name: &str) -> PathBuf {
    let data = dir.join(name);
    pg().make_dir(&data).expect("the restore's directory");
    backrest.restore(target, &data).await.expect("restored");
    data
}

/// Starts the restored data directory `data` on a port of its own and waits until it is
/// promoted; its log when it does not get there (it is stopped then).
pub async fn start_restored(data: &Path) -> Result<Restored, String> {
    let started = promoted(data).await;
    if started.is_err() {
        let _ = pg().stop(data, StopMode::Immediate);
    }
    started
}

async fn promoted(data: &Path) -> Result<Restored, String> {
    let port = free_port();
    let log = data.with_extension("log");
    // After what the backup carried (the source's port and socket): later lines win.
    let auto = data.join("postgresql.auto.conf");
    let current = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
    std::fs::write(&auto, format!("{current}\nport = {port}\ncluster_name = 'restored'\n")).expect("conf");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    if let Err(error) = pg().start(data, &log, Duration::from_secs(60)) {
        return Err(format!("{error}\n{}", read_log()));
    }
    let failed = |error: tokio_postgres::Error| format!("{error}\n{}", read_log());
    let client = try_connect(port).await.map_err(failed)?;
    for _ in 0..POLLS {
        let recovering: bool = client.query_one("SELECT pg_is_in_recovery()", &[]).await.map_err(failed)?.get(0);
        if !recovering {
            return Ok(Restored { client, port, data: data.to_path_buf() });
        }
        tokio::time::sleep(POLL).await;
    }
    Err(format!("the restored copy never left recovery:\n{}", read_log()))
}
