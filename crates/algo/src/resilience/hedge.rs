//! When to hedge (SPEC 3.1 `hedge.after = "pNN"`): that percentile of first-attempt
//! time-to-head for one route and cluster over the last 30 s, once at least 100 samples
//! exist; before that, no hedging. A fixed delay would either hedge almost everything on a
//! slow day or nothing on a fast one; a recent percentile hedges just the tail.
//!
//! Samples go into a log-linear histogram (8 linear sub-buckets per power of two, so a
//! reported percentile is at most 12.5% above the true sample) per 5 s slice, 6 slices to
//! the window: fixed memory (about 12 KiB) whatever the request rate, O(1) recording.

use std::time::Duration;

use crate::time::nanos;

/// Slices in the window.
const SLICES: usize = 6;
/// Sub-buckets per power of two (a power of two itself).
const SUB: u64 = 8;
const SUB_BITS: u32 = 3;
/// Histogram buckets: values 0..8 exactly, then 8 per octave up to 2^64.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// The smallest sample count before a percentile is reported (SPEC 3.1).
pub const MIN_SAMPLES: u64 = 100;

/// The bucket of a value.
fn bucket_of(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let octave = 63 - v.leading_zeros();
    let sub = (v >> (octave - SUB_BITS)) & (SUB - 1);
    ((octave - SUB_BITS + 1) as u64 * SUB + sub) as usize
}

/// The largest value of a bucket.
fn bucket_max(b: usize) -> u64 {
    let b = b as u64;
    if b < SUB {
        return b;
    }
    let octave = b / SUB - 1 + u64::from(SUB_BITS);
    let sub = b % SUB;
    let low = (SUB + sub) << (octave - u64::from(SUB_BITS));
    low.saturating_add((1u64 << (octave - u64::from(SUB_BITS))) - 1)
}

#[derive(Clone, Debug)]
struct Slice {
    epoch: u64,
    total: u64,
    counts: Box<[u32]>,
}

/// A sliding 30 s latency histogram answering "what is the pNN now".
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    slice_ns: u64,
    slices: Vec<Slice>,
}

impl Default for LatencyWindow {
    fn default() -> LatencyWindow {
        LatencyWindow::new(Duration::from_secs(30))
    }
}

impl LatencyWindow {
    /// A window of length `window` (SPEC: 30 s), in 6 slices.
    pub fn new(window: Duration) -> LatencyWindow {
        let fresh = Slice {
            epoch: u64::MAX,
            total: 0,
            counts: vec![0; BUCKETS].into_boxed_slice(),
        };
        LatencyWindow {
            slice_ns: (nanos(window) / SLICES as u64).max(1),
            slices: vec![fresh; SLICES],
        }
    }

    /// Records one first-attempt time-to-head at `now`.
    pub fn record(&mut self, latency: Duration, now: u64) {
        let epoch = now / self.slice_ns;
        let slice = &mut self.slices[(epoch % SLICES as u64) as usize];
        if slice.epoch != epoch {
            slice.epoch = epoch;
            slice.total = 0;
            slice.counts.iter_mut().for_each(|c| *c = 0);
        }
        let b = bucket_of(nanos(latency));
        slice.counts[b] = slice.counts[b].saturating_add(1);
        slice.total += 1;
    }

    fn live(&self, now: u64) -> impl Iterator<Item = &Slice> {
        let current = now / self.slice_ns;
        let oldest = current.saturating_sub(SLICES as u64 - 1);
        self.slices
            .iter()
            .filter(move |s| s.epoch != u64::MAX && (oldest..=current).contains(&s.epoch))
    }

    /// Samples in the window at `now`.
    pub fn samples(&self, now: u64) -> u64 {
        self.live(now).map(|s| s.total).sum()
    }

    /// The `percentile` (0-100) of the window at `now`, as the upper bound of its histogram
    /// bucket; `None` below [`MIN_SAMPLES`] samples.
    pub fn percentile(&self, percentile: f64, now: u64) -> Option<Duration> {
        let total = self.samples(now);
        if total < MIN_SAMPLES {
            return None;
        }
        let p = percentile.clamp(0.0, 100.0);
        let rank = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for b in 0..BUCKETS {
            seen += self.live(now).map(|s| u64::from(s.counts[b])).sum::<u64>();
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_max(b)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn buckets_are_contiguous_and_bound_their_values() {
        for v in (0..10_000u64).chain([u64::MAX / 3, u64::MAX - 1, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS);
            assert!(v <= bucket_max(b), "{v}");
            assert!(b == 0 || v > bucket_max(b - 1), "{v}");
        }
        // 12.5% at most above the sample
        assert_eq!(bucket_max(bucket_of(1_000)), 1_023);
    }

    #[test]
    fn no_percentile_before_one_hundred_samples() {
        let mut w = LatencyWindow::default();
        for _ in 0..99 {
            w.record(Duration::from_millis(5), 0);
        }
        assert_eq!(w.percentile(95.0, 0), None);
        w.record(Duration::from_millis(5), 0);
        let p = w.percentile(95.0, 0).expect("p95");
        assert!(
            p >= Duration::from_millis(5) && p < Duration::from_micros(5_700),
            "{p:?}"
        );
    }

    #[test]
    fn the_percentile_reflects_the_tail() {
        let mut w = LatencyWindow::default();
        for i in 1..=1_000u64 {
            w.record(Duration::from_millis(i), S);
        }
        let p95 = w.percentile(95.0, S).expect("p95").as_millis();
        assert!((950..=1_069).contains(&p95), "{p95}");
        let p50 = w.percentile(50.0, S).expect("p50").as_millis();
        assert!((500..=563).contains(&p50), "{p50}");
    }

    #[test]
    fn old_samples_leave_the_window() {
        let mut w = LatencyWindow::default();
        for _ in 0..200 {
            w.record(Duration::from_secs(1), 0);
        }
        assert_eq!(w.samples(29 * S), 200);
        assert_eq!(w.samples(30 * S), 0);
        assert_eq!(w.percentile(50.0, 30 * S), None);
    }
}
