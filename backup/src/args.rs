//! The controller's backup flags, for either runtime: `--backup-repo DIR | s3://bucket/prefix`
//! and the S3 settings beside it, parsed into a [`Repository`] when the controller starts (a bad
//! value stops it there, not at the first backup). S3 credentials come from the environment only
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), never from a flag.

use std::path::{Path, PathBuf};

use crate::{Repository, RepositoryError, S3Credentials, S3Settings};
use clap::Args;

/// Flags of the backup repository.
#[derive(Debug, Clone, Args)]
pub struct BackupRepoArgs {
    /// Where databases' backups and archived WAL go: an absolute directory (a relative one is
    /// taken from the current directory) or s3://bucket/prefix [default: <data-dir>/backups].
    /// Keep it outside the data directory for the backups to outlive losing it. S3 credentials
    /// come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (else the
    /// instance's role).
    #[arg(long, env = "DEVDB_BACKUP_REPO", value_name = "DIR | s3://bucket/prefix")]
    pub backup_repo: Option<String>,

    /// The S3 endpoint (host, host:port or https://host[:port]) [default: AWS's for the region].
    #[arg(long, env = "DEVDB_BACKUP_S3_ENDPOINT")]
    pub backup_s3_endpoint: Option<String>,

    /// The S3 region [default: us-east-1].
    #[arg(long, env = "DEVDB_BACKUP_S3_REGION")]
    pub backup_s3_region: Option<String>,

    /// Address buckets as https://endpoint/bucket (most S3-compatible stores: MinIO, Ceph)
    /// rather than https://bucket.endpoint.
    #[arg(long, env = "DEVDB_BACKUP_S3_PATH_STYLE")]
    pub backup_s3_path_style: bool,

    /// A CA certificate (PEM) to check the S3 endpoint's certificate against, instead of the
    /// system's. TLS is always checked.
    #[arg(long, env = "DEVDB_BACKUP_S3_CA_FILE")]
    pub backup_s3_ca_file: Option<PathBuf>,
}

/// Why the backup repository cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BackupRepoError {
    #[error("--backup-repo: {0}")]
    Invalid(#[from] RepositoryError),
    #[error("--backup-s3-ca-file {path}: {source}")]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("--backup-repo {path}: cannot resolve it against the current directory: {source}")]
    Resolve { path: PathBuf, source: std::io::Error },
}

/// The default repository of `data_dir`'s backups.
pub fn default_repository(data_dir: &Path) -> Repository {
    Repository::Posix(data_dir.join("backups"))
}

impl BackupRepoArgs {
    /// The repository these flags name (`data_dir`'s default without `--backup-repo`), with the
    /// S3 credentials of this process's environment.
    ///
    /// # Errors
    /// [`BackupRepoError`] naming the flag and what to give instead.
    pub fn repository(&self, data_dir: &Path) -> Result<Repository, BackupRepoError> {
        let default = data_dir.join("backups").to_string_lossy().into_owned();
        self.parse(self.backup_repo.as_deref().unwrap_or(&default))
    }

    /// The repository `--backup-repo` names, or `None` without it (where backups have no
    /// default place: the Kubernetes runtime's).
    ///
    /// # Errors
    /// As [`Self::repository`]; S3 settings without `--backup-repo` are refused too.
    pub fn configured(&self) -> Result<Option<Repository>, BackupRepoError> {
        match self.backup_repo.as_deref() {
            Some(location) => self.parse(location).map(Some),
            None if self.s3_settings_given() => Err(RepositoryError::S3SettingsForDirectory.into()),
            None => Ok(None),
        }
    }

    fn s3_settings_given(&self) -> bool {
        self.backup_s3_endpoint.is_some()
            || self.backup_s3_region.is_some()
            || self.backup_s3_path_style
            || self.backup_s3_ca_file.is_some()
    }

    fn parse(&self, location: &str) -> Result<Repository, BackupRepoError> {
        let location = match location {
            text if text.trim().is_empty() || text.contains("://") || Path::new(text).is_absolute() => text.to_string(),
            text => std::path::absolute(text)
                .map_err(|source| BackupRepoError::Resolve { path: text.into(), source })?
                .to_string_lossy()
                .into_owned(),
        };
        let s3 = location.contains("://");
        let settings = S3Settings {
            endpoint: self.backup_s3_endpoint.clone(),
            region: self.backup_s3_region.clone(),
            path_style: self.backup_s3_path_style,
            ca_file: self.backup_s3_ca_file.clone(),
            credentials: if s3 { S3Credentials::from_env()? } else { None },
        };
        // S3 settings without an S3 repository are refused, the default directory's included.
        let repository = Repository::parse(&location, settings)?;
        // Read now: a CA file that cannot be read would otherwise fail every backup, later.
        if let Repository::S3 { ca_file: Some(path), .. } = &repository {
            std::fs::metadata(path)
                .and_then(|m| if m.is_file() { Ok(()) } else { Err(std::io::ErrorKind::InvalidInput.into()) })
                .and_then(|()| std::fs::File::open(path).map(drop))
                .map_err(|source| BackupRepoError::CaFile { path: path.clone(), source })?;
        }
        Ok(repository)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        repo: BackupRepoArgs,
    }

    fn parse(args: &[&str]) -> Result<Repository, BackupRepoError> {
        Cli::try_parse_from([&["x"], args].concat()).expect("flags").repo.repository(Path::new("/srv/devdb"))
    }

    #[test]
    fn without_the_flag_backups_go_beside_the_state_in_the_data_directory() {
        assert_eq!(parse(&[]).expect("default"), Repository::Posix("/srv/devdb/backups".into()));
        assert_eq!(default_repository(Path::new("/srv/devdb")), Repository::Posix("/srv/devdb/backups".into()));
    }

    #[test]
    fn without_the_flag_a_runtime_without_a_default_has_no_repository_and_no_s3_settings() {
        let configured = |args: &[&str]| Cli::try_parse_from([&["x"], args].concat()).expect("flags").repo.configured();
        assert_eq!(configured(&[]).expect("none"), None);
        let s3 = configured(&["--backup-repo", "s3://bkt/devdb", "--backup-s3-region", "eu-west-1"]).expect("S3");
        assert!(matches!(s3, Some(Repository::S3 { ref region, .. }) if region == "eu-west-1"), "{s3:?}");
        let refused = configured(&["--backup-s3-region", "eu-west-1"]).expect_err("S3 settings alone");
        assert!(refused.to_string().contains("only to an s3:// repository"), "{refused}");
    }

    #[test]
    fn a_directory_is_taken_absolute_and_a_relative_one_from_the_current_directory() {
        assert_eq!(parse(&["--backup-repo", "/backups"]).expect("dir"), Repository::Posix("/backups".into()));
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(parse(&["--backup-repo", "bk"]).expect("relative"), Repository::Posix(cwd.join("bk")));
    }

    #[test]
    fn an_s3_repository_takes_its_settings_from_the_s3_flags() {
        let ca = tempfile::NamedTempFile::new().expect("a CA file");
        let ca_path = ca.path().to_str().expect("utf-8");
        let repository = parse(&[
            "--backup-repo",
            "s3://devdb-backups/prod",
            "--backup-s3-endpoint",
            "https://minio.internal:9000",
            "--backup-s3-region",
            "eu-west-1",
            "--backup-s3-path-style",
            "--backup-s3-ca-file",
            ca_path,
        ])
        .expect("S3");
        let Repository::S3 { bucket, prefix, endpoint, region, path_style, ca_file, .. } = repository else {
            panic!("{repository:?}");
        };
        assert_eq!(
            (bucket.as_str(), prefix.as_str(), endpoint.as_str(), region.as_str(), path_style),
            ("devdb-backups", "prod", "minio.internal:9000", "eu-west-1", true)
        );
        assert_eq!(ca_file.as_deref(), Some(ca.path()));
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let refused = parse(&["--backup-repo", "gs://bucket"]).expect_err("scheme").to_string();
        assert!(refused.starts_with("--backup-repo: ") && refused.contains("s3://bucket/prefix"), "{refused}");
        let refused = parse(&["--backup-repo", "s3://"]).expect_err("no bucket").to_string();
        assert!(refused.contains("names no bucket"), "{refused}");
        let refused =
            parse(&["--backup-repo", "s3://bkt", "--backup-s3-ca-file", "/no/such/ca.pem"]).expect_err("no CA");
        assert!(refused.to_string().starts_with("--backup-s3-ca-file /no/such/ca.pem"), "{refused}");
        let refused = parse(&["--backup-s3-endpoint", "minio:9000"]).expect_err("S3 settings without S3");
        assert!(refused.to_string().contains("only to an s3:// repository"), "{refused}");
    }
}
