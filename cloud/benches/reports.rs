//! A store report over 90 days of 100,000 customers: visits (6 per customer), purchases (3),
//! offers (one in two customers, a third clicked, a fifth redeemed) and the campaign's
//! analysis rows spread over `--stores` stores (default 10), on sled, with their tallies
//! filled from those rows. Prints the time of `reports::store_report` for one store over the
//! 90 days (and of the same report from the rows alone, which it must equal), and of the tier
//! report over every profile. Target: the store report under 1 s.
//!
//! `cargo bench -p omo-cloud --bench reports` (`-- --customers N --stores N --days N
//! --time-zone TZ`).

mod common;

use common::{arg, arg_text, ts};
use std::time::Instant;

use chrono::NaiveDate;
use omo_cloud::campaigns::definition::Campaign;
use omo_cloud::campaigns::keys;
use omo_cloud::campaigns::report::AnalysisRow;
use omo_cloud::campaigns::stored;
use omo_cloud::delivery::{self, Delivery, Status};
use omo_cloud::profiles::{Profile, ProfileParams, PurchaseMark};
use omo_cloud::purchases::{Attribution, Purchase, PurchaseIn};
use omo_cloud::reports::{self, tally, Range};
use omo_cloud::store::sled_store::SledStore;
use omo_cloud::store::{Commit, Space, Store};
use omo_cloud::visits::engine::Scope;
use omo_cloud::visits::stage::VisitRecord;
use omo_cloud::vocab::SaleChannel;
use rand::{Rng, SeedableRng};

const DAY_MS: i64 = 86_400_000;

fn main() -> anyhow::Result<()> {
    let customers = arg("--customers", 100_000) as usize;
    let stores = arg("--stores", 10) as usize;
    let days = arg("--days", 90) as i64;
    // Off the UTC hour (Asia/Kolkata, say), the part hours at the ends are read from the rows.
    let time_zone = arg_text("--time-zone", "Asia/Tokyo");
    let first_day: NaiveDate = "2026-08-01".parse()?;
    let range = Range::new(
        first_day,
        first_day + chrono::Days::new(days as u64 - 1),
        time_zone.parse().map_err(|e| anyhow::anyhow!("{e}"))?,
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    let (start, end) = range.bounds_ms();
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 1 << 30)?;
    let campaign: Campaign = serde_json::from_value(serde_json::json!({
        "id": "welcome", "name": "Welcome", "trigger": {"kind": "enter"},
        "places": {"stores": (0..stores).map(|s| format!("s{s}")).collect::<Vec<_>>()},
        "schedule": {"from": "2026-01-01", "to": "2026-12-31", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "caps": {"per_customer": 1, "period_days": 7}, "budget": 1000000, "offer_ttl_minutes": 60,
        "channels": ["line"], "holdout_percent": 10,
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome: {coupon}"}}]
    }))?;
    let (c, _) = stored::save(None, campaign, ts(start));
    store.commit(c)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(90);
    let setup = Instant::now();
    let mut profiles = Vec::with_capacity(customers);
    let (mut visits, mut purchases, mut offers) = (0u64, 0u64, 0u64);
    for chunk in 0..customers.div_ceil(1000) {
        let mut c = Commit::new();
        for i in chunk * 1000..((chunk + 1) * 1000).min(customers) {
            let customer = format!("c_{i:012x}");
            let home = rng.random_range(0..stores);
            let at_home = |rng: &mut rand::rngs::StdRng| {
                if rng.random_bool(0.8) {
                    home
                } else {
                    rng.random_range(0..stores)
                }
            };
            let mut profile = Profile::new(&customer);
            for v in 0..6 {
                let s = format!("s{}", at_home(&mut rng));
                let at = rng.random_range(start..end);
                let id = format!("v{i:08x}{v}");
                let dwell = rng.random_range(60..5400u64);
                let row = VisitRecord {
                    id: id.clone(),
                    customer: customer.clone(),
                    scope: Scope::Store(s.clone()),
                    entered: ts(at),
                    exited: Some(ts(at + dwell as i64 * 1000)),
                    dwell_s: Some(dwell),
                    milestones_min: vec![5, 10],
                    sources: Default::default(),
                    late: false,
                };
                c.put(
                    Space::Visits,
                    format!("visit/{id}"),
                    serde_json::to_vec(&row)?,
                );
                // As the visit stage writes it: the customer and the dwell.
                c.put(
                    Space::Visits,
                    format!("by-scope/store/{s}/{at:016x}/{id}"),
                    format!("{customer}\t{dwell}").into_bytes(),
                );
                profile.add_visit(&s, at, 400);
                visits += 1;
            }
            let offered = rng.random_bool(0.5).then(|| {
                let s = format!("s{}", at_home(&mut rng));
                let at = rng.random_range(start..end);
                (s, at, format!("d{i:012x}"), format!("K{i:09}"))
            });
            if let Some((s, at, id, coupon)) = &offered {
                let d = Delivery {
                    id: id.clone(),
                    trigger_key: format!("t{i}"),
                    retry_key: "r".into(),
                    campaign: "welcome".into(),
                    variant: "a".into(),
                    channel: omo_cloud::delivery::DeliveryChannel::Line,
                    customer: customer.clone(),
                    store: s.clone(),
                    text: "Welcome: {coupon}".into(),
                    flex: None,
                    coupon: coupon.clone(),
                    decided_ms: *at,
                    expires_ms: at + 3_600_000,
                    status: Status::Delivered,
                    attempts: 1,
                    first_attempt_ms: Some(*at),
                    last_attempt_ms: Some(*at),
                    done_ms: Some(*at),
                    reason: None,
                    link: None,
                    click: None,
                    test: false,
                };
                c.put(
                    Space::Campaigns,
                    delivery::row_key(id),
                    serde_json::to_vec(&d)?,
                );
                c.put(
                    Space::Campaigns,
                    delivery::store_index_key(s, *at, id),
                    Vec::new(),
                );
                if rng.random_bool(0.33) {
                    c.put(Space::Campaigns, delivery::clicked_key(id), Vec::new());
                }
                if rng.random_bool(0.2) {
                    c.put(
                        Space::Campaigns,
                        format!("redemption/{coupon}"),
                        b"{}".to_vec(),
                    );
                }
                let row = AnalysisRow {
                    group: if rng.random_bool(0.1) { "holdout" } else { "a" }.into(),
                    first_trigger_ms: *at,
                    visit: String::new(),
                    window_end_ms: at + 7 * DAY_MS,
                    platforms: Default::default(),
                    returned_ms: rng.random_bool(0.3).then_some(at + DAY_MS),
                    redeemed: 0,
                    spend: 0.0,
                    store: s.clone(),
                };
                c.put(
                    Space::Campaigns,
                    keys::analysis("welcome", &format!("{i:024x}")),
                    serde_json::to_vec(&row)?,
                );
                offers += 1;
            }
            for p in 0..3 {
                let s = format!("s{}", at_home(&mut rng));
                let at = rng.random_range(start..end);
                let total = f64::from(rng.random_range(300..20_000u32));
                let id = format!("p_{i:012x}{p}");
                let sent: PurchaseIn = serde_json::from_value(serde_json::json!({
                    "order_id": id, "channel": "store", "store": s, "at": ts(at), "currency": "JPY",
                    "customer": {"member_id": customer},
                    "lines": [{"sku": "latte-m", "category": "coffee", "quantity": 1, "amount": total}]
                }))?;
                let attributed =
                    (p == 0)
                        .then_some(())
                        .and(offered.as_ref())
                        .map(|(_, _, d, k)| Attribution {
                            coupon: k.clone(),
                            delivery: d.clone(),
                            campaign: "welcome".into(),
                            variant: "a".into(),
                        });
                let row = Purchase {
                    id: id.clone(),
                    sent,
                    customer_id: Some(customer.clone()),
                    resolved_by: Some("member_id".into()),
                    total,
                    attributed,
                    received: ts(at),
                };
                c.put(
                    Space::Purchases,
                    format!("purchase/{id}"),
                    serde_json::to_vec(&row)?,
                );
                c.put(
                    Space::Purchases,
                    format!("by-store/{s}/{at:016x}/{id}"),
                    Vec::new(),
                );
                profile.add_purchase(
                    PurchaseMark {
                        id,
                        at_ms: at,
                        channel: SaleChannel::Store,
                        store: Some(s),
                        currency: "JPY".into(),
                        total,
                        categories: ["coffee".to_owned()].into(),
                    },
                    400,
                );
                purchases += 1;
            }
            c.put(
                Space::Profiles,
                omo_cloud::profiles::profile_key(&customer),
                serde_json::to_vec(&profile)?,
            );
            profiles.push(profile);
        }
        store.commit(c)?;
    }
    eprintln!(
        "setup: {customers} customers over {days} days at {stores} stores: {visits} visits, {purchases} purchases, {offers} offers in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    // The tallies, as a store written before them gets them at its first start (the writers
    // keep the same rows up as the data arrive).
    let secret = [7u8; 32];
    let t = Instant::now();
    let hours = tally::backfill(&store, &secret)?.unwrap_or(0);
    eprintln!(
        "tallies filled from the rows: {hours} store hours in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let from_rows = reports::store_report_from_rows(&store, "s0", range, &secret)?;
    let rows_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..5 {
        let t = Instant::now();
        let r = reports::store_report(&store, "s0", range, &secret)?;
        let json = serde_json::to_vec(&r)?;
        times.push(t.elapsed().as_secs_f64());
        std::hint::black_box(json);
        report = Some(r);
    }
    times.sort_by(f64::total_cmp);
    let r = report.expect("five runs");
    anyhow::ensure!(
        r == from_rows,
        "the report from the tallies differs from the one from the rows"
    );
    println!(
        "store report s0 over {days} days in {time_zone}: min {:.0} ms, median {:.0} ms, max {:.0} ms ({} visits, {} visitors, {} offers, {} purchases read)",
        times[0] * 1e3,
        times[2] * 1e3,
        times[4] * 1e3,
        r.visits,
        r.unique_visitors,
        r.offers.decided,
        r.purchases.count
    );
    println!("  the same report from the rows alone (`?source=rows`): {rows_ms:.0} ms");
    let params = ProfileParams::default();
    let t = Instant::now();
    let stored = omo_cloud::profiles::all(&store)?;
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    let tiers = reports::tier_report(&stored, 0, &params, range, None);
    drop(profiles);
    println!(
        "tier report over {} profiles: {:.0} ms ({read_ms:.0} ms reading them); tiers {:?}",
        stored.len(),
        t.elapsed().as_secs_f64() * 1e3,
        tiers
            .tiers
            .iter()
            .map(|t| (t.tier.as_str(), t.customers))
            .collect::<Vec<_>>()
    );
    println!(
        "  target: the store report under 1 s: {}",
        if times[2] < 1.0 { "met" } else { "missed" }
    );
    Ok(())
}
