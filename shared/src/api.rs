//! The controller's REST API types (JSON, camelCase), used by the server, the CLI and the proxy
//! alike.

use serde::{Deserialize, Serialize};

use crate::names::Name;

/// The only database engine so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DbType {
    #[default]
    Postgres,
}

/// `POST /v1/projects`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateProject {
    pub name: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub db_type: DbType,
    /// PostgreSQL major version; defaults to the newest available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_version: Option<String>,
    /// `https://…`, `http://…`, `file://…` (local mode) or `s3://…` (Kubernetes). Without one
    /// the project's databases start empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_credentials: Option<CredentialsRequest>,
    /// Its databases stop after this long without a session (humantime; `"0s"`: never);
    /// default: the controller's (30 minutes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after: Option<String>,
    /// How long its databases live unless created with a `ttl` (humantime); default: for ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<String>,
    /// The backups of its new databases created without `backup` of their own (with this
    /// default, `protected` no longer turns them on by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRequest>,
}

/// The user and database a project's data is restored into (and every clone gets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRequest {
    pub username: String,
    pub database: String,
}

/// Where a project's restore stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProjectStatus {
    Pending,
    Restoring,
    Ready,
    Failed,
}

/// Bytes of the dump processed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    pub bytes_done: u64,
    /// Absent when the source does not say (no Content-Length).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
}

/// The restored data every new database is cloned from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Which restore of the project's source it is (1 the first; each refresh a newer one).
    pub generation: u64,
    pub created_at: String,
    pub size_bytes: u64,
    /// With masking `verify`: how many sampled original values were looked for in the
    /// snapshot's files, and not found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masking_verified: Option<u64>,
}

/// A snapshot generation a project keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct SnapshotGeneration {
    pub generation: u64,
    pub created_at: String,
    pub size_bytes: u64,
}

/// `POST /v1/projects/{name}/rollback`: make a kept snapshot generation the current one
/// (without `generation`: the newest older than the current).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
}

/// A project: a data source and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Project {
    pub id: String,
    pub name: Name,
    pub owner: String,
    pub db_type: DbType,
    pub db_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_location: Option<String>,
    pub status: ProjectStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Snapshot>,
    /// Every snapshot generation it keeps, newest first, the current `snapshot` among them: what
    /// `POST /v1/projects/{name}/rollback` can make current.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotGeneration>,
    pub default_credentials: CredentialsRequest,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_ttl: Option<String>,
    /// Masking rules applied to its snapshot (its key is never shown).
    #[serde(default, skip_serializing_if = "Masking::is_empty")]
    pub masking: Masking,
    /// The backups of its new databases created without `backup` of their own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRequest>,
}

/// `POST /v1/databases`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct CreateDatabase {
    pub name: Name,
    pub project: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// How long it lives (humantime, e.g. `"72h"`); default: the project's `defaultTtl`, else
    /// for ever. Extended with `POST /v1/databases/{name}/extend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// Exempt from idle stop and expiry.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// Stopped after this long without a session (humantime; `"0s"`: never); default: the
    /// project's `idleStopAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after: Option<String>,
    /// Archive its WAL and back it up on a schedule, so it can be restored to a moment
    /// (pgBackRest). Default: its project's `backup`, else on for `protected` databases and off
    /// for throwaway clones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRequest>,
    /// Made from this database's backups (one of the caller's, with backups on, of the same
    /// project) as it was at `at`, instead of from the project's snapshot; the source keeps
    /// running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_database: Option<Name>,
    /// The moment (RFC 3339) `fromDatabase` is restored to: within its restorable window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

/// Backups asked for: at creation, by `PATCH`, or as a project's default for its new databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRequest {
    pub enabled: bool,
    /// How often it is backed up, from its last backup: `"hourly"`, `"daily"` (the default) or
    /// `"weekly"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long its full backups are kept, in whole days (`"7d"`); default: the two newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
}

/// A database's backups, when on: its last backup and the window it can be restored to
/// (RFC 3339), as of its last backup.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// Always true where shown (a database without backups shows none).
    pub enabled: bool,
    /// How often it is backed up: `"hourly"`, `"daily"` or `"weekly"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long its full backups are kept (`"7d"`); absent: the two newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restorable_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restorable_to: Option<String>,
    /// When its instance last archived a WAL segment (the moments until then are in the
    /// repository without anything more from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_archived_at: Option<String>,
    /// How long finished WAL segments have been waiting to be archived: 0 when none waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_lag_seconds: Option<u64>,
    /// Failed attempts to archive a segment since its instance started (each is retried).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub archive_failures: u64,
    /// Since when archiving has been failing, while it does (its WAL waits in `pg_wal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_failing_since: Option<String>,
    /// What its backups of its current clone take in the repository (compressed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_bytes: Option<u64>,
    /// When every file of its repository was last read back and found whole (`pgbackrest
    /// verify`, weekly after a backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_at: Option<String>,
    /// What the last check found damaged, until a check finds nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_error: Option<String>,
    /// Why its last backup failed (it is tried again), that its repository holds damaged files,
    /// or that archiving fails, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// The moment just before its last restore in place, which was kept: `POST
    /// /v1/databases/{name}/restore` with `{ "undo": true }` brings it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_restore: Option<String>,
}

/// `POST /v1/databases/{name}/restore`: the database, in place, as it was at a moment of its
/// restorable window (`to`, RFC 3339), or as it was just before its last such restore (`undo`).
/// Everything written since is replaced; the state before the restore is kept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreDatabase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undo: bool,
}

/// `POST /v1/databases/{name}/extend`: a new time to live, from now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExtendDatabase {
    /// Humantime, e.g. `"72h"`.
    pub ttl: String,
}

/// `PATCH /v1/databases/{name}`: what may change after creation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchDatabase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protected: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after: Option<String>,
    /// PostgreSQL parameters to set (`null`: back to the default); see the allow-list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<std::collections::BTreeMap<String, Option<String>>>,
    /// Its backups turned on or off, or their schedule or retention changed (those not given
    /// are kept). Turning them on or off restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRequest>,
}

/// Why a database is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// Someone stopped it (`devdb db stop`, `devdb down`).
    Manual,
    /// No session for its idle period.
    Idle,
}

/// Where a database instance stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DatabaseStatus {
    Creating,
    Running,
    /// It was running and stopped unexpectedly: the controller is starting it again.
    Recovering,
    /// Its instance is stopped (data and credentials kept); a connection or `start` wakes it.
    Stopped,
    /// Being started again after a stop.
    Starting,
    Error,
    Deleting,
}

/// A database instance: a clone of its project's snapshot, with its own credentials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Database {
    pub name: Name,
    pub project: Name,
    pub owner: String,
    pub status: DatabaseStatus,
    /// `<name>.<domain>`: what clients connect to (through the proxy).
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub database: String,
    /// `postgresql://user:password@host:port/database?sslmode=require`.
    pub uri: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When a session last was open on it (as the proxies report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// When the controller deletes it (unless protected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub protected: bool,
    /// Stopped after this long without a session (humantime); absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_stop_after: Option<String>,
    /// PostgreSQL parameters its owner set (kept across reset).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Its backups; absent: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
}

/// A project's masking: how its snapshot's personal data is replaced before any clone sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Masking {
    pub rules: Vec<MaskRule>,
    /// Refuse clones while a column the scan found personal has no rule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_rules: bool,
    /// After masking, look for a sample of the original values in every file of the snapshot
    /// (a restore that finds one fails).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
    /// Which of the project's keys masks it: bumped by a key rotation (`POST
    /// /v1/projects/{name}/masking/rotate-key`), never set by a client. The key itself is never
    /// shown.
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub key_version: u32,
}

/// How one column (or one value inside a JSON column) is masked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct MaskRule {
    /// `table` or `schema.table` (default schema `public`).
    pub table: String,
    pub column: String,
    /// In a `json`/`jsonb` column: the keys leading to the value masked (`["contact", "email"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_path: Vec<String>,
    pub strategy: MaskStrategy,
    /// `constant`: the value written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `dateShift`: the most days a value moves either way (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
}

/// For `skip_serializing_if`: a count of zero is left out.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// [`is_zero`] for a `u32`.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
pub fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

impl MaskRule {
    /// A rule masking a whole column.
    pub fn new(table: impl Into<String>, column: impl Into<String>, strategy: MaskStrategy) -> Self {
        Self { table: table.into(), column: column.into(), json_path: Vec::new(), strategy, value: None, days: None }
    }

    /// Its table as (schema, table), `public` by default; `None` unless it is named as `table`
    /// or `schema.table`.
    pub fn schema_table(&self) -> Option<(&str, &str)> {
        let (schema, table) = self.table.split_once('.').unwrap_or(("public", &self.table));
        (!schema.is_empty() && !table.is_empty() && !table.contains('.')).then_some((schema, table))
    }

    /// The same rule for the value at `path` inside the (JSON) column.
    #[must_use]
    pub fn at(mut self, path: Vec<String>) -> Self {
        self.json_path = path;
        self
    }
}

impl Masking {
    /// No rules, no requirement.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && !self.require_rules
    }

    /// Whether a rule masks what `finding` found (`table` alone means `public.table`; a rule
    /// on a whole JSON column covers every path in it).
    pub fn covers(&self, finding: &PiiFinding) -> bool {
        let qualified = |t: &str| if t.contains('.') { t.to_string() } else { format!("public.{t}") };
        self.rules.iter().any(|r| {
            qualified(&r.table) == qualified(&finding.table)
                && r.column == finding.column
                && (r.json_path.is_empty() || r.json_path == finding.json_path)
        })
    }

    /// Refuses rules that cannot be applied, naming the first (by its position).
    ///
    /// # Errors
    /// The reason, for the user.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let fail = |reason: &str| Err(format!("rule {index} ({}.{}): {reason}", rule.table, rule.column));
            let Some((schema, table)) = rule.schema_table() else {
                return fail("name the table as table or schema.table");
            };
            if rule.column.is_empty() {
                return fail("name the column");
            }
            if rule.strategy == MaskStrategy::Constant && rule.value.is_none() {
                return fail("the constant strategy needs a value");
            }
            if rule.strategy == MaskStrategy::DateShift && !(1..=3650).contains(&rule.days.unwrap_or(30)) {
                return fail("dateShift days must be 1 to 3650");
            }
            if !seen.insert((schema, table, rule.column.as_str(), rule.json_path.clone())) {
                return fail("this column is masked twice");
            }
        }
        Ok(())
    }
}

/// A column of a project's data that looks personal, found by the scan at its last restore
/// (before masking), with a rule that would mask it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PiiFinding {
    /// `schema.table`.
    pub table: String,
    pub column: String,
    /// Inside a JSON column: where.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub json_path: Vec<String>,
    /// `email`, `phone`, `ip`, `card`, `national id`, `name` or `address`.
    pub kind: String,
    /// Why: by the column's name, or how many of the values sampled matched.
    pub evidence: String,
    pub suggested: MaskRule,
    /// Whether a rule of the project covers it.
    #[serde(default)]
    pub covered: bool,
}

/// A masking strategy. Every keyed one is deterministic under the project's key: equal inputs
/// give equal outputs (joins and foreign keys still match), and without the key an output
/// cannot be traced back by trying a dictionary of inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum MaskStrategy {
    /// `user_<16 hex>@example.com`: valid, and distinct inputs stay distinct.
    Email,
    /// A first and last name from a fixed list.
    Name,
    /// `+1 555 0xx xxxx`.
    Phone,
    /// A house number and street from a fixed list.
    Address,
    /// The keyed hash in hex (64 characters).
    Hash,
    Null,
    /// The rule's `value`.
    Constant,
    /// Letters become `x`, digits `0`: the length and shape stay.
    Redact,
    /// Moved by up to `days` days, the same for the same row.
    DateShift,
    /// Reviewed, and left as it is.
    Keep,
}

/// What a proxy replica reports (`POST /v1/activity`, admin token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ActivityReport {
    /// Which replica (its pod name or address): a later report replaces its earlier one.
    pub replica: String,
    /// Databases with at least one session open on this replica now.
    #[serde(default)]
    pub open: Vec<Name>,
    /// Databases that had a session (open, or opened and closed) since the last report.
    #[serde(default)]
    pub active: Vec<Name>,
}

/// Every API error: `{ "error": { "code", "message" } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A stable machine-readable `code` and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_project_takes_the_contract_fields_with_defaults() {
        let body = r#"{"name":"shop","backupLocation":"https://x/shop.dump"}"#;
        let req: CreateProject = serde_json::from_str(body).expect("parses");
        assert_eq!(req.db_type, DbType::Postgres);
        assert_eq!(req.owner, None);
        let full = r#"{"name":"shop","owner":"kate","dbType":"postgres","dbVersion":"15","backupLocation":"file:///d",
                      "defaultCredentials":{"username":"app","database":"shop"}}"#;
        let req: CreateProject = serde_json::from_str(full).expect("parses");
        assert_eq!(req.default_credentials.map(|c| c.database), Some("shop".into()));
        assert!(serde_json::from_str::<CreateProject>(r#"{"name":"Shop","backupLocation":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<CreateProject>(r#"{"name":"s","dbType":"mysql","backupLocation":"x"}"#).is_err()
        );
    }

    #[test]
    fn statuses_serialize_lowercase() {
        assert_eq!(serde_json::to_string(&DatabaseStatus::Creating).expect("json"), "\"creating\"");
        assert_eq!(serde_json::to_string(&ProjectStatus::Restoring).expect("json"), "\"restoring\"");
    }
}
