//! What every kind of repository must do, written once and run against each (`pitr.rs`: a
//! directory; `s3.rs`: an S3 store over TLS): a restore to a moment holds exactly the rows
//! committed before it, and a stanza written under one installation's secret is refused under
//! another's.

use std::time::Duration;

use devdb_backup::config::{Limits, stanza_key};
use devdb_backup::{BackupKind, PgBackRest, Repository, Target};
use devdb_testkit::{TestPostgres, pg};

use super::{archive_what_was_written, ids, insert, make_table, micros, restore, server_now, stanza, start_restored};

/// `source` archives into `repository` and is backed up; rows 1-5 are committed before a moment
/// and 6-8 after it; a restore to that moment, into a new data directory while the source keeps
/// running, holds rows 1-5 only. A moment before the backup is refused with the window.
pub async fn a_restore_to_a_moment_holds_exactly_the_rows_committed_before_it(
    source: &TestPostgres,
    repository: &Repository,
) {
    let backrest = super::archiving(source, repository, "db-pitr-0001", Limits::default(), "").await;
    backrest.backup(BackupKind::Full).await.expect("a full backup");

    let client = source.direct().await;
    // Moments from here on are after the backup's end as pgBackRest records it (whole seconds).
    let restorable_from = backrest.info().await.expect("info").window(None).expect("a window").from;
    super::wait_past(&client, restorable_from).await;
    make_table(&client).await;
    insert(&client, 1..=5).await;
    let moment = server_now(&client).await;
    insert(&client, 6..=8).await;
    let archived_at = archive_what_was_written(&client).await;

    let info = backrest.info().await.expect("info");
    assert_eq!((info.status_code, info.backups.len()), (0, 1), "{info:?}");
    let window = info.window(Some(archived_at)).expect("a window");
    window.check(moment).expect("the moment is restorable");
    let before = info.backups[0].started_at - Duration::from_secs(60);
    let refused = window.check(before).expect_err("before the first backup");
    assert!(refused.to_string().contains("outside the restorable window"), "{refused}");

    let restored = restore(&backrest, Target::Time(moment), source.dir(), "restored").await;
    let copy = start_restored(&restored).await.expect("the restored copy starts");
    assert_eq!(ids(&copy.client).await, [1, 2, 3, 4, 5], "exactly what was committed before the moment");
    let last: bool = copy
        .client
        .query_one("SELECT max(at) <= to_timestamp($1::float8 / 1e6) FROM t", &[&(micros(moment) as f64)])
        .await
        .expect("times")
        .get(0);
    assert!(last, "no row after the moment");
    // The source kept running, with everything.
    assert_eq!(ids(&client).await, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_ne!(copy.port, source.port);
}

/// A stanza created in `repository` under one installation's secret is neither read nor taken
/// over by another installation (same repository, same stanza name, its own secret), and no
/// error shows a key.
pub async fn a_stanza_written_under_one_secret_cannot_be_read_under_another(
    source: &TestPostgres,
    repository: &Repository,
) {
    let ours = stanza(source, "db-pitr-0001", "ours");
    let key = stanza_key(b"installation-one", &ours.name);
    let backrest = PgBackRest::configure(repository, ours, &key, pg().run_as()).expect("configured");
    backrest.stanza_create().await.expect("the stanza");

    let theirs = stanza(source, "db-pitr-0001", "theirs");
    let other_key = stanza_key(b"installation-two", &theirs.name);
    let other = PgBackRest::configure(repository, theirs, &other_key, pg().run_as()).expect("configured");
    match other.info().await {
        Err(error) => assert!(!error.to_string().contains(&key), "no key in the error: {error}"),
        Ok(info) => assert_ne!(info.status_code, 0, "read under another key: {info:?}"),
    }
    let refused = other.stanza_create().await.expect_err("not taken over");
    assert!(!refused.to_string().contains(&other_key), "no key in the error: {refused}");
    // Its own installation still reads it.
    assert_eq!(backrest.info().await.expect("info").name, "db-pitr-0001");
}
