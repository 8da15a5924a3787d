//! The restore against real PostgreSQL servers, with hostile dumps: nothing in a dump runs
//! outside PostgreSQL, nothing in it runs as superuser, and the controller's own superuser
//! sessions cannot be led into a dump's functions.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devdb_pgctl::sandbox::Sandbox;
use devdb_pgctl::session::Session;
use devdb_pgctl::{PgCtl, StopMode, conf_quote};
use devdb_restore::load::{self, LoadError};
use devdb_restore::script::ScriptError;
use devdb_restore::template::privileged_roles;
use devdb_restore::{DumpFormat, Owner, RestoreError, Template};
use devdb_testkit::{TestPostgres, USER, pg};

/// A file a payload would create: it must never exist.
struct Payload(PathBuf);

impl Payload {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("devdb-payload-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }

    fn assert_absent(&self) {
        assert!(!self.0.exists(), "{} exists: a payload ran", self.0.display());
    }
}

/// A database owned by a fresh non-superuser role on `server`, and a session as that role.
pub(crate) fn tenant_session(server: &TestPostgres, name: &str) -> Session {
    let mut admin = Session::connect(server.dir(), server.port, USER, "postgres", None).expect("superuser session");
    admin
        .execute_each(&[&format!("CREATE ROLE {name} LOGIN CREATEDB"), &format!("CREATE DATABASE {name} OWNER {name}")])
        .expect("tenant");
    Session::connect(server.dir(), server.port, name, name, None).expect("tenant session")
}

fn run(server: &TestPostgres, name: &str, sql: &str) -> Result<load::Loaded, LoadError> {
    let mut session = tenant_session(server, name);
    load::run_script(&mut session, sql.as_bytes())
}

#[test]
fn psql_commands_never_run_wherever_they_stand() {
    let server = TestPostgres::start("hostile-scripts");
    let payload = Payload::new("meta");
    let p = payload.0.display();
    let cases = [
        (format!("CREATE TABLE t (x int);\nSELECT 1; \\! touch {p}\n"), "\\!", 2),
        (format!("/* COPY t FROM stdin; */\n\\! touch {p}\n"), "\\!", 2),
        (format!("-- COPY t FROM stdin;\n\\! touch {p}\n"), "\\!", 2),
        (format!("SELECT 1;\n\\o | touch {p}\nSELECT 2;\n"), "\\o", 2),
        (format!("\\copy (SELECT 1) TO PROGRAM 'touch {p}'\n"), "\\copy", 1),
        (format!("SELECT 'touch {p}' \\gexec\n"), "\\gexec", 1),
        (format!("CREATE TABLE t (x text);\nCOPY t FROM stdin;\na\n\\.\n\\! touch {p}\n"), "\\!", 5),
    ];
    for (i, (sql, command, line)) in cases.iter().enumerate() {
        match run(&server, &format!("meta{i}"), sql) {
            Err(LoadError::Script(ScriptError::PsqlCommand { command: c, line: l, .. })) => {
                assert_eq!((c.as_str(), l), (*command, *line), "{sql}");
            }
            other => panic!("{sql:?} was not refused: {other:?}"),
        }
    }
    payload.assert_absent();
}

#[test]
fn nothing_in_a_dump_runs_as_superuser() {
    let server = TestPostgres::start("hostile-sql");
    let payload = Payload::new("sql");
    let p = payload.0.display();
    let cases = [
        ("ALTER ROLE CURRENT_USER SUPERUSER;".to_string(), "42501"),
        ("CREATE ROLE evil SUPERUSER LOGIN;".to_string(), "42501"),
        (format!("CREATE TABLE t (x int);\nCOPY t TO PROGRAM 'touch {p}';"), "42501"),
        ("CREATE TABLE t (x text);\nCOPY t FROM '/etc/passwd';".to_string(), "42501"),
        ("SELECT pg_catalog.pg_read_file('/etc/passwd');".to_string(), "42501"),
        ("CREATE EXTENSION dblink;".to_string(), "42501"),
        ("GRANT pg_execute_server_program TO CURRENT_USER;\nSET ROLE pg_execute_server_program;".to_string(), "42501"),
    ];
    for (i, (sql, code)) in cases.iter().enumerate() {
        match run(&server, &format!("sql{i}"), sql) {
            Err(LoadError::Statement { error, .. }) => assert_eq!(error.code, *code, "{sql}: {error}"),
            other => panic!("{sql:?} was not refused: {other:?}"),
        }
    }
    payload.assert_absent();
    let mut admin = Session::connect(server.dir(), server.port, USER, "postgres", None).expect("admin");
    let roles: Vec<String> =
        privileged_roles(&mut admin).expect("roles").into_iter().filter(|r| r.contains("sql")).collect();
    assert!(roles.is_empty(), "{roles:?}");
}

#[test]
fn the_failing_line_is_reported_and_ownership_and_grants_are_skipped() {
    let server = TestPostgres::start("lines");
    let sql = "CREATE TABLE t (id int PRIMARY KEY);\nALTER TABLE public.t OWNER TO someone_else;\n\
               GRANT SELECT ON t TO reporting;\nINSERT INTO t VALUES (1);\n\nINSERT INTO t\n  VALUES\n  (1);\n";
    match run(&server, "lines", sql) {
        Err(LoadError::Statement { line, error, .. }) => {
            assert_eq!(error.code, "23505", "{error}");
            assert_eq!(line, 6, "the statement's first line");
        }
        other => panic!("duplicate key not reported: {other:?}"),
    }
    let syntax = "SELECT 1;\nSELECT\n  1,\n  2 +\n  FROM;\n";
    match run(&server, "syntax", syntax) {
        Err(LoadError::Statement { line, .. }) => assert_eq!(line, 5, "the line the server points at"),
        other => panic!("syntax error not reported: {other:?}"),
    }
    let copy = "CREATE TABLE n (x int);\nCOPY n FROM stdin;\n1\n2\nthree\n\\.\n";
    match run(&server, "copy", copy) {
        Err(err @ LoadError::Statement { line: 2, .. }) => {
            // Where, but not the value: a project's error is shown to everyone who may use it.
            let message = err.to_string();
            assert!(message.contains("22P02") && message.contains("COPY n, line 3"), "{message}");
            assert!(!message.contains("three"), "{message}");
        }
        other => panic!("bad COPY data not reported: {other:?}"),
    }
    let loaded = run(&server, "skips", &sql[..sql.find("\n\n").expect("cut")]).expect("restores");
    assert_eq!((loaded.statements, loaded.skipped), (2, 2));
}

#[test]
fn scripts_in_other_encodings_and_with_copy_and_functions_restore() {
    let server = TestPostgres::start("encodings");
    let mut sql = b"SET client_encoding = 'LATIN1';\nCREATE TABLE t (x text);\nINSERT INTO t VALUES ('caf".to_vec();
    sql.extend_from_slice(b"\xe9');\nCOPY t (x) FROM stdin;\nna\xefve\n\\\\! kept as data\n\\.\n");
    sql.extend_from_slice(b"SET standard_conforming_strings = off;\nINSERT INTO t VALUES ('it\\'s');\n");
    sql.extend_from_slice(b"RESET standard_conforming_strings;\nCREATE FUNCTION f() RETURNS text LANGUAGE sql\n");
    sql.extend_from_slice(b"BEGIN ATOMIC\n  SELECT 'a;b';\nEND;\nSELECT f();\n");
    let mut session = tenant_session(&server, "latin");
    let loaded = load::run_script(&mut session, &sql[..]).expect("restores");
    assert_eq!(loaded.statements, 9);
    let mut check = Session::connect(server.dir(), server.port, "latin", "latin", None).expect("session");
    let rows = check.rows("SELECT string_agg(x, '|' ORDER BY x) FROM t").expect("rows");
    assert_eq!(rows[0][0].as_deref(), Some("\\! kept as data|café|it's|naïve"));
}

#[test]
fn a_trigger_raising_a_notice_per_row_does_not_stall_a_copy() {
    let server = TestPostgres::start("notices");
    let mut sql = String::from(
        "SET client_min_messages = notice;\nCREATE TABLE t (x text);\n\
         CREATE FUNCTION noisy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE NOTICE '%', repeat('n', 500); RETURN NEW; END $$;\n\
         CREATE TRIGGER noisy BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION noisy();\nCOPY t FROM stdin;\n",
    );
    for i in 0..20_000 {
        sql.push_str(&format!("row {i}\n"));
    }
    sql.push_str("\\.\n");
    let mut session = tenant_session(&server, "noisy");
    load::run_script(&mut session, sql.as_bytes()).expect("restores");
    assert_eq!(session.rows("SELECT count(*) FROM t").expect("count")[0][0].as_deref(), Some("20000"));
}

/// A directory for templates that the PostgreSQL user can pass through.
pub(crate) fn workspace() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("devdb-restore-").tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("mode");
    dir
}

pub(crate) const OWNER: Owner<'static> = Owner { user: "app", password: "pw-0123456789", database: "shop" };

fn build(dir: &Path, dump: Option<&[u8]>) -> Result<load::Loaded, RestoreError> {
    let dump = dump.map(|bytes| {
        let path = dir.join("dump");
        std::fs::write(&path, bytes).expect("dump");
        prepare(&path, dir)
    });
    build_template(dir, dump.as_ref(), None)
}

/// Recognises (and unpacks) the dump at `path`, working in `dir`.
pub(crate) fn prepare(path: &Path, dir: &Path) -> devdb_restore::Dump {
    let limits = devdb_restore::Limits { max_source_bytes: 1 << 30, ..devdb_restore::Limits::default() };
    devdb_restore::prepare(path, dir, &limits, &devdb_restore::Guard::unbounded(dir)).expect("a dump")
}

/// Builds a template as the local runtime does (in a sandbox in `dir/box`), then leaves it at
/// `dir/data`, the PostgreSQL user's, for [`start_template`].
pub(crate) fn build_template(
    dir: &Path,
    dump: Option<&devdb_restore::Dump>,
    masking: Option<&devdb_restore::masking::MaskPlan>,
) -> Result<load::Loaded, RestoreError> {
    let mut sandbox = devdb_testkit::restore_sandbox(&dir.join("box"));
    let guard = devdb_restore::Guard::unbounded(dir);
    let built = Template::in_sandbox(&mut sandbox, masking, &guard).build(&OWNER, dump);
    let data = sandbox.dir().join("data");
    sandbox.release(&data).expect("released");
    if let Ok(loaded) = &built {
        devdb_restore::seal::seal(&data, &loaded.pristine)?;
        std::fs::rename(&data, dir.join("data")).expect("moved");
        pg().give(&dir.join("data")).expect("to the PostgreSQL user");
    }
    built
}

/// Starts a built template on a private socket: (pg, socket dir, port). Stopped by the caller.
pub(crate) fn start_template(dir: &Path) -> (PgCtl, PathBuf, u16) {
    let pg = pg();
    let socket = dir.join("inspect");
    pg.make_dir(&socket).expect("socket dir");
    let conf = format!(
        "{}listen_addresses = ''\nunix_socket_directories = {}\nport = 5432\n",
        devdb_pgctl::conf::BASE_CONF,
        conf_quote(&socket)
    );
    devdb_pgctl::conf::write_conf(&dir.join("data"), &conf).expect("conf");
    pg.start(&dir.join("data"), &socket.join("log"), Duration::from_secs(60)).expect("starts");
    (pg, socket, 5432)
}

#[test]
fn trojan_functions_and_operators_never_run_in_the_controllers_sessions() {
    let dir = workspace();
    let payload = Payload::new("trojan");
    let p = payload.0.display();
    let body = format!(
        "BEGIN ALTER ROLE app SUPERUSER; COPY (SELECT 1) TO PROGRAM 'touch {p}'; EXCEPTION WHEN OTHERS THEN NULL; END"
    );
    let mut sql = String::from("CREATE TABLE items (id int PRIMARY KEY);\nINSERT INTO items VALUES (1), (2);\n");
    for (name, args, returns) in [
        ("pg_reload_conf", "", "boolean"),
        ("concat_ws", "text, VARIADIC text[]", "text"),
        ("string_agg", "text, text", "text"),
        ("set_config", "text, text, boolean", "text"),
        ("current_setting", "text", "text"),
        ("pg_terminate_backend", "integer", "boolean"),
    ] {
        sql.push_str(&format!(
            "CREATE FUNCTION public.{name}({args}) RETURNS {returns} LANGUAGE plpgsql AS $f$ BEGIN {body}; RETURN NULL; END $f$;\n"
        ));
    }
    sql.push_str(&format!(
        "CREATE FUNCTION public.trojan_eq(oid, oid) RETURNS boolean LANGUAGE plpgsql AS $f$ BEGIN {body}; RETURN true; END $f$;\n\
         CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.trojan_eq);\n\
         CREATE OPERATOR public.<> (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.trojan_eq);\n\
         ALTER DATABASE shop SET search_path = public, pg_catalog;\n\
         ALTER ROLE app SET search_path = public, pg_catalog;\n"
    ));
    let loaded = build(dir.path(), Some(sql.as_bytes())).expect("the harmless part restores");
    assert!(loaded.statements > 10);
    payload.assert_absent();

    // The restored template, as the controller meets it again (a clone setting a password,
    // the catalog check): its superuser sessions resolve nothing in the dump's schema, even
    // unqualified calls, even in the dump's own database.
    let (pg, socket, port) = start_template(dir.path());
    for database in ["postgres", "shop"] {
        let mut admin = Session::admin(&socket, port, database).expect("admin");
        let path = admin.rows("SHOW search_path").expect("rows");
        assert_eq!(path[0][0].as_deref(), Some("pg_catalog,pg_temp"), "{database}");
        admin.execute("SELECT pg_reload_conf(); SELECT current_setting('search_path')").expect("calls");
        admin.execute("ALTER ROLE app PASSWORD 'another-pw-0123'").expect("password");
        assert!(privileged_roles(&mut admin).expect("check").is_empty(), "no role became privileged");
    }
    payload.assert_absent();
    pg.stop(&dir.path().join("data"), StopMode::Immediate).expect("stop");
}

#[test]
fn the_catalog_check_names_every_privileged_role() {
    let server = TestPostgres::start("privileged");
    let mut admin = Session::connect(server.dir(), server.port, USER, "postgres", None).expect("admin");
    admin
        .execute(
            "CREATE ROLE boss SUPERUSER; CREATE ROLE mirror REPLICATION; CREATE ROLE peeker BYPASSRLS; \
             CREATE ROLE shell; GRANT pg_execute_server_program TO shell; CREATE ROLE reader; \
             GRANT pg_read_server_files TO reader; CREATE ROLE plain LOGIN CREATEDB",
        )
        .expect("roles");
    let found = privileged_roles(&mut admin).expect("check");
    assert_eq!(
        found,
        [
            "role \"boss\" (superuser)",
            "role \"mirror\" (replication)",
            "role \"peeker\" (bypassrls)",
            "role \"reader\" (pg_read_server_files)",
            "role \"shell\" (pg_execute_server_program)",
        ],
        "the bootstrap superuser ({USER}) and ordinary roles are not listed"
    );
}

#[test]
fn archives_restore_through_pg_restore_as_the_sandbox_user() {
    let source = TestPostgres::start("archive-source");
    let mut admin = Session::connect(source.dir(), source.port, USER, "postgres", None).expect("admin");
    admin
        .execute(
            "CREATE ROLE someone_else; CREATE TABLE items (id int PRIMARY KEY, note text); \
             INSERT INTO items SELECT g, 'it''s \\! ' || g FROM generate_series(1, 500) g; \
             ALTER TABLE items OWNER TO someone_else; GRANT SELECT ON items TO PUBLIC",
        )
        .expect("source");
    for format in ["c", "t", "d"] {
        let dir = workspace();
        let out = dir.path().join(format!("dump-{format}"));
        let status = pg()
            .client("pg_dump")
            .args(["-h", &source.dir().to_string_lossy(), "-p", &source.port.to_string(), "-U", USER])
            .args(["-d", "postgres", "-F", format, "-f"])
            .arg(&out)
            .status()
            .expect("pg_dump");
        assert!(status.success());
        let dump = prepare(&out, dir.path());
        assert_eq!(dump.format == DumpFormat::Directory, format == "d");
        build_template(dir.path(), Some(&dump), None).unwrap_or_else(|e| panic!("-F{format}: {e}"));
        let (pg, socket, port) = start_template(dir.path());
        let mut app = Session::connect(&socket, port, "app", "shop", None).expect("as the project's user");
        let rows = app.rows("SELECT count(*), pg_catalog.pg_get_userbyid(min(c.relowner)) FROM items, pg_class c WHERE c.relname = 'items'").expect("rows");
        assert_eq!(rows[0], [Some("500".into()), Some("app".into())], "-F{format}");
        pg.stop(&dir.path().join("data"), StopMode::Immediate).expect("stop");
    }
}

/// A directory dump's `toc.dat` names the files `pg_restore` opens, and a hostile one names
/// files outside the dump: in the sandbox, there is nothing else to open. The toc of a real
/// dump of one text column is patched to name the sandbox's own `/etc/passwd` (which it shows
/// instead of the host's), then a file of the host (absent there).
#[test]
fn a_toc_that_names_files_outside_the_dump_reads_only_the_sandbox() {
    if pg().run_as().is_none() {
        eprintln!("not root: restores run unsandboxed here, as the current user; CI runs this as root");
        return;
    }
    let source = TestPostgres::start("toc-source");
    let mut admin = Session::connect(source.dir(), source.port, USER, "postgres", None).expect("admin");
    admin.execute("CREATE TABLE lines (line text); INSERT INTO lines VALUES ('a line')").expect("source");
    let dir = workspace();
    let secret = dir.path().join("host-secret.txt");
    std::fs::write(&secret, "root:x:0:0:host-secret-7f3a\n").expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).expect("readable by anyone");
    let out = dir.path().join("dump");
    let status = pg()
        .client("pg_dump")
        .args(["-h", &source.dir().to_string_lossy(), "-p", &source.port.to_string(), "-U", USER])
        .args(["-d", "postgres", "-F", "d", "-Z", "0", "-f"])
        .arg(&out)
        .status()
        .expect("pg_dump");
    assert!(status.success());
    let toc = std::fs::read(out.join("toc.dat")).expect("toc");
    for target in ["../etc/passwd".to_string(), format!("..{}", secret.display())] {
        let work = workspace();
        let hostile = work.path().join("hostile");
        std::fs::create_dir(&hostile).expect("dir");
        std::fs::write(hostile.join("toc.dat"), retarget(&toc, &target)).expect("toc");
        let dump = prepare(&hostile, work.path());
        match build_template(work.path(), Some(&dump), None) {
            Ok(_) => {
                let (pg, socket, port) = start_template(work.path());
                let mut app = Session::connect(&socket, port, "app", "shop", None).expect("session");
                let lines: Vec<String> = app
                    .rows("SELECT line FROM lines")
                    .expect("rows")
                    .into_iter()
                    .filter_map(|r| r[0].clone())
                    .collect();
                drop(app);
                pg.stop(&work.path().join("data"), StopMode::Immediate).expect("stop");
                assert!(target.ends_with("etc/passwd"), "{target}: the host's file is not there to read: {lines:?}");
                // pg_restore copies the file as the table's data (and, lacking COPY's end marker,
                // the lines after it): the sandbox's own passwd, nothing of the host's.
                assert!(lines[0].starts_with("postgres:x:") && lines[0].contains(":/restore:"), "{lines:?}");
                assert!(!lines.iter().any(|l| l.starts_with("root:")), "the host's passwd: {lines:?}");
            }
            Err(error) => {
                // A host file is not there to read; and pg_restore 15.20 and later refuse any
                // name that leaves the dump's directory.
                let error = error.to_string();
                assert!(
                    target.contains("host-secret") || error.contains("invalid file name in archive"),
                    "{target}: {error}"
                );
                assert!(error.contains("pg_restore could not read the archive"), "{error}");
                assert!(!error.contains(&dir.path().display().to_string()), "no path of the host in it: {error}");
            }
        }
    }
}

/// `toc` with the one data file it names (`NNNN.dat`) renamed `target` (a TOC string: a sign
/// byte, a four-byte little-endian length, the bytes).
fn retarget(toc: &[u8], target: &str) -> Vec<u8> {
    let at = toc.windows(4).position(|w| w == b".dat").expect("a data file named");
    let start = toc[..at].iter().rposition(|b| !b.is_ascii_digit()).expect("digits") + 1;
    let mut out = toc[..start - 5].to_vec();
    out.push(0);
    out.extend_from_slice(&u32::try_from(target.len()).expect("short").to_le_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(&toc[at + 4..]);
    out
}

/// A directory dump packed with tar whose data file is a link to a host file: refused before
/// anything reads it (whatever pg_restore's own version would do with it).
#[test]
fn a_packed_directory_dump_holding_a_link_is_refused() {
    let dir = workspace();
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(5);
    header.set_mode(0o644);
    builder.append_data(&mut header, "shop/toc.dat", &b"PGDMP"[..]).expect("toc");
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder.append_link(&mut link, "shop/3000.dat", "/proc/1/environ").expect("link");
    let path = dir.path().join("packed.tar");
    std::fs::write(&path, builder.into_inner().expect("tar")).expect("write");
    let limits = devdb_restore::Limits::default();
    let err = devdb_restore::prepare(&path, dir.path(), &limits, &devdb_restore::Guard::unbounded(dir.path()))
        .expect_err("refused");
    assert!(err.to_string().contains("only regular files and directories"), "{err}");
    assert!(!dir.path().join("dump.dir/shop/3000.dat").exists(), "nothing was unpacked through it");
}

#[test]
fn any_sql_file_restores_and_a_failure_leaves_the_server_stopped() {
    let dir = workspace();
    let mut gz = flate2_gzip(b"create table t (id int, name text);\ninsert into t values (1, 'a'), (2, 'b');\n");
    gz.flush().expect("flush");
    let loaded = build(dir.path(), Some(&gz.finish().expect("gzip"))).expect("hand-written SQL restores");
    assert_eq!(loaded.statements, 2);
    let failing = workspace();
    let err =
        build(failing.path(), Some(b"CREATE TABLE t (x int);\nALTER ROLE app SUPERUSER;\n")).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("line 2") && message.contains("SQLSTATE 42501"), "{message}");
    assert!(!pg().is_running(&failing.path().join("data")), "the restore server was stopped");
}

fn flate2_gzip(bytes: &[u8]) -> flate2::write::GzEncoder<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc
}

mod source_policy {
    //! The source policy against real HTTP servers: 127.0.0.1 plays a public address and
    //! 127.0.0.2 a private one (both reach this machine), names resolve through a lookup the
    //! test controls, so direct, redirected and rebinding fetches all meet the same check.

    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::Query;
    use axum::response::Redirect;
    use devdb_restore::policy::{self, Lookup};
    use devdb_restore::{Fetcher, RestoreError};

    const PUBLIC: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
    const PRIVATE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

    fn rule(ip: IpAddr) -> Option<&'static str> {
        (ip == PRIVATE).then_some("the test's private address")
    }

    /// public.test → 127.0.0.1, private.test → 127.0.0.2, rebind.test → public first, then private.
    fn lookup() -> Lookup {
        let rebinds = Arc::new(AtomicUsize::new(0));
        Arc::new(move |host: String| {
            let answer = match host.as_str() {
                "public.test" => vec![PUBLIC],
                "private.test" => vec![PRIVATE],
                "rebind.test" if rebinds.fetch_add(1, Ordering::SeqCst) == 0 => vec![PUBLIC],
                "rebind.test" => vec![PRIVATE],
                _ => vec![],
            };
            Box::pin(async move { Ok(answer) })
        })
    }

    /// The same server on both addresses (one port): `/dump`, and `/redirect?to=URL`.
    async fn serve() -> u16 {
        let app =
            axum::Router::new().route("/dump", axum::routing::get(|| async { "CREATE TABLE t (x int);\n" })).route(
                "/redirect",
                axum::routing::get(|Query(q): Query<HashMap<String, String>>| async move {
                    Redirect::temporary(q.get("to").map_or("/", String::as_str))
                }),
            );
        let public = tokio::net::TcpListener::bind((PUBLIC, 0)).await.expect("bind");
        let port = public.local_addr().expect("addr").port();
        let private = tokio::net::TcpListener::bind((PRIVATE, port)).await.expect("bind the same port on 127.0.0.2");
        tokio::spawn(axum::serve(public, app.clone()).into_future());
        tokio::spawn(axum::serve(private, app).into_future());
        port
    }

    #[tokio::test]
    async fn direct_redirected_and_rebinding_fetches_reach_only_allowed_addresses() {
        let port = serve().await;
        let fetcher = Fetcher::with(rule, lookup());
        let dir = tempfile::tempdir().expect("tempdir");
        let dest = dir.path().join("download");
        let fetched = fetcher.fetch(&format!("http://public.test:{port}/dump"), &dest, |_, _| {}).await;
        assert_eq!(fetched.expect("a public source").bytes, 24);

        let redirect = |to: &str| format!("http://public.test:{port}/redirect?to={to}");
        for url in [
            format!("http://127.0.0.2:{port}/dump"),
            format!("http://private.test:{port}/dump"),
            redirect(&format!("http://127.0.0.2:{port}/dump")),
            redirect(&format!("http://private.test:{port}/dump")),
        ] {
            match fetcher.fetch(&url, &dest, |_, _| {}).await {
                Err(RestoreError::Refused { refused, .. }) => assert_eq!(refused.address, PRIVATE, "{url}"),
                other => panic!("{url} was not refused: {other:?}"),
            }
        }
        // DNS rebinding: the name passes when the source is given, and is refused when fetched.
        let lookup = lookup();
        let fetcher = Fetcher::with(rule, lookup.clone());
        assert!(policy::check_host(rule, "rebind.test", &lookup).await.is_ok(), "public when checked");
        let refused = fetcher.fetch(&format!("http://rebind.test:{port}/dump"), &dest, |_, _| {}).await;
        assert!(matches!(refused, Err(RestoreError::Refused { .. })), "private when fetched: {refused:?}");
    }
}

/// A project's error is shown to everyone who may use the project: a failed restore says which
/// line and what went wrong, never a value of the data (the server's DETAIL and CONTEXT quote
/// keys and rows; a dump's own code may put anything in its messages).
#[test]
fn restore_errors_carry_no_row_values() {
    let cases = [
        (
            "CREATE TABLE people (email text UNIQUE);\nINSERT INTO people VALUES ('alice.private@acme.test');\n\
             INSERT INTO people VALUES ('alice.private@acme.test');\n",
            "SQLSTATE 23505",
        ),
        ("CREATE TABLE people (ssn int);\nCOPY people FROM stdin;\n123-45-6789\n\\.\n", "COPY people, line 1"),
        (
            "CREATE TABLE people (email text);\nINSERT INTO people VALUES ('alice.private@acme.test');\n\
             DO $$ BEGIN RAISE EXCEPTION 'found %', (SELECT email FROM public.people); END $$;\n",
            "raised by the dump's own code",
        ),
        (
            "CREATE TABLE people (email text CHECK (email NOT LIKE '%private%'));\n\
             INSERT INTO people VALUES ('alice.private@acme.test');\n",
            "violates check constraint",
        ),
    ];
    for (sql, want) in cases {
        let dir = workspace();
        let error = build(dir.path(), Some(sql.as_bytes())).expect_err("fails").to_string();
        assert!(error.contains(want), "{error}");
        for value in ["alice.private", "123-45-6789"] {
            assert!(!error.contains(value), "a value in the error: {error}");
        }
    }
}

/// A sandbox holding an initdb'd cluster that listens only on a socket inside it, as a restore's:
/// the sandbox, the data directory and the socket directory.
fn sandboxed_cluster(dir: &Path) -> (Sandbox, PathBuf, PathBuf) {
    let sandbox = devdb_testkit::restore_sandbox(&dir.join("box"));
    let (data, socket) = (sandbox.dir().join("data"), sandbox.dir().join("sock"));
    sandbox.initdb(&data, "postgres").expect("initdb");
    sandbox.make_dir(&socket).expect("socket dir");
    let inner = sandbox.inside(&socket).expect("inside");
    devdb_pgctl::conf::write_conf(
        &data,
        &format!("listen_addresses = ''\nunix_socket_directories = {}\n", conf_quote(&inner)),
    )
    .expect("conf");
    sandbox.give(&data.join("postgresql.auto.conf")).expect("give");
    (sandbox, data, socket)
}

/// A restore's server dies with the thread that started it (a controller killed mid-restore
/// leaves nothing running): its sandbox's first process is bwrap's own init, which dies with its
/// parent and takes the namespace with it, whatever user id the server runs as.
#[test]
fn a_sandboxed_server_dies_with_the_thread_that_started_it() {
    if pg().run_as().is_none() {
        eprintln!("not root: restores run unsandboxed here; CI runs this as root");
        return;
    }
    let dir = workspace();
    let (sandbox, data, socket) = sandboxed_cluster(dir.path());
    let pid = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let server =
                    sandbox.start_server(&data, &socket, &socket.join("log"), Duration::from_secs(60)).expect("starts");
                let pid = server.pid().expect("the postmaster");
                // Neither stopped nor dropped: the thread just ends, as a killed controller's do.
                std::mem::forget(server);
                pid
            })
            .join()
            .expect("thread")
    });
    let alive = || std::path::Path::new(&format!("/proc/{pid}")).exists();
    for _ in 0..3000 {
        if !alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(), "the restore server outlived the thread that started it");
}

/// A database beside the project's (a copy made with `CREATE DATABASE … TEMPLATE`, say) would
/// escape the scan and the masking: the restore refuses it.
#[test]
fn a_dump_that_makes_another_database_is_refused() {
    let dir = workspace();
    let error = build(dir.path(), Some(b"CREATE TABLE t (id int);\nCREATE DATABASE stash;\n")).expect_err("refused");
    assert!(matches!(error, RestoreError::OtherDatabases(ref names) if names == "stash"), "{error}");
}

/// What a restore writes to its sandbox's memory file systems is bounded (no process's memory
/// limit counts it): even a superuser's 100 MiB into `/tmp`, or 300 MiB into `/dev/shm`, fail;
/// and the restore server runs no background or parallel workers the dump could multiply.
#[test]
fn a_restore_cannot_fill_memory_through_its_sandboxs_file_systems_or_workers() {
    if pg().run_as().is_none() {
        eprintln!("not root: restores run unsandboxed here; CI runs this as root");
        return;
    }
    let dir = workspace();
    let workers = b"DO $$ BEGIN IF current_setting('max_worker_processes')::int + current_setting('max_parallel_workers')::int > 0 OR current_setting('autovacuum')::bool THEN RAISE EXCEPTION 'workers may run'; END IF; END $$;\nCREATE TABLE t (id int);\n";
    build(dir.path(), Some(workers)).expect("no workers: the dump's check passes");

    let dir = workspace();
    let (sandbox, data, socket) = sandboxed_cluster(dir.path());
    let server = sandbox.start_server(&data, &socket, &socket.join("log"), Duration::from_secs(60)).expect("starts");
    let mut admin = Session::admin(&socket, devdb_pgctl::sandbox::PORT, "postgres").expect("superuser");
    admin
        .execute("COPY (SELECT repeat('x', 1048576) FROM generate_series(1, 10)) TO '/tmp/small'")
        .expect("10 MiB fits");
    for (file, mib) in [("/tmp/fill", 100), ("/dev/shm/fill", 300)] {
        let error = admin
            .execute(&format!("COPY (SELECT repeat('x', 1048576) FROM generate_series(1, {mib})) TO '{file}'"))
            .expect_err("bounded");
        assert!(error.to_string().contains("No space left on device"), "{file}: {error}");
    }
    drop(admin);
    server.stop(StopMode::Fast).expect("stops");
}
