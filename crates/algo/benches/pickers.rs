//! Per-pick cost of every policy (8 and 100 endpoints, all eligible, over plain vectors) and
//! the Maglev table build, so a change that slows the hot path shows up as a number.

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use switchyard_algo::{EndpointSpec, MaglevTable, Picker, Policy, StaticLoad};

fn endpoints(n: usize) -> Vec<EndpointSpec> {
    (0..n)
        .map(|i| EndpointSpec::new(format!("backend-{i}"), 1 + (i % 4) as u32))
        .collect()
}

fn load(n: usize) -> StaticLoad {
    let mut l = StaticLoad::uniform(n);
    for i in 0..n {
        l.in_flight[i] = (i % 7) as u64;
        l.latency_ns[i] = 1_000_000.0 + (i * 37_000) as f64;
    }
    l
}

fn picks(c: &mut Criterion) {
    for n in [8, 100] {
        let eps = endpoints(n);
        let view = load(n);
        for word in Policy::NAMES {
            let policy: Policy = word.parse().expect("policy");
            let picker = Picker::new(policy, &eps).expect("picker");
            let mut rng = SmallRng::seed_from_u64(1);
            let mut key = 0x9e37_79b9_7f4a_7c15u64;
            c.bench_function(&format!("pick/{word}/{n}"), |b| {
                b.iter(|| {
                    key = key.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    black_box(picker.pick(Some(key), &view, &mut rng))
                })
            });
        }
    }
}

fn maglev_build(c: &mut Criterion) {
    let eps: Vec<_> = (0..100)
        .map(|i| EndpointSpec::new(format!("backend-{i}"), 1))
        .collect();
    c.bench_function("maglev_build/100/65537", |b| {
        b.iter(|| black_box(MaglevTable::build(&eps, 65_537).expect("table")))
    });
}

criterion_group!(benches, picks, maglev_build);
criterion_main!(benches);
