//! pgBackRest against a real PostgreSQL 15 with an S3 repository: moto's S3 server over TLS,
//! its certificate checked against a CA of its own (`repo1-storage-ca-file`), path-style
//! addressing and a key given as an operator gives it (the AWS_* variables). The same tests as
//! the directory repository's (`common::scenarios`): a restore to a moment holds exactly the rows
//! committed before it, and another installation's secret is refused on the same stanza.

mod common;

use common::scenarios;
use devdb_backup::{Repository, S3Credentials, S3Settings};
use devdb_testkit::TestPostgres;
use devdb_testkit::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, TestS3};

const BUCKET: &str = "devdb-backups";

/// A fresh S3 server with the bucket, and the repository under `prefix` in it, as the controller
/// parses it from its flags.
fn s3_repository(prefix: &str) -> (TestS3, Repository) {
    let s3 = TestS3::start();
    s3.create_bucket(BUCKET);
    let settings = S3Settings {
        endpoint: Some(s3.endpoint().into()),
        region: None,
        path_style: true,
        ca_file: Some(s3.ca_file()),
        credentials: Some(S3Credentials {
            key_id: ACCESS_KEY_ID.into(),
            secret: SECRET_ACCESS_KEY.into(),
            token: None,
        }),
    };
    let repository = Repository::parse(&format!("s3://{BUCKET}/{prefix}"), settings).expect("an S3 repository");
    (s3, repository)
}

#[tokio::test]
async fn a_restore_from_s3_to_a_moment_holds_exactly_the_rows_committed_before_it() {
    let (s3, repository) = s3_repository("devdb/one");
    let source = TestPostgres::start("s3-source");
    scenarios::a_restore_to_a_moment_holds_exactly_the_rows_committed_before_it(&source, &repository).await;
    // It all went to the bucket, under the prefix: the backup and the archived WAL.
    let keys = s3.keys(BUCKET, "devdb/one/");
    for part in ["devdb/one/backup/db-pitr-0001/backup.info", "devdb/one/archive/db-pitr-0001/archive.info"] {
        assert!(keys.iter().any(|k| k == part), "{part} missing from {keys:?}");
    }
    assert!(keys.iter().any(|k| k.contains("/archive/db-pitr-0001/15-1/")), "no WAL in {keys:?}");
}

#[tokio::test]
async fn an_s3_stanza_written_under_one_secret_cannot_be_read_under_another() {
    let (_s3, repository) = s3_repository("devdb/keys");
    let source = TestPostgres::start("s3-keys");
    scenarios::a_stanza_written_under_one_secret_cannot_be_read_under_another(&source, &repository).await;
}
