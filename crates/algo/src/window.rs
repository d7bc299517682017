//! A sliding window of time buckets holding two counters each. The retry budget (first
//! attempts vs. retries) and outlier detection (requests vs. errors) both need "how many in
//! the last W seconds" without storing one entry per event; buckets bound the memory and make
//! the window slide in steps of one bucket.

/// One bucket: the epoch (bucket number since the origin) it currently counts, and its counters.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    a: u64,
    b: u64,
}

/// `buckets.len()` buckets of `bucket_ns` each. The window at `now` is the current bucket plus
/// the `len - 1` before it, so it covers between `(len - 1) x bucket` and `len x bucket`.
#[derive(Clone, Debug)]
pub(crate) struct BucketWindow {
    bucket_ns: u64,
    buckets: Box<[Bucket]>,
}

impl BucketWindow {
    /// A window of `count` buckets (at least 1) of `bucket_ns` nanoseconds (at least 1).
    pub(crate) fn new(count: usize, bucket_ns: u64) -> BucketWindow {
        BucketWindow {
            bucket_ns: bucket_ns.max(1),
            buckets: vec![
                Bucket {
                    epoch: u64::MAX,
                    a: 0,
                    b: 0
                };
                count.max(1)
            ]
            .into_boxed_slice(),
        }
    }

    /// Adds `da` and `db` to the bucket holding `now`.
    pub(crate) fn add(&mut self, now: u64, da: u64, db: u64) {
        let epoch = now / self.bucket_ns;
        let len = self.buckets.len() as u64;
        let bucket = &mut self.buckets[(epoch % len) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket { epoch, a: 0, b: 0 };
        }
        bucket.a = bucket.a.saturating_add(da);
        bucket.b = bucket.b.saturating_add(db);
    }

    /// The sums of both counters over the window ending at `now`.
    pub(crate) fn sums(&self, now: u64) -> (u64, u64) {
        let current = now / self.bucket_ns;
        let len = self.buckets.len() as u64;
        let oldest = current.saturating_sub(len - 1);
        self.buckets
            .iter()
            .filter(|b| b.epoch != u64::MAX && b.epoch >= oldest && b.epoch <= current)
            .fold((0u64, 0u64), |(a, b), k| {
                (a.saturating_add(k.a), b.saturating_add(k.b))
            })
    }

    /// Forgets every count.
    pub(crate) fn clear(&mut self) {
        for b in self.buckets.iter_mut() {
            *b = Bucket {
                epoch: u64::MAX,
                a: 0,
                b: 0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_leave_the_window_one_bucket_at_a_time() {
        let mut w = BucketWindow::new(10, 1_000);
        w.add(500, 1, 0);
        w.add(1_500, 2, 1);
        assert_eq!(w.sums(9_999), (3, 1));
        assert_eq!(w.sums(10_000), (2, 1));
        assert_eq!(w.sums(11_000), (0, 0));
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let mut w = BucketWindow::new(2, 10);
        w.add(0, 5, 5);
        w.add(20, 1, 0);
        assert_eq!(w.sums(20), (1, 0));
        w.clear();
        assert_eq!(w.sums(20), (0, 0));
    }
}
