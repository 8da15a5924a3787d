//! Which databases have sessions here, told to the controller so it stops only idle ones, and
//! the wake of an asleep one.
//!
//! Only a session its backend accepted (authenticated) counts: from then until it ends it keeps
//! its database busy, and it leaves activity behind (`lastActiveAt`). A client waiting for a
//! wake or authenticating counts for nothing, so a load balancer's health check (TCP or TLS,
//! then close) and a client without the password never keep a database up, however long they
//! hold their connection; the controller's own sampling (`application_name=devdb-monitor`)
//! neither counts nor wakes. Every `--activity-report-every` (15 s) the proxy posts the
//! databases with a session open now and those that had one since the last report to the
//! controller's `POST /v1/activity`; the controller keeps the latest report of each replica for
//! a while, so a restarted or removed proxy stops counting on its own.
//!
//! A wake is asked of the controller as a proxy's (`start?wake=true`), limited per client and
//! per database ([`crate::wake`]); a session that authenticates claims the wakes of its
//! database, and the controller hears of it at once (until then it may stop such a database to
//! make room for its owner's start). A refusal tells the client nothing of the owner, its quotas
//! or its other databases.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use devdb_shared::Name;
use devdb_shared::api::ActivityReport;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::controller::{ControllerClient, ControllerError};
use crate::wake::{Limited, WakeLimiter};

/// Authenticated sessions per database on this replica.
#[derive(Debug, Default)]
pub struct Sessions {
    open: DashMap<Name, usize>,
    /// Databases that had a session since the last report.
    active: Mutex<HashSet<Name>>,
    /// The wakes a session claims when it authenticates.
    wakes: std::sync::Arc<WakeLimiter>,
    /// A session claimed a wake of this replica's: the controller hears of it at once (a
    /// database woken for nobody may be stopped to make room for its owner's start).
    report_now: tokio::sync::Notify,
}

impl Sessions {
    /// Sessions whose authentication claims the wakes counted by `wakes`.
    pub fn new(wakes: std::sync::Arc<WakeLimiter>) -> Self {
        Self { open: DashMap::new(), active: Mutex::default(), wakes, report_now: tokio::sync::Notify::new() }
    }

    /// A client of `name`: it counts (open, then activity) once it has authenticated
    /// ([`SessionGuard::authenticated`]), until the guard is dropped.
    pub fn open(self: &std::sync::Arc<Self>, name: &Name) -> SessionGuard {
        SessionGuard { sessions: self.clone(), name: name.clone(), authenticated: false }
    }

    fn count(&self, name: &Name, add: isize) {
        let mut count = self.open.entry(name.clone()).or_default();
        *count = count.saturating_add_signed(add);
        let zero = *count == 0;
        drop(count);
        if zero {
            self.open.remove_if(name, |_, count| *count == 0);
        }
    }

    fn lock_active(&self) -> std::sync::MutexGuard<'_, HashSet<Name>> {
        self.active.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The report body: databases with a session open now, and those active since the last
    /// report (which starts a new period).
    pub fn take_report(&self, replica: &str) -> ActivityReport {
        let mut open: Vec<Name> = self.open.iter().filter(|e| *e.value() > 0).map(|e| e.key().clone()).collect();
        open.sort();
        let mut active: Vec<Name> = std::mem::take(&mut *self.lock_active()).into_iter().collect();
        active.sort();
        ActivityReport { replica: replica.to_string(), open, active }
    }
}

/// One client of a database.
pub struct SessionGuard {
    sessions: std::sync::Arc<Sessions>,
    name: Name,
    authenticated: bool,
}

impl SessionGuard {
    /// The backend accepted the client: its session is open and activity, and the wakes of its
    /// database were wanted.
    pub fn authenticated(&mut self) {
        if self.authenticated {
            return;
        }
        self.authenticated = true;
        self.sessions.count(&self.name, 1);
        self.sessions.lock_active().insert(self.name.clone());
        if self.sessions.wakes.claim(&self.name) {
            self.sessions.report_now.notify_one();
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        // A session that opened and closed between two reports still counts as activity.
        if self.authenticated {
            self.sessions.count(&self.name, -1);
            self.sessions.lock_active().insert(self.name.clone());
        }
    }
}

/// A wake a session asked for, under way until dropped: other sessions of the database join it
/// rather than ask again, and learn when it ends ([`Wake::Joined`]).
pub struct Waking<'a> {
    waking: &'a DashMap<Name, watch::Sender<()>>,
    name: Name,
}

impl Drop for Waking<'_> {
    fn drop(&mut self) {
        // Its sender goes: those who joined it see it end.
        self.waking.remove(&self.name);
    }
}

/// What became of a session's wake.
pub enum Wake<'a> {
    /// Asked for, and taken: others join it while this is held.
    Asked(Waking<'a>),
    /// Another session's wake is under way: wait for the route to change, or for that wake to
    /// end ([`watch::Receiver::changed`] fails then); if it ended with the database still
    /// asleep (refused, or its session gone), ask again.
    Joined(watch::Receiver<()>),
    /// The controller did not take it for a reason that changes the route anyway (it failed, is
    /// being deleted) or passes (the controller restarting): wait for the route.
    NotTaken,
}

/// Why a wake was not made.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// Over a wake limit of this replica.
    #[error("not asked: {0}")]
    Limited(#[from] Limited),
    /// The controller refused it (the owner's running quota): its reason, for the log only.
    #[error("refused by the controller: {0}")]
    Refused(String),
}

/// The controller, for the proxy's two requests to it: wakes and activity reports.
pub struct Controller {
    api: ControllerClient,
    /// Wakes asked for and not yet answered: many clients waking one database ask once.
    waking: DashMap<Name, watch::Sender<()>>,
    /// How many wakes clients that have not authenticated may cause.
    wakes: std::sync::Arc<WakeLimiter>,
    /// When the controller last refused to wake each database: for [`REFUSED_FOR`] it is not
    /// asked again, so a flood at a database over its owner's quota (a refusal counts against
    /// no limit) does not become a flood of requests to the controller.
    refused: DashMap<Name, tokio::time::Instant>,
}

/// How long a database whose wake the controller refused is refused without asking it again.
pub const REFUSED_FOR: Duration = Duration::from_secs(2);

impl Controller {
    /// `api`: the controller; `wakes`: the limits of wakes (shared with [`Sessions`], whose
    /// sessions claim them).
    pub fn new(api: ControllerClient, wakes: std::sync::Arc<WakeLimiter>) -> Self {
        Self { api, waking: DashMap::new(), wakes, refused: DashMap::new() }
    }

    /// Asks the controller to start `name` for a client at `client` that has not authenticated,
    /// unless a wake of it is under way: then the caller joins it ([`Wake::Joined`]). The wake
    /// counts against the client's and the database's limits until a session of it
    /// authenticates. Others join it while the caller holds the [`Waking`] (until the route
    /// leaves `asleep`, as the controller's answer may come before the route's change); a wake
    /// over a limit is never joined.
    ///
    /// # Errors
    /// [`WakeError::Limited`] over a limit (nothing is asked); [`WakeError::Refused`] when the
    /// controller refuses (403: the owner's running quota), or did so less than [`REFUSED_FOR`]
    /// ago (it is not asked again). Other failures (the controller
    /// restarting; a database that failed or is being deleted, whose route changes anyway) are
    /// logged: the caller waits.
    pub async fn wake(&self, name: &Name, client: std::net::IpAddr) -> Result<Wake<'_>, WakeError> {
        if self.refused.get(name).is_some_and(|at| at.elapsed() < REFUSED_FOR) {
            return Err(WakeError::Refused("refused moments ago".into()));
        }
        // Joined, or charged and made joinable, at once: a wake over a limit is never joined.
        let charge = match self.waking.entry(name.clone()) {
            dashmap::mapref::entry::Entry::Occupied(under_way) => return Ok(Wake::Joined(under_way.get().subscribe())),
            dashmap::mapref::entry::Entry::Vacant(free) => {
                let charge = self.wakes.charge(name, client)?;
                free.insert(watch::channel(()).0);
                charge
            }
        };
        let waking = Waking { waking: &self.waking, name: name.clone() };
        tracing::info!(database = %name, %client, "waking an asleep database");
        match self.api.wake(name).await {
            Ok(()) => {
                self.refused.remove(name);
                Ok(Wake::Asked(waking))
            }
            Err(ControllerError::Refused(reason)) => {
                self.wakes.refund(charge);
                self.refused.insert(name.clone(), tokio::time::Instant::now());
                Err(WakeError::Refused(reason))
            }
            Err(error) => {
                self.wakes.refund(charge);
                tracing::warn!(database = %name, %error, "the controller did not take the wake");
                Ok(Wake::NotTaken)
            }
        }
    }

    /// Reports `sessions` every `every` (and at once when a session claims a wake) as `replica`
    /// until `shutdown`.
    pub async fn report_activity(
        &self,
        sessions: std::sync::Arc<Sessions>,
        replica: String,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        loop {
            let due = async {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = sessions.report_now.notified() => {}
                }
            };
            if shutdown.run_until_cancelled(due).await.is_none() {
                return;
            }
            if let Err(error) = self.api.report(&sessions.take_report(&replica)).await {
                tracing::warn!(%error, "the controller did not take an activity report");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    pub(super) fn names(names: &[&str]) -> Vec<Name> {
        names.iter().map(|n| Name::new(*n).expect("name")).collect()
    }

    #[test]
    fn reports_name_open_sessions_and_those_that_came_and_went() {
        let sessions = Arc::new(Sessions::default());
        let (kate, bob) = (Name::new("kate-pg").expect("name"), Name::new("bob-pg").expect("name"));
        let open = |name: &Name| {
            let mut guard = sessions.open(name);
            guard.authenticated();
            guard
        };
        let first = open(&kate);
        let second = open(&kate);
        drop(open(&bob));
        let report = sessions.take_report("proxy-a");
        assert_eq!(report.open, names(&["kate-pg"]));
        assert_eq!(report.active, names(&["bob-pg", "kate-pg"]));
        drop(first);
        let report = sessions.take_report("proxy-a");
        assert_eq!(report.open, names(&["kate-pg"]), "one of two still open");
        assert_eq!(report.active, names(&["kate-pg"]));
        drop(second);
        let report = sessions.take_report("proxy-a");
        assert_eq!((report.open.clone(), report.active.clone()), (names(&[]), names(&["kate-pg"])));
        let report = sessions.take_report("proxy-a");
        assert_eq!(report.active, names(&[]), "nothing since");
    }
}

#[cfg(test)]
mod phases {
    use std::sync::Arc;

    use super::tests::names;
    use super::*;

    #[test]
    fn a_client_counts_for_nothing_until_the_backend_accepts_it() {
        let wakes =
            Arc::new(WakeLimiter::new(crate::wake::Limits { per_client: 9, per_database: 1, ..Default::default() }));
        let sessions = Arc::new(Sessions::new(wakes.clone()));
        let kate = Name::new("kate-pg").expect("name");
        let client = "192.0.2.1".parse().expect("ip");
        wakes.charge(&kate, client).expect("a wake");
        // Waiting for a wake, or authenticating (held open without the password): nothing…
        let waiting = sessions.open(&kate);
        let report = sessions.take_report("p");
        assert_eq!((report.open.clone(), report.active.clone()), (names(&[]), names(&[])));
        // …and a client refused (a wrong password) leaves nothing behind, and claims no wake.
        drop(waiting);
        let report = sessions.take_report("p");
        assert_eq!((report.open.clone(), report.active.clone()), (names(&[]), names(&[])));
        assert!(wakes.charge(&kate, client).is_err(), "the wake still counts");
        // Authenticated: open, then active once closed; its database's wakes were wanted.
        let mut session = sessions.open(&kate);
        session.authenticated();
        assert_eq!(sessions.take_report("p").open, names(&["kate-pg"]));
        let charge = wakes.charge(&kate, client).expect("claimed: it counts no more");
        wakes.refund(charge);
        use futures_util::FutureExt as _;
        assert!(sessions.report_now.notified().now_or_never().is_some(), "a claim is reported at once");
        let mut again = sessions.open(&kate);
        again.authenticated();
        assert!(sessions.report_now.notified().now_or_never().is_none(), "a wake was claimed: only then");
        drop(again);
        drop(session);
        let report = sessions.take_report("p");
        assert_eq!((report.open.clone(), report.active.clone()), (names(&[]), names(&["kate-pg"])));
    }
}

#[cfg(test)]
mod joining {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use axum::routing::post;

    use super::*;

    /// A controller that holds each start until `release`, then refuses it (the owner's quota),
    /// saying on `arrived` when one came.
    async fn refusing_controller(arrived: Arc<tokio::sync::Notify>, release: Arc<tokio::sync::Notify>) -> String {
        let start = move || {
            let (arrived, release) = (arrived.clone(), release.clone());
            async move {
                arrived.notify_one();
                release.notified().await;
                let body = serde_json::json!({ "error": { "code": "quota_exceeded", "message": "over quota" } });
                (StatusCode::FORBIDDEN, axum::Json(body))
            }
        };
        let app = axum::Router::new().route("/v1/databases/{name}/start", post(start));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn those_who_joined_a_refused_wake_learn_it_ended_and_are_refused_when_they_ask() {
        let (arrived, release) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        let api =
            ControllerClient::new(&refusing_controller(arrived.clone(), release.clone()).await, None).expect("client");
        let controller = Arc::new(Controller::new(api, Arc::default()));
        let kate = Name::new("kate-pg").expect("name");
        let first = {
            let (controller, kate) = (controller.clone(), kate.clone());
            tokio::spawn(async move { controller.wake(&kate, "192.0.2.1".parse().expect("ip")).await.map(drop) })
        };
        arrived.notified().await;
        // The first's wake is under way: a second client joins it rather than ask.
        let Ok(Wake::Joined(mut under_way)) = controller.wake(&kate, "192.0.2.2".parse().expect("ip")).await else {
            panic!("not joined");
        };
        release.notify_one();
        assert!(matches!(first.await.expect("joined"), Err(WakeError::Refused(_))));
        // The joiner sees the wake end (no route change will come) and, asking itself, is refused
        // without the controller being asked again.
        assert!(under_way.changed().await.is_err(), "the wake it joined ended");
        assert!(matches!(
            controller.wake(&kate, "192.0.2.2".parse().expect("ip")).await,
            Err(WakeError::Refused(reason)) if reason == "refused moments ago"
        ));
    }

    #[tokio::test]
    async fn a_wake_over_a_limit_is_never_joined() {
        let limits = crate::wake::Limits { per_client: 1, per_database: 9, ..Default::default() };
        let wakes = Arc::new(WakeLimiter::new(limits));
        let api = ControllerClient::new("http://127.0.0.1:9", None).expect("client");
        let controller = Controller::new(api, wakes.clone());
        let client = "192.0.2.1".parse().expect("ip");
        wakes.charge(&Name::new("other-pg").expect("name"), client).expect("the client's one wake");
        let kate = Name::new("kate-pg").expect("name");
        assert!(matches!(controller.wake(&kate, client).await, Err(WakeError::Limited(_))));
        assert!(controller.waking.is_empty(), "nothing to join");
    }
}
