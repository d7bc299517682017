//! The shutdown sequence as a value every task can watch.
//!
//! SPEC 3.1 "Shutdown": `/ready` turns 503 at once, listeners keep accepting for
//! `shutdown_delay`, then stop; open connections get the drain time and are then closed.
//! One shared phase carries the sequence, so an accept loop and a relay each wait for the
//! phase that concerns them without polling.
//!
//! Every connection task keeps a [`Reached`] future in its `select!`, which polls it each
//! time the task wakes: several times per request. So a poll that finds the phase not yet
//! reached and its waker already registered costs one atomic load and one waker
//! comparison, with no lock (a `watch` receiver takes a lock on every such poll). The
//! phase changes three times in a process's life, so a change simply wakes every waiter.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use slab::Slab;
use tokio::sync::Notify;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
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

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            0 => Phase::Running,
            1 => Phase::Draining,
            2 => Phase::StopAccepting,
            _ => Phase::Closed,
        }
    }
}

/// The phase and who waits for it to move.
#[derive(Debug)]
struct Shared {
    phase: AtomicU8,
    /// The trigger is gone (only when the server itself is): every wait ends.
    released: AtomicBool,
    waiters: Mutex<Slab<Waker>>,
}

impl Shared {
    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn reached(&self, phase: Phase) -> bool {
        self.phase() >= phase || self.released.load(Ordering::Acquire)
    }

    fn waiters(&self) -> MutexGuard<'_, Slab<Waker>> {
        // A waker list stays consistent even if a holder panicked.
        self.waiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes every waiter (each checks its own phase when polled). Callers change the state
    /// before calling, and a waiter checks the state again under the same lock before it
    /// registers, so no waiter sleeps through a change.
    fn wake_all(&self) {
        let wakers: Vec<Waker> = self
            .waiters()
            .iter()
            .map(|(_, waker)| waker.clone())
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }
}

/// The sending side, held by the server.
#[derive(Debug)]
pub struct ShutdownTrigger {
    shared: Arc<Shared>,
}

/// A receiver of phase changes, one per task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

/// A new trigger and its first receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(Phase::Running as u8),
        released: AtomicBool::new(false),
        waiters: Mutex::new(Slab::new()),
    });
    let receiver = Shutdown {
        shared: Arc::clone(&shared),
    };
    (ShutdownTrigger { shared }, receiver)
}

impl ShutdownTrigger {
    /// Moves to `phase` (never backwards).
    pub fn advance(&self, phase: Phase) {
        let previous = self.shared.phase.fetch_max(phase as u8, Ordering::AcqRel);
        if previous < phase as u8 {
            self.shared.wake_all();
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// Another receiver.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        self.shared.released.store(true, Ordering::Release);
        self.shared.wake_all();
    }
}

impl Shutdown {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.shared.phase()
    }

    /// Resolves once the phase is at least `phase` (at once if it already is; also when the
    /// trigger is gone, which only happens when the server itself is gone). The future owns
    /// what it needs, so a connection can keep it across waits.
    pub fn reached(&self, phase: Phase) -> Reached {
        Reached {
            shared: Arc::clone(&self.shared),
            phase,
            registered: None,
        }
    }
}

/// The future [`Shutdown::reached`] returns.
#[derive(Debug)]
pub struct Reached {
    shared: Arc<Shared>,
    phase: Phase,
    /// The waiter slot and a copy of the waker stored there.
    registered: Option<(usize, Waker)>,
}

impl Reached {
    fn unregister(&mut self) {
        if let Some((key, _)) = self.registered.take() {
            self.shared.waiters().try_remove(key);
        }
    }
}

impl Future for Reached {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.shared.reached(this.phase) {
            this.unregister();
            return Poll::Ready(());
        }
        if let Some((_, waker)) = &this.registered {
            if waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        let mut waiters = this.shared.waiters();
        // Checked again under the lock a change wakes under (see `Shared::wake_all`).
        if this.shared.reached(this.phase) {
            drop(waiters);
            this.unregister();
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        let slot = this.registered.as_ref().map(|(key, _)| *key);
        let key = match slot.filter(|key| waiters.contains(*key)) {
            Some(key) => {
                if let Some(stored) = waiters.get_mut(key) {
                    stored.clone_from(&waker);
                }
                key
            }
            None => waiters.insert(waker.clone()),
        };
        drop(waiters);
        this.registered = Some((key, waker));
        Poll::Pending
    }
}

impl Drop for Reached {
    fn drop(&mut self) {
        self.unregister();
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
        let (trigger, shutdown) = channel();
        trigger.advance(Phase::StopAccepting);
        trigger.advance(Phase::Draining);
        assert_eq!(shutdown.phase(), Phase::StopAccepting);
        shutdown.reached(Phase::Draining).await;
    }

    fn poll_once(future: &mut Reached, waker: &Waker) -> Poll<()> {
        Pin::new(future).poll(&mut Context::from_waker(waker))
    }

    fn waiting(shutdown: &Shutdown) -> usize {
        shutdown.shared.waiters().len()
    }

    #[test]
    fn a_wait_registers_once_and_leaves_no_slot_behind() {
        let (trigger, shutdown) = channel();
        let waker = Waker::noop();
        let mut closed = shutdown.reached(Phase::Closed);
        assert_eq!(poll_once(&mut closed, waker), Poll::Pending);
        assert_eq!(poll_once(&mut closed, waker), Poll::Pending);
        assert_eq!(waiting(&shutdown), 1, "re-polling does not register again");
        let mut stop = shutdown.reached(Phase::StopAccepting);
        assert_eq!(poll_once(&mut stop, waker), Poll::Pending);
        assert_eq!(waiting(&shutdown), 2);
        drop(stop);
        assert_eq!(waiting(&shutdown), 1, "a dropped wait unregisters");
        trigger.advance(Phase::StopAccepting);
        assert_eq!(poll_once(&mut closed, waker), Poll::Pending);
        trigger.advance(Phase::Closed);
        assert_eq!(poll_once(&mut closed, waker), Poll::Ready(()));
        assert_eq!(waiting(&shutdown), 0, "a finished wait unregisters");
    }

    #[tokio::test]
    async fn a_change_wakes_the_task_waiting_for_it() {
        let (trigger, shutdown) = channel();
        let waiter = tokio::spawn(shutdown.reached(Phase::Closed));
        tokio::task::yield_now().await;
        trigger.advance(Phase::StopAccepting);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "an earlier phase does not end the wait"
        );
        trigger.advance(Phase::Closed);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }

    #[tokio::test]
    async fn a_dropped_trigger_ends_every_wait() {
        let (trigger, shutdown) = channel();
        let waiter = tokio::spawn(shutdown.reached(Phase::Closed));
        tokio::task::yield_now().await;
        drop(trigger);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(shutdown.phase(), Phase::Running);
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
