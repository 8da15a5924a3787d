//! Which databases have sessions here, told to the controller so it stops only idle ones, and
//! the wake of an asleep one.
//!
//! A client keeps its database busy from its startup packet (while it waits for a wake, and
//! while it authenticates) until it leaves; only one that authenticated leaves activity behind
//! (`lastActiveAt`). A load balancer's health check (TCP or TLS, then close) never counts, and a
//! client without the password holds a database up only while it holds a connection open; the
//! controller's own sampling (`application_name=devdb-monitor`) neither counts nor wakes. Every
//! `--activity-report-every` (15 s) the proxy posts the databases with a session open now and those that had one
//! since the last report to the controller's `POST /v1/activity`; the controller keeps the
//! latest report of each replica for a while, so a restarted or removed proxy stops counting on
//! its own.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use dashmap::DashMap;
use devdb_shared::Name;
use tokio_util::sync::CancellationToken;

/// Sessions per database on this replica.
#[derive(Debug, Default)]
pub struct Sessions {
    open: DashMap<Name, usize>,
    /// Databases that had a session since the last report.
    active: Mutex<HashSet<Name>>,
}

impl Sessions {
    /// A client of `name`, counted as open until the guard is dropped; activity once it has
    /// authenticated ([`SessionGuard::authenticated`]).
    pub fn open(self: &std::sync::Arc<Self>, name: &Name) -> SessionGuard {
        self.count(name, 1);
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
    pub fn take_report(&self, replica: &str) -> serde_json::Value {
        let mut open: Vec<Name> = self.open.iter().filter(|e| *e.value() > 0).map(|e| e.key().clone()).collect();
        open.sort();
        let mut active: Vec<Name> = std::mem::take(&mut *self.lock_active()).into_iter().collect();
        active.sort();
        serde_json::json!({ "replica": replica, "open": open, "active": active })
    }
}

/// One client of a database.
pub struct SessionGuard {
    sessions: std::sync::Arc<Sessions>,
    name: Name,
    authenticated: bool,
}

impl SessionGuard {
    /// The client authenticated: its session is activity.
    pub fn authenticated(&mut self) {
        self.authenticated = true;
        self.sessions.lock_active().insert(self.name.clone());
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.sessions.count(&self.name, -1);
        // A session that opened and closed between two reports still counts as activity.
        if self.authenticated {
            self.sessions.lock_active().insert(self.name.clone());
        }
    }
}

/// The controller, for the proxy's two requests to it: wakes and activity reports.
pub struct Controller {
    base: String,
    token: Option<String>,
    client: reqwest::Client,
    /// Wakes asked for and not yet answered: many clients waking one database ask once.
    waking: DashMap<Name, ()>,
}

impl Controller {
    /// `base`: the controller's URL, e.g. `http://127.0.0.1:8080`; `token`: an admin token.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self { base: base.trim_end_matches('/').to_string(), token, client, waking: DashMap::new() }
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.post(format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Asks the controller to start `name`, unless a wake of it is under way (then the caller
    /// just waits for its route to turn ready, like the first).
    ///
    /// # Errors
    /// The controller's reason when it refuses the start (403: the owner's quota of running
    /// databases). Other failures (the controller restarting; a database that failed or is
    /// being deleted, whose route changes anyway) are logged: the caller waits.
    pub async fn wake(&self, name: &Name) -> Result<(), String> {
        if self.waking.insert(name.clone(), ()).is_some() {
            return Ok(());
        }
        tracing::info!(database = %name, "waking an asleep database");
        let answer = self.post(&format!("/v1/databases/{name}/start")).send().await;
        self.waking.remove(name);
        match answer {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) if response.status() == reqwest::StatusCode::FORBIDDEN => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let reason = body["error"]["message"].as_str().unwrap_or("refused").to_string();
                tracing::info!(database = %name, %reason, "the controller refused the wake");
                Err(reason)
            }
            Ok(response) => {
                tracing::warn!(database = %name, status = %response.status(), "the controller did not take the wake");
                Ok(())
            }
            Err(error) => {
                tracing::warn!(database = %name, %error, "cannot ask the controller to wake a database");
                Ok(())
            }
        }
    }

    /// Reports `sessions` every `every` as `replica` until `shutdown`.
    pub async fn report_activity(
        &self,
        sessions: std::sync::Arc<Sessions>,
        replica: String,
        every: Duration,
        shutdown: CancellationToken,
    ) {
        while shutdown.run_until_cancelled(tokio::time::sleep(every)).await.is_some() {
            let body = sessions.take_report(&replica);
            match self.post("/v1/activity").json(&body).send().await {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    tracing::warn!(status = %response.status(), "the controller refused an activity report")
                }
                Err(error) => tracing::warn!(%error, "cannot report activity to the controller"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

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
        assert_eq!(report["open"], serde_json::json!(["kate-pg"]));
        assert_eq!(report["active"], serde_json::json!(["bob-pg", "kate-pg"]));
        drop(first);
        let report = sessions.take_report("proxy-a");
        assert_eq!(report["open"], serde_json::json!(["kate-pg"]), "one of two still open");
        assert_eq!(report["active"], serde_json::json!(["kate-pg"]));
        drop(second);
        let report = sessions.take_report("proxy-a");
        assert_eq!(
            (report["open"].clone(), report["active"].clone()),
            (serde_json::json!([]), serde_json::json!(["kate-pg"]))
        );
        let report = sessions.take_report("proxy-a");
        assert_eq!(report["active"], serde_json::json!([]), "nothing since");
    }
}

#[cfg(test)]
mod phases {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_client_is_busy_while_connected_but_activity_only_once_authenticated() {
        let sessions = Arc::new(Sessions::default());
        let kate = Name::new("kate-pg").expect("name");
        // Waiting for a wake, or authenticating: the database is busy (not stopped under it)…
        let waiting = sessions.open(&kate);
        assert_eq!(sessions.take_report("p")["open"], serde_json::json!(["kate-pg"]));
        // …but a client refused (a wrong password) leaves no activity behind.
        drop(waiting);
        let report = sessions.take_report("p");
        assert_eq!((report["open"].clone(), report["active"].clone()), (serde_json::json!([]), serde_json::json!([])));
        // Authenticated: open, then active once closed.
        let mut session = sessions.open(&kate);
        session.authenticated();
        assert_eq!(sessions.take_report("p")["open"], serde_json::json!(["kate-pg"]));
        drop(session);
        assert_eq!(sessions.take_report("p")["active"], serde_json::json!(["kate-pg"]));
    }
}
