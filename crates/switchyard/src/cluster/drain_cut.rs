//! The end of a drain (SPEC 3.1): an endpoint set draining gets no new requests, and the
//! exchanges still running on it may finish for its cluster's `drain_timeout`; then they
//! are cut, so the endpoint can be taken away without waiting on a stream that never ends.
//!
//! The signal is one flag and a [`Notify`] per endpoint. A response body checks the flag
//! each time it is polled (one atomic load) and, while it waits on the upstream, also
//! waits on the notification, so a cut reaches a silent body at once. Who fires it: the
//! once-a-second housekeeping for endpoints of the snapshot in force, and a timer per
//! endpoint a reload removed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

/// One endpoint's cut signal, shared with the exchanges running on it.
#[derive(Debug, Default)]
pub struct DrainCut {
    cut: AtomicBool,
    notify: Arc<Notify>,
}

impl DrainCut {
    /// Whether the drain's time is up: running exchanges end.
    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::Relaxed)
    }

    /// Ends the running exchanges (those waiting are woken). False if already cut.
    pub fn fire(&self) -> bool {
        let first = !self.cut.swap(true, Ordering::AcqRel);
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    /// A new drain (or none): later exchanges run.
    pub fn reset(&self) {
        self.cut.store(false, Ordering::Release);
    }

    /// A future that completes at the next [`DrainCut::fire`]. Made before reading
    /// [`DrainCut::is_cut`], a fire in between is not missed.
    pub fn fired(&self) -> OwnedNotified {
        Arc::clone(&self.notify).notified_owned()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fire_wakes_a_waiter_made_before_it_once_and_a_reset_clears_the_cut() {
        let cut = Arc::new(DrainCut::default());
        let waiter = cut.fired();
        assert!(!cut.is_cut());
        assert!(cut.fire());
        assert!(!cut.fire(), "a second fire changes nothing");
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap();
        assert!(cut.is_cut());
        cut.reset();
        assert!(!cut.is_cut());
    }
}
