//! The local runtime's scheduler: one task per object, a pass at a time, and one more pass when
//! asked again during one (so a trigger is never lost and passes over an object never overlap).
//! A failed pass is run again after a backoff ([`backoff_after`]: 2 s, 4 s, … 5 minutes).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use devdb_core::model::Key;
use devdb_core::reconcile::{Reconciler, Scheduler, backoff_after};
use devdb_core::runtime::Platform;

/// Runs passes of a [`Reconciler`] as tasks.
pub struct TaskScheduler<P: Platform> {
    /// Set once the reconciler exists (it holds this scheduler).
    reconciler: std::sync::OnceLock<Weak<Reconciler<P>>>,
    /// Objects being reconciled, each with "asked again meanwhile". A std mutex: held only to
    /// look up and flip entries, never across an await.
    inflight: Arc<Mutex<HashMap<Key, bool>>>,
}

impl<P: Platform> TaskScheduler<P> {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { reconciler: std::sync::OnceLock::new(), inflight: Arc::default() })
    }

    /// Gives the scheduler the reconciler whose passes it runs.
    pub fn bind(&self, reconciler: &Arc<Reconciler<P>>) {
        let _ = self.reconciler.set(Arc::downgrade(reconciler));
    }

    /// Whether any pass is running or asked for (for tests and shutdown).
    pub fn busy(&self) -> bool {
        !self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner).is_empty()
    }
}

impl<P: Platform> Scheduler for TaskScheduler<P> {
    fn schedule(&self, key: Key) {
        let Some(reconciler) = self.reconciler.get().and_then(Weak::upgrade) else {
            tracing::warn!(?key, "a pass was asked for before the reconciler exists");
            return;
        };
        {
            let mut inflight = self.inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(again) = inflight.get_mut(&key) {
                *again = true;
                return;
            }
            inflight.insert(key.clone(), false);
        }
        let inflight = self.inflight.clone();
        tokio::spawn(async move {
            let mut failures = 0;
            loop {
                if let Err(error) = reconciler.reconcile(&key).await {
                    failures += 1;
                    let delay = backoff_after(failures);
                    tracing::warn!(?key, %error, retry_in = ?delay, "reconcile failed");
                    // Still in flight meanwhile: a trigger now is served by the retry.
                    tokio::time::sleep(delay).await;
                    continue;
                }
                failures = 0;
                let mut inflight = inflight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match inflight.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => {
                        inflight.remove(&key);
                        break;
                    }
                }
            }
        });
    }
}
