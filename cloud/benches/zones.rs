//! Zone matching against 100,000 geofences (half polygons, half circles): GPS points per second
//! through the R-tree index the service and `omo-cloud zones match` use, on one core.
//!
//! `cargo bench -p omo-cloud --bench zones`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use omo_cloud::zones::geojson::load_fences;
use omo_cloud::zones::index::FenceIndex;
use omo_cloud::zones::synthetic;

const ZONES: usize = 100_000;
const POINTS: usize = 100_000;

fn bench(c: &mut Criterion) {
    let fences = load_fences(synthetic::fences(ZONES, 42).to_string().as_bytes())
        .expect("synthetic fences load");
    let index = FenceIndex::new(fences);
    let points = synthetic::points(POINTS, 42);
    let hits: usize = points
        .iter()
        .map(|&(x, y)| index.covering(x, y).len())
        .sum();
    eprintln!("{ZONES} zones, {POINTS} points, {hits} matches");
    let mut group = c.benchmark_group("zones");
    group.throughput(Throughput::Elements(POINTS as u64));
    group.sample_size(20);
    group.bench_function("covering, 100k zones", |b| {
        b.iter(|| {
            let mut n = 0;
            for &(x, y) in &points {
                n += index.covering(black_box(x), black_box(y)).len();
            }
            n
        })
    });
    group.bench_function("with 20 m accuracy, 100k zones", |b| {
        b.iter(|| {
            let mut n = 0;
            for &(x, y) in &points {
                n += index.relate(black_box(x), black_box(y), 20.0).len();
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
