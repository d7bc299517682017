//! Circuit breakers and bulkheads (SPEC 3 `[cluster.limits]`): bounded gauges for
//! connections, pending and active requests, so an overloaded cluster sheds with a fast 503
//! instead of queueing without bound; and a consecutive-failure breaker that stops sending
//! to a failing dependency for a while and probes it before closing again.
//!
//! The gauges are atomics (lock-free, shared by every worker) with an explicit `release`:
//! no guard type, so the runtime can move the release wherever the work really ends
//! (a streamed body, a pooled connection) without tying it to a scope.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::time::nanos;

/// Which limit refused an acquisition; `as_str` is the `shed_total` reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    /// `max_connections`.
    Connections,
    /// `max_pending_requests`.
    Pending,
    /// `max_requests`.
    Requests,
}

impl Limit {
    /// The `shed_total{reason}` word.
    pub fn as_str(&self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::Pending => "pending",
            Limit::Requests => "requests",
        }
    }
}

/// A refused acquisition: the limit that was full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimitReached {
    /// The limit.
    pub limit: Limit,
    /// Its configured maximum.
    pub max: u64,
}

/// A bounded counter: `try_acquire` increments unless the maximum is reached; `release`
/// decrements (saturating at 0, so a double release cannot wrap).
#[derive(Debug)]
pub struct Gauge {
    max: u64,
    current: AtomicU64,
}

impl Gauge {
    /// A gauge admitting at most `max` holders; `u64::MAX` = unlimited.
    pub fn new(max: u64) -> Gauge {
        Gauge {
            max,
            current: AtomicU64::new(0),
        }
    }

    /// Takes one unit, or `false` when `max` are held.
    pub fn try_acquire(&self) -> bool {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c < self.max).then_some(c + 1)
            })
            .is_ok()
    }

    /// Gives one unit back.
    pub fn release(&self) {
        let _ = self
            .current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(1))
            });
    }

    /// Units held now.
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Acquire)
    }

    /// The maximum.
    pub fn max(&self) -> u64 {
        self.max
    }
}

/// The per-cluster limits as three gauges.
#[derive(Debug)]
pub struct Limits {
    connections: Gauge,
    pending: Gauge,
    requests: Gauge,
}

impl Limits {
    /// Limits of `max_connections`, `max_pending_requests` and `max_requests`
    /// (`u64::MAX` = unlimited).
    pub fn new(max_connections: u64, max_pending: u64, max_requests: u64) -> Limits {
        Limits {
            connections: Gauge::new(max_connections),
            pending: Gauge::new(max_pending),
            requests: Gauge::new(max_requests),
        }
    }

    /// The gauge behind `limit`.
    pub fn gauge(&self, limit: Limit) -> &Gauge {
        match limit {
            Limit::Connections => &self.connections,
            Limit::Pending => &self.pending,
            Limit::Requests => &self.requests,
        }
    }

    /// Takes one unit of `limit`, or names the full limit. Each success needs exactly one
    /// [`Limits::release`] of the same limit.
    pub fn try_acquire(&self, limit: Limit) -> Result<(), LimitReached> {
        let g = self.gauge(limit);
        if g.try_acquire() {
            Ok(())
        } else {
            Err(LimitReached {
                limit,
                max: g.max(),
            })
        }
    }

    /// Gives one unit of `limit` back.
    pub fn release(&self, limit: Limit) {
        self.gauge(limit).release();
    }
}

impl Default for Limits {
    /// SPEC 3.1 defaults: 1024 connections, 1024 pending, 1024 requests.
    fn default() -> Limits {
        Limits::new(1024, 1024, 1024)
    }
}

/// The state of a [`Breaker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; consecutive failures are counted.
    Closed,
    /// Requests are refused until the open period ends.
    Open,
    /// One probe request is allowed; its outcome closes or re-opens the breaker.
    HalfOpen,
}

/// A consecutive-failure circuit breaker: `threshold` failures in a row open it for
/// `open_for`; then one probe is let through (half-open); a success closes it, a failure
/// opens it again. Pure state over explicit time; the runtime guards it with a mutex.
#[derive(Clone, Debug)]
pub struct Breaker {
    threshold: u32,
    open_ns: u64,
    failures: u32,
    state: BreakerState,
    open_until: u64,
    probe_out: bool,
}

impl Breaker {
    /// A closed breaker opening after `threshold` (at least 1) consecutive failures.
    pub fn new(threshold: u32, open_for: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            open_ns: nanos(open_for),
            failures: 0,
            state: BreakerState::Closed,
            open_until: 0,
            probe_out: false,
        }
    }

    /// The state at `now` (an open breaker whose period ended reads as half-open).
    pub fn state(&self, now: u64) -> BreakerState {
        match self.state {
            BreakerState::Open if now >= self.open_until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Whether a request may go now. In half-open state only one probe is admitted until its
    /// outcome is recorded.
    pub fn allow(&mut self, now: u64) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => {
                self.state = BreakerState::HalfOpen;
                if self.probe_out {
                    false
                } else {
                    self.probe_out = true;
                    true
                }
            }
        }
    }

    /// Records the outcome of an admitted request at `now`.
    pub fn record(&mut self, success: bool, now: u64) {
        if success {
            self.failures = 0;
            self.state = BreakerState::Closed;
            self.probe_out = false;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        let probing = self.state(now) == BreakerState::HalfOpen;
        if probing || self.failures >= self.threshold {
            self.state = BreakerState::Open;
            self.open_until = now.saturating_add(self.open_ns);
            self.probe_out = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gauge_refuses_past_its_maximum_and_names_the_limit() {
        let l = Limits::new(2, 1, u64::MAX);
        assert!(l.try_acquire(Limit::Connections).is_ok());
        assert!(l.try_acquire(Limit::Connections).is_ok());
        assert_eq!(
            l.try_acquire(Limit::Connections),
            Err(LimitReached {
                limit: Limit::Connections,
                max: 2
            })
        );
        l.release(Limit::Connections);
        assert!(l.try_acquire(Limit::Connections).is_ok());
        assert!(l.try_acquire(Limit::Pending).is_ok());
        assert_eq!(
            l.try_acquire(Limit::Pending).map_err(|e| e.limit.as_str()),
            Err("pending")
        );
        assert!((0..10_000).all(|_| l.try_acquire(Limit::Requests).is_ok()));
    }

    #[test]
    fn a_double_release_does_not_wrap() {
        let g = Gauge::new(1);
        g.release();
        assert_eq!(g.current(), 0);
        assert!(g.try_acquire());
        assert!(!g.try_acquire());
    }

    #[test]
    fn gauges_hold_under_contention() {
        let g = std::sync::Arc::new(Gauge::new(100));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let g = g.clone();
                std::thread::spawn(move || (0..1_000).filter(|_| g.try_acquire()).count())
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
        assert_eq!(total, 100);
        assert_eq!(g.current(), 100);
    }

    #[test]
    fn the_breaker_opens_probes_and_closes() {
        let s = 1_000_000_000;
        let mut b = Breaker::new(3, Duration::from_secs(5));
        for _ in 0..2 {
            assert!(b.allow(0));
            b.record(false, 0);
        }
        assert_eq!(b.state(0), BreakerState::Closed);
        b.record(false, 0);
        assert_eq!(b.state(0), BreakerState::Open);
        assert!(!b.allow(4 * s));
        assert!(b.allow(5 * s));
        assert!(!b.allow(5 * s), "one probe at a time");
        b.record(false, 5 * s);
        assert_eq!(b.state(9 * s), BreakerState::Open);
        assert!(b.allow(10 * s));
        b.record(true, 10 * s);
        assert_eq!(b.state(10 * s), BreakerState::Closed);
        assert!(b.allow(10 * s));
    }
}
