//! Endpoint health as pure state machines: active-check flips, the slow-start ramp and the
//! SPEC's state precedence. The runtime's health tasks and admin API only feed events in and
//! read states out, so "how many passes make an endpoint healthy" or "which state wins when
//! an endpoint is both drained and ejected" is decided once, here, with exact tests.

use std::time::Duration;

/// A change of an endpoint's active-health verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// `healthy_threshold` consecutive passes turned an unhealthy endpoint healthy.
    BecameHealthy,
    /// `unhealthy_threshold` consecutive failures turned a healthy endpoint unhealthy.
    BecameUnhealthy,
}

/// Active-check state of one endpoint: its verdict and the current run of results that
/// contradict it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthState {
    healthy: bool,
    streak: u32,
}

impl HealthState {
    /// A state starting healthy or not. SPEC 3.1: without `[cluster.health]` endpoints start
    /// healthy; with it, a new endpoint starts unhealthy and one pass admits it (the runtime
    /// passes `healthy_threshold = 1` for that first round, or uses [`HealthState::admit`]).
    pub fn new(initially_healthy: bool) -> HealthState {
        HealthState {
            healthy: initially_healthy,
            streak: 0,
        }
    }

    /// Whether the verdict is healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy
    }

    /// Records one check result. The verdict flips after `healthy_threshold` consecutive
    /// passes (when unhealthy) or `unhealthy_threshold` consecutive failures (when healthy);
    /// a threshold of 0 counts as 1. A result agreeing with the verdict resets the run.
    pub fn record(
        &mut self,
        pass: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<Transition> {
        if pass == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        let threshold = if pass {
            healthy_threshold
        } else {
            unhealthy_threshold
        }
        .max(1);
        if self.streak < threshold {
            return None;
        }
        self.healthy = pass;
        self.streak = 0;
        Some(if pass {
            Transition::BecameHealthy
        } else {
            Transition::BecameUnhealthy
        })
    }

    /// Marks a never-checked endpoint healthy after its first pass (SPEC 3.1: "one pass
    /// admits it"); returns the transition if the verdict changed.
    pub fn admit(&mut self) -> Option<Transition> {
        self.record(true, 1, 1)
    }
}

/// The slow-start multiplier of an endpoint that became usable `since_usable` ago: linear
/// from 0.1 at 0 to 1.0 at `window` (SPEC 3: "effective weight ramps linearly from 10% to
/// 100%"), 1.0 from then on and whenever `window` is zero.
pub fn slow_start_factor(since_usable: Duration, window: Duration) -> f64 {
    if window.is_zero() || since_usable >= window {
        return 1.0;
    }
    0.1 + 0.9 * (since_usable.as_secs_f64() / window.as_secs_f64())
}

/// [`slow_start_factor`] from instants: the endpoint became usable at `usable_at`, it is now
/// `now` (nanoseconds; a `now` before `usable_at` reads as just usable).
pub fn slow_start_factor_at(usable_at: u64, now: u64, window: Duration) -> f64 {
    slow_start_factor(Duration::from_nanos(now.saturating_sub(usable_at)), window)
}

/// An endpoint's externally visible state (SPEC 5 `state`), by the precedence of SPEC 3.1:
/// draining > unhealthy > ejected > slow-starting > healthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointState {
    /// Operator drain, removed from config or DNS: no new work, in-flight work finishes.
    Draining,
    /// Failing active health checks.
    Unhealthy,
    /// Ejected by outlier detection.
    Ejected,
    /// Usable, weight still ramping up.
    SlowStarting,
    /// Usable at full weight.
    Healthy,
}

impl EndpointState {
    /// Every state, in precedence order.
    pub const ALL: [EndpointState; 5] = [
        EndpointState::Draining,
        EndpointState::Unhealthy,
        EndpointState::Ejected,
        EndpointState::SlowStarting,
        EndpointState::Healthy,
    ];

    /// The state from its ingredients, by precedence.
    pub fn resolve(draining: bool, healthy: bool, ejected: bool, slow_starting: bool) -> Self {
        if draining {
            EndpointState::Draining
        } else if !healthy {
            EndpointState::Unhealthy
        } else if ejected {
            EndpointState::Ejected
        } else if slow_starting {
            EndpointState::SlowStarting
        } else {
            EndpointState::Healthy
        }
    }

    /// The word of the admin API and the `endpoint_state` metric.
    pub fn as_str(&self) -> &'static str {
        match self {
            EndpointState::Draining => "draining",
            EndpointState::Unhealthy => "unhealthy",
            EndpointState::Ejected => "ejected",
            EndpointState::SlowStarting => "slow-starting",
            EndpointState::Healthy => "healthy",
        }
    }

    /// Whether the endpoint may take new work outside panic mode.
    pub fn is_usable(&self) -> bool {
        matches!(self, EndpointState::SlowStarting | EndpointState::Healthy)
    }

    /// Whether the endpoint may take new work: usable, or in panic mode (SPEC 3.1) anything
    /// but draining. Weight 0 is the picker's business, not a state.
    pub fn is_eligible(&self, in_panic: bool) -> bool {
        self.is_usable() || (in_panic && *self != EndpointState::Draining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_flip_a_healthy_endpoint_only_after_the_threshold() {
        let mut h = HealthState::new(true);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), Some(Transition::BecameUnhealthy));
        assert!(!h.is_healthy());
        assert_eq!(h.record(false, 2, 3), None);
    }

    #[test]
    fn a_pass_in_between_resets_the_failure_run() {
        let mut h = HealthState::new(true);
        h.record(false, 2, 3);
        h.record(false, 2, 3);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert_eq!(h.record(false, 2, 3), None);
        assert!(h.is_healthy());
    }

    #[test]
    fn passes_flip_an_unhealthy_endpoint_after_the_healthy_threshold() {
        let mut h = HealthState::new(false);
        assert_eq!(h.record(true, 2, 3), None);
        assert_eq!(h.record(true, 2, 3), Some(Transition::BecameHealthy));
        let mut fresh = HealthState::new(false);
        assert_eq!(fresh.admit(), Some(Transition::BecameHealthy));
        let mut zero = HealthState::new(true);
        assert_eq!(zero.record(false, 0, 0), Some(Transition::BecameUnhealthy));
    }

    #[test]
    fn slow_start_ramps_linearly_from_ten_percent() {
        let w = Duration::from_secs(30);
        assert_eq!(slow_start_factor(Duration::ZERO, w), 0.1);
        assert!((slow_start_factor(Duration::from_secs(15), w) - 0.55).abs() < 1e-12);
        assert_eq!(slow_start_factor(Duration::from_secs(30), w), 1.0);
        assert_eq!(slow_start_factor(Duration::from_secs(90), w), 1.0);
        assert_eq!(slow_start_factor(Duration::ZERO, Duration::ZERO), 1.0);
        assert!((slow_start_factor_at(10_000_000_000, 20_000_000_000, w) - 0.4).abs() < 1e-12);
        assert_eq!(slow_start_factor_at(5, 0, w), 0.1);
    }

    #[test]
    fn state_precedence_follows_the_spec() {
        assert_eq!(
            EndpointState::resolve(true, false, true, true),
            EndpointState::Draining
        );
        assert_eq!(
            EndpointState::resolve(false, false, true, true),
            EndpointState::Unhealthy
        );
        assert_eq!(
            EndpointState::resolve(false, true, true, true),
            EndpointState::Ejected
        );
        assert_eq!(
            EndpointState::resolve(false, true, false, true),
            EndpointState::SlowStarting
        );
        assert_eq!(
            EndpointState::resolve(false, true, false, false).as_str(),
            "healthy"
        );
        assert!(EndpointState::Ejected.is_eligible(true));
        assert!(!EndpointState::Ejected.is_eligible(false));
        assert!(!EndpointState::Draining.is_eligible(true));
    }
}
