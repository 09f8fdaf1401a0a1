//! The visit engine alone (pure stage, no storage): observations per second with 100,000
//! customers active at once, each reporting every 30 s of log time, with a tick every second.
//!
//! `cargo bench -p omo-cloud --bench visits`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use omo_cloud::visits::engine::{Evidence, Scope, Source, VisitEngine, VisitParams};

const CUSTOMERS: usize = 100_000;
const SECONDS: i64 = 60;
const T0: i64 = 1_790_000_000_000;

/// Evidence in log order: each customer every 30 s (staggered), in one of 100 stores.
fn workload() -> (Vec<String>, Vec<(i64, Evidence)>) {
    let customers: Vec<String> = (0..CUSTOMERS).map(|i| format!("c_{i:08x}")).collect();
    let mut out = Vec::new();
    let mut offset = 0;
    for s in 0..SECONDS {
        for (i, c) in customers.iter().enumerate() {
            if (i as i64 + s) % 30 != 0 {
                continue;
            }
            offset += 1;
            let at = T0 + s * 1000;
            out.push((
                at + 1000,
                Evidence {
                    customer: c.clone(),
                    scope: Scope::Store(format!("s{}", i % 100)),
                    at_ms: at,
                    offset,
                    source: Source::Gateway,
                    inside: true,
                },
            ));
        }
    }
    (customers, out)
}

fn bench(c: &mut Criterion) {
    let (_, evidence) = workload();
    let mut group = c.benchmark_group("visits");
    group.throughput(Throughput::Elements(evidence.len() as u64));
    group.sample_size(10);
    group.bench_function("observe + tick, 100k customers", |b| {
        b.iter_batched(
            || evidence.clone(),
            |evidence| {
                let mut engine = VisitEngine::new(VisitParams::default(), [7; 32]);
                let mut transitions = 0;
                let mut next_tick = T0;
                for (log_ms, e) in evidence {
                    while next_tick <= log_ms {
                        transitions += engine.tick(next_tick).len();
                        next_tick += 1000;
                    }
                    transitions += engine.observe(e, log_ms).len();
                }
                transitions
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
