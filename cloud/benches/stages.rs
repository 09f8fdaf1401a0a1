//! The visit stage and the decision stage through the real store, one core each in turn, on
//! sled and then on PostgreSQL (a throwaway local cluster, when one can be started here):
//! the event log holds what `omo-sim load` sends at its defaults — 100,000 customers with
//! static beacons cycling through 60 s visits (an enter, a stay every 5 s, an exit) at one of
//! 1,000 gateways in 100 stores, 10,000 events/s of log time with a tick every second — and
//! each stage runs from offset zero until it has read everything. Prints events/s for the
//! visit stage and transitions/s for the decision stage. Target: each ≥ 50,000/s.
//!
//! `cargo bench -p omo-cloud --bench stages` (`-- --rate N --seconds S --customers M`;
//! `--engines sled` or `--engines postgres` for one of them; `--partitions P`, 8 by default as
//! a new store's, 1 as a store from before partitions; `--calls` counts and times each stage's
//! store calls by kind and space).

mod common;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use common::counted::Counted;
use common::{arg, ts, until_caught_up};
use omo_cloud::campaigns::{stage as decisions, stored};
use omo_cloud::identity::eid_resolver::EidResolver;
use omo_cloud::identity::{new_customer, save_customer};
use omo_cloud::ingest::record::{GatewayEvent, Record};
use omo_cloud::registry::{replace_site, Registry};
use omo_cloud::store::event_log::EventLog;
use omo_cloud::store::postgres::cluster::LocalCluster;
use omo_cloud::store::postgres::{PgStore, Settings};
use omo_cloud::store::sled_store::SledStore;
use omo_cloud::store::{Commit, Space, Store};
use omo_cloud::visits::engine::VisitParams;
use omo_cloud::visits::stage::{Inputs, VisitStage};
use omo_device_config::payload::{Epoch, PresenceEvent, Sighting, SightingKind};
use omo_device_config::site::Site;
use omo_device_config::BeaconId;

const STORES: usize = 100;
const GATEWAYS_PER_STORE: usize = 10;
const STAY_S: u64 = 5;
const VISIT_S: u64 = 60;
/// A Wednesday noon in Tokyo, 2026-11-18.
const T0: i64 = 1_795_000_000_000;

/// A site of `STORES` stores of `GATEWAYS_PER_STORE` gateways, one gateway zone per store.
fn site() -> String {
    let mut t = String::new();
    for s in 0..STORES {
        t.push_str(&format!(
            "[[stores]]\nid = \"st-{s:04}\"\nname = \"Store {s}\"\ntime_zone = \"Asia/Tokyo\"\nlocation = {{ lat = {:.5}, lon = {:.5} }}\n\n",
            35.6 + (s / 50) as f64 * 0.01,
            139.6 + (s % 50) as f64 * 0.01
        ));
    }
    // Every gateway shares one login: the stages never read it.
    for g in 0..STORES * GATEWAYS_PER_STORE {
        t.push_str(&format!(
            "[[gateways]]\nid = \"gw-{g:04}\"\nstore = \"st-{:04}\"\npassword_hash = \"$7$101$Vzj7Z9chb6L7LPCY$fS0q08pe5hXC1qool6feab1vFntDgQ/o3EfjFQap1rpUESNORcAkhoovlEuELfQCWS483+sajF5Djqx4FRPtVw==\"\nsigning_key = \"{}\"\n\n",
            g / GATEWAYS_PER_STORE,
            "01".repeat(32)
        ));
    }
    for s in 0..STORES {
        let ids: Vec<String> = (0..GATEWAYS_PER_STORE)
            .map(|g| format!("\"gw-{:04}\"", s * GATEWAYS_PER_STORE + g))
            .collect();
        t.push_str(&format!(
            "[[gateway_zones]]\nid = \"st-{s:04}-floor\"\nstore = \"st-{s:04}\"\nname = \"Floor {s}\"\ngateways = [{}]\nmax_distance_m = 25.0\n\n",
            ids.join(", ")
        ));
    }
    t
}

fn beacon_of(index: usize) -> BeaconId {
    format!(
        "ibeacon:0A0D0000-0000-4000-8000-00000000000A:{}:{}",
        index >> 16,
        index & 0xffff
    )
    .parse()
    .expect("a valid iBeacon id")
}

/// Every event of the run in log order, with a tick each second: customer `i` starts its
/// cycle at its own phase, so the rate holds from the first second.
fn log(customers: usize, rate: u64, seconds: u64) -> Vec<Record> {
    let steps = VISIT_S / STAY_S;
    let cycle_ms = (customers as u64 * steps * 1000 / rate).max(VISIT_S * 1000);
    let mut events: Vec<(i64, usize, u64)> = Vec::new();
    for i in 0..customers {
        let phase = (i as u64 * cycle_ms / customers as u64) as i64;
        let mut start = phase - cycle_ms as i64;
        while start < (seconds * 1000) as i64 {
            for step in 0..steps {
                let at = start + (step * STAY_S * 1000) as i64;
                if (0..(seconds * 1000) as i64).contains(&at) {
                    events.push((at, i, step));
                }
            }
            start += cycle_ms as i64;
        }
    }
    events.sort_unstable();
    let mut out = Vec::with_capacity(events.len() + seconds as usize);
    let mut next_tick = 0i64;
    let mut seq = vec![0u64; STORES * GATEWAYS_PER_STORE];
    for (at, i, step) in events {
        // The cloud receives each event 50 ms after it happened.
        let received = at + 50;
        while next_tick <= received {
            out.push(Record::Tick {
                received: ts(T0 + next_tick),
            });
            next_tick += 1000;
        }
        let g = i % (STORES * GATEWAYS_PER_STORE);
        seq[g] += 1;
        let kind = match step {
            0 => SightingKind::Enter,
            s if s + 1 == steps => SightingKind::Exit,
            _ => SightingKind::Stay,
        };
        out.push(Record::Gateway(GatewayEvent {
            gateway: format!("gw-{g:04}").parse().expect("a gateway id"),
            store: format!("st-{:04}", g / GATEWAYS_PER_STORE)
                .parse()
                .expect("a store id"),
            epoch: Epoch(7),
            event: PresenceEvent::sighting(
                kind,
                Sighting {
                    seq: seq[g],
                    ts: ts(T0 + at),
                    beacon: beacon_of(i),
                    rssi: -60.0,
                    distance_m: 2.0,
                    seen_s: (step * STAY_S) as f64,
                },
            ),
            event_ts: ts(T0 + at),
            received: ts(T0 + received),
        }));
    }
    out
}

fn main() -> anyhow::Result<()> {
    let engines = std::env::args()
        .skip_while(|a| a != "--engines")
        .nth(1)
        .unwrap_or_else(|| "sled,postgres".into());
    for engine in engines.split(',') {
        match engine {
            "sled" => {
                let dir = tempfile::tempdir()?;
                bench("sled", &SledStore::open(dir.path(), 256 << 20)?)?;
            }
            "postgres" => match LocalCluster::start() {
                Ok(cluster) => {
                    cluster
                        .create_database("bench")
                        .map_err(anyhow::Error::msg)?;
                    let store = PgStore::open(&Settings {
                        url: cluster.url("bench"),
                        password: Some(cluster.password().to_owned()),
                        ..Settings::default()
                    })?;
                    bench("postgres", &store)?;
                }
                Err(why) => println!("postgres: not measured: {why}"),
            },
            other => anyhow::bail!("--engines: {other:?} is not sled or postgres"),
        }
    }
    Ok(())
}

/// Fills `store` with the site, the customers, a campaign and the log; runs each stage over it.
fn bench(engine: &str, store: &dyn Store) -> anyhow::Result<()> {
    let rate = arg("--rate", 10_000);
    let seconds = arg("--seconds", 30);
    let customers = arg("--customers", 100_000) as usize;
    let partitions = arg("--partitions", 8) as u16;
    omo_cloud::cluster::settle(store, Some(partitions))?;
    let site = Site::parse(&site(), false).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    store.commit(replace_site(&Registry::default(), &site)?)?;
    for from in (0..customers).step_by(1000) {
        let mut c = Commit::new();
        for i in from..(from + 1000).min(customers) {
            let mut customer = new_customer(ts(T0 - 86_400_000));
            // Ids of their own, not random: which customers share a partition is then the same
            // in every run (the log's last evidence is released only by a later record of its
            // partition, so the transitions counted would vary by a few).
            customer.id = format!("c_{i:020x}");
            customer.line_user = Some(format!("U{i:032x}"));
            customer.beacons = vec![beacon_of(i)];
            customer.consent.line = true;
            customer.consent.location = true;
            c.extend(save_customer(store, None, &customer)?);
        }
        store.commit(c)?;
    }
    let campaign = serde_json::from_value(serde_json::json!({
        "id": "welcome", "name": "Welcome", "trigger": {"kind": "enter"},
        "places": {"stores": (0..STORES).map(|s| format!("st-{s:04}")).collect::<Vec<_>>()},
        "schedule": {"from": "2026-01-01", "to": "2027-12-31", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "caps": {"per_customer": 1, "period_days": 1},
        "budget": 100000000, "offer_ttl_minutes": 60, "channels": ["line"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome to {store}: {coupon}"}}]
    }))?;
    let (commit, _) = stored::save(None, campaign, ts(T0 - 86_400_000));
    store.commit(commit)?;

    let records = log(customers, rate, seconds);
    let events = records
        .iter()
        .filter(|r| matches!(r, Record::Gateway(_)))
        .count();
    let mut writer = EventLog::open(store)?;
    for chunk in records.chunks(2000) {
        let mut c = Commit::new();
        for r in chunk {
            writer.append(&mut c, &r.encode());
        }
        store.commit(c)?;
    }
    store.flush()?;
    let registry = Arc::new(RwLock::new(Registry::load(store)?));

    let inputs = Inputs {
        registry: registry.clone(),
        eids: Arc::new(Mutex::new(EidResolver::new(Vec::new(), 300))),
        params: VisitParams {
            enter_after_s: 20,
            reorder_window_s: 2,
            ..VisitParams::default()
        },
        id_key: [9; 32],
        profiles: Default::default(),
    };
    // With `--calls`, each stage's store calls are counted and timed (at some cost in speed).
    let counted = Counted::new(store);
    let calls = std::env::args().any(|a| a == "--calls");
    let stepping: &dyn Store = if calls { &counted } else { store };
    let mut stage = VisitStage::open(store, &inputs)?;
    let started = Instant::now();
    let read = until_caught_up(|| stage.step(stepping, &inputs))?;
    let visits_s = started.elapsed().as_secs_f64();
    let transitions = store.scan(Space::Transitions, &[], usize::MAX)?.len();
    println!(
        "{engine}, {partitions} partition(s): visit stage: {events} events ({read} log records with ticks, {seconds} s at {rate}/s, {customers} customers) in {visits_s:.2} s: {:.0} events/s; {transitions} transitions",
        events as f64 / visits_s
    );
    for line in counted.report() {
        println!("{line}");
    }

    let inputs = decisions::Inputs {
        registry,
        secret: [9; 32],
        sent: Default::default(),
        link_base: None,
        profiles: Default::default(),
    };
    let started = Instant::now();
    let decided = until_caught_up(|| decisions::step(stepping, &inputs))?;
    let decide_s = started.elapsed().as_secs_f64();
    let deliveries =
        omo_cloud::store::barrier::scan_prefix(store, Space::Campaigns, b"delivery/", usize::MAX)?
            .len();
    println!(
        "{engine}, {partitions} partition(s): decision stage: {decided} transitions in {decide_s:.2} s: {:.0} transitions/s; {deliveries} delivery rows",
        decided as f64 / decide_s
    );
    for line in counted.report() {
        println!("{line}");
    }
    Ok(())
}
