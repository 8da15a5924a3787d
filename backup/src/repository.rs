//! Where a controller's backups go, as its operator names it: a directory, or `s3://bucket/prefix`
//! with the settings an S3-compatible store needs (endpoint, region, path-style addressing, the
//! CA its TLS certificate is checked against), and credentials taken from the environment only.
//! Everything here ends up in a pgBackRest configuration file, so values that could break its
//! lines are refused here, with a message saying what to give instead.

use std::path::{Path, PathBuf};

/// Where backups and archived WAL go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repository {
    /// An absolute directory (by default under the controller's data directory).
    Posix(PathBuf),
    /// An S3 bucket (or an S3-compatible store), always over TLS with the certificate checked.
    S3 {
        bucket: String,
        /// The path under the bucket, without its leading and trailing slashes (may be empty).
        prefix: String,
        /// `host` or `host:port`.
        endpoint: String,
        region: String,
        /// Addressing as `https://endpoint/bucket/…` rather than `https://bucket.endpoint/…`:
        /// what most S3-compatible stores (MinIO, Ceph, moto) need.
        path_style: bool,
        /// A CA certificate (PEM) the endpoint's certificate is checked against, instead of
        /// the system's (a private CA's store).
        ca_file: Option<PathBuf>,
        /// Without them, pgBackRest asks the instance's metadata service (an instance role).
        credentials: Option<S3Credentials>,
    },
}

/// An S3 access key, as the AWS tools take it from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
/// and `AWS_SESSION_TOKEN`. Never printed: its `Debug` shows the key id only.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub key_id: String,
    pub secret: String,
    /// A temporary key's session token.
    pub token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl S3Credentials {
    /// The key in this process's environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`), if any.
    ///
    /// # Errors
    /// [`RepositoryError::Credentials`] when only half of a key is there.
    pub fn from_env() -> Result<Option<Self>, RepositoryError> {
        Self::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, RepositoryError> {
        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (None, None) => return Ok(None),
            (Some(key_id), Some(secret)) => Self { key_id, secret, token: var("AWS_SESSION_TOKEN") },
            (Some(_), None) => {
                return Err(RepositoryError::Credentials("AWS_ACCESS_KEY_ID is set without AWS_SECRET_ACCESS_KEY"));
            }
            (None, Some(_)) => {
                return Err(RepositoryError::Credentials("AWS_SECRET_ACCESS_KEY is set without AWS_ACCESS_KEY_ID"));
            }
        };
        let printable = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic());
        let all = [Some(&credentials.key_id), Some(&credentials.secret), credentials.token.as_ref()];
        if !all.into_iter().flatten().all(|v| printable(v)) {
            return Err(RepositoryError::Credentials("the AWS_* credentials hold spaces or control characters"));
        }
        Ok(Some(credentials))
    }
}

/// What an S3 repository needs beyond its location.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    /// `host`, `host:port` or `https://host[:port]`; AWS's endpoint for the region without it.
    pub endpoint: Option<String>,
    /// `us-east-1` without it.
    pub region: Option<String>,
    pub path_style: bool,
    pub ca_file: Option<PathBuf>,
    pub credentials: Option<S3Credentials>,
}

impl S3Settings {
    fn any(&self) -> bool {
        self.endpoint.is_some() || self.region.is_some() || self.path_style || self.ca_file.is_some()
    }
}

/// Why a repository cannot be used as given.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RepositoryError {
    #[error("no backup repository given: name an absolute directory or s3://bucket/prefix")]
    Empty,
    #[error("backup repository `{0}`: unsupported scheme (use an absolute directory or s3://bucket/prefix)")]
    Scheme(String),
    #[error("backup repository directory `{0}` is relative: give an absolute path")]
    Relative(PathBuf),
    #[error("backup repository `{0}` names no bucket: use s3://bucket/prefix")]
    NoBucket(String),
    #[error(
        "`{0}` is not an S3 bucket name (3 to 63 lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit)"
    )]
    Bucket(String),
    #[error("backup repository `{0}`: the prefix holds characters a path cannot (spaces, control characters, `//`)")]
    Prefix(String),
    #[error("S3 endpoint `{0}`: give host, host:port or https://host[:port] (S3 is reached over TLS only)")]
    Endpoint(String),
    #[error("S3 region `{0}`: lower-case letters, digits and hyphens only (e.g. eu-west-1)")]
    Region(String),
    #[error("S3 settings (endpoint, region, path style, CA file) apply only to an s3:// repository")]
    S3SettingsForDirectory,
    #[error("S3 credentials: {0}")]
    Credentials(&'static str),
    #[error("a path with a line break: `{0}`")]
    LineBreak(PathBuf),
}

impl Repository {
    /// The repository `location` names (an absolute directory, or `s3://bucket[/prefix]` with
    /// `s3`'s settings).
    ///
    /// # Errors
    /// [`RepositoryError`] saying what is wrong and what to give instead.
    pub fn parse(location: &str, s3: S3Settings) -> Result<Self, RepositoryError> {
        let location = location.trim();
        if location.is_empty() {
            return Err(RepositoryError::Empty);
        }
        let Some((scheme, rest)) = location.split_once("://") else {
            if s3.any() {
                return Err(RepositoryError::S3SettingsForDirectory);
            }
            return Ok(Self::Posix(directory(Path::new(location))?));
        };
        if !scheme.eq_ignore_ascii_case("s3") {
            return Err(RepositoryError::Scheme(location.into()));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(RepositoryError::NoBucket(location.into()));
        }
        if !valid_bucket(bucket) {
            return Err(RepositoryError::Bucket(bucket.into()));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.contains("//") || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(RepositoryError::Prefix(location.into()));
        }
        let region = s3.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(RepositoryError::Region(region));
        }
        let endpoint = match s3.endpoint {
            Some(endpoint) => parse_endpoint(&endpoint)?,
            None => format!("s3.{region}.amazonaws.com"),
        };
        let ca_file = s3.ca_file.map(|file| no_line_break(&file).map(|()| file)).transpose()?;
        Ok(Self::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
            endpoint,
            region,
            path_style: s3.path_style,
            ca_file,
            credentials: s3.credentials,
        })
    }
}

fn directory(dir: &Path) -> Result<PathBuf, RepositoryError> {
    if !dir.is_absolute() {
        return Err(RepositoryError::Relative(dir.into()));
    }
    no_line_break(dir)?;
    Ok(dir.into())
}

fn no_line_break(path: &Path) -> Result<(), RepositoryError> {
    let text = path.to_string_lossy();
    if text.contains('\n') || text.contains('\r') {
        return Err(RepositoryError::LineBreak(path.into()));
    }
    Ok(())
}

/// S3's bucket naming rules (the ones every S3-compatible store accepts).
fn valid_bucket(bucket: &str) -> bool {
    let edge = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    (3..=63).contains(&bucket.len())
        && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge(bucket.bytes().next())
        && edge(bucket.bytes().last())
        && !bucket.contains("..")
}

/// `host[:port]` from `host`, `host:port` or `https://host[:port][/]`.
fn parse_endpoint(text: &str) -> Result<String, RepositoryError> {
    let refused = || RepositoryError::Endpoint(text.into());
    let host_port = match text.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => rest.trim_end_matches('/'),
        Some(_) => return Err(refused()),
        None => text,
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (host_port, None),
    };
    let host_ok = !host.is_empty()
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && !host.starts_with(['.', '-']);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok { Ok(host_port.to_ascii_lowercase()) } else { Err(refused()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(endpoint: &str) -> S3Settings {
        S3Settings { endpoint: Some(endpoint.into()), path_style: true, ..S3Settings::default() }
    }

    #[test]
    fn an_absolute_directory_is_a_directory_repository() {
        assert_eq!(
            Repository::parse("/srv/backups/devdb", S3Settings::default()),
            Ok(Repository::Posix("/srv/backups/devdb".into()))
        );
    }

    #[test]
    fn a_relative_directory_is_refused_asking_for_an_absolute_one() {
        let refused = Repository::parse("backups", S3Settings::default()).expect_err("relative");
        assert_eq!(refused, RepositoryError::Relative("backups".into()));
        assert!(refused.to_string().contains("give an absolute path"), "{refused}");
    }

    #[test]
    fn an_s3_location_names_its_bucket_and_prefix_with_aws_defaults() {
        let repository = Repository::parse("s3://devdb-backups/prod/eu/", S3Settings::default()).expect("parsed");
        assert_eq!(
            repository,
            Repository::S3 {
                bucket: "devdb-backups".into(),
                prefix: "prod/eu".into(),
                endpoint: "s3.us-east-1.amazonaws.com".into(),
                region: "us-east-1".into(),
                path_style: false,
                ca_file: None,
                credentials: None,
            }
        );
        let region = S3Settings { region: Some("eu-west-1".into()), ..S3Settings::default() };
        let Ok(Repository::S3 { endpoint, prefix, .. }) = Repository::parse("s3://devdb-backups", region) else {
            panic!("an S3 repository");
        };
        assert_eq!((endpoint.as_str(), prefix.as_str()), ("s3.eu-west-1.amazonaws.com", ""));
    }

    #[test]
    fn an_endpoint_may_be_a_host_a_host_and_port_or_an_https_url() {
        for (given, kept) in [
            ("minio.internal", "minio.internal"),
            ("localhost:9000", "localhost:9000"),
            ("https://S3.example.com:8443/", "s3.example.com:8443"),
        ] {
            let Ok(Repository::S3 { endpoint, .. }) = Repository::parse("s3://bkt", s3(given)) else {
                panic!("{given} refused");
            };
            assert_eq!(endpoint, kept);
        }
        for bad in ["http://minio:9000", "ftp://x", "host:0", "host:99999", "", "a b", "host/path", "-x"] {
            assert_eq!(Repository::parse("s3://bkt", s3(bad)), Err(RepositoryError::Endpoint(bad.into())), "{bad}");
        }
    }

    #[test]
    fn another_scheme_is_refused_naming_what_is_supported() {
        let refused = Repository::parse("gs://bucket/x", S3Settings::default()).expect_err("gs");
        assert!(matches!(refused, RepositoryError::Scheme(_)), "{refused:?}");
        assert!(refused.to_string().contains("s3://bucket/prefix"), "{refused}");
        assert!(matches!(Repository::parse("file:///srv/b", S3Settings::default()), Err(RepositoryError::Scheme(_))));
    }

    #[test]
    fn a_location_without_a_bucket_or_with_a_bad_one_is_refused() {
        for empty in ["s3://", "s3:///prefix"] {
            assert_eq!(
                Repository::parse(empty, S3Settings::default()),
                Err(RepositoryError::NoBucket(empty.into())),
                "{empty}"
            );
        }
        for bad in ["ab", "Upper", "under_score", "-dash", "dot.", "a..b", &"a".repeat(64)] {
            assert_eq!(
                Repository::parse(&format!("s3://{bad}/p"), S3Settings::default()),
                Err(RepositoryError::Bucket(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(Repository::parse("  ", S3Settings::default()), Err(RepositoryError::Empty));
    }

    #[test]
    fn nothing_that_would_break_a_configuration_line_gets_through() {
        assert!(matches!(Repository::parse("s3://bkt/a\nb", S3Settings::default()), Err(RepositoryError::Prefix(_))));
        assert!(matches!(Repository::parse("s3://bkt/a b", S3Settings::default()), Err(RepositoryError::Prefix(_))));
        assert!(matches!(Repository::parse("/srv/a\nb", S3Settings::default()), Err(RepositoryError::LineBreak(_))));
        let region = S3Settings { region: Some("eu-west-1\n[global]".into()), ..S3Settings::default() };
        assert!(matches!(Repository::parse("s3://bkt", region), Err(RepositoryError::Region(_))));
        let ca = S3Settings { ca_file: Some("/etc/ca\n.pem".into()), ..S3Settings::default() };
        assert!(matches!(Repository::parse("s3://bkt", ca), Err(RepositoryError::LineBreak(_))));
    }

    #[test]
    fn s3_settings_for_a_directory_are_refused_not_ignored() {
        assert_eq!(Repository::parse("/srv/b", s3("minio:9000")), Err(RepositoryError::S3SettingsForDirectory));
    }

    #[test]
    fn credentials_come_whole_from_the_environment_and_are_never_printed() {
        let vars = |pairs: &'static [(&str, &str)]| {
            move |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| (*v).to_string())
        };
        assert_eq!(S3Credentials::from_vars(vars(&[])), Ok(None));
        let key = S3Credentials::from_vars(vars(&[
            ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG"),
            ("AWS_SESSION_TOKEN", "FwoGZXIvYXdzE"),
        ]))
        .expect("whole")
        .expect("a key");
        assert_eq!(key.token.as_deref(), Some("FwoGZXIvYXdzE"));
        let printed = format!("{key:?}");
        assert!(
            printed.contains("AKIAEXAMPLE") && !printed.contains("wJalr") && !printed.contains("FwoG"),
            "{printed}"
        );
        let half = S3Credentials::from_vars(vars(&[("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")])).expect_err("half");
        assert!(half.to_string().contains("without AWS_SECRET_ACCESS_KEY"), "{half}");
        let broken = S3Credentials::from_vars(vars(&[("AWS_ACCESS_KEY_ID", "a\nb"), ("AWS_SECRET_ACCESS_KEY", "s")]));
        assert!(broken.is_err());
    }
}
