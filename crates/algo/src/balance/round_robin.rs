//! `round-robin`: the simplest fair policy, one shared atomic counter and no per-endpoint
//! state, for clusters of identical endpoints where weights do not matter.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;

use super::eligible::{Weights, accept_scaled};
use super::{EndpointSpec, LoadView};

/// Round-robin over the endpoints in configuration order. Weights are ignored except that 0
/// excludes. A turn that lands on an unpickable endpoint, or on a slow-starting one that declines
/// it (it keeps a turn with probability equal to its factor), goes to the `((cycle + position) mod
/// c)`-th of the `c` other pickable endpoints: an O(n) scan on that degraded path only, and it spreads
/// the lost turns over all pickable endpoints instead of handing them all to the neighbour after a
/// block of unpickable ones.
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
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let start = (ticket % n as u64) as usize;
        let start_pickable = self.weights.pickable(load, start);
        if start_pickable && accept_scaled(load, start, rng) {
            return Some(start);
        }
        // A slow-starting endpoint that declined its turn does not get it back through the
        // redistribution (that would undo the ramp), unless it is the only one left.
        let takes_turn = |i: usize| i != start && self.weights.pickable(load, i);
        let c = (0..n).filter(|&i| takes_turn(i)).count();
        if c == 0 {
            return start_pickable.then_some(start);
        }
        let k = (ticket / n as u64 + start as u64) % c as u64;
        (0..n).filter(|&i| takes_turn(i)).nth(k as usize)
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
        let seq: Vec<_> = (0..6).filter_map(|_| rr.pick(&load, &mut rng)).collect();
        // b's turns alternate: cycle 0 -> (0 + 1) mod 2 = 1 -> c, cycle 1 -> 0 -> a
        assert_eq!(seq, [0, 2, 2, 0, 0, 2]);
    }

    #[test]
    fn the_turns_of_an_ineligible_block_are_spread_over_the_others() {
        let eps: Vec<_> = (0..6)
            .map(|i| EndpointSpec::new(format!("e{i}"), 1))
            .collect();
        let rr = RoundRobin::new(&eps);
        let mut load = Load::uniform(6);
        for i in 1..5 {
            load.eligible[i] = false;
        }
        let mut rng = SmallRng::seed_from_u64(0);
        let mut counts = [0; 6];
        for _ in 0..6_000 {
            counts[rr.pick(&load, &mut rng).expect("pickable")] += 1;
        }
        assert_eq!(counts, [3_000, 0, 0, 0, 0, 3_000]);
    }

    #[test]
    fn a_slow_starting_endpoint_gets_its_factor_of_its_turns_and_no_more() {
        let eps: Vec<_> = ["a", "b"]
            .iter()
            .map(|n| EndpointSpec::new(*n, 1))
            .collect();
        let rr = RoundRobin::new(&eps);
        let mut load = Load::uniform(2);
        load.factor[1] = 0.1;
        let mut rng = SmallRng::seed_from_u64(3);
        let b = (0..10_000)
            .filter(|_| rr.pick(&load, &mut rng) == Some(1))
            .count();
        // b's 5,000 turns are kept with probability 0.1: 500 expected, sigma ~21.
        assert!((400..=600).contains(&b), "b got {b}");
        load.eligible[0] = false;
        assert_eq!(
            rr.pick(&load, &mut rng),
            Some(1),
            "alone, it takes every turn"
        );
    }
}
