//! pgBackRest against a real PostgreSQL 15 with a directory repository: a stanza is created and
//! backed up, rows are committed one at a time, and a restore to a moment between them, into a
//! new data directory while the source keeps running, holds exactly the rows committed before
//! it. A stanza written under one installation's secret cannot be read under another's.

mod common;

use common::scenarios;
use devdb_backup::Repository;
use devdb_testkit::TestPostgres;

#[tokio::test]
async fn a_restore_to_a_moment_holds_exactly_the_rows_committed_before_it() {
    let source = TestPostgres::start("pitr-source");
    let repository = Repository::Posix(source.dir().join("repo"));
    scenarios::a_restore_to_a_moment_holds_exactly_the_rows_committed_before_it(&source, &repository).await;
}

#[tokio::test]
async fn a_stanza_written_under_one_secret_cannot_be_read_under_another() {
    let source = TestPostgres::start("pitr-keys");
    let repository = Repository::Posix(source.dir().join("repo"));
    scenarios::a_stanza_written_under_one_secret_cannot_be_read_under_another(&source, &repository).await;
}
