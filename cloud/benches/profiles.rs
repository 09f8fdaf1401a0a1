//! Profile and tag recomputation: the visit stage folding 5,000 purchases/s plus a visit stream
//! (1,000 QR check-ins/s, each a visit) into 100,000 customers' profiles with five tag rules,
//! on sled, from the event log. The log holds `--seconds` of records (default 60); the stage
//! folds them from its offset as fast as it can. Prints the rates; the stage keeps up when it
//! folds the log's seconds in less time than they span.
//!
//! `cargo bench -p omo-cloud --bench profiles` (`-- --purchases N --visits N --seconds S`).

mod common;

use common::{arg, ts, until_caught_up};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use omo_cloud::identity::eid_resolver::EidResolver;
use omo_cloud::identity::{new_customer, save_customer};
use omo_cloud::ingest::record::{Checkin, PurchaseEvent, Record};
use omo_cloud::profiles::{self, ProfileParams, Rule};
use omo_cloud::registry::Registry;
use omo_cloud::store::event_log::EventLog;
use omo_cloud::store::sled_store::SledStore;
use omo_cloud::store::{Commit, Store};
use omo_cloud::visits::engine::VisitParams;
use omo_cloud::visits::stage::{Inputs, VisitStage};
use omo_cloud::vocab::SaleChannel;
use omo_device_config::StoreId;
use rand::{Rng, SeedableRng};

const CUSTOMERS: usize = 100_000;
const T0: i64 = 1_795_000_000_000;
const CATEGORIES: [&str; 5] = ["coffee", "bakery", "beans", "goods", "gifts"];

fn main() -> anyhow::Result<()> {
    let purchases_per_s = arg("--purchases", 5_000);
    let visits_per_s = arg("--visits", 1_000);
    let seconds = arg("--seconds", 60) as i64;
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 512 << 20)?;
    let stores: Vec<StoreId> = (0..20)
        .map(|i| StoreId::new(format!("s{i}")))
        .collect::<Result<_, _>>()?;

    let started = Instant::now();
    let mut ids = Vec::with_capacity(CUSTOMERS);
    for _ in 0..CUSTOMERS / 1000 {
        let mut c = Commit::new();
        for _ in 0..1000 {
            let mut customer = new_customer(ts(T0 - 86_400_000));
            customer.consent.location = true;
            c.extend(save_customer(&store, None, &customer)?);
            ids.push(customer.id);
        }
        store.commit(c)?;
    }
    let rule = |v: serde_json::Value| -> anyhow::Result<Rule> { Ok(serde_json::from_value(v)?) };
    for (tag, r) in [
        (
            "coffee-fan",
            rule(
                serde_json::json!({"kind": "bought_category", "category": "coffee", "within_days": 30}),
            )?,
        ),
        (
            "beans-buyer",
            rule(
                serde_json::json!({"kind": "bought_category", "category": "beans", "within_days": 90}),
            )?,
        ),
        (
            "regular",
            rule(serde_json::json!({"kind": "visited", "at_least": 3, "within_days": 30}))?,
        ),
        (
            "big-spender",
            rule(serde_json::json!({"kind": "spent", "at_least": 20000, "within_days": 365}))?,
        ),
        ("online-only", Rule::OnlineOnly),
    ] {
        profiles::put_rule(&store, tag, &r)?;
    }

    // The log: each second its purchases and check-ins at random customers, and a tick.
    let mut rng = rand::rngs::StdRng::seed_from_u64(19);
    let mut log = EventLog::open(&store)?;
    let mut records = 0u64;
    let mut n = 0u64;
    for s in 0..seconds {
        let mut c = Commit::new();
        let at = T0 + s * 1000;
        for i in 0..purchases_per_s {
            n += 1;
            let online = rng.random_bool(0.2);
            let categories: BTreeSet<String> = (0..rng.random_range(1..=3))
                .map(|_| CATEGORIES[rng.random_range(0..CATEGORIES.len())].to_owned())
                .collect();
            let record = Record::Purchase(PurchaseEvent {
                purchase: format!("p_{n:020}"),
                customer: ids[rng.random_range(0..ids.len())].clone(),
                channel: if online {
                    SaleChannel::Online
                } else {
                    SaleChannel::Store
                },
                store: (!online).then(|| stores[rng.random_range(0..stores.len())].clone()),
                event_ts: ts(at + (i as i64 * 1000) / purchases_per_s as i64 - 2000),
                received: ts(at),
                currency: "JPY".into(),
                total: f64::from(rng.random_range(300..20_000u32)),
                categories,
            });
            log.append(&mut c, &record.encode());
        }
        for _ in 0..visits_per_s {
            let record = Record::Checkin(Checkin {
                install: "i_bench".into(),
                customer: ids[rng.random_range(0..ids.len())].clone(),
                store: stores[rng.random_range(0..stores.len())].clone(),
                zone: None,
                event_ts: ts(at - 1000),
                received: ts(at),
            });
            log.append(&mut c, &record.encode());
        }
        log.append(&mut c, &Record::Tick { received: ts(at) }.encode());
        records += purchases_per_s + visits_per_s + 1;
        store.commit(c)?;
    }
    eprintln!(
        "setup: {CUSTOMERS} customers, 5 tag rules, {records} log records in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let inputs = Inputs {
        registry: Arc::new(RwLock::new(Registry::load(&store)?)),
        eids: Arc::new(Mutex::new(EidResolver::new(Vec::new(), 300))),
        params: VisitParams::default(),
        id_key: [9; 32],
        profiles: ProfileParams::default(),
    };
    let mut stage = VisitStage::open(&store, &inputs)?;
    let folding = Instant::now();
    let folded = until_caught_up(|| stage.step(&store, &inputs))?;
    let took = folding.elapsed().as_secs_f64();
    let all = profiles::all(&store)?;
    let profiles_written = all.len();
    let (bought, visited): (u64, u64) = all
        .iter()
        .fold((0, 0), |(b, v), p| (b + p.purchases(), v + p.visits));
    let sample = profiles::read(&store, &ids[0])?;
    println!(
        "folded {folded} records ({} s of log: {purchases_per_s} purchases/s + {visits_per_s} check-ins/s) in {took:.2} s",
        seconds
    );
    println!(
        "  {:.0} purchases/s and {:.0} visits/s folded into profiles ({:.0} records/s); {:.2}× real time",
        (purchases_per_s * seconds as u64) as f64 / took,
        (visits_per_s * seconds as u64) as f64 / took,
        folded as f64 / took,
        seconds as f64 / took
    );
    println!("  in the profiles: {bought} purchases, {visited} store visits");
    println!(
        "  {profiles_written} profiles; customer 0: {} purchases, {} visits, tier {:?}, tags {:?}",
        sample.as_ref().map_or(0, |p| p.purchases()),
        sample.as_ref().map_or(0, |p| p.visits),
        sample.as_ref().map(|p| p.tier.clone()),
        sample.as_ref().map(|p| p.tags.clone())
    );
    println!(
        "  {}",
        if took <= seconds as f64 {
            "keeps up: the log's seconds folded in less time than they span"
        } else {
            "falls behind: the stage needs more time than the log spans"
        }
    );
    Ok(())
}
