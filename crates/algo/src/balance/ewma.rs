//! The latency estimate behind `p2c-ewma` (linkerd's "peak EWMA"): react to a slowdown at once,
//! forget it gradually. A plain average keeps sending to an endpoint that just got slow until
//! enough samples dilute the past; taking a higher sample immediately makes the balancer back off
//! within one response.
//!
//! The runtime keeps one estimator per endpoint ([`AtomicPeakEwma`] lock-free, or a plain
//! [`PeakEwma`] behind a lock of its own), feeds it each observed latency ([`PeakEwma::observe`])
//! and each failure ([`PeakEwma::observe_failure`], a penalty latency, so a fast-failing endpoint
//! does not look fast), and publishes [`PeakEwma::cost`] through [`super::LoadView::latency_cost`].

use std::sync::atomic::{AtomicU64, Ordering};
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

/// [`PeakEwma`] shared by threads without a lock: the estimate (f64 bits) and the stamp live
/// in two atomics; an observation updates the estimate with a compare-and-swap loop and
/// moves the stamp forward with `fetch_max`. Two observations racing may each compute from
/// the other's half-updated pair; the result stays between their two outcomes, which a
/// load-balancing heuristic tolerates, and no sample is lost to a torn write.
#[derive(Debug)]
pub struct AtomicPeakEwma {
    /// `f64::to_bits` of the estimate; `NO_DATA` before the first observation.
    estimate: AtomicU64,
    stamp: AtomicU64,
    decay_ns: f64,
    penalty_ns: f64,
}

/// An impossible estimate (a NaN payload) meaning "no data".
const NO_DATA: u64 = u64::MAX;

impl Default for AtomicPeakEwma {
    fn default() -> AtomicPeakEwma {
        AtomicPeakEwma::new(&EwmaConfig::default())
    }
}

impl AtomicPeakEwma {
    /// A fresh estimator without data.
    pub fn new(config: &EwmaConfig) -> AtomicPeakEwma {
        AtomicPeakEwma {
            estimate: AtomicU64::new(NO_DATA),
            stamp: AtomicU64::new(0),
            decay_ns: nanos(config.decay).max(1) as f64,
            penalty_ns: nanos(config.failure_penalty) as f64,
        }
    }

    fn keep(&self, stamp: u64, now: u64) -> f64 {
        (-(now.saturating_sub(stamp) as f64) / self.decay_ns).exp()
    }

    /// As [`PeakEwma::cost`].
    pub fn cost(&self, now: u64) -> f64 {
        let bits = self.estimate.load(Ordering::Acquire);
        if bits == NO_DATA {
            return 0.0;
        }
        f64::from_bits(bits) * self.keep(self.stamp.load(Ordering::Acquire), now)
    }

    /// As [`PeakEwma::observe`].
    pub fn observe(&self, sample_ns: u64, now: u64) {
        self.observe_f64(sample_ns as f64, now);
    }

    /// As [`PeakEwma::observe_failure`].
    pub fn observe_failure(&self, now: u64) {
        let penalty = self
            .penalty_ns
            .max(2.0 * self.cost(now))
            .min(MAX_PENALTY_NS);
        self.observe_f64(penalty, now);
    }

    fn observe_f64(&self, sample_ns: f64, now: u64) {
        let stamp = self.stamp.load(Ordering::Acquire);
        let keep = self.keep(stamp, now);
        let _ = self
            .estimate
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
                if bits == NO_DATA {
                    return Some(sample_ns.to_bits());
                }
                let old = f64::from_bits(bits);
                let next = if sample_ns > old * keep {
                    sample_ns
                } else {
                    old * keep + sample_ns * (1.0 - keep)
                };
                Some(next.to_bits())
            });
        self.stamp.fetch_max(now, Ordering::AcqRel);
    }

    /// A plain copy of the current state, e.g. for the admin API.
    pub fn snapshot(&self) -> PeakEwma {
        let bits = self.estimate.load(Ordering::Acquire);
        PeakEwma {
            estimate_ns: if bits == NO_DATA {
                0.0
            } else {
                f64::from_bits(bits)
            },
            stamp: self.stamp.load(Ordering::Acquire),
            observed: bits != NO_DATA,
            decay_ns: self.decay_ns,
            penalty_ns: self.penalty_ns,
        }
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

    #[test]
    fn the_atomic_estimator_follows_the_same_rules() {
        let plain = &mut PeakEwma::default();
        let shared = AtomicPeakEwma::default();
        assert_eq!(shared.cost(0), 0.0);
        let events: [(Option<u64>, u64); 6] = [
            (Some(20 * MS), 0),
            (Some(5 * MS), S),
            (Some(90 * MS), 2 * S),
            (None, 3 * S),
            (Some(MS), 20 * S),
            (Some(MS), 20 * S + 1),
        ];
        for (sample, now) in events {
            match sample {
                Some(x) => {
                    plain.observe(x, now);
                    shared.observe(x, now);
                }
                None => {
                    plain.observe_failure(now);
                    shared.observe_failure(now);
                }
            }
            assert!((plain.cost(now) - shared.cost(now)).abs() < 1e-3, "{now}");
        }
        assert_eq!(shared.snapshot().cost(30 * S), plain.cost(30 * S));
    }
}
