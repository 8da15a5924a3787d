//! Bad sources get a clear error and lose nothing: unreachable, missing, non-dump, truncated and
//! hostile ones, through the real restore (invalid requests are the core's in-process tests).

use std::time::Duration;

use crate::common::*;
use devdb_shared::api::ProjectStatus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_fail_the_project_with_the_reason_and_leave_nothing_behind() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let devdb = DevDb::start().await;
    let closed = devdb_testkit::free_port();
    // A plain "dump" that would run a shell through psql's \! meta-command.
    let marker = dumps.dir.path().join("owned");
    std::fs::write(dumps.path("evil.sql"), format!("CREATE TABLE t (x int);\n\\! touch {}\n", marker.display()))
        .expect("write");
    let cases = [
        ("evil", files.url("evil.sql"), "line 2: the psql command \\! is not SQL"),
        ("unreachable", format!("http://127.0.0.1:{closed}/shop.dump"), "cannot reach"),
        ("missing", files.url("nope.dump"), "answered HTTP 404"),
        ("not-a-dump", files.url("page.html"), "an HTML page, not a PostgreSQL dump"),
        ("truncated", files.url("truncated.dump"), "restoring the dump failed"),
        ("no-file", "file:///nonexistent/shop.dump".to_string(), "cannot read /nonexistent/shop.dump"),
    ];
    for (name, url, _) in &cases {
        devdb.create_project(name, url).await;
    }
    for (name, _, reason) in &cases {
        let project = devdb.settled_project(name).await;
        assert_eq!(project.status, ProjectStatus::Failed, "{name}");
        let error = project.error.unwrap_or_default();
        assert!(error.contains(reason), "{name}: {error}");
        assert!(!devdb.data_dir.join("projects").join(name).exists(), "{name}: no half-made template");
    }
    assert!(!marker.exists(), "the shell command never ran");
    // A database of a failed project fails with the project's reason.
    let (status, body) = devdb.create_database("doomed", "missing").await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("HTTP 404")), "{body}");
    // The CLI reports it on one line and exits non-zero.
    let (ok, _, err) = devdb.cli(&["project", "create", "again", "--from", &files.url("page.html")]).await;
    assert!(!ok);
    assert!(err.trim().starts_with("error: restore of again failed") && err.contains("not a PostgreSQL dump"), "{err}");
    // Nothing else was disturbed: a good project still works.
    devdb.create_project("good", &files.url("custom.dump")).await;
    assert_eq!(devdb.settled_project("good").await.status, ProjectStatus::Ready);
    assert!(devdb.postmasters().is_empty(), "no restore server left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trojan_dump_restores_harmlessly_and_its_clones_have_no_superuser() {
    let dumps = Dumps::make();
    let payload = dumps.dir.path().join("trojan-ran");
    let body = format!(
        "BEGIN ALTER ROLE app SUPERUSER; COPY (SELECT 1) TO PROGRAM 'touch {}'; EXCEPTION WHEN OTHERS THEN NULL; END",
        payload.display()
    );
    // Functions shadowing what a superuser session would call unqualified, found first through
    // the database's own search_path.
    let sql = format!(
        "CREATE TABLE items (id int PRIMARY KEY);\nINSERT INTO items VALUES (1);\n\
         CREATE FUNCTION public.pg_reload_conf() RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN {body}; RETURN true; END $f$;\n\
         CREATE FUNCTION public.current_setting(text) RETURNS text LANGUAGE plpgsql AS $f$ BEGIN {body}; RETURN ''; END $f$;\n\
         ALTER DATABASE trojan SET search_path = public, pg_catalog;\n\
         ALTER ROLE app SET search_path = public, pg_catalog;\n"
    );
    std::fs::write(dumps.path("trojan.sql"), sql).expect("write");
    let files = DumpServer::start(dumps.dir.path()).await;
    let devdb = DevDb::start().await;
    devdb.create_project("trojan", &files.url("trojan.sql")).await;
    let project = devdb.settled_project("trojan").await;
    assert_eq!(project.status, ProjectStatus::Ready, "{:?}", project.error);
    let (status, body) = devdb.create_database("trojan-pg", "trojan").await;
    assert_eq!(status, 201, "{body}");
    let database = devdb.database("trojan-pg").await.expect("database");
    let client = devdb.connect_retrying(&database).await;
    let superusers = query_one(&client, "SELECT count(*) FROM pg_catalog.pg_roles WHERE rolsuper AND oid <> 10").await;
    assert_eq!(superusers, "0", "no role but the bootstrap superuser");
    assert_eq!(query_one(&client, "SELECT count(*) FROM items").await, "1");
    assert!(!payload.exists(), "no trojan function ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_that_trickle_or_never_end_fail_and_a_deleted_restore_stops_at_once() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let devdb = DevDb::start_with(&["--max-source-size", "1MiB", "--source-stall-timeout", "2s"]).await;
    devdb.create_project("trickle", &files.trickle_url()).await;
    devdb.create_project("endless", &files.endless_url()).await;
    let trickle = devdb.settled_project("trickle").await;
    assert_eq!(trickle.status, ProjectStatus::Failed);
    assert!(trickle.error.as_deref().is_some_and(|e| e.contains("stalled")), "{trickle:?}");
    let endless = devdb.settled_project("endless").await;
    assert!(endless.error.as_deref().is_some_and(|e| e.contains("larger than 1.0 MiB")), "{endless:?}");

    // A download in progress stops when its project is deleted, files and connection at once,
    // and a new project of the same name restores.
    devdb.create_project("held", &files.hold_url()).await;
    let restoring = devdb.data_dir.join("projects/held");
    for _ in 0..2400 {
        if files.held() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(files.held(), 1, "the download is under way\n{}", devdb.log());
    let (status, _) = devdb.call(reqwest::Method::DELETE, "/v1/projects/held", None).await;
    assert_eq!(status, 204);
    for _ in 0..2400 {
        if files.held() == 0 && !restoring.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(files.held(), 0, "the download stopped\n{}", devdb.log());
    assert!(!restoring.exists(), "its files are gone\n{}", devdb.log());
    devdb.create_project("held", &files.url("custom.dump")).await;
    assert_eq!(devdb.settled_project("held").await.status, ProjectStatus::Ready);
}

/// The data directory on a small file system: a restore that fills it fails as "disk full",
/// with what it wrote removed; the controller goes on answering; a clone that cannot fit is
/// refused with how much it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_named_cleaned_up_and_recovered_from() {
    let dumps = Dumps::make();
    // Restored, this is about 300 MB: more than the file system holds.
    let big = "CREATE TABLE filler (id int, pad text);\nINSERT INTO filler SELECT g, repeat('x', 1000) FROM generate_series(1, 300000) g;\n";
    std::fs::write(dumps.path("big.sql"), big).expect("write");
    let files = DumpServer::start(dumps.dir.path()).await;
    let mounted = std::cell::Cell::new(None);
    let devdb = DevDb::start_in(&[], |data| mounted.set(devdb_testkit::SmallDisk::mount(data, "200m"))).await;
    let Some(_disk) = mounted.take() else { return };

    devdb.create_project("big", &files.url("big.sql")).await;
    let big = devdb.settled_project("big").await;
    assert_eq!(big.status, ProjectStatus::Failed);
    // Full, or stopped short of full by the reserve kept for databases, whichever comes first.
    let full = |e: &str| e.contains("the disk is full") || e.contains("the disk is nearly full");
    assert!(big.error.as_deref().is_some_and(full), "{big:?}\n{}", devdb.log());
    assert!(!devdb.data_dir.join("projects/big").exists(), "what it wrote is removed");
    let (status, _) = devdb.call(reqwest::Method::DELETE, "/v1/projects/big", None).await;
    assert_eq!(status, 204, "the controller still answers and deletes");

    devdb.create_project("small", &files.url("custom.dump")).await;
    assert_eq!(devdb.settled_project("small").await.status, ProjectStatus::Ready, "{}", devdb.log());
    // Leave less room than a clone of it needs.
    let free = devdb_restore::limits::free_bytes(&devdb.data_dir).expect("statvfs");
    let ballast = devdb.data_dir.join("ballast");
    std::fs::write(&ballast, vec![0u8; usize::try_from(free.saturating_sub(8 << 20)).expect("size")]).expect("fill");
    let (status, body) = devdb.create_database("squeezed", "small").await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("disk is full: need") && message.contains("free"), "{message}");
    assert!(!devdb.data_dir.join("databases/squeezed.cloning").exists(), "no half-made clone");
    std::fs::remove_file(ballast).expect("room again");
    let (status, _) = devdb.call(reqwest::Method::POST, "/v1/databases/squeezed/reset?wait=true", None).await;
    assert_eq!(status, 202, "once there is room, a reset clones it");
    drop(devdb);
}

/// What one owner's restore fills, another owner's databases can still use: restores stop short
/// of full by `--restore-disk-reserve`, whether the source is an endless body or a gzip inside a
/// gzip that expands to gigabytes; each fails saying so, with what it wrote removed, while a
/// clone of another project (and a reset of it) goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fills_the_disk_stops_short_of_it_and_another_owners_clone_goes_on() {
    let dumps = Dumps::make();
    // A gzip of a gzip of 1 GiB of zeros: a few kilobytes (made by gzip itself, quickly).
    let bomb = format!("head -c 1G /dev/zero | gzip -9 | gzip -9 > {}", dumps.path("bomb.gz").display());
    assert!(std::process::Command::new("sh").args(["-c", &bomb]).status().expect("sh").success());
    let files = DumpServer::start(dumps.dir.path()).await;
    let mounted = std::cell::Cell::new(None);
    let flags = ["--restore-disk-reserve", "96MiB", "--max-decompression-ratio", "1000000000"];
    let devdb = DevDb::start_in(&flags, |data| mounted.set(devdb_testkit::SmallDisk::mount(data, "320m"))).await;
    let Some(_disk) = mounted.take() else { return };

    // Bob's project and database, before and while the hostile sources run.
    devdb.create_project("bobs", &files.url("custom.dump")).await;
    assert_eq!(devdb.settled_project("bobs").await.status, ProjectStatus::Ready, "{}", devdb.log());
    assert_eq!(devdb.create_database("bob-pg", "bobs").await.0, 201);
    devdb.create_project("endless", &files.endless_url()).await;
    devdb.create_project("bomb", &files.url("bomb.gz")).await;
    for project in ["endless", "bomb"] {
        let failed = devdb.settled_project(project).await;
        assert_eq!(failed.status, ProjectStatus::Failed, "{failed:?}");
        let error = failed.error.unwrap_or_default();
        assert!(error.contains("the disk is nearly full") && error.contains("96.0 MiB"), "{project}: {error}");
        assert!(!devdb.data_dir.join("projects").join(project).exists(), "{project}: what it wrote is removed");
    }
    let free = devdb_restore::limits::free_bytes(&devdb.data_dir).expect("statvfs");
    assert!(free > 96 << 20, "the reserve is still free: {free}");
    let (status, body) = devdb.create_database("bob-second", "bobs").await;
    assert_eq!(status, 201, "another clone fits: {body}");
    let (status, _) = devdb.call(reqwest::Method::POST, "/v1/databases/bob-pg/reset?wait=true", None).await;
    assert_eq!(status, 202, "and a reset");
}

/// A snapshot changed after its restore checked it (its project's role made superuser, as code
/// that took its restore over could) is refused by every clone before anyone may log in to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_changed_after_its_restore_is_refused_by_its_clones() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let devdb = DevDb::start().await;
    devdb.create_project("shop", &files.url("custom.dump")).await;
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);
    // The snapshot, started on a private socket and changed, as the restore's sandbox could have.
    let snapshot = devdb.data_dir.join("projects/shop/snapshot-1");
    let pg = devdb_testkit::pg();
    let copy = tempfile::tempdir().expect("tempdir");
    pg.make_dir(copy.path()).expect("the PostgreSQL user's");
    let socket = copy.path().join("sock");
    pg.make_dir(&socket).expect("socket dir");
    pg.give(&snapshot).expect("to postgres");
    let conf = format!("listen_addresses = ''\nunix_socket_directories = {}\n", devdb_pgctl::conf_quote(&socket));
    devdb_pgctl::conf::write_conf(&snapshot, &conf).expect("conf");
    pg.start(&snapshot, &copy.path().join("log"), Duration::from_secs(60)).expect("starts");
    let mut admin = devdb_pgctl::session::Session::admin(&socket, 5432, "postgres").expect("admin");
    admin.execute("ALTER ROLE app SUPERUSER").expect("tampered");
    drop(admin);
    pg.stop(&snapshot, devdb_pgctl::StopMode::Fast).expect("stops");
    let (status, body) = devdb.create_database("kate-pg", "shop").await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("snapshot is not what its restore made") && message.contains("superuser"), "{message}");
    assert!(devdb.postmasters().is_empty(), "the clone is not left running");
}
