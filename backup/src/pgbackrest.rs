//! pgBackRest's commands for one stanza, run as the PostgreSQL user (it reads the data
//! directory and is what `archive_command` runs as) with an empty environment but `PATH`: the
//! stanza's configuration file says everything else (an S3 repository's credentials included,
//! since PostgreSQL runs `archive-push` with no environment of the controller's), and no key is
//! ever on a command line.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use devdb_pgctl::RunAs;

use crate::config::{Limits, Repository, Stanza};
use crate::info::{BackupKind, StanzaInfo};
use crate::verify::Findings;

/// Why a pgBackRest command failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot run pgbackrest ({0}): install it (Debian: apt-get install pgbackrest)")]
    Spawn(std::io::Error),
    /// Its own message (the last lines it printed), which names no secret.
    #[error("pgbackrest {command} failed: {message}")]
    Failed { command: &'static str, message: String },
    #[error("pgbackrest info printed what cannot be read: {0}")]
    Info(#[from] serde_json::Error),
    #[error("the stanza's files: {0}")]
    Files(std::io::Error),
    #[error("cannot read the S3 repository's CA file {path}: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    /// `verify` found bad files (pgBackRest exits 0 then).
    #[error(transparent)]
    Verify(#[from] Findings),
}

/// A recovery target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Everything archived.
    Latest,
    /// The last commit at or before this moment.
    Time(SystemTime),
}

/// pgBackRest for one stanza.
#[derive(Debug, Clone)]
pub struct PgBackRest {
    stanza: Stanza,
    config: PathBuf,
    run_as: Option<RunAs>,
}

impl PgBackRest {
    /// Writes `stanza`'s configuration (private to `run_as`, in its work directory) for
    /// `repository` with `key` and the default [`Limits`], and makes its work directories.
    ///
    /// # Errors
    /// [`BackupError::Files`] when they cannot be written.
    pub fn configure(
        repository: &Repository,
        stanza: Stanza,
        key: &str,
        run_as: Option<RunAs>,
    ) -> Result<Self, BackupError> {
        Self::configure_with(repository, stanza, key, run_as, Limits::default())
    }

    /// [`PgBackRest::configure`] within `limits`.
    ///
    /// # Errors
    /// [`BackupError::Files`] when they cannot be written, [`BackupError::CaFile`] when an S3
    /// repository's CA file cannot be read (the stanza keeps a copy its user can read).
    pub fn configure_with(
        repository: &Repository,
        stanza: Stanza,
        key: &str,
        run_as: Option<RunAs>,
        limits: Limits,
    ) -> Result<Self, BackupError> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, chown};
        let owner = |path: &Path| match run_as {
            Some(RunAs { uid, gid }) => chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        };
        let mut dirs = vec![stanza.work_dir.clone()];
        dirs.extend(["log", "lock", "spool"].map(|d| stanza.work_dir.join(d)));
        if let Repository::Posix(repo) = repository {
            dirs.insert(0, repo.clone());
        }
        for dir in &dirs {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(BackupError::Files)?;
            owner(dir).map_err(BackupError::Files)?;
        }
        let write_private = |path: &Path, bytes: &[u8]| {
            let _ = std::fs::remove_file(path);
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            std::io::Write::write_all(&mut file, bytes)?;
            owner(path)
        };
        if let Repository::S3 { ca_file: Some(ca), .. } = repository {
            let pem = std::fs::read(ca).map_err(|source| BackupError::CaFile { path: ca.clone(), source })?;
            write_private(&crate::config::ca_copy(&stanza), &pem).map_err(BackupError::Files)?;
        }
        let config = stanza.work_dir.join("pgbackrest.conf");
        let text = crate::config::render_with(repository, &stanza, key, &limits);
        write_private(&config, text.as_bytes()).map_err(BackupError::Files)?;
        Ok(Self { stanza, config, run_as })
    }

    pub fn stanza(&self) -> &Stanza {
        &self.stanza
    }

    /// What PostgreSQL runs for each finished WAL segment (`archive_command`), and, for a
    /// restore, to fetch one (`restore_command`, written by pgBackRest itself).
    pub fn archive_command(&self) -> String {
        crate::config::archive_command(&self.config, Some(&self.stanza.name))
    }

    fn command(&self, command: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("pgbackrest");
        cmd.env_clear().env("PATH", "/usr/bin:/bin");
        cmd.arg(format!("--config={}", self.config.display()))
            .arg(format!("--stanza={}", self.stanza.name))
            .arg(command)
            .kill_on_drop(true);
        if let Some(RunAs { uid, gid }) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }

    async fn run(&self, name: &'static str, cmd: tokio::process::Command) -> Result<String, BackupError> {
        let out = self.output(name, cmd).await?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// What `cmd` printed, when it succeeded.
    async fn output(
        &self,
        name: &'static str,
        mut cmd: tokio::process::Command,
    ) -> Result<std::process::Output, BackupError> {
        let out = cmd.output().await.map_err(BackupError::Spawn)?;
        if out.status.success() {
            return Ok(out);
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
        // Progress logged at info (verify's) is never the reason.
        let reason = |l: &&str| !l.trim().is_empty() && !l.contains(" INFO: ");
        let message = text.lines().filter(reason).take(4).collect::<Vec<_>>().join("; ");
        let message = if message.is_empty() { format!("exit status {}", out.status) } else { message };
        Err(BackupError::Failed { command: name, message })
    }

    /// Creates the stanza in the repository (idempotent: again on the same instance is a no-op;
    /// on another instance, or with another key, it fails).
    ///
    /// # Errors
    /// [`BackupError`], with pgBackRest's reason.
    pub async fn stanza_create(&self) -> Result<(), BackupError> {
        self.run("stanza-create", self.command("stanza-create")).await.map(drop)
    }

    /// Creates the stanza from the data directory `data_dir` of an instance not started yet.
    ///
    /// # Errors
    /// [`BackupError`], with pgBackRest's reason.
    pub async fn stanza_create_offline(&self, data_dir: &Path) -> Result<(), BackupError> {
        let mut cmd = self.command("stanza-create");
        cmd.arg("--no-online").arg(format!("--pg1-path={}", data_dir.display()));
        self.run("stanza-create", cmd).await.map(drop)
    }

    /// Creates the stanza unless the repository has it: unlike [`PgBackRest::stanza_create`], no
    /// lock is taken when it is there (stanza-create waits on none, and fails while an
    /// asynchronous archive-push holds the stanza's archive lock).
    ///
    /// # Errors
    /// [`BackupError`], with pgBackRest's reason.
    pub async fn ensure_stanza(&self) -> Result<(), BackupError> {
        /// pgBackRest's status codes for a stanza with no path, or no data, in the repository.
        const MISSING: [i64; 2] = [1, 3];
        if MISSING.contains(&self.info().await?.status_code) { self.stanza_create().await } else { Ok(()) }
    }

    /// Takes a backup of the running instance.
    ///
    /// # Errors
    /// [`BackupError`], with pgBackRest's reason.
    pub async fn backup(&self, kind: BackupKind) -> Result<(), BackupError> {
        self.run("backup", self.backup_command(kind)).await.map(drop)
    }

    /// The command [`PgBackRest::backup`] runs, for a caller that runs it itself (to watch or
    /// stop it). It is killed when dropped; a backup killed part way is never listed by `info`,
    /// and the next one takes its place.
    pub fn backup_command(&self, kind: BackupKind) -> tokio::process::Command {
        let mut cmd = self.command("backup");
        cmd.arg(format!("--type={}", kind.as_str()));
        cmd
    }

    /// What the stanza holds.
    ///
    /// # Errors
    /// [`BackupError`], with pgBackRest's reason.
    pub async fn info(&self) -> Result<StanzaInfo, BackupError> {
        let mut cmd = self.command("info");
        cmd.arg("--output=json");
        Ok(StanzaInfo::parse(&self.run("info", cmd).await?)?)
    }

    /// Restores the stanza into `data_dir` (empty, or made), recovered to `target` and then
    /// promoted, with archiving off: a new instance that must not archive into this stanza.
    ///
    /// # Errors
    /// [`BackupError`], with pgBackRest's reason.
    pub async fn restore(&self, target: Target, data_dir: &Path) -> Result<(), BackupError> {
        let mut cmd = self.command("restore");
        cmd.arg(format!("--pg1-path={}", data_dir.display())).arg("--archive-mode=off");
        match target {
            Target::Latest => cmd.arg("--type=default"),
            Target::Time(at) => {
                cmd.arg("--type=time").arg(format!("--target={}", target_time(at))).arg("--target-action=promote")
            }
        };
        self.run("restore", cmd).await.map(drop)
    }

    /// Checks every file of the repository against its checksums.
    ///
    /// # Errors
    /// [`BackupError::Verify`] naming each bad file; [`BackupError::Failed`] when pgBackRest
    /// stops short (as 2.45 does on a corrupted first WAL segment of an archive, which it reads
    /// to learn the segment size: `zst error: [-20] Data corruption detected`).
    pub async fn verify(&self) -> Result<(), BackupError> {
        let mut cmd = self.command("verify");
        // Each bad file is named at info only.
        cmd.arg("--log-level-console=info");
        let out = self.output("verify", cmd).await?;
        let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        crate::verify::check(&printed)?;
        Ok(())
    }
}

/// `at` as pgBackRest takes a target time (`YYYY-MM-DD HH:MM:SS.ffffff+00`: it refuses RFC 3339's
/// `T` and `Z`), which it hands to PostgreSQL's `recovery_target_time`.
fn target_time(at: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_micros(at).to_string();
    format!("{}+00", rfc3339.replacen('T', " ", 1).trim_end_matches('Z'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_time_is_written_as_pgbackrest_reads_it() {
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1_796_660_134_231_945);
        assert_eq!(target_time(at), "2026-12-07 16:15:34.231945+00");
    }
}
