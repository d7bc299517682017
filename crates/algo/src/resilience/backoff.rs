//! Exponential backoff with full jitter (SPEC 3.1): before retry `n` wait
//! `random(0, min(backoff_max, backoff_base x 2^(n-1)))`. Full jitter spreads the retries of
//! many clients that failed together, instead of bringing them back in synchronized waves;
//! the deadline check skips a retry whose wait alone would pass the request's deadline.

use std::time::Duration;

use rand::RngCore;

use crate::rng::below_u64;
use crate::time::nanos;

/// The upper bound of the wait before retry `retry` (1 = the first retry):
/// `min(max, base x 2^(retry-1))`, without overflow for any `retry`; `retry = 0` reads as 1.
pub fn backoff_cap(retry: u32, base: Duration, max: Duration) -> Duration {
    let shift = retry.saturating_sub(1);
    let factor = if shift >= 32 { u32::MAX } else { 1u32 << shift };
    base.checked_mul(factor).map_or(max, |d| d.min(max))
}

/// The jittered wait before retry `retry`: uniform in `[0, backoff_cap(retry, base, max)]`,
/// at nanosecond resolution.
pub fn backoff(retry: u32, base: Duration, max: Duration, rng: &mut dyn RngCore) -> Duration {
    let cap = nanos(backoff_cap(retry, base, max));
    Duration::from_nanos(below_u64(rng, cap.saturating_add(1)))
}

/// Whether waiting `delay` from `now` still leaves time before `deadline` (instants in
/// nanoseconds): `now + delay < deadline`. A retry that would start at or after the deadline
/// is skipped (SPEC 3.1).
pub fn fits_deadline(now: u64, delay: Duration, deadline: u64) -> bool {
    now.saturating_add(nanos(delay)) < deadline
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    const BASE: Duration = Duration::from_millis(25);
    const MAX: Duration = Duration::from_millis(250);

    #[test]
    fn the_cap_doubles_then_stops_at_the_maximum() {
        let caps: Vec<u128> = (1..=6)
            .map(|n| backoff_cap(n, BASE, MAX).as_millis())
            .collect();
        assert_eq!(caps, [25, 50, 100, 200, 250, 250]);
        assert_eq!(backoff_cap(0, BASE, MAX), BASE);
        assert_eq!(backoff_cap(u32::MAX, BASE, MAX), MAX);
        assert_eq!(backoff_cap(40, Duration::MAX, Duration::MAX), Duration::MAX);
    }

    #[test]
    fn jittered_waits_stay_within_zero_and_the_cap_and_cover_it() {
        let mut rng = SmallRng::seed_from_u64(11);
        for n in 1..=5 {
            let cap = backoff_cap(n, BASE, MAX);
            let waits: Vec<Duration> = (0..2_000)
                .map(|_| backoff(n, BASE, MAX, &mut rng))
                .collect();
            assert!(waits.iter().all(|w| *w <= cap));
            assert!(waits.iter().any(|w| *w < cap / 10));
            assert!(waits.iter().any(|w| *w > cap * 9 / 10));
        }
        assert_eq!(backoff(1, Duration::ZERO, MAX, &mut rng), Duration::ZERO);
    }

    #[test]
    fn a_wait_past_the_deadline_does_not_fit() {
        let ms = 1_000_000;
        assert!(fits_deadline(100 * ms, Duration::from_millis(50), 151 * ms));
        assert!(!fits_deadline(
            100 * ms,
            Duration::from_millis(50),
            150 * ms
        ));
        assert!(!fits_deadline(
            u64::MAX - 1,
            Duration::from_secs(1),
            u64::MAX
        ));
    }
}
