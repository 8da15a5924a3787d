//! What the Kubernetes runtime creates, as pure functions of the records: no I/O, so every
//! object is unit-tested and validated against the official Kubernetes schemas.
//!
//! Per project (namespace `devdb-<project>`): the golden PVC, a Secret with the restore's
//! credentials, the restore Job (postgres-db image, `devdb-restore`), and a VolumeSnapshot per
//! generation. Per database: a Secret (username, password, uri, jdbc-uri), a PVC cloned from the
//! project's snapshot, a one-pod StatefulSet, a ClusterIP Service on 5432, and a NetworkPolicy
//! that admits only the proxy. Everything carries the labels in [`labels`], so deletion selects by
//! label rather than by derived names.

use std::collections::BTreeMap;

use devdb_shared::api::Masking;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, EphemeralVolumeSource,
    ExecAction, Lifecycle, LifecycleHandler, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimTemplate, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ProjectedVolumeSource, ResourceRequirements, SeccompProfile, Secret, SecretKeySelector, SecretProjection,
    SecretVolumeSource, SecurityContext, Service, ServiceAccount, ServicePort, ServiceSpec, TypedLocalObjectReference,
    Volume, VolumeMount, VolumeProjection, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

/// Settings of the cluster the objects are for (from the chart's values).
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The postgres-db image, e.g. `devdb/postgres-db:16`.
    pub image: String,
    /// StorageClass of golden volumes and clones (must support snapshots and cloning from them).
    pub storage_class: Option<String>,
    pub volume_snapshot_class: Option<String>,
    /// Size of every volume, e.g. `20Gi`.
    pub volume_size: String,
    /// What a restore Job requests (and, for memory, is limited to): it is sized, so it is
    /// neither starved nor the first evicted.
    pub restore_cpu: String,
    pub restore_memory: String,
    /// How long a restore Job may run (its pod's deadline is ten minutes more).
    pub restore_deadline: std::time::Duration,
    /// Namespace the proxy pods run in, and their labels: the only peers admitted to databases.
    pub proxy_namespace: String,
    pub proxy_labels: BTreeMap<String, String>,
    /// The namespace the controller runs in.
    pub controller_namespace: String,
    /// Refuse databases while the cluster does not enforce their NetworkPolicies (see
    /// [`crate::isolation`]).
    pub require_network_policy: bool,
    /// A Secret in the controller's namespace whose keys (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, …) the fetch of an `s3://`
    /// source gets as files (and gives the AWS CLI alone). It is copied, as
    /// [`SOURCE_CREDENTIALS`], only into the namespaces of projects with an `s3://` source.
    pub source_credentials: Option<String>,
    /// Annotations of the ServiceAccount [`RESTORE_ACCOUNT`] restore Jobs of `s3://` sources run
    /// as (`eks.amazonaws.com/role-arn`: IRSA gives the Job the role's S3 access without a copy
    /// of any key); none for EKS Pod Identity, whose association names the account.
    pub restore_account_annotations: BTreeMap<String, String>,
    /// What each project's namespace grants the controller; `None` when its cluster-wide role
    /// already allows everything (a development cluster).
    pub project_access: Option<ProjectAccess>,
    /// The cluster's DNS domain (`cluster.local`), in the databases' backend addresses.
    pub cluster_domain: String,
}

/// The per-project grant: the controller's ServiceAccount (in the controller's namespace) gets
/// `cluster_role` in the project's namespace only. Its cluster-wide role just reads, and an
/// admission policy keeps it to namespaces DevDB made (see the chart).
#[derive(Debug, Clone)]
pub struct ProjectAccess {
    pub cluster_role: String,
    pub service_account: String,
}

/// The restore Job's copy of the source credentials, in the project's namespace.
pub const SOURCE_CREDENTIALS: &str = "source-credentials";

/// The label giving a project object's snapshot generation (golden volume, restore Job,
/// VolumeSnapshot), so older generations are selected by label when cleaned up.
pub const GENERATION_LABEL: &str = "devdb.io/generation";

/// The postgres user of the official image.
pub(crate) const POSTGRES_UID: i64 = 999;
pub(crate) const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
pub(crate) const DATA_MOUNT: &str = "/var/lib/postgresql/data";
/// The restore's scratch space (download, decompressed dump, server socket), on the golden
/// volume beside PGDATA; removed when the restore ends.
const RESTORE_WORK_DIR: &str = "/var/lib/postgresql/data/restore-work";
/// A masked restore builds on a scratch volume of its own, mounted here, and copies only the
/// finished files onto the golden volume.
const SCRATCH_MOUNT: &str = "/var/lib/postgresql/scratch";

/// The labels on everything DevDB manages.
pub fn labels(project: &str, database: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_string(), "devdb".to_string()),
        ("devdb.io/project".to_string(), project.to_string()),
    ]);
    if let Some(database) = database {
        labels.insert("devdb.io/database".into(), database.into());
    }
    labels
}

/// The label selector of one database's objects (or a whole project's).
pub fn selector(project: &str, database: Option<&str>) -> String {
    labels(project, database).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// `devdb-<project>`.
pub fn namespace_name(project: &str) -> String {
    format!("devdb-{project}")
}

pub(crate) fn meta(name: &str, project: &str, database: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(namespace_name(project)),
        labels: Some(labels(project, database)),
        ..ObjectMeta::default()
    }
}

fn generation_meta(name: &str, project: &str, generation: u64) -> ObjectMeta {
    let mut meta = meta(name, project, None);
    meta.labels.get_or_insert_default().insert(GENERATION_LABEL.into(), generation.to_string());
    meta
}

/// Makes `owner` (a `Project` or `Database` resource) the owner of an object, so the garbage
/// collector removes the object if its owner ever goes without the controller's cleanup.
pub fn owned_by(meta: &mut ObjectMeta, kind: &str, name: &str, uid: &str) {
    meta.owner_references = Some(vec![OwnerReference {
        api_version: "devdb.io/v1alpha1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        ..OwnerReference::default()
    }]);
}

/// A copy of the source credentials for a project's namespace.
pub fn source_credentials(project: &str, data: Option<BTreeMap<String, k8s_openapi::ByteString>>) -> Secret {
    Secret {
        metadata: meta(SOURCE_CREDENTIALS, project, None),
        data,
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

pub fn namespace(project: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(namespace_name(project)),
            labels: Some(labels(project, None)),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The ServiceAccount the restore Jobs of `s3://` sources run as, in each project's namespace:
/// the one an IAM role is given to, by IRSA (its annotations) or by an EKS Pod Identity
/// association (no annotation).
pub const RESTORE_ACCOUNT: &str = "devdb-restore";

/// The account restore Jobs of `project` run as, with the cloud identity the annotations give it
/// (no token of the Kubernetes API: Jobs never call it).
pub fn restore_account(project: &str, annotations: &BTreeMap<String, String>) -> ServiceAccount {
    let mut metadata = meta(RESTORE_ACCOUNT, project, None);
    metadata.annotations = (!annotations.is_empty()).then(|| annotations.clone());
    ServiceAccount { metadata, automount_service_account_token: Some(false), ..ServiceAccount::default() }
}

/// The RoleBinding giving the controller its per-project role in the project's namespace.
pub fn project_role_binding(project: &str, access: &ProjectAccess, controller_namespace: &str) -> RoleBinding {
    RoleBinding {
        metadata: meta("devdb-controller", project, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: access.cluster_role.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: access.service_account.clone(),
            namespace: Some(controller_namespace.into()),
            ..Subject::default()
        }]),
    }
}

fn pvc_spec(settings: &ClusterSettings, data_source: Option<TypedLocalObjectReference>) -> PersistentVolumeClaimSpec {
    PersistentVolumeClaimSpec {
        access_modes: Some(vec!["ReadWriteOnce".into()]),
        storage_class_name: settings.storage_class.clone(),
        resources: Some(VolumeResourceRequirements {
            requests: Some(BTreeMap::from([("storage".into(), Quantity(settings.volume_size.clone()))])),
            ..VolumeResourceRequirements::default()
        }),
        data_source,
        ..PersistentVolumeClaimSpec::default()
    }
}

/// The volume a project's dump is restored into, generation by generation.
pub fn golden_pvc(project: &str, generation: u64, settings: &ClusterSettings) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: generation_meta(&golden_name(generation), project, generation),
        spec: Some(pvc_spec(settings, None)),
        ..PersistentVolumeClaim::default()
    }
}

pub fn golden_name(generation: u64) -> String {
    format!("golden-{generation}")
}

pub fn restore_job_name(generation: u64) -> String {
    format!("restore-{generation}")
}

/// What the restore Job must keep secret, as a Secret it reads as files: the project user's
/// credentials and the source URL (which may carry a password or a presigned signature).
pub fn project_secret(project: &str, username: &str, password: &str, backup_location: Option<&str>) -> Secret {
    let mut data = BTreeMap::from([("username".into(), username.into()), ("password".into(), password.into())]);
    if let Some(location) = backup_location {
        data.insert("source".into(), location.into());
    }
    Secret {
        metadata: meta("restore-credentials", project, None),
        string_data: Some(data),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

/// The Secret a masked restore reads its rules and key from. The restore makes it and deletes
/// it once its Job has ended: the key is in the cluster only while a restore runs.
pub fn masking_secret(project: &str, generation: u64, masking: &Masking, key: &str) -> Secret {
    let rules = serde_json::json!({ "rules": masking.rules, "verify": masking.verify }).to_string();
    Secret {
        metadata: generation_meta(&masking_secret_name(generation), project, generation),
        string_data: Some(BTreeMap::from([("masking".into(), rules), ("mask-key".into(), key.into())])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

pub fn masking_secret_name(generation: u64) -> String {
    format!("restore-masking-{generation}")
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.into(), value: Some(value.into()), ..EnvVar::default() }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    optional_secret_env(name, secret, key, None)
}

fn optional_secret_env(name: &str, secret: &str, key: &str, optional: Option<bool>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector { name: secret.into(), key: key.into(), optional }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn data_volume(claim: &str) -> Volume {
    Volume {
        name: "data".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim.into(), read_only: None }),
        ..Volume::default()
    }
}

/// PostgreSQL's shared memory for parallel queries (`/dev/shm`; a container's default is 64 MiB).
const SHM_SIZE: &str = "256Mi";

/// A pod of the postgres-db image running `container` as the postgres user on volume `claim`,
/// within the Pod Security Standard "restricted": no service-account token, the runtime's
/// seccomp profile, no privilege escalation, no capabilities.
pub(crate) fn postgres_pod(
    labels: BTreeMap<String, String>,
    mut container: Container,
    claim: &str,
    restart_policy: Option<&str>,
) -> PodTemplateSpec {
    container.security_context = Some(container_security());
    container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
        name: "shm".into(),
        mount_path: "/dev/shm".into(),
        ..VolumeMount::default()
    });
    let shm = Volume {
        name: "shm".into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: Some(Quantity(SHM_SIZE.into())),
        }),
        ..Volume::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels), ..ObjectMeta::default() }),
        spec: Some(PodSpec {
            restart_policy: restart_policy.map(String::from),
            security_context: Some(security()),
            automount_service_account_token: Some(false),
            containers: vec![container],
            volumes: Some(vec![data_volume(claim), shm]),
            ..PodSpec::default()
        }),
    }
}

/// What every container of DevDB's pods may do: nothing privileged.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

fn security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(POSTGRES_UID),
        run_as_group: Some(POSTGRES_UID),
        fs_group: Some(POSTGRES_UID),
        // Only when the volume's root does not match already, not on every mount (a clone's
        // files all belong to the postgres user; start.sh makes PGDATA private again anyway).
        fs_group_change_policy: Some("OnRootMismatch".into()),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
        ..PodSecurityContext::default()
    }
}

/// What a restore Job does besides restoring the source.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// The download may reach private addresses.
    pub allow_private_source: bool,
    /// The project's masking is applied, from [`masking_secret`] (which must exist: without
    /// it the pod does not start, rather than restore unmasked).
    pub masked: bool,
    /// The source is `s3://`: the fetch gets the source credentials (when the controller has
    /// any), and nothing else does.
    pub s3: bool,
}

/// Where the restore's Secrets are mounted, in the fetch container only.
const SECRETS_MOUNT: &str = "/var/run/devdb/secrets";
const SOURCE_CREDENTIALS_MOUNT: &str = "/var/run/devdb/source-credentials";
/// Memory both containers share: the fetch copies the build's secrets here, the build reads
/// and removes them before anything else runs.
const INBOX_MOUNT: &str = "/var/run/devdb/inbox";

/// The Job restoring the project's source into the golden volume of `generation`, in two
/// containers of one pod, each with only what it needs:
/// - `fetch` (an init container) holds the source's URL and cloud credentials (files of
///   Secret volumes mounted in it alone) and downloads the dump; it hands the build's own
///   secrets (the password, the masking rules and key) on through a memory volume;
/// - `restore` reads the dump (the only one that does) with none of the source's credentials,
///   no workload identity token, no Secret volume: it reads its secrets from the memory volume
///   and removes them before it starts anything, so nothing a hostile dump makes run can find
///   them.
pub fn restore_job(
    project: &str,
    generation: u64,
    database: &str,
    options: RestoreOptions,
    settings: &ClusterSettings,
) -> Job {
    // The work (the download, unpacked archives, the server's socket) is on the scratch volume
    // for a masked restore (its blocks go with it: the golden volume gets only the finished
    // files), on the golden volume beside PGDATA otherwise (never the node's disk).
    let work = if options.masked { format!("{SCRATCH_MOUNT}/work") } else { RESTORE_WORK_DIR.to_string() };
    let mut shared = vec![
        env("DEVDB_DOWNLOAD", &format!("{work}/download")),
        env("TMPDIR", if options.masked { SCRATCH_MOUNT } else { RESTORE_WORK_DIR }),
        env("DEVDB_MAX_RESTORE_TIME", &format!("{}s", settings.restore_deadline.as_secs())),
    ];
    // The download may take half the volume: a larger source fails at once, saying so,
    // instead of filling it.
    let volume = crate::objects::quantity_bytes(&settings.volume_size);
    if volume > 0 {
        shared.push(env("DEVDB_MAX_SOURCE_SIZE", &(volume / 2).to_string()));
    }
    let mut fetch_env = vec![
        env("DEVDB_RESTORE_STEP", "fetch"),
        env("DEVDB_SECRETS_FROM", SECRETS_MOUNT),
        env("DEVDB_SECRETS_DIR", INBOX_MOUNT),
    ];
    if options.allow_private_source {
        fetch_env.push(env("DEVDB_ALLOW_PRIVATE_SOURCES", "true"));
    }
    let source_credentials = settings.source_credentials.is_some() && options.s3;
    if source_credentials {
        fetch_env.push(env("DEVDB_SOURCE_CREDENTIALS", SOURCE_CREDENTIALS_MOUNT));
    }
    let mut build_env = vec![
        env("DEVDB_RESTORE_STEP", "build"),
        env("DEVDB_SECRETS_DIR", INBOX_MOUNT),
        env("PGDATA", PGDATA),
        env("DB_NAME", database),
        secret_env("DB_USER", "restore-credentials", "username"),
    ];
    build_env.push(if options.masked {
        env("DEVDB_BUILD_DIR", SCRATCH_MOUNT)
    } else {
        env("DEVDB_RESTORE_WORK_DIR", RESTORE_WORK_DIR)
    });
    let mount = |name: &str, path: &str, read_only: bool| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    };
    let quantity = |q: &str| Quantity(q.to_string());
    let resources = ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".into(), quantity(&settings.restore_cpu)),
            ("memory".into(), quantity(&settings.restore_memory)),
            ("ephemeral-storage".into(), quantity("256Mi")),
        ])),
        limits: Some(BTreeMap::from([
            ("memory".into(), quantity(&settings.restore_memory)),
            ("ephemeral-storage".into(), quantity("2Gi")),
        ])),
        ..ResourceRequirements::default()
    };
    let container = |name: &str, env_vars: Vec<EnvVar>, mounts: Vec<VolumeMount>| Container {
        name: name.into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["devdb-restore".into()]),
        env: Some(shared.iter().cloned().chain(env_vars).collect()),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        resources: Some(resources.clone()),
        security_context: Some(container_security()),
        ..Container::default()
    };
    let mut fetch_mounts = vec![
        mount("data", DATA_MOUNT, false),
        mount("secrets", SECRETS_MOUNT, true),
        mount("inbox", INBOX_MOUNT, false),
    ];
    if source_credentials {
        fetch_mounts.push(mount("source-credentials", SOURCE_CREDENTIALS_MOUNT, true));
    }
    let fetch = container("fetch", fetch_env, fetch_mounts);
    let build =
        container("restore", build_env, vec![mount("data", DATA_MOUNT, false), mount("inbox", INBOX_MOUNT, false)]);
    let mut template = postgres_pod(labels(project, None), build, &golden_name(generation), Some("Never"));
    if let Some(spec) = template.spec.as_mut() {
        spec.init_containers = Some(vec![fetch]);
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        let mut sources = vec![secret_projection("restore-credentials")];
        if options.masked {
            sources.push(secret_projection(&masking_secret_name(generation)));
        }
        volumes.push(Volume {
            name: "secrets".into(),
            projected: Some(ProjectedVolumeSource { sources: Some(sources), default_mode: Some(0o400) }),
            ..Volume::default()
        });
        volumes.push(Volume {
            name: "inbox".into(),
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: Some(quantity("1Mi")) }),
            ..Volume::default()
        });
        if source_credentials {
            volumes.push(Volume {
                name: "source-credentials".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(SOURCE_CREDENTIALS.into()),
                    default_mode: Some(0o400),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            });
        }
        spec.active_deadline_seconds = i64::try_from(settings.restore_deadline.as_secs()).ok().map(|s| s + 600);
    }
    if options.masked {
        add_scratch(&mut template, project, settings);
    }
    // A restore may take hours: autoscalers must not consolidate its node away meanwhile.
    let annotations =
        template.metadata.get_or_insert_with(ObjectMeta::default).annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert("karpenter.sh/do-not-disrupt".into(), "true".into());
    annotations.insert("cluster-autoscaler.kubernetes.io/safe-to-evict".into(), "false".into());
    // An `s3://` source is fetched as the project's restore account, whatever gives it its
    // identity (IRSA annotations, a Pod Identity association, or nothing: source credentials).
    if let Some(spec) = template.spec.as_mut().filter(|_| options.s3) {
        spec.service_account_name = Some(RESTORE_ACCOUNT.into());
        // The workload identity (IRSA) is for the download: the container that reads the dump
        // gets no token of it.
        annotations.insert("eks.amazonaws.com/skip-containers".into(), "restore".into());
    }
    Job {
        metadata: generation_meta(&restore_job_name(generation), project, generation),
        spec: Some(JobSpec {
            // No retry of a restore that failed: the cause is the project's to see. A pod that
            // was disrupted instead (a node drained or reclaimed, a preemption) is not a
            // failure: the Job runs a new one, which removes the partial restore and starts
            // over (devdb-restore's unfinished mark).
            backoff_limit: Some(0),
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    ..PodFailurePolicyRule::default()
                }],
            }),
            ttl_seconds_after_finished: Some(24 * 3600),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

/// All of Secret `name`'s keys as files (the Secret must exist: a pod without it does not
/// start).
fn secret_projection(name: &str) -> VolumeProjection {
    VolumeProjection {
        secret: Some(SecretProjection { name: name.into(), ..SecretProjection::default() }),
        ..VolumeProjection::default()
    }
}

/// A scratch volume as large as a database's, made with the pod and deleted with it (a generic
/// ephemeral volume), mounted at [`SCRATCH_MOUNT`].
fn add_scratch(template: &mut PodTemplateSpec, project: &str, settings: &ClusterSettings) {
    let Some(spec) = template.spec.as_mut() else { return };
    spec.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: "scratch".into(),
        ephemeral: Some(EphemeralVolumeSource {
            volume_claim_template: Some(PersistentVolumeClaimTemplate {
                metadata: Some(ObjectMeta { labels: Some(labels(project, None)), ..ObjectMeta::default() }),
                spec: pvc_spec(settings, None),
            }),
        }),
        ..Volume::default()
    });
    for container in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
        container.volume_mounts.get_or_insert_with(Vec::new).push(VolumeMount {
            name: "scratch".into(),
            mount_path: SCRATCH_MOUNT.into(),
            ..VolumeMount::default()
        });
    }
}

/// The `VolumeSnapshot` kind (a CSI custom resource: no typed struct).
pub fn snapshot_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot"))
}

/// The VolumeSnapshot of a restored golden volume (a CSI custom resource, so dynamic).
pub fn volume_snapshot(project: &str, generation: u64, settings: &ClusterSettings) -> DynamicObject {
    let mut snapshot = DynamicObject::new(&snapshot_name(generation), &snapshot_resource());
    snapshot.metadata = generation_meta(&snapshot_name(generation), project, generation);
    snapshot.data = serde_json::json!({
        "spec": {
            "volumeSnapshotClassName": settings.volume_snapshot_class,
            "source": { "persistentVolumeClaimName": golden_name(generation) },
        }
    });
    snapshot
}

pub fn snapshot_name(generation: u64) -> String {
    format!("snapshot-{generation}")
}

/// A database's credentials, for the pod and for users (`kubectl get secret`).
pub fn database_secret(
    project: &str,
    database: &str,
    username: &str,
    password: &str,
    db: &str,
    host: &str,
    port: u16,
) -> Secret {
    let uri = format!("postgresql://{username}:{password}@{host}:{port}/{db}?sslmode=require");
    let jdbc = format!("jdbc:postgresql://{host}:{port}/{db}?sslmode=require&user={username}&password={password}");
    Secret {
        metadata: meta(&credentials_name(database), project, Some(database)),
        string_data: Some(BTreeMap::from([
            ("database".into(), db.into()),
            ("username".into(), username.into()),
            ("password".into(), password.into()),
            ("uri".into(), uri),
            ("jdbc-uri".into(), jdbc),
        ])),
        type_: Some("Opaque".into()),
        ..Secret::default()
    }
}

pub fn credentials_name(database: &str) -> String {
    format!("{database}-credentials")
}

pub fn data_name(database: &str) -> String {
    format!("{database}-data")
}

/// The label giving the PostgreSQL major version of a database volume's data: PostgreSQL
/// refuses a data directory of another major, so a database is not started on an image of
/// another (see [`crate::runtime`]).
pub const POSTGRES_MAJOR_LABEL: &str = "devdb.io/postgres-major";

/// A database's volume: a clone of the project's snapshot `generation`, whose data is of
/// PostgreSQL `postgres_major`.
pub fn database_pvc(
    project: &str,
    database: &str,
    generation: u64,
    postgres_major: u32,
    settings: &ClusterSettings,
) -> PersistentVolumeClaim {
    let source = TypedLocalObjectReference {
        api_group: Some("snapshot.storage.k8s.io".into()),
        kind: "VolumeSnapshot".into(),
        name: snapshot_name(generation),
    };
    let mut metadata = meta(&data_name(database), project, Some(database));
    metadata.labels.get_or_insert_default().insert(POSTGRES_MAJOR_LABEL.into(), postgres_major.to_string());
    PersistentVolumeClaim { metadata, spec: Some(pvc_spec(settings, Some(source))), ..PersistentVolumeClaim::default() }
}

/// How long a database pod has to stop before it is killed. A fast shutdown writes every dirty
/// page of `shared_buffers` (up to 4 GB: the settings' limit) in its shutdown checkpoint: about
/// 35 s at a gp3 volume's baseline 125 MB/s, longer on a throttled or busy volume; 120 s leaves
/// that margin. Killed before the end, the database loses nothing, but its next start replays
/// the WAL since the last checkpoint (a slower wake).
pub const STOP_GRACE_SECONDS: i64 = 120;

/// One PostgreSQL pod on the cloned volume, ready when a real query answers. `devdb-start`
/// gives the project's user this database's own password, then runs PostgreSQL with the
/// parameters its owner set (`pg` ones, checked against the allow-list; each as `-c k=v`).
pub fn statefulset(
    project: &str,
    database: &str,
    settings: &ClusterSettings,
    pg: &BTreeMap<String, String>,
) -> StatefulSet {
    let labels = labels(project, Some(database));
    let ready = Probe {
        exec: Some(ExecAction {
            command: Some(vec![
                "psql".into(),
                "-X".into(),
                "-h".into(),
                "/var/run/postgresql".into(),
                "-U".into(),
                "postgres".into(),
                "-d".into(),
                "postgres".into(),
                "-Atc".into(),
                "SELECT 1".into(),
            ]),
        }),
        // A query answers in milliseconds, but under load (a long checkpoint, a saturated
        // volume, a busy node) it can take seconds: one slow answer must not take the database
        // out of its Service. Looked at often (a woken database is ready within 2 s of
        // answering), given 5 s, and out only after three misses in a row.
        period_seconds: Some(2),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        success_threshold: Some(1),
        ..Probe::default()
    };
    let container = Container {
        name: "postgres".into(),
        image: Some(settings.image.clone()),
        command: Some(
            std::iter::once("devdb-start".to_string())
                .chain(pg.iter().flat_map(|(k, v)| ["-c".to_string(), format!("{k}={v}")]))
                .collect(),
        ),
        env: Some(vec![
            env("PGDATA", PGDATA),
            secret_env("DB_USER", &credentials_name(database), "username"),
            secret_env("DB_PASSWORD", &credentials_name(database), "password"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: 5432,
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(ready),
        // Kubernetes stops a container with SIGTERM, which PostgreSQL takes as a smart shutdown:
        // it waits for every session to end (clients of the proxy may never), and at the end of
        // the grace period SIGKILL leaves crash recovery for the next start. A fast shutdown
        // instead (pg_ctl sends SIGINT: sessions end at once, then the shutdown checkpoint);
        // the SIGTERM that follows is ignored by a postmaster already shutting down faster.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(
                        ["pg_ctl", "stop", "-D", PGDATA, "-m", "fast", "--no-wait"].map(String::from).to_vec(),
                    ),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_MOUNT.into(),
            ..VolumeMount::default()
        }]),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), Quantity("100m".into())),
                ("memory".into(), Quantity("256Mi".into())),
            ])),
            ..ResourceRequirements::default()
        }),
        ..Container::default()
    };
    let mut template = postgres_pod(labels.clone(), container, &data_name(database), None);
    if let Some(spec) = template.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(STOP_GRACE_SECONDS);
    }
    StatefulSet {
        metadata: meta(database, project, Some(database)),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(database.into()),
            selector: LabelSelector { match_labels: Some(labels), ..LabelSelector::default() },
            template,
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// The ClusterIP service the proxy relays to, on 5432 (see [`backend`]).
pub fn service(project: &str, database: &str) -> Service {
    Service {
        metadata: meta(database, project, Some(database)),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(labels(project, Some(database))),
            ports: Some(vec![ServicePort {
                name: Some("postgres".into()),
                port: 5432,
                target_port: Some(IntOrString::Int(5432)),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The backend address the proxy routes `database` to: its Service's fully qualified name,
/// ending in a dot (`kate-pg.devdb-shop.svc.cluster.local.:5432`). A name without the final
/// dot has fewer dots than a pod's resolv.conf `ndots:5`, so each connection's lookup would try
/// every search domain first (`….svc.devdb.svc.cluster.local`, …): several failed queries to the
/// cluster's DNS per session. The proxy dials it as it is (the system resolver takes a name
/// ending in a dot as absolute); no TLS runs toward the backend, so no certificate names it.
/// Without a cluster domain, the relative `<database>.devdb-<project>.svc:5432`.
pub fn backend(project: &str, database: &str, cluster_domain: &str) -> String {
    let namespace = namespace_name(project);
    if cluster_domain.is_empty() {
        return format!("{database}.{namespace}.svc:5432");
    }
    format!("{database}.{namespace}.svc.{cluster_domain}.:5432")
}

/// Only the proxy's pods may reach a database pod (the proxy→database hop is plaintext).
pub fn network_policy(project: &str, database: &str, settings: &ClusterSettings) -> NetworkPolicy {
    let proxy = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                "kubernetes.io/metadata.name".into(),
                settings.proxy_namespace.clone(),
            )])),
            ..LabelSelector::default()
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(settings.proxy_labels.clone()),
            ..LabelSelector::default()
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicy {
        metadata: meta(&format!("{database}-proxy-only"), project, Some(database)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels(project, Some(database))),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![proxy]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(5432)),
                    protocol: Some("TCP".into()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            ..NetworkPolicySpec::default()
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn settings() -> ClusterSettings {
        ClusterSettings {
            image: "devdb/postgres-db:16".into(),
            storage_class: Some("gp3".into()),
            volume_snapshot_class: Some("ebs-csi".into()),
            volume_size: "20Gi".into(),
            restore_cpu: "1".into(),
            restore_memory: "2Gi".into(),
            restore_deadline: std::time::Duration::from_secs(6 * 3600),
            proxy_namespace: "devdb".into(),
            proxy_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "devdb-proxy".into())]),
            controller_namespace: "devdb".into(),
            require_network_policy: true,
            source_credentials: Some("devdb-s3".into()),
            restore_account_annotations: BTreeMap::from([(
                "eks.amazonaws.com/role-arn".into(),
                "arn:aws:iam::123456789012:role/devdb-restore".into(),
            )]),
            project_access: Some(ProjectAccess {
                cluster_role: "devdb-project".into(),
                service_account: "devdb-controller".into(),
            }),
            cluster_domain: "cluster.local".into(),
        }
    }

    /// Every object for project `shop` and database `kate-pg`, as JSON documents.
    pub(crate) fn all_objects() -> Vec<serde_json::Value> {
        let s = settings();
        let json = |v: serde_json::Result<serde_json::Value>| v.expect("serializes");
        vec![
            json(serde_json::to_value(namespace("shop"))),
            json(serde_json::to_value(project_role_binding(
                "shop",
                s.project_access.as_ref().expect("access"),
                &s.controller_namespace,
            ))),
            json(serde_json::to_value(golden_pvc("shop", 1, &s))),
            json(serde_json::to_value(project_secret("shop", "app", "pw", Some("https://u:p@h/d.dump")))),
            json(serde_json::to_value(source_credentials(
                "shop",
                Some(BTreeMap::from([("AWS_REGION".into(), k8s_openapi::ByteString(b"eu-west-1".to_vec()))])),
            ))),
            json(serde_json::to_value(restore_job("shop", 1, "shop", RestoreOptions::default(), &s))),
            json(serde_json::to_value(restore_job(
                "shop",
                2,
                "shop",
                RestoreOptions { masked: true, ..RestoreOptions::default() },
                &s,
            ))),
            json(serde_json::to_value(masking_secret("shop", 2, &Masking::default(), "k"))),
            json(serde_json::to_value(restore_account("shop", &s.restore_account_annotations))),
            json(serde_json::to_value(database_secret(
                "shop",
                "kate-pg",
                "app",
                "pw",
                "shop",
                "kate-pg.db.example.com",
                5432,
            ))),
            json(serde_json::to_value(database_pvc("shop", "kate-pg", 1, 16, &s))),
            json(serde_json::to_value(statefulset("shop", "kate-pg", &s, &BTreeMap::new()))),
            json(serde_json::to_value(service("shop", "kate-pg"))),
            json(serde_json::to_value(network_policy("shop", "kate-pg", &s))),
        ]
        .into_iter()
        .chain(crate::backups::tests::objects())
        .collect()
    }

    #[test]
    fn every_object_passes_the_official_kubernetes_schemas() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut files = Vec::new();
        for (i, object) in all_objects().iter().enumerate() {
            let path = dir.path().join(format!("{i}.yaml"));
            std::fs::write(&path, object.to_string()).expect("write");
            files.push(path);
        }
        let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/devdb/crds");
        files.extend(std::fs::read_dir(crds).expect("chart crds").flatten().map(|e| e.path()));
        let out = devdb_testkit::python::command("kubernetes-validate")
            .arg("--strict")
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubernetes-validate: {e}"));
        let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{report}");
        assert_eq!(report.matches("passed for resource").count(), files.len(), "{report}");
    }

    #[test]
    fn everything_is_labelled_and_in_the_project_namespace() {
        for object in all_objects() {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            assert_eq!(object["metadata"]["labels"]["app.kubernetes.io/managed-by"], "devdb", "{kind}");
            assert_eq!(object["metadata"]["labels"]["devdb.io/project"], "shop", "{kind}");
            if kind != "Namespace" {
                assert_eq!(object["metadata"]["namespace"], "devdb-shop", "{kind}");
            }
        }
        assert_eq!(
            selector("shop", Some("kate-pg")),
            "app.kubernetes.io/managed-by=devdb,devdb.io/database=kate-pg,devdb.io/project=shop"
        );
    }

    #[test]
    fn a_database_volume_clones_the_snapshot_and_only_the_proxy_gets_in() {
        let pvc = serde_json::to_value(database_pvc("shop", "kate-pg", 3, 16, &settings())).expect("json");
        assert_eq!(pvc["metadata"]["labels"][POSTGRES_MAJOR_LABEL], "16", "the major of its data");
        assert_eq!(
            pvc["spec"]["dataSource"],
            serde_json::json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "snapshot-3"})
        );
        let policy = serde_json::to_value(network_policy("shop", "kate-pg", &settings())).expect("json");
        assert_eq!(
            policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/name"],
            "devdb-proxy"
        );
        assert_eq!(policy["spec"]["podSelector"]["matchLabels"]["devdb.io/database"], "kate-pg");
        // Fully qualified: no search-list walk per connection.
        assert_eq!(backend("shop", "kate-pg", "cluster.local"), "kate-pg.devdb-shop.svc.cluster.local.:5432");
        assert_eq!(backend("shop", "kate-pg", "corp.internal"), "kate-pg.devdb-shop.svc.corp.internal.:5432");
        assert_eq!(backend("shop", "kate-pg", ""), "kate-pg.devdb-shop.svc:5432");
    }

    /// What the Pod Security Standard "restricted" requires of a pod, read from the objects as
    /// they are sent (<https://kubernetes.io/docs/concepts/security/pod-security-standards/>).
    fn assert_restricted(pod: &serde_json::Value) {
        let spec = &pod["spec"];
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(spec["automountServiceAccountToken"], false);
        let init = spec["initContainers"].as_array().cloned().unwrap_or_default();
        for container in spec["containers"].as_array().expect("containers").iter().chain(&init) {
            let security = &container["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{container}");
            assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{container}");
            assert_eq!(security["runAsNonRoot"], true);
            assert!(security.get("privileged").is_none_or(|p| p == false));
        }
        // The types the restricted standard allows.
        let allowed = ["persistentVolumeClaim", "emptyDir", "ephemeral", "secret", "configMap", "projected"];
        for volume in spec["volumes"].as_array().expect("volumes") {
            let kinds: Vec<&String> = volume.as_object().expect("volume").keys().filter(|k| *k != "name").collect();
            assert!(kinds.iter().all(|k| allowed.contains(&k.as_str())), "{volume}");
        }
        assert_eq!(spec["volumes"][1]["emptyDir"]["medium"], "Memory", "/dev/shm beyond 64 MiB");
    }

    #[test]
    fn database_and_restore_pods_meet_the_restricted_pod_security_standard() {
        let statefulset =
            serde_json::to_value(statefulset("shop", "kate-pg", &settings(), &BTreeMap::new())).expect("json");
        assert_restricted(&statefulset["spec"]["template"]);
        let job =
            serde_json::to_value(restore_job("shop", 2, "shop", RestoreOptions::default(), &settings())).expect("json");
        assert_restricted(&job["spec"]["template"]);
        assert_eq!(job["spec"]["backoffLimit"], 0, "one attempt: its failure is the cause");
        let masked = RestoreOptions { masked: true, ..RestoreOptions::default() };
        let job = serde_json::to_value(restore_job("shop", 2, "shop", masked, &settings())).expect("json");
        assert_restricted(&job["spec"]["template"]);
    }

    #[test]
    fn a_databases_parameters_are_its_servers_arguments() {
        let pg =
            BTreeMap::from([("max_connections".to_string(), "50".to_string()), ("work_mem".into(), "64MB".into())]);
        let sts = serde_json::to_value(statefulset("shop", "kate-pg", &settings(), &pg)).expect("json");
        let command = &sts["spec"]["template"]["spec"]["containers"][0]["command"];
        assert_eq!(command, &serde_json::json!(["devdb-start", "-c", "max_connections=50", "-c", "work_mem=64MB"]));
    }

    #[test]
    fn a_database_pod_has_time_to_answer_its_probe_and_to_stop_with_a_checkpoint() {
        let sts = serde_json::to_value(statefulset("shop", "kate-pg", &settings(), &BTreeMap::new())).expect("json");
        let pod = &sts["spec"]["template"]["spec"];
        let probe = &pod["containers"][0]["readinessProbe"];
        assert_eq!(
            (&probe["timeoutSeconds"], &probe["periodSeconds"], &probe["failureThreshold"]),
            (&serde_json::json!(5), &serde_json::json!(2), &serde_json::json!(3)),
            "a slow answer under load is no flap: {probe}"
        );
        assert_eq!(pod["terminationGracePeriodSeconds"], 120, "room for a 4 GB shutdown checkpoint");
        assert_eq!(
            pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"],
            serde_json::json!(["pg_ctl", "stop", "-D", PGDATA, "-m", "fast", "--no-wait"]),
            "a fast shutdown, not a smart one waiting for the proxy's sessions"
        );
    }

    #[test]
    fn an_s3_restore_job_runs_as_the_restore_account_without_an_api_token_annotated_or_not() {
        let s3 = RestoreOptions { s3: true, ..RestoreOptions::default() };
        let job = serde_json::to_value(restore_job("shop", 1, "shop", s3, &settings())).expect("json");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], RESTORE_ACCOUNT);
        assert_eq!(pod["automountServiceAccountToken"], false);
        let account =
            serde_json::to_value(restore_account("shop", &settings().restore_account_annotations)).expect("json");
        assert_eq!(
            account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
            "arn:aws:iam::123456789012:role/devdb-restore"
        );
        assert_eq!(account["metadata"]["namespace"], "devdb-shop");
        // EKS Pod Identity: the association names the account, which needs no annotation.
        let plain = ClusterSettings { restore_account_annotations: BTreeMap::new(), ..settings() };
        let job = serde_json::to_value(restore_job("shop", 1, "shop", s3, &plain)).expect("json");
        assert_eq!(job["spec"]["template"]["spec"]["serviceAccountName"], RESTORE_ACCOUNT);
        let account = serde_json::to_value(restore_account("shop", &BTreeMap::new())).expect("json");
        assert!(account["metadata"].get("annotations").is_none(), "{account}");
        // Any other source needs no cloud identity: the namespace's default account.
        let https = restore_job("shop", 1, "shop", RestoreOptions::default(), &settings());
        let https = serde_json::to_value(https).expect("json");
        assert!(https["spec"]["template"]["spec"].get("serviceAccountName").is_none(), "the namespace's default");
    }

    /// The env of a container of a Job (plain values).
    fn env_of(container: &serde_json::Value) -> BTreeMap<String, String> {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["value"].as_str()?.to_string())))
            .collect()
    }

    fn mounts_of(container: &serde_json::Value) -> Vec<(String, String)> {
        let mount = |m: &serde_json::Value| {
            (
                m["name"].as_str().unwrap_or_default().to_string(),
                m["mountPath"].as_str().unwrap_or_default().to_string(),
            )
        };
        container["volumeMounts"].as_array().expect("mounts").iter().map(mount).collect()
    }

    #[test]
    fn the_restore_job_is_sized_and_works_on_the_golden_volume() {
        let job =
            serde_json::to_value(restore_job("shop", 1, "shop", RestoreOptions::default(), &settings())).expect("json");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["activeDeadlineSeconds"], 6 * 3600 + 600, "the restore's deadline, and a margin to report it");
        // Disruption-tolerant: not consolidated away, and a disrupted pod is run again, not failed.
        let annotations = &job["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["karpenter.sh/do-not-disrupt"], "true");
        assert_eq!(annotations["cluster-autoscaler.kubernetes.io/safe-to-evict"], "false");
        assert_eq!(job["spec"]["backoffLimit"], 0, "a failed restore is not retried");
        assert_eq!(
            job["spec"]["podFailurePolicy"]["rules"],
            serde_json::json!([{ "action": "Ignore", "onPodConditions": [{ "type": "DisruptionTarget", "status": "True" }] }])
        );
        assert_eq!(pod["restartPolicy"], "Never", "what a pod failure policy needs");
        for container in [&pod["initContainers"][0], &pod["containers"][0]] {
            assert_eq!(container["resources"]["requests"]["cpu"], "1");
            assert_eq!(container["resources"]["limits"]["memory"], container["resources"]["requests"]["memory"]);
            let env = env_of(container);
            assert!(env["TMPDIR"].starts_with(&format!("{DATA_MOUNT}/")), "the work is on the volume: {env:?}");
            assert_eq!(env["DEVDB_DOWNLOAD"], format!("{RESTORE_WORK_DIR}/download"));
            assert_eq!(env["DEVDB_MAX_SOURCE_SIZE"], (10_u64 << 30).to_string(), "half of the 20Gi volume");
            assert_eq!(env["DEVDB_MAX_RESTORE_TIME"], "21600s");
            assert!(mounts_of(container).contains(&("data".to_string(), DATA_MOUNT.to_string())));
        }
        assert_eq!(env_of(&pod["containers"][0])["DEVDB_RESTORE_WORK_DIR"], RESTORE_WORK_DIR);
    }

    #[test]
    fn the_fetch_holds_the_source_and_the_build_holds_no_secret_volume_nor_identity() {
        let s3 = RestoreOptions { s3: true, ..RestoreOptions::default() };
        let job = serde_json::to_value(restore_job("shop", 2, "shop", s3, &settings())).expect("json");
        let text = job.to_string();
        assert!(!text.contains("\"pw\""), "no password inline");
        let pod = &job["spec"]["template"]["spec"];
        let (fetch, build) = (&pod["initContainers"][0], &pod["containers"][0]);
        assert_eq!((fetch["name"].as_str(), build["name"].as_str()), (Some("fetch"), Some("restore")));
        assert_eq!(env_of(fetch)["DEVDB_RESTORE_STEP"], "fetch");
        assert_eq!(env_of(build)["DEVDB_RESTORE_STEP"], "build");
        let fetch_mounts = mounts_of(fetch);
        for volume in ["secrets", "source-credentials", "inbox"] {
            assert!(fetch_mounts.iter().any(|(name, _)| name == volume), "fetch mounts {volume}: {fetch_mounts:?}");
        }
        let build_mounts = mounts_of(build);
        for volume in ["secrets", "source-credentials"] {
            assert!(
                !build_mounts.iter().any(|(name, _)| name == volume),
                "the build mounts no {volume}: {build_mounts:?}"
            );
        }
        assert!(build_mounts.iter().any(|(name, path)| name == "inbox" && path == INBOX_MOUNT));
        for container in [fetch, build] {
            assert!(container.get("envFrom").is_none(), "no Secret as environment");
            let from_secrets: Vec<&str> = container["env"]
                .as_array()
                .expect("env")
                .iter()
                .filter(|e| e.get("valueFrom").is_some())
                .filter_map(|e| e["name"].as_str())
                .collect();
            assert!(from_secrets.iter().all(|name| *name == "DB_USER"), "only the user's name: {from_secrets:?}");
        }
        let volumes = pod["volumes"].as_array().expect("volumes");
        let inbox = volumes.iter().find(|v| v["name"] == "inbox").expect("inbox");
        assert_eq!(inbox["emptyDir"]["medium"], "Memory", "handed over in memory, never on a disk");
        let secrets = volumes.iter().find(|v| v["name"] == "secrets").expect("secrets");
        assert_eq!(secrets["projected"]["sources"][0]["secret"]["name"], "restore-credentials");
        assert_eq!(job["spec"]["template"]["metadata"]["annotations"]["eks.amazonaws.com/skip-containers"], "restore");
        // Only an s3:// source's fetch gets the cloud credentials.
        let https = serde_json::to_value(restore_job("shop", 2, "shop", RestoreOptions::default(), &settings()));
        assert!(!https.expect("json").to_string().contains("source-credentials"));
        assert!(!text.contains("DEVDB_ALLOW_PRIVATE_SOURCES"), "public sources only unless allowed");
        let admins = RestoreOptions { allow_private_source: true, ..RestoreOptions::default() };
        let admins = serde_json::to_value(restore_job("shop", 2, "shop", admins, &settings())).expect("json");
        let admins_fetch = &admins["spec"]["template"]["spec"]["initContainers"][0];
        assert_eq!(env_of(admins_fetch)["DEVDB_ALLOW_PRIVATE_SOURCES"], "true");
        let secret = serde_json::to_value(project_secret("shop", "app", "pw", Some("https://u:p@h/d"))).expect("json");
        assert_eq!(secret["stringData"]["source"], "https://u:p@h/d");
        assert_eq!(pod["volumes"][0]["persistentVolumeClaim"]["claimName"], "golden-2");
        assert_eq!(build["command"][0], "devdb-restore");
        let snapshot = serde_json::to_value(volume_snapshot("shop", 2, &settings())).expect("json");
        assert_eq!(snapshot["spec"]["source"]["persistentVolumeClaimName"], "golden-2");
        assert_eq!(snapshot["kind"], "VolumeSnapshot");
    }

    #[test]
    fn a_masked_restore_reads_rules_and_key_from_a_secret_it_cannot_start_without() {
        let masked = RestoreOptions { masked: true, ..RestoreOptions::default() };
        let job = serde_json::to_value(restore_job("shop", 3, "shop", masked, &settings())).expect("json");
        let pod = &job["spec"]["template"]["spec"];
        let volumes = pod["volumes"].as_array().expect("volumes");
        let sources = volumes.iter().find(|v| v["name"] == "secrets").expect("secrets")["projected"]["sources"].clone();
        let masking = sources.as_array().expect("sources").iter().find(|s| s["secret"]["name"] == "restore-masking-3");
        let masking = masking.expect("the masking Secret is projected");
        assert!(masking["secret"].get("optional").is_none(), "without the Secret the pod must not start");
        // It builds on a scratch volume of its own: the golden volume gets the finished files only.
        let (fetch, build) = (&pod["initContainers"][0], &pod["containers"][0]);
        assert_eq!(env_of(build).get("DEVDB_BUILD_DIR").map(String::as_str), Some(SCRATCH_MOUNT));
        assert_eq!(env_of(build).get("DEVDB_RESTORE_WORK_DIR"), None, "nothing of the work on the golden volume");
        for container in [fetch, build] {
            assert_eq!(env_of(container)["TMPDIR"], SCRATCH_MOUNT);
            assert_eq!(env_of(container)["DEVDB_DOWNLOAD"], format!("{SCRATCH_MOUNT}/work/download"));
            assert!(mounts_of(container).contains(&("scratch".to_string(), SCRATCH_MOUNT.to_string())));
        }
        let scratch = volumes.iter().find(|v| v["name"] == "scratch").expect("scratch");
        let claim = &scratch["ephemeral"]["volumeClaimTemplate"]["spec"];
        assert_eq!(
            (claim["storageClassName"].as_str(), claim["resources"]["requests"]["storage"].as_str()),
            (Some("gp3"), Some("20Gi"))
        );
        let plain = serde_json::to_value(restore_job("shop", 3, "shop", RestoreOptions::default(), &settings()));
        let plain = plain.expect("json").to_string();
        assert!(!plain.contains("restore-masking") && !plain.contains("scratch"), "{plain}");

        let rule: devdb_shared::api::MaskRule =
            serde_json::from_str(r#"{"table":"customers","column":"email","strategy":"email"}"#).expect("rule");
        let masking = Masking { rules: vec![rule], require_rules: true, verify: true, key_version: 0 };
        let secret = serde_json::to_value(masking_secret("shop", 3, &masking, "k".repeat(48).as_str())).expect("json");
        assert_eq!(secret["metadata"]["name"], "restore-masking-3");
        assert_eq!(secret["metadata"]["labels"][GENERATION_LABEL], "3");
        let rules: serde_json::Value =
            serde_json::from_str(secret["stringData"]["masking"].as_str().expect("masking")).expect("json");
        assert_eq!(
            rules,
            serde_json::json!({ "rules": [{"table":"customers","column":"email","strategy":"email"}], "verify": true })
        );
        assert_eq!(secret["stringData"]["mask-key"], "k".repeat(48));
    }
}
