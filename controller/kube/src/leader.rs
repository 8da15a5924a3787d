//! Leader election over a `coordination.k8s.io/v1` Lease, so two controller replicas never
//! reconcile at once: every replica serves the API and the routes, only the lease holder runs
//! the controllers.
//!
//! The holder renews the lease every third of its duration. Another replica takes it over only
//! once it has seen the same record (holder and renewTime) for a whole duration by its own
//! clock, never by comparing the holder's renewTime with it: nodes' clocks differ. Every write
//! carries the resourceVersion it read, so of two replicas racing for it one wins and the other
//! sees a conflict. The holder renews with the lease its last write returned, without reading it
//! first (one request per renewal, not two); a conflict sends it back to reading. A holder that
//! cannot renew in time stops leading (the process exits and is restarted as a follower) before
//! anyone else may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// A lease this replica competes for.
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// Another holder's record as last seen, and when (by this replica's clock) it was first
    /// seen so.
    observed: std::sync::Mutex<Option<(String, tokio::time::Instant)>>,
    /// The lease as the API server returned it after this replica's last write that left it the
    /// holder.
    written: std::sync::Mutex<Option<Lease>>,
}

/// Why leading stopped.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lost the leader lease {0} to another replica")]
    Lost(String),
    #[error("could not renew the leader lease {name}: {source}")]
    Renew { name: String, source: kube::Error },
}

impl LeaderLease {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: std::sync::Mutex::new(None),
            written: std::sync::Mutex::new(None),
        }
    }

    /// Takes or renews the lease: `Ok(true)` when this replica holds it afterwards.
    ///
    /// # Errors
    /// When the API server cannot be asked.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        if let Some(mut lease) = self.take_written() {
            if let Some(spec) = lease.spec.as_mut() {
                spec.renew_time = Some(MicroTime(now));
            }
            match self.api.replace(&self.name, &PostParams::default(), &lease).await {
                Ok(written) => {
                    self.remember(written);
                    return Ok(true);
                }
                // Written by someone else since: read it.
                Err(kube::Error::Api(s)) if s.is_conflict() => {}
                Err(e) => return Err(e),
            }
        }
        let Some(current) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(written) => {
                    self.remember(written);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for = Duration::from_secs(spec.lease_duration_seconds.map_or(0, |s| u64::try_from(s).unwrap_or(0)));
        let expired = match (&spec.holder_identity, &spec.renew_time) {
            (Some(holder), Some(renewed)) if !holder.is_empty() && !mine => {
                let record = format!("{holder}@{}", renewed.0);
                let mut observed = self.observed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match &*observed {
                    Some((seen, since)) if *seen == record => since.elapsed() >= held_for,
                    _ => {
                        *observed = Some((record, tokio::time::Instant::now()));
                        false
                    }
                }
            }
            (Some(holder), Some(_)) if !holder.is_empty() => false,
            _ => true,
        };
        if !mine && !expired {
            return Ok(false);
        }
        let mut lease = current;
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if mine { spec.acquire_time } else { Some(MicroTime(now)) },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + i32::from(!mine)),
            ..spec
        });
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(written) => {
                self.remember(written);
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn take_written(&self) -> Option<Lease> {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Keeps `written` (the lease this replica just wrote as its holder, as the API server
    /// returned it) for the next renewal.
    fn remember(&self, written: Lease) {
        let holder = written.spec.as_ref().and_then(|s| s.holder_identity.as_deref());
        let kept =
            (holder == Some(self.identity.as_str()) && written.metadata.resource_version.is_some()).then_some(written);
        *self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = kept;
    }

    /// Gives the lease up when this replica holds it (a controller stopping): the holder is
    /// cleared, so another replica takes over at its next try instead of a whole duration later.
    /// Best effort: a failure is logged, and the lease then expires as it would have.
    pub async fn release(&self) {
        self.take_written();
        let released = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else { return Ok(false) };
            let Some(spec) = lease.spec.as_mut().filter(|s| s.holder_identity.as_deref() == Some(&self.identity))
            else {
                return Ok(false);
            };
            spec.holder_identity = None;
            self.api.replace(&self.name, &PostParams::default(), &lease).await.map(|_| true)
        };
        match released.await {
            Ok(true) => tracing::info!(lease = %self.name, "released the leader lease"),
            Ok(false) => {}
            Err::<_, kube::Error>(error) => {
                tracing::warn!(%error, lease = %self.name, "cannot release the leader lease")
            }
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, lease = %self.name, "cannot reach the leader lease"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews the lease for as long as this replica holds it; returns when it does not any
    /// more, before another replica can have taken over.
    pub async fn hold(&self) -> LeaseError {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return LeaseError::Lost(self.name.clone()),
                // Keep trying while the lease is still ours for sure.
                Err(source) if last_renewed.elapsed() >= self.duration * 2 / 3 => {
                    return LeaseError::Renew { name: self.name.clone(), source };
                }
                Err(error) => tracing::warn!(%error, lease = %self.name, "renewing the leader lease failed; retrying"),
            }
        }
    }
}
