//! Decision latency: a visit transition appended to the transitions log → its decision and
//! delivery row committed and flushed (by a flusher thread, as the delivery worker flushes
//! before it sends), with transitions arriving at 10,000/s for 10 s (every
//! one a send: 10,000 customers, caps that allow it). Prints the latency percentiles and the
//! rate sustained. Target: p99 ≤ 50 ms.
//!
//! `cargo bench -p omo-cloud --bench decisions` (`-- --rate N --seconds S` to change the load).

mod common;

use common::arg;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use omo_cloud::campaigns::stage::{step, Inputs};
use omo_cloud::campaigns::stored;
use omo_cloud::identity::{new_customer, save_customer};
use omo_cloud::registry::{replace_site, Registry};
use omo_cloud::store::sled_store::SledStore;
use omo_cloud::store::{Commit, Space, Store};
use omo_cloud::visits::engine::{Scope, Source, Transition, TransitionKind};
use omo_device_config::site::Site;

const SITE: &str = r#"
[[stores]]
id = "s1"
name = "Shibuya"
time_zone = "Asia/Tokyo"
location = { lat = 35.6, lon = 139.7 }
"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let rate = arg("--rate", 10_000);
    let seconds = arg("--seconds", 10);
    let customers = 10_000usize;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SledStore::open(dir.path(), 256 << 20)?);
    let site = Site::parse(SITE, false).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    store.commit(replace_site(&Registry::default(), &site)?)?;
    let mut ids = Vec::with_capacity(customers);
    for chunk in 0..customers / 500 {
        let mut c = Commit::new();
        for _ in 0..500 {
            let mut customer = new_customer("2026-11-01T00:00:00.000Z".parse()?);
            customer.line_user = Some(format!("U{}", chunk));
            customer.consent.line = true;
            c.extend(save_customer(store.as_ref(), None, &customer)?);
            ids.push(customer.id);
        }
        store.commit(c)?;
    }
    let campaign = serde_json::from_value(serde_json::json!({
        "id": "welcome", "name": "Welcome", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
        "schedule": {"from": "2026-01-01", "to": "2027-12-31", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "caps": {"per_customer": 1000000, "period_days": 1, "cooldown_minutes": 0},
        "budget": 100000000, "offer_ttl_minutes": 60, "channels": ["line"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Hi {name}, a coffee on us at {store}: {coupon}"}}],
        "holdout_percent": 10
    }))?;
    let (commit, _) = stored::save(None, campaign, "2026-11-01T00:00:00.000Z".parse()?);
    store.commit(commit)?;
    store.flush()?;
    let inputs = Inputs {
        registry: Arc::new(RwLock::new(Registry::load(store.as_ref())?)),
        secret: [9; 32],
        sent: Default::default(),
        link_base: None,
        profiles: Default::default(),
    };

    // The producer appends transitions every millisecond-ish at the rate; their append times
    // are kept by offset.
    let total = rate * seconds;
    let appended: Arc<Mutex<Vec<Instant>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (store, appended) = (store.clone(), appended.clone());
        let ids = ids.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let start = Instant::now();
            let t0 = 1_795_000_000_000i64; // a Wednesday noon in Tokyo, 2026-11-18
            let mut n = 0u64;
            while n < total {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                let upto = due.min(total);
                if upto == n {
                    std::thread::sleep(Duration::from_micros(500));
                    continue;
                }
                let mut c = Commit::new();
                let mut times = Vec::new();
                for i in n..upto {
                    let at_ms = t0 + i as i64;
                    let t = Transition {
                        visit: format!("v{i}"),
                        customer: ids[i as usize % ids.len()].clone(),
                        scope: Scope::Store("s1".into()),
                        kind: TransitionKind::Enter,
                        at_ms,
                        decided_ms: at_ms,
                        late: false,
                        sources: BTreeSet::from([Source::Gateway]),
                    };
                    c.put(
                        Space::Transitions,
                        (i + 1).to_be_bytes().to_vec(),
                        serde_json::to_vec(&t)?,
                    );
                }
                times.resize((upto - n) as usize, Instant::now());
                store.commit(c)?;
                appended.lock().expect("lock").extend(times);
                n = upto;
            }
            Ok(())
        })
    };

    // The stage decides and commits; a flusher (the delivery worker flushes before it sends)
    // makes the commits durable. A transition's latency ends at the end of the first flush
    // that began after its decision was committed.
    let committed: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let flusher = {
        let (store, committed, done, appended) = (
            store.clone(),
            committed.clone(),
            done.clone(),
            appended.clone(),
        );
        std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
            let mut latencies = Vec::with_capacity(total as usize);
            let mut durable = 0u64;
            loop {
                let began = Instant::now();
                let finished = done.load(Ordering::Acquire);
                store.flush()?;
                let ended = Instant::now();
                let upto = committed
                    .lock()
                    .expect("lock")
                    .iter()
                    .filter(|(at, _)| *at <= began)
                    .map(|(_, upto)| *upto)
                    .max()
                    .unwrap_or(durable);
                let times = appended.lock().expect("lock");
                for i in durable..upto {
                    latencies.push(ended - times[i as usize]);
                }
                durable = durable.max(upto);
                if finished && durable >= total {
                    return Ok(latencies);
                }
                drop(times);
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let mut decided = 0u64;
    let started = Instant::now();
    while decided < total {
        let n = step(store.as_ref(), &inputs)? as u64;
        if n == 0 {
            std::thread::sleep(Duration::from_micros(200));
            continue;
        }
        decided += n;
        committed
            .lock()
            .expect("lock")
            .push((Instant::now(), decided));
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Release);
    producer.join().expect("producer")?;
    let mut latencies = flusher.join().expect("flusher")?;
    latencies.sort();
    let deliveries = omo_cloud::store::barrier::scan_prefix(
        store.as_ref(),
        Space::Campaigns,
        b"delivery/",
        usize::MAX,
    )?
    .len();
    println!(
        "decisions: {total} transitions at {rate}/s offered, {:.0}/s decided; {deliveries} delivery rows (holdout 10 %)",
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency transition appended → decision and delivery row flushed: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms (target p99 ≤ 50 ms)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.95).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    Ok(())
}
