//! The bounds of an exchange after its response head (SPEC 3.1): it ends when no bytes
//! moved either way for the listener's `idle_timeout`, and when the route's
//! `max_duration` (from the request's arrival) has passed.
//!
//! The clock rides on the response body ([`super::body::ResponseBody`]), the one thing
//! both servers poll for as long as the exchange lasts, so HTTP/1.1 and HTTP/2 share it.
//! It costs nothing while the body keeps coming: a timer is made only the first time the
//! upstream makes the body wait, and is moved only when it fires. A request body still
//! streaming upstream counts as bytes moving (a bidirectional gRPC call whose server is
//! silent for a while is not idle); that is read from the request's byte count when the
//! timer fires, so such an exchange is checked again one `idle_timeout` later.
//!
//! A client that stops reading is the servers' own business: the body is then not polled
//! at all, so each server bounds its own writes by `idle_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use tokio::sync::futures::OwnedNotified;

use super::body::BodyProgress;
use crate::cluster::drain_cut::DrainCut;

/// Which bound ended an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExchangeTimeout {
    /// No bytes either way for `idle_timeout`.
    #[error("no bytes either way for idle_timeout ({0:?})")]
    Idle(Duration),
    /// The route's `max_duration` passed.
    #[error("exchange longer than max_duration")]
    MaxDuration,
    /// The endpoint has been draining for its cluster's `drain_timeout`.
    #[error("the endpoint's drain_timeout passed")]
    Drained,
}

/// The after-head clock of one exchange.
#[derive(Debug)]
pub struct ExchangeClock {
    idle: Duration,
    /// The request's arrival plus `max_duration`.
    deadline: Option<Instant>,
    /// The request body's byte count, read when the timer fires.
    request: Option<Arc<BodyProgress>>,
    /// The endpoint's drain signal.
    drain: Option<Arc<DrainCut>>,
    /// Waits for the drain's cut while the body waits (made with the timer).
    drain_fired: Option<Pin<Box<OwnedNotified>>>,
    /// Made the first time the body waits; `None` until then.
    timer: Option<Pin<Box<Sleep>>>,
    /// When bytes last moved, once the timer exists (before, nobody asks).
    last_moved: Option<Instant>,
    /// The request's byte count at `last_moved`.
    request_bytes: u64,
}

impl ExchangeClock {
    /// A clock for an exchange bounded by `idle` and, if set, ending at `deadline`;
    /// `request` is the request body's progress, whose bytes count as movement; `drain`
    /// is the endpoint's drain signal, which ends the exchange when it fires.
    pub fn new(
        idle: Duration,
        deadline: Option<Instant>,
        request: Option<Arc<BodyProgress>>,
        drain: Option<Arc<DrainCut>>,
    ) -> ExchangeClock {
        ExchangeClock {
            idle,
            deadline,
            request,
            drain,
            drain_fired: None,
            timer: None,
            last_moved: None,
            request_bytes: 0,
        }
    }

    /// Whether the endpoint's drain has run out (checked before each poll of the body).
    pub fn is_drained(&self) -> bool {
        self.drain.as_ref().is_some_and(|drain| drain.is_cut())
    }

    /// A piece of the body came: the idle clock starts again.
    pub fn moved(&mut self) {
        // Before the first wait nothing reads `last_moved`: no clock read per frame on the
        // common path, where the body never waits.
        if self.timer.is_some() {
            self.last_moved = Some(Instant::now());
        }
    }

    /// Called when the body is not ready: `Ready` once a bound has passed, else the timer
    /// is armed to wake `cx` at the next one.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<ExchangeTimeout> {
        if let Some(drain) = &self.drain {
            // Made before the flag is read: a cut in between still wakes this wait.
            let fired = self
                .drain_fired
                .get_or_insert_with(|| Box::pin(drain.fired()));
            if fired.as_mut().poll(cx).is_ready() || drain.is_cut() {
                return Poll::Ready(ExchangeTimeout::Drained);
            }
        }
        if self.timer.is_none() {
            self.last_moved = Some(Instant::now());
            self.request_bytes = self.request_bytes();
            self.timer = Some(Box::pin(tokio::time::sleep_until(self.due())));
        }
        loop {
            let Some(timer) = self.timer.as_mut() else {
                return Poll::Pending;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if self.deadline.is_some_and(|deadline| now >= deadline) {
                return Poll::Ready(ExchangeTimeout::MaxDuration);
            }
            let request_bytes = self.request_bytes();
            if request_bytes != self.request_bytes {
                self.request_bytes = request_bytes;
                self.last_moved = Some(now);
            }
            if self.last_moved.is_some_and(|last| now >= last + self.idle) {
                return Poll::Ready(ExchangeTimeout::Idle(self.idle));
            }
            let due = self.due();
            if let Some(timer) = self.timer.as_mut() {
                timer.as_mut().reset(due);
            }
        }
    }

    fn request_bytes(&self) -> u64 {
        self.request.as_ref().map_or(0, |progress| progress.bytes())
    }

    /// The next moment a bound may pass.
    fn due(&self) -> Instant {
        let last_moved = self.last_moved.unwrap_or_else(Instant::now);
        let idle = last_moved + self.idle;
        self.deadline.map_or(idle, |deadline| idle.min(deadline))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    async fn expiry(clock: &mut ExchangeClock) -> ExchangeTimeout {
        poll_fn(|cx| clock.poll_expired(cx)).await
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_waits_for_idle_timeout_expires_then() {
        let mut clock = ExchangeClock::new(Duration::from_secs(60), None, None, None);
        let start = Instant::now();
        assert_eq!(
            expiry(&mut clock).await,
            ExchangeTimeout::Idle(Duration::from_secs(60))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn movement_restarts_the_idle_clock_from_the_last_piece() {
        let mut clock = ExchangeClock::new(Duration::from_secs(10), None, None, None);
        let start = Instant::now();
        let waiting = tokio::time::timeout(Duration::from_secs(7), expiry(&mut clock)).await;
        assert!(waiting.is_err());
        clock.moved();
        assert_eq!(
            expiry(&mut clock).await,
            ExchangeTimeout::Idle(Duration::from_secs(10))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(17));
    }

    #[tokio::test(start_paused = true)]
    async fn max_duration_ends_a_body_that_keeps_moving() {
        let start = Instant::now();
        let mut clock = ExchangeClock::new(
            Duration::from_secs(10),
            Some(start + Duration::from_secs(25)),
            None,
            None,
        );
        for _ in 0..4 {
            let waiting = tokio::time::timeout(Duration::from_secs(5), expiry(&mut clock)).await;
            assert!(waiting.is_err());
            clock.moved();
        }
        assert_eq!(expiry(&mut clock).await, ExchangeTimeout::MaxDuration);
        assert_eq!(start.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn request_bytes_count_as_movement_checked_when_the_timer_fires() {
        let progress = Arc::new(BodyProgress::default());
        let mut clock =
            ExchangeClock::new(Duration::from_secs(10), None, Some(progress.clone()), None);
        let start = Instant::now();
        let waiting = tokio::time::timeout(Duration::from_secs(4), expiry(&mut clock)).await;
        assert!(waiting.is_err());
        progress.add(100);
        // Fires at 10 s, sees the request moved, and counts again from then.
        assert_eq!(
            expiry(&mut clock).await,
            ExchangeTimeout::Idle(Duration::from_secs(10))
        );
        assert_eq!(start.elapsed(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_cut_ends_a_waiting_body_at_once_and_is_seen_before_a_poll() {
        let drain = Arc::new(DrainCut::default());
        let mut clock = ExchangeClock::new(
            Duration::from_secs(60),
            None,
            None,
            Some(Arc::clone(&drain)),
        );
        let start = Instant::now();
        assert!(!clock.is_drained());
        let cutter = {
            let drain = Arc::clone(&drain);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                drain.fire();
            })
        };
        assert_eq!(expiry(&mut clock).await, ExchangeTimeout::Drained);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(clock.is_drained());
        cutter.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_already_past_expires_at_the_first_wait() {
        let start = Instant::now();
        let mut clock = ExchangeClock::new(Duration::from_secs(10), Some(start), None, None);
        assert_eq!(expiry(&mut clock).await, ExchangeTimeout::MaxDuration);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
