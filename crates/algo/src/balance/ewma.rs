//! The latency estimate behind `p2c-ewma` (linkerd's "peak EWMA"): react to a slowdown at
//! once, forget it gradually. A plain average keeps sending to an endpoint that just got slow
//! until enough samples dilute the past; taking a higher sample immediately makes the
//! balancer back off within one response.
//!
//! The runtime keeps one estimator per endpoint (behind a small lock or a seqlock of its
//! own), feeds it each observed latency ([`PeakEwma::observe`]) and each failure
//! ([`PeakEwma::observe_failure`], a penalty latency, so a fast-failing endpoint does not
//! look fast), and publishes [`PeakEwma::cost`] through [`super::LoadView::latency_cost`].

use std::time::Duration;

use crate::time::nanos;

/// The largest latency a failure penalty grows to: 60 s.
const MAX_PENALTY_NS: f64 = 60e9;

/// Estimator parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EwmaConfig {
    /// The decay window tau: an observation's weight falls by `e` every tau. Default 10 s.
    pub decay: Duration,
    /// The smallest latency a failure counts as. Default 1 s.
    pub failure_penalty: Duration,
}

impl Default for EwmaConfig {
    fn default() -> EwmaConfig {
        EwmaConfig {
            decay: Duration::from_secs(10),
            failure_penalty: Duration::from_secs(1),
        }
    }
}

/// A peak-sensitive, time-weighted moving average of latency, in nanoseconds.
///
/// * `observe(sample, now)`: a sample above the current (decayed) estimate replaces it
///   (peak); otherwise the estimate moves toward the sample by `1 - e^(-dt/tau)`, `dt` being
///   the time since the previous observation (samples close together move it little: it
///   averages over time, not over samples).
/// * `cost(now)`: the last estimate decayed toward 0 by `e^(-dt/tau)`. An endpoint that gets
///   no traffic (because it was slow) looks cheaper as time passes and is eventually tried
///   again, instead of being starved forever on one old peak.
/// * `observe_failure(now)`: a sample of `max(failure_penalty, 2 x cost(now))`, capped at
///   60 s, so a failure always looks worse than the endpoint's normal latency, and repeated
///   failures escalate.
///
/// A never-observed estimator has `cost == 0.0`: "no data", which `p2c-ewma` treats as
/// neutral. `now` is nanoseconds since the caller's origin; a `now` before the last
/// observation counts as no time elapsed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    estimate_ns: f64,
    stamp: u64,
    observed: bool,
    decay_ns: f64,
    penalty_ns: f64,
}

impl Default for PeakEwma {
    fn default() -> PeakEwma {
        PeakEwma::new(&EwmaConfig::default())
    }
}

impl PeakEwma {
    /// A fresh estimator without data.
    pub fn new(config: &EwmaConfig) -> PeakEwma {
        PeakEwma {
            estimate_ns: 0.0,
            stamp: 0,
            observed: false,
            decay_ns: nanos(config.decay).max(1) as f64,
            penalty_ns: nanos(config.failure_penalty) as f64,
        }
    }

    /// `e^(-dt/tau)` for the time since the last observation.
    fn keep(&self, now: u64) -> f64 {
        (-(now.saturating_sub(self.stamp) as f64) / self.decay_ns).exp()
    }

    /// Records one observed latency of `sample_ns` nanoseconds at `now`.
    pub fn observe(&mut self, sample_ns: u64, now: u64) {
        self.observe_f64(sample_ns as f64, now);
    }

    /// Records a failure at `now` as a penalty sample (see the type's documentation).
    pub fn observe_failure(&mut self, now: u64) {
        let penalty = self
            .penalty_ns
            .max(2.0 * self.cost(now))
            .min(MAX_PENALTY_NS);
        self.observe_f64(penalty, now);
    }

    fn observe_f64(&mut self, sample_ns: f64, now: u64) {
        if !self.observed {
            self.estimate_ns = sample_ns;
            self.observed = true;
        } else if sample_ns > self.cost(now) {
            self.estimate_ns = sample_ns;
        } else {
            let keep = self.keep(now);
            self.estimate_ns = self.estimate_ns * keep + sample_ns * (1.0 - keep);
        }
        self.stamp = self.stamp.max(now);
    }

    /// The estimate at `now`, in nanoseconds: what `LoadView::latency_cost` returns. `0.0`
    /// before the first observation.
    pub fn cost(&self, now: u64) -> f64 {
        if self.observed {
            self.estimate_ns * self.keep(now)
        } else {
            0.0
        }
    }

    /// Whether any sample or failure has been recorded.
    pub fn has_data(&self) -> bool {
        self.observed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn a_new_estimator_has_no_data() {
        let e = PeakEwma::default();
        assert_eq!(e.cost(0), 0.0);
        assert!(!e.has_data());
    }

    #[test]
    fn the_first_sample_is_the_estimate() {
        let mut e = PeakEwma::default();
        e.observe(20 * MS, 5 * S);
        assert_eq!(e.cost(5 * S), 20e6);
    }

    #[test]
    fn a_higher_sample_replaces_the_estimate_at_once() {
        let mut e = PeakEwma::default();
        e.observe(MS, 0);
        e.observe(200 * MS, MS);
        assert_eq!(e.cost(MS), 200e6);
    }

    #[test]
    fn a_lower_sample_moves_the_estimate_by_the_elapsed_time_share() {
        let mut e = PeakEwma::default();
        e.observe(100 * MS, 0);
        e.observe(10 * MS, 10 * S);
        let keep = (-1.0f64).exp();
        let expected = 100e6 * keep + 10e6 * (1.0 - keep);
        assert!(
            (e.cost(10 * S) - expected).abs() < 1.0,
            "{}",
            e.cost(10 * S)
        );
    }

    #[test]
    fn samples_in_quick_succession_barely_move_a_peak() {
        let mut e = PeakEwma::default();
        e.observe(100 * MS, 0);
        for i in 1..=10 {
            e.observe(MS, i);
        }
        assert!(e.cost(10) > 99e6);
    }

    #[test]
    fn an_idle_estimate_decays_toward_zero() {
        let mut e = PeakEwma::default();
        e.observe(100 * MS, 0);
        assert!((e.cost(20 * S) - 100e6 * (-2.0f64).exp()).abs() < 1.0);
        // time going backwards reads as no time elapsed
        e.observe(100 * MS, 30 * S);
        assert_eq!(e.cost(S), 100e6);
    }

    #[test]
    fn a_failure_counts_as_the_penalty_or_twice_the_estimate() {
        let mut e = PeakEwma::default();
        e.observe(MS, 0);
        e.observe_failure(MS);
        assert_eq!(e.cost(MS), 1e9);
        e.observe_failure(MS);
        assert_eq!(e.cost(MS), 2e9);
        for _ in 0..10 {
            e.observe_failure(MS);
        }
        assert_eq!(e.cost(MS), 60e9);
        let mut fresh = PeakEwma::default();
        fresh.observe_failure(0);
        assert_eq!(fresh.cost(0), 1e9);
    }
}
