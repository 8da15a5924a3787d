//! A stanza's pgBackRest configuration: where its repository is, how it is encrypted, where its
//! instance's data and socket are, and the `archive_command` that instance runs. The file holds
//! the stanza's repository key, so it is written private to the PostgreSQL user; nothing secret
//! is ever put on a command line (where `ps` would show it).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::repository::S3Credentials;

pub use crate::repository::Repository;

/// One database's stanza: its name in the repository and its instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stanza {
    /// Unique per database incarnation (its id): a database deleted and created again under the
    /// same name never reads the old one's backups.
    pub name: String,
    /// The instance's data directory.
    pub data_dir: PathBuf,
    /// The instance's port and Unix socket directory (pgBackRest connects as the superuser
    /// over the socket).
    pub port: u16,
    pub socket_dir: PathBuf,
    /// The superuser pgBackRest connects as (over the socket, trusted locally).
    pub superuser: String,
    /// Where pgBackRest keeps its locks, logs and asynchronous archiving queue for this stanza.
    pub work_dir: PathBuf,
    /// Which full backups are kept (older ones, and the WAL only they need, expire).
    pub retention: Retention,
}

/// Which of a stanza's full backups pgBackRest keeps (`repo1-retention-full-type` and
/// `repo1-retention-full`); the differential and incremental backups of an expired full backup,
/// and the WAL only they need, expire with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// The newest this many full backups (at least one).
    Full(u32),
    /// Those needed to restore to any moment of the last this many days (at least one): every
    /// full backup younger, and the newest older one.
    Days(u32),
}

impl Default for Retention {
    /// The two newest full backups.
    fn default() -> Self {
        Self::Full(2)
    }
}

impl Retention {
    /// The most pgBackRest takes, of either kind.
    pub const MAX: u32 = 9_999_999;

    /// What a database's backups keep: the days its retention names, else the default.
    pub fn kept(days: Option<u32>) -> Self {
        days.map_or_else(Self::default, Self::Days)
    }

    /// Its two configuration lines.
    fn lines(self) -> String {
        let (kind, n) = match self {
            Self::Full(n) => ("count", n),
            Self::Days(n) => ("time", n),
        };
        format!("repo1-retention-full-type={kind}\nrepo1-retention-full={}", n.clamp(1, Self::MAX))
    }
}

/// The key a stanza's repository files are encrypted with: an HMAC of the stanza's name under
/// the controller's secret, hex (pgBackRest then derives a key per file from it).
pub fn stanza_key(secret: &[u8], stanza: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, format!("devdb-backup:{stanza}").as_bytes());
    tag.as_ref().iter().fold(String::with_capacity(64), |mut hex, b| {
        let _ = write!(hex, "{b:02x}");
        hex
    })
}

/// Whether `name` may name a stanza: it becomes a section of a configuration file and a path
/// in the repository.
pub fn valid_stanza_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// Where a stanza keeps its copy of an S3 repository's CA file: in its work directory, readable
/// by the PostgreSQL user (who runs `archive-push`) whoever owns the original.
pub fn ca_copy(stanza: &Stanza) -> PathBuf {
    stanza.work_dir.join("s3-ca.crt")
}

/// What PostgreSQL runs for each finished WAL segment of `stanza` (`archive_command`), with the
/// configuration file at `config`; without a stanza, pgBackRest takes the one its environment
/// names (`PGBACKREST_STANZA`).
pub fn archive_command(config: &Path, stanza: Option<&str>) -> String {
    // Run by a shell: the path single-quoted (a stanza's name is plain).
    let config = config.display().to_string().replace('\'', r"'\''");
    let stanza = stanza.map(|s| format!(" --stanza={s}")).unwrap_or_default();
    format!("pgbackrest '--config={config}'{stanza} archive-push %p")
}

/// How much WAL may wait in `pg_wal` for a repository that cannot be reached before pgBackRest
/// drops it (`archive-push-queue-max`), when the caller does not say: 1 GiB. Past it, the
/// database keeps running and the stanza cannot be restored across the dropped WAL until its
/// next backup; below it, a repository outage costs nothing but disk.
pub const DEFAULT_ARCHIVE_QUEUE_MAX: u64 = 1 << 30;

/// What a stanza's archiving may cost its instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of WAL segments waiting to be archived past which pgBackRest reports them archived
    /// and drops them (with a warning in PostgreSQL's log) instead of letting `pg_wal` fill the
    /// disk and stop the database. Checked against whole segments (16 MiB each).
    pub archive_queue_max: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { archive_queue_max: DEFAULT_ARCHIVE_QUEUE_MAX }
    }
}

/// The configuration file of `stanza` in `repository`, encrypted with `key`, with the default
/// [`Limits`].
///
/// # Panics
/// As [`render_with`].
pub fn render(repository: &Repository, stanza: &Stanza, key: &str) -> String {
    render_with(repository, stanza, key, &Limits::default())
}

/// The configuration file of `stanza` in `repository`, encrypted with `key`, within `limits`.
///
/// # Panics
/// Never for a stanza whose name passed [`valid_stanza_name`] and paths without newlines (the
/// caller's own directories).
pub fn render_with(repository: &Repository, stanza: &Stanza, key: &str, limits: &Limits) -> String {
    render_inner(repository, stanza, key, limits, "auto")
}

/// As [`render_with`], for an instance given an IAM role through a web identity (EKS's IRSA: a
/// Kubernetes pod whose ServiceAccount names the role): an S3 repository without an access
/// key is reached with pgBackRest's `web-id` key type, which reads `AWS_ROLE_ARN` and
/// `AWS_WEB_IDENTITY_TOKEN_FILE` (`auto` asks the instance metadata service only).
///
/// # Panics
/// As [`render_with`].
pub fn render_web_identity(repository: &Repository, stanza: &Stanza, key: &str, limits: &Limits) -> String {
    render_inner(repository, stanza, key, limits, "web-id")
}

/// `key_type`: pgBackRest's `repo1-s3-key-type` for an S3 repository without an access key.
fn render_inner(repository: &Repository, stanza: &Stanza, key: &str, limits: &Limits, key_type: &str) -> String {
    assert!(valid_stanza_name(&stanza.name), "stanza name {:?}", stanza.name);
    let path = |p: &Path| {
        let p = p.display().to_string();
        assert!(!p.contains('\n') && !p.contains('\r'), "a path with a newline: {p:?}");
        p
    };
    let work = &stanza.work_dir;
    let mut conf = String::from("[global]\n");
    match repository {
        Repository::Posix(dir) => {
            let _ = writeln!(conf, "repo1-type=posix\nrepo1-path={}", path(dir));
        }
        Repository::S3 { bucket, prefix, endpoint, region, path_style, ca_file, credentials } => {
            let _ = writeln!(
                conf,
                "repo1-type=s3\nrepo1-path=/{}\nrepo1-s3-bucket={bucket}\nrepo1-s3-endpoint={endpoint}\n\
                 repo1-s3-region={region}\nrepo1-s3-uri-style={}",
                prefix.trim_matches('/'),
                if *path_style { "path" } else { "host" }
            );
            if ca_file.is_some() {
                let _ = writeln!(conf, "repo1-storage-ca-file={}", path(&ca_copy(stanza)));
            }
            match credentials {
                Some(S3Credentials { key_id, secret, token }) => {
                    let _ = writeln!(conf, "repo1-s3-key={key_id}\nrepo1-s3-key-secret={secret}");
                    if let Some(token) = token {
                        let _ = writeln!(conf, "repo1-s3-token={token}");
                    }
                }
                None => {
                    let _ = writeln!(conf, "repo1-s3-key-type={key_type}");
                }
            }
        }
    }
    let _ = writeln!(
        conf,
        "repo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass={key}\n{retention}\n\
         log-path={log}\nlock-path={lock}\nspool-path={spool}\nlog-level-console=warn\nlog-level-stderr=warn\n\
         log-level-file=off\narchive-async=y\narchive-push-queue-max={queue_max}\ncompress-type=zst\nprocess-max=2\nstart-fast=y\n\n\
         [{name}]\npg1-path={data}\npg1-port={port}\npg1-socket-path={socket}\npg1-user={user}",
        retention = stanza.retention.lines(),
        queue_max = limits.archive_queue_max,
        log = path(&work.join("log")),
        lock = path(&work.join("lock")),
        spool = path(&work.join("spool")),
        name = stanza.name,
        data = path(&stanza.data_dir),
        port = stanza.port,
        socket = path(&stanza.socket_dir),
        user = stanza.superuser,
    );
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza() -> Stanza {
        Stanza {
            name: "db-kate-0123".into(),
            data_dir: "/srv/devdb/db/kate-pg/data".into(),
            port: 40123,
            socket_dir: "/srv/devdb/db/kate-pg".into(),
            superuser: "devdb".into(),
            work_dir: "/srv/devdb/backup/work/db-kate-0123".into(),
            retention: Retention::default(),
        }
    }

    #[test]
    fn each_stanza_has_its_own_key_and_another_secret_gives_another() {
        let a = stanza_key(b"installation-one", "db-kate-0123");
        assert_eq!(a.len(), 64);
        assert_eq!(a, stanza_key(b"installation-one", "db-kate-0123"), "derived, not random");
        assert_ne!(a, stanza_key(b"installation-one", "db-bob-4567"));
        assert_ne!(a, stanza_key(b"installation-two", "db-kate-0123"));
    }

    #[test]
    fn the_configuration_names_the_repository_the_key_and_the_instance() {
        let conf = render(&Repository::Posix("/srv/devdb/backup/repo".into()), &stanza(), "k3y");
        for line in [
            "repo1-path=/srv/devdb/backup/repo",
            "repo1-cipher-type=aes-256-cbc",
            "repo1-cipher-pass=k3y",
            "[db-kate-0123]",
            "pg1-path=/srv/devdb/db/kate-pg/data",
            "pg1-port=40123",
            "spool-path=/srv/devdb/backup/work/db-kate-0123/spool",
            "archive-async=y",
            "archive-push-queue-max=1073741824",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        let s3 = Repository::S3 {
            bucket: "devdb-backups".into(),
            prefix: "/prod/".into(),
            endpoint: "s3.eu-west-1.amazonaws.com".into(),
            region: "eu-west-1".into(),
            path_style: false,
            ca_file: None,
            credentials: None,
        };
        let conf = render(&s3, &stanza(), "k3y");
        assert!(conf.contains("repo1-type=s3\nrepo1-path=/prod\nrepo1-s3-bucket=devdb-backups\n"), "{conf}");
        assert!(conf.contains("repo1-s3-uri-style=host"));
        assert!(conf.lines().any(|l| l == "repo1-s3-key-type=auto"), "no key: the instance's role");
        assert!(!conf.contains("storage-ca-file") && !conf.contains("verify-tls"), "the system's CAs, checked");
    }

    #[test]
    fn an_s3_compatible_store_gets_path_style_its_ca_and_the_key_from_the_environment() {
        let s3 = Repository::S3 {
            bucket: "bkt".into(),
            prefix: String::new(),
            endpoint: "localhost:9000".into(),
            region: "us-east-1".into(),
            path_style: true,
            ca_file: Some("/etc/devdb/s3-ca.pem".into()),
            credentials: Some(S3Credentials { key_id: "id".into(), secret: "s3cr3t".into(), token: None }),
        };
        let conf = render(&s3, &stanza(), "k3y");
        for line in [
            "repo1-path=/",
            "repo1-s3-endpoint=localhost:9000",
            "repo1-s3-uri-style=path",
            "repo1-storage-ca-file=/srv/devdb/backup/work/db-kate-0123/s3-ca.crt",
            "repo1-s3-key=id",
            "repo1-s3-key-secret=s3cr3t",
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        assert!(!conf.contains("key-type") && !conf.contains("verify-tls"), "{conf}");
    }

    #[test]
    fn full_backups_are_kept_by_count_by_default_or_for_days() {
        let repo = Repository::Posix("/r".into());
        let conf = render(&repo, &stanza(), "k");
        assert!(conf.contains("\nrepo1-retention-full-type=count\nrepo1-retention-full=2\n"), "{conf}");
        let kept = |retention| render(&repo, &Stanza { retention, ..stanza() }, "k");
        let conf = kept(Retention::Days(7));
        assert!(conf.contains("\nrepo1-retention-full-type=time\nrepo1-retention-full=7\n"), "{conf}");
        assert_eq!(conf.matches("retention").count(), 2, "no other retention line: {conf}");
        assert!(kept(Retention::Days(0)).contains("\nrepo1-retention-full=1\n"), "at least a day");
        assert!(kept(Retention::Full(u32::MAX)).contains("\nrepo1-retention-full=9999999\n"), "pgBackRest's most");
    }

    #[test]
    fn a_role_given_through_a_web_identity_is_read_by_the_web_id_key_type_and_a_key_still_wins() {
        let mut s3 = Repository::parse("s3://bkt/devdb", crate::S3Settings::default()).expect("S3");
        let conf = render_web_identity(&s3, &stanza(), "k", &Limits::default());
        assert!(conf.lines().any(|l| l == "repo1-s3-key-type=web-id"), "{conf}");
        assert!(!conf.contains("key-type=auto"), "{conf}");
        if let Repository::S3 { credentials, .. } = &mut s3 {
            *credentials = Some(S3Credentials { key_id: "id".into(), secret: "s".into(), token: None });
        }
        let conf = render_web_identity(&s3, &stanza(), "k", &Limits::default());
        assert!(!conf.contains("key-type") && conf.contains("\nrepo1-s3-key=id\n"), "{conf}");
    }

    #[test]
    fn a_smaller_archive_queue_is_written_in_bytes() {
        let limits = Limits { archive_queue_max: 64 << 20 };
        let conf = render_with(&Repository::Posix("/r".into()), &stanza(), "k", &limits);
        assert!(conf.lines().any(|l| l == "archive-push-queue-max=67108864"), "{conf}");
    }

    #[test]
    fn stanza_names_are_plain() {
        assert!(valid_stanza_name("db-kate-0123"));
        for bad in ["", "-x", "Kate", "a b", "a]\n[global", "../x", &"a".repeat(65)] {
            assert!(!valid_stanza_name(bad), "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "stanza name")]
    fn a_name_that_would_open_another_section_is_never_written() {
        let stanza = Stanza { name: "x]\n[global".into(), ..stanza() };
        let _ = render(&Repository::Posix("/r".into()), &stanza, "k");
    }
}
