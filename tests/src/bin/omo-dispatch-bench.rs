//! Dispatch benchmark: the cloud's delivery worker sending pending LINE deliveries to the
//! simulators' fake LINE server on loopback with the channel's limit set to `--rate`
//! (default 2,500 requests/s). Prints the rate sustained (target ≥ 95 % of the limit) and the
//! most requests the fake received in any one-second window (must never exceed the limit).
//!
//! `cargo build --release -p omo-tests && target/release/omo-dispatch-bench [--rate N] [--seconds S]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use omo_cloud::delivery::line::LineSender;
use omo_cloud::delivery::retry::Backoff;
use omo_cloud::delivery::worker::{Senders, Settings, Worker};
use omo_cloud::delivery::DeliveryChannel;
use omo_cloud::delivery::{due_key, Delivery, Status};
use omo_cloud::identity::{new_customer, save_customer};
use omo_cloud::store::sled_store::SledStore;
use omo_cloud::store::{Commit, Space, Store};
use omo_device_config::Clock;
use omo_sim::fake_line::FakeLine;
use omo_tests::load::arg;

fn main() -> anyhow::Result<()> {
    let rate = u32::try_from(arg("--rate", 2500)?)?;
    let seconds = arg("--seconds", 10)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(run(rate, seconds))
}

async fn run(rate: u32, seconds: u64) -> anyhow::Result<()> {
    let fake = FakeLine::start("127.0.0.1:0".parse()?, "bench-token").await?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path(), 256 << 20)?);
    let clock = Clock::wall();
    let now = clock.now().timestamp_millis();
    // More deliveries than the limit lets out in the run, so the worker is never starved.
    let total = u64::from(rate) * (seconds + 2);
    let mut customers = Vec::new();
    let mut c = Commit::new();
    for i in 0..1000 {
        let mut customer = new_customer("2026-11-01T00:00:00.000Z".parse()?);
        customer.line_user = Some(format!("U{i:032x}"));
        customer.consent.line = true;
        c.extend(save_customer(store.as_ref(), None, &customer)?);
        customers.push(customer.id);
    }
    store.commit(c)?;
    for chunk in 0..total.div_ceil(1000) {
        let mut c = Commit::new();
        for i in chunk * 1000..((chunk + 1) * 1000).min(total) {
            let id = format!("{i:032x}");
            let d = Delivery {
                retry_key: format!(
                    "{}-{}-4{}-8{}-{}",
                    &id[..8],
                    &id[8..12],
                    &id[13..16],
                    &id[17..20],
                    &id[20..]
                ),
                id: id.clone(),
                trigger_key: id.clone(),
                campaign: "bench".into(),
                variant: "a".into(),
                channel: DeliveryChannel::Line,
                customer: customers[i as usize % customers.len()].clone(),
                store: "s1".into(),
                text: "A coffee on us today".into(),
                flex: None,
                coupon: format!("C{i}"),
                decided_ms: now,
                expires_ms: now + 3_600_000,
                status: Status::Pending,
                attempts: 0,
                first_attempt_ms: None,
                last_attempt_ms: None,
                done_ms: None,
                reason: None,
                link: None,
                click: None,
                test: false,
            };
            omo_cloud::delivery::put(&mut c, &d, None);
            c.put(Space::Campaigns, due_key(now, &id), Vec::new());
        }
        store.commit(c)?;
    }
    store.flush()?;
    let client = omo_cloud::tls::http_client_builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(64)
        .build()?;
    let senders = Senders {
        line: Some(LineSender::new(client, &fake.base_url(), "bench-token")),
        ..Senders::default()
    };
    let settings = Settings {
        concurrency: 64,
        batch: 500,
        backoff: Backoff::default(),
        rates: [rate, rate, rate],
        lease_ms: 60_000,
        counter_shard: None,
    };
    let worker = Arc::new(Worker::new(store.clone(), clock, senders, settings));
    let started = Instant::now();
    let task = tokio::spawn(worker.run(Default::default()));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    task.abort();
    let wall = started.elapsed().as_secs_f64();
    let mut times: Vec<u64> = fake.accepted().iter().map(|a| a.received_ms).collect();
    times.sort_unstable();
    anyhow::ensure!(times.len() > 10, "almost nothing was delivered");
    // The most requests in any window of one second, and the rate over the steady part
    // (after the first second, which starts from a full window).
    let mut max_window = 0usize;
    let mut j = 0;
    for i in 0..times.len() {
        while times[i] - times[j] >= 1000 {
            j += 1;
        }
        max_window = max_window.max(i - j + 1);
    }
    // Requests per whole second from the first one (the last, partial second left out).
    let first = times[0];
    let mut per_second = vec![0u64; ((times[times.len() - 1] - first) / 1000) as usize];
    for t in &times {
        if let Some(n) = per_second.get_mut(((t - first) / 1000) as usize) {
            *n += 1;
        }
    }
    anyhow::ensure!(!per_second.is_empty(), "the run was shorter than a second");
    let sustained = per_second.iter().sum::<u64>() as f64 / per_second.len() as f64;
    let lowest = per_second.iter().min().copied().unwrap_or(0);
    println!(
        "dispatch to fake LINE, limit {rate}/s: {} delivered in {wall:.1} s; {sustained:.0}/s per whole second ({:.1} % of the limit, target ≥ 95 %; lowest second {lowest}); most in any one-second window {max_window} (limit {rate}){}",
        times.len(),
        sustained * 100.0 / f64::from(rate),
        if max_window as u32 > rate { " — ABOVE THE LIMIT" } else { "" }
    );
    anyhow::ensure!(max_window as u32 <= rate, "the limit was exceeded");
    Ok(())
}
