//! Whether the cluster enforces the NetworkPolicies that admit only the proxy to a database.
//! Kubernetes accepts NetworkPolicies whether or not the network plugin enforces them (on EKS
//! the VPC CNI does only with its network-policy support enabled), so the controller, which is
//! not the proxy, tries to connect to a database it has just started: if it gets in, any pod
//! could, and databases are refused until the cluster enforces them. Enforcement can be turned
//! off later (a CNI upgrade, a changed add-on setting), so a pass holds for [`RECHECK_AFTER`]:
//! the first database started after that is tried again.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use devdb_core::runtime::RuntimeError;

/// How long a connection attempt may take before it counts as dropped by the policy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a passed check holds. A check costs one connection attempt (at most
/// [`PROBE_TIMEOUT`] added to one database's start), so a few a day are nothing, and a cluster
/// that stopped enforcing is noticed within hours.
pub const RECHECK_AFTER: Duration = Duration::from_secs(6 * 3600);

/// The check, made again once its last pass is [`RECHECK_AFTER`] old.
#[derive(Debug)]
pub struct Isolation {
    required: bool,
    /// When the check last passed; `None` until it does (or after it failed).
    passed_at: Mutex<Option<Instant>>,
}

impl Isolation {
    /// `required: false` skips the check (clusters whose databases no other pod can reach
    /// anyway, by the operator's word).
    pub fn new(required: bool) -> Self {
        Self { required, passed_at: Mutex::new(None) }
    }

    fn passed_recently(&self) -> bool {
        // A short critical section, never held across an await.
        let passed_at = self.passed_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        passed_at.is_some_and(|at| at.elapsed() < RECHECK_AFTER)
    }

    fn record(&self, passed: Option<Instant>) {
        *self.passed_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = passed;
    }

    /// Checks that the controller cannot connect to `backend` (`host:port` of a running
    /// database behind its NetworkPolicy), unless a check passed in the last [`RECHECK_AFTER`].
    ///
    /// # Errors
    /// [`RuntimeError::Stuck`] when it can: the policies are not enforced.
    pub async fn check(&self, backend: &str) -> Result<(), RuntimeError> {
        if !self.required || self.passed_recently() {
            return Ok(());
        }
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(backend)).await;
        if matches!(attempt, Ok(Ok(_))) {
            self.record(None);
            return Err(RuntimeError::Stuck {
                step: "isolating the database",
                reason: format!(
                    "the controller could connect to {backend}, whose NetworkPolicy admits only the proxy: this \
                     cluster does not enforce NetworkPolicies, so any pod could reach every database (on EKS, \
                     enable the VPC CNI's network policy support; see docs/kubernetes.md, 'EKS: before you \
                     install'). Databases are refused until it does (or the controller runs with \
                     --allow-unenforced-network-policies)"
                ),
            });
        }
        // Dropped (a timeout), or refused: either way not let in.
        tracing::info!(%backend, "NetworkPolicies are enforced: the controller cannot reach a database");
        self.record(Some(Instant::now()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener, with its address (reachable), and the address of one that is gone (closed).
    async fn addresses() -> (tokio::net::TcpListener, String, String) {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let reachable = open.local_addr().expect("addr").to_string();
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").to_string()
        };
        (open, reachable, closed)
    }

    #[tokio::test]
    async fn a_database_the_controller_can_reach_is_refused_until_one_it_cannot() {
        let (_open, reachable, closed) = addresses().await;
        let isolation = Isolation::new(true);
        let error = isolation.check(&reachable).await.expect_err("not isolated").to_string();
        assert!(error.contains("does not enforce NetworkPolicies") && error.contains(&reachable), "{error}");
        // Refused (as a dropping policy would): isolated, and not probed again for a while.
        isolation.check(&closed).await.expect("isolated");
        isolation.check(&reachable).await.expect("verified recently is enough");
        // Not required: never probed.
        Isolation::new(false).check(&reachable).await.expect("not checked");
    }

    #[tokio::test]
    async fn a_passed_check_is_made_again_once_it_is_old_and_notices_enforcement_turned_off() {
        let (_open, reachable, closed) = addresses().await;
        let isolation = Isolation::new(true);
        isolation.check(&closed).await.expect("isolated");
        // The clock moves on paused time; the connections are real.
        let later = |by: Duration| async move {
            tokio::time::pause();
            tokio::time::advance(by).await;
            tokio::time::resume();
        };
        later(RECHECK_AFTER - Duration::from_secs(1)).await;
        isolation.check(&reachable).await.expect("the pass still holds");
        later(Duration::from_secs(1)).await;
        // Enforcement was turned off meanwhile: the database it now reaches is refused, and so
        // is every one after until a check passes again.
        let error = isolation.check(&reachable).await.expect_err("checked again").to_string();
        assert!(error.contains("does not enforce NetworkPolicies"), "{error}");
        isolation.check(&reachable).await.expect_err("still refused");
        isolation.check(&closed).await.expect("enforced again");
        isolation.check(&reachable).await.expect("and trusted for a while again");
    }
}
