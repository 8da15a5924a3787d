//! What pgBackRest's `info --output=json` says of a stanza (its backups and the WAL archived),
//! and the window it can be restored to.
//!
//! A stanza can be restored to any moment from the end of its oldest backup (the first
//! consistent point) to the last WAL segment archived. pgBackRest records when each backup
//! ended but not the time of the last archived segment's last commit: that is PostgreSQL's
//! `pg_stat_archiver.last_archived_time`, given by the caller, and a restore to a later moment
//! replays what was archived and stops there.

use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// A kind of pgBackRest backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    /// Every file.
    Full,
    /// What changed since the last full backup.
    Diff,
    /// What changed since the last backup of any kind.
    Incr,
}

impl BackupKind {
    /// pgBackRest's name for it (`--type`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

/// How old a stanza's newest full backup may be before the next backup is a full one.
pub const FULL_EVERY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One backup of a stanza.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    pub label: String,
    pub kind: BackupKind,
    pub started_at: SystemTime,
    /// From here on, the stanza can be restored (with the WAL archived since).
    pub stopped_at: SystemTime,
    /// The data directory's size, and what the backup takes in the repository (compressed,
    /// only what changed for diff and incr).
    pub size_bytes: u64,
    pub repository_bytes: u64,
}

/// What a stanza holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StanzaInfo {
    pub name: String,
    /// pgBackRest's status: 0 is ok; the message says what is wrong otherwise (no backup yet,
    /// the repository unreadable, a wrong key).
    pub status_code: i64,
    pub status_message: String,
    /// Oldest first.
    pub backups: Vec<Backup>,
    /// The first and last WAL segments archived, if any.
    pub wal_min: Option<String>,
    pub wal_max: Option<String>,
}

/// The moments a stanza can be restored to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub from: SystemTime,
    pub to: SystemTime,
}

/// A moment outside the window, said with the window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{asked} is outside the restorable window, {from} to {to}")]
pub struct OutsideWindow {
    pub asked: String,
    pub from: String,
    pub to: String,
}

impl Window {
    /// Whether `at` can be restored to.
    ///
    /// # Errors
    /// [`OutsideWindow`], naming the window.
    pub fn check(&self, at: SystemTime) -> Result<(), OutsideWindow> {
        if (self.from..=self.to).contains(&at) {
            return Ok(());
        }
        let show = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        Err(OutsideWindow { asked: show(at), from: show(self.from), to: show(self.to) })
    }
}

impl StanzaInfo {
    /// Parses `info --output=json` for one stanza.
    ///
    /// # Errors
    /// When the output is not pgBackRest's, or names no stanza.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        let mut stanzas: Vec<raw::Stanza> = serde_json::from_str(json)?;
        let Some(stanza) = stanzas.pop() else {
            return Err(serde::de::Error::custom("pgbackrest info listed no stanza"));
        };
        let at = |secs: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        let mut backups: Vec<Backup> = stanza
            .backup
            .into_iter()
            .filter(|b| !b.error.unwrap_or(false))
            .map(|b| Backup {
                label: b.label,
                kind: b.kind,
                started_at: at(b.timestamp.start),
                stopped_at: at(b.timestamp.stop),
                size_bytes: b.info.size,
                repository_bytes: b.info.repository.size,
            })
            .collect();
        backups.sort_by_key(|b| b.stopped_at);
        let archive = stanza.archive.into_iter().next();
        Ok(Self {
            name: stanza.name,
            status_code: stanza.status.code,
            status_message: stanza.status.message,
            backups,
            wal_min: archive.as_ref().and_then(|a| a.min.clone()),
            wal_max: archive.and_then(|a| a.max),
        })
    }

    /// The window it can be restored to, given when its instance last archived a segment;
    /// `None` before its first backup. It opens a second after the oldest backup's recorded end:
    /// pgBackRest records whole seconds and restores only to moments after a backup's end.
    pub fn window(&self, last_archived: Option<SystemTime>) -> Option<Window> {
        let from = self.backups.first()?.stopped_at + Duration::from_secs(1);
        let newest_backup = self.backups.last().map_or(from, |b| b.stopped_at + Duration::from_secs(1));
        Some(Window { from, to: last_archived.map_or(newest_backup, |t| t.max(newest_backup)) })
    }

    /// The newest backup, if any.
    pub fn last_backup(&self) -> Option<&Backup> {
        self.backups.last()
    }

    /// What the next backup at `now` is: a full one when there is none yet or the newest full one
    /// ended [`FULL_EVERY`] ago or more (so a retention, counted in full backups or in days, has
    /// whole ones to expire), else an incremental one.
    pub fn next_kind(&self, now: SystemTime) -> BackupKind {
        let last_full = self.backups.iter().rev().find(|b| b.kind == BackupKind::Full);
        match last_full {
            Some(full) if now.duration_since(full.stopped_at).unwrap_or_default() < FULL_EVERY => BackupKind::Incr,
            _ => BackupKind::Full,
        }
    }

    /// What its backups take in the repository (compressed), all of them.
    pub fn repository_bytes(&self) -> u64 {
        self.backups.iter().map(|b| b.repository_bytes).sum()
    }
}

/// `info --output=json` as pgBackRest writes it (the fields read).
mod raw {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Stanza {
        pub name: String,
        pub status: Status,
        #[serde(default)]
        pub backup: Vec<Backup>,
        #[serde(default)]
        pub archive: Vec<Archive>,
    }

    #[derive(Deserialize)]
    pub struct Status {
        pub code: i64,
        pub message: String,
    }

    #[derive(Deserialize)]
    pub struct Backup {
        pub label: String,
        #[serde(rename = "type")]
        pub kind: super::BackupKind,
        pub timestamp: Timestamp,
        pub info: Info,
        pub error: Option<bool>,
    }

    #[derive(Deserialize)]
    pub struct Timestamp {
        pub start: u64,
        pub stop: u64,
    }

    #[derive(Deserialize)]
    pub struct Info {
        pub size: u64,
        pub repository: Repository,
    }

    #[derive(Deserialize)]
    pub struct Repository {
        pub size: u64,
    }

    #[derive(Deserialize)]
    pub struct Archive {
        pub min: Option<String>,
        pub max: Option<String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What pgBackRest 2.45 printed for a stanza with one full backup (trimmed of fields not
    /// read), and an incremental one added.
    const INFO: &str = r#"[{"archive":[{"database":{"id":1,"repo-key":1},"id":"15-1",
        "max":"000000010000000000000005","min":"000000010000000000000001"}],
      "backup":[
        {"archive":{"start":"000000010000000000000004","stop":"000000010000000000000004"},
         "error":false,"info":{"delta":8192,"repository":{"delta":1024,"size":1024},"size":23213858},
         "label":"20261207-161528F_20261207-161700I","timestamp":{"start":1796660220,"stop":1796660222},"type":"incr"},
        {"archive":{"start":"000000010000000000000002","stop":"000000010000000000000002"},
         "error":false,"info":{"delta":23213858,"repository":{"delta":2849280,"size":2849280},"size":23213858},
         "label":"20261207-161528F","timestamp":{"start":1796660128,"stop":1796660131},"type":"full"}],
      "cipher":"aes-256-cbc","name":"db-kate-0123",
      "status":{"code":0,"lock":{"backup":{"held":false}},"message":"ok"}}]"#;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn backups_oldest_first_and_the_archived_wal() {
        let info = StanzaInfo::parse(INFO).expect("parsed");
        assert_eq!((info.name.as_str(), info.status_code), ("db-kate-0123", 0));
        let kinds: Vec<_> = info.backups.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, [BackupKind::Full, BackupKind::Incr]);
        assert_eq!(info.backups[0].repository_bytes, 2_849_280);
        assert_eq!(info.wal_max.as_deref(), Some("000000010000000000000005"));
        assert_eq!(info.last_backup().map(|b| b.label.as_str()), Some("20261207-161528F_20261207-161700I"));
    }

    #[test]
    fn the_window_runs_from_the_first_backup_to_the_last_archived_segment() {
        let info = StanzaInfo::parse(INFO).expect("parsed");
        let window = info.window(Some(at(1_796_660_400))).expect("a window");
        assert_eq!(window, Window { from: at(1_796_660_132), to: at(1_796_660_400) });
        window.check(at(1_796_660_300)).expect("inside");
        let refused = window.check(at(1_796_660_100)).expect_err("before the first backup");
        assert_eq!(
            refused.to_string(),
            "2026-12-07T16:15:00Z is outside the restorable window, 2026-12-07T16:15:32Z to 2026-12-07T16:20:00Z"
        );
        assert!(window.check(at(1_796_660_401)).is_err(), "after the last archived segment");
        // Nothing archived since: up to the newest backup's end.
        assert_eq!(info.window(None).map(|w| w.to), Some(at(1_796_660_223)));
    }

    #[test]
    fn a_full_backup_a_week_and_incremental_ones_between() {
        let info = StanzaInfo::parse(INFO).expect("parsed");
        let full_ended = at(1_796_660_131);
        assert_eq!(info.next_kind(full_ended + Duration::from_secs(24 * 3600)), BackupKind::Incr);
        assert_eq!(info.next_kind(full_ended + FULL_EVERY), BackupKind::Full);
        let empty = StanzaInfo { backups: Vec::new(), ..info };
        assert_eq!(empty.next_kind(full_ended), BackupKind::Full, "the first one");
    }

    #[test]
    fn no_backup_no_window() {
        let json = r#"[{"name":"db-new","status":{"code":2,"message":"no valid backups"},"backup":[],"archive":[]}]"#;
        let info = StanzaInfo::parse(json).expect("parsed");
        assert_eq!((info.status_code, info.window(Some(at(1))).is_none()), (2, true));
        assert!(StanzaInfo::parse("[]").is_err());
        assert!(StanzaInfo::parse("not json").is_err());
    }
}
