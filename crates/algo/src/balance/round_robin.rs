//! `round-robin`: the simplest fair policy, one shared atomic counter and no per-endpoint
//! state, for clusters of identical endpoints where weights do not matter.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;

use super::eligible::{Weights, accept_scaled};
use super::{EndpointSpec, LoadView};

/// Round-robin over the endpoints in configuration order. Weights are ignored except that 0
/// excludes; an unpickable endpoint's turn goes to the next pickable one; a slow-starting
/// endpoint keeps its turn with probability equal to its factor.
#[derive(Debug)]
pub(crate) struct RoundRobin {
    weights: Weights,
    next: AtomicU64,
}

impl RoundRobin {
    /// A round-robin picker over `endpoints`.
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> RoundRobin {
        RoundRobin {
            weights: Weights::new(endpoints),
            next: AtomicU64::new(0),
        }
    }

    /// The next endpoint in turn (see [`super::Picker::pick`]).
    pub(crate) fn pick(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        let n = self.weights.len();
        if n == 0 {
            return None;
        }
        let start = (self.next.fetch_add(1, Ordering::Relaxed) % n as u64) as usize;
        let mut first = None;
        for k in 0..n {
            let i = (start + k) % n;
            if self.weights.pickable(load, i) {
                if accept_scaled(load, i, rng) {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
        }
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StaticLoad as Load;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn endpoints_take_turns_in_configuration_order() {
        let eps: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| EndpointSpec::new(*n, 1))
            .collect();
        let rr = RoundRobin::new(&eps);
        let load = Load::uniform(3);
        let mut rng = SmallRng::seed_from_u64(0);
        let seq: Vec<_> = (0..6).filter_map(|_| rr.pick(&load, &mut rng)).collect();
        assert_eq!(seq, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn an_ineligible_endpoints_turn_goes_to_the_next_one() {
        let eps: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|n| EndpointSpec::new(*n, 1))
            .collect();
        let rr = RoundRobin::new(&eps);
        let mut load = Load::uniform(3);
        load.eligible[1] = false;
        let mut rng = SmallRng::seed_from_u64(0);
        let seq: Vec<_> = (0..3).filter_map(|_| rr.pick(&load, &mut rng)).collect();
        assert_eq!(seq, [0, 2, 2]);
    }
}
