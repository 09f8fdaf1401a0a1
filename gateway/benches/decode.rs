//! Frame decoding throughput over a mixed corpus of advertisements (target: ≥ 5 million frames
//! per second on one core). `cargo bench -p omo-gateway --bench decode`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use omo_gateway::frames::{
    decode_each, encode, AltBeacon, Eddystone, EddystoneEid, EddystoneTlm, EddystoneUid,
    EddystoneUrl, Frame, IBeacon, LineBeacon,
};

/// Advertisements as a store hears them: mostly single beacon frames, some UID+TLM pairs, and
/// some phones' non-beacon adverts that decode to nothing.
fn corpus() -> (Vec<Vec<u8>>, u64) {
    let mut adverts = Vec::new();
    for i in 0..64u16 {
        let b = i as u8;
        adverts.push(encode(&[Frame::IBeacon(IBeacon {
            uuid: [b; 16],
            major: i,
            minor: 7,
            tx_power: -59,
        })]));
        adverts.push(encode(&[
            Frame::Eddystone(Eddystone::Uid(EddystoneUid {
                tx_power: -18,
                namespace: [b; 10],
                instance: [b; 6],
            })),
            Frame::Eddystone(Eddystone::Tlm(EddystoneTlm {
                battery_mv: 3000,
                temperature_raw: 0x1880,
                adv_count: 9,
                uptime_ds: 99,
            })),
        ]));
        adverts.push(encode(&[Frame::Eddystone(Eddystone::Eid(EddystoneEid {
            tx_power: -18,
            eid: [b; 8],
        }))]));
        adverts.push(encode(&[Frame::Eddystone(Eddystone::Url(
            EddystoneUrl::from_url(-18, "https://omo.example/s").expect("short URL"),
        ))]));
        adverts.push(encode(&[Frame::AltBeacon(AltBeacon {
            mfg_id: 0x0118,
            id1: [b; 16],
            id2: i,
            id3: 1,
            ref_rssi: -60,
            mfg_reserved: 0,
        })]));
        adverts.push(encode(&[Frame::Line(LineBeacon::new(
            [b; 5],
            0x7F,
            &[1, 2, 3, 4, 5, 6, 7],
        ))]));
        // A phone's Apple "nearby" advert: no beacon.
        adverts.push(vec![
            0x02, 0x01, 0x1a, 0x0a, 0xff, 0x4c, 0x00, 0x10, 0x05, 0x03, 0x1c, 0x0e, 0x5a, b,
        ]);
    }
    let frames = adverts
        .iter()
        .map(|a| decode_each(a, |_| {}).expect("corpus is well formed") as u64)
        .sum();
    (adverts, frames)
}

fn bench_decode(c: &mut Criterion) {
    let (adverts, frames) = corpus();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(frames));
    group.bench_function("mixed_corpus", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for adv in &adverts {
                let _ = decode_each(black_box(adv), |f| {
                    black_box(f);
                    n += 1;
                });
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decode);
criterion_main!(benches);
