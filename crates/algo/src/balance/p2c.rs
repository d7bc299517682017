//! Power of two choices: two random endpoints, keep the better. Nearly the balance of a full
//! scan at the cost of two lookups, and no herd behaviour when several balancers see the
//! same stale counts. `p2c` compares in-flight counts; `p2c-ewma`, the default policy,
//! compares expected completion cost, so a slow (gray-failing) endpoint sheds traffic before
//! outlier detection would eject it, and a fast-failing one does not attract traffic by
//! answering errors quickly (failures reach the estimator as a penalty latency, see
//! [`super::PeakEwma`]).

use rand::RngCore;

use super::eligible::{FAST_TRIES, Weights, scale};
use super::{EndpointSpec, LoadView};
use crate::rng::{below, two_distinct};

/// The shared skeleton: two distinct uniform draws; both pickable: `prefer_b(a, b)` decides.
/// Otherwise the pickable one of the two, or (neither pickable) an exact weighted scan
/// draws the first candidate; its partner comes from up to [`FAST_TRIES`] redraws, then
/// from an exact scan of the other pickable endpoints. So a cluster with many ineligible
/// endpoints still compares two eligible candidates whenever two exist.
fn two_choices(
    weights: &Weights,
    load: &dyn LoadView,
    rng: &mut dyn RngCore,
    weighted_scan: bool,
    prefer_b: impl Fn(usize, usize) -> bool,
) -> Option<usize> {
    let n = weights.len();
    if n < 2 {
        return weights.first_pickable_from(load, 0);
    }
    let (a, b) = two_distinct(rng, n);
    let one = match (weights.pickable(load, a), weights.pickable(load, b)) {
        (true, true) => return Some(if prefer_b(a, b) { b } else { a }),
        (true, false) => a,
        (false, true) => b,
        (false, false) => weights.scan(load, rng, weighted_scan, None)?,
    };
    for _ in 0..FAST_TRIES {
        let mut other = below(rng, n - 1);
        if other >= one {
            other += 1;
        }
        if weights.pickable(load, other) {
            return Some(if prefer_b(one, other) { other } else { one });
        }
    }
    match weights.scan(load, rng, weighted_scan, Some(one)) {
        Some(other) if prefer_b(one, other) => Some(other),
        _ => Some(one),
    }
}

/// `p2c`: the less loaded of two endpoints by `(in_flight + 1) / weight_factor`.
/// Configured weights only exclude (0); use `least-request` or `p2c-ewma` for weighted
/// clusters.
#[derive(Debug)]
pub(crate) struct P2c {
    weights: Weights,
}

impl P2c {
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> P2c {
        P2c {
            weights: Weights::new(endpoints),
        }
    }

    pub(crate) fn pick(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        let cost = |i: usize| (load.in_flight(i) as f64 + 1.0) / scale(load, i);
        two_choices(&self.weights, load, rng, false, |a, b| cost(b) < cost(a))
    }
}

/// `p2c-ewma`: the cheaper of two endpoints by
/// `latency x (in_flight + 1) / (weight x weight_factor)`, where an endpoint without data
/// (latency not above 0) borrows the other's latency, and two without data compare on load
/// and weight alone.
#[derive(Debug)]
pub(crate) struct P2cEwma {
    weights: Weights,
}

/// A latency usable in a comparison, or `None` for "no data".
fn known(latency: f64) -> Option<f64> {
    (latency > 0.0).then_some(latency)
}

impl P2cEwma {
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> P2cEwma {
        P2cEwma {
            weights: Weights::new(endpoints),
        }
    }

    /// `(in_flight + 1) / (weight x factor)`: the load part of the cost.
    fn load_share(&self, load: &dyn LoadView, i: usize) -> f64 {
        (load.in_flight(i) as f64 + 1.0) / (f64::from(self.weights.get(i)) * scale(load, i))
    }

    /// Whether `b` is strictly cheaper than `a`.
    pub(crate) fn prefers_second(&self, load: &dyn LoadView, a: usize, b: usize) -> bool {
        let (la, lb) = match (known(load.latency_cost(a)), known(load.latency_cost(b))) {
            (Some(la), Some(lb)) => (la, lb),
            (Some(l), None) | (None, Some(l)) => (l, l),
            (None, None) => (1.0, 1.0),
        };
        lb * self.load_share(load, b) < la * self.load_share(load, a)
    }

    pub(crate) fn pick(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        two_choices(&self.weights, load, rng, true, |a, b| {
            self.prefers_second(load, a, b)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StaticLoad;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn two(wa: u32, wb: u32) -> [EndpointSpec; 2] {
        [EndpointSpec::new("a", wa), EndpointSpec::new("b", wb)]
    }

    #[test]
    fn the_busier_of_two_endpoints_is_never_chosen() {
        let p = P2c::new(&two(1, 1));
        let mut load = StaticLoad::uniform(2);
        load.in_flight = vec![5, 1];
        let mut rng = SmallRng::seed_from_u64(0);
        assert!((0..100).all(|_| p.pick(&load, &mut rng) == Some(1)));
    }

    #[test]
    fn with_most_endpoints_ineligible_two_eligible_ones_are_still_compared() {
        let eps: Vec<_> = (0..10)
            .map(|i| EndpointSpec::new(format!("e{i}"), 1))
            .collect();
        let p = P2c::new(&eps);
        let mut load = StaticLoad::uniform(10);
        load.eligible = vec![false; 10];
        load.eligible[2] = true;
        load.eligible[7] = true;
        load.in_flight[2] = 9;
        let mut rng = SmallRng::seed_from_u64(4);
        let busy = (0..1_000)
            .filter(|_| p.pick(&load, &mut rng) == Some(2))
            .count();
        // only when 8 redraws all miss the partner (0.78^8 = 14%, half of those keep e2)
        assert!(busy < 120, "{busy}");
    }

    #[test]
    fn a_single_endpoint_is_picked_when_eligible() {
        let p = P2c::new(&[EndpointSpec::new("a", 1)]);
        let mut load = StaticLoad::uniform(1);
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(p.pick(&load, &mut rng), Some(0));
        load.eligible[0] = false;
        assert_eq!(p.pick(&load, &mut rng), None);
    }

    #[test]
    fn latency_times_load_decides_between_two_endpoints() {
        let p = P2cEwma::new(&two(1, 1));
        let mut load = StaticLoad::uniform(2);
        load.latency_ns = vec![1_000_000.0, 10_000_000.0];
        load.in_flight = vec![5, 0];
        // a: 1 ms x 6 = 6 ms; b: 10 ms x 1 = 10 ms.
        let mut rng = SmallRng::seed_from_u64(0);
        assert!((0..50).all(|_| p.pick(&load, &mut rng) == Some(0)));
        load.in_flight = vec![10, 0];
        assert!((0..50).all(|_| p.pick(&load, &mut rng) == Some(1)));
    }

    #[test]
    fn weight_and_slow_start_divide_the_cost() {
        let p = P2cEwma::new(&two(1, 4));
        let mut load = StaticLoad::uniform(2);
        load.latency_ns = vec![5.0, 5.0];
        assert!(p.prefers_second(&load, 0, 1));
        load.factor[1] = 0.1;
        assert!(!p.prefers_second(&load, 0, 1));
    }

    #[test]
    fn an_endpoint_without_data_gets_a_neutral_cost() {
        let p = P2cEwma::new(&two(1, 1));
        let mut load = StaticLoad::uniform(2);
        // a has data and one request in flight, b (new) has none: b is tried.
        load.latency_ns = vec![50_000_000.0, 0.0];
        load.in_flight = vec![1, 0];
        assert!(p.prefers_second(&load, 0, 1));
        // but a new endpoint with more in flight does not win just for lacking data.
        load.in_flight = vec![0, 3];
        assert!(!p.prefers_second(&load, 0, 1));
    }
}
