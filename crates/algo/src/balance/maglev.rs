//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table of prime size M in
//! which every endpoint claims slots along its own permutation of `0..M`. Lookups are one
//! modulo and one array read, the table spreads slots almost perfectly evenly, and a
//! membership change moves few slots that the changed endpoint did not own. The packet tier
//! (XDP) builds its table with [`MaglevTable::build`] too, so both tiers agree.
//!
//! Per SPEC 3.1, endpoint `e`'s permutation is `(offset + j x skip) mod M` with
//! `offset = xxh64(name, seed 0) mod M` and `skip = xxh64(name, seed 1) mod (M - 1) + 1`.
//!
//! Weighted population: endpoints take turns in name order (so the table depends only on the
//! set of names and weights, not their listing order). In each round every endpoint adds its
//! weight to a credit counter and, while its credit reaches the largest weight `W`, claims
//! the next free slot of its permutation and pays `W`. An endpoint of the largest weight
//! claims one slot per round, one of weight `w` claims `w / W` per round on average, so slot
//! shares are proportional to weight, with integer arithmetic only. Equal weights reduce to
//! the paper's algorithm exactly. Weight-0 endpoints own no slot.

use rand::RngCore;

use super::eligible::Weights;
use super::{BuildError, EndpointSpec, LoadView, P2cEwma};
use crate::hash::{MAGLEV_OFFSET_SEED, MAGLEV_SKIP_SEED, hash_seeded};

/// The default table size (SPEC 3: `maglev_table_size = 65537`).
pub const DEFAULT_TABLE_SIZE: u32 = 65_537;

/// The largest table size accepted (16 Mi slots, 64 MiB of `u32`).
pub const MAX_TABLE_SIZE: u32 = 1 << 24;

/// Slots probed past an ineligible owner before the name-order walk.
const MAX_PROBE: usize = 64;

/// Whether `n` is a prime (deterministic trial division; table sizes are small).
pub fn is_prime(n: u32) -> bool {
    let n = u64::from(n);
    if n < 2 {
        return false;
    }
    if n % 2 == 0 {
        return n == 2;
    }
    let mut d = 3u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 2;
    }
    true
}

/// Endpoint `name`'s permutation of `0..m`: `(offset, skip)` with the `j`-th preferred slot
/// at `(offset + j x skip) mod m` (SPEC 3.1).
pub fn permutation(name: &str, m: u32) -> (u32, u32) {
    let m = u64::from(m);
    let offset = hash_seeded(name.as_bytes(), MAGLEV_OFFSET_SEED) % m;
    let skip = hash_seeded(name.as_bytes(), MAGLEV_SKIP_SEED) % (m - 1).max(1) + 1;
    (offset as u32, skip as u32)
}

/// A Maglev lookup table: slot -> endpoint index (into the slice it was built from). The
/// packet tier builds its BPF map from [`MaglevTable::slots`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    slots: Box<[u32]>,
}

impl MaglevTable {
    /// Builds the table of prime size `m` over `endpoints` (names and weights; weight-0
    /// endpoints own no slot). Fails when `m` is not a prime, is smaller than the number of
    /// weighted endpoints or above [`MAX_TABLE_SIZE`], or no endpoint has a weight.
    /// Endpoint names should be unique ([`super::Picker::new`] checks it).
    pub fn build(endpoints: &[EndpointSpec], m: u32) -> Result<MaglevTable, BuildError> {
        if !is_prime(m) {
            return Err(BuildError::TableSizeNotPrime(m));
        }
        if m > MAX_TABLE_SIZE {
            return Err(BuildError::TableTooLarge(m));
        }
        let mut order: Vec<usize> = (0..endpoints.len())
            .filter(|&i| endpoints[i].weight > 0)
            .collect();
        if order.is_empty() {
            return Err(BuildError::NoWeightedEndpoint);
        }
        if (m as usize) < order.len() {
            return Err(BuildError::TableTooSmall {
                size: m,
                endpoints: order.len(),
            });
        }
        order.sort_by(|&a, &b| endpoints[a].name.cmp(&endpoints[b].name));
        let weight: Vec<u64> = order
            .iter()
            .map(|&i| u64::from(endpoints[i].weight))
            .collect();
        let max_weight = weight.iter().copied().max().unwrap_or(1);
        let perms: Vec<(u32, u32)> = order
            .iter()
            .map(|&i| permutation(&endpoints[i].name, m))
            .collect();
        let mut position: Vec<u64> = perms.iter().map(|&(o, _)| u64::from(o)).collect();
        let skip: Vec<u64> = perms.iter().map(|&(_, s)| u64::from(s)).collect();
        let m64 = u64::from(m);
        let mut credit = vec![0u64; order.len()];
        let mut slots = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        'fill: loop {
            for k in 0..order.len() {
                credit[k] += weight[k];
                while credit[k] >= max_weight {
                    credit[k] -= max_weight;
                    // The permutation visits every slot once in m steps (skip is coprime
                    // with the prime m) and a free slot exists, so this terminates.
                    while slots[position[k] as usize] != u32::MAX {
                        position[k] = (position[k] + skip[k]) % m64;
                    }
                    slots[position[k] as usize] = order[k] as u32;
                    position[k] = (position[k] + skip[k]) % m64;
                    filled += 1;
                    if filled == m64 {
                        break 'fill;
                    }
                }
            }
        }
        Ok(MaglevTable {
            slots: slots.into_boxed_slice(),
        })
    }

    /// The table size M.
    pub fn size(&self) -> u32 {
        self.slots.len() as u32
    }

    /// The slots: endpoint indices, M of them, every one filled.
    pub fn slots(&self) -> &[u32] {
        &self.slots
    }

    /// The slot of `key`: `key mod M`.
    pub fn slot_of(&self, key: u64) -> usize {
        (key % self.slots.len() as u64) as usize
    }

    /// The owner of `key`, ignoring eligibility.
    pub fn lookup(&self, key: u64) -> usize {
        self.slots[self.slot_of(key)] as usize
    }
}

/// Endpoint indices sorted by name, and each endpoint's rank in that order.
fn name_order(endpoints: &[EndpointSpec]) -> (Box<[u32]>, Box<[u32]>) {
    let mut by_name: Vec<u32> = (0..endpoints.len() as u32).collect();
    by_name.sort_by(|&a, &b| endpoints[a as usize].name.cmp(&endpoints[b as usize].name));
    let mut rank = vec![0u32; endpoints.len()];
    for (r, &i) in by_name.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    (by_name.into_boxed_slice(), rank.into_boxed_slice())
}

/// The walk from `slot` to the first endpoint `takes` accepts: the owner, then up to
/// [`MAX_PROBE`] following slots, then the endpoints in name order after the owner. One
/// function for the L4/L7 picker and the packet tier's table ([`resolve_slots`]).
fn walk_from(
    table: &MaglevTable,
    slot: usize,
    by_name: &[u32],
    rank: &[u32],
    takes: &dyn Fn(usize) -> bool,
) -> Option<usize> {
    let slots = table.slots();
    let m = slots.len();
    let owner = slots[slot];
    if takes(owner as usize) {
        return Some(owner as usize);
    }
    let mut refused = owner;
    for k in 1..=MAX_PROBE.min(m - 1) {
        let i = slots[(slot + k) % m];
        if i != refused {
            if takes(i as usize) {
                return Some(i as usize);
            }
            refused = i;
        }
    }
    let n = by_name.len();
    let start = rank[owner as usize] as usize;
    (1..=n)
        .map(|k| by_name[(start + k) % n] as usize)
        .find(|&i| takes(i))
}

/// The table as a stateless data plane uses it: every slot resolved to the endpoint the
/// keyed picker would choose for a key of that slot when exactly the endpoints `pickable`
/// accepts may be picked (the owner if pickable, else the same probe as the picker), or
/// `None` when no endpoint is pickable. `endpoints` must be the slice the table was built
/// from. The XDP tier writes this into its BPF map, so for the same key and the same
/// eligibility it picks what an L4/L7 `maglev` cluster picks, and an endpoint that becomes
/// ineligible moves only the slots it owned.
pub fn resolve_slots(
    table: &MaglevTable,
    endpoints: &[EndpointSpec],
    pickable: &dyn Fn(usize) -> bool,
) -> Vec<Option<u32>> {
    let (by_name, rank) = name_order(endpoints);
    (0..table.slots().len())
        .map(|slot| walk_from(table, slot, &by_name, &rank, pickable).map(|i| i as u32))
        .collect()
}

/// Maglev with eligibility and a p2c-ewma fallback for key-less requests.
///
/// Ineligible owner: probe the following slots `slot + 1, slot + 2, ...` (mod M), up to 64
/// of them, and take the first pickable owner (so the keys of a lost endpoint spread over the
/// others in proportion to their slots); if none, walk the endpoints in name order starting
/// after the original owner. Both steps depend only on the table and the eligibility set:
/// instances that agree on eligibility agree on the pick, and keys of pickable owners never
/// move. The table itself is rebuilt only when names or weights change, never on a health
/// change. Slow-start factors are ignored for keyed picks (scaling would move keys).
#[derive(Debug)]
pub(crate) struct MaglevPicker {
    weights: Weights,
    table: Option<MaglevTable>,
    by_name: Box<[u32]>,
    rank: Box<[u32]>,
    fallback: P2cEwma,
}

impl MaglevPicker {
    /// Builds the table of size `m` (prime) over `endpoints`.
    pub(crate) fn new(endpoints: &[EndpointSpec], m: u32) -> Result<MaglevPicker, BuildError> {
        let table = match MaglevTable::build(endpoints, m) {
            Ok(t) => Some(t),
            Err(BuildError::NoWeightedEndpoint) => None,
            Err(e) => return Err(e),
        };
        let (by_name, rank) = name_order(endpoints);
        Ok(MaglevPicker {
            weights: Weights::new(endpoints),
            table,
            by_name,
            rank,
            fallback: P2cEwma::new(endpoints),
        })
    }

    /// The lookup table, if any endpoint has a weight.
    pub(crate) fn table(&self) -> Option<&MaglevTable> {
        self.table.as_ref()
    }

    /// The pickable endpoint for `key` (see the type's documentation for the probe).
    pub(crate) fn lookup(&self, key: u64, load: &dyn LoadView) -> Option<usize> {
        // Slow-starting owners decline part of their keys; if every pickable endpoint
        // declines, the plain walk decides (a pick is never refused while one is pickable).
        self.walk(key, &|i| self.weights.takes_key(load, i, key))
            .or_else(|| self.walk(key, &|i| self.weights.pickable(load, i)))
    }

    /// The walk from `key`'s position to the first endpoint `takes` accepts.
    fn walk(&self, key: u64, takes: &dyn Fn(usize) -> bool) -> Option<usize> {
        let table = self.table.as_ref()?;
        walk_from(table, table.slot_of(key), &self.by_name, &self.rank, takes)
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

    fn shares(t: &MaglevTable, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &e in t.slots() {
            c[e as usize] += 1;
        }
        c
    }

    #[test]
    fn primality_is_checked() {
        assert!(is_prime(65_537) && is_prime(2) && is_prime(251));
        assert!(!is_prime(65_536) && !is_prime(1) && !is_prime(0) && !is_prime(65_539 * 3));
        assert_eq!(
            MaglevTable::build(&eps(&[1]), 65_536),
            Err(BuildError::TableSizeNotPrime(65_536))
        );
        assert_eq!(
            MaglevTable::build(&eps(&[1, 1, 1, 1]), 3),
            Err(BuildError::TableTooSmall {
                size: 3,
                endpoints: 4
            })
        );
        assert_eq!(
            MaglevTable::build(&eps(&[0, 0]), 7),
            Err(BuildError::NoWeightedEndpoint)
        );
        assert!(MaglevPicker::new(&eps(&[0, 0]), 7).is_ok());
    }

    #[test]
    fn every_slot_is_filled_and_equal_weights_share_evenly() {
        let t = MaglevTable::build(&eps(&[1; 10]), DEFAULT_TABLE_SIZE).expect("table");
        assert_eq!(t.slots().len(), 65_537);
        for c in shares(&t, 10) {
            assert!((6_553..=6_554).contains(&c), "{c}");
        }
    }

    #[test]
    fn slot_shares_follow_the_weights() {
        let t = MaglevTable::build(&eps(&[1, 2, 4, 0]), 65_537).expect("table");
        let c = shares(&t, 4);
        assert_eq!(c[3], 0);
        let unit = 65_537.0 / 7.0;
        for (i, w) in [1.0, 2.0, 4.0].iter().enumerate() {
            let expected = unit * w;
            assert!((c[i] as f64 - expected).abs() < expected * 0.01, "{c:?}");
        }
    }

    #[test]
    fn the_table_does_not_depend_on_endpoint_order() {
        let a = eps(&[1, 3, 2, 5]);
        let mut b = a.clone();
        b.reverse();
        let ta = MaglevTable::build(&a, 251).expect("table");
        let tb = MaglevTable::build(&b, 251).expect("table");
        for (x, y) in ta.slots().iter().zip(tb.slots()) {
            assert_eq!(a[*x as usize].name, b[*y as usize].name);
        }
    }

    #[test]
    fn an_ineligible_owner_probes_the_following_slots() {
        let p = MaglevPicker::new(&eps(&[1; 5]), 251).expect("picker");
        let mut load = StaticLoad::uniform(5);
        let key = 1_000u64;
        let table = p.table().expect("table");
        let owner = table.lookup(key);
        load.eligible[owner] = false;
        let slot = table.slot_of(key);
        let expected = (1..251)
            .map(|k| table.slots()[(slot + k) % 251] as usize)
            .find(|&i| i != owner);
        assert_eq!(p.lookup(key, &load), expected);
    }

    #[test]
    fn with_one_eligible_endpoint_every_key_goes_to_it() {
        let p = MaglevPicker::new(&eps(&[1; 8]), 65_537).expect("picker");
        let mut load = StaticLoad::uniform(8);
        load.eligible = vec![false; 8];
        load.eligible[5] = true;
        for key in (0..2_000u64).map(|k| k.wrapping_mul(0x9e37_79b9_7f4a_7c15)) {
            assert_eq!(p.lookup(key, &load), Some(5));
        }
        load.eligible[5] = false;
        assert_eq!(p.lookup(7, &load), None);
    }

    #[test]
    fn a_slow_starting_owner_takes_a_growing_share_of_its_keys_and_keeps_them() {
        let picker = MaglevPicker::new(&eps(&[1, 1, 1, 1]), 65_537).unwrap();
        let mut load = StaticLoad::uniform(4);
        let owned_by_0: Vec<u64> = (0..40_000u64)
            .map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .filter(|&k| picker.lookup(k, &load) == Some(0))
            .collect();
        let taken = |load: &StaticLoad| -> Vec<bool> {
            owned_by_0
                .iter()
                .map(|&k| picker.lookup(k, load) == Some(0))
                .collect()
        };
        load.factor[0] = 0.25;
        let quarter = taken(&load);
        load.factor[0] = 0.5;
        let half = taken(&load);
        let share = |v: &[bool]| v.iter().filter(|t| **t).count() as f64 / v.len() as f64;
        assert!((share(&quarter) - 0.25).abs() < 0.03, "{}", share(&quarter));
        assert!((share(&half) - 0.5).abs() < 0.03, "{}", share(&half));
        assert!(
            quarter.iter().zip(&half).all(|(q, h)| !q || *h),
            "a key taken at 25% is kept at 50%"
        );
        // Keys it declines go where they would go without it; other owners' keys never move.
        load.factor[0] = 1.0;
        let others: Vec<u64> = (0..10_000u64)
            .filter(|&k| picker.lookup(k, &load) != Some(0))
            .collect();
        load.factor[0] = 0.1;
        assert!(others.iter().all(|&k| picker.lookup(k, &load) != Some(0)));
    }
    #[test]
    fn resolved_slots_agree_with_the_picker_and_move_only_the_lost_owner() {
        let specs = eps(&[1, 2, 1, 1]);
        let p = MaglevPicker::new(&specs, 251).expect("picker");
        let table = p.table().expect("table");
        let mut load = StaticLoad::uniform(4);
        load.eligible[1] = false;
        let all = resolve_slots(table, &specs, &|_| true);
        let without = resolve_slots(table, &specs, &|i| i != 1);
        for slot in 0..251 {
            assert_eq!(all[slot], Some(table.slots()[slot]));
            assert_eq!(
                without[slot].map(|i| i as usize),
                p.lookup(slot as u64, &load)
            );
            if all[slot] != Some(1) {
                assert_eq!(all[slot], without[slot], "slot {slot} moved");
            }
        }
        assert!(
            resolve_slots(table, &specs, &|_| false)
                .iter()
                .all(Option::is_none)
        );
    }
}
