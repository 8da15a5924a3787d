//! Test harness shared by the integration tests of every crate: real PostgreSQL servers
//! ([`TestPostgres`]), free ports, small client helpers, and pg_dump output of a real source
//! served over HTTP ([`dumps`]), the Python tools of the tests ([`python`]), and an S3 store
//! over TLS ([`s3`]). Crate-specific harnesses (a proxy, a controller) live in each crate's
//! `tests/common`.

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod dumps;
pub mod python;
pub mod s3;

use devdb_pgctl::{PgCtl, StopMode, conf_quote};
use tempfile::TempDir;

/// The superuser of every test server.
pub const USER: &str = "app";
/// Its password (SCRAM over TCP).
pub const PASSWORD: &str = "s3cret-Pa55";

/// A free loopback port for a server a test starts moments later: picked at random below the
/// OS's ephemeral range (32768 up on Linux), where the ports the OS hands out for port 0 (a
/// controller's new instances, every client's own end) never land, and checked free by binding.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    const FIRST: u16 = 20_000;
    const SPAN: u64 = 12_000;
    for attempt in 0_u64..1000 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(attempt);
        let port = FIRST + u16::try_from(hasher.finish() % SPAN).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

/// The PostgreSQL programs, run as the `postgres` user when the tests run as root.
pub fn pg() -> PgCtl {
    PgCtl::discover(std::env::var_os("DEVDB_PG_BIN").as_deref().map(Path::new))
        .expect("PostgreSQL server binaries (apt-get install postgresql-15)")
}

/// A restore's sandbox in `dir` as the local runtime makes it when it runs as root: bubblewrap
/// and a user id of its own (bubblewrap is required then: CI installs it); unsandboxed, as the
/// PostgreSQL user, when the tests do not run as root.
pub fn restore_sandbox(dir: &Path) -> devdb_pgctl::sandbox::Sandbox {
    use devdb_pgctl::sandbox::{DEFAULT_UIDS, Isolation, Limits, Sandbox, Tools, UidLease};
    let pg = pg();
    let isolation = match pg.run_as() {
        Some(_) => Isolation::Bubblewrap {
            tools: Tools::find().expect("bubblewrap (apt-get install bubblewrap)"),
            uid: Some(UidLease::acquire(DEFAULT_UIDS.0, DEFAULT_UIDS.1).expect("a restore user id")),
        },
        None => Isolation::Off { run_as: None },
    };
    Sandbox::new(pg.binaries().clone(), dir, isolation, Limits::default()).expect("sandbox")
}

/// A small file system (tmpfs of `size`, e.g. `"150m"`) mounted on `dir`, unmounted on drop:
/// for full-disk tests. `None` when not root (mounting needs it; the caller skips).
pub struct SmallDisk(PathBuf);

impl SmallDisk {
    pub fn mount(dir: &Path, size: &str) -> Option<Self> {
        Self::mount_with(dir, &format!("size={size}"))
    }

    /// A tmpfs with more `options` (`size=4m,nr_inodes=200`).
    pub fn mount_with(dir: &Path, options: &str) -> Option<Self> {
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("{options},mode=0711"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("mounting a small file system needs root; skipped");
        }
        mounted.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `initdb` of `data` for a [`TestPostgres`] ([`USER`] with [`PASSWORD`]), from a copy made once
/// per machine and binaries: initdb's catalog bootstrap is most of a test server's start, and
/// of the CPU a whole test run spends. Test processes that race to make the copy each make
/// their own, and one of them lands it.
fn initdb_cached(pg: &PgCtl, data: &Path) {
    use std::hash::{Hash, Hasher};
    let bins = pg.binaries();
    let mut key = std::collections::hash_map::DefaultHasher::new();
    ("testkit-initdb-1", bins.dir(), USER, PASSWORD).hash(&mut key);
    std::fs::metadata(bins.path("postgres")).and_then(|m| m.modified()).ok().hash(&mut key);
    let cache = std::env::temp_dir().join(format!("devdb-testkit-initdb-{}-{:016x}", bins.version(), key.finish()));
    if !cache.is_dir() {
        let making = tempfile::Builder::new().prefix("devdb-testkit-initdb-").tempdir().expect("tempdir");
        pg.make_dir(making.path()).expect("hand the directory to postgres");
        let pwfile = making.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        pg.give(&pwfile).expect("pwfile owner");
        let made = making.path().join("data");
        pg.initdb(&made, USER, &[&format!("--pwfile={}", pwfile.display())]).expect("initdb");
        // Whoever lands first wins; the others' copies go with their temporary directories.
        let _ = std::fs::rename(&made, &cache);
    }
    let copied =
        std::process::Command::new("cp").args(["-a", "--reflink=auto"]).arg(&cache).arg(data).status().expect("cp");
    assert!(copied.success(), "copying the cached initdb {} failed", cache.display());
}

/// A PostgreSQL server in a temporary directory on 127.0.0.1, stopped and removed on drop.
/// SCRAM authentication for [`USER`]; `cluster_name` is `name` so tests can tell servers apart.
pub struct TestPostgres {
    pub name: String,
    pub port: u16,
    pg: PgCtl,
    data: PathBuf,
    dir: TempDir,
}

impl TestPostgres {
    pub fn start(name: &str) -> Self {
        let pg = pg();
        let dir = tempfile::Builder::new().prefix("devdb-pg-").tempdir().expect("tempdir");
        pg.make_dir(dir.path()).expect("hand the directory to postgres");
        let data = dir.path().join("data");
        initdb_cached(&pg, &data);
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = {}\ncluster_name = {}\nfsync = off\n",
            conf_quote(dir.path()),
            conf_quote(name)
        );
        std::fs::write(data.join("postgresql.auto.conf"), conf).expect("conf");
        let log = dir.path().join("log");
        pg.start(&data, &log, Duration::from_secs(60)).expect("postgres starts");
        Self { name: name.into(), port, pg, data, dir }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The temporary directory holding the data directory and the log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }

    /// Appends `conf` to its configuration and restarts it (for settings read only at start).
    pub fn reconfigure(&self, conf: &str) {
        let auto = self.data.join("postgresql.auto.conf");
        let current = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
        std::fs::write(&auto, current + conf).expect("postgresql.auto.conf");
        self.pg.stop(&self.data, StopMode::Fast).expect("postgres stops");
        self.pg.start(&self.data, &self.dir.path().join("log"), Duration::from_secs(60)).expect("postgres starts");
    }

    /// A libpq connection string reaching the server directly over TCP.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!("host=127.0.0.1 port={} user={USER} dbname={dbname}", self.port)
    }

    /// Lets any TCP client from 127.0.0.1 in without a password (for raw protocol tests that
    /// do not speak SCRAM).
    pub fn trust_local_tcp(&self) {
        let hba = self.data.join("pg_hba.conf");
        let current = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(&hba, format!("host all all 127.0.0.1/32 trust\n{current}")).expect("pg_hba.conf");
        let status = self.pg.command("pg_ctl").arg("reload").arg("-D").arg(&self.data).status().expect("pg_ctl");
        assert!(status.success(), "pg_ctl reload");
    }

    /// Turns on TLS with the PEM certificate and key given (copied next to the data directory),
    /// without a restart.
    pub fn enable_tls(&self, cert: &Path, key: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = self.dir.path().join(to);
            std::fs::copy(from, &to).expect("copy certificate");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            self.pg.give(&to).expect("certificate owner");
        }
        let conf = format!(
            "ssl = on\nssl_cert_file = {}\nssl_key_file = {}\n",
            conf_quote(self.dir.path().join("server.crt")),
            conf_quote(self.dir.path().join("server.key"))
        );
        let auto = self.data.join("postgresql.auto.conf");
        let current = std::fs::read_to_string(&auto).expect("postgresql.auto.conf");
        std::fs::write(&auto, current + &conf).expect("postgresql.auto.conf");
        let status = self.pg.command("pg_ctl").arg("reload").arg("-D").arg(&self.data).status().expect("pg_ctl");
        assert!(status.success(), "pg_ctl reload");
    }

    /// A tokio-postgres client connected directly (no proxy, no TLS).
    pub async fn direct(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(USER)
            .password(PASSWORD)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("direct connection");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Err(err) = self.pg.stop(&self.data, StopMode::Immediate) {
            eprintln!("stopping test server {}: {err}", self.name);
        }
    }
}

/// The first column of the first row of `sql`.
pub async fn query_one(client: &tokio_postgres::Client, sql: &str) -> String {
    let rows = client.simple_query(sql).await.expect("query");
    rows.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .expect("a row")
}

/// Runs psql with `conninfo` and `sql` (password [`PASSWORD`]); returns (success, stdout, stderr).
pub async fn psql(conninfo: &str, sql: &str) -> (bool, String, String) {
    let out = tokio::process::Command::new("psql")
        .arg(conninfo)
        .args(["-X", "-A", "-t", "-c", sql])
        .env("PGPASSWORD", PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .await
        .expect("run psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}
