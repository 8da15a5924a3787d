//! Usage: a ledger of days (UTC), one store document each (`usage/2026-12-01`), recording per
//! database what the monitor saw that day: created, deleted, seconds running, the most
//! sessions at once and the largest size; and the reports over a period built from it, per
//! owner and project (JSON, CSV).
//!
//! The ledger is written by the monitor's ticks, so what happens between two ticks (a database
//! created and deleted within one interval) and while no controller leads is not counted; a
//! running interval counts at most twice the sampling interval.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use devdb_shared::api::DatabaseStatus;
use devdb_shared::reports::{UsageReport, UsageRow};
use serde::{Deserialize, Serialize};

use crate::model::DatabaseRecord;
use crate::store::{Store, StoreError};
use devdb_shared::metrics::Point;

/// How long days are kept.
pub const KEEP_DAYS: i64 = 400;

/// The longest period one report covers.
pub const MAX_REPORT_DAYS: i64 = 400;

const DAY: i64 = 86_400;

/// One database on one day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayEntry {
    pub name: String,
    pub project: String,
    pub owner: String,
    pub created: bool,
    pub deleted: bool,
    pub running_secs: u64,
    pub peak_connections: u32,
    pub peak_size_bytes: u64,
}

/// One day of the ledger: its databases by id.
pub type Day = BTreeMap<String, DayEntry>;

/// `2026-12-01` of a day number (days since the epoch).
pub fn date(day: i64) -> String {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(day.max(0) * DAY).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()[..10].to_string()
}

/// The day number of `2026-12-01` (or of an RFC 3339 time).
pub fn parse_date(text: &str) -> Option<i64> {
    let full = if text.len() == 10 { format!("{text}T00:00:00Z") } else { text.to_string() };
    let time = humantime::parse_rfc3339_weak(&full).ok()?;
    Some(crate::clock::unix(time).div_euclid(DAY))
}

fn key(day: i64) -> String {
    format!("usage/{}", date(day))
}

/// The ledger's writer (in the monitor): the day being written and what the last tick saw.
pub struct Ledger {
    /// A running interval counts at most this long (ticks missed: the controller was down).
    max_gap: i64,
    today: Option<(i64, Day)>,
    /// The databases of the last tick: id → entry (to name those deleted since).
    known: Option<HashMap<String, DayEntry>>,
    last_tick: Option<i64>,
}

impl Ledger {
    pub fn new(every: Duration) -> Self {
        Self {
            max_gap: i64::try_from(every.as_secs().max(1) * 2).unwrap_or(i64::MAX),
            today: None,
            known: None,
            last_tick: None,
        }
    }

    /// Records a tick at `at` (Unix seconds): `databases` now, `points` sampled by id. Returns
    /// the ids of databases deleted since the last tick.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub async fn record<S: Store>(
        &mut self,
        store: &S,
        at: i64,
        databases: &[DatabaseRecord],
        points: &HashMap<String, Point>,
    ) -> Result<Vec<String>, StoreError> {
        let day = at.div_euclid(DAY);
        if self.today.as_ref().is_none_or(|(d, _)| *d != day) {
            let doc = store.document(&key(day)).await?;
            let loaded: Day = doc.map(|d| serde_json::from_str(&d)).transpose()?.unwrap_or_default();
            if self.known.is_none() {
                // After a restart: the last day written says which databases existed.
                let last = match loaded.is_empty() {
                    true => {
                        store.document(&key(day - 1)).await?.map(|d| serde_json::from_str::<Day>(&d)).transpose()?
                    }
                    false => Some(loaded.clone()),
                };
                self.known = last.map(|d| d.into_iter().filter(|(_, e)| !e.deleted).collect());
            }
            self.today = Some((day, loaded));
            store.delete_document(&key(day - KEEP_DAYS)).await?;
        }
        let Some((_, entries)) = self.today.as_mut() else { return Ok(Vec::new()) };
        let elapsed = self.last_tick.map_or(0, |t| (at - t).clamp(0, self.max_gap));
        // Databases first seen now but created on an earlier day (just before midnight, or
        // while no controller ran): their creation goes to that day.
        let mut created_earlier = Vec::new();
        for database in databases {
            let entry = entries.entry(database.id.clone()).or_insert_with(|| DayEntry {
                name: database.name.to_string(),
                project: database.project.to_string(),
                owner: database.owner.clone(),
                ..DayEntry::default()
            });
            let created_day = parse_date(&database.created_at);
            let new = self.known.as_ref().is_none_or(|known| !known.contains_key(&database.id));
            match created_day {
                Some(created) if created == day => entry.created = true,
                Some(created) if new && created < day && day - created < KEEP_DAYS => {
                    created_earlier.push((created, database.id.clone(), entry.clone()));
                }
                _ => {}
            }
            if database.status == DatabaseStatus::Running {
                entry.running_secs += u64::try_from(elapsed).unwrap_or(0);
            }
            if let Some(point) = points.get(&database.id) {
                entry.peak_connections = entry.peak_connections.max(point.connections());
                entry.peak_size_bytes = entry.peak_size_bytes.max(point.size_bytes);
            }
        }
        let now: HashSet<&str> = databases.iter().map(|d| d.id.as_str()).collect();
        let mut gone = Vec::new();
        for (id, was) in self.known.take().unwrap_or_default() {
            if !now.contains(id.as_str()) {
                let fresh = DayEntry { name: was.name, project: was.project, owner: was.owner, ..DayEntry::default() };
                entries.entry(id.clone()).or_insert(fresh).deleted = true;
                gone.push(id);
            }
        }
        self.known = Some(databases.iter().filter_map(|d| Some((d.id.clone(), entries.get(&d.id)?.clone()))).collect());
        self.last_tick = Some(at);
        store.put_document(&key(day), &serde_json::to_string(entries)?).await?;
        for (created, id, entry) in created_earlier {
            let mut earlier: Day =
                store.document(&key(created)).await?.map(|d| serde_json::from_str(&d)).transpose()?.unwrap_or_default();
            let fresh =
                DayEntry { name: entry.name, project: entry.project, owner: entry.owner, ..DayEntry::default() };
            let recorded = earlier.entry(id).or_insert(fresh);
            if !recorded.created {
                recorded.created = true;
                store.put_document(&key(created), &serde_json::to_string(&earlier)?).await?;
            }
        }
        Ok(gone)
    }
}

/// Builds the report of days `from..=to` (day numbers), of `owner` only when given.
///
/// # Errors
/// When the store cannot be read or a day is corrupt.
pub async fn report<S: Store>(store: &S, from: i64, to: i64, owner: Option<&str>) -> Result<UsageReport, StoreError> {
    #[derive(Default)]
    struct Sum {
        created: HashSet<String>,
        deleted: HashSet<String>,
        running_secs: u64,
        sizes: HashMap<String, u64>,
        peak_connections: u32,
    }
    let mut sums: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for day in from..=to {
        let Some(doc) = store.document(&key(day)).await? else { continue };
        let entries: Day = serde_json::from_str(&doc)?;
        for (id, e) in entries.into_iter().filter(|(_, e)| owner.is_none_or(|o| e.owner == o)) {
            let sum = sums.entry((e.owner.clone(), e.project.clone())).or_default();
            if e.created {
                sum.created.insert(id.clone());
            }
            if e.deleted {
                sum.deleted.insert(id.clone());
            }
            sum.running_secs += e.running_secs;
            sum.peak_connections = sum.peak_connections.max(e.peak_connections);
            let size = sum.sizes.entry(id).or_default();
            *size = (*size).max(e.peak_size_bytes);
        }
    }
    let count = |set: &HashSet<String>| u32::try_from(set.len()).unwrap_or(u32::MAX);
    #[allow(clippy::cast_precision_loss)]
    let rows = sums
        .into_iter()
        .map(|((owner, project), s)| UsageRow {
            owner,
            project,
            databases_created: count(&s.created),
            databases_deleted: count(&s.deleted),
            running_hours: s.running_secs as f64 / 3600.0,
            peak_disk_bytes: s.sizes.values().sum(),
            peak_connections: s.peak_connections,
        })
        .collect();
    Ok(UsageReport { from: date(from), to: date(to), rows })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    #[test]
    fn dates_round_trip() {
        let day = parse_date("2026-12-01").expect("a date");
        assert_eq!(date(day), "2026-12-01");
        assert_eq!(parse_date("2026-12-01T23:59:59Z"), Some(day));
        assert_eq!(parse_date("yesterday"), None);
    }

    fn db(id: &str, name: &str, owner: &str, created_at: &str, status: DatabaseStatus) -> DatabaseRecord {
        DatabaseRecord {
            id: id.into(),
            name: devdb_shared::Name::new(name).expect("name"),
            project: devdb_shared::Name::new("shop").expect("name"),
            owner: owner.into(),
            status,
            want: crate::model::Want::Run,
            port: 1,
            password: String::new(),
            snapshot_generation: None,
            error: None,
            created_at: created_at.into(),
            lifecycle: crate::model::Lifecycle::default(),
            settings: crate::model::Settings::default(),
            backup: None,
            restore_from: None,
            restoring: None,
            before_restore: None,
        }
    }

    #[tokio::test]
    async fn the_ledger_counts_running_time_peaks_creations_and_deletions_across_days_and_restarts() {
        let store = MemoryStore::default();
        let day = parse_date("2026-12-01").expect("date");
        let t0 = day * DAY + 23 * 3600;
        let running = DatabaseStatus::Running;
        let kate = db("id-1", "kate-pg", "kate", "2026-12-01T22:00:00Z", running);
        let bob = db("id-2", "bob-pg", "bob", "2026-11-20T10:00:00Z", DatabaseStatus::Stopped);
        let point = |connections: u32, size: u64| Point { active: connections, size_bytes: size, ..Point::default() };
        let mut ledger = Ledger::new(Duration::from_secs(30));
        let both = [kate.clone(), bob.clone()];
        let mut points = HashMap::from([("id-1".to_string(), point(2, 100))]);
        assert!(ledger.record(&store, t0, &both, &points).await.expect("tick").is_empty());
        points.insert("id-1".into(), point(5, 300));
        ledger.record(&store, t0 + 30, &both, &points).await.expect("tick");
        // A gap of an hour counts as one interval at most (twice the sampling interval).
        ledger.record(&store, t0 + 3600 - 60, &both, &HashMap::new()).await.expect("tick");
        // Next day (after a restart): kate's database is gone.
        let mut restarted = Ledger::new(Duration::from_secs(30));
        let gone =
            restarted.record(&store, t0 + 3600 + 10, std::slice::from_ref(&bob), &HashMap::new()).await.expect("tick");
        assert_eq!(gone, vec!["id-1".to_string()]);

        let report = report(&store, day, day + 1, None).await.expect("report");
        let kate_row = report.owner_rows("kate").next().expect("kate");
        assert_eq!((kate_row.databases_created, kate_row.databases_deleted), (1, 1));
        assert!((kate_row.running_hours - 90.0 / 3600.0).abs() < 1e-9, "{}", kate_row.running_hours);
        assert_eq!((kate_row.peak_connections, kate_row.peak_disk_bytes), (5, 300));
        let bob_row = report.owner_rows("bob").next().expect("bob");
        assert_eq!((bob_row.databases_created, bob_row.running_hours), (0, 0.0), "stopped, created earlier");
        assert_eq!(report.owners(), vec!["bob", "kate"]);
        let only_kate = super::report(&store, day, day + 1, Some("kate")).await.expect("report");
        assert_eq!(only_kate.owners(), vec!["kate"]);
        assert_eq!(only_kate.csv().lines().nth(1), Some("kate,shop,1,1,0.03,300,5"));
        let first_day_only = super::report(&store, day, day, None).await.expect("report");
        assert_eq!(first_day_only.owner_rows("kate").next().map(|r| r.databases_deleted), Some(0));
    }

    #[tokio::test]
    async fn a_database_first_seen_after_midnight_counts_as_created_on_its_own_day() {
        let store = MemoryStore::default();
        let day = parse_date("2026-12-01").expect("date");
        let late = db("id-9", "late-pg", "kate", "2026-11-30T23:59:50Z", DatabaseStatus::Running);
        let mut ledger = Ledger::new(Duration::from_secs(30));
        ledger.record(&store, day * DAY + 10, &[], &HashMap::new()).await.expect("tick");
        ledger.record(&store, day * DAY + 40, std::slice::from_ref(&late), &HashMap::new()).await.expect("tick");
        ledger.record(&store, day * DAY + 70, std::slice::from_ref(&late), &HashMap::new()).await.expect("tick");
        let row = |report: UsageReport| report.rows.first().map(|r| (r.databases_created, r.running_hours > 0.0));
        assert_eq!(row(report(&store, day - 1, day - 1, None).await.expect("report")), Some((1, false)));
        assert_eq!(row(report(&store, day, day, None).await.expect("report")), Some((0, true)));
        assert_eq!(row(report(&store, day - 1, day, None).await.expect("report")), Some((1, true)), "counted once");
    }
}
