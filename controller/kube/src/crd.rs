//! The custom resources `Project` and `Database` (group `devdb.io`, version `v1alpha1`), both
//! cluster-scoped since names are unique per kind. Their CRD manifests are generated from these
//! types (`devdb-controller crds`) and committed under `charts/devdb/crds/`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResource;
use kube::core::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A project: a data source restored once into a golden volume, snapshotted, and cloned by
/// databases.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "devdb.io",
    version = "v1alpha1",
    kind = "Project",
    status = "ProjectStatus",
    shortname = "dbproj",
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".spec.backupLocation"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProjectSpec {
    pub owner: String,
    /// PostgreSQL major version, e.g. "16".
    pub db_version: String,
    /// http(s)://, s3:// or absent (empty databases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_location: Option<String>,
    /// Whether the source may be on a private, loopback or link-local address (set when an
    /// admin created the project, or the controller allows private sources).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_private_source: bool,
    /// The user and database the data is restored for.
    pub username: String,
    pub database: String,
    /// The snapshot generation wanted: starts at 1, bumped to restore the source again into a
    /// new snapshot (refresh).
    #[serde(default = "first_generation")]
    pub snapshot_generation: u64,
    /// Its databases stop after this many seconds without a session (0: never; absent: the
    /// controller's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after_seconds: Option<u64>,
    /// How long its databases live unless created with their own time to live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl_seconds: Option<u64>,
    /// How its snapshots are masked (the key is derived by the controller, never stored here).
    #[serde(default, skip_serializing_if = "devdb_shared::api::Masking::is_empty")]
    pub masking: devdb_shared::api::Masking,
}

/// What the controller reports about a project.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    /// pending, restoring, ready or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes restored so far, while restoring.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<RestoreProgress>,
    /// The ready VolumeSnapshot new databases clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotStatus>,
    /// The other generations kept, to roll back to (oldest first): their VolumeSnapshots stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_snapshots: Vec<SnapshotStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Progress of a restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreProgress {
    pub bytes_done: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// A project's ready snapshot: VolumeSnapshot `snapshot-<generation>` in its namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    pub generation: u64,
    pub created_at: String,
    pub size_bytes: u64,
    /// The columns its restore's personal-data scan found (before masking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<devdb_shared::api::PiiFinding>,
    /// Found but not listed (a restore Job's report is at most 4 KiB): in all, and of those
    /// no rule masks.
    #[serde(default, skip_serializing_if = "devdb_shared::api::is_zero")]
    pub unlisted_findings: u64,
    #[serde(default, skip_serializing_if = "devdb_shared::api::is_zero")]
    pub unlisted_unmasked: u64,
    /// The masking rules its restore applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked_with: Vec<devdb_shared::api::MaskRule>,
    /// The version of the project's masking key they were applied under.
    #[serde(default, skip_serializing_if = "devdb_shared::api::is_zero_u32")]
    pub masked_key_version: u32,
    /// With masking verification: the sampled originals looked for in its files, not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking_verified: Option<u64>,
}

/// A database instance: a clone of its project's snapshot.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "devdb.io",
    version = "v1alpha1",
    kind = "Database",
    status = "DatabaseStatus",
    shortname = "db",
    printcolumn = r#"{"name":"Project","type":"string","jsonPath":".spec.project"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    pub project: String,
    pub owner: String,
    /// Bumped to clone the project's snapshot again (reset), keeping name and credentials.
    #[serde(default)]
    pub reset_generation: u64,
    /// Stopped (scaled to zero, its volume kept) until set false again, by `start` or a
    /// connection.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stopped: bool,
    /// Exempt from idle stop and expiry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// When the controller deletes it (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Its own idle period in seconds (0: never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after_seconds: Option<u64>,
    /// PostgreSQL parameters its owner set (from the allow-list), passed to the server.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Backed up, with its WAL archived (set where the controller has a backup repository).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
}

/// A database's backups, as asked for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// `hourly`, `daily` or `weekly`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long its full backups are kept (`7d`); absent: the two newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

/// What the controller reports about a database.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    /// creating, running, stopped, starting, recovering, error or deleting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The resetGeneration the running clone was made for: a reset is pending while the spec's
    /// is ahead.
    #[serde(default)]
    pub observed_reset_generation: u64,
    /// The project snapshot generation the clone was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_generation: Option<u64>,
    /// `manual` or `idle`, while stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    /// The last time a session was open on it (proxy reports), or it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    /// The parameters its pod runs with.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub applied_settings: std::collections::BTreeMap<String, String>,
    /// Whether its pod was made to archive WAL (as its backups were when it last started or
    /// took its settings): turning backups on or off rolls it while this differs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiving: Option<bool>,
    /// Its backups as last seen: the last one, the window it can be restored to, archiving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "observed_backups")]
    pub backup: Option<devdb_shared::api::BackupStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition, as Kubernetes conventions describe them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. Ready, Restored.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// The schema of a database's observed backups: the API's own document (`GET
/// /v1/databases/{name}`, `backup`), kept as the controller writes it.
fn observed_backups(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn first_generation() -> u64 {
    1
}

/// The finalizer on every `Project` and `Database`: the controller removes what the object had
/// in the cluster before it goes.
pub const FINALIZER: &str = "devdb.io/cleanup";

/// The CRD manifests, in the order to apply them.
pub fn definitions() -> Vec<CustomResourceDefinition> {
    vec![Project::crd(), Database::crd()]
}

/// A CRD as the committed manifest: JSON (which is YAML too), pretty-printed, newline-terminated.
pub fn manifest(crd: &CustomResourceDefinition) -> String {
    let mut text = serde_json::to_string_pretty(crd).unwrap_or_default();
    text.push('\n');
    text
}

/// Where the chart keeps a CRD's manifest.
pub fn manifest_file(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("crd"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_chart_crds_match_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/devdb/crds");
        for crd in definitions() {
            let path = dir.join(manifest_file(&crd));
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(
                committed == manifest(&crd),
                "{} is out of date: run `cargo run -p devdb-controller --bin devdb-controller -- crds --write charts/devdb/crds`",
                path.display()
            );
        }
    }

    #[test]
    fn crds_are_cluster_scoped_with_status_subresources() {
        for crd in definitions() {
            assert_eq!(crd.spec.group, "devdb.io");
            assert_eq!(crd.spec.scope, "Cluster");
            let version = &crd.spec.versions[0];
            assert!(version.subresources.as_ref().is_some_and(|s| s.status.is_some()), "{:?}", crd.metadata.name);
            assert!(version.schema.is_some());
        }
        assert_eq!(
            definitions().iter().filter_map(|c| c.metadata.name.clone()).collect::<Vec<_>>(),
            ["projects.devdb.io", "databases.devdb.io"]
        );
    }
}
