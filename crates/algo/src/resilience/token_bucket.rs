//! The local rate-limit bucket (SPEC 3.1): `rate` tokens per `per`, capacity `burst`, one
//! token per request; over the limit the caller answers 429 with `Retry-After`. Integer
//! arithmetic in "token x nanoseconds" units keeps refill exact at any rate (no float drift
//! after days of uptime), and the refusal says how long until the next token exists.

use std::time::Duration;

use crate::time::nanos;

/// A refusal: the wait until one token will exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryAfter {
    /// The exact wait.
    pub wait: Duration,
}

impl RetryAfter {
    /// The wait in whole seconds, rounded up, at least 1: the `Retry-After` header value.
    pub fn secs_rounded_up(&self) -> u64 {
        let s = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        s.max(1)
    }
}

/// A token bucket. One token is `per_ns` units; refill adds `rate` units per elapsed
/// nanosecond; the level is capped at `burst` tokens. A new bucket is full.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u128,
    per_ns: u128,
    capacity: u128,
    level: u128,
    stamp: u64,
}

impl TokenBucket {
    /// A full bucket at `now` refilling `rate` tokens per `per` up to `burst` tokens. A zero
    /// `per` counts as 1 ns; `rate = 0` never refills; `burst = 0` refuses everything.
    pub fn new(rate: u32, per: Duration, burst: u32, now: u64) -> TokenBucket {
        let per_ns = u128::from(nanos(per).max(1));
        let capacity = u128::from(burst) * per_ns;
        TokenBucket {
            rate: u128::from(rate),
            per_ns,
            capacity,
            level: capacity,
            stamp: now,
        }
    }

    fn refill(&mut self, now: u64) {
        if now > self.stamp {
            let gained = u128::from(now - self.stamp) * self.rate;
            self.level = self.level.saturating_add(gained).min(self.capacity);
            self.stamp = now;
        }
    }

    /// Takes one token at `now`, or says how long until one exists. A `now` before the last
    /// call counts as no time elapsed.
    pub fn try_take(&mut self, now: u64) -> Result<(), RetryAfter> {
        self.refill(now);
        if self.level >= self.per_ns {
            self.level -= self.per_ns;
            return Ok(());
        }
        let missing = self.per_ns - self.level;
        let wait_ns = if self.rate == 0 || self.capacity < self.per_ns {
            u64::MAX
        } else {
            u64::try_from(missing.div_ceil(self.rate)).unwrap_or(u64::MAX)
        };
        Err(RetryAfter {
            wait: Duration::from_nanos(wait_ns),
        })
    }

    /// Whole tokens available at `now` (refilling as a side effect).
    pub fn available(&mut self, now: u64) -> u64 {
        self.refill(now);
        u64::try_from(self.level / self.per_ns).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_full_bucket_allows_the_burst_then_refuses() {
        let mut b = TokenBucket::new(100, Duration::from_secs(1), 200, 0);
        assert_eq!((0..300).filter(|_| b.try_take(0).is_ok()).count(), 200);
        let err = b.try_take(0).expect_err("refused");
        assert_eq!(err.wait, Duration::from_millis(10));
        assert_eq!(err.secs_rounded_up(), 1);
    }

    #[test]
    fn tokens_refill_at_the_rate_up_to_the_burst() {
        let mut b = TokenBucket::new(100, Duration::from_secs(1), 200, 0);
        while b.try_take(0).is_ok() {}
        assert_eq!(b.available(S / 2), 50);
        assert_eq!(b.available(10 * S), 200);
        let mut slow = TokenBucket::new(1, Duration::from_secs(60), 1, 0);
        assert!(slow.try_take(0).is_ok());
        let err = slow.try_take(S / 2).expect_err("refused");
        assert_eq!(err.wait, Duration::from_millis(59_500));
        assert_eq!(err.secs_rounded_up(), 60);
        assert!(slow.try_take(60 * S).is_ok());
    }

    #[test]
    fn fractional_refill_is_exact() {
        let mut b = TokenBucket::new(3, Duration::from_secs(1), 1, 0);
        assert!(b.try_take(0).is_ok());
        // a third of a second gives exactly one token, one nanosecond less does not
        assert!(b.try_take(S / 3).is_err());
        assert!(b.try_take(S / 3 + 1).is_ok());
    }

    #[test]
    fn a_zero_burst_or_rate_never_recovers() {
        let mut z = TokenBucket::new(10, Duration::from_secs(1), 0, 0);
        assert_eq!(
            z.try_take(100 * S).err().map(|e| e.wait),
            Some(Duration::from_nanos(u64::MAX))
        );
        let mut r = TokenBucket::new(0, Duration::from_secs(1), 1, 0);
        assert!(r.try_take(0).is_ok());
        assert!(r.try_take(1_000 * S).is_err());
    }
}
