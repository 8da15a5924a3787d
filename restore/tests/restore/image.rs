//! The database image's entrypoints, run for real against Debian's PostgreSQL as the image runs
//! them (as the PostgreSQL user): `devdb-restore` (the restore Job) with pg_dump output of every
//! format, and `postgres-db/start.sh` (database pods) on a restored volume.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use devdb_pgctl::{RunAs, StopMode, conf_quote};
use devdb_testkit::dumps::{DumpServer, Dumps};
use devdb_testkit::{free_port, pg, query_one};

const START: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../postgres-db/start.sh");

/// Runs the restore Job's binary as the PostgreSQL user, with the environment and the secret
/// files the Job gives it (sources in the test live on loopback, so private sources are
/// allowed unless `public_only`): (success, stderr).
fn restore_as_job(pgdata: &Path, url: &str, public_only: bool) -> (bool, String) {
    restore_with(pgdata, url, public_only, &[], &[])
}

/// [`restore_as_job`] with more environment and secrets (besides the password and the source).
/// The scratch space is on the volume, beside PGDATA, as in the Job. Every secret file is gone
/// once it ran.
fn restore_with(
    pgdata: &Path,
    url: &str,
    public_only: bool,
    env: &[(&str, &str)],
    secrets: &[(&str, &str)],
) -> (bool, String) {
    let volume = pgdata.parent().expect("volume");
    let scratch = volume.join("restore-work");
    let secrets_dir = volume.join("secrets");
    std::fs::create_dir_all(&secrets_dir).expect("secrets");
    for (name, value) in [("password", "pa'ss-word"), ("source", url)].iter().chain(secrets) {
        std::fs::write(secrets_dir.join(name), value).expect("secret");
    }
    pg().give(&secrets_dir).expect("the PostgreSQL user's");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_devdb-restore"));
    cmd.env_clear()
        .env("DEVDB_RESTORE_WORK_DIR", &scratch)
        .env("TMPDIR", &scratch)
        .envs(env.iter().copied())
        .env("PGDATA", pgdata)
        .env("DEVDB_SECRETS_DIR", &secrets_dir)
        .env("DB_USER", "app")
        .env("DB_NAME", "shop")
        .env("PG_BIN", pg().binaries().dir())
        .current_dir("/tmp");
    if !public_only {
        cmd.env("DEVDB_ALLOW_PRIVATE_SOURCES", "true");
    }
    if let Some(RunAs { uid, gid }) = RunAs::detect().expect("user") {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("devdb-restore");
    let left: Vec<_> = std::fs::read_dir(&secrets_dir).expect("secrets").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "every secret is removed once read: {left:?}");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `devdb-restore` as the PostgreSQL user with `env` alone: (success, stderr).
fn run_job(env: &[(&str, &Path)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_devdb-restore"));
    cmd.env_clear().envs(env.iter().map(|(k, v)| (*k, v.as_os_str()))).current_dir("/tmp");
    cmd.env("DB_USER", "app").env("DB_NAME", "shop").env("PG_BIN", pg().binaries().dir());
    cmd.env("DEVDB_ALLOW_PRIVATE_SOURCES", "true");
    if let Some(RunAs { uid, gid }) = RunAs::detect().expect("user") {
        cmd.uid(uid).gid(gid);
    }
    let out = cmd.output().expect("devdb-restore");
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).expect("dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// As a restore Job runs it, in two containers: `fetch` with the Job's Secrets read-only (it
/// reads the source there and hands the build's own secrets on, into memory the two share),
/// then `build` with only that memory, which it empties before it starts anything. The build
/// never holds the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetches_and_builds_in_two_steps_each_with_only_its_own_secrets() {
    use std::os::unix::fs::PermissionsExt as _;
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let work = workdir();
    let volume = work.path().join("secret-volume");
    std::fs::create_dir(&volume).expect("secret volume");
    for (name, value) in
        [("source", files.url("custom.dump")), ("password", "pa'ss-word".into()), ("username", "app".into())]
    {
        std::fs::write(volume.join(name), value).expect("secret");
        std::fs::set_permissions(volume.join(name), std::fs::Permissions::from_mode(0o444)).expect("mode");
    }
    // Read-only, as Kubernetes mounts a Secret.
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o555)).expect("mode");
    let inbox = work.path().join("inbox");
    pg().make_dir(&inbox).expect("inbox");
    // The work directory does not exist yet: the fetch makes it (in a Job, on a fresh volume).
    let scratch = work.path().join("restore-work");
    let download = scratch.join("download");
    let pgdata = work.path().join("pgdata");
    let fetch = run_job(&[
        ("DEVDB_RESTORE_STEP", Path::new("fetch")),
        ("DEVDB_SECRETS_FROM", &volume),
        ("DEVDB_SECRETS_DIR", &inbox),
        ("DEVDB_DOWNLOAD", &download),
    ]);
    assert!(fetch.0, "{}", fetch.1);
    assert!(download.is_file(), "the dump is fetched");
    assert_eq!(names_in(&inbox), ["password"], "the build's secrets handed on, the source not");
    assert_eq!(names_in(&volume), ["password", "source", "username"], "the Secret volume is only read");
    let build = run_job(&[
        ("DEVDB_RESTORE_STEP", Path::new("build")),
        ("DEVDB_SECRETS_DIR", &inbox),
        ("DEVDB_DOWNLOAD", &download),
        ("DEVDB_RESTORE_WORK_DIR", &scratch),
        ("PGDATA", &pgdata),
    ]);
    assert!(build.0, "{}", build.1);
    assert!(names_in(&inbox).is_empty(), "every secret is gone once read");
    assert!(!scratch.exists(), "the work (and the download) is removed");
    assert_eq!(count_items(work.path(), &pgdata).await, "2500");
}

fn restore(pgdata: &Path, url: &str) -> (bool, String) {
    restore_as_job(pgdata, url, false)
}

/// A restore Job's pod disrupted mid-build (a node drained or reclaimed) is run again by the Job:
/// the next attempt finds the first one's partial data directory, marked unfinished, and its
/// leftover work, removes them and restores; a finished data directory (no mark) is refused,
/// never overwritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_run_again_after_a_disruption_starts_over_and_a_finished_one_is_kept() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let work = workdir();
    let pgdata = work.path().join("pgdata");
    // What an interrupted attempt leaves: the mark, a partial data directory, unpacked work.
    std::fs::create_dir_all(pgdata.join("base")).expect("partial");
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").expect("partial");
    std::fs::write(work.path().join("pgdata.unfinished"), "").expect("mark");
    std::fs::create_dir_all(work.path().join("restore-work/unpacked/x")).expect("leftover work");
    pg().give(work.path()).expect("the PostgreSQL user's");
    let (ok, stderr) = restore(&pgdata, &files.url("custom.dump"));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("an interrupted attempt left"), "{stderr}");
    assert!(!work.path().join("pgdata.unfinished").exists(), "the mark goes once it is complete");
    assert_eq!(count_items(work.path(), &pgdata).await, "2500");

    // Run once more over the finished one: refused, and the data is kept.
    let (ok, stderr) = restore(&pgdata, &files.url("custom.dump"));
    assert!(!ok && stderr.contains("already holds a database"), "{stderr}");
    assert_eq!(count_items(work.path(), &pgdata).await, "2500");
}

/// Starts the restored volume and counts `items` as the project's user over SCRAM.
async fn count_items(work: &Path, pgdata: &Path) -> String {
    let pg = pg();
    let port = free_port();
    let conf =
        format!("port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {}\n", conf_quote(work));
    std::fs::write(pgdata.join("postgresql.auto.conf"), conf).expect("conf");
    pg.start(pgdata, &work.join("log"), std::time::Duration::from_secs(60)).expect("restored volume starts");
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password("pa'ss-word")
        .dbname("shop")
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect as the project's user");
    tokio::spawn(conn);
    let count = query_one(&client, "SELECT count(*) FROM items").await;
    drop(client);
    pg.stop(pgdata, StopMode::Fast).expect("stop");
    count
}

fn workdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    pg().make_dir(dir.path()).expect("hand to postgres");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dump_format_restores_into_a_clean_stopped_volume() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    // The file:// case reads the dump as the postgres user.
    pg().give(dumps.dir.path()).expect("readable dumps");
    let sources = [
        files.url("plain.sql"),
        files.url("custom.dump"),
        files.url("archive.tar"),
        files.url("dir.tar"),
        files.url("custom.gz"),
        files.url("dir.tar.gz"),
        format!("file://{}", dumps.path("plain.sql.gz").display()),
    ];
    // Each restore is a process of its own, in its own directory: run them side by side.
    let restores = sources.map(|url| {
        tokio::task::spawn_blocking(move || {
            let work = workdir();
            let pgdata = work.path().join("pgdata");
            let outcome = restore(&pgdata, &url);
            (url, work, pgdata, outcome)
        })
    });
    for restored in restores {
        let (url, work, pgdata, (ok, stderr)) = restored.await.expect("restore ran");
        assert!(ok, "{url}: {stderr}");
        assert!(!pgdata.join("postmaster.pid").exists(), "{url}: stopped cleanly");
        assert!(!work.path().join("restore-work").exists(), "{url}: the download is gone from the volume");
        assert_eq!(count_items(work.path(), &pgdata).await, "2500", "{url}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sources_fail_with_the_reason() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    for (url, reason) in [
        (files.url("nope.dump"), "answered HTTP 404"),
        (files.url("page.html"), "an HTML page, not a PostgreSQL dump"),
        (files.url("truncated.dump"), "pg_restore could not read the archive"),
        ("ftp://example/x".to_string(), "unsupported backup location"),
    ] {
        let work = workdir();
        let (ok, stderr) = restore(&work.path().join("pgdata"), &url);
        assert!(!ok, "{url}");
        assert!(stderr.contains(reason), "{url}: {stderr}");
        assert!(pg().binaries().dir().exists());
        let running = std::fs::read_dir(work.path())
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.path().join("postmaster.pid").exists());
        assert!(!running, "{url}: no server left running");
    }
    // A source larger than the Job allows (half its volume) fails at once, saying so, and
    // leaves no partial download on the volume.
    let work = workdir();
    let (ok, stderr) = restore_with(
        &work.path().join("pgdata"),
        &files.url("custom.dump"),
        false,
        &[("DEVDB_MAX_SOURCE_SIZE", "1024")],
        &[],
    );
    assert!(!ok && stderr.contains("1.0 KiB"), "{stderr}");
    assert!(!work.path().join("restore-work").exists(), "{stderr}");
    // A volume that already holds data is never overwritten.
    let work = workdir();
    let pgdata = work.path().join("pgdata");
    assert!(restore(&pgdata, "").0, "an empty project");
    let (ok, stderr) = restore(&pgdata, &files.url("custom.dump"));
    assert!(!ok && stderr.contains("already holds a database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetches_only_public_sources_unless_allowed_and_never_shows_secrets() {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let work = workdir();
    let with_secret = files.url("custom.dump").replace("http://", "http://svc:hunter2@") + "?X-Amz-Signature=f00d";
    let (ok, stderr) = restore_as_job(&work.path().join("pgdata"), &with_secret, true);
    assert!(!ok);
    assert!(stderr.contains("a loopback address") && stderr.contains("--allow-private-sources"), "{stderr}");
    assert!(!stderr.contains("hunter2") && !stderr.contains("f00d"), "{stderr}");
    assert!(stderr.contains("X-Amz-Signature=…"), "the source is named by its display form: {stderr}");
    assert!(!work.path().join("pgdata").join("PG_VERSION").exists(), "nothing restored");
}

#[test]
fn a_job_with_masking_masks_verifies_and_reports_its_scan_to_the_controller() {
    let work = workdir();
    let dump = work.path().join("dump.sql");
    std::fs::write(&dump, crate::masking::dump()).expect("dump");
    // Kubernetes provides the file; the Job writes it.
    let log = work.path().join("termination-log");
    std::fs::write(&log, "").expect("termination log");
    pg().give(work.path()).expect("the PostgreSQL user's");
    let source = format!("file://{}", dump.display());
    let masking = serde_json::json!({ "rules": crate::masking::rules(), "verify": true }).to_string();
    let key = "k".repeat(40);
    let log_path = log.to_str().expect("utf-8");
    // As the Job runs it: built on a scratch volume, the finished files copied to the golden one.
    let scratch = work.path().join("scratch");
    pg().make_dir(&scratch).expect("scratch volume");
    let scratch_path = scratch.to_str().expect("utf-8");
    let env = [("DEVDB_TERMINATION_LOG", log_path), ("DEVDB_BUILD_DIR", scratch_path)];
    let secrets = |key| [("masking", masking.as_str()), ("mask-key", key)];

    // Without a key of 32 characters nothing is restored (a snapshot must never look masked
    // and not be), and the reason reaches the controller.
    let pgdata = work.path().join("pgdata");
    let (ok, stderr) = restore_with(&pgdata, &source, false, &env, &secrets("short"));
    assert!(!ok && stderr.contains("the masking key must have at least 32 characters"), "{stderr}");
    assert!(std::fs::read_to_string(&log).expect("log").contains("masking key"));
    assert!(!pgdata.exists(), "nothing restored");
    let (ok, stderr) = restore_with(&pgdata, &source, false, &[], &[("masking", r#"{"rules":[{"table":"t"}]}"#)]);
    assert!(!ok && stderr.contains("the masking secret") && stderr.contains("not the masking's JSON"), "{stderr}");

    let (ok, stderr) = restore_with(&pgdata, &source, false, &env, &secrets(&key));
    assert!(ok, "{stderr}");
    assert!(!stderr.contains(&key), "the key is never printed");
    let report = std::fs::read_to_string(&log).expect("log");
    assert!(report.len() <= devdb_restore::report::LIMIT);
    let report = devdb_restore::report::Report::decode(&report).unwrap_or_else(|| panic!("a report: {report}"));
    assert!(report.verified >= Some(50), "{:?}", report.verified);
    // The scan's six columns, the one no rule masks (the card) first.
    assert_eq!(report.findings.len(), 6, "{:?}", report.findings);
    assert_eq!((report.findings[0].column.as_str(), report.findings[0].covered), ("card", false));
    assert!(report.findings[1..].iter().all(|f| f.covered), "{:?}", report.findings);
    assert_eq!(report.unlisted, 0);
    std::fs::remove_file(&dump).expect("the dump is not part of the volume");
    let leaks = devdb_restore::masking::leaks(&pgdata, &crate::masking::ORIGINALS);
    assert!(leaks.is_empty(), "originals left in the volume: {leaks:?}");
    let left: Vec<_> = std::fs::read_dir(&scratch).expect("scratch").flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "the scratch volume is emptied: {left:?}");
    assert!(!work.path().join("restore-work").exists(), "no work on the golden volume");
    // The copy is a working data directory: it starts, and the masked rows are there.
    let port = free_port();
    let conf = format!("port = {port}\nlisten_addresses = ''\nunix_socket_directories = {}\n", conf_quote(work.path()));
    std::fs::write(pgdata.join("postgresql.auto.conf"), conf).expect("conf");
    pg().start(&pgdata, &work.path().join("log"), std::time::Duration::from_secs(60)).expect("starts");
    let mut admin = devdb_pgctl::session::Session::admin(work.path(), port, "shop").expect("session");
    let count =
        admin.rows("SELECT count(*) FROM public.customers WHERE email LIKE 'user\\_%@example.com'").expect("rows");
    drop(admin);
    pg().stop(&pgdata, StopMode::Fast).expect("stops");
    assert_eq!(count, [[Some("300".to_string())]]);
}

/// `start.sh` as the PostgreSQL user, on `port`, with its socket in `work`.
fn start(pgdata: &Path, work: &Path, port: u16, user: &str, password: &str) -> tokio::process::Command {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg(START)
        .args(["-c", &format!("unix_socket_directories={}", work.display())])
        .env("PGDATA", pgdata)
        .env("DB_USER", user)
        .env("DB_PASSWORD", password)
        .env("PORT", port.to_string())
        .env("PG_BIN", pg().binaries().dir())
        .current_dir("/tmp");
    if let Some(RunAs { uid, gid }) = RunAs::detect().expect("user") {
        cmd.uid(uid).gid(gid);
    }
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    cmd
}

async fn connect(port: u16, password: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password(password)
        .dbname("shop")
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(conn);
    Ok(client)
}

/// A work directory holding, in `pgdata`, what the image's restore made of the custom dump: the
/// data directory a database pod's volume is cloned from.
async fn restored_clone() -> (tempfile::TempDir, PathBuf) {
    let dumps = Dumps::make();
    let files = DumpServer::start(dumps.dir.path()).await;
    let work = workdir();
    let pgdata = work.path().join("pgdata");
    let (ok, stderr) = restore(&pgdata, &files.url("custom.dump"));
    assert!(ok, "{stderr}");
    (work, pgdata)
}

/// A session on the clone `start.sh` is bringing up, once it accepts one; a panic if it exits.
async fn connect_when_up(server: &mut tokio::process::Child, port: u16, password: &str) -> tokio_postgres::Client {
    loop {
        match connect(port, password).await {
            Ok(client) => return client,
            Err(_) if server.try_wait().expect("status").is_none() => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("start.sh exited: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_pod_starts_its_clone_with_its_own_password_whatever_kubelet_did_to_group_bits() {
    let (work, pgdata) = restored_clone().await;
    // What kubelet does to a volume for the pod's fsGroup (the EBS CSI driver declares
    // fsGroupPolicy: File): group rwx everywhere, setgid on directories.
    let status = std::process::Command::new("chmod").arg("-R").arg("g+rwX,g+s").arg(&pgdata).status().expect("chmod");
    assert!(status.success());
    let port = free_port();
    let mut server = start(&pgdata, work.path(), port, "app", "the clone's own").spawn().expect("start.sh");
    let client = connect_when_up(&mut server, port, "the clone's own").await;
    assert_eq!(query_one(&client, "SELECT count(*) FROM items").await, "2500");
    let refused = connect(port, "pa'ss-word").await.err().and_then(|e| e.code().cloned());
    assert_eq!(refused, Some(tokio_postgres::error::SqlState::INVALID_PASSWORD), "the snapshot's password is gone");
    drop(client);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(server.id().expect("pid")).expect("pid")),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("fast shutdown");
    assert!(server.wait().await.expect("exit").success());

    // Started again (the pod restarted): the same password, the network rule not duplicated.
    let mut again = start(&pgdata, work.path(), port, "app", "the clone's own").spawn().expect("start.sh");
    let client = connect_when_up(&mut again, port, "the clone's own").await;
    drop(client);
    let hba = std::fs::read_to_string(pgdata.join("pg_hba.conf")).expect("pg_hba");
    assert_eq!(hba.matches("# devdb: clients come through the proxy").count(), 1, "{hba}");
    let network: Vec<&str> = hba.lines().skip_while(|l| !l.starts_with("# devdb")).skip(1).collect();
    assert_eq!(
        network,
        [
            "host all \"app\" 0.0.0.0/0 scram-sha-256",
            "host all \"app\" ::/0 scram-sha-256",
            "host all all 0.0.0.0/0 reject",
            "host all all ::/0 reject",
        ],
        "only the project's user from the network"
    );
    again.kill().await.expect("stop");
    let _ = pg().stop(&pgdata, StopMode::Immediate);
}

/// A database pod trusts nothing of its clone but the data (the restore that made the snapshot
/// could have been taken over): who may log in is written anew, settings that run programs are
/// overridden, and a clone with a recovery file or a privileged role does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_pod_trusts_nothing_of_its_clone_but_the_data() {
    let (work, pgdata) = restored_clone().await;
    let pwned = work.path().join("pwned");
    std::fs::write(
        pgdata.join("pg_hba.conf"),
        "local all all trust\n# devdb: clients come through the proxy\nhost all all 0.0.0.0/0 trust\n",
    )
    .expect("hba");
    std::fs::write(
        pgdata.join("postgresql.auto.conf"),
        format!("archive_mode = on\narchive_command = 'id > {}'\n", pwned.display()),
    )
    .expect("conf");
    pg().give(&pgdata).expect("the PostgreSQL user's");
    let port = free_port();
    let mut server = start(&pgdata, work.path(), port, "app", "the clone's own").spawn().expect("start.sh");
    let client = connect_when_up(&mut server, port, "the clone's own").await;
    let archiving = query_one(&client, "SELECT current_setting('archive_mode')").await;
    assert_eq!(archiving, "off", "the command line overrides the clone's settings");
    client.batch_execute("SELECT pg_catalog.pg_switch_wal()").await.ok();
    let (superuser, conn) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname("postgres")
        .connect(tokio_postgres::NoTls)
        .await
        .map(|(c, conn)| (Some(c), Some(conn)))
        .unwrap_or((None, None));
    drop(conn);
    assert!(superuser.is_none(), "the clone's trust rule is gone");
    assert!(!pwned.exists(), "no command of the clone's ran");
    drop(client);
    server.kill().await.expect("stop");
    let _ = pg().stop(&pgdata, StopMode::Immediate);

    // A recovery file, or a privileged role: not started at all.
    std::fs::write(pgdata.join("recovery.signal"), "").expect("signal");
    let out = start(&pgdata, work.path(), free_port(), "app", "pw").output().await.expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds recovery.signal"), "{out:?}");
    std::fs::remove_file(pgdata.join("recovery.signal")).expect("remove");
    let socket = work.path().join("tamper");
    pg().make_dir(&socket).expect("dir");
    let conf = format!("listen_addresses = ''\nunix_socket_directories = {}\n", conf_quote(&socket));
    devdb_pgctl::conf::write_conf(&pgdata, &conf).expect("conf");
    pg().start(&pgdata, &socket.join("log"), std::time::Duration::from_secs(60)).expect("starts");
    let mut admin = devdb_pgctl::session::Session::admin(&socket, 5432, "postgres").expect("admin");
    admin.execute("ALTER ROLE app SUPERUSER").expect("tampered");
    drop(admin);
    pg().stop(&pgdata, StopMode::Fast).expect("stops");
    let out = start(&pgdata, work.path(), free_port(), "app", "pw").output().await.expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("privileged role"), "{out:?}");
}

#[tokio::test]
async fn a_database_pod_without_its_clone_says_so() {
    let work = workdir();
    let out = start(&work.path().join("missing"), work.path(), free_port(), "app", "pw").output().await.expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds no database"), "{stderr}");
    let out =
        start(&work.path().join("missing"), work.path(), free_port(), "App; DROP", "pw").output().await.expect("run");
    assert!(String::from_utf8_lossy(&out.stderr).contains("lower-case identifier"));
}
