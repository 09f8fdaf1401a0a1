//! Presence engine throughput with 10,000 beacons tracked at once (target: ≥ 2 million
//! sightings per second on one core). `cargo bench -p omo-gateway --bench presence`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use omo_device_config::params::PresenceParams;
use omo_device_config::BeaconId;
use omo_gateway::presence::{PresenceEngine, Sighting};

const BEACONS: u32 = 10_000;

fn bench_presence(c: &mut Criterion) {
    let params = PresenceParams::default();
    let ids: Vec<BeaconId> = (0..BEACONS)
        .map(|i| {
            let b = i.to_be_bytes();
            BeaconId::Line {
                hwid: [0x01, b[0], b[1], b[2], b[3]],
            }
        })
        .collect();
    let mut engine = PresenceEngine::new(&params);
    let mut out = Vec::new();
    let mut now_ms: i64 = 1_700_000_000_000;
    // One round: every beacon heard once, spread over one second, then the 1 s tick.
    let round = |engine: &mut PresenceEngine, out: &mut Vec<_>, now_ms: &mut i64| {
        for (i, id) in ids.iter().enumerate() {
            let s = Sighting {
                beacon: *id,
                rssi: -60.0 - (i % 17) as f64,
                measured_power_1m: Some(-59.0),
                at_ms: *now_ms + (i as i64 / 10),
            };
            engine.observe(black_box(&s), out);
        }
        *now_ms += 1000;
        engine.advance(*now_ms, out);
        out.clear();
    };
    // Warm up to steady state: every beacon present.
    for _ in 0..20 {
        round(&mut engine, &mut out, &mut now_ms);
    }
    assert_eq!(engine.present().count(), BEACONS as usize);
    let mut group = c.benchmark_group("presence");
    group.throughput(Throughput::Elements(u64::from(BEACONS)));
    group.bench_function("10k_tracked", |b| {
        b.iter(|| round(&mut engine, &mut out, &mut now_ms))
    });
    group.finish();
}

criterion_group!(benches, bench_presence);
criterion_main!(benches);
