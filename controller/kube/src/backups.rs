//! Backups on Kubernetes, as pure builders: a database with backups archives its WAL from its
//! own pod (`archive_mode=on`, `pgbackrest archive-push`, asynchronous) to the S3 repository
//! the controller was given, configured by a Secret of its own that holds its stanza's key, and
//! runs as the ServiceAccount [`BACKUP_ACCOUNT`], which IRSA gives an IAM role. A backup is a
//! Job beside its pod ([`backup_job`]), whose log ends with what the stanza then holds
//! ([`backed_up`]).
//!
//! The key never leaves that Secret: not a ConfigMap, not an environment, not the controller's
//! logs ([`BackupSettings`]' `Debug` shows the repository only).

use std::collections::BTreeMap;
use std::path::Path;

use devdb_backup::config::{self, Limits, Stanza};
use devdb_backup::{Repository, Retention};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodAffinity, PodAffinityTerm, PodSpec, Secret,
    SecretKeySelector, SecretVolumeSource, ServiceAccount, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::resources::{ClusterSettings, DATA_MOUNT, PGDATA, labels, meta, postgres_pod};

/// The ServiceAccount database pods with backups run as, in each project's namespace: the one
/// an IAM role is given to, by IRSA (its annotations, from the chart's
/// `backups.serviceAccount.annotations`).
pub const BACKUP_ACCOUNT: &str = "devdb-backup";
/// Where a database pod finds its stanza's configuration (its Secret, read-only).
const CONFIG_MOUNT: &str = "/etc/pgbackrest";
/// The configuration file's key in the Secret.
const CONFIG_KEY: &str = "pgbackrest.conf";
/// The stanza's name in the Secret (`PGBACKREST_STANZA` of the pod and the Job).
const STANZA_KEY: &str = "stanza";
/// pgBackRest's locks and asynchronous archiving queue: scratch space of the pod (the WAL
/// itself waits in `pg_wal` until pushed, so losing it loses nothing).
const WORK_DIR: &str = "/var/lib/pgbackrest";
/// PostgreSQL's socket in the database image.
const SOCKET_DIR: &str = "/var/run/postgresql";
/// Where an archiving database also listens on a Unix socket, over which the backup Job's
/// pgBackRest connects: the root of its volume, which the Job mounts too, on the same node.
const VOLUME_SOCKET_DIR: &str = DATA_MOUNT;

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

/// The stanza of the clone on volume `volume_uid` of the database whose resource has uid `id`
/// (uids are valid in stanza names): a database deleted and created again under its name never
/// reads the old one's backups, and each clone (a reset makes a new volume) archives into a
/// stanza of its own, as pgBackRest wants of another WAL history.
pub fn stanza_name(id: &str, volume_uid: &str) -> String {
    let volume: String = volume_uid.chars().filter(char::is_ascii_alphanumeric).take(8).collect();
    let name = if volume.is_empty() { id.to_string() } else { format!("{id}-{volume}") };
    name.to_ascii_lowercase()
}

/// Stanza `name` of a database pod, keeping `retention`'s full backups.
pub fn stanza(name: &str, retention: Retention) -> Stanza {
    Stanza {
        name: name.into(),
        data_dir: PGDATA.into(),
        port: 5432,
        socket_dir: VOLUME_SOCKET_DIR.into(),
        superuser: "postgres".into(),
        work_dir: WORK_DIR.into(),
        retention,
    }
}

/// The Secret with the configuration of database `database` of `project`: the repository, its
/// stanza `stanza` (keeping `retention`'s full backups) and the stanza's key, and the stanza's
/// name, which its pod and backup Job take from here.
pub fn config_secret(
    project: &str,
    database: &str,
    stanza_name: &str,
    retention: Retention,
    settings: &BackupSettings,
) -> Secret {
    let stanza = stanza(stanza_name, retention);
    let key = config::stanza_key(&settings.secret, &stanza.name);
    let conf = config::render_web_identity(&settings.repository, &stanza, &key, &Limits::default());
    Secret {
        metadata: meta(&config_secret_name(database), project, Some(database)),
        string_data: Some(BTreeMap::from([(CONFIG_KEY.into(), conf), (STANZA_KEY.into(), stanza.name)])),
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

/// `statefulset` (database `database`) archiving its WAL: PostgreSQL's archiving
/// parameters on its command line (and a second socket, on its volume, for the backup Job),
/// its configuration Secret mounted read-only, pgBackRest's scratch space, and
/// [`BACKUP_ACCOUNT`] as its identity.
pub fn with_archiving(mut statefulset: StatefulSet, database: &str) -> StatefulSet {
    let conf = Path::new(CONFIG_MOUNT).join(CONFIG_KEY);
    // The stanza from the environment: the template stays the same from clone to clone.
    let archive_command = config::archive_command(&conf, None);
    let sockets = format!("{SOCKET_DIR},{VOLUME_SOCKET_DIR}");
    let Some(pod) = statefulset.spec.as_mut().and_then(|s| s.template.spec.as_mut()) else {
        return statefulset;
    };
    if let Some(postgres) = pod.containers.first_mut() {
        postgres.command.get_or_insert_default().extend(
            [
                ("archive_mode", "on"),
                ("archive_command", archive_command.as_str()),
                ("archive_timeout", "60"),
                ("unix_socket_directories", sockets.as_str()),
            ]
            .into_iter()
            .flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")]),
        );
    }
    with_pgbackrest(pod, database);
    statefulset
}

/// `pod`'s first container given pgBackRest: the database's configuration (read-only, found
/// through `PGBACKREST_CONFIG`) and scratch space, and the pod [`BACKUP_ACCOUNT`]'s identity.
fn with_pgbackrest(pod: &mut PodSpec, database: &str) {
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
    let Some(container) = pod.containers.first_mut() else { return };
    container.env.get_or_insert_default().extend([
        EnvVar {
            name: "PGBACKREST_CONFIG".into(),
            value: Some(Path::new(CONFIG_MOUNT).join(CONFIG_KEY).display().to_string()),
            ..EnvVar::default()
        },
        EnvVar {
            name: "PGBACKREST_STANZA".into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: config_secret_name(database),
                    key: STANZA_KEY.into(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        },
    ]);
    container.volume_mounts.get_or_insert_default().extend([
        VolumeMount {
            name: "pgbackrest-config".into(),
            mount_path: CONFIG_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount { name: "pgbackrest-work".into(), mount_path: WORK_DIR.into(), ..VolumeMount::default() },
    ]);
}

/// The Job taking a backup of database `database` (uid `id`): `<database>-backup`.
pub fn backup_job_name(database: &str) -> String {
    format!("{database}-backup")
}

/// What the backup Job runs (the stanza its Secret names): the stanza made if new (nothing else changes an existing one), an
/// incremental backup (pgBackRest takes a full one when the stanza has none), then the
/// stanza's `info` as JSON, the last line of its log, which the controller reads.
const BACKUP_SCRIPT: &str = r#"set -e
pgbackrest stanza-create >&2
pgbackrest --type=incr backup >&2
exec pgbackrest --output=json info"#;

/// How long a backup may take before its Job fails.
pub const BACKUP_DEADLINE_SECONDS: i64 = 6 * 3600;

/// The Job backing up database `database` of `project`: a pod of the database image
/// on the same node as the database's (its volume is attached there: a ReadWriteOnce volume
/// takes several pods of one node), mounting the volume to read the data files and reach the
/// server's socket, with the database's pgBackRest configuration and identity.
pub fn backup_job(project: &str, database: &str, settings: &ClusterSettings) -> Job {
    let container = Container {
        name: "backup".into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["sh".into(), "-c".into(), BACKUP_SCRIPT.into()]),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..VolumeMount::default()
        }]),
        // A failure's reason: pgBackRest's last lines.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Container::default()
    };
    // Not the database's own labels: its Service and StatefulSet select those.
    let mut pod_labels = labels(project, None);
    pod_labels.insert("devdb.io/backup-of".into(), database.into());
    let mut template = postgres_pod(pod_labels, container, &crate::resources::data_name(database), Some("Never"));
    if let Some(pod) = template.spec.as_mut() {
        with_pgbackrest(pod, database);
        pod.affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(labels(project, Some(database))),
                        ..LabelSelector::default()
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAffinity::default()
            }),
            ..Affinity::default()
        });
    }
    Job {
        metadata: meta(&backup_job_name(database), project, Some(database)),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(BACKUP_DEADLINE_SECONDS),
            // The controller deletes it once read; a controller gone meanwhile leaves it an hour.
            ttl_seconds_after_finished: Some(3600),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// What a finished backup Job's log ends with: the stanza's `info`, which says when its newest
/// backup ended, the window it can be restored to, and what its backups take.
///
/// # Errors
/// A message saying what the log lacks (an image whose pgBackRest printed something else).
pub fn backed_up(log: &str) -> Result<devdb_core::runtime::BackedUp, String> {
    let last = log.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or_default();
    let info = devdb_backup::StanzaInfo::parse(last)
        .map_err(|e| format!("its log does not end with the stanza's info: {e}"))?;
    match (info.last_backup(), info.window(None)) {
        (Some(last), Some(window)) => Ok(devdb_core::runtime::BackedUp {
            at: last.stopped_at,
            restorable_from: window.from,
            restorable_to: window.to,
            repository_bytes: info.repository_bytes(),
        }),
        _ => Err("no backup listed after it".into()),
    }
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
            serde_json::to_value(config_secret("shop", "kate-pg", ID, Retention::default(), &backups())),
            serde_json::to_value(backup_account("shop", &backups().account_annotations)),
            serde_json::to_value(with_archiving(sts, "kate-pg")),
            serde_json::to_value(backup_job("shop", "kate-pg", &settings())),
        ]
        .into_iter()
        .map(|v| v.expect("serializes"))
        .collect()
    }

    const ID: &str = "0b7e54c2-3d1f-4a5e-9c3b-1f2e3d4c5b6a";

    #[test]
    fn the_secret_holds_the_stanza_its_key_and_the_web_identity() {
        let secret = config_secret("shop", "kate-pg", ID, Retention::default(), &backups());
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
            "pg1-socket-path=/var/lib/postgresql/data".into(),
            "spool-path=/var/lib/pgbackrest/spool".into(),
        ] {
            assert!(conf.lines().any(|l| l == line), "{line} missing from:\n{conf}");
        }
        assert_ne!(key, config::stanza_key(&b"k".repeat(32), "another-uid"), "a key per stanza");
        assert!(!format!("{:?}", backups()).contains("kkkk"), "the secret is not logged");
        let week = config_secret("shop", "kate-pg", ID, Retention::Days(7), &backups());
        let conf = &week.string_data.as_ref().expect("data")[CONFIG_KEY];
        assert!(conf.contains("\nrepo1-retention-full-type=time\nrepo1-retention-full=7\n"), "{conf}");
    }

    #[test]
    fn each_clone_has_a_stanza_of_its_own_named_after_its_volume() {
        assert_eq!(stanza_name(ID, "9F8E7D6C-5b4a-3928-1706-f5e4d3c2b1a0"), format!("{ID}-9f8e7d6c"));
        assert_ne!(stanza_name(ID, "9f8e7d6c-aaaa"), stanza_name(ID, "1a2b3c4d-aaaa"), "a reset's new volume");
        assert_eq!(stanza_name(ID, ""), ID);
        assert!(devdb_backup::config::valid_stanza_name(&stanza_name(ID, "9f8e7d6c-5b4a-3928-1706-f5e4d3c2b1a0")));
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
        let sts = serde_json::to_value(with_archiving(plain.clone(), "kate-pg")).expect("json");
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
                "archive_command=pgbackrest '--config=/etc/pgbackrest/pgbackrest.conf' archive-push %p",
                "-c",
                "archive_timeout=60",
                "-c",
                "unix_socket_directories=/var/run/postgresql,/var/lib/postgresql/data",
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

    #[test]
    fn the_backup_job_runs_beside_the_database_on_its_volume_as_its_account_once() {
        let job = serde_json::to_value(backup_job("shop", "kate-pg", &settings())).expect("json");
        assert_eq!(job["metadata"]["name"], "kate-pg-backup");
        assert_eq!(
            (job["spec"]["backoffLimit"].as_i64(), job["spec"]["activeDeadlineSeconds"].as_i64()),
            (Some(0), Some(6 * 3600))
        );
        let pod = &job["spec"]["template"]["spec"];
        let affinity = &pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(affinity["topologyKey"], "kubernetes.io/hostname", "the node the volume is attached to");
        assert_eq!(affinity["labelSelector"]["matchLabels"]["devdb.io/database"], "kate-pg");
        let labels = &job["spec"]["template"]["metadata"]["labels"];
        assert!(labels.get("devdb.io/database").is_none(), "not one of the database's pods: {labels}");
        assert_eq!(pod["serviceAccountName"], BACKUP_ACCOUNT);
        assert_eq!(pod["restartPolicy"], "Never");
        let volumes = pod["volumes"].to_string();
        assert!(volumes.contains(r#""claimName":"kate-pg-data""#) && volumes.contains("kate-pg-backup"), "{volumes}");
        let container = &pod["containers"][0];
        assert_eq!(
            container["env"][1]["valueFrom"]["secretKeyRef"],
            serde_json::json!({ "name": "kate-pg-backup", "key": "stanza", "optional": false }),
            "the clone's stanza, from its Secret"
        );
        let script = container["command"][2].as_str().expect("script");
        assert!(script.lines().last().is_some_and(|l| l.ends_with("--output=json info")), "{script}");
        assert!(!container.to_string().contains("cipher"), "no key but in its Secret");
    }

    /// `info --output=json` of a stanza with a full and an incremental backup.
    pub(crate) const INFO: &str = r#"[{"archive":[{"id":"15-1","max":"000000010000000000000004","min":"000000010000000000000001"}],"backup":[{"error":false,"info":{"repository":{"delta":100,"size":1000},"size":5000},"label":"20261207-100000F","timestamp":{"start":1796637600,"stop":1796637660},"type":"full"},{"error":false,"info":{"repository":{"delta":10,"size":200},"size":5000},"label":"20261207-100000F_20261208-100000I","timestamp":{"start":1796724000,"stop":1796724030},"type":"incr"}],"name":"uid-kate","status":{"code":0,"message":"ok"}}]"#;

    /// The last line of the backup Job's script as pgBackRest 2.45 (the database image's) printed
    /// it, run against a database in another container sharing only its volume.
    const INFO_2_45: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1","max":"000000010000000000000002","min":"000000010000000000000001"}],"backup":[{"archive":{"start":"000000010000000000000002","stop":"000000010000000000000002"},"backrest":{"format":5,"version":"2.45"},"database":{"id":1,"repo-key":1},"error":false,"info":{"delta":22992350,"repository":{"delta":2833552,"size":2833552},"size":22992350},"label":"20261207-193011F","lsn":{"start":"0/2000028","stop":"0/2000100"},"prior":null,"reference":null,"timestamp":{"start":1796671811,"stop":1796671814},"type":"full"}],"cipher":"aes-256-cbc","db":[{"id":1,"repo-key":1,"system-id":7716646635111776270,"version":"15"}],"name":"uid-kate","repo":[{"cipher":"aes-256-cbc","key":1,"status":{"code":0,"message":"ok"}}],"status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    #[test]
    fn a_finished_jobs_log_says_when_the_backup_ended_and_what_can_be_restored() {
        let at = |secs| std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        let log = format!("P00   WARN: no prior backup exists, incr backup has been changed to full\n{INFO}\n");
        let done = backed_up(&log).expect("backed up");
        assert_eq!(done.at, at(1_796_724_030));
        assert_eq!((done.restorable_from, done.restorable_to), (at(1_796_637_661), at(1_796_724_031)));
        assert_eq!(done.repository_bytes, 1200);
        let real = backed_up(&format!("{INFO_2_45}\n")).expect("pgBackRest 2.45's info");
        assert_eq!((real.repository_bytes, real.at), (2_833_552, at(1_796_671_814)));
        let refused = backed_up("ERROR: [056]: unable to find primary cluster").expect_err("no info");
        assert!(refused.contains("does not end with the stanza's info"), "{refused}");
        assert!(backed_up(r#"[{"archive":[],"backup":[],"name":"x","status":{"code":0,"message":"ok"}}]"#).is_err());
    }
}
