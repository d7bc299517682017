//! The one conversion between spans and instants. Instants in this crate are plain `u64`
//! nanoseconds since an origin the caller chooses (the runtime: one process-wide monotonic
//! origin), so tests can write any instant they like and nothing here reads a clock; spans
//! from the configuration stay `Duration`s and meet instants only through this helper.

use std::time::Duration;

/// `d` as whole nanoseconds, saturating at `u64::MAX` (about 584 years).
pub(crate) const fn nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        n as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_convert_to_nanoseconds_and_saturate() {
        assert_eq!(nanos(Duration::from_micros(3)), 3_000);
        assert_eq!(nanos(Duration::MAX), u64::MAX);
    }
}
