//! Backups into S3: `devdb up --backup-repo s3://…` against moto's S3 server over TLS (its CA
//! given with `--backup-s3-ca-file`, path-style addressing, the key from the AWS_* variables);
//! a database created with backups is backed up there, WAL and all, and nothing goes to the
//! data directory's default repository.

use std::time::Duration;

use devdb_testkit::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, TestS3};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_with_backups_is_backed_up_into_an_s3_repository() {
    let s3 = TestS3::start();
    s3.create_bucket("devdb-backups");
    let ca = s3.ca_file();
    let flags = [
        "--lifecycle-check-every",
        "200ms",
        "--backup-repo",
        "s3://devdb-backups/e2e",
        "--backup-s3-endpoint",
        s3.endpoint(),
        "--backup-s3-path-style",
        "--backup-s3-ca-file",
        ca.to_str().expect("a UTF-8 path"),
    ];
    let envs = [("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID), ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)];
    let devdb = with_empty_project_env(&flags, &envs).await;
    let (ok, out, err) = devdb.cli(&["db", "create", "kate-pg", "--project", "shop", "--backup"]).await;
    assert!(ok, "{out}{err}");

    // The schedule takes the first backup as soon as it runs.
    let mut last_backup_at = None;
    for _ in 0..600 {
        let (ok, out, err) = devdb.cli(&["db", "show", "kate-pg", "--json"]).await;
        assert!(ok, "{out}{err}");
        let shown: serde_json::Value = serde_json::from_str(&out).expect("JSON");
        assert_eq!(shown["backup"]["warning"], serde_json::Value::Null, "{shown}\n{}", devdb.log());
        if let Some(at) = shown["backup"]["lastBackupAt"].as_str() {
            last_backup_at = Some(at.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last_backup_at.is_some(), "never backed up:\n{}", devdb.log());

    // The bucket holds the stanza's backup and its archived WAL, under the prefix.
    let keys = s3.keys("devdb-backups", "e2e/");
    let has = |part: &str| keys.iter().any(|k| k.starts_with("e2e/") && k.contains(part));
    assert!(has("/backup/") && has("/backup.info"), "no backup in {keys:?}");
    assert!(has("/archive/") && has("/15-1/"), "no archived WAL in {keys:?}");
    assert!(!devdb.data_dir.join("backups").exists(), "nothing in the default directory repository");
}
