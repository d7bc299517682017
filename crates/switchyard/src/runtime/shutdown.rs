//! The shutdown sequence as a value every task can watch.
//!
//! SPEC 3.1 "Shutdown": `/ready` turns 503 at once, listeners keep accepting for
//! `shutdown_delay`, then stop; open connections get the drain time and are then closed.
//! One `watch` channel carries the phase, so an accept loop and a relay each wait for the
//! phase that concerns them without polling.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Serving.
    Running,
    /// Shutdown began: `/ready` is 503, listeners still accept (`shutdown_delay`).
    Draining,
    /// Listeners closed; open connections finish within the drain time.
    StopAccepting,
    /// The drain time is over: every connection is closed now.
    Closed,
}

/// The sending side, held by the server.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<Phase>,
}

/// A receiver of phase changes, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    rx: watch::Receiver<Phase>,
}

/// A new trigger and its first receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(Phase::Running);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    /// Moves to `phase` (never backwards).
    pub fn advance(&self, phase: Phase) {
        self.tx.send_if_modified(|current| {
            if phase > *current {
                *current = phase;
                true
            } else {
                false
            }
        });
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.tx.borrow()
    }

    /// Another receiver.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

impl Shutdown {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.rx.borrow()
    }

    /// Resolves once the phase is at least `phase` (at once if it already is; also when the
    /// trigger is gone, which only happens when the server itself is gone).
    pub async fn reached(&mut self, phase: Phase) {
        let _ = self.rx.wait_for(|current| *current >= phase).await;
    }
}

/// Counts open connections so the drain can wait for the last one.
#[derive(Debug, Default)]
pub struct ConnectionTracker {
    open: AtomicUsize,
    idle: Notify,
}

/// Held while a connection is open; dropping it counts the connection closed.
#[derive(Debug)]
pub struct TrackedConnection {
    tracker: Arc<ConnectionTracker>,
}

impl ConnectionTracker {
    /// Counts a new connection.
    pub fn track(self: &Arc<Self>) -> TrackedConnection {
        self.open.fetch_add(1, Ordering::AcqRel);
        TrackedConnection {
            tracker: Arc::clone(self),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Resolves when no connection is open.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.open() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for TrackedConnection {
    fn drop(&mut self) {
        if self.tracker.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn phases_only_move_forward() {
        let (trigger, mut shutdown) = channel();
        trigger.advance(Phase::StopAccepting);
        trigger.advance(Phase::Draining);
        assert_eq!(shutdown.phase(), Phase::StopAccepting);
        shutdown.reached(Phase::Draining).await;
    }

    #[tokio::test]
    async fn tracker_wakes_when_the_last_connection_closes() {
        let tracker = Arc::new(ConnectionTracker::default());
        let a = tracker.track();
        let b = tracker.track();
        assert_eq!(tracker.open(), 2);
        let waiter = tokio::spawn({
            let tracker = Arc::clone(&tracker);
            async move { tracker.wait_idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(b);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
