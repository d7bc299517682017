//! `random`: weighted random. Stateless, so it needs no shared counter at all and spreads
//! load well when many balancers share few endpoints (no lock-step between instances).

use rand::RngCore;

use super::eligible::{FAST_TRIES, Weights, accept_scaled};
use super::{EndpointSpec, LoadView};
use crate::rng::below_u64;

/// Weighted random: endpoint `i` is chosen with probability proportional to
/// `weight(i) x weight_factor(i)` among the pickable endpoints.
///
/// The fast path draws by configured weight from a cumulative table (binary search) and
/// accepts with probability `scale` (rejection sampling, exact); after a few refusals (mostly
/// unpickable endpoints) it falls back to an exact two-pass scan.
#[derive(Debug)]
pub(crate) struct WeightedRandom {
    weights: Weights,
    cumulative: Box<[u64]>,
}

impl WeightedRandom {
    /// A weighted random picker over `endpoints`.
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> WeightedRandom {
        let mut sum = 0u64;
        let cumulative = endpoints
            .iter()
            .map(|e| {
                sum += u64::from(e.weight);
                sum
            })
            .collect();
        WeightedRandom {
            weights: Weights::new(endpoints),
            cumulative,
        }
    }

    /// A random endpoint (see [`super::Picker::pick`]).
    pub(crate) fn pick(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        let total = self.cumulative.last().copied().unwrap_or(0);
        if total == 0 {
            return None;
        }
        for _ in 0..FAST_TRIES {
            let r = below_u64(rng, total);
            let i = self.cumulative.partition_point(|&c| c <= r);
            if self.weights.pickable(load, i) && accept_scaled(load, i, rng) {
                return Some(i);
            }
        }
        self.weights.scan(load, rng, true, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StaticLoad;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn counts(p: &WeightedRandom, load: &StaticLoad, picks: usize) -> Vec<usize> {
        let mut rng = SmallRng::seed_from_u64(42);
        let mut c = vec![0; 3];
        for _ in 0..picks {
            if let Some(i) = p.pick(load, &mut rng) {
                c[i] += 1;
            }
        }
        c
    }

    #[test]
    fn picks_follow_the_weights() {
        let eps = [
            EndpointSpec::new("a", 3),
            EndpointSpec::new("b", 1),
            EndpointSpec::new("c", 0),
        ];
        let p = WeightedRandom::new(&eps);
        let c = counts(&p, &StaticLoad::uniform(3), 40_000);
        // 3:1 of 40,000: mean 30,000, sigma ~87; 5 sigma.
        assert!((29_565..=30_435).contains(&c[0]), "{c:?}");
        assert_eq!(c[2], 0);
    }

    #[test]
    fn a_slow_starting_endpoint_gets_weight_times_scale() {
        let eps = [EndpointSpec::new("a", 1), EndpointSpec::new("b", 1)];
        let p = WeightedRandom::new(&eps);
        let mut load = StaticLoad::uniform(2);
        load.factor[1] = 0.25;
        let c = counts(&p, &load, 50_000);
        // expected share of b: 0.25 / 1.25 = 20% = 10,000; sigma ~89.
        assert!((9_550..=10_450).contains(&c[1]), "{c:?}");
    }
}
