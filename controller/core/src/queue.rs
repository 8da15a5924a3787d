//! The work queue of reconcile passes, one shape for every runtime and the tests: the
//! reconciler asks for a pass through a [`Queue`] (its [`Scheduler`]), and whoever runs passes
//! takes them from the [`Passes`] at the other end: [`run`] here (the local runtime, the core's
//! tests), or the kube-rs controllers of the Kubernetes runtime. The reconciler holds only the
//! sending end and the runner holds the reconciler, so neither owns the other.
//!
//! Passes are kept only while leading ([`Passes::lead`]): a Kubernetes replica that follows
//! drops those its API calls ask for rather than queue them for a leadership that may never
//! come (the leader follows the same changes through its watches, and a new leader reconciles
//! everything as it starts).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::Key;
use crate::reconcile::{Reconciler, Scheduler, backoff_after};
use crate::runtime::Platform;

/// The sending end: what the reconciler is given as its scheduler.
pub struct Queue {
    passes: mpsc::UnboundedSender<Key>,
    leading: Arc<AtomicBool>,
}

/// The receiving end: the passes asked for, while leading.
pub struct Passes {
    queue: mpsc::UnboundedReceiver<Key>,
    leading: Arc<AtomicBool>,
}

/// A queue, following (nothing is kept until [`Passes::lead`]).
pub fn channel() -> (Arc<Queue>, Passes) {
    let (passes, queue) = mpsc::unbounded_channel();
    let leading = Arc::new(AtomicBool::new(false));
    (Arc::new(Queue { passes, leading: leading.clone() }), Passes { queue, leading })
}

impl Scheduler for Queue {
    fn schedule(&self, key: Key) {
        if !self.leading.load(Ordering::Acquire) {
            tracing::trace!(?key, "a pass asked for while following: the leader runs its own");
            return;
        }
        // Closed only while the process stops, when a pass no longer matters.
        if self.passes.send(key).is_err() {
            tracing::debug!("a pass asked for while stopping");
        }
    }
}

impl Queue {
    /// Whether passes asked for are kept.
    pub fn leading(&self) -> bool {
        self.leading.load(Ordering::Acquire)
    }
}

impl Passes {
    /// Keeps the passes asked for from now on (this process runs them).
    pub fn lead(&self) {
        self.leading.store(true, Ordering::Release);
    }

    /// Drops the passes asked for from now on, and those kept and not yet taken.
    pub fn follow(&mut self) {
        self.leading.store(false, Ordering::Release);
        while self.queue.try_recv().is_ok() {}
    }

    /// The next pass asked for; `None` once every [`Queue`] is gone.
    pub async fn recv(&mut self) -> Option<Key> {
        self.queue.recv().await
    }

    /// A pass kept and not yet taken, if any.
    pub fn try_next(&mut self) -> Option<Key> {
        self.queue.try_recv().ok()
    }
}

/// Objects being reconciled by [`run`], each with "asked again meanwhile". A std mutex: held
/// only to look up and flip entries, never across an await.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashMap<Key, bool>>>);

impl InFlight {
    /// Whether any pass is running or asked for.
    pub fn busy(&self) -> bool {
        !self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, bool>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `key` in flight; `false` if it already was (it then runs once more).
    fn start(&self, key: &Key) -> bool {
        let mut inflight = self.lock();
        if let Some(again) = inflight.get_mut(key) {
            *again = true;
            return false;
        }
        inflight.insert(key.clone(), false);
        true
    }

    /// A pass of `key` ended: whether to run another (asked for meanwhile).
    fn again(&self, key: &Key) -> bool {
        let mut inflight = self.lock();
        match inflight.get_mut(key) {
            Some(again) if *again => {
                *again = false;
                true
            }
            _ => {
                inflight.remove(key);
                false
            }
        }
    }
}

/// Runs the passes of `passes` as tasks until `stop` or every [`Queue`] is gone: one task per
/// object, a pass at a time, and one more pass when asked again during one (so a trigger is
/// never lost and passes over an object never overlap). A failed pass is run again after a
/// backoff ([`backoff_after`]: 2 s, 4 s, … 5 minutes). Passes are kept from the call on, before
/// the future first runs.
pub fn run<P: Platform>(
    reconciler: Arc<Reconciler<P>>,
    mut passes: Passes,
    inflight: InFlight,
    stop: CancellationToken,
) -> impl Future<Output = ()> + Send {
    passes.lead();
    async move {
        while let Some(Some(key)) = stop.run_until_cancelled(passes.recv()).await {
            if !inflight.start(&key) {
                continue;
            }
            let (reconciler, inflight) = (reconciler.clone(), inflight.clone());
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
                    if !inflight.again(&key) {
                        break;
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devdb_shared::Name;

    fn key(name: &str) -> Key {
        Key::Database(Name::new(name).expect("name"))
    }

    #[test]
    fn a_follower_keeps_no_passes_and_a_leader_keeps_them_until_it_follows_again() {
        let (scheduler, mut passes) = channel();
        // Following: API calls on this replica ask for passes; none is queued.
        for _ in 0..10_000 {
            scheduler.schedule(key("kate-pg"));
        }
        assert_eq!(passes.try_next(), None, "no backlog to replay");
        // Leading: kept for the controllers.
        passes.lead();
        scheduler.schedule(key("kate-pg"));
        scheduler.schedule(key("bob-pg"));
        assert_eq!(passes.try_next(), Some(key("kate-pg")));
        // Following again: what was kept goes, and nothing is kept after.
        passes.follow();
        assert_eq!(passes.try_next(), None);
        scheduler.schedule(key("kate-pg"));
        assert_eq!(passes.try_next(), None);
    }

    #[tokio::test]
    async fn the_passes_end_when_every_queue_is_gone() {
        let (scheduler, mut passes) = channel();
        passes.lead();
        scheduler.schedule(key("a"));
        drop(scheduler);
        assert_eq!(passes.recv().await, Some(key("a")));
        assert_eq!(passes.recv().await, None);
    }

    #[test]
    fn a_key_asked_for_during_its_pass_runs_once_more_then_leaves() {
        let inflight = InFlight::default();
        assert!(inflight.start(&key("a")));
        assert!(!inflight.start(&key("a")), "in flight: not a second task");
        assert!(!inflight.start(&key("a")), "asked twice meanwhile: still one more pass");
        assert!(inflight.start(&key("b")));
        assert!(inflight.again(&key("a")));
        assert!(!inflight.again(&key("a")));
        assert!(inflight.busy(), "b is still in flight");
        assert!(!inflight.again(&key("b")));
        assert!(!inflight.busy());
    }
}
