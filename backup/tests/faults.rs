//! Faults against a real PostgreSQL 15 and pgBackRest 2.45 with a directory repository: the
//! repository unreachable while the instance archives (the WAL waits in `pg_wal`, the gap closes
//! when it returns, a moment inside the outage restores exactly), `pg_wal` bounded by
//! `archive-push-queue-max` through a longer outage (the WAL past it dropped, the database
//! running, the next backup making the stanza restorable again), a backup killed part way, and a
//! repository file corrupted.

mod common;

use common::{
    POLL, POLLS, archive_what_was_written, archiver, archiving, ids, insert, make_table, restore, server_now,
    start_restored, switch_wal, wait_archived, wait_past,
};
use devdb_backup::config::Limits;
use devdb_backup::verify::{BadFile, Problem};
use devdb_backup::{BackupError, BackupKind, PgBackRest, Repository, Target};
use devdb_testkit::TestPostgres;
use std::path::{Path, PathBuf};

/// A WAL segment's size (PostgreSQL's default, which the tests' instances keep).
const SEGMENT: u64 = 16 << 20;

/// A source archiving into a directory repository (`repo` beside its data), backed up once, with
/// table `t` made after that backup's end.
struct Archiving {
    source: TestPostgres,
    backrest: PgBackRest,
    client: tokio_postgres::Client,
}

impl Archiving {
    async fn start(name: &str, stanza: &str, limits: Limits, extra: &str) -> Self {
        let source = TestPostgres::start(name);
        let repository = Repository::Posix(source.dir().join("repo"));
        let backrest = archiving(&source, &repository, stanza, limits, extra).await;
        backrest.backup(BackupKind::Full).await.expect("a full backup");
        let client = source.direct().await;
        let from = backrest.info().await.expect("info").window(None).expect("a window").from;
        wait_past(&client, from).await;
        make_table(&client).await;
        Self { source, backrest, client }
    }

    fn repo(&self) -> PathBuf {
        self.source.dir().join("repo")
    }

    fn data(&self) -> PathBuf {
        self.source.dir().join("data")
    }

    /// The repository made unreachable (moved away), until [`Archiving::reconnect`].
    fn disconnect(&self) {
        std::fs::rename(self.repo(), self.source.dir().join("repo-away")).expect("the repository moved away");
    }

    fn reconnect(&self) {
        std::fs::rename(self.source.dir().join("repo-away"), self.repo()).expect("the repository back");
    }

    /// Whether the repository holds WAL segment `wal`.
    fn archived(&self, wal: &str) -> bool {
        let dir = self.repo().join("archive").join(&self.backrest.stanza().name).join("15-1").join(&wal[..16]);
        names(&dir).iter().any(|n| n.starts_with(&format!("{wal}-")))
    }

    /// The segments waiting in `pg_wal` to be archived.
    fn ready(&self) -> Vec<String> {
        let mut ready: Vec<String> = names(&self.data().join("pg_wal/archive_status"))
            .into_iter()
            .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
            .collect();
        ready.sort();
        ready
    }

    /// Bytes of the files in `pg_wal` (segments and their status files).
    fn pg_wal_bytes(&self) -> u64 {
        let entries = std::fs::read_dir(self.data().join("pg_wal")).expect("pg_wal");
        entries.filter_map(Result::ok).filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
    }

    /// When the instance's postmaster started (it changes if the database stopped).
    async fn started_at(&self) -> String {
        let row = self.client.query_one("SELECT pg_postmaster_start_time()::text", &[]).await.expect("start time");
        row.get(0)
    }
}

fn names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// Waits until the archiver has tried again since `before` (failed or archived).
async fn archiver_tried(client: &tokio_postgres::Client, before: &common::Archiver) -> common::Archiver {
    for _ in 0..POLLS {
        let now = archiver(client).await;
        if now.failed_count > before.failed_count || now.archived_count > before.archived_count {
            return now;
        }
        tokio::time::sleep(POLL / 4).await;
    }
    panic!("the archiver never tried again: {before:?}");
}

#[tokio::test]
async fn an_unreachable_repository_keeps_the_wal_and_the_gap_closes_when_it_returns() {
    let db = Archiving::start("faults-outage", "db-faults-0001", Limits::default(), "").await;
    let client = &db.client;
    insert(client, 1..=3).await;
    archive_what_was_written(client).await;
    let before = archiver(client).await;

    db.disconnect();
    insert(client, 4..=5).await;
    let moment = server_now(client).await;
    let mut outage = Vec::new();
    for id in 6..=8 {
        insert(client, id..=id).await;
        outage.push(switch_wal(client).await);
    }
    // The archiver fails on the first segment of the outage and keeps every one of them.
    let mut failing = archiver(client).await;
    while failing.failed_count <= before.failed_count {
        failing = archiver_tried(client, &failing).await;
    }
    assert_eq!(failing.last_failed_wal, outage[0], "{failing:?}");
    assert_eq!(failing.last_archived_wal, before.last_archived_wal, "nothing archived while it is away");
    assert_eq!(db.ready(), outage, "the outage's segments wait in pg_wal");
    for wal in &outage {
        assert!(db.data().join("pg_wal").join(wal).is_file(), "{wal} kept");
    }
    assert_eq!(ids(client).await, [1, 2, 3, 4, 5, 6, 7, 8], "commits go on");

    db.reconnect();
    insert(client, 9..=9).await;
    let last = switch_wal(client).await;
    let caught_up = wait_archived(client, &last).await;
    assert_eq!(caught_up.last_archived_wal, last);
    for wal in outage.iter().chain([&last]) {
        assert!(db.archived(wal), "{wal} in the repository");
    }
    assert_eq!(db.ready(), Vec::<String>::new(), "nothing left waiting");

    let restored = restore(&db.backrest, Target::Time(moment), db.source.dir(), "restored").await;
    let copy = start_restored(&restored).await.expect("the restored copy starts");
    assert_eq!(ids(&copy.client).await, [1, 2, 3, 4, 5], "exactly what was committed before the moment");
}

#[tokio::test]
async fn a_long_outage_drops_wal_past_the_queue_limit_and_the_database_keeps_running() {
    let limits = Limits { archive_queue_max: 64 << 20 };
    // A small max_wal_size so checkpoints recycle little: pg_wal is then the queue and a few segments.
    let extra = "max_wal_size = 32MB\nmin_wal_size = 32MB\n";
    let db = Archiving::start("faults-queue", "db-faults-0002", limits, extra).await;
    let client = &db.client;
    insert(client, 1..=1).await;
    let before_outage = server_now(client).await;
    insert(client, 2..=2).await;
    archive_what_was_written(client).await;
    let started_at = db.started_at().await;

    db.disconnect();
    // Four times the limit, a segment at a time, each looked at by the archiver before the next.
    let rounds = 4 * limits.archive_queue_max / SEGMENT;
    let mut largest = 0;
    let mut state = archiver(client).await;
    for round in 0..rounds {
        let id = 100 + i32::try_from(round).expect("few");
        insert(client, id..=id).await;
        switch_wal(client).await;
        state = archiver_tried(client, &state).await;
        largest = largest.max(db.pg_wal_bytes());
        client.batch_execute("CHECKPOINT").await.expect("checkpoint");
        largest = largest.max(db.pg_wal_bytes());
    }
    // The queue (at most the limit and the segment that crossed it, plus the one written since
    // the archiver last looked), the current segment and the two max_wal_size recycles.
    let margin = 6 * SEGMENT;
    assert!(
        largest <= limits.archive_queue_max + margin,
        "pg_wal reached {} MiB with a {} MiB limit",
        largest >> 20,
        limits.archive_queue_max >> 20
    );
    assert!(state.archived_count > 0, "the dropped segments count as archived: {state:?}");
    let log = db.source.log();
    let dropped: Vec<&str> = log
        .lines()
        .filter_map(|l| l.split_once("dropped WAL file '")?.1.split_once("' because archive queue exceeded 64MB"))
        .map(|(wal, _)| wal)
        .collect();
    assert!(!dropped.is_empty(), "pgBackRest says what it dropped:\n{log}");
    assert_eq!(db.started_at().await, started_at, "the database never stopped");
    assert_eq!(ids(client).await.len(), 2 + usize::try_from(rounds).expect("few"), "every commit kept");

    // Back: archiving goes on after the gap, which the repository never gets.
    db.reconnect();
    insert(client, 1000..=1000).await;
    let after_gap = server_now(client).await;
    archive_what_was_written(client).await;
    assert!(dropped.iter().all(|wal| !db.archived(wal)), "dropped WAL never reaches the repository: {dropped:?}");

    // Before the gap restores; past it, the old backup cannot get there: PostgreSQL refuses.
    let restored = restore(&db.backrest, Target::Time(before_outage), db.source.dir(), "before-gap").await;
    let copy = start_restored(&restored).await.expect("a moment before the gap");
    assert_eq!(ids(&copy.client).await, [1]);
    drop(copy);
    let across = restore(&db.backrest, Target::Time(after_gap), db.source.dir(), "across-gap").await;
    let refused = start_restored(&across).await.err().expect("no restore across dropped WAL");
    assert!(refused.contains("recovery ended before configured recovery target was reached"), "{refused}");

    // The next backup (an incremental one is enough) is restorable again, to everything.
    db.backrest.backup(BackupKind::Incr).await.expect("a backup after the gap");
    insert(client, 1001..=1001).await;
    archive_what_was_written(client).await;
    let restored = restore(&db.backrest, Target::Latest, db.source.dir(), "after-gap").await;
    let copy = start_restored(&restored).await.expect("restorable again");
    assert_eq!(ids(&copy.client).await, ids(client).await);
}

/// The processes of `stanza`'s backups (the command and its local workers).
fn backup_processes(stanza: &str) -> Vec<u32> {
    let stanza = format!("--stanza={stanza}");
    names(Path::new("/proc"))
        .iter()
        .filter_map(|pid| pid.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&stanza.as_bytes()) && args.iter().any(|a| *a == b"backup" || *a == b"backup:local")
        })
        .collect()
}

#[tokio::test]
async fn a_backup_killed_part_way_is_never_listed_and_the_next_one_restores() {
    let db = Archiving::start("faults-kill", "db-faults-0003", Limits::default(), "").await;
    let client = &db.client;
    let stanza = db.backrest.stanza().name.clone();
    insert(client, 1..=3).await;
    // About 30 MB that compresses little: copying it takes the backup far longer than a poll.
    client
        .batch_execute("CREATE TABLE big AS SELECT g, md5(g::text) AS a, md5((g * 7)::text) AS b FROM generate_series(1, 300000) g")
        .await
        .expect("a larger table");
    archive_what_was_written(client).await;
    let first = db.backrest.info().await.expect("info").backups;
    assert_eq!(first.len(), 1);

    let mut backup = db.backrest.backup_command(BackupKind::Full).spawn().expect("pgbackrest backup");
    let backups = db.repo().join("backup").join(&stanza);
    let mut killed = None;
    for _ in 0..POLLS {
        // Its label's directory, with files written into it.
        killed = names(&backups)
            .into_iter()
            .find(|n| n.ends_with('F') && *n != first[0].label && !names(&backups.join(n).join("pg_data")).is_empty());
        if killed.is_some() {
            break;
        }
        assert!(backup.try_wait().expect("the backup").is_none(), "the backup ended on its own");
        tokio::time::sleep(POLL / 10).await;
    }
    let killed = killed.unwrap_or_else(|| {
        let listed: Vec<_> = names(&backups).into_iter().map(|n| (names(&backups.join(&n)), n)).collect();
        panic!("the backup never started writing: {listed:?}")
    });
    backup.start_kill().expect("SIGKILL");
    backup.wait().await.expect("killed");
    for _ in 0..POLLS {
        if backup_processes(&stanza).is_empty() {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(backup_processes(&stanza), Vec::<u32>::new(), "its workers are gone");

    assert!(!backups.join(&killed).join("backup.manifest").exists(), "killed before its end");

    let info = db.backrest.info().await.expect("info");
    assert_eq!(info.backups, first, "the killed backup {killed} is not listed");
    assert!(backups.join(&killed).is_dir(), "its files are left for the next backup");

    insert(client, 4..=5).await;
    db.backrest.backup(BackupKind::Full).await.expect("the next backup");
    let info = db.backrest.info().await.expect("info");
    assert_eq!((info.status_code, info.backups.len()), (0, 2), "{info:?}");
    assert_eq!(info.backups[0], first[0]);
    db.backrest.verify().await.expect("every listed backup is whole");
    // pgBackRest resumed the killed one (same kind): what it had copied and still checks out is kept.
    assert_eq!(info.backups[1].label, killed, "the next full backup resumes the killed one");
    let on_disk: Vec<String> = names(&backups).into_iter().filter(|n| n.ends_with('F')).collect();
    assert_eq!(on_disk.len(), 2, "no broken backup left: {on_disk:?}");

    insert(client, 6..=6).await;
    archive_what_was_written(client).await;
    let restored = restore(&db.backrest, Target::Latest, db.source.dir(), "restored").await;
    let copy = start_restored(&restored).await.expect("the restored copy starts");
    assert_eq!(ids(&copy.client).await, [1, 2, 3, 4, 5, 6]);
}

/// Flips four bytes in the middle of `file`.
fn flip_bytes(file: &Path) {
    let mut bytes = std::fs::read(file).expect("the file");
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 4] {
        *b ^= 0xff;
    }
    std::fs::write(file, bytes).expect("corrupted");
}

#[tokio::test]
async fn verify_names_each_corrupted_file_of_the_repository() {
    let db = Archiving::start("faults-corrupt", "db-faults-0004", Limits::default(), "").await;
    let client = &db.client;
    for id in 1..=2 {
        insert(client, id..=id).await;
        archive_what_was_written(client).await;
    }
    db.backrest.verify().await.expect("a sound repository");

    let label = db.backrest.info().await.expect("info").backups[0].label.clone();
    let stanza = db.backrest.stanza().name.clone();
    // The last segment archived (pgBackRest reads the first of an archive for its segment size,
    // and stops at once when that one is corrupted), and a backup's table file.
    let archive = db.repo().join("archive").join(&stanza).join("15-1/0000000100000000");
    let mut segments: Vec<String> = names(&archive).into_iter().filter(|n| n.ends_with(".zst")).collect();
    segments.sort();
    let segment = segments.last().expect("archived WAL").clone();
    let table = format!("{label}/pg_data/global/1260.zst");
    flip_bytes(&archive.join(&segment));
    flip_bytes(&db.repo().join("backup").join(&stanza).join(&table));

    let error = db.backrest.verify().await.expect_err("corruption found");
    let BackupError::Verify(findings) = &error else { panic!("not a finding: {error}") };
    let mut named: Vec<&str> = findings.bad_files.iter().map(|f| f.path.as_str()).collect();
    named.sort_unstable();
    assert_eq!(named, [format!("15-1/0000000100000000/{segment}"), table.clone()], "{error}");
    // Whether the garbled block still decompresses (a checksum that does not match) or not (a
    // file that cannot be read through) depends on the file's random salt.
    for BadFile { problem, .. } in &findings.bad_files {
        assert!(matches!(problem, Problem::InvalidChecksum | Problem::InvalidResult), "{error}");
    }
    assert!(error.to_string().contains(&table), "{error}");
    assert!(findings.report.iter().any(|l| l == "status: error"), "{findings:?}");
}
