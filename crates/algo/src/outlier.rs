//! Passive health (SPEC 3 `[cluster.outlier]`): eject an endpoint that live traffic shows to
//! be failing, for a while that doubles on each repeated ejection, never more than
//! `max_ejection_percent` of the cluster at once, and recognise panic (too few usable
//! endpoints, balance over all of them rather than overload the few).
//!
//! The detector is pure state over explicit time: the runtime reports each attempt's
//! outcome ([`Outcome`]) and the current latencies, and applies the [`Ejection`]s it gets
//! back; it calls [`OutlierDetector::expire`] periodically (or before reading states).

use std::time::Duration;

use crate::time::nanos;
use crate::window::BucketWindow;

/// Buckets of the error-rate window.
const WINDOW_BUCKETS: usize = 10;

/// Why an endpoint was ejected; `as_str` is the `ejections_total{reason}` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EjectionReason {
    /// `consecutive_5xx` 5xx responses (gateway failures included) in a row.
    Consecutive5xx,
    /// `consecutive_gateway_failures` gateway failures in a row.
    GatewayFailures,
    /// Error rate above `error_rate` over `window` with at least `min_requests`.
    ErrorRate,
    /// Latency estimate above `latency_factor` x the cluster median.
    Latency,
}

impl EjectionReason {
    /// The metric and log word.
    pub fn as_str(&self) -> &'static str {
        match self {
            EjectionReason::Consecutive5xx => "consecutive_5xx",
            EjectionReason::GatewayFailures => "gateway_failures",
            EjectionReason::ErrorRate => "error_rate",
            EjectionReason::Latency => "latency",
        }
    }
}

/// The outcome of one attempt, as outlier detection classifies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not 5xx.
    Success,
    /// An upstream 5xx other than 502/503/504.
    ServerError,
    /// A gateway failure: connect failure, reset, timeout, or upstream 502/503/504. Counts
    /// as a 5xx too.
    GatewayFailure,
}

impl Outcome {
    /// Classifies an upstream HTTP status.
    pub fn from_status(status: u16) -> Outcome {
        match status {
            502..=504 => Outcome::GatewayFailure,
            500..=599 => Outcome::ServerError,
            _ => Outcome::Success,
        }
    }

    fn is_error(self) -> bool {
        self != Outcome::Success
    }
}

/// Outlier parameters; `Default` is SPEC 3.1's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive 5xx before ejection; 0 = off. Default 5.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures before ejection; 0 = off. Default 5.
    pub consecutive_gateway_failures: u32,
    /// Error-rate threshold in 0-1; `None` = off (default).
    pub error_rate: Option<f64>,
    /// The error-rate window. Default 30 s.
    pub window: Duration,
    /// Requests needed in the window before the error rate counts. Default 20.
    pub min_requests: u64,
    /// Latency factor over the cluster median; `None` = off (default).
    pub latency_factor: Option<f64>,
    /// The first ejection's length. Default 30 s.
    pub base_ejection: Duration,
    /// The longest ejection. Default 5 min.
    pub max_ejection: Duration,
    /// The largest share of the cluster ejected at once, percent. Default 50.
    pub max_ejection_percent: u32,
    /// Below this percentage of usable endpoints the cluster is in panic. Default 50.
    pub panic_threshold: u32,
}

impl Default for OutlierConfig {
    fn default() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_failures: 5,
            error_rate: None,
            window: Duration::from_secs(30),
            min_requests: 20,
            latency_factor: None,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejection_percent: 50,
            panic_threshold: 50,
        }
    }
}

/// The length of an endpoint's `nth` ejection (1-based): `base x 2^(nth-1)`, capped at `max`.
pub fn ejection_duration(nth: u32, base: Duration, max: Duration) -> Duration {
    crate::resilience::backoff_cap(nth, base, max)
}

/// The most endpoints of `total` that may be ejected at once: `floor(total x percent / 100)`.
pub fn max_ejections(total: usize, percent: u32) -> usize {
    (total as u128 * u128::from(percent.min(100)) / 100) as usize
}

/// Whether a cluster with `usable` of `total` endpoints usable is in panic: the usable share
/// is below `panic_threshold_percent`. An empty cluster and a threshold of 0 never panic.
pub fn in_panic(usable: usize, total: usize, panic_threshold_percent: u32) -> bool {
    total > 0 && (usable as u128) * 100 < (total as u128) * u128::from(panic_threshold_percent)
}

/// An ejection the detector made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ejection {
    /// The endpoint index.
    pub index: usize,
    /// Why.
    pub reason: EjectionReason,
    /// Its ejection count, this one included (1 = first).
    pub nth: u32,
    /// When it ends (nanoseconds).
    pub until: u64,
}

/// Per-endpoint counters.
#[derive(Clone, Debug)]
struct EndpointOutlier {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    window: BucketWindow,
    ejections: u32,
    ejected_until: Option<u64>,
    returned_at: u64,
}

/// Outlier detection for one cluster of `n` endpoints (indexed like the picker's).
///
/// Repeated ejections: the `nth` ejection lasts `base x 2^(nth-1)` (capped at
/// `max_ejection`); `nth` falls back by one for every `base_ejection` an endpoint spends
/// un-ejected, so an endpoint that stays well for long enough starts from `base` again.
/// When an ejection expires, the endpoint's counters start from zero.
#[derive(Clone, Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    endpoints: Vec<EndpointOutlier>,
}

impl OutlierDetector {
    /// A detector for `n` endpoints, none ejected.
    pub fn new(config: OutlierConfig, n: usize) -> OutlierDetector {
        let bucket_ns = (nanos(config.window) / WINDOW_BUCKETS as u64).max(1);
        let fresh = EndpointOutlier {
            consecutive_5xx: 0,
            consecutive_gateway: 0,
            window: BucketWindow::new(WINDOW_BUCKETS, bucket_ns),
            ejections: 0,
            ejected_until: None,
            returned_at: 0,
        };
        OutlierDetector {
            config,
            endpoints: vec![fresh; n],
        }
    }

    /// Takes over what `previous` knew (a reload): endpoint `i` of this detector continues
    /// `previous`'s endpoint `mapping[i]` (its ejection, backoff count and consecutive
    /// failures), so an ejected endpoint stays ejected and a flapping one keeps its doubled
    /// ejection time. The error-rate window carries over only when its length is unchanged.
    pub fn carry_from(&mut self, previous: &OutlierDetector, mapping: &[Option<usize>]) {
        let same_window = previous.config.window == self.config.window;
        for (slot, from) in self.endpoints.iter_mut().zip(mapping) {
            let Some(old) = from.and_then(|j| previous.endpoints.get(j)) else {
                continue;
            };
            let window = if same_window {
                old.window.clone()
            } else {
                slot.window.clone()
            };
            *slot = EndpointOutlier {
                window,
                ..old.clone()
            };
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierConfig {
        &self.config
    }

    /// The number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the cluster has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Whether endpoint `index` is ejected at `now`.
    pub fn is_ejected(&self, index: usize, now: u64) -> bool {
        self.endpoints
            .get(index)
            .and_then(|e| e.ejected_until)
            .is_some_and(|until| now < until)
    }

    /// When endpoint `index`'s ejection ends, if it is ejected at `now`.
    pub fn ejected_until(&self, index: usize, now: u64) -> Option<u64> {
        self.endpoints
            .get(index)
            .and_then(|e| e.ejected_until)
            .filter(|&u| now < u)
    }

    /// Endpoint `index`'s ejection count so far.
    pub fn ejections(&self, index: usize) -> u32 {
        self.endpoints.get(index).map_or(0, |e| e.ejections)
    }

    /// Endpoints ejected at `now`.
    pub fn ejected_count(&self, now: u64) -> usize {
        (0..self.endpoints.len())
            .filter(|&i| self.is_ejected(i, now))
            .count()
    }

    /// Ends the ejections that are over at `now`; returns the endpoints returned to service.
    pub fn expire(&mut self, now: u64) -> Vec<usize> {
        let mut back = Vec::new();
        for (i, e) in self.endpoints.iter_mut().enumerate() {
            if e.ejected_until.is_some_and(|until| now >= until) {
                e.ejected_until = None;
                e.consecutive_5xx = 0;
                e.consecutive_gateway = 0;
                e.window.clear();
                e.returned_at = now;
                back.push(i);
            }
        }
        back
    }

    /// Records the outcome of one attempt to endpoint `index` at `now`; returns the ejection
    /// it caused, if any (refused when `max_ejection_percent` are already ejected: the
    /// counters stay, so the endpoint is ejected on its next failure once there is room).
    pub fn record(&mut self, index: usize, outcome: Outcome, now: u64) -> Option<Ejection> {
        let cfg = self.config;
        let e = self.endpoints.get_mut(index)?;
        if e.ejected_until.is_some_and(|until| now < until) {
            return None;
        }
        e.window.add(now, 1, u64::from(outcome.is_error()));
        match outcome {
            Outcome::Success => {
                e.consecutive_5xx = 0;
                e.consecutive_gateway = 0;
            }
            Outcome::ServerError => {
                e.consecutive_5xx = e.consecutive_5xx.saturating_add(1);
                e.consecutive_gateway = 0;
            }
            Outcome::GatewayFailure => {
                e.consecutive_5xx = e.consecutive_5xx.saturating_add(1);
                e.consecutive_gateway = e.consecutive_gateway.saturating_add(1);
            }
        }
        let reason = if cfg.consecutive_gateway_failures > 0
            && e.consecutive_gateway >= cfg.consecutive_gateway_failures
        {
            Some(EjectionReason::GatewayFailures)
        } else if cfg.consecutive_5xx > 0 && e.consecutive_5xx >= cfg.consecutive_5xx {
            Some(EjectionReason::Consecutive5xx)
        } else if let Some(rate) = cfg.error_rate {
            let (requests, errors) = e.window.sums(now);
            (requests >= cfg.min_requests.max(1) && errors as f64 > rate * requests as f64)
                .then_some(EjectionReason::ErrorRate)
        } else {
            None
        };
        self.eject(index, reason?, now)
    }

    /// Latency outliers: with `latency_factor` set, ejects endpoints whose latency estimate
    /// (`latency_ns[i]`, 0 = no data) exceeds the factor times the median of the endpoints
    /// with data (at least 3 of them, not ejected), worst first, within the ejection cap.
    pub fn check_latency(&mut self, latency_ns: &[f64], now: u64) -> Vec<Ejection> {
        let Some(factor) = self.config.latency_factor else {
            return Vec::new();
        };
        let n = self.endpoints.len().min(latency_ns.len());
        let mut known: Vec<(usize, f64)> = (0..n)
            .filter(|&i| latency_ns[i] > 0.0 && !self.is_ejected(i, now))
            .map(|i| (i, latency_ns[i]))
            .collect();
        if known.len() < 3 {
            return Vec::new();
        }
        known.sort_by(|a, b| a.1.total_cmp(&b.1));
        let mid = known.len() / 2;
        let median = if known.len() % 2 == 1 {
            known[mid].1
        } else {
            (known[mid - 1].1 + known[mid].1) / 2.0
        };
        known
            .iter()
            .rev()
            .take_while(|&&(_, l)| l > factor * median)
            .map(|&(i, _)| i)
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|i| self.eject(i, EjectionReason::Latency, now))
            .collect()
    }

    fn eject(&mut self, index: usize, reason: EjectionReason, now: u64) -> Option<Ejection> {
        if self.ejected_count(now)
            >= max_ejections(self.endpoints.len(), self.config.max_ejection_percent)
        {
            return None;
        }
        let cfg = self.config;
        let e = &mut self.endpoints[index];
        let base_ns = nanos(cfg.base_ejection).max(1);
        let forgiven = now.saturating_sub(e.returned_at) / base_ns;
        let nth = e
            .ejections
            .saturating_sub(u32::try_from(forgiven).unwrap_or(u32::MAX))
            + 1;
        let until = now.saturating_add(nanos(ejection_duration(
            nth,
            cfg.base_ejection,
            cfg.max_ejection,
        )));
        e.ejections = nth;
        e.ejected_until = Some(until);
        e.consecutive_5xx = 0;
        e.consecutive_gateway = 0;
        Some(Ejection {
            index,
            reason,
            nth,
            until,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn fail(
        d: &mut OutlierDetector,
        i: usize,
        times: u32,
        outcome: Outcome,
        now: u64,
    ) -> Option<Ejection> {
        (0..times).filter_map(|_| d.record(i, outcome, now)).last()
    }

    #[test]
    fn reasons_have_their_metric_words() {
        let words: Vec<_> = [
            EjectionReason::Consecutive5xx,
            EjectionReason::GatewayFailures,
            EjectionReason::ErrorRate,
            EjectionReason::Latency,
        ]
        .iter()
        .map(|r| r.as_str())
        .collect();
        assert_eq!(
            words,
            [
                "consecutive_5xx",
                "gateway_failures",
                "error_rate",
                "latency"
            ]
        );
        assert_eq!(Outcome::from_status(503), Outcome::GatewayFailure);
        assert_eq!(Outcome::from_status(500), Outcome::ServerError);
        assert_eq!(Outcome::from_status(404), Outcome::Success);
    }

    #[test]
    fn five_consecutive_5xx_eject_and_a_success_resets_the_run() {
        let mut d = OutlierDetector::new(OutlierConfig::default(), 4);
        assert_eq!(fail(&mut d, 0, 4, Outcome::ServerError, 0), None);
        d.record(0, Outcome::Success, 0);
        assert_eq!(fail(&mut d, 0, 4, Outcome::ServerError, 0), None);
        let e = d.record(0, Outcome::ServerError, 0).expect("ejected");
        assert_eq!(
            (e.reason, e.nth, e.until),
            (EjectionReason::Consecutive5xx, 1, 30 * S)
        );
        assert!(d.is_ejected(0, 29 * S));
        assert_eq!(d.expire(29 * S), Vec::<usize>::new());
        assert_eq!(d.expire(30 * S), vec![0]);
        assert!(!d.is_ejected(0, 30 * S));
    }

    #[test]
    fn carry_from_keeps_ejections_and_backoff_by_mapping() {
        let config = OutlierConfig {
            max_ejection_percent: 100,
            ..OutlierConfig::default()
        };
        let mut old = OutlierDetector::new(config, 3);
        fail(&mut old, 1, 5, Outcome::ServerError, 0).expect("ejected");
        fail(&mut old, 2, 4, Outcome::GatewayFailure, 0);
        // New order: [new endpoint, old #2, old #1].
        let mut new = OutlierDetector::new(config, 3);
        new.carry_from(&old, &[None, Some(2), Some(1)]);
        assert!(!new.is_ejected(0, S));
        assert!(!new.is_ejected(1, S));
        assert_eq!(new.ejected_until(2, S), Some(30 * S));
        assert_eq!(new.ejections(2), 1);
        // Old #2's four gateway failures carried: one more ejects it.
        let e = new.record(1, Outcome::GatewayFailure, S).expect("ejected");
        assert_eq!(e.reason, EjectionReason::GatewayFailures);
        // Old #1 expires and is ejected again: the second ejection lasts twice as long.
        new.expire(30 * S);
        let e = fail(&mut new, 2, 5, Outcome::ServerError, 30 * S).expect("ejected again");
        assert_eq!((e.nth, e.until), (2, 90 * S));
    }

    #[test]
    fn gateway_failures_have_their_own_reason() {
        let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
        let e = fail(&mut d, 1, 5, Outcome::GatewayFailure, 0).expect("ejected");
        assert_eq!(e.reason, EjectionReason::GatewayFailures);
    }

    #[test]
    fn repeated_ejections_double_up_to_the_cap_and_are_forgiven() {
        let mut d = OutlierDetector::new(OutlierConfig::default(), 2);
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..6 {
            let e = fail(&mut d, 0, 5, Outcome::ServerError, now).expect("ejected");
            lengths.push((e.until - now) / S);
            now = e.until;
            d.expire(now);
        }
        assert_eq!(lengths, [30, 60, 120, 240, 300, 300]);
        // after 10 x base (300 s) un-ejected, the count is forgiven down to 0: base again
        now += 300 * S;
        let e = fail(&mut d, 0, 5, Outcome::ServerError, now).expect("ejected");
        assert_eq!((e.nth, (e.until - now) / S), (1, 30));
    }

    #[test]
    fn never_more_than_max_ejection_percent_are_ejected() {
        let mut d = OutlierDetector::new(OutlierConfig::default(), 5);
        assert_eq!(max_ejections(5, 50), 2);
        let made = (0..5)
            .filter(|&i| fail(&mut d, i, 5, Outcome::ServerError, 0).is_some())
            .count();
        assert_eq!(made, 2);
        assert_eq!(d.ejected_count(0), 2);
        // once the first two return, the next failure of a waiting endpoint ejects it
        d.expire(30 * S);
        assert!(d.record(2, Outcome::ServerError, 30 * S).is_some());
        assert_eq!(max_ejections(1, 50), 0);
        assert_eq!(max_ejections(3, 100), 3);
    }

    #[test]
    fn the_error_rate_needs_min_requests() {
        let cfg = OutlierConfig {
            error_rate: Some(0.1),
            consecutive_5xx: 0,
            ..OutlierConfig::default()
        };
        let mut d = OutlierDetector::new(cfg, 2);
        for k in 0..19 {
            let outcome = if k % 4 == 0 {
                Outcome::ServerError
            } else {
                Outcome::Success
            };
            assert_eq!(d.record(0, outcome, S), None);
        }
        // the 20th request makes the window count: 5 errors of 20 = 25%
        let e = d.record(0, Outcome::Success, S).expect("ejected");
        assert_eq!(e.reason, EjectionReason::ErrorRate);
        // errors older than the window do not count
        let mut d = OutlierDetector::new(cfg, 2);
        fail(&mut d, 1, 5, Outcome::ServerError, 0);
        assert_eq!(fail(&mut d, 1, 20, Outcome::Success, 31 * S), None);
    }

    #[test]
    fn latency_outliers_are_measured_against_the_median() {
        let cfg = OutlierConfig {
            latency_factor: Some(3.0),
            ..OutlierConfig::default()
        };
        let mut d = OutlierDetector::new(cfg, 6);
        let lat = [10e6, 11e6, 12e6, 0.0, 40e6, 31e6];
        let ejected: Vec<usize> = d.check_latency(&lat, 0).iter().map(|e| e.index).collect();
        // median of the 5 with data is 12 ms: 40 and 31 ms exceed 36 ms? only 40 does
        assert_eq!(ejected, vec![4]);
        let mut off = OutlierDetector::new(OutlierConfig::default(), 6);
        assert!(off.check_latency(&lat, 0).is_empty());
    }

    #[test]
    fn panic_starts_below_the_threshold() {
        assert!(!in_panic(5, 10, 50));
        assert!(in_panic(4, 10, 50));
        assert!(in_panic(0, 1, 50));
        assert!(!in_panic(0, 0, 50));
        assert!(!in_panic(0, 10, 0));
    }
}
