//! Small, allocation-free helpers over an injected `RngCore`, so every random decision in the
//! crate draws from the caller's generator (seeded in tests, `SWITCHYARD_SEED` in drills).

use rand::RngCore;

/// A uniform index in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for any
/// realistic `n`). `n` must be at least 1.
pub(crate) fn below(rng: &mut dyn RngCore, n: usize) -> usize {
    debug_assert!(n > 0);
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// A uniform `u64` in `0..n`; `n` must be at least 1.
pub(crate) fn below_u64(rng: &mut dyn RngCore, n: u64) -> u64 {
    debug_assert!(n > 0);
    ((u128::from(rng.next_u64()) * u128::from(n)) >> 64) as u64
}

/// A uniform float in `[0, 1)` with 53 random bits.
pub(crate) fn unit_f64(rng: &mut dyn RngCore) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Two distinct uniform indices in `0..n`; `n` must be at least 2.
pub(crate) fn two_distinct(rng: &mut dyn RngCore, n: usize) -> (usize, usize) {
    debug_assert!(n >= 2);
    let a = below(rng, n);
    let mut b = below(rng, n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn two_distinct_never_returns_the_same_index_twice() {
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let (a, b) = two_distinct(&mut rng, 3);
            assert_ne!(a, b);
            assert!(a < 3 && b < 3);
        }
    }

    #[test]
    fn below_covers_the_whole_range_uniformly() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[below(&mut rng, 4)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
        let f = unit_f64(&mut rng);
        assert!((0.0..1.0).contains(&f));
    }
}
