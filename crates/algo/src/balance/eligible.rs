//! What every policy shares: which endpoints are pickable, how the slow-start factor is read,
//! and the bounded fallback scans that keep the "never an ineligible endpoint while an
//! eligible one exists" guarantee when a policy's fast path lands on an ineligible one.

use std::collections::HashSet;

use rand::RngCore;

use super::{BuildError, EndpointSpec, LoadView, MAX_WEIGHT};
use crate::rng::unit_f64;

/// The smallest slow-start factor a picker honours; keeps a misreported 0 from starving.
pub(crate) const MIN_SCALE: f64 = 0.01;

/// Fast-path attempts before a policy falls back to an exact scan.
pub(crate) const FAST_TRIES: usize = 8;

/// Refuses endpoint sets with a repeated name or a weight above [`MAX_WEIGHT`].
pub(crate) fn check_endpoints(endpoints: &[EndpointSpec]) -> Result<(), BuildError> {
    let mut seen = HashSet::with_capacity(endpoints.len());
    for e in endpoints {
        if e.weight > MAX_WEIGHT {
            return Err(BuildError::WeightTooLarge {
                name: e.name.clone(),
                weight: e.weight,
            });
        }
        if !seen.insert(e.name.as_str()) {
            return Err(BuildError::DuplicateName(e.name.clone()));
        }
    }
    Ok(())
}

/// The slow-start factor, clamped to `[MIN_SCALE, 1]` (NaN reads as `MIN_SCALE`).
pub(crate) fn scale(load: &dyn LoadView, i: usize) -> f64 {
    let s = load.weight_factor(i);
    if s >= 1.0 {
        1.0
    } else if s > MIN_SCALE {
        s
    } else {
        MIN_SCALE
    }
}

/// Accepts endpoint `i` with probability equal to its slow-start factor (rejection
/// sampling, which turns a weight-`w` choice into a weight-`w x weight_factor` choice).
/// Draws no randomness at full weight.
pub(crate) fn accept_scaled(load: &dyn LoadView, i: usize, rng: &mut dyn RngCore) -> bool {
    let s = scale(load, i);
    s >= 1.0 || unit_f64(rng) < s
}

/// Whether a slow-starting endpoint `i` takes hashed key `key`: yes for the keys whose
/// fixed fraction (a mix of the key, uniform in [0, 1)) lies below its factor. The hash
/// policies cannot scale a weight without moving keys, so a ramping endpoint instead
/// takes a growing, deterministic share of its own keys: every key it takes at factor
/// `f` it keeps at every larger `f` (no flapping), and instances that agree on the factor
/// agree on the pick. Keys it declines walk on as if it were not pickable.
fn accepts_key(load: &dyn LoadView, i: usize, key: u64) -> bool {
    let s = scale(load, i);
    s >= 1.0 || key_fraction(key) < s
}

/// A key's fixed fraction in [0, 1), decorrelated from the slot or ring position the key
/// hashed to (a different mix of the same 64 bits).
fn key_fraction(key: u64) -> f64 {
    let mixed = key.rotate_left(29).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// The configured weights, and the pickability test built on them.
#[derive(Clone, Debug)]
pub(crate) struct Weights(Box<[u32]>);

impl Weights {
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> Weights {
        Weights(endpoints.iter().map(|e| e.weight).collect())
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn get(&self, i: usize) -> u32 {
        self.0[i]
    }

    /// Eligible and weighted above 0.
    pub(crate) fn pickable(&self, load: &dyn LoadView, i: usize) -> bool {
        self.0[i] > 0 && load.is_eligible(i)
    }

    /// Whether endpoint `i` takes hashed `key` now: pickable, and the key within its
    /// slow-start share ([`accepts_key`]). The hash policies' keyed walks use this.
    pub(crate) fn takes_key(&self, load: &dyn LoadView, i: usize, key: u64) -> bool {
        self.pickable(load, i) && accepts_key(load, i, key)
    }

    /// The first pickable endpoint at or after `start`, wrapping around.
    pub(crate) fn first_pickable_from(&self, load: &dyn LoadView, start: usize) -> Option<usize> {
        let n = self.len();
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.pickable(load, i))
    }

    /// An exact random draw over the pickable endpoints other than `skip`, each with
    /// probability proportional to `weight x factor` (`weighted`) or to `factor` alone. Two
    /// passes, no allocation.
    pub(crate) fn scan(
        &self,
        load: &dyn LoadView,
        rng: &mut dyn RngCore,
        weighted: bool,
        skip: Option<usize>,
    ) -> Option<usize> {
        let share = |i: usize| {
            let w = if weighted { f64::from(self.0[i]) } else { 1.0 };
            w * scale(load, i)
        };
        let candidate = |i: usize| Some(i) != skip && self.pickable(load, i);
        let mut total = 0.0;
        let mut last = None;
        for i in 0..self.len() {
            if candidate(i) {
                total += share(i);
                last = Some(i);
            }
        }
        let last = last?;
        let mut r = unit_f64(rng) * total;
        for i in 0..self.len() {
            if candidate(i) {
                let s = share(i);
                if r < s {
                    return Some(i);
                }
                r -= s;
            }
        }
        Some(last)
    }
}
