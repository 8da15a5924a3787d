//! Whether the cluster enforces the NetworkPolicies that admit only the proxy to a database.
//! Kubernetes accepts NetworkPolicies whether or not the network plugin enforces them (on EKS
//! the VPC CNI does only with its network-policy support enabled), so the controller, which is
//! not the proxy, tries to connect to the first database it starts: if it gets in, any pod
//! could, and databases are refused until the cluster enforces them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use devdb_core::runtime::RuntimeError;

/// How long a connection attempt may take before it counts as dropped by the policy.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The check, done until it passes once.
#[derive(Debug)]
pub struct Isolation {
    /// Passed once (or not required).
    verified: AtomicBool,
}

impl Isolation {
    /// `required: false` skips the check (clusters whose databases no other pod can reach
    /// anyway, by the operator's word).
    pub fn new(required: bool) -> Self {
        Self { verified: AtomicBool::new(!required) }
    }

    /// Checks that the controller cannot connect to `backend` (`host:port` of a running
    /// database behind its NetworkPolicy).
    ///
    /// # Errors
    /// [`RuntimeError::Stuck`] when it can: the policies are not enforced.
    pub async fn check(&self, backend: &str) -> Result<(), RuntimeError> {
        if self.verified.load(Ordering::Relaxed) {
            return Ok(());
        }
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(backend)).await;
        if matches!(attempt, Ok(Ok(_))) {
            return Err(RuntimeError::Stuck {
                step: "isolating the database",
                reason: format!(
                    "the controller could connect to {backend}, whose NetworkPolicy admits only the proxy: this \
                     cluster does not enforce NetworkPolicies, so any pod could reach every database (on EKS, \
                     enable the VPC CNI's network policy support; see the README). Databases are refused until \
                     it does (or the controller runs with --allow-unenforced-network-policies)"
                ),
            });
        }
        // Dropped (a timeout), or refused: either way not let in.
        tracing::info!(%backend, "NetworkPolicies are enforced: the controller cannot reach a database");
        self.verified.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_database_the_controller_can_reach_is_refused_until_one_it_cannot() {
        let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let reachable = open.local_addr().expect("addr").to_string();
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").to_string()
        };
        let isolation = Isolation::new(true);
        let error = isolation.check(&reachable).await.expect_err("not isolated").to_string();
        assert!(error.contains("does not enforce NetworkPolicies") && error.contains(&reachable), "{error}");
        // Refused (as a dropping policy would): isolated, and not probed again.
        isolation.check(&closed).await.expect("isolated");
        isolation.check(&reachable).await.expect("verified once is enough");
        // Not required: never probed.
        Isolation::new(false).check(&reachable).await.expect("not checked");
    }
}
