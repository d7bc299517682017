//! The cluster retry budget (SPEC 3.1), so retries and hedges can never amplify an outage:
//! over a sliding 10 s window, retries + hedges may not exceed `ratio x first attempts` in
//! that window plus `min_retries_per_second x 10`. Only first attempts deposit.
//!
//! The window is 10 buckets of 1 s: it covers the current second and the 9 before it, so it
//! slides in 1 s steps and spans between 9 and 10 s. Memory is fixed (10 buckets), and a
//! withdrawal is a handful of additions.

use crate::window::BucketWindow;

/// Buckets in the window.
const BUCKETS: usize = 10;
/// One bucket: 1 s.
const BUCKET_NS: u64 = 1_000_000_000;
/// The window in seconds, for the `min_retries_per_second` allowance.
const WINDOW_SECS: f64 = 10.0;

/// A retry budget. The runtime keeps one per cluster (behind a mutex: both calls are a few
/// nanoseconds).
#[derive(Clone, Debug)]
pub struct RetryBudget {
    ratio: Option<f64>,
    min_per_window: f64,
    window: BucketWindow,
}

impl RetryBudget {
    /// A budget allowing `ratio` retries per first attempt (`None` = unlimited, for drills)
    /// plus `min_retries_per_second` regardless of traffic. SPEC default: `0.2`, `10`.
    pub fn new(ratio: Option<f64>, min_retries_per_second: u32) -> RetryBudget {
        RetryBudget {
            ratio: ratio.map(|r| if r.is_finite() && r > 0.0 { r } else { 0.0 }),
            min_per_window: f64::from(min_retries_per_second) * WINDOW_SECS,
            window: BucketWindow::new(BUCKETS, BUCKET_NS),
        }
    }

    /// Records a first attempt at `now` (a deposit).
    pub fn record_first_attempt(&mut self, now: u64) {
        self.window.add(now, 1, 0);
    }

    /// Asks for one retry or hedge at `now`: `true` (and the withdrawal is recorded) when the
    /// window has room, `false` when the attempt must not be made.
    pub fn try_withdraw(&mut self, now: u64) -> bool {
        let allowed = match self.ratio {
            None => true,
            Some(ratio) => {
                let (firsts, retries) = self.window.sums(now);
                (retries as f64) + 1.0 <= ratio * firsts as f64 + self.min_per_window
            }
        };
        if allowed {
            self.window.add(now, 0, 1);
        }
        allowed
    }

    /// `(first attempts, retries)` in the window ending at `now`.
    pub fn counts(&self, now: u64) -> (u64, u64) {
        self.window.sums(now)
    }
}

impl Default for RetryBudget {
    /// SPEC 3.1 default: `{ ratio = 0.2, min_retries_per_second = 10 }`.
    fn default() -> RetryBudget {
        RetryBudget::new(Some(0.2), 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn withdrawals(b: &mut RetryBudget, now: u64, tries: u32) -> u32 {
        (0..tries).filter(|_| b.try_withdraw(now)).count() as u32
    }

    #[test]
    fn without_traffic_only_the_minimum_is_allowed() {
        let mut b = RetryBudget::default();
        assert_eq!(withdrawals(&mut b, 0, 1_000), 100);
    }

    #[test]
    fn first_attempts_deposit_ratio_retries_each() {
        let mut b = RetryBudget::new(Some(0.2), 0);
        for _ in 0..1_000 {
            b.record_first_attempt(S / 2);
        }
        assert_eq!(withdrawals(&mut b, S / 2, 1_000), 200);
        assert_eq!(b.counts(S / 2), (1_000, 200));
    }

    #[test]
    fn the_window_slides_in_one_second_steps() {
        let mut b = RetryBudget::new(Some(1.0), 0);
        for _ in 0..10 {
            b.record_first_attempt(0);
        }
        assert_eq!(withdrawals(&mut b, 5 * S, 20), 10);
        // at 10 s the deposits of second 0 leave the window, the retries of second 5 stay
        for _ in 0..4 {
            b.record_first_attempt(6 * S);
        }
        assert_eq!(withdrawals(&mut b, 10 * S, 10), 0);
        // at 15 s the retries of second 5 have left: the 4 deposits of second 6 remain
        assert_eq!(b.counts(15 * S), (4, 0));
        assert_eq!(withdrawals(&mut b, 15 * S, 10), 4);
        // at 16 s the deposits of second 6 have left too
        assert_eq!(withdrawals(&mut b, 16 * S, 10), 0);
    }

    #[test]
    fn an_unlimited_budget_always_allows() {
        let mut b = RetryBudget::new(None, 0);
        assert_eq!(withdrawals(&mut b, 0, 10_000), 10_000);
    }
}
