//! `ring-hash`: consistent hashing on a ring of virtual nodes (Karger et al., ketama). A key
//! belongs to the first virtual node at or after its hash; removing an endpoint moves only
//! the keys it owned, and every instance of a fleet builds the same ring from the same names.
//!
//! Virtual node `i` of an endpoint is the xxh64 (seed 0) of `"{name}#{i}"` (SPEC 3.1). An
//! endpoint of weight `w` gets `w x k` virtual nodes, where `k` is the smallest power of two
//! that makes the ring at least [`MIN_RING_SIZE`] (1024) entries. A power of two (rather than
//! `ceil(min / total)`) keeps `k` unchanged across most membership changes, so removing one
//! endpoint of ten does not add virtual nodes to the other nine and move their keys too.
//! Above [`MAX_RING_SIZE`] the weights are scaled down proportionally (each at least one).

use rand::RngCore;

use super::eligible::Weights;
use super::{EndpointSpec, LoadView, P2cEwma};
use crate::hash::ring_vnode_key;

/// The smallest ring, in virtual nodes.
pub const MIN_RING_SIZE: usize = 1024;

/// The largest ring, in virtual nodes (4 Mi entries, 48 MiB); bigger weight sums are scaled
/// down proportionally (each weighted endpoint keeps at least one virtual node).
pub const MAX_RING_SIZE: usize = 1 << 22;

/// Virtual nodes per endpoint (0 for weight 0).
fn vnode_counts(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut k = 1u64;
    while total * k < MIN_RING_SIZE as u64 {
        k *= 2;
    }
    if total * k <= MAX_RING_SIZE as u64 {
        return weights
            .iter()
            .map(|&w| (u64::from(w) * k) as usize)
            .collect();
    }
    weights
        .iter()
        .map(|&w| {
            if w == 0 {
                0
            } else {
                (u64::from(w) * MAX_RING_SIZE as u64 / total).max(1) as usize
            }
        })
        .collect()
}

/// A ring of virtual nodes, sorted by hash, with a p2c-ewma fallback for key-less requests.
///
/// When the owner of a key is not pickable, the lookup walks on along the ring to the next
/// virtual node of a pickable endpoint, so instances that agree on eligibility agree on the
/// pick, and an ineligible endpoint's keys spread over the others by their ring share.
/// Slow-start factors are ignored for keyed picks (scaling would move keys and defeat
/// affinity); the key-less fallback honours them.
#[derive(Debug)]
pub(crate) struct RingHash {
    weights: Weights,
    ring: Box<[(u64, u32)]>,
    fallback: P2cEwma,
}

impl RingHash {
    /// Builds the ring over `endpoints`.
    pub(crate) fn new(endpoints: &[EndpointSpec]) -> RingHash {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let counts = vnode_counts(&weights);
        let mut ring = Vec::with_capacity(counts.iter().sum());
        for (idx, (e, &count)) in endpoints.iter().zip(&counts).enumerate() {
            for i in 0..count {
                ring.push((ring_vnode_key(&e.name, i as u64), idx as u32));
            }
        }
        // Ties (vanishingly rare) are ordered by name, so the ring does not depend on the
        // order endpoints were listed in.
        ring.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0).then_with(|| {
                endpoints[a.1 as usize]
                    .name
                    .cmp(&endpoints[b.1 as usize].name)
            })
        });
        RingHash {
            weights: Weights::new(endpoints),
            ring: ring.into_boxed_slice(),
            fallback: P2cEwma::new(endpoints),
        }
    }

    /// The ring: `(virtual node hash, endpoint index)`, sorted by hash.
    #[cfg(test)]
    pub(crate) fn ring(&self) -> &[(u64, u32)] {
        &self.ring
    }

    /// The owner of `key` ignoring eligibility: the first virtual node at or after `key`,
    /// wrapping around; `None` for an empty ring.
    #[cfg(test)]
    pub(crate) fn owner(&self, key: u64) -> Option<usize> {
        let pos = self.position(key)?;
        Some(self.ring[pos].1 as usize)
    }

    fn position(&self, key: u64) -> Option<usize> {
        if self.ring.is_empty() {
            return None;
        }
        let pos = self.ring.partition_point(|&(h, _)| h < key);
        Some(if pos == self.ring.len() { 0 } else { pos })
    }

    /// The first pickable endpoint at or after `key` on the ring.
    pub(crate) fn lookup(&self, key: u64, load: &dyn LoadView) -> Option<usize> {
        // Slow-starting owners decline part of their keys; if every pickable endpoint
        // declines, the plain walk decides (a pick is never refused while one is pickable).
        self.walk(key, &|i| self.weights.takes_key(load, i, key))
            .or_else(|| self.walk(key, &|i| self.weights.pickable(load, i)))
    }

    /// The walk from `key`'s position to the first endpoint `takes` accepts.
    fn walk(&self, key: u64, takes: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = self.position(key)?;
        let len = self.ring.len();
        let mut last_refused = u32::MAX;
        for k in 0..len {
            let idx = self.ring[(start + k) % len].1;
            if idx == last_refused {
                continue;
            }
            if takes(idx as usize) {
                return Some(idx as usize);
            }
            last_refused = idx;
        }
        None
    }

    /// The keyed lookup, or p2c-ewma for a request without a key.
    pub(crate) fn pick(
        &self,
        key: Option<u64>,
        load: &dyn LoadView,
        rng: &mut dyn RngCore,
    ) -> Option<usize> {
        match key {
            Some(key) => self.lookup(key, load),
            None => self.fallback.pick(load, rng),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::StaticLoad;

    fn eps(weights: &[u32]) -> Vec<EndpointSpec> {
        crate::balance::test_endpoints("backend-", weights)
    }

    #[test]
    fn the_ring_has_at_least_1024_entries_in_weight_proportion() {
        let r = RingHash::new(&eps(&[1, 2, 0]));
        assert_eq!(r.ring().len(), 3 * 512);
        let of = |i: u32| r.ring().iter().filter(|e| e.1 == i).count();
        assert_eq!((of(0), of(1), of(2)), (512, 1024, 0));
    }

    #[test]
    fn virtual_nodes_hash_name_hash_index() {
        let r = RingHash::new(&eps(&[1]));
        let expected = xxhash_rust::xxh64::xxh64(b"backend-0#0", 0);
        assert!(r.ring().iter().any(|e| e.0 == expected));
    }

    #[test]
    fn an_ineligible_owner_hands_its_keys_to_the_next_node_on_the_ring() {
        let r = RingHash::new(&eps(&[1, 1, 1]));
        let mut load = StaticLoad::uniform(3);
        for key in (0..1_000u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let owner = r.owner(key).expect("owner");
            load.eligible = vec![true; 3];
            assert_eq!(r.lookup(key, &load), Some(owner));
            load.eligible[owner] = false;
            let next = r.lookup(key, &load).expect("another endpoint");
            assert_ne!(next, owner);
            let pos = r.position(key).expect("pos");
            let walked = (0..r.ring().len())
                .map(|k| r.ring()[(pos + k) % r.ring().len()].1 as usize)
                .find(|&i| i != owner);
            assert_eq!(Some(next), walked);
        }
    }

    #[test]
    fn the_ring_does_not_depend_on_endpoint_order() {
        let a = eps(&[1, 2, 3]);
        let mut b = a.clone();
        b.reverse();
        let ra = RingHash::new(&a);
        let rb = RingHash::new(&b);
        for key in (0..500u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            let oa = ra.owner(key).map(|i| a[i].name.clone());
            let ob = rb.owner(key).map(|i| b[i].name.clone());
            assert_eq!(oa, ob);
        }
    }
}
