//! The EID resolver at 10,000 enrolled keys: one lookup against the precomputed table, the
//! table build it amortises (once per time margin), and — for scale — one linear resolution
//! that tries every key, which is what the table avoids.
//!
//! `cargo bench -p omo-cloud --bench eid_resolver`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use omo_cloud::identity::eid_resolver::EidResolver;
use omo_device_config::eid::{eid, resolve, EidIdentity};

const KEYS: usize = 10_000;
const T: i64 = 1_790_000_000;
const SKEW_S: u32 = 300;

fn keys() -> Vec<(String, EidIdentity)> {
    (0..KEYS)
        .map(|i| {
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&(i as u64).to_le_bytes());
            key[8..].copy_from_slice(&(i as u64 * 7919).to_be_bytes());
            (
                format!("c{i}"),
                EidIdentity {
                    identity_key: key,
                    exponent: 10,
                    clock_offset_s: (i as i64 % 1000) * 37,
                },
            )
        })
        .collect()
}

fn observed(keys: &[(String, EidIdentity)], i: usize) -> [u8; 8] {
    let k = &keys[i % keys.len()].1;
    eid(
        &k.identity_key,
        k.exponent,
        k.beacon_time(T).expect("in range"),
    )
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let sightings: Vec<[u8; 8]> = (0..1000).map(|i| observed(&keys, i * 7)).collect();
    let mut resolver = EidResolver::new(keys.clone(), SKEW_S);
    assert!(resolver.resolve(sightings[0], T).is_some());
    let mut i = 0;
    c.bench_function("eid resolve, 10k keys, table", |b| {
        b.iter(|| {
            i = (i + 1) % sightings.len();
            black_box(resolver.resolve(black_box(sightings[i]), T).is_some())
        })
    });
    let mut group = c.benchmark_group("eid rare");
    group.sample_size(10);
    group.bench_function("eid table build, 10k keys", |b| {
        b.iter(|| {
            let mut fresh = EidResolver::new(keys.clone(), SKEW_S);
            black_box(fresh.resolve(sightings[0], T).is_some())
        })
    });
    let identities: Vec<EidIdentity> = keys.iter().map(|(_, k)| k.clone()).collect();
    let last = observed(&keys, KEYS - 1);
    group.bench_function("eid resolve, 10k keys, linear (worst case)", |b| {
        b.iter(|| black_box(resolve(&identities, black_box(last), T, SKEW_S).is_some()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
