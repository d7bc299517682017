//! `weighted-round-robin`: nginx's smooth weighted round-robin, which interleaves heavy and
//! light endpoints instead of sending bursts (weights 5,1,1 give `a a b a c a a`).
//!
//! The classic algorithm mutates per-endpoint "current weights" on every pick, which needs a
//! lock when pickers are shared by threads. The sequence is periodic, so it is computed once
//! per build over one period (weights reduced by their gcd) and picks index it with one atomic
//! counter: lock-free and O(1). Huge weight sums: when the reduced period would exceed
//! [`MAX_PERIOD`] (65536 picks, 256 KiB), or `16 Mi / n` for clusters of more than 256
//! endpoints (the build costs `period x n` steps), the weights are first scaled down
//! proportionally (each kept at least 1), bounding memory and build time at the cost of a
//! ratio error of about `n / period`. Weights 1-10000 over up to ~6 endpoints, or any weights
//! sharing a large common divisor, stay exact.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::RngCore;

use super::eligible::{FAST_TRIES, Weights, accept_scaled};
use super::{EndpointSpec, LoadView};

/// The longest precomputed sequence, in picks.
pub const MAX_PERIOD: usize = 1 << 16;

/// Smooth weighted round-robin over a precomputed period.
///
/// An unpickable endpoint's slot goes to the next slots of the sequence (then to the next pickable
/// endpoint in order); a slow-starting endpoint keeps its slot with probability equal to its
/// factor, so its share is `weight x weight_factor` (approximately: a refused slot goes to the next
/// in the sequence).
#[derive(Debug)]
pub(crate) struct SmoothWeighted {
    weights: Weights,
    sequence: Box<[u32]>,
    next: AtomicU64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The build does `period x n` steps; this bounds them (16 Mi) for very large clusters.
const MAX_BUILD_STEPS: usize = 1 << 24;

/// The longest period for `n` endpoints: [`MAX_PERIOD`], less for clusters so large that
/// the build would take more than [`MAX_BUILD_STEPS`], but never below `n`.
fn period_limit(n: usize) -> usize {
    MAX_PERIOD.min(MAX_BUILD_STEPS / n.max(1)).max(n)
}

/// The weights of one period: reduced by their gcd, scaled down to fit [`period_limit`].
fn period_weights(weights: &[u32]) -> Vec<u64> {
    let g = weights.iter().fold(0u64, |g, &w| gcd(g, u64::from(w)));
    if g == 0 {
        return vec![0; weights.len()];
    }
    let mut reduced: Vec<u64> = weights.iter().map(|&w| u64::from(w) / g).collect();
    let sum: u64 = reduced.iter().sum();
    let limit = period_limit(weights.len()) as u64;
    if sum > limit {
        for w in reduced.iter_mut().filter(|w| **w > 0) {
            *w = (*w * limit / sum).max(1);
        }
        let g = reduced.iter().fold(0u64, |g, &w| gcd(g, w));
        reduced.iter_mut().for_each(|w| *w /= g);
    }
    reduced
}

/// One period of nginx's smooth weighted round-robin; ties go to the lower index.
fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    let total: u64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    let mut seq = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += w as i64;
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total as i64;
        seq.push(best as u32);
    }
    seq
}

impl SmoothWeighted {
    /// A smooth weighted round-robin picker over `endpoints`.
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> SmoothWeighted {
        let weights = Weights::new(endpoints);
        let raw: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let sequence = smooth_sequence(&period_weights(&raw)).into_boxed_slice();
        SmoothWeighted {
            weights,
            sequence,
            next: AtomicU64::new(0),
        }
    }

    /// The precomputed period, as endpoint indices.
    #[cfg(test)]
    pub(crate) fn sequence(&self) -> &[u32] {
        &self.sequence
    }

    /// The next endpoint of the sequence (see [`super::Picker::pick`]).
    pub(crate) fn pick(&self, load: &dyn LoadView, rng: &mut dyn RngCore) -> Option<usize> {
        let period = self.sequence.len();
        if period == 0 {
            return None;
        }
        let start = (self.next.fetch_add(1, Ordering::Relaxed) % period as u64) as usize;
        let mut first = None;
        for k in 0..FAST_TRIES.min(period) {
            let i = self.sequence[(start + k) % period] as usize;
            if self.weights.pickable(load, i) {
                if accept_scaled(load, i, rng) {
                    return Some(i);
                }
                first.get_or_insert(i);
            }
        }
        first.or_else(|| {
            self.weights
                .first_pickable_from(load, self.sequence[start] as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StaticLoad;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn picker(weights: &[u32]) -> SmoothWeighted {
        let eps: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| EndpointSpec::new(format!("e{i}"), w))
            .collect();
        SmoothWeighted::new(&eps)
    }

    #[test]
    fn weights_five_one_one_give_the_nginx_sequence() {
        let p = picker(&[5, 1, 1]);
        let load = StaticLoad::uniform(3);
        let mut rng = SmallRng::seed_from_u64(0);
        let names = ['a', 'b', 'c'];
        let seq: String = (0..14)
            .filter_map(|_| p.pick(&load, &mut rng))
            .map(|i| names[i])
            .collect();
        assert_eq!(seq, "aabacaaaabacaa");
    }

    #[test]
    fn the_period_is_reduced_by_the_gcd_of_the_weights() {
        assert_eq!(picker(&[10, 20, 30]).sequence().len(), 6);
        assert_eq!(picker(&[0, 4, 2]).sequence(), &[1, 2, 1]);
    }

    #[test]
    fn a_huge_period_is_scaled_down_but_keeps_the_ratio() {
        let weights: Vec<u32> = (0..200).map(|i| 9_973 - i).collect();
        let p = picker(&weights);
        assert!(p.sequence().len() <= MAX_PERIOD + weights.len());
        assert_eq!(period_limit(1_000), 16_777);
        assert_eq!(period_limit(100_000), 100_000);
        let first = p.sequence().iter().filter(|&&i| i == 0).count() as f64;
        let last = p.sequence().iter().filter(|&&i| i == 199).count() as f64;
        let expected = 9_973.0 / 9_774.0;
        assert!((first / last - expected).abs() < 0.05, "{first} {last}");
    }

    #[test]
    fn all_weights_zero_means_no_pick() {
        let p = picker(&[0, 0]);
        let mut rng = SmallRng::seed_from_u64(0);
        assert_eq!(p.pick(&StaticLoad::uniform(2), &mut rng), None);
    }

    #[test]
    fn an_ineligible_heavy_endpoint_sends_its_turns_elsewhere() {
        let p = picker(&[100, 1, 1]);
        let mut load = StaticLoad::uniform(3);
        load.eligible[0] = false;
        let mut rng = SmallRng::seed_from_u64(0);
        for _ in 0..500 {
            let i = p.pick(&load, &mut rng);
            assert!(matches!(i, Some(1) | Some(2)), "{i:?}");
        }
    }
}
