use super::*;
use crate::campaigns::definition::Campaign;
use crate::campaigns::report::AnalysisRow;
use crate::delivery::DeliveryChannel;
use crate::delivery::{self, Delivery, Status};
use crate::profiles::PurchaseMark;
use crate::purchases::{Attribution, Purchase, PurchaseIn};
use crate::store::sled_store::SledStore;
use crate::store::Commit;
use crate::store::Space;
use crate::visits::engine::Scope;
use crate::visits::stage::VisitRecord;
use crate::vocab::SaleChannel;

const SECRET: [u8; 32] = [7; 32];

fn tokyo() -> Tz {
    "Asia/Tokyo".parse().unwrap()
}

fn day(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// 2026-11-23 in Tokyo: 2026-11-22T15:00Z .. 2026-11-23T15:00Z.
fn range() -> Range {
    Range::new(day("2026-11-23"), day("2026-11-23"), tokyo()).unwrap()
}

fn ms(s: &str) -> i64 {
    s.parse::<omo_device_config::Timestamp>().unwrap().millis()
}

fn visit(c: &mut Commit, id: &str, customer: &str, store: &str, at: &str, dwell_s: Option<u64>) {
    let at = ms(at);
    let v = VisitRecord {
        id: id.into(),
        customer: customer.into(),
        scope: Scope::Store(store.into()),
        entered: omo_device_config::Timestamp::from_millis(at).unwrap(),
        exited: None,
        dwell_s,
        milestones_min: Vec::new(),
        sources: Default::default(),
        late: false,
    };
    c.put(
        Space::Visits,
        format!("visit/{id}"),
        serde_json::to_vec(&v).unwrap(),
    );
    // Odd visits have an index entry of the older, empty kind: the report reads their row.
    let value = match (id.ends_with(['1', '3', '5']), dwell_s) {
        (true, _) => Vec::new(),
        (false, Some(d)) => format!("{customer}\t{d}").into_bytes(),
        (false, None) => customer.as_bytes().to_vec(),
    };
    c.put(
        Space::Visits,
        format!("by-scope/store/{store}/{at:016x}/{id}"),
        value,
    );
}

fn offer(c: &mut Commit, id: &str, store: &str, at: &str, status: Status) {
    let at = ms(at);
    let d = Delivery {
        id: id.into(),
        trigger_key: format!("t-{id}"),
        retry_key: "r".into(),
        campaign: "welcome-coffee".into(),
        variant: "a".into(),
        channel: DeliveryChannel::Line,
        customer: "c1".into(),
        store: store.into(),
        text: String::new(),
        flex: None,
        coupon: format!("CODE{id}"),
        decided_ms: at,
        expires_ms: at + 1,
        status,
        attempts: 1,
        first_attempt_ms: None,
        last_attempt_ms: None,
        done_ms: None,
        reason: None,
        link: None,
        click: None,
        test: false,
    };
    c.put(
        Space::Campaigns,
        delivery::row_key(id),
        serde_json::to_vec(&d).unwrap(),
    );
    c.put(
        Space::Campaigns,
        delivery::store_index_key(store, at, id),
        Vec::new(),
    );
}

fn purchase(c: &mut Commit, id: &str, store: &str, at: &str, total: f64, attributed: bool) {
    let sent: PurchaseIn = serde_json::from_value(serde_json::json!({
        "order_id": id, "channel": "store", "store": store, "at": at, "currency": "JPY",
        "lines": [{"sku": "x", "category": "coffee", "quantity": 1, "amount": total}]
    }))
    .unwrap();
    let p = Purchase {
        id: id.into(),
        sent,
        customer_id: Some("c1".into()),
        resolved_by: Some("member_id".into()),
        total,
        attributed: attributed.then(|| Attribution {
            coupon: "CODEd1".into(),
            delivery: "d1".into(),
            campaign: "welcome-coffee".into(),
            variant: "a".into(),
        }),
        received: at.parse().unwrap(),
    };
    c.put(
        Space::Purchases,
        format!("purchase/{id}"),
        serde_json::to_vec(&p).unwrap(),
    );
    c.put(
        Space::Purchases,
        format!("by-store/{store}/{:016x}/{id}", ms(at)),
        Vec::new(),
    );
}

fn row(c: &mut Commit, n: usize, group: &str, store: &str, returned: bool) {
    let r = AnalysisRow {
        group: group.into(),
        first_trigger_ms: ms("2026-11-23T01:00:00Z"),
        visit: "v".into(),
        window_end_ms: 0,
        platforms: Default::default(),
        returned_ms: returned.then_some(1),
        redeemed: 0,
        spend: 0.0,
        store: store.into(),
    };
    c.put(
        Space::Campaigns,
        crate::campaigns::keys::analysis("welcome-coffee", &format!("{group}-{store}-{n:04}")),
        serde_json::to_vec(&r).unwrap(),
    );
}

#[test]
fn a_range_of_local_dates_is_bounded_in_the_store_time_zone() {
    assert_eq!(
        range().bounds_ms(),
        (ms("2026-11-22T15:00:00Z"), ms("2026-11-23T15:00:00Z"))
    );
    // New York's DST ended on 2026-11-01: that local day had 25 hours.
    let ny = Range::new(
        day("2026-11-01"),
        day("2026-11-01"),
        "America/New_York".parse().unwrap(),
    )
    .unwrap();
    let (a, b) = ny.bounds_ms();
    assert_eq!(b - a, 25 * 3_600_000);
    assert!(Range::new(day("2026-11-02"), day("2026-11-01"), tokyo()).is_err());
    assert!(Range::new(day("2025-01-01"), day("2026-11-01"), tokyo()).is_err());
    // The parser's extreme dates are refused, not computed with.
    let last = NaiveDate::MAX;
    assert!(Range::new(last, last, tokyo()).is_err());
    assert!(Range::new(NaiveDate::MIN, NaiveDate::MIN, tokyo()).is_err());
}

#[test]
fn a_store_report_counts_its_visits_offers_purchases_and_lift_in_its_own_dates() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    let campaign: Campaign =
        serde_json::from_value(crate::campaigns::definition::tests::example()).unwrap();
    let (mut c, _) = stored::save(None, campaign, "2026-11-01T00:00:00Z".parse().unwrap());
    // In the range (Tokyo's 23rd): three visits by two customers, one still open.
    visit(&mut c, "v1", "c1", "s1", "2026-11-22T15:30:00Z", Some(180));
    visit(
        &mut c,
        "v2",
        "c2",
        "s1",
        "2026-11-23T02:00:00Z",
        Some(20 * 60),
    );
    visit(&mut c, "v3", "c1", "s1", "2026-11-23T14:59:00Z", None);
    // Out of it: the 22nd in Tokyo, the 24th in Tokyo, another store.
    visit(&mut c, "v4", "c3", "s1", "2026-11-22T14:59:00Z", Some(60));
    visit(&mut c, "v5", "c3", "s1", "2026-11-23T15:00:00Z", Some(60));
    visit(&mut c, "v6", "c3", "s2", "2026-11-23T02:00:00Z", Some(60));
    offer(
        &mut c,
        "d1",
        "s1",
        "2026-11-23T01:00:00Z",
        Status::Delivered,
    );
    offer(&mut c, "d2", "s1", "2026-11-23T03:00:00Z", Status::Failed);
    offer(
        &mut c,
        "d3",
        "s2",
        "2026-11-23T03:00:00Z",
        Status::Delivered,
    );
    c.put(Space::Campaigns, delivery::clicked_key("d1"), Vec::new());
    c.put(Space::Campaigns, "redemption/CODEd1", b"{}".to_vec());
    purchase(&mut c, "p1", "s1", "2026-11-23T01:30:00Z", 1340.0, true);
    purchase(&mut c, "p2", "s1", "2026-11-23T05:00:00Z", 500.0, false);
    purchase(&mut c, "p3", "s1", "2026-11-24T05:00:00Z", 999.0, false);
    for n in 0..40 {
        row(&mut c, n, "a", "s1", n < 16);
        row(&mut c, n, HOLDOUT, "s1", n < 8);
    }
    for n in 0..5 {
        row(&mut c, n, "a", "s2", true);
    }
    store.commit(c).unwrap();

    let r = store_report_from_rows(&store, "s1", range(), &SECRET).unwrap();
    assert_eq!((r.visits, r.unique_visitors, r.visits_open), (3, 2, 1));
    assert_eq!(
        r.dwell_minutes,
        BTreeMap::from([("0-5".to_owned(), 1), ("15-30".to_owned(), 1)])
    );
    assert_eq!(r.median_dwell_min, Some((180.0 + 1200.0) / 2.0 / 60.0));
    assert_eq!(
        r.offers,
        Offers {
            decided: 2,
            delivered: 1,
            clicked: 1,
            redeemed: 1
        }
    );
    assert_eq!((r.purchases.count, r.purchases.attributed), (2, 1));
    assert_eq!(r.purchases.revenue["JPY"], 1840.0);
    assert_eq!(r.purchases.revenue_attributed["JPY"], 1340.0);
    let w = &r.campaigns[0];
    assert_eq!(w.campaign, "welcome-coffee");
    assert_eq!(w.revenue_attributed["JPY"], 1340.0);
    assert_eq!((w.customers["a"], w.returned["a"]), (40, 16));
    assert_eq!((w.customers[HOLDOUT], w.returned[HOLDOUT]), (40, 8));
    assert!((w.lift[0].difference - 0.2).abs() < 1e-9);
    let csv = store_csv(&r);
    assert!(
        csv.starts_with("section,campaign,metric,value\nvisits,,visits,3\n"),
        "{csv}"
    );
    assert!(
        csv.contains("lift,welcome-coffee,a difference,0.2000\n"),
        "{csv}"
    );

    // Before the tallies are filled a report finds nothing; once filled (from the same rows)
    // it says what the rows say, and filling is done once.
    assert_eq!(
        store_report(&store, "s1", range(), &SECRET).unwrap().visits,
        0
    );
    assert!(tally::backfill(&store, &SECRET).unwrap().is_some());
    assert_eq!(store_report(&store, "s1", range(), &SECRET).unwrap(), r);
    assert_eq!(tally::backfill(&store, &SECRET).unwrap(), None);
}

#[test]
fn a_day_whose_midnight_is_off_the_utc_hour_reads_its_part_hours_from_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    // 2026-11-23 in Kolkata (UTC+5:30): 2026-11-22T18:30Z .. 2026-11-23T18:30Z.
    let kolkata = Range::new(
        day("2026-11-23"),
        day("2026-11-23"),
        "Asia/Kolkata".parse().unwrap(),
    )
    .unwrap();
    let mut c = Commit::new();
    // Each part hour holds one visit in the range and one out of it.
    visit(&mut c, "v0", "c1", "s1", "2026-11-22T18:20:00Z", Some(60));
    visit(&mut c, "v2", "c2", "s1", "2026-11-22T18:40:00Z", Some(600));
    visit(&mut c, "v4", "c3", "s1", "2026-11-23T09:00:00Z", None);
    visit(&mut c, "v6", "c4", "s1", "2026-11-23T18:20:00Z", Some(3600));
    visit(&mut c, "v8", "c5", "s1", "2026-11-23T18:40:00Z", Some(60));
    purchase(&mut c, "p1", "s1", "2026-11-22T18:10:00Z", 100.0, false);
    purchase(&mut c, "p2", "s1", "2026-11-23T18:29:00Z", 200.0, false);
    store.commit(c).unwrap();
    tally::backfill(&store, &SECRET).unwrap();
    let r = store_report(&store, "s1", kolkata, &SECRET).unwrap();
    assert_eq!((r.visits, r.unique_visitors, r.visits_open), (3, 3, 1));
    assert_eq!(
        r.dwell_minutes,
        BTreeMap::from([("5-15".to_owned(), 1), ("60-120".to_owned(), 1)])
    );
    assert_eq!(r.purchases.count, 1);
    assert_eq!(r.purchases.revenue["JPY"], 200.0);
    assert_eq!(
        r,
        store_report_from_rows(&store, "s1", kolkata, &SECRET).unwrap()
    );
}

#[test]
fn a_day_so_far_counts_only_its_own_time_even_inside_its_first_utc_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path(), 1 << 20).unwrap();
    let kolkata = Range::new(
        day("2026-11-23"),
        day("2026-11-23"),
        "Asia/Kolkata".parse().unwrap(),
    )
    .unwrap();
    let mut c = Commit::new();
    // The day starts at 18:30Z, inside the UTC hour 18:00Z.
    visit(&mut c, "v0", "c1", "s1", "2026-11-22T18:20:00Z", Some(60));
    visit(&mut c, "v1", "c2", "s1", "2026-11-22T18:35:00Z", Some(60));
    visit(&mut c, "v2", "c3", "s1", "2026-11-22T18:50:00Z", Some(60));
    store.commit(c).unwrap();
    tally::backfill(&store, &SECRET).unwrap();
    // At 18:45Z: only v1 is of the day so far.
    let so_far = crate::reports::store_report_until(
        &store,
        "s1",
        kolkata,
        ms("2026-11-22T18:45:00Z"),
        &SECRET,
    )
    .unwrap();
    assert_eq!(so_far.visits, 1);
    let whole = store_report(&store, "s1", kolkata, &SECRET).unwrap();
    assert_eq!(whole.visits, 2);
}

#[test]
fn tiers_count_customers_at_the_range_end_with_spend_and_projection() {
    let params = ProfileParams::default();
    let r = Range::new(day("2026-11-01"), day("2026-11-30"), Tz::UTC).unwrap();
    let (start, end) = r.bounds_ms();
    let buy = |p: &mut Profile, id: &str, at_ms: i64, total: f64, store: &str| {
        p.add_purchase(
            PurchaseMark {
                id: id.into(),
                at_ms,
                channel: SaleChannel::Store,
                store: Some(store.into()),
                currency: "JPY".into(),
                total,
                categories: Default::default(),
            },
            params.keep_days,
        )
    };
    let mut fan = Profile::new("c1");
    for i in 0..8 {
        buy(
            &mut fan,
            &format!("f{i}"),
            start + i * DAY_MS,
            10_000.0,
            "s1",
        );
    }
    let mut newcomer = Profile::new("c2");
    buy(&mut newcomer, "n1", start + DAY_MS, 3_000.0, "s2");
    // A purchase after the range counts neither for the tier nor for spend to date.
    buy(&mut newcomer, "n2", end + DAY_MS, 900_000.0, "s2");
    let nobody = Profile::new("c3");
    let report = tier_report(&[fan, newcomer, nobody], 2, &params, r, None);
    let by: BTreeMap<&str, &TierLine> = report.tiers.iter().map(|t| (t.tier.as_str(), t)).collect();
    // 8 purchases of 80,000 within 30 days: recency 5, frequency 4, monetary 4 = 13.
    assert_eq!(by["champion"].customers, 1);
    assert_eq!(by["champion"].spend_to_date, 80_000.0);
    // 80,000 over the shortest span (90 days), over a year.
    let projected = 80_000.0 / 90.0 * 365.0;
    assert!((by["champion"].projected_12m - projected).abs() < 1e-6);
    // One purchase of 3,000: 5 + 1 + 1 = 7.
    assert_eq!(
        (by["regular"].customers, by["regular"].spend_to_date),
        (1, 3_000.0)
    );
    // The profile without purchases and the two customers without a profile.
    assert_eq!((by["new"].customers, by["new"].projected_12m), (3, 0.0));
    assert_eq!(report.tiers.iter().map(|t| t.customers).sum::<u64>(), 5);
    let only_s2 = tier_report(&[Profile::new("x")], 7, &params, r, Some("s2"));
    assert_eq!(only_s2.tiers.iter().map(|t| t.customers).sum::<u64>(), 0);
    let csv = tiers_csv(&report);
    assert!(
        csv.lines()
            .nth(1)
            .unwrap()
            .starts_with("champion,1,1,80000.00,80000.00,"),
        "{csv}"
    );
}
