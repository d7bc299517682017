//! Open-loop arrival times: request `i` is due at `i / rate` seconds after the start.
//!
//! The generator never waits for an answer before sending the next request, and every
//! latency is measured from this intended time rather than from the moment a connection
//! was free. A stalled server therefore shows up as the latency its users would see
//! (coordinated omission corrected), not as a quietly lower request count.

use std::time::Duration;

/// A fixed-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    rate: f64,
}

impl Schedule {
    /// `rate` requests per second; `None` unless it is finite and positive.
    pub fn new(rate: f64) -> Option<Self> {
        (rate.is_finite() && rate > 0.0).then_some(Self { rate })
    }

    /// The requests per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When request `i` (0-based) is due, from the start.
    pub fn at(&self, i: u64) -> Duration {
        let nanos = (i as f64 * 1e9 / self.rate).round();
        Duration::from_nanos(nanos.min(u64::MAX as f64) as u64)
    }

    /// How many requests are due by `elapsed` (request `i` counts once `at(i) <= elapsed`).
    pub fn due_by(&self, elapsed: Duration) -> u64 {
        let mut n = (elapsed.as_secs_f64() * self.rate).floor().max(0.0) as u64;
        // Correct the float estimate against `at`, which is the definition.
        while self.at(n) <= elapsed {
            n += 1;
        }
        while n > 0 && self.at(n - 1) > elapsed {
            n -= 1;
        }
        n
    }

    /// The number of requests a run of `duration` sends.
    pub fn total(&self, duration: Duration) -> u64 {
        // Request i is sent when at(i) < duration.
        let mut n = self.due_by(duration);
        while n > 0 && self.at(n - 1) >= duration {
            n -= 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_evenly_spaced() {
        let s = Schedule::new(4.0).expect("valid");
        assert_eq!(s.at(0), Duration::ZERO);
        assert_eq!(s.at(1), Duration::from_millis(250));
        assert_eq!(s.at(7), Duration::from_millis(1750));
        let s = Schedule::new(3.0).expect("valid");
        assert_eq!(s.at(1), Duration::from_nanos(333_333_333));
        assert_eq!(s.at(3), Duration::from_secs(1));
    }

    #[test]
    fn due_counts_include_the_request_at_the_instant() {
        let s = Schedule::new(4.0).expect("valid");
        assert_eq!(s.due_by(Duration::ZERO), 1);
        assert_eq!(s.due_by(Duration::from_millis(249)), 1);
        assert_eq!(s.due_by(Duration::from_millis(250)), 2);
        assert_eq!(s.due_by(Duration::from_secs(1)), 5);
    }

    #[test]
    fn a_run_sends_rate_times_duration() {
        let s = Schedule::new(4.0).expect("valid");
        assert_eq!(s.total(Duration::from_secs(1)), 4);
        assert_eq!(s.total(Duration::from_secs(10)), 40);
        assert_eq!(
            Schedule::new(1000.0)
                .expect("valid")
                .total(Duration::from_millis(1500)),
            1500
        );
        assert_eq!(s.total(Duration::ZERO), 0);
    }

    #[test]
    fn non_positive_rates_are_refused() {
        assert!(Schedule::new(0.0).is_none());
        assert!(Schedule::new(-1.0).is_none());
        assert!(Schedule::new(f64::NAN).is_none());
        assert!(Schedule::new(f64::INFINITY).is_none());
    }
}
