//! `least-request`: send to the endpoint with the least outstanding work per unit of weight,
//! for workloads with uneven request costs where round-robin piles up on a slow endpoint.

use rand::RngCore;

use super::eligible::{Weights, scale};
use super::{EndpointSpec, LoadView};
use crate::rng::below;

/// Least `(in_flight + 1) / (weight x weight_factor)`.
///
/// Clusters of at most 4 endpoints are scanned fully and ties are broken uniformly at random
/// (reservoir sampling). Larger clusters sample 4 endpoints uniformly (with replacement, two
/// indices per RNG call) and take the least loaded of them — the "power of d choices", whose load
/// spread is within a small constant of a full scan while keeping a pick O(d) instead of O(n); the
/// random sampling is the tie-break. If no sampled endpoint is pickable, the full scan runs.
/// The `+ 1` makes weights matter for idle endpoints too (weight 2 idle beats weight 1 idle).
#[derive(Debug)]
pub(crate) struct LeastRequest {
    weights: Weights,
}

/// Endpoints sampled per pick in clusters larger than this; smaller ones are scanned fully.
const CHOICES: usize = 4;

impl LeastRequest {
    /// A least-request picker over `endpoints`.
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> LeastRequest {
        LeastRequest {
            weights: Weights::new(endpoints),
        }
    }

    /// Endpoint `i`'s load as the fraction `(in_flight + 1) / (weight x factor)`, kept as
    /// numerator and denominator so comparisons multiply instead of divide.
    fn load_of(&self, load: &dyn LoadView, i: usize) -> (f64, f64) {
        (
            load.in_flight(i) as f64 + 1.0,
            f64::from(self.weights.get(i)) * scale(load, i),
        )
    }

    /// The least loaded endpoint (see [`super::Picker::pick`]).
    pub(crate) fn pick(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        let n = self.weights.len();
        if n > CHOICES {
            let mut best: Option<(usize, (f64, f64))> = None;
            for _ in 0..CHOICES / 2 {
                // two 32-bit draws from one call: the bias is below n / 2^32
                let r = rng.next_u64();
                for half in [r >> 32, r & 0xffff_ffff] {
                    let i = ((half * n as u64) >> 32) as usize;
                    if self.weights.pickable(load, i) {
                        let c = self.load_of(load, i);
                        if best.is_none_or(|(_, b)| less(c, b)) {
                            best = Some((i, c));
                        }
                    }
                }
            }
            if let Some((i, _)) = best {
                return Some(i);
            }
        }
        self.full_scan(load, rng)
    }

    fn full_scan(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        let mut best: Option<(usize, (f64, f64))> = None;
        let mut ties = 0usize;
        for i in 0..self.weights.len() {
            if !self.weights.pickable(load, i) {
                continue;
            }
            let c = self.load_of(load, i);
            match best {
                Some((_, b)) if less(b, c) => {}
                Some((_, b)) if !less(c, b) => {
                    ties += 1;
                    if below(rng, ties) == 0 {
                        best = Some((i, c));
                    }
                }
                _ => {
                    best = Some((i, c));
                    ties = 1;
                }
            }
        }
        best.map(|(i, _)| i)
    }
}

/// `a < b` for fractions with positive denominators.
fn less(a: (f64, f64), b: (f64, f64)) -> bool {
    a.0 * b.1 < b.0 * a.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StaticLoad;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn eps(weights: &[u32]) -> Vec<EndpointSpec> {
        crate::balance::test_endpoints("e", weights)
    }

    #[test]
    fn the_endpoint_with_least_in_flight_per_weight_wins() {
        let p = LeastRequest::new(&eps(&[1, 2, 1]));
        let mut load = StaticLoad::uniform(3);
        load.in_flight = vec![2, 4, 3];
        // costs: 3/1, 5/2, 4/1
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(p.pick(&load, &mut rng), Some(1));
    }

    #[test]
    fn ties_are_broken_at_random() {
        let p = LeastRequest::new(&eps(&[1, 1, 1]));
        let load = StaticLoad::uniform(3);
        let mut rng = SmallRng::seed_from_u64(3);
        let mut seen = [0u32; 3];
        for _ in 0..3_000 {
            seen[p.pick(&load, &mut rng).expect("pickable")] += 1;
        }
        assert!(seen.iter().all(|&c| (850..=1_150).contains(&c)), "{seen:?}");
    }

    #[test]
    fn slow_start_counts_as_a_smaller_weight() {
        let p = LeastRequest::new(&eps(&[1, 1]));
        let mut load = StaticLoad::uniform(2);
        load.in_flight = vec![3, 0];
        load.factor = vec![1.0, 0.2];
        // costs: 4/1 vs 1/0.2 = 5
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(p.pick(&load, &mut rng), Some(0));
    }

    #[test]
    fn large_clusters_sample_and_still_avoid_the_busy_endpoints() {
        let p = LeastRequest::new(&eps(&[1; 100]));
        let mut load = StaticLoad::uniform(100);
        for i in 0..50 {
            load.in_flight[i] = 100;
        }
        let mut rng = SmallRng::seed_from_u64(9);
        let busy = (0..1_000)
            .filter(|_| p.pick(&load, &mut rng).is_some_and(|i| i < 50))
            .count();
        // all 4 samples land among the busy half with probability 1/16: 62.5 of 1,000,
        // sigma 7.7; 5 sigma.
        assert!(busy <= 101, "{busy}");
    }
}
