//! Backups on Kubernetes, as pure builders: a database with backups archives its WAL from its
//! own pod (`archive_mode=on`, `pgbackrest archive-push`, asynchronous) to the S3 repository
//! the controller was given, configured by a Secret of its own that holds its stanza's key, and
//! runs as the ServiceAccount [`BACKUP_ACCOUNT`], which IRSA gives an IAM role.
//!
//! The key never leaves that Secret: not a ConfigMap, not the pod's environment, not the
//! controller's environment or logs ([`BackupSettings`]' `Debug` shows the repository only).

use std::collections::BTreeMap;
use std::path::Path;

use devdb_backup::config::{self, Limits, Stanza};
use devdb_backup::{Repository, Retention};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, Secret, SecretVolumeSource, ServiceAccount, Volume, VolumeMount,
};

use crate::resources::{PGDATA, meta};

/// The ServiceAccount database pods with backups run as, in each project's namespace: the one
/// an IAM role is given to, by IRSA (its annotations, from the chart's
/// `backups.serviceAccount.annotations`).
pub const BACKUP_ACCOUNT: &str = "devdb-backup";
/// Where a database pod finds its stanza's configuration (its Secret, read-only).
const CONFIG_MOUNT: &str = "/etc/pgbackrest";
/// The configuration file's key in the Secret.
const CONFIG_KEY: &str = "pgbackrest.conf";
/// pgBackRest's locks and asynchronous archiving queue: scratch space of the pod (the WAL
/// itself waits in `pg_wal` until pushed, so losing it loses nothing).
const WORK_DIR: &str = "/var/lib/pgbackrest";
/// PostgreSQL's socket in the database image, over which pgBackRest connects.
const SOCKET_DIR: &str = "/var/run/postgresql";

/// Where the backups of a controller's databases go, and what their keys derive from.
#[derive(Clone)]
pub struct BackupSettings {
    /// An S3 repository (with an access key, or none: the pods' web identity).
    pub repository: Repository,
    /// The controller's secret key: each stanza's key is derived from it and the stanza.
    pub secret: Vec<u8>,
    /// Annotations of [`BACKUP_ACCOUNT`] (`eks.amazonaws.com/role-arn` for IRSA).
    pub account_annotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for BackupSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSettings")
            .field("repository", &self.repository)
            .field("account_annotations", &self.account_annotations)
            .finish_non_exhaustive()
    }
}

/// The Secret holding a database's pgBackRest configuration: `<database>-backup`.
pub fn config_secret_name(database: &str) -> String {
    format!("{database}-backup")
}

/// The stanza of the database whose resource has uid `id` (a uid is a valid stanza name): a
/// database deleted and created again under its name never reads the old one's backups.
pub fn stanza(id: &str) -> Stanza {
    Stanza {
        name: id.to_ascii_lowercase(),
        data_dir: PGDATA.into(),
        port: 5432,
        socket_dir: SOCKET_DIR.into(),
        superuser: "postgres".into(),
        work_dir: WORK_DIR.into(),
        retention: Retention::default(),
    }
}

/// The Secret with the configuration of database `database` (uid `id`) of `project`: the
/// repository, its stanza and the stanza's key.
pub fn config_secret(project: &str, database: &str, id: &str, settings: &BackupSettings) -> Secret {
    let stanza = stanza(id);
    let key = config::stanza_key(&settings.secret, &stanza.name);
    let conf = config::render_web_identity(&settings.repository, &stanza, &key, &Limits::default());
    Secret {
        metadata: meta(&config_secret_name(database), project, Some(database)),
        string_data: Some(BTreeMap::from([(CONFIG_KEY.into(), conf)])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The account database pods with backups run as in `project`'s namespace, with the cloud
/// identity its annotations give (no token of the Kubernetes API: PostgreSQL never calls it;
/// the EKS webhook mounts IRSA's token regardless).
pub fn backup_account(project: &str, annotations: &BTreeMap<String, String>) -> ServiceAccount {
    let mut metadata = meta(BACKUP_ACCOUNT, project, None);
    metadata.annotations = (!annotations.is_empty()).then(|| annotations.clone());
    ServiceAccount { metadata, automount_service_account_token: Some(false), ..ServiceAccount::default() }
}

/// `statefulset` (database `database`, uid `id`) archiving its WAL: PostgreSQL's archiving
/// parameters on its command line, its configuration Secret mounted read-only, pgBackRest's
/// scratch space, and [`BACKUP_ACCOUNT`] as its identity.
pub fn with_archiving(mut statefulset: StatefulSet, database: &str, id: &str) -> StatefulSet {
    let conf = Path::new(CONFIG_MOUNT).join(CONFIG_KEY);
    let archive_command = config::archive_command(&conf, &stanza(id).name);
    let Some(pod) = statefulset.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return statefulset;
    };
    pod.service_account_name = Some(BACKUP_ACCOUNT.into());
    pod.volumes.get_or_insert_default().extend([
        Volume {
            name: "pgbackrest-config".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(config_secret_name(database)),
                default_mode: Some(0o400),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "pgbackrest-work".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]);
    if let Some(postgres) = pod.containers.first_mut() {
        postgres.command.get_or_insert_default().extend(
            [("archive_mode", "on"), ("archive_command", &archive_command), ("archive_timeout", "60")]
                .into_iter()
                .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")]),
        );
        // pgBackRest's own commands (a backup run in the pod) find the file without a flag.
        postgres.env.get_or_insert_default().push(EnvVar {
            name: "PGBACKREST_CONFIG".into(),
            value: Some(conf.display().to_string()),
            ..EnvVar::default()
        });
        postgres.volume_mounts.get_or_insert_default().extend([
            VolumeMount {
                name: "pgbackrest-config".into(),
                mount_path: CONFIG_MOUNT.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
            VolumeMount { name: "pgbackrest-work".into(), mount_path: WORK_DIR.into(), ..VolumeMount::default() },
        ]);
    }
    statefulset
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::tests::settings;

    pub(crate) fn backups() -> BackupSettings {
        BackupSettings {
            repository: Repository::parse("s3://acme-devdb/backups", devdb_backup::S3Settings::default()).expect("S3"),
            secret: b"k".repeat(32),
            account_annotations: BTreeMap::from([(
                "eks.amazonaws.com/role-arn".into(),
                "arn:aws:iam::1:role/devdb-backup".into(),
            )]),
        }
    }

    /// The backup objects of database `kate-pg` of project `shop` (checked with every other
    /// object against the official schemas, in [`crate::resources`]' tests).
    pub(crate) fn objects() -> Vec<serde_json::Value> {
        let sts = crate::resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new());
        [
            serde_json::to_value(config_secret("shop", "kate-pg", ID, &backups())),
            serde_json::to_value(backup_account("shop", &backups().account_annotations)),
            serde_json::to_value(with_archiving(sts, "kate-pg", ID)),
        ]
        .into_iter()
        .map(|v| v.expect("serializes"))
        .collect()
    }

    const ID: &str = "0b7e54c2-3d1f-4a5e-9c3b-1f2e3d4c5b6a";

    #[test]
    fn the_secret_holds_the_stanza_its_key_and_the_web_identity() {
        let secret = config_secret("shop", "kate-pg", ID, &backups());
        assert_eq!(secret.metadata.name.as_deref(), Some("kate-pg-backup"));
        assert_eq!(secret.metadata.namespace.as_deref(), Some("devdb-shop"));
        let conf = &secret.string_data.as_ref().expect("data")[CONFIG_KEY];
        let key = config::stanza_key(&b"k".repeat(32), ID);
        for line in [
            "repo1-type=s3".to_string(),
            "repo1-s3-bucket=acme-devdb".into(),
            "repo1-path=/backups".into(),
            "repo1-s3-key-type=web-id".into(),
            format!("repo1-cipher-pass={key}"),
            format!("[{ID}]"),
            format!("pg1-path={PGDATA}"),
            "pg1-socket-path=/var/run/postgresql".into(),
            "spool-path=/var/lib/pgbackrest/spool".into(),
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        assert_ne!(key, config::stanza_key(&b"k".repeat(32), "another-uid"), "a key per stanza");
        assert!(!format!("{:?}", backups()).contains("kkkk"), "the secret is not logged");
    }

    #[test]
    fn the_account_carries_irsas_role_and_no_api_token() {
        let account = backup_account("shop", &backups().account_annotations);
        assert_eq!(account.metadata.name.as_deref(), Some(BACKUP_ACCOUNT));
        assert_eq!(
            account.metadata.annotations.as_ref().and_then(|a| a.get("eks.amazonaws.com/role-arn")).map(String::as_str),
            Some("arn:aws:iam::1:role/devdb-backup")
        );
        assert_eq!(account.automount_service_account_token, Some(false));
        assert!(backup_account("shop", &BTreeMap::new()).metadata.annotations.is_none(), "Pod Identity: none");
    }

    #[test]
    fn an_archiving_pod_mounts_its_secret_read_only_and_pushes_each_segment() {
        let plain = crate::resources::statefulset("shop", "kate-pg", &settings(), &BTreeMap::new());
        let sts = serde_json::to_value(with_archiving(plain.clone(), "kate-pg", ID)).expect("json");
        let pod = &sts["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], BACKUP_ACCOUNT);
        assert_eq!(pod["automountServiceAccountToken"], false, "still no API token");
        let command: Vec<&str> =
            pod["containers"][0]["command"].as_array().expect("command").iter().filter_map(|v| v.as_str()).collect();
        let plain_len = plain
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| p.containers[0].command.as_ref().map_or(0, Vec::len));
        assert_eq!(
            command[plain_len.unwrap_or(0)..],
            [
                "-c",
                "archive_mode=on",
                "-c",
                &format!(
                    "archive_command=pgbackrest '--config=/etc/pgbackrest/pgbackrest.conf' --stanza={ID} archive-push %p"
                ),
                "-c",
                "archive_timeout=60",
            ]
        );
        let volumes = pod["volumes"].as_array().expect("volumes");
        let config = volumes.iter().find(|v| v["name"] == "pgbackrest-config").expect("config volume");
        assert_eq!(config["secret"], serde_json::json!({ "secretName": "kate-pg-backup", "defaultMode": 0o400 }));
        let mounts = pod["containers"][0]["volumeMounts"].as_array().expect("mounts");
        let mount = mounts.iter().find(|m| m["name"] == "pgbackrest-config").expect("config mount");
        assert_eq!((mount["mountPath"].as_str(), mount["readOnly"].as_bool()), (Some(CONFIG_MOUNT), Some(true)));
        let env = pod["containers"][0]["env"].to_string();
        assert!(!env.contains("cipher") && !env.contains("AWS_"), "no key in the environment: {env}");
    }
}
