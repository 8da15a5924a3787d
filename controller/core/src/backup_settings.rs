//! A database's backup settings: whether it is backed up, how often (`schedule`) and how long
//! its full backups are kept (`retention`). Asked for at creation, by `PATCH`, or by its
//! project's default; checked here, and kept in the database's `backup` (which the API shows).
//!
//! Precedence for a new database: the request's `backup`, else its project's default, else on
//! for a `protected` one (where the runtime backs up). The schedule and the retention are the
//! request's, else the project's, else daily and the two newest full backups.

use std::time::Duration;

use devdb_shared::api::{BackupRequest, BackupStatus};

/// How often a database is backed up, counted from its last backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    Hourly,
    #[default]
    Daily,
    Weekly,
}

impl Schedule {
    const ALL: [Self; 3] = [Self::Hourly, Self::Daily, Self::Weekly];

    /// The schedule named `text` (any case).
    ///
    /// # Errors
    /// [`BackupSettingsError::Schedule`] for anything else, cron expressions included.
    pub fn parse(text: &str) -> Result<Self, BackupSettingsError> {
        let text = text.trim();
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text))
            .ok_or_else(|| BackupSettingsError::Schedule(text.to_string()))
    }

    /// The schedule `backup` keeps (daily for one kept before schedules were).
    pub fn of(backup: &BackupStatus) -> Self {
        backup.schedule.as_deref().and_then(|s| Self::parse(s).ok()).unwrap_or_default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hourly => "hourly",
            Self::Daily => "daily",
            Self::Weekly => "weekly",
        }
    }

    /// How long after a backup the next is due.
    pub fn every(self) -> Duration {
        const HOUR: u64 = 3600;
        Duration::from_secs(match self {
            Self::Hourly => HOUR,
            Self::Daily => 24 * HOUR,
            Self::Weekly => 7 * 24 * HOUR,
        })
    }
}

/// The most days a retention may be (pgBackRest's limit).
const MAX_DAYS: u64 = 9_999_999;

/// The days of a retention such as `"7d"` (whole days, at least one; any humantime duration
/// that is whole days, `"2weeks"` too).
///
/// # Errors
/// [`BackupSettingsError::Retention`] for anything else.
pub fn retention_days(text: &str) -> Result<u32, BackupSettingsError> {
    const DAY: u64 = 24 * 3600;
    let bad = || BackupSettingsError::Retention(text.to_string());
    let seconds = humantime::parse_duration(text.trim()).map_err(|_| bad())?.as_secs();
    if seconds == 0 || seconds % DAY != 0 || seconds / DAY > MAX_DAYS {
        return Err(bad());
    }
    u32::try_from(seconds / DAY).map_err(|_| bad())
}

/// The days `backup` keeps its full backups for; `None`: by count, the two newest.
pub fn kept_days(backup: &BackupStatus) -> Option<u32> {
    backup.retention.as_deref().and_then(|r| retention_days(r).ok())
}

/// Why backup settings are refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupSettingsError {
    #[error("backup.schedule {0:?} is not taken: use hourly, daily or weekly (cron expressions are not supported yet)")]
    Schedule(String),
    #[error("backup.retention takes whole days, at least one, like 7d or 30d, not {0:?}")]
    Retention(String),
    #[error("backup.schedule and backup.retention go with backups on (backup.enabled: true)")]
    SettingsWhileOff,
    #[error(
        "backups (backup.enabled) are off on this controller: it has no backup repository (--backup-repo s3://…; on Kubernetes the chart's backups.repository)"
    )]
    Unavailable,
}

/// `asked`, checked and written the way it is kept (`"hourly"`, `"7d"`).
///
/// # Errors
/// A schedule or retention not taken, or given with backups off.
pub fn checked(asked: &BackupRequest) -> Result<BackupRequest, BackupSettingsError> {
    if !asked.enabled && (asked.schedule.is_some() || asked.retention.is_some()) {
        return Err(BackupSettingsError::SettingsWhileOff);
    }
    Ok(BackupRequest {
        enabled: asked.enabled,
        schedule: asked.schedule.as_deref().map(Schedule::parse).transpose()?.map(|s| s.as_str().to_string()),
        retention: asked.retention.as_deref().map(retention_days).transpose()?.map(|days| format!("{days}d")),
    })
}

/// A project's default for its new databases, checked: on only where the runtime backs up
/// (`available`).
///
/// # Errors
/// As [`checked`]; [`BackupSettingsError::Unavailable`].
pub fn project_default(asked: &BackupRequest, available: bool) -> Result<BackupRequest, BackupSettingsError> {
    let default = checked(asked)?;
    if default.enabled && !available {
        return Err(BackupSettingsError::Unavailable);
    }
    Ok(default)
}

/// The backups a new database gets (see the module's precedence); `None`: off.
///
/// # Errors
/// As [`checked`]; [`BackupSettingsError::Unavailable`] when they would be on where the runtime
/// does not back up.
pub fn for_new_database(
    asked: Option<&BackupRequest>,
    project: Option<&BackupRequest>,
    protected: bool,
    available: bool,
) -> Result<Option<BackupStatus>, BackupSettingsError> {
    let asked = asked.map(checked).transpose()?;
    let enabled = match (&asked, project) {
        (Some(asked), _) => asked.enabled,
        (None, Some(project)) => project.enabled,
        (None, None) => protected && available,
    };
    if !enabled {
        return Ok(None);
    }
    if !available {
        return Err(BackupSettingsError::Unavailable);
    }
    Ok(Some(turned_on(asked.as_ref(), project)))
}

/// `current` as a `PATCH` with `asked` leaves it: turned on with the settings asked for (else the
/// project's, else the defaults) and nothing backed up yet; off; or still on, with the settings
/// asked for changed and the rest kept.
///
/// # Errors
/// As [`checked`]; [`BackupSettingsError::Unavailable`].
pub fn patched(
    current: Option<&BackupStatus>,
    asked: &BackupRequest,
    project: Option<&BackupRequest>,
    available: bool,
) -> Result<Option<BackupStatus>, BackupSettingsError> {
    let asked = checked(asked)?;
    if !asked.enabled {
        return Ok(None);
    }
    if !available {
        return Err(BackupSettingsError::Unavailable);
    }
    Ok(Some(match current {
        None => turned_on(Some(&asked), project),
        Some(current) => BackupStatus {
            schedule: asked.schedule.or_else(|| current.schedule.clone()),
            retention: asked.retention.or_else(|| current.retention.clone()),
            ..current.clone()
        },
    }))
}

/// Backups just turned on: the settings of the first of `asked` and `project` that has each,
/// else daily and the two newest full backups.
fn turned_on(asked: Option<&BackupRequest>, project: Option<&BackupRequest>) -> BackupStatus {
    let first =
        |of: fn(&BackupRequest) -> Option<&String>| asked.and_then(of).or_else(|| project.and_then(of)).cloned();
    BackupStatus {
        enabled: true,
        schedule: Some(first(|b| b.schedule.as_ref()).unwrap_or_else(|| Schedule::default().as_str().to_string())),
        retention: first(|b| b.retention.as_ref()),
        ..BackupStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(enabled: bool, schedule: Option<&str>, retention: Option<&str>) -> BackupRequest {
        BackupRequest { enabled, schedule: schedule.map(Into::into), retention: retention.map(Into::into) }
    }

    #[test]
    fn named_schedules_are_taken_and_cron_is_refused_saying_which_are() {
        assert_eq!(Schedule::parse("Hourly"), Ok(Schedule::Hourly));
        assert_eq!(Schedule::parse(" weekly "), Ok(Schedule::Weekly));
        assert_eq!(Schedule::Weekly.every(), Duration::from_secs(7 * 24 * 3600));
        let refused = Schedule::parse("0 3 * * *").expect_err("cron").to_string();
        assert!(refused.contains("use hourly, daily or weekly") && refused.contains("cron"), "{refused}");
        assert_eq!(Schedule::of(&BackupStatus::default()), Schedule::Daily, "kept before schedules were");
    }

    #[test]
    fn retention_is_whole_days() {
        assert_eq!(retention_days("7d"), Ok(7));
        assert_eq!(retention_days("2weeks"), Ok(14));
        for bad in ["0d", "36h", "7", "a week", "", "99999999d"] {
            assert_eq!(retention_days(bad), Err(BackupSettingsError::Retention(bad.into())), "{bad:?}");
        }
        let kept = BackupStatus { retention: Some("30d".into()), ..Default::default() };
        assert_eq!((kept_days(&kept), kept_days(&BackupStatus::default())), (Some(30), None));
    }

    #[test]
    fn a_request_is_checked_and_kept_in_one_spelling() {
        assert_eq!(
            checked(&request(true, Some("HOURLY"), Some("1week"))),
            Ok(request(true, Some("hourly"), Some("7d")))
        );
        assert_eq!(checked(&request(false, Some("daily"), None)), Err(BackupSettingsError::SettingsWhileOff));
        assert_eq!(project_default(&request(true, None, None), false), Err(BackupSettingsError::Unavailable));
        assert_eq!(project_default(&request(false, None, None), false), Ok(request(false, None, None)));
    }

    #[test]
    fn a_new_database_takes_its_request_then_its_project_then_protection() {
        let on = |schedule: &str, retention: Option<&str>| {
            Some(BackupStatus {
                enabled: true,
                schedule: Some(schedule.into()),
                retention: retention.map(Into::into),
                ..Default::default()
            })
        };
        let hourly_project = request(true, Some("hourly"), Some("7d"));
        let off_project = request(false, None, None);
        let cases = [
            (None, None, false, None),
            (None, None, true, on("daily", None)),
            (Some(request(false, None, None)), None, true, None),
            (None, Some(&off_project), true, None),
            (Some(request(true, None, None)), Some(&off_project), false, on("daily", None)),
            (None, Some(&hourly_project), false, on("hourly", Some("7d"))),
            (Some(request(true, Some("weekly"), None)), Some(&hourly_project), false, on("weekly", Some("7d"))),
        ];
        for (asked, project, protected, expected) in cases {
            let got = for_new_database(asked.as_ref(), project, protected, true);
            assert_eq!(got, Ok(expected), "{asked:?} {project:?} protected: {protected}");
        }
        assert_eq!(for_new_database(None, None, true, false), Ok(None), "protected, where nothing backs up");
        let asked = request(true, None, None);
        assert_eq!(for_new_database(Some(&asked), None, false, false), Err(BackupSettingsError::Unavailable));
    }

    #[test]
    fn a_patch_turns_them_on_fresh_changes_only_what_it_names_or_turns_them_off() {
        let project = request(true, Some("weekly"), None);
        let on = patched(None, &request(true, None, Some("14d")), Some(&project), true).expect("on").expect("some");
        assert_eq!((on.schedule.as_deref(), on.retention.as_deref()), (Some("weekly"), Some("14d")));
        let backed_up = BackupStatus { last_backup_at: Some("2026-12-07T10:00:00Z".into()), ..on };
        let changed = patched(Some(&backed_up), &request(true, Some("hourly"), None), None, true).expect("ok");
        assert_eq!(
            changed,
            Some(BackupStatus { schedule: Some("hourly".into()), ..backed_up.clone() }),
            "its retention and its history kept"
        );
        assert_eq!(patched(Some(&backed_up), &request(false, None, None), None, true), Ok(None));
        assert_eq!(patched(None, &request(false, None, None), None, false), Ok(None), "off is off anywhere");
        assert_eq!(patched(None, &request(true, None, None), None, false), Err(BackupSettingsError::Unavailable));
    }
}
