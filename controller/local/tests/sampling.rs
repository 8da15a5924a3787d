//! The local runtime's sampling against real PostgreSQL instances whose owner, or something
//! stronger, holds locks: every sample ends on its own with counters or an error, no more than
//! [`MAX_SAMPLES_IN_FLIGHT`] run at once, and meanwhile another database is stopped, started,
//! cloned and removed. The tests run on few blocking threads, as if stalled samples had already
//! taken the rest: sampling that held its threads would stall that other work too.
//!
//! Run with `cargo nextest run -p devdb-local --test sampling` (PostgreSQL server binaries).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use devdb_core::model::{DatabaseRecord, Lifecycle, ProjectRecord, Settings, Want};
use devdb_core::monitor::sampling::MAX_SAMPLES_IN_FLIGHT;
use devdb_core::runtime::Counters;
use devdb_core::runtime::{Runtime, RuntimeError};
use devdb_local::LocalRuntime;
use devdb_local::monitor::MONITOR_ROLE;
use devdb_pgctl::session::{SUPERUSER, Session};
use devdb_pgctl::{PgCtl, StopMode};
use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, ProjectStatus};
use tokio_util::sync::CancellationToken;

/// Samples started at once, in each round: more than may run.
const AT_ONCE: usize = 3 * MAX_SAMPLES_IN_FLIGHT;
/// Only so that work that never ends fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(150);

/// A project restored empty, and databases cloned from it; every instance stopped on drop.
struct Instances {
    runtime: LocalRuntime,
    project: ProjectRecord,
    pg: PgCtl,
    dir: tempfile::TempDir,
}

impl Instances {
    async fn with(names: &[&str]) -> (Self, Vec<DatabaseRecord>) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
        let runtime = LocalRuntime::new(devdb_testkit::pg(), dir.path()).expect("runtime");
        let instances = Self { runtime, project: project(), pg: devdb_testkit::pg(), dir };
        let progress = Arc::new(|_: u64, _: Option<u64>| {});
        let restored = instances.runtime.restore(&instances.project, 1, None, progress, CancellationToken::new()).await;
        restored.expect("an empty project restores");
        let mut databases = Vec::new();
        for name in names {
            databases.push(instances.clone_new(name).await);
        }
        (instances, databases)
    }

    async fn clone_new(&self, name: &str) -> DatabaseRecord {
        let database = database(name);
        self.runtime.clone_database(&database, &self.project, 1).await.expect("clone");
        database
    }

    fn sock(&self, database: &DatabaseRecord) -> PathBuf {
        self.dir.path().join("databases").join(database.name.as_str()).join("sock")
    }

    /// A session on `database`'s instance, to the `postgres` database, as `user`.
    fn session(&self, database: &DatabaseRecord, user: &str) -> Session {
        Session::connect(&self.sock(database), database.port, user, "postgres", None).expect("session")
    }

    /// `rounds` rounds of [`AT_ONCE`] samples of `database` started together, each round once
    /// the last has ended; what every sample returned.
    async fn sample(&self, database: &DatabaseRecord, rounds: usize) -> Vec<Result<Option<Counters>, RuntimeError>> {
        let mut outcomes = Vec::new();
        for _ in 0..rounds {
            let round = (0..AT_ONCE).map(|_| self.runtime.sample(database, &self.project));
            outcomes.extend(futures_util::future::join_all(round).await);
        }
        outcomes
    }

    /// Another database's work: stopped, started, and a new clone made and removed.
    async fn others_work(&self, other: &DatabaseRecord) -> Result<(), RuntimeError> {
        self.runtime.stop_database(other).await?;
        self.runtime.start_database(other).await?;
        let third = database("carol-pg");
        self.runtime.clone_database(&third, &self.project, 1).await?;
        self.runtime.remove_database(&third.name).await
    }
}

impl Drop for Instances {
    fn drop(&mut self) {
        for entry in std::fs::read_dir(self.dir.path().join("databases")).into_iter().flatten().flatten() {
            let data = entry.path().join("data");
            if self.pg.is_running(&data) {
                let _ = self.pg.stop(&data, StopMode::Immediate);
            }
        }
    }
}

fn project() -> ProjectRecord {
    ProjectRecord {
        id: "id-shop".into(),
        name: Name::new("shop").expect("name"),
        owner: "kate".into(),
        db_version: "15".into(),
        backup_location: None,
        allow_private_source: false,
        status: ProjectStatus::Restoring,
        error: None,
        progress: None,
        snapshot: None,
        kept_snapshots: Vec::new(),
        wanted_generation: 1,
        username: "shop_owner".into(),
        password: "pw-project".into(),
        database: "shop".into(),
        created_at: "now".into(),
        idle_stop_after_secs: None,
        default_ttl_secs: None,
        masking: devdb_shared::api::Masking::default(),
        mask_key: String::new(),
        restores_begun: 0,
        backup: None,
    }
}

fn database(name: &str) -> DatabaseRecord {
    DatabaseRecord {
        id: format!("id-{name}"),
        name: Name::new(name).expect("name"),
        project: Name::new("shop").expect("name"),
        owner: "kate".into(),
        status: DatabaseStatus::Running,
        want: Want::Run,
        port: devdb_testkit::free_port(),
        password: format!("pw-{name}"),
        snapshot_generation: Some(1),
        error: None,
        created_at: "now".into(),
        lifecycle: Lifecycle::default(),
        settings: Settings::default(),
        backup: None,
        restore_from: None,
        restoring: None,
        before_restore: None,
    }
}

/// Runs `test` on a runtime with a few blocking threads more than samples may take.
fn on_few_blocking_threads<F: Future>(test: impl FnOnce() -> F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(MAX_SAMPLES_IN_FLIGHT + 2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(test())
}

/// Whether `error` is a sample refused because the others still run: by the monitor's own bound,
/// or by the server's connection limit of the sampling role, which is lower (a tick samples an
/// instance once; these rounds sample one instance many times at once).
fn refused_for_room(error: &RuntimeError) -> bool {
    let error = error.to_string();
    error.contains("earlier samples are still running") || error.contains("too many connections for role")
}

#[test]
fn an_owner_holding_a_lock_on_its_database_neither_stops_sampling_nor_holds_up_other_databases() {
    on_few_blocking_threads(|| async {
        let (instances, databases) = Instances::with(&["kate-pg", "bob-pg"]).await;
        let (kate, bob) = (&databases[0], &databases[1]);
        // The owner renames its database in a transaction it keeps open: a new session to it
        // waits in its start-up until the transaction ends, whatever its settings.
        let mut owner = instances.session(kate, "shop_owner");
        owner.execute("BEGIN").expect("begin");
        owner.execute("ALTER DATABASE shop RENAME TO shop_held").expect("rename");

        let (outcomes, others) =
            tokio::time::timeout(HANG, async { tokio::join!(instances.sample(kate, 5), instances.others_work(bob)) })
                .await
                .expect("sampling and the other database's work ended");
        others.expect("bob-pg stopped, started, and a new clone made and removed meanwhile");
        let mut read = 0;
        for outcome in &outcomes {
            match outcome {
                Ok(Some(counters)) => {
                    assert!(counters.size_bytes > 1 << 20, "{counters:?}");
                    read += 1;
                }
                Err(error) => assert!(refused_for_room(error), "{error}"),
                Ok(None) => panic!("the local runtime reaches its instances"),
            }
        }
        assert!(read >= 5, "each round read the held database: {outcomes:?}");
        let samples = instances.runtime.samples();
        assert!(samples.peak() <= MAX_SAMPLES_IN_FLIGHT, "{} samples ran at once", samples.peak());
        assert_eq!(samples.running(), 0);

        // The owner's transaction is still open, and the sampling role is no superuser: it reads
        // statistics and nothing more.
        owner.execute("SELECT 1").expect("the owner's session still answers");
        let role = instances.session(kate, SUPERUSER).rows(&format!(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolconnlimit, \
             ARRAY(SELECT m.roleid::regrole::text FROM pg_auth_members m WHERE m.member = r.oid) \
             FROM pg_roles r WHERE rolname = '{MONITOR_ROLE}'"
        ));
        let role: Vec<Option<String>> = role.expect("roles").into_iter().next().expect("the sampling role exists");
        let role: Vec<&str> = role.iter().map(|v| v.as_deref().unwrap_or("")).collect();
        assert_eq!(role, ["f", "f", "f", "f", "8", "{pg_read_all_stats}"]);
        owner.execute("ROLLBACK").expect("rollback");
    });
}

#[test]
fn samples_of_an_instance_that_stops_answering_end_on_their_own_and_do_not_hold_up_other_databases() {
    on_few_blocking_threads(|| async {
        let (instances, databases) = Instances::with(&["kate-pg", "bob-pg"]).await;
        let (kate, bob) = (&databases[0], &databases[1]);
        let first = instances.runtime.sample(kate, &instances.project).await;
        assert!(matches!(first, Ok(Some(_))), "{first:?}");
        // A lock no owner can take (a superuser's on pg_database): every new session of the
        // instance waits in its start-up, where no setting of its start packet bounds the wait.
        let mut superuser = instances.session(kate, SUPERUSER);
        superuser.execute("BEGIN").expect("begin");
        superuser.execute("LOCK pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE").expect("lock");

        let (outcomes, others) =
            tokio::time::timeout(HANG, async { tokio::join!(instances.sample(kate, 3), instances.others_work(bob)) })
                .await
                .expect("sampling and the other database's work ended");
        others.expect("bob-pg stopped, started, and a new clone made and removed meanwhile");
        let mut unanswered = 0;
        for outcome in &outcomes {
            match outcome {
                Err(error) if error.to_string().contains("did not answer within") => unanswered += 1,
                Err(error) => assert!(refused_for_room(error), "{error}"),
                Ok(counters) => panic!("a sample read an instance that cannot answer: {counters:?}"),
            }
        }
        assert!(unanswered >= 3, "each round's samples ended on their own: {outcomes:?}");
        let samples = instances.runtime.samples();
        assert!(samples.peak() <= MAX_SAMPLES_IN_FLIGHT, "{} samples ran at once", samples.peak());
        assert_eq!(samples.running(), 0, "no sample's thread is left");

        superuser.execute("ROLLBACK").expect("rollback");
        // The sessions the stalled samples left in the server now start, find their clients
        // gone, and end: until then they count against the role's connection limit.
        let left = format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{MONITOR_ROLE}'");
        for _ in 0..600 {
            if superuser.rows(&left).expect("count")[0][0].as_deref() == Some("0") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let after = instances.runtime.sample(kate, &instances.project).await;
        assert!(matches!(after, Ok(Some(_))), "sampled again once the lock is gone: {after:?}");
    });
}
