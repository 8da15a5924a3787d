//! The state document on its own: sealed into a repository directory and read back.

use devdb_backup::Repository;
use devdb_core::model::DatabaseRecord;

use super::*;

fn database(name: &str, password: &str) -> DatabaseRecord {
    serde_json::from_value(serde_json::json!({
        "id": format!("id-{name}"),
        "name": name,
        "project": "shop",
        "owner": "kate",
        "status": "running",
        "want": "Run",
        "port": 5433,
        "password": password,
        "snapshot_generation": 1,
        "error": null,
        "created_at": "2026-12-07T10:00:00Z",
    }))
    .expect("a record")
}

fn document() -> StateDocument {
    StateDocument {
        format: FORMAT,
        written_at: "2026-12-07T10:00:00Z".into(),
        projects: Vec::new(),
        databases: vec![SavedDatabase {
            record: database("kate-pg", "pw-3f9a7c1e"),
            stanzas: vec!["id-kate-pg-1796660000".into()],
        }],
    }
}

#[test]
fn the_state_comes_back_with_the_secret_that_wrote_it_and_no_password_is_in_the_clear() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repository = Repository::Posix(dir.path().join("repo"));
    write(&repository, b"the-secret", &document()).expect("written");
    let read_back = read(&repository, b"the-secret").expect("read");
    assert_eq!(read_back, document());
    let bytes = std::fs::read(document_path(&repository).expect("path")).expect("the file");
    for plain in ["pw-3f9a7c1e", "kate-pg", "kate"] {
        assert!(!bytes.windows(plain.len()).any(|w| w == plain.as_bytes()), "{plain} is in the clear");
    }
    // Written again whole: nothing of the last write is left beside it.
    write(&repository, b"the-secret", &document()).expect("again");
    let files: Vec<_> = std::fs::read_dir(dir.path().join("repo/devdb")).expect("dir").flatten().collect();
    assert_eq!(files.len(), 1, "{files:?}");
}

#[test]
fn another_installations_secret_is_refused_saying_what_key_to_give() {
    let dir = tempfile::tempdir().expect("tempdir");
    let repository = Repository::Posix(dir.path().to_path_buf());
    write(&repository, b"the-secret", &document()).expect("written");
    let refused = read(&repository, b"another-secret").expect_err("another key").to_string();
    assert!(refused.contains("cannot be opened with this key") && refused.contains("backup/secret"), "{refused}");
    let empty = tempfile::tempdir().expect("tempdir");
    let none = read(&Repository::Posix(empty.path().to_path_buf()), b"the-secret").expect_err("none there");
    assert!(matches!(none, DrError::NoDocument { .. }), "{none}");
}

#[test]
fn s3_repositories_are_refused_for_now_saying_what_to_do() {
    let s3 = Repository::parse("s3://bucket/prefix", devdb_backup::S3Settings::default()).expect("S3");
    let refused = document_path(&s3).expect_err("S3").to_string();
    assert!(refused.contains("s3://bucket/prefix") && refused.contains("copy the repository"), "{refused}");
}

#[test]
fn databases_are_chosen_by_name_or_all_with_backups() {
    use restore::{Which, chosen};
    let mut doc = document();
    let mut without = database("tom-pg", "x");
    without.backup = None;
    doc.databases.push(SavedDatabase { record: without, stanzas: Vec::new() });
    doc.databases[0].record.backup = Some(Default::default());
    let all = chosen(&doc, &Which::All).expect("all");
    assert_eq!(all.iter().map(|d| d.record.name.as_str()).collect::<Vec<_>>(), ["kate-pg"]);
    let name = |n: &str| devdb_shared::Name::new(n).expect("name");
    let refused = chosen(&doc, &Which::Names(vec![name("tom-pg")])).expect_err("no backups").to_string();
    assert!(refused.contains("had no backups"), "{refused}");
    let refused = chosen(&doc, &Which::Names(vec![name("ann-pg")])).expect_err("not held").to_string();
    assert!(refused.contains("holds no database ann-pg") && refused.contains("kate-pg, tom-pg"), "{refused}");
}

#[test]
fn what_a_restore_left_out_stays_listed_beside_what_is_here_now() {
    let here = document();
    let mut newer = database("kate-pg", "new-password");
    newer.port = 6000;
    let pending = Pending {
        projects: Vec::new(),
        databases: vec![
            SavedDatabase { record: newer, stanzas: Vec::new() },
            SavedDatabase { record: database("tom-pg", "pw"), stanzas: vec!["id-tom-pg-1796660000".into()] },
        ],
    };
    let merged = here.clone().with_pending(pending);
    let names: Vec<&str> = merged.databases.iter().map(|d| d.record.name.as_str()).collect();
    assert_eq!(names, ["kate-pg", "tom-pg"]);
    assert_eq!(merged.databases[0], here.databases[0], "what is here wins over what was left out");
}
