//! The Kubernetes runtime's flags (the Helm chart sets them all) and its validated settings.

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Args;
use devdb_backup::Repository;

use crate::backups::BackupSettings;
use crate::resources::{ClusterSettings, ProjectAccess};
use crate::runtime::Waits;

/// Flags of the Kubernetes runtime (the Helm chart sets them all).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kubernetes runtime (--runtime kube)")]
pub struct KubeArgs {
    /// The namespace the controller and the proxy run in (leader lease, source credentials).
    #[arg(long, env = "DEVDB_CONTROLLER_NAMESPACE", default_value = "devdb")]
    pub namespace: String,

    /// The postgres-db image restore Jobs and database pods run.
    #[arg(long, env = "DEVDB_CONTROLLER_IMAGE", default_value = concat!("ghcr.io/devdb/postgres-db:", env!("CARGO_PKG_VERSION"), "-pg15"))]
    pub image: String,

    /// The PostgreSQL major version of --image (projects must ask for it or nothing).
    #[arg(long, env = "DEVDB_CONTROLLER_DB_VERSION", default_value_t = 15)]
    pub db_version: u32,

    /// StorageClass of project and database volumes (empty: the cluster's default). Its CSI
    /// driver must support snapshots.
    #[arg(long, env = "DEVDB_CONTROLLER_STORAGE_CLASS")]
    pub storage_class: Option<String>,

    /// VolumeSnapshotClass of project snapshots (empty: the cluster's default).
    #[arg(long, env = "DEVDB_CONTROLLER_VOLUME_SNAPSHOT_CLASS")]
    pub volume_snapshot_class: Option<String>,

    /// Size of every project and database volume.
    #[arg(long, env = "DEVDB_CONTROLLER_VOLUME_SIZE", default_value = "20Gi")]
    pub volume_size: String,

    /// Run databases even where the cluster does not enforce NetworkPolicies (then any pod can
    /// reach every database and try its password). By default the controller checks, on the
    /// first database it starts and again every 6 hours, that it cannot connect to it, and
    /// refuses databases while it can.
    #[arg(long, env = "DEVDB_CONTROLLER_ALLOW_UNENFORCED_NETWORK_POLICIES")]
    pub allow_unenforced_network_policies: bool,

    /// CPU a restore Job requests.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_CPU", default_value = "1")]
    pub restore_cpu: String,

    /// Memory a restore Job requests and is limited to.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_MEMORY", default_value = "2Gi")]
    pub restore_memory: String,

    /// How long a restore Job may run (a source that trickles just fast enough, a dump whose
    /// statements never end): it fails then, and its pod is ended ten minutes later at most.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_DEADLINE", default_value = "6h", value_parser = humantime::parse_duration)]
    pub restore_deadline: std::time::Duration,

    /// Labels of the proxy pods, the only peers NetworkPolicies admit to databases.
    #[arg(long, env = "DEVDB_CONTROLLER_PROXY_SELECTOR", default_value = "app.kubernetes.io/name=devdb-proxy")]
    pub proxy_selector: String,

    /// A Secret in --namespace whose keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, …) the restore Jobs of s3:// sources get as files, for the download alone
    /// (copied only into those projects' namespaces).
    #[arg(long, env = "DEVDB_CONTROLLER_SOURCE_CREDENTIALS")]
    pub source_credentials: Option<String>,

    /// The ClusterRole each project's namespace grants the controller, through a RoleBinding
    /// the controller makes there (the chart's `<release>-project`). Empty: none is made, the
    /// controller's own role must allow everything (development clusters).
    #[arg(long, env = "DEVDB_CONTROLLER_PROJECT_ROLE", requires = "service_account")]
    pub project_role: Option<String>,

    /// The controller's ServiceAccount (in --namespace), the subject of those RoleBindings.
    #[arg(long, env = "DEVDB_CONTROLLER_SERVICE_ACCOUNT")]
    pub service_account: Option<String>,

    /// Annotations (key=value, comma-separated) of the ServiceAccount `devdb-restore` the
    /// controller makes in the namespace of each project with an s3:// source, which its restore
    /// Jobs run as, e.g. `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/devdb-restore` (IRSA: S3
    /// access without copying keys). Empty with EKS Pod Identity: associate the role with
    /// `devdb-restore` in the projects' namespaces.
    #[arg(long, env = "DEVDB_CONTROLLER_RESTORE_ACCOUNT_ANNOTATIONS", default_value = "")]
    pub restore_account_annotations: String,

    /// Annotations (key=value, comma-separated) of the ServiceAccount `devdb-backup` the
    /// controller makes in each project's namespace, which databases with backups run as and
    /// archive to the --backup-repo bucket with, e.g.
    /// `eks.amazonaws.com/role-arn=arn:aws:iam::…:role/devdb-backup` (IRSA). Empty with S3 keys
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY in the controller's environment).
    #[arg(long, env = "DEVDB_CONTROLLER_BACKUP_ACCOUNT_ANNOTATIONS", default_value = "")]
    pub backup_account_annotations: String,

    /// Secret key (32+ characters) database and project passwords are derived from; keep it
    /// stable (the chart keeps it in a Secret).
    #[arg(long, env = "DEVDB_CONTROLLER_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// This replica's name in the leader lease and in Events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "devdb-controller")]
    pub identity: String,

    /// How long a restore or a new database may stay blocked for one reason (no node can take
    /// its pod, its image cannot be pulled, its volume cannot be provisioned or attached, it
    /// crash-loops, its snapshot reports an error or nothing acts on it) before it fails with
    /// that reason and what it made is removed. Long enough for the cluster autoscaler to add a
    /// node.
    #[arg(long, env = "DEVDB_CONTROLLER_STUCK_AFTER", default_value = "5m", value_parser = humantime::parse_duration)]
    pub stuck_after: Duration,

    /// How long a project's volume snapshot may take (the first EBS snapshot of a volume copies
    /// all of it: hours for a large one).
    #[arg(long, env = "DEVDB_CONTROLLER_SNAPSHOT_TIMEOUT", default_value = "12h", value_parser = humantime::parse_duration)]
    pub snapshot_timeout: Duration,

    /// The cluster's DNS domain: databases' backend addresses are fully qualified names under
    /// it (`<database>.devdb-<project>.svc.<domain>.`), which the proxy resolves in one query.
    /// Empty: `<database>.devdb-<project>.svc`, resolved through the search list (a proxy that
    /// resolves them from /etc/hosts, which does not match a name ending in a dot).
    #[arg(long, env = "DEVDB_CONTROLLER_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// `host:port` of the proxy's Service, through which the controller samples databases for
    /// their charts (the chart sets it; empty: databases are not sampled).
    #[arg(long, env = "DEVDB_CONTROLLER_MONITOR_THROUGH", default_value = "")]
    pub monitor_through: String,

    /// Extra CA certificates (PEM) to verify the proxy's certificate with when sampling, besides
    /// the system's roots (a private issuer's `ca.crt`; a missing file is skipped).
    #[arg(long, env = "DEVDB_CONTROLLER_MONITOR_CA")]
    pub monitor_ca: Option<std::path::PathBuf>,

    /// Start each sampling connection with a PROXY protocol v2 header: set it when the proxy runs
    /// with `--proxy-protocol` (behind an NLB that sends one), which refuses connections without.
    #[arg(long, env = "DEVDB_CONTROLLER_MONITOR_PROXY_PROTOCOL")]
    pub monitor_proxy_protocol: bool,
}

/// The runtimes a controller can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    Local,
    Kube,
}

/// Validated Kubernetes runtime settings.
#[derive(Clone)]
pub struct KubeConfig {
    pub cluster: ClusterSettings,
    pub db_version: u32,
    pub secret_key: String,
    pub identity: String,
    pub waits: Waits,
    /// Where to sample databases through (the proxy's Service), and the extra CA.
    pub monitor_through: Option<String>,
    pub monitor_ca: Option<std::path::PathBuf>,
    pub monitor_proxy_protocol: bool,
    /// Annotations of the backup account (see [`crate::backups::BACKUP_ACCOUNT`]).
    pub backup_account_annotations: BTreeMap<String, String>,
    /// Where databases with backups archive and are backed up; `None`: backups are off here.
    pub backups: Option<BackupSettings>,
}

impl std::fmt::Debug for KubeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeConfig")
            .field("cluster", &self.cluster)
            .field("db_version", &self.db_version)
            .field("identity", &self.identity)
            .field("waits", &self.waits)
            .field("monitor_through", &self.monitor_through)
            .field("monitor_proxy_protocol", &self.monitor_proxy_protocol)
            .field("backups", &self.backups)
            .finish_non_exhaustive()
    }
}

impl TryFrom<KubeArgs> for KubeConfig {
    type Error = KubeConfigError;

    fn try_from(args: KubeArgs) -> Result<Self, Self::Error> {
        let secret_key = args.secret_key.filter(|k| k.len() >= 32).ok_or(KubeConfigError::SecretKey)?;
        let proxy_labels = args
            .proxy_selector
            .split(',')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
                _ => Err(KubeConfigError::ProxySelector(args.proxy_selector.clone())),
            })
            .collect::<Result<_, _>>()?;
        let non_empty = |v: Option<String>| v.filter(|v| !v.is_empty());
        let cluster_domain = args.cluster_domain.trim().trim_matches('.').to_ascii_lowercase();
        let label =
            |l: &str| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !cluster_domain.is_empty() && !cluster_domain.split('.').all(label) {
            return Err(KubeConfigError::ClusterDomain(args.cluster_domain));
        }
        let restore_account_annotations =
            annotations("--restore-account-annotations", &args.restore_account_annotations)?;
        let backup_account_annotations = annotations("--backup-account-annotations", &args.backup_account_annotations)?;
        Ok(Self {
            cluster: ClusterSettings {
                image: args.image,
                storage_class: non_empty(args.storage_class),
                volume_snapshot_class: non_empty(args.volume_snapshot_class),
                volume_size: args.volume_size,
                restore_cpu: args.restore_cpu,
                restore_memory: args.restore_memory,
                restore_deadline: args.restore_deadline,
                proxy_namespace: args.namespace.clone(),
                proxy_labels,
                controller_namespace: args.namespace,
                require_network_policy: !args.allow_unenforced_network_policies,
                source_credentials: non_empty(args.source_credentials),
                restore_account_annotations,
                project_access: non_empty(args.project_role).map(|cluster_role| ProjectAccess {
                    cluster_role,
                    service_account: args.service_account.unwrap_or_default(),
                }),
                cluster_domain,
            },
            db_version: args.db_version,
            secret_key,
            identity: args.identity,
            waits: Waits { stuck: args.stuck_after, snapshot: args.snapshot_timeout, ..Waits::default() },
            monitor_through: non_empty(Some(args.monitor_through)),
            monitor_ca: args.monitor_ca,
            monitor_proxy_protocol: args.monitor_proxy_protocol,
            backup_account_annotations,
            backups: None,
        })
    }
}

/// `key=value` pairs, comma-separated (`flag`'s value).
fn annotations(flag: &'static str, text: &str) -> Result<BTreeMap<String, String>, KubeConfigError> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(KubeConfigError::Annotations(flag, text.to_string())),
        })
        .collect()
}

impl KubeConfig {
    /// These settings with backups to `repository` (the controller's `--backup-repo`, parsed as
    /// for the local runtime), if one is given: only S3 (the pods cannot reach a directory of
    /// the controller's), without a CA file of the controller's (the pods cannot read it).
    ///
    /// # Errors
    /// [`KubeConfigError::BackupRepo`] naming what to give instead.
    pub fn with_backups(mut self, repository: Option<Repository>) -> Result<Self, KubeConfigError> {
        self.backups = match repository {
            None => None,
            Some(Repository::Posix(dir)) => {
                return Err(KubeConfigError::BackupRepo(format!(
                    "{} is a directory: on Kubernetes give s3://bucket/prefix",
                    dir.display()
                )));
            }
            Some(Repository::S3 { ca_file: Some(_), .. }) => {
                return Err(KubeConfigError::BackupRepo(
                    "--backup-s3-ca-file is not supported on Kubernetes yet: use an endpoint with a publicly trusted certificate".into(),
                ));
            }
            Some(repository) => Some(BackupSettings {
                repository,
                secret: self.secret_key.as_bytes().to_vec(),
                account_annotations: self.backup_account_annotations.clone(),
            }),
        };
        Ok(self)
    }
}

/// Why the Kubernetes settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum KubeConfigError {
    #[error("--runtime kube needs --secret-key (DEVDB_CONTROLLER_SECRET_KEY) of at least 32 characters")]
    SecretKey,
    #[error("--proxy-selector {0:?} is not a list of label=value pairs")]
    ProxySelector(String),
    #[error("{0} {1:?} is not a list of key=value pairs")]
    Annotations(&'static str, String),
    #[error("--backup-repo {0}")]
    BackupRepo(String),
    #[error("--cluster-domain {0:?} is not a DNS domain (the cluster's, e.g. cluster.local)")]
    ClusterDomain(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        kube: KubeArgs,
    }

    #[test]
    fn the_kube_runtime_takes_its_cluster_settings_from_flags() {
        let key = "k".repeat(32);
        let err = KubeConfig::try_from(Cli::parse_from(["x"]).kube).expect_err("no key").to_string();
        assert!(err.contains("--secret-key"), "{err}");
        let args = Cli::parse_from([
            "x",
            "--secret-key",
            &key,
            "--namespace",
            "platform",
            "--storage-class",
            "",
            "--proxy-selector",
            "app=proxy, tier=edge",
        ])
        .kube;
        let kube = KubeConfig::try_from(args).expect("valid");
        assert_eq!(kube.cluster.proxy_namespace, "platform");
        assert_eq!(kube.cluster.storage_class, None, "empty means the default class");
        assert_eq!(kube.cluster.proxy_labels.get("tier").map(String::as_str), Some("edge"));
        assert!(kube.cluster.project_access.is_none(), "no per-project grant unless asked");
        assert!(kube.cluster.restore_account_annotations.is_empty());
        let irsa = "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/r";
        let args = Cli::parse_from(["x", "--secret-key", &key, "--restore-account-annotations", irsa]).kube;
        let annotations = KubeConfig::try_from(args).expect("valid").cluster.restore_account_annotations;
        assert_eq!(annotations.get("eks.amazonaws.com/role-arn").map(String::as_str), Some("arn:aws:iam::1:role/r"));
        let args = ["x", "--secret-key", &key, "--project-role", "devdb-project", "--service-account", "devdb-ctl"];
        let access = KubeConfig::try_from(Cli::parse_from(args).kube).expect("valid").cluster.project_access;
        assert_eq!(
            access.map(|a| (a.cluster_role, a.service_account)),
            Some(("devdb-project".into(), "devdb-ctl".into()))
        );
        assert!(Cli::try_parse_from(["x", "--project-role", "r"]).is_err(), "the role needs its subject");
        assert_eq!(kube.waits.stuck, Duration::from_secs(300), "five minutes: time to add a node");
        let args = Cli::parse_from(["x", "--secret-key", &key, "--stuck-after", "90s", "--snapshot-timeout", "1day"]);
        let waits = KubeConfig::try_from(args.kube).expect("valid").waits;
        assert_eq!((waits.stuck, waits.snapshot), (Duration::from_secs(90), Duration::from_secs(86_400)));
        assert!(!format!("{kube:?}").contains(&key), "the key is not logged");
        assert_eq!(kube.cluster.cluster_domain, "cluster.local");
        let args = Cli::parse_from(["x", "--secret-key", &key, "--cluster-domain", "Corp.Internal."]).kube;
        assert_eq!(KubeConfig::try_from(args).expect("valid").cluster.cluster_domain, "corp.internal");
        let args = Cli::parse_from(["x", "--secret-key", &key, "--cluster-domain", ""]).kube;
        assert_eq!(KubeConfig::try_from(args).expect("valid").cluster.cluster_domain, "", "relative names");
        let args = Cli::parse_from(["x", "--secret-key", &key, "--cluster-domain", "a b"]).kube;
        let err = KubeConfig::try_from(args).expect_err("bad domain").to_string();
        assert!(err.contains("--cluster-domain"), "{err}");
        assert!(kube.backups.is_none(), "no backups without a repository");
        let args = Cli::parse_from(["x", "--secret-key", &key, "--backup-account-annotations", "role"]).kube;
        let err = KubeConfig::try_from(args).expect_err("bad annotations").to_string();
        assert!(err.starts_with("--backup-account-annotations"), "{err}");
        let args = Cli::parse_from(["x", "--secret-key", &key, "--proxy-selector", "proxy"]).kube;
        let err = KubeConfig::try_from(args).expect_err("bad selector").to_string();
        assert!(err.contains("label=value"), "{err}");
    }

    #[test]
    fn backups_go_to_s3_only_with_keys_derived_from_the_secret_key_and_the_accounts_annotations() {
        let key = "k".repeat(32);
        let irsa = "eks.amazonaws.com/role-arn=arn:aws:iam::1:role/devdb-backup";
        let args = Cli::parse_from(["x", "--secret-key", &key, "--backup-account-annotations", irsa]).kube;
        let kube = KubeConfig::try_from(args).expect("valid");
        let s3 = Repository::parse("s3://acme/devdb", devdb_backup::S3Settings::default()).expect("S3");
        let backups = kube.clone().with_backups(Some(s3.clone())).expect("S3").backups.expect("on");
        assert_eq!((backups.repository, backups.secret), (s3, key.as_bytes().to_vec()));
        assert_eq!(
            backups.account_annotations.get("eks.amazonaws.com/role-arn").map(String::as_str),
            Some("arn:aws:iam::1:role/devdb-backup")
        );
        let dir = kube.clone().with_backups(Some(Repository::Posix("/backups".into()))).expect_err("a directory");
        assert!(dir.to_string().contains("on Kubernetes give s3://bucket/prefix"), "{dir}");
        let ca = devdb_backup::S3Settings { ca_file: Some("/ca.pem".into()), ..devdb_backup::S3Settings::default() };
        let ca = Repository::parse("s3://acme/devdb", ca).expect("S3");
        assert!(kube.clone().with_backups(Some(ca)).is_err(), "the pods cannot read the controller's CA file");
        assert!(kube.with_backups(None).expect("none").backups.is_none());
    }
}
