//! The model: projects and databases as the controller keeps them (the API's views are derived
//! from these), what should become of each, and the keys the reconciler works on.

use devdb_shared::Name;
use devdb_shared::api::{DatabaseStatus, Progress, ProjectStatus, StopReason};
use serde::{Deserialize, Serialize};

/// A project as the controller keeps it (the API view is derived from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    pub id: String,
    pub name: Name,
    pub owner: String,
    pub db_version: String,
    /// `None`: databases start empty.
    pub backup_location: Option<String>,
    /// Whether the source may be fetched from private addresses: decided when the project is
    /// created (by an admin, or with `--allow-private-sources`), used by every restore.
    #[serde(default)]
    pub allow_private_source: bool,
    pub status: ProjectStatus,
    pub error: Option<String>,
    pub progress: Option<Progress>,
    /// The ready snapshot new databases are cloned from.
    pub snapshot: Option<SnapshotRecord>,
    /// The other snapshot generations kept, to roll back to (oldest first, never the current
    /// one): the newest the controller's `--keep-snapshots` allows beside the current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kept_snapshots: Vec<SnapshotRecord>,
    /// The snapshot generation wanted: bumped by refresh; a restore runs while it is ahead of
    /// `snapshot`'s.
    pub wanted_generation: u64,
    pub username: String,
    pub password: String,
    pub database: String,
    pub created_at: String,
    /// Its databases stop after this many seconds without a session (0: never); `None`: the
    /// controller's default.
    #[serde(default)]
    pub idle_stop_after_secs: Option<u64>,
    /// How long its databases live unless created with their own `ttl` (`None`: for ever).
    #[serde(default)]
    pub default_ttl_secs: Option<u64>,
    /// How its snapshot's personal data is masked (applied by every restore).
    #[serde(default)]
    pub masking: devdb_shared::api::Masking,
    /// The secret the masking is keyed by: never shown, never leaves the controller but for the
    /// restore that applies it (empty until rules are first set).
    #[serde(default)]
    pub mask_key: String,
    /// Restores of the wanted generation begun and never finished: the controller stopped while
    /// they ran (restarted, or killed by what the restore did). Past
    /// [`MAX_INTERRUPTED_RESTORES`] the restore fails instead of starting again.
    #[serde(default, skip_serializing_if = "devdb_shared::api::is_zero_u32")]
    pub restores_begun: u32,
    /// The backups of its new databases created without `backup` of their own (checked, see
    /// [`crate::backup_settings`]); `None`: on for protected ones only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<devdb_shared::api::BackupRequest>,
}

/// Restores of one generation begun without an end before it is failed: a source that takes
/// the controller down must not do so for ever.
pub const MAX_INTERRUPTED_RESTORES: u32 = 3;

impl ProjectRecord {
    /// With `requireRules`, the columns a clone would expose: found by the scan and covered by
    /// no rule.
    pub fn unmasked_columns(&self) -> Vec<String> {
        if !self.masking.require_rules {
            return Vec::new();
        }
        let Some(snapshot) = &self.snapshot else { return Vec::new() };
        let mut unmasked: Vec<String> = snapshot
            .findings
            .iter()
            .filter(|f| !self.masking.covers(f))
            .map(|f| {
                let path =
                    if f.json_path.is_empty() { String::new() } else { format!(" -> {}", f.json_path.join(".")) };
                format!("{}.{}{path} ({})", f.table, f.column, f.kind)
            })
            .collect();
        if snapshot.unlisted_unmasked > 0 {
            unmasked.push(format!("{} more columns the restore could not list", snapshot.unlisted_unmasked));
        }
        unmasked
    }
}

/// One restored snapshot of a project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub generation: u64,
    pub created_at: String,
    pub size_bytes: u64,
    /// What the personal-data scan found in it (before masking); empty where the runtime does
    /// not scan.
    #[serde(default)]
    pub findings: Vec<devdb_shared::api::PiiFinding>,
    /// Found but not listed in `findings` (a restore Job reports at most 4 KiB): in all, and
    /// of those, masked by no rule of the restore.
    #[serde(default)]
    pub unlisted_findings: u64,
    #[serde(default)]
    pub unlisted_unmasked: u64,
    /// The masking rules its restore applied (set by the reconciler).
    #[serde(default)]
    pub masked_with: Vec<devdb_shared::api::MaskRule>,
    /// The version of the project's key it was masked under (see
    /// [`Masking::key_version`](devdb_shared::api::Masking::key_version)).
    #[serde(default, skip_serializing_if = "devdb_shared::api::is_zero_u32")]
    pub masked_key_version: u32,
    /// With masking verification: how many sampled originals were looked for in its files,
    /// and not found.
    #[serde(default)]
    pub masking_verified: Option<u64>,
}

/// What should become of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Want {
    /// Exist and run.
    Run,
    /// Be cloned again from the project's snapshot, keeping name and credentials.
    Reset,
    /// Be stopped and removed.
    Delete,
    /// Be stopped, keeping its data and credentials.
    Stop,
}

/// A database as the controller keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRecord {
    /// Unique per incarnation: a database deleted and created again gets a new one.
    #[serde(default)]
    pub id: String,
    pub name: Name,
    pub project: Name,
    pub owner: String,
    pub status: DatabaseStatus,
    pub want: Want,
    /// Where the instance listens (loopback in local mode, 5432 in its pod on Kubernetes).
    pub port: u16,
    pub password: String,
    /// The project snapshot generation this clone was made from.
    pub snapshot_generation: Option<u64>,
    pub error: Option<String>,
    pub created_at: String,
    /// Stop and start, idleness and expiry (absent in records written before they existed).
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// PostgreSQL parameters its owner set (see [`crate::settings`]).
    #[serde(default)]
    pub settings: Settings,
    /// Its backups, when on (WAL archived, backups on a schedule): where they stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<devdb_shared::api::BackupStatus>,
    /// Made from another database's backups at a moment, instead of the project's snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<RestoreFrom>,
    /// A restore in place asked for (with [`Want::Reset`]) and not done yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restoring: Option<InPlaceRestore>,
    /// The moment just before its last restore in place (RFC 3339): restoring to it undoes
    /// that restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_restore: Option<String>,
}

/// A restore in place under way: to a moment, and, once kept, the moment just before it (RFC
/// 3339 both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InPlaceRestore {
    pub to: String,
    /// Set once its sessions ended and its WAL until then is archived (after a backup): a
    /// controller restarted mid-restore goes on from here rather than keep a moment already
    /// half restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
}
/// Where a database restored from another's backups comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreFrom {
    /// The database whose backups it is made from (it keeps running), and its id: a database
    /// deleted and created again under the name (perhaps by another owner) is not it.
    pub database: Name,
    #[serde(default)]
    pub id: String,
    /// The moment, RFC 3339.
    pub at: String,
}

/// A database's PostgreSQL parameters: those asked for, and those its instance runs with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub wanted: std::collections::BTreeMap<String, String>,
    pub applied: std::collections::BTreeMap<String, String>,
    /// Whether its instance archives WAL (it did when it last started or took its settings);
    /// `None` in records written before this was kept: as its backups say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archiving: Option<bool>,
}

/// What a database's instance is configured with when it starts or takes its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Configured {
    pub settings: std::collections::BTreeMap<String, String>,
    /// WAL archiving: on while its backups are.
    pub archiving: bool,
}

impl DatabaseRecord {
    /// What its instance is configured with when it starts or takes its settings now.
    pub fn configured(&self) -> Configured {
        Configured { settings: self.settings.wanted.clone(), archiving: self.backup.is_some() }
    }

    /// Whether its backups were turned on or off since its instance last started or took its
    /// settings: it archives otherwise than they say until it restarts.
    pub fn archiving_changed(&self) -> bool {
        self.settings.archiving.is_some_and(|archiving| archiving != self.backup.is_some())
    }
}

/// A database's stops, activity and end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    pub stop_reason: Option<StopReason>,
    pub stopped_at: Option<String>,
    /// The last time a session was open on it (proxy reports), or it was started.
    pub last_active_at: Option<String>,
    /// When the controller deletes it (RFC 3339), unless protected.
    pub expires_at: Option<String>,
    /// Exempt from idle stop and expiry.
    pub protected: bool,
    /// Its own idle period in seconds (0: never), over the project's.
    pub idle_stop_after_secs: Option<u64>,
}

/// What the reconciler works on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    Project(Name),
    Database(Name),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::project::clone_refusal;

    #[test]
    fn with_require_rules_the_columns_a_restore_could_not_list_still_refuse_clones() {
        let mut project: ProjectRecord = serde_json::from_value(serde_json::json!({
            "id": "prj-1", "name": "shop", "owner": "kate", "db_version": "16", "backup_location": "s3://d/x",
            "status": "ready", "error": null, "progress": null, "wanted_generation": 1, "username": "app",
            "password": "pw", "database": "shop", "created_at": "now",
            "masking": { "rules": [{ "table": "customers", "column": "email", "strategy": "email" }], "requireRules": true },
            "snapshot": { "generation": 1, "created_at": "now", "size_bytes": 1, "unlisted_findings": 70,
                          "masked_with": [{ "table": "customers", "column": "email", "strategy": "email" }] },
        }))
        .expect("a record");
        // Found, not listed, but all covered by the restore's rules: nothing exposed.
        assert!(project.unmasked_columns().is_empty());
        assert_eq!(clone_refusal(&project), None);
        let snapshot = project.snapshot.as_mut().expect("snapshot");
        snapshot.unlisted_unmasked = 3;
        assert_eq!(project.unmasked_columns(), ["3 more columns the restore could not list"]);
        assert!(clone_refusal(&project).is_some_and(|r| r.to_string().contains("3 more columns")));
        project.masking.require_rules = false;
        assert!(project.unmasked_columns().is_empty(), "only a requirement refuses");
        assert_eq!(clone_refusal(&project), None);
    }
}
