//! What the proxies report of sessions, and what is kept of it.
//!
//! Every proxy replica reports ([`ActivityReport`], `POST /v1/activity`) the databases with a
//! session its backend accepted (authenticated) open on it, and those that had one since its
//! last report. A database is busy while any replica that reported recently has such a session
//! open on it, so a silent session keeps it up, while a load balancer's health check and a
//! client without the password (neither ever a session) do not. A replica that stops reporting
//! (restarted, scaled down) stops counting after [`REPORT_TTL`].
//!
//! When each database last had a session (its `lastActiveAt`) is kept in documents rather than
//! in the databases' records: each controller process writes one, `activity/<random id>`, with
//! what was reported to it, at most every [`PERSIST_EVERY`] ([`Activity::persist`]). At a
//! thousand databases a write per active database was most of the controller's requests to the
//! Kubernetes API; this is one per process every 30 s whatever the fleet. Readers merge the
//! documents ([`Activity::recorded`]); the lifecycle check (the leader's) folds them into its
//! own and removes those of processes gone ([`Activity::consolidate`]). A session reported to
//! another controller replica reaches the leader at most [`PERSIST_EVERY`] plus a report's
//! interval late, so idle periods under a minute are not exact with several replicas.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use devdb_shared::Name;
use devdb_shared::api::ActivityReport;
use serde::{Deserialize, Serialize};

use crate::model::DatabaseRecord;
use crate::store::{Store, StoreError};

/// How long a replica's report counts: three of its reporting periods.
pub const REPORT_TTL: Duration = Duration::from_secs(45);

/// How often a controller process writes what was reported to it, at most.
pub const PERSIST_EVERY: Duration = Duration::from_secs(30);

/// A process whose document is this old is gone (it would have written since): once its
/// entries are in the leader's document, its document is removed.
pub const RETIRE_AFTER: Duration = Duration::from_secs(600);

/// The documents' key prefix.
const DOCUMENTS: &str = "activity";

/// A process's document: when each database last had a session, as reported to it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    written_at: String,
    last_active: BTreeMap<String, String>,
}

/// The proxies' latest reports to this process, and the sessions' times.
#[derive(Debug)]
pub struct Activity {
    replicas: Mutex<HashMap<String, (tokio::time::Instant, HashSet<Name>)>>,
    /// When each database last had a session, as this process knows (reported to it, or read
    /// from the others' documents by [`Activity::consolidate`]).
    seen: Mutex<HashMap<Name, SystemTime>>,
    /// This process's document.
    key: String,
    /// When it was last written, in seconds since the epoch (0: never).
    written: AtomicU64,
    /// When this process began listening to reports.
    started: tokio::time::Instant,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            replicas: Mutex::default(),
            seen: Mutex::default(),
            key: format!("{DOCUMENTS}/{:016x}", rand::random::<u64>()),
            written: AtomicU64::new(0),
            started: tokio::time::Instant::now(),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Held only to read or change the map, never across an await.
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn parse_time(text: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(text).ok()
}

impl Activity {
    /// Records a replica's report received at `now`; returns the databases active in it (open
    /// or active).
    pub fn report(&self, report: ActivityReport, now: SystemTime) -> Vec<Name> {
        let open: HashSet<Name> = report.open.iter().cloned().collect();
        let mut active: Vec<Name> = report.open.into_iter().chain(report.active).collect();
        active.sort();
        active.dedup();
        let mut seen = lock(&self.seen);
        for name in &active {
            seen.insert(name.clone(), now);
        }
        drop(seen);
        lock(&self.replicas).insert(report.replica, (tokio::time::Instant::now(), open));
        active
    }

    /// Whether some proxy replica reported within [`REPORT_TTL`]. Until one has, nobody can
    /// tell an idle database from one with sessions open (a proxy that cannot reach the
    /// controller, a wrong admin token after a re-render, a controller just started): idle
    /// stops wait.
    pub fn heard_recently(&self) -> bool {
        let mut replicas = lock(&self.replicas);
        replicas.retain(|_, (at, _)| at.elapsed() < REPORT_TTL);
        !replicas.is_empty()
    }

    /// Whether this process began listening less than [`REPORT_TTL`] ago: a proxy may not have
    /// reported to it yet.
    pub fn started_recently(&self) -> bool {
        self.started.elapsed() < REPORT_TTL
    }

    /// Whether a session is open on `name` at a replica that reported within [`REPORT_TTL`].
    pub fn busy(&self, name: &Name) -> bool {
        let mut replicas = lock(&self.replicas);
        replicas.retain(|_, (at, _)| at.elapsed() < REPORT_TTL);
        replicas.values().any(|(_, open)| open.contains(name))
    }

    /// When `name` last had a session, as this process knows.
    pub fn last_seen(&self, name: &Name) -> Option<SystemTime> {
        lock(&self.seen).get(name).copied()
    }

    /// Writes this process's document if [`PERSIST_EVERY`] has passed since it last did (or
    /// `force`) and it knows of a session. Concurrent callers write once.
    ///
    /// # Errors
    /// When the store cannot be written (the next call tries again).
    pub async fn persist<S: Store>(&self, store: &S, now: SystemTime, force: bool) -> Result<(), StoreError> {
        let last = self.written.load(Ordering::Relaxed);
        let due = force || last == 0 || seconds(now) >= last + PERSIST_EVERY.as_secs();
        if !due
            || self.written.compare_exchange(last, seconds(now).max(1), Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        let document = {
            let seen = lock(&self.seen);
            if seen.is_empty() {
                self.written.store(last, Ordering::Relaxed);
                return Ok(());
            }
            Document {
                written_at: crate::lifecycle::timestamp(now),
                last_active: seen.iter().map(|(n, at)| (n.to_string(), crate::lifecycle::timestamp(*at))).collect(),
            }
        };
        let written = store.put_document(&self.key, &serde_json::to_string(&document)?).await;
        if written.is_err() {
            self.written.store(last, Ordering::Relaxed);
        }
        written
    }

    /// When each database last had a session: every process's document and this process's
    /// own knowledge, merged.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn recorded<S: Store>(&self, store: &S) -> Result<HashMap<Name, SystemTime>, StoreError> {
        let mut merged = lock(&self.seen).clone();
        for (_, document) in documents(store).await? {
            merge(&mut merged, &document, |_| true);
        }
        Ok(merged)
    }

    /// The lifecycle check's part, on the leader: takes in every process's document (for the
    /// databases `keep` names: the others are gone), forgets the rest, writes its own, and
    /// removes the documents of processes gone once their entries are in its own.
    ///
    /// # Errors
    /// When the store cannot be read or written.
    pub async fn consolidate<S: Store>(
        &self,
        store: &S,
        now: SystemTime,
        keep: impl Fn(&Name) -> bool,
    ) -> Result<(), StoreError> {
        let mut retired = Vec::new();
        let documents = documents(store).await?;
        {
            let mut seen = lock(&self.seen);
            seen.retain(|name, _| keep(name));
            for (key, document) in &documents {
                merge(&mut seen, document, &keep);
                let written = parse_time(&document.written_at).unwrap_or(SystemTime::UNIX_EPOCH);
                if *key != self.key && now.duration_since(written).unwrap_or_default() >= RETIRE_AFTER {
                    retired.push(key.clone());
                }
            }
        }
        self.persist(store, now, !retired.is_empty()).await?;
        for key in retired {
            store.delete_document(&key).await?;
        }
        Ok(())
    }
}

/// Every process's document, by key (a corrupt one is skipped, logged).
async fn documents<S: Store>(store: &S) -> Result<Vec<(String, Document)>, StoreError> {
    let mut parsed = Vec::new();
    for (key, text) in store.documents(DOCUMENTS).await? {
        match serde_json::from_str::<Document>(&text) {
            Ok(document) => parsed.push((key, document)),
            Err(error) => tracing::warn!(%key, %error, "skipping a corrupt activity document"),
        }
    }
    Ok(parsed)
}

fn merge(into: &mut HashMap<Name, SystemTime>, document: &Document, keep: impl Fn(&Name) -> bool) {
    for (name, at) in &document.last_active {
        let (Ok(name), Some(at)) = (Name::new(name), parse_time(at)) else { continue };
        if keep(&name) {
            let entry = into.entry(name).or_insert(at);
            *entry = (*entry).max(at);
        }
    }
}

/// `database` with its `lastActiveAt` as `recorded` (from [`Activity::recorded`]) says, when
/// that is later than its record's.
pub fn with_last_session(recorded: &HashMap<Name, SystemTime>, mut database: DatabaseRecord) -> DatabaseRecord {
    if let Some(at) = recorded.get(&database.name) {
        note_session(&mut database, *at);
    }
    database
}

/// Sets `database`'s `lastActiveAt` to `at` when that is later than its record's.
pub fn note_session(database: &mut DatabaseRecord, at: SystemTime) {
    if database.lifecycle.last_active_at.as_deref().and_then(parse_time).is_none_or(|t| t < at) {
        database.lifecycle.last_active_at = Some(crate::lifecycle::timestamp(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;

    fn name(text: &str) -> Name {
        Name::new(text).expect("name")
    }

    fn at(text: &str) -> SystemTime {
        parse_time(text).expect("time")
    }

    fn database(text: &str) -> DatabaseRecord {
        DatabaseRecord {
            id: format!("id-{text}"),
            name: name(text),
            project: name("shop"),
            owner: "kate".into(),
            status: devdb_shared::api::DatabaseStatus::Running,
            want: crate::model::Want::Run,
            port: 5432,
            password: "pw".into(),
            snapshot_generation: Some(1),
            error: None,
            created_at: "2026-12-01T09:00:00Z".into(),
            lifecycle: crate::model::Lifecycle::default(),
            settings: crate::model::Settings::default(),
            backup: None,
            restore_from: None,
            restoring: None,
            before_restore: None,
        }
    }

    fn active(replica: &str, names: &[&str]) -> ActivityReport {
        ActivityReport { replica: replica.into(), open: Vec::new(), active: names.iter().map(|n| name(n)).collect() }
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_open_on_any_live_replica_keeps_a_database_busy() {
        let activity = Activity::default();
        let kate = name("kate-pg");
        let report = |replica: &str, open: &[&Name]| ActivityReport {
            replica: replica.into(),
            open: open.iter().map(|n| (*n).clone()).collect(),
            active: Vec::new(),
        };
        assert_eq!(activity.report(report("proxy-a", &[&kate]), SystemTime::UNIX_EPOCH), std::slice::from_ref(&kate));
        activity.report(report("proxy-b", &[]), SystemTime::UNIX_EPOCH);
        assert!(activity.busy(&kate));
        // proxy-a's session closed: its next report replaces the last.
        activity.report(report("proxy-a", &[]), SystemTime::UNIX_EPOCH);
        assert!(!activity.busy(&kate));
        // A replica that stops reporting (restarted) no longer counts after REPORT_TTL.
        activity.report(report("proxy-b", &[&kate]), SystemTime::UNIX_EPOCH);
        assert!(activity.started_recently() && activity.heard_recently());
        tokio::time::advance(REPORT_TTL).await;
        assert!(!activity.busy(&kate));
        assert!(!activity.started_recently() && !activity.heard_recently(), "silent for too long: said once");
    }

    #[tokio::test]
    async fn a_process_writes_its_document_at_most_every_thirty_seconds() {
        let store = MemoryStore::default();
        let activity = Activity::default();
        activity.persist(&store, at("2026-12-07T10:00:00Z"), false).await.expect("nothing to write");
        assert!(store.documents(DOCUMENTS).await.expect("read").is_empty(), "no session, no document");
        activity.report(active("proxy-a", &["kate-pg"]), at("2026-12-07T10:00:00Z"));
        activity.persist(&store, at("2026-12-07T10:00:00Z"), false).await.expect("written");
        activity.report(active("proxy-a", &["kate-pg", "bob-pg"]), at("2026-12-07T10:00:15Z"));
        activity.persist(&store, at("2026-12-07T10:00:15Z"), false).await.expect("not due");
        let documents = store.documents(DOCUMENTS).await.expect("read");
        assert_eq!(documents.len(), 1);
        assert!(documents[0].1.contains("kate-pg") && !documents[0].1.contains("bob-pg"), "{documents:?}");
        activity.persist(&store, at("2026-12-07T10:00:30Z"), false).await.expect("due");
        let recorded = Activity::default().recorded(&store).await.expect("read");
        assert_eq!(recorded.get(&name("bob-pg")), Some(&at("2026-12-07T10:00:15Z")));
        assert_eq!(recorded.get(&name("kate-pg")), Some(&at("2026-12-07T10:00:15Z")));
    }

    #[tokio::test]
    async fn the_leader_takes_in_the_others_sessions_and_removes_the_documents_of_processes_gone() {
        let store = MemoryStore::default();
        let (leader, follower, gone) = (Activity::default(), Activity::default(), Activity::default());
        gone.report(active("proxy-a", &["kate-pg", "deleted-pg"]), at("2026-12-07T09:00:00Z"));
        gone.persist(&store, at("2026-12-07T09:00:00Z"), false).await.expect("written");
        follower.report(active("proxy-b", &["bob-pg"]), at("2026-12-07T09:59:50Z"));
        follower.persist(&store, at("2026-12-07T09:59:50Z"), false).await.expect("written");
        leader.report(active("proxy-a", &["kate-pg"]), at("2026-12-07T08:00:00Z"));

        let exists = |n: &Name| n.as_str() != "deleted-pg";
        leader.consolidate(&store, at("2026-12-07T10:00:00Z"), exists).await.expect("consolidated");
        assert_eq!(leader.last_seen(&name("kate-pg")), Some(at("2026-12-07T09:00:00Z")), "the later one");
        assert_eq!(leader.last_seen(&name("bob-pg")), Some(at("2026-12-07T09:59:50Z")), "another replica's");
        assert_eq!(leader.last_seen(&name("deleted-pg")), None, "gone");
        let keys: Vec<String> = store.documents(DOCUMENTS).await.expect("read").into_iter().map(|(k, _)| k).collect();
        assert!(keys.contains(&leader.key) && keys.contains(&follower.key), "{keys:?}");
        assert!(!keys.contains(&gone.key), "silent for an hour: its entries are the leader's now: {keys:?}");
        let recorded = Activity::default().recorded(&store).await.expect("read");
        assert_eq!(recorded.get(&name("kate-pg")), Some(&at("2026-12-07T09:00:00Z")), "kept");
    }

    #[test]
    fn a_record_shows_the_later_of_its_own_and_the_recorded_session() {
        let recorded = HashMap::from([(name("kate-pg"), at("2026-12-07T10:00:00Z"))]);
        let mut record = database("kate-pg");
        record.lifecycle.last_active_at = Some("2026-12-07T09:00:00Z".into());
        let shown = with_last_session(&recorded, record.clone());
        assert_eq!(shown.lifecycle.last_active_at.as_deref(), Some("2026-12-07T10:00:00Z"));
        record.lifecycle.last_active_at = Some("2026-12-07T11:00:00Z".into());
        assert_eq!(
            with_last_session(&recorded, record).lifecycle.last_active_at.as_deref(),
            Some("2026-12-07T11:00:00Z")
        );
        let other = with_last_session(&recorded, database("bob-pg"));
        assert_eq!(other.lifecycle.last_active_at, None);
    }
}
