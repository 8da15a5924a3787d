//! Quotas per owner, set by the admin in a file (`--quotas-file`): how many databases an owner
//! may have, how many may run at once, and how much disk they may take. Enforced when a
//! database is created and when one is started, woken or reset (a reset runs a stopped one), with
//! a 403 naming the quota and the use; `GET /v1/usage` shows each owner's use against its quota.
//!
//! ```json
//! { "default": { "databases": 10, "running": 5, "disk": "50GiB" },
//!   "owners": { "kate": { "databases": 20 } } }
//! ```
//! An owner's entry overrides the default field by field; a missing field is no limit.

use std::collections::BTreeMap;
use std::path::Path;

use devdb_shared::api::DatabaseStatus;
use devdb_shared::reports::{Limits, Usage};
use serde::Deserialize;

use crate::model::{DatabaseRecord, ProjectRecord, Want};

/// The quotas file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Quotas {
    #[serde(default)]
    pub default: Limits,
    #[serde(default)]
    pub owners: BTreeMap<String, Limits>,
}

/// Why the quotas file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum QuotasError {
    #[error("cannot read the quotas file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the quotas file {path} is not valid: {source}")]
    Parse { path: String, source: serde_json::Error },
}

/// What a request would add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adding {
    /// A new database (running, with `disk` bytes).
    Database { disk: u64 },
    /// One more running (a start or a wake).
    Running,
}

impl Quotas {
    /// Reads the quotas file.
    ///
    /// # Errors
    /// [`QuotasError`] when it cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, QuotasError> {
        let text =
            std::fs::read(path).map_err(|source| QuotasError::Read { path: path.display().to_string(), source })?;
        serde_json::from_slice(&text).map_err(|source| QuotasError::Parse { path: path.display().to_string(), source })
    }

    /// `owner`'s limits: its own fields over the default's.
    pub fn limits(&self, owner: &str) -> Limits {
        let own = self.owners.get(owner).copied().unwrap_or_default();
        Limits {
            databases: own.databases.or(self.default.databases),
            running: own.running.or(self.default.running),
            disk: own.disk.or(self.default.disk),
        }
    }

    /// `owner`'s use, from every database and project.
    pub fn usage(&self, owner: &str, databases: &[DatabaseRecord], projects: &[ProjectRecord]) -> Usage {
        let own: Vec<&DatabaseRecord> =
            databases.iter().filter(|d| d.owner == owner && d.want != Want::Delete).collect();
        let size = |d: &DatabaseRecord| {
            projects.iter().find(|p| p.name == d.project).and_then(|p| p.snapshot.as_ref()).map_or(0, |s| s.size_bytes)
        };
        Usage {
            owner: owner.to_string(),
            databases: own.len() as u64,
            running: own.iter().filter(|d| counts_as_running(d)).count() as u64,
            disk: own.iter().map(|d| size(d)).sum(),
            quota: self.limits(owner),
        }
    }

    /// Checks that `usage` has room for `adding`.
    ///
    /// # Errors
    /// The message of a 403: the quota, the use and the limit.
    pub fn check(usage: &Usage, adding: Adding) -> Result<(), String> {
        let over = |what: &str, used: u64, limit: Option<u64>, more: u64, show: &dyn Fn(u64) -> String| match limit {
            Some(limit) if used + more > limit => Err(format!(
                "quota exceeded: {what}: {} has {} of {}{}",
                usage.owner,
                show(used),
                show(limit),
                if what == "disk" { format!(" (this needs {})", show(more)) } else { String::new() },
            )),
            _ => Ok(()),
        };
        let count = |n: u64| n.to_string();
        let size = |n: u64| devdb_shared::size::human(n);
        match adding {
            Adding::Database { disk } => {
                over("databases", usage.databases, usage.quota.databases, 1, &count)?;
                over("running databases", usage.running, usage.quota.running, 1, &count)?;
                over("disk", usage.disk, usage.quota.disk, disk, &size)
            }
            Adding::Running => over("running databases", usage.running, usage.quota.running, 1, &count),
        }
    }
}

/// Whether a database takes a running place: it runs, or is being made or started.
pub fn counts_as_running(d: &DatabaseRecord) -> bool {
    d.want != Want::Stop
        && matches!(
            d.status,
            DatabaseStatus::Running | DatabaseStatus::Creating | DatabaseStatus::Starting | DatabaseStatus::Recovering
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owners_limits_override_the_default_field_by_field() {
        let quotas: Quotas = serde_json::from_str(
            r#"{"default": {"databases": 10, "running": 5, "disk": "50GiB"}, "owners": {"kate": {"databases": 20}}}"#,
        )
        .expect("valid");
        assert_eq!(quotas.limits("kate"), Limits { databases: Some(20), running: Some(5), disk: Some(50 << 30) });
        assert_eq!(quotas.limits("bob").databases, Some(10));
        assert_eq!(Quotas::default().limits("anyone"), Limits::default(), "no file: no limits");
        let typo = serde_json::from_str::<Quotas>(r#"{"default": {"database": 1}}"#).expect_err("refused");
        assert!(typo.to_string().contains("unknown field"), "{typo}");
    }

    #[test]
    fn each_quota_refuses_with_the_use_and_the_limit() {
        let usage = |databases, running, disk| Usage {
            owner: "kate".into(),
            databases,
            running,
            disk,
            quota: Limits { databases: Some(3), running: Some(2), disk: Some(10 << 30) },
        };
        assert_eq!(Quotas::check(&usage(2, 1, 1 << 30), Adding::Database { disk: 1 << 30 }), Ok(()));
        let refused = |u, a| Quotas::check(&u, a).expect_err("refused");
        assert_eq!(refused(usage(3, 1, 0), Adding::Database { disk: 0 }), "quota exceeded: databases: kate has 3 of 3");
        assert_eq!(refused(usage(1, 2, 0), Adding::Running), "quota exceeded: running databases: kate has 2 of 2");
        let disk = refused(usage(1, 0, 9 << 30), Adding::Database { disk: 2 << 30 });
        assert!(disk.starts_with("quota exceeded: disk: kate has 9.0 GiB of 10.0 GiB (this needs 2.0 GiB)"), "{disk}");
    }
}
