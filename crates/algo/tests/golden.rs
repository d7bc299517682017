//! Pinned tables and fleet-level properties of the pickers. A change that would remap the
//! flows of a running fleet (Maglev slots, ring lookups, the hash contract) fails here, as
//! does any picker that ever chooses an ineligible or zero-weight endpoint.

#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use switchyard_algo::hash::{hash_seeded, key_for_bytes, maglev_permutation};
use switchyard_algo::{
    EndpointSpec, EwmaConfig, LoadView, MaglevTable, PeakEwma, Picker, Policy, StaticLoad,
    resolve_slots,
};

fn named(n: usize) -> Vec<EndpointSpec> {
    (0..n)
        .map(|i| EndpointSpec::new(format!("backend-{i}"), 1))
        .collect()
}

fn spread_keys(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|k| key_for_bytes(format!("client-{k}").as_bytes()))
}

// ---- hash contract ---------------------------------------------------------------------

#[test]
fn xxh64_and_the_maglev_permutation_match_hand_checked_values() {
    // the published xxh64 test vector for the empty input, seed 0
    assert_eq!(hash_seeded(b"", 0), 0xef46_db37_51d8_e999);
    // "backend-0": xxh64 seed 0 = 0xd9cccd0187af77c0, seed 1 = 0x0a0867a6705e6ae8;
    // offset = h0 mod 65537 = 58183, skip = h1 mod 65536 + 1 = 0x6ae8 + 1 = 27369
    assert_eq!(hash_seeded(b"backend-0", 0), 0xd9cc_cd01_87af_77c0);
    assert_eq!(hash_seeded(b"backend-0", 1), 0x0a08_67a6_705e_6ae8);
    assert_eq!(maglev_permutation("backend-0", 65_537), (58_183, 27_369));
    assert_eq!(maglev_permutation("backend-0", 251), (28, 117));
}

/// The paper's population loop for equal weights, written as plainly as possible.
fn reference_maglev(names: &[&str], m: u32) -> Vec<u32> {
    let m = u64::from(m);
    let perm: Vec<(u64, u64)> = names
        .iter()
        .map(|n| {
            (
                hash_seeded(n.as_bytes(), 0) % m,
                hash_seeded(n.as_bytes(), 1) % (m - 1) + 1,
            )
        })
        .collect();
    let mut next = vec![0u64; names.len()];
    let mut table = vec![u32::MAX; m as usize];
    let mut filled = 0;
    'outer: loop {
        for (i, &(offset, skip)) in perm.iter().enumerate() {
            let mut c = (offset + next[i] * skip) % m;
            while table[c as usize] != u32::MAX {
                next[i] += 1;
                c = (offset + next[i] * skip) % m;
            }
            table[c as usize] = i as u32;
            next[i] += 1;
            filled += 1;
            if filled == m {
                break 'outer;
            }
        }
    }
    table
}

#[test]
fn equal_weight_maglev_is_the_papers_algorithm() {
    let names = [
        "backend-0",
        "backend-1",
        "backend-2",
        "backend-3",
        "backend-4",
    ];
    for m in [251, 65_537] {
        let table = MaglevTable::build(&named(5), m).unwrap();
        assert_eq!(
            table.slots(),
            reference_maglev(&names, m).as_slice(),
            "M = {m}"
        );
    }
}

#[test]
fn the_maglev_table_prefix_is_pinned() {
    let t = MaglevTable::build(&named(5), 65_537).unwrap();
    assert_eq!(
        &t.slots()[..32],
        &[
            4, 1, 2, 4, 3, 2, 2, 3, 1, 2, 3, 1, 0, 2, 0, 1, 4, 2, 2, 0, 4, 3, 1, 0, 3, 0, 2, 3, 1,
            1, 2, 3
        ]
    );
    let t = MaglevTable::build(&named(5), 251).unwrap();
    assert_eq!(
        &t.slots()[..32],
        &[
            1, 2, 2, 4, 4, 1, 2, 0, 3, 1, 2, 0, 2, 1, 3, 3, 0, 4, 4, 2, 3, 2, 4, 2, 0, 2, 0, 4, 0,
            1, 1, 4
        ]
    );
}

#[test]
fn the_packet_tiers_resolved_slots_are_the_pinned_table() {
    // The XDP tier writes resolve_slots into its BPF map: with every endpoint eligible that
    // is the table above, slot for slot; without backend-2 only backend-2's slots change.
    let specs = named(5);
    let t = MaglevTable::build(&specs, 251).unwrap();
    let all = resolve_slots(&t, &specs, &|_| true);
    assert!(all.iter().zip(t.slots()).all(|(a, b)| *a == Some(*b)));
    let without: Vec<u32> = resolve_slots(&t, &specs, &|i| i != 2)
        .into_iter()
        .take(32)
        .map(|s| s.unwrap())
        .collect();
    assert_eq!(
        without,
        [
            1, 4, 4, 4, 4, 1, 0, 0, 3, 1, 0, 0, 1, 1, 3, 3, 0, 4, 4, 3, 3, 4, 4, 0, 0, 0, 0, 4, 0,
            1, 1, 4
        ]
    );
    for (was, now) in t.slots().iter().zip(&without) {
        assert!(*was == 2 || was == now, "only backend-2's slots move");
    }
}

#[test]
fn weighted_maglev_population_is_pinned() {
    // weights 1..=5: credit-based turns in name order (see the maglev module)
    let eps: Vec<_> = (0..5)
        .map(|i| EndpointSpec::new(format!("backend-{i}"), i as u32 + 1))
        .collect();
    let t = MaglevTable::build(&eps, 251).unwrap();
    assert_eq!(
        &t.slots()[..32],
        &[
            4, 2, 2, 4, 4, 1, 2, 0, 3, 1, 2, 0, 2, 4, 3, 3, 3, 4, 4, 2, 3, 2, 4, 2, 0, 2, 3, 4, 0,
            4, 1, 4
        ]
    );
    let t = MaglevTable::build(&eps, 65_537).unwrap();
    let mut shares = [0usize; 5];
    for &s in t.slots() {
        shares[s as usize] += 1;
    }
    assert_eq!(shares, [4_369, 8_738, 13_108, 17_476, 21_846]);
}

#[test]
fn ring_hash_lookups_are_pinned() {
    let p = Picker::new(Policy::RingHash, &named(5)).unwrap();
    let load = StaticLoad::uniform(5);
    let mut rng = SmallRng::seed_from_u64(0);
    let owners: Vec<usize> = (0..16)
        .map(|k| {
            let key = key_for_bytes(format!("key-{k}").as_bytes());
            p.pick(Some(key), &load, &mut rng).unwrap()
        })
        .collect();
    assert_eq!(owners, [1, 0, 1, 2, 4, 1, 0, 2, 2, 0, 1, 2, 4, 0, 1, 0]);
}

// ---- consistency -----------------------------------------------------------------------

#[test]
fn maglev_gives_ten_equal_endpoints_a_tenth_of_the_slots_each() {
    let t = MaglevTable::build(&named(10), 65_537).unwrap();
    let mut counts = [0usize; 10];
    for &s in t.slots() {
        counts[s as usize] += 1;
    }
    for c in counts {
        assert!((6_488..=6_618).contains(&c), "{counts:?}");
    }
}

#[test]
fn removing_one_of_ten_maglev_endpoints_moves_few_other_slots() {
    let before = named(10);
    let after: Vec<_> = before
        .iter()
        .filter(|e| e.name != "backend-3")
        .cloned()
        .collect();
    let tb = MaglevTable::build(&before, 65_537).unwrap();
    let ta = MaglevTable::build(&after, 65_537).unwrap();
    let (mut kept, mut moved) = (0usize, 0usize);
    for (b, a) in tb.slots().iter().zip(ta.slots()) {
        let old = &before[*b as usize].name;
        if old == "backend-3" {
            continue;
        }
        kept += 1;
        if &after[*a as usize].name != old {
            moved += 1;
        }
    }
    eprintln!("maglev: {moved} of {kept} slots moved");
    assert!(moved * 50 <= kept, "{moved} of {kept} slots moved");
}

#[test]
fn removing_one_of_ten_ring_endpoints_moves_few_other_keys() {
    let before = named(10);
    let after: Vec<_> = before
        .iter()
        .filter(|e| e.name != "backend-7")
        .cloned()
        .collect();
    let pb = Picker::new(Policy::RingHash, &before).unwrap();
    let pa = Picker::new(Policy::RingHash, &after).unwrap();
    let (lb, la) = (StaticLoad::uniform(10), StaticLoad::uniform(9));
    let mut rng = SmallRng::seed_from_u64(0);
    let (mut kept, mut moved) = (0usize, 0usize);
    for key in spread_keys(100_000) {
        let old = &before[pb.pick(Some(key), &lb, &mut rng).unwrap()].name;
        if old == "backend-7" {
            continue;
        }
        kept += 1;
        if &after[pa.pick(Some(key), &la, &mut rng).unwrap()].name != old {
            moved += 1;
        }
    }
    eprintln!("ring: {moved} of {kept} keys moved");
    assert!(moved * 100 <= kept * 12, "{moved} of {kept} keys moved");
}

#[test]
fn an_ineligible_owner_moves_only_its_own_keys() {
    for policy in [Policy::RingHash, Policy::Maglev { table_size: 65_537 }] {
        let p = Picker::new(policy, &named(10)).unwrap();
        let all = StaticLoad::uniform(10);
        let mut sick = StaticLoad::uniform(10);
        sick.eligible[4] = false;
        let mut rng = SmallRng::seed_from_u64(0);
        for key in spread_keys(20_000) {
            let before = p.pick(Some(key), &all, &mut rng).unwrap();
            let after = p.pick(Some(key), &sick, &mut rng).unwrap();
            assert_ne!(after, 4);
            if before != 4 {
                assert_eq!(before, after, "{policy:?}");
            }
        }
    }
}

// ---- sequences and simulations -----------------------------------------------------------

#[test]
fn smooth_weighted_round_robin_five_one_one() {
    let eps = [
        EndpointSpec::new("a", 5),
        EndpointSpec::new("b", 1),
        EndpointSpec::new("c", 1),
    ];
    let p = Picker::new(Policy::WeightedRoundRobin, &eps).unwrap();
    let load = StaticLoad::uniform(3);
    let mut rng = SmallRng::seed_from_u64(0);
    let seq: String = (0..21)
        .map(|_| ["a", "b", "c"][p.pick(None, &load, &mut rng).unwrap()])
        .collect();
    assert_eq!(seq, "aabacaa".repeat(3));
}

/// In-flight counts and latency estimates maintained by a discrete-event simulation.
struct SimLoad {
    now: u64,
    in_flight: Vec<u64>,
    ewma: Vec<PeakEwma>,
}

impl LoadView for SimLoad {
    fn is_eligible(&self, _: usize) -> bool {
        true
    }
    fn in_flight(&self, index: usize) -> u64 {
        self.in_flight[index]
    }
    fn latency_cost(&self, index: usize) -> f64 {
        self.ewma[index].cost(self.now)
    }
}

#[test]
fn p2c_ewma_starves_an_endpoint_fifty_times_slower() {
    const MS: u64 = 1_000_000;
    let n = 10;
    let p = Picker::new(Policy::P2cEwma, &named(n)).unwrap();
    let mut load = SimLoad {
        now: 0,
        in_flight: vec![0; n],
        ewma: vec![PeakEwma::new(&EwmaConfig::default()); n],
    };
    let mut rng = SmallRng::seed_from_u64(2024);
    let mut done: BinaryHeap<Reverse<(u64, usize, u64)>> = BinaryHeap::new();
    let (mut picks, mut slow_picks) = (0u64, 0u64);
    // 2,000 requests per second for 60 virtual seconds; the first 10 s are warm-up.
    for step in 0..120_000u64 {
        let now = step * MS / 2;
        while let Some(Reverse((at, i, latency))) = done.peek().copied() {
            if at > now {
                break;
            }
            done.pop();
            load.in_flight[i] -= 1;
            load.ewma[i].observe(latency, at);
        }
        load.now = now;
        let i = p.pick(None, &load, &mut rng).unwrap();
        let base = if i == 9 { 500 * MS } else { 10 * MS };
        let latency = base * rng.random_range(80..=120) / 100;
        load.in_flight[i] += 1;
        done.push(Reverse((now + latency, i, latency)));
        if now >= 10_000 * MS {
            picks += 1;
            slow_picks += u64::from(i == 9);
        }
    }
    eprintln!("p2c-ewma simulation: slow endpoint got {slow_picks} of {picks} picks");
    assert!(
        slow_picks * 50 < picks,
        "slow endpoint got {slow_picks} of {picks} picks"
    );
}

// ---- the picker contract, for every policy ------------------------------------------------

fn policies() -> Vec<Policy> {
    vec![
        Policy::RoundRobin,
        Policy::WeightedRoundRobin,
        Policy::Random,
        Policy::LeastRequest,
        Policy::P2c,
        Policy::P2cEwma,
        Policy::RingHash,
        Policy::Maglev { table_size: 251 },
    ]
}

fn endpoint_case() -> impl Strategy<Value = (Vec<u32>, StaticLoad)> {
    (1usize..20).prop_flat_map(|n| {
        let weight = prop_oneof![Just(0u32), 1u32..=3, 1u32..=10_000];
        (
            proptest::collection::vec(weight, n),
            proptest::collection::vec(proptest::bool::weighted(0.6), n),
            proptest::collection::vec(0u64..20, n),
            proptest::collection::vec(prop_oneof![Just(0.0f64), 1.0f64..1e9], n),
            proptest::collection::vec(prop_oneof![Just(1.0f64), 0.0f64..=1.0], n),
        )
            .prop_map(|(w, eligible, in_flight, latency_ns, factor)| {
                (
                    w,
                    StaticLoad {
                        eligible,
                        in_flight,
                        latency_ns,
                        factor,
                    },
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_policy_picks_an_unpickable_endpoint_or_gives_up_early(
        (weights, load) in endpoint_case(),
        key in proptest::option::of(any::<u64>()),
        seed in any::<u64>(),
        exclude_mask in any::<u32>(),
    ) {
        let eps: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| EndpointSpec::new(format!("e{i}"), w))
            .collect();
        let pickable = |i: usize| weights[i] > 0 && load.eligible[i];
        let any_pickable = (0..eps.len()).any(pickable);
        let exclude: Vec<usize> = (0..eps.len()).filter(|i| exclude_mask & (1 << i) != 0).collect();
        let any_left = (0..eps.len()).any(|i| pickable(i) && !exclude.contains(&i));
        let mut rng = SmallRng::seed_from_u64(seed);
        for policy in policies() {
            let p = Picker::new(policy, &eps).unwrap();
            for _ in 0..4 {
                match p.pick(key, &load, &mut rng) {
                    Some(i) => prop_assert!(pickable(i), "{policy:?} picked {i}"),
                    None => prop_assert!(!any_pickable, "{policy:?} gave up"),
                }
                match p.pick_excluding(key, &load, &mut rng, &exclude) {
                    Some(i) => prop_assert!(pickable(i) && !exclude.contains(&i), "{policy:?} picked {i}"),
                    None => prop_assert!(!any_left, "{policy:?} gave up with exclusions"),
                }
            }
            let _ = rng.next_u64();
        }
    }
}
