//! Bad sources get a clear error and lose nothing: unreachable, missing, non-dump, truncated and
//! hostile ones, through the real restore (invalid requests are the core's in-process tests).

mod common;

use common::*;
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
