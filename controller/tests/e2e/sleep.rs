//! End to end: databases that sleep and wake, with `devdb up`, real PostgreSQL and real clients
//! (psql through the CLI, tokio-postgres): a wake on the first connection, concurrent wakes,
//! idle stops that open sessions hold off and health checks do not, wakes refused by a quota or
//! that cannot succeed, a flood of clients without the password, a controller restarted while
//! databases sleep, and `devdb down`.

use std::time::Duration;

use devdb_shared::api::{Database, DatabaseStatus, ProjectStatus, StopReason};

use crate::common::*;

/// `devdb up` with a project `shop` restored from the custom-format dump.
async fn with_project(extra: &[&str]) -> (DevDb, Dumps) {
    let dumps = Dumps::make();
    let devdb = DevDb::start_with(extra).await;
    devdb.create_project("shop", &format!("file://{}", dumps.path("custom.dump").display())).await;
    assert_eq!(devdb.settled_project("shop").await.status, ProjectStatus::Ready);
    (devdb, dumps)
}

/// What a load balancer's TLS health check does: a direct TLS handshake (ALPN postgresql) to
/// `host` through the proxy, then close. Whether the handshake completed.
async fn tls_probe(devdb: &DevDb, host: &str) -> bool {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(devdb.ca()).expect("ca") {
        roots.add(cert.expect("cert")).expect("root");
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", devdb.proxy_port)).await else { return false };
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).expect("server name");
    connector.connect(name, tcp).await.is_ok()
}

impl DevDb {
    /// Waits (up to `limit`) until `name` has `status`.
    async fn becomes(&self, name: &str, status: DatabaseStatus, limit: Duration) -> Database {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let database = self.database(name).await.expect("exists");
            if database.status == status {
                return database;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} is {:?}, not {status:?}:\n{}",
                database.status,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many times the controller was asked to start `name`.
    fn starts_asked(&self, name: &str) -> usize {
        self.log().lines().filter(|l| l.contains("start asked") && l.contains(name)).count()
    }

    /// How many times a proxy woke `name` (a start asked with `wake=true`).
    fn wakes(&self, name: &str) -> usize {
        let plain = |line: &str| {
            // Without the terminal's colours: ESC [ … m.
            let mut out = String::new();
            let mut chars = line.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    chars.by_ref().find(|c| *c == 'm');
                } else {
                    out.push(c);
                }
            }
            out
        };
        self.log()
            .lines()
            .map(plain)
            .filter(|l| {
                l.contains("start asked") && l.contains(&format!("database={name} ")) && l.contains("wake=true")
            })
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asleep_database_wakes_on_the_first_connection_of_psql_and_of_a_driver() {
    let (devdb, _dumps) = with_project(&["--activity-report-every", "200ms"]).await;
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let stopped = devdb.stop("kate-pg").await;
    assert_eq!((stopped.status, stopped.stop_reason), (DatabaseStatus::Stopped, Some(StopReason::Manual)));
    assert!(devdb.postmasters().is_empty(), "no PostgreSQL process while asleep");

    // psql (through `devdb db connect`), first try, default timeouts.
    let (ok, out, err) = devdb.cli(&["db", "connect", "kate-pg", "--", "-Atc", "SELECT count(*) FROM items"]).await;
    assert!(ok, "psql: {err}\n{}", devdb.log());
    assert_eq!(out.trim(), "2500");
    let woken = devdb.database("kate-pg").await.expect("exists");
    assert_eq!(woken.status, DatabaseStatus::Running);
    assert!(woken.stop_reason.is_none());
    // psql's session (authenticated) is activity, once the proxy has reported it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while devdb.database("kate-pg").await.expect("exists").last_active_at.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "psql's session never became activity:\n{}", devdb.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A driver, first try; then four at once: each gets its session, and one start is asked.
    let database = devdb.stop("kate-pg").await;
    let client = devdb.connect(&database).await.expect("tokio-postgres wakes it");
    assert_eq!(query_one(&client, "SELECT count(*) FROM items").await, "2500");
    drop(client);
    let database = devdb.stop("kate-pg").await;
    let before = devdb.starts_asked("kate-pg");
    let clients = futures_util::future::join_all((0..4).map(|_| devdb.connect(&database))).await;
    for client in clients {
        let client = client.expect("a concurrent wake connects");
        assert_eq!(query_one(&client, "SELECT 1").await, "1");
    }
    assert_eq!(devdb.starts_asked("kate-pg") - before, 1, "one start for four clients:\n{}", devdb.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_database_stops_but_not_while_a_silent_session_is_open_nor_for_health_checks() {
    let quick = ["--idle-stop-after", "1s", "--lifecycle-check-every", "200ms", "--activity-report-every", "200ms"];
    let devdb = with_empty_project(&quick).await;
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    // Asleep, the controller's monitoring session is refused and wakes nothing.
    let database = devdb.stop("kate-pg").await;
    let refused = devdb.connect_as(&database, devdb_shared::MONITOR_APPLICATION_NAME).await.expect_err("asleep");
    assert_eq!(refused.as_db_error().map(|e| e.code().code()), Some("57P03"), "{refused}");
    let monitor = devdb.through_proxy(&database);
    let sample = monitor.sample(&database.name, &database.username, &database.password, &database.database).await;
    assert!(sample.is_err(), "sampling an asleep database fails");
    assert_eq!(devdb.database("kate-pg").await.expect("exists").status, DatabaseStatus::Stopped);

    // A session open and silent for three idle periods, while a load balancer probes: TCP
    // connects that close, and TLS handshakes (to the database's name) that close.
    let session = devdb.connect(&database).await.expect("connect");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut handshakes = 0;
    while tokio::time::Instant::now() < deadline {
        let _ = tokio::net::TcpStream::connect(("127.0.0.1", devdb.proxy_port)).await;
        handshakes += usize::from(tls_probe(&devdb, &database.host).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(handshakes > 10, "the TLS probes completed their handshakes");
    assert_eq!(devdb.database("kate-pg").await.expect("exists").status, DatabaseStatus::Running, "{}", devdb.log());
    assert_eq!(query_one(&session, "SELECT 1").await, "1", "the session still works");

    // Closed: the database stops after its idle period, health checks notwithstanding; clients
    // that fail to authenticate (no password) keep trying in vain to hold it up, and so does the
    // controller's sampling (which authenticates and queries).
    let monitor = devdb.through_proxy(&database);
    let counters = monitor
        .sample(&database.name, &database.username, &database.password, &database.database)
        .await
        .expect("the Kubernetes runtime's sampler reads the database through the proxy");
    assert!(counters.size_bytes > 1 << 20 && counters.commits > 0 && counters.idle >= 1, "{counters:?}");
    // A monitoring session held open, silent, does not keep it up (an ordinary one does, above).
    let held = devdb.connect_as(&database, devdb_shared::MONITOR_APPLICATION_NAME).await.expect("monitor session");
    drop(session);
    let mut intruder = database.clone();
    intruder.password = "not-the-password".into();
    let intruding = async {
        loop {
            // Only at the running database: an asleep one is woken by any client (what the wake
            // limits bound, another test's matter), which would use up the wakes its owner's
            // connection below needs.
            if devdb.database("kate-pg").await.is_some_and(|d| d.status == DatabaseStatus::Running) {
                assert!(devdb.connect(&intruder).await.is_err(), "a wrong password is refused");
            }
            let _ = monitor.sample(&database.name, &database.username, &database.password, &database.database).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let stopped = tokio::select! {
        stopped = devdb.becomes("kate-pg", DatabaseStatus::Stopped, Duration::from_secs(60)) => stopped,
        () = intruding => unreachable!(),
    };
    assert_eq!(stopped.stop_reason, Some(StopReason::Idle));
    drop(held);
    assert!(devdb.postmasters().is_empty());
    // And it wakes again.
    let client = devdb.connect(&stopped).await.expect("wakes");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wake_is_refused_over_the_quota_saying_nothing_of_it_and_fails_as_57p03_and_a_restart_keeps_databases_asleep()
{
    let quotas = tempfile::NamedTempFile::new().expect("quotas");
    std::fs::write(quotas.path(), r#"{"default": {"running": 1}}"#).expect("write");
    let mut devdb = with_empty_project(&["--quotas-file", &quotas.path().to_string_lossy()]).await;
    for name in ["kate-pg", "bob-pg"] {
        // One running place: each is created, then stopped to free it.
        assert_eq!(devdb.create_database(name, "shop").await.0, 201);
        devdb.stop(name).await;
    }

    // Restarted (SIGKILL) while both sleep: still asleep, nothing started behind their back.
    devdb.restart().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(devdb.postmasters().is_empty(), "asleep databases stay asleep after a restart");
    let bob = devdb.database("bob-pg").await.expect("exists");
    assert_eq!(bob.status, DatabaseStatus::Stopped);
    let client = devdb.connect(&bob).await.expect("wakes after a restart");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");

    // bob-pg holds the one running place (a session claimed its wake): kate-pg's wake is
    // refused at once, telling a client that has not authenticated nothing of the owner or the
    // quota; its owner's `devdb db start` says why.
    let kate = devdb.database("kate-pg").await.expect("exists");
    let Err(error) = devdb.connect(&kate).await else { panic!("woke beyond the quota") };
    let db_error = error.as_db_error().unwrap_or_else(|| panic!("a FATAL from the proxy, not {error:?}"));
    assert_eq!(db_error.code().code(), "57P03", "{db_error:?}");
    assert_eq!(db_error.message(), "database instance \"kate-pg\" is asleep and cannot be woken now");
    let told = format!("{db_error:?}");
    assert!(!told.contains("quota") && !told.contains("default") && !told.contains("1 of 1"), "{told}");
    assert_eq!(devdb.database("kate-pg").await.expect("exists").status, DatabaseStatus::Stopped);
    let (ok, _, err) = devdb.cli(&["db", "start", "kate-pg"]).await;
    assert!(!ok && err.contains("quota exceeded: running databases: default has 1 of 1"), "{err}");

    // With the place free but kate-pg's data gone, its wake fails: 57P03 with a hint.
    devdb.stop("bob-pg").await;
    let data = devdb.data_dir.join("databases/kate-pg/data/PG_VERSION");
    assert!(data.exists(), "{}", data.display());
    std::fs::remove_file(&data).expect("remove PG_VERSION");
    // (Right after its refused wake, the proxy may not ask the controller again for a moment:
    // a client retries, as this one does, and each attempt gets 57P03.)
    let mut failed = devdb.database("kate-pg").await.expect("exists");
    for _ in 0..120 {
        let Err(error) = devdb.connect(&kate).await else { panic!("a database without its data woke") };
        let db_error = error.as_db_error().unwrap_or_else(|| panic!("a FATAL from the proxy, not {error:?}"));
        assert_eq!(db_error.code().code(), "57P03", "{db_error:?}");
        assert!(db_error.hint().is_some(), "{db_error:?}");
        failed = devdb.database("kate-pg").await.expect("exists");
        if failed.status == DatabaseStatus::Error {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(failed.status, DatabaseStatus::Error);
    assert!(failed.error.unwrap_or_default().contains("reset it"));
}

/// Anyone who reaches the proxy can make it wake a database, password or not. A flood of such
/// clients wakes it only as often as the proxy's limits allow (two wakes nobody used, per
/// database), keeps it up no longer than its idle period, leaves `lastActiveAt` as it was, and
/// cannot hold its owner's running quota: the owner's own start still succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_clients_without_the_password_cannot_keep_a_database_awake_nor_hold_its_owners_quota() {
    let quotas = tempfile::NamedTempFile::new().expect("quotas");
    std::fs::write(quotas.path(), r#"{"default": {"running": 1}}"#).expect("write");
    let quick = ["--idle-stop-after", "4s", "--lifecycle-check-every", "200ms", "--activity-report-every", "200ms"];
    let devdb = with_empty_project(&[&quick[..], &["--quotas-file", &quotas.path().to_string_lossy()]].concat()).await;
    // kate-pg has been used once; both databases sleep.
    assert_eq!(devdb.create_database("kate-pg", "shop").await.0, 201);
    let kate = devdb.database("kate-pg").await.expect("exists");
    assert_eq!(query_one(&devdb.connect(&kate).await.expect("its owner"), "SELECT 1").await, "1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while devdb.database("kate-pg").await.expect("exists").last_active_at.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the session never became activity:\n{}", devdb.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    devdb.stop("kate-pg").await;
    assert_eq!(devdb.create_database("other-pg", "shop").await.0, 201);
    devdb.stop("other-pg").await;
    // Read once the session is long over: a report while it was open gave the first time, the
    // one after its end may give a later second.
    let used = devdb.database("kate-pg").await.expect("exists").last_active_at.expect("kept");

    // The flood: connections with a wrong password and with none, eight at a time, without end.
    let mut wrong = kate.clone();
    wrong.password = "not-the-password".into();
    let mut none = kate.clone();
    none.password = String::new();
    let flood = async {
        loop {
            // Each attempt given up after 3 s, so one the proxy holds (a wake under way) never
            // pauses the flood.
            let attempts = (0..8).map(|i| {
                tokio::time::timeout(Duration::from_secs(3), devdb.connect(if i % 2 == 0 { &wrong } else { &none }))
            });
            for attempt in futures_util::future::join_all(attempts).await {
                assert!(!matches!(attempt, Ok(Ok(_))), "a client without the password got in");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let story = async {
        // Woken by the flood; its owner's own start of the other one still succeeds at a full
        // running quota: the woken one makes room.
        devdb.becomes("kate-pg", DatabaseStatus::Running, Duration::from_secs(60)).await;
        let (status, body) = devdb.call(reqwest::Method::POST, "/v1/databases/other-pg/start?wait=true", None).await;
        assert_eq!((status, body["status"].as_str()), (202, Some("running")), "{body}");
        let made_room = devdb.becomes("kate-pg", DatabaseStatus::Stopped, Duration::from_secs(60)).await;
        assert_eq!(made_room.stop_reason, Some(StopReason::Idle));
        // It made room for the start, unless its idle period had already ended before the start
        // was asked (a loaded machine): either way the flood held no place.
        let log = devdb.log();
        // By line, each holding all of its words (a log's fields may be colored).
        let line_of = |words: &[&str]| log.lines().position(|line| words.iter().all(|w| line.contains(w)));
        let asked = line_of(&["start asked", "other-pg"]).expect("the start is logged");
        let idle_first = line_of(&["stopped", "kate-pg", "idle"]).is_some_and(|at| at < asked);
        assert!(idle_first || log.contains("to make room for its owner's start"), "{log}");
        // The place free again, the flood wakes it a second time (the last its limit allows),
        // and it goes back to sleep after its idle period, flood notwithstanding…
        devdb.stop("other-pg").await;
        devdb.becomes("kate-pg", DatabaseStatus::Running, Duration::from_secs(60)).await;
        let slept = devdb.becomes("kate-pg", DatabaseStatus::Stopped, Duration::from_secs(60)).await;
        assert_eq!(slept.stop_reason, Some(StopReason::Idle));
        // …and stays asleep: more than two idle periods of flood, no third wake.
        tokio::time::sleep(Duration::from_secs(9)).await;
        devdb.database("kate-pg").await.expect("exists")
    };
    let after = tokio::select! {
        after = story => after,
        () = flood => unreachable!(),
    };
    assert_eq!(after.status, DatabaseStatus::Stopped, "{}", devdb.log());
    assert_eq!(devdb.wakes("kate-pg"), 2, "as many wakes as the limit allows:\n{}", devdb.log());
    assert_eq!(after.last_active_at.as_deref(), Some(used.as_str()), "lastActiveAt never moved");
    // Its owner connects (a wake is only refused to clients without the password as long as
    // the limit holds: the owner starts it), and it works.
    let (ok, _, err) = devdb.cli(&["db", "start", "kate-pg"]).await;
    assert!(ok, "{err}");
    assert_eq!(query_one(&devdb.connect(&kate).await.expect("its owner"), "SELECT 1").await, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devdb_down_stops_every_database_through_the_controller_or_without_it() {
    let mut devdb = with_empty_project(&[]).await;
    for name in ["kate-pg", "bob-pg"] {
        assert_eq!(devdb.create_database(name, "shop").await.0, 201);
    }
    // With the controller up: through its API.
    let (ok, out, err) = devdb.cli(&["down"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("stopped 2 database(s)"), "{out}");
    assert!(devdb.postmasters().is_empty());
    let (status, body) = devdb.call(reqwest::Method::POST, "/v1/databases/kate-pg/start?wait=true", None).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(devdb.postmasters().len(), 1);

    // The controller gone (instances outlive it): on the data directory itself.
    devdb.kill().await;
    let data_dir = devdb.data_dir.to_string_lossy().into_owned();
    let (ok, out, err) = devdb.cli(&["down", "--data-dir", &data_dir]).await;
    assert!(ok, "{err}");
    assert!(out.contains("stopped 1 database(s)"), "{out}");
    assert!(devdb.postmasters().is_empty(), "no instance left running");

    // The next `devdb up` leaves them asleep; a connection wakes one.
    devdb.restart().await;
    let kate = devdb.database("kate-pg").await.expect("exists");
    assert_eq!((kate.status, kate.stop_reason), (DatabaseStatus::Stopped, Some(StopReason::Manual)));
    let client = devdb.connect(&kate).await.expect("wakes");
    assert_eq!(query_one(&client, "SELECT 1").await, "1");
}
