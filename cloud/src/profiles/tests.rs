use super::*;
use proptest::prelude::*;

const NOW: i64 = 1_795_000_000_000; // 2026-11-18
const DAY: i64 = DAY_MS;

fn purchase(
    id: &str,
    at_ms: i64,
    channel: SaleChannel,
    total: f64,
    category: &str,
) -> PurchaseMark {
    PurchaseMark {
        id: id.into(),
        at_ms,
        channel,
        store: (channel == SaleChannel::Store).then(|| "s1".into()),
        currency: "JPY".into(),
        total,
        categories: BTreeSet::from([category.to_owned()]),
    }
}

fn no_tz(_: &str) -> Option<Tz> {
    None
}

#[test]
fn purchases_fold_once_each_with_counts_spend_and_categories() {
    let params = ProfileParams::default();
    let mut p = Profile::new("c1");
    p.add_purchase(
        purchase("p1", NOW - 10 * DAY, SaleChannel::Store, 3000.0, "shoes"),
        400,
    );
    p.add_purchase(
        purchase("p2", NOW - DAY, SaleChannel::Online, 1000.0, "bags"),
        400,
    );
    p.add_purchase(
        purchase("p1", NOW - 10 * DAY, SaleChannel::Store, 3000.0, "shoes"),
        400,
    );
    assert_eq!(p.purchases(), 2);
    assert_eq!((p.store_purchases, p.online_purchases), (1, 1));
    assert_eq!(
        p.spend["JPY"],
        Spend {
            store: 3000.0,
            online: 1000.0
        }
    );
    assert_eq!(p.categories["shoes"].purchases, 1);
    assert_eq!(p.first_purchase_ms, Some(NOW - 10 * DAY));
    assert_eq!(p.last_purchase_ms, Some(NOW - DAY));
    assert_eq!(p.online_share(), Some(0.5));
    assert_eq!(p.spend_within(NOW, 5, "JPY"), 1000.0);
    assert_eq!(p.spend_within(NOW, 365, &params.currency), 4000.0);
}

#[test]
fn scores_and_tiers_follow_the_thresholds_as_of_a_time() {
    let params = ProfileParams::default();
    let mut p = Profile::new("c1");
    // Nobody bought anything: the lowest scores, the tier that takes everyone.
    assert_eq!(p.scores(&params, NOW).total(), 3);
    assert_eq!(p.tier(&params, NOW), "new");
    p.add_purchase(
        purchase("p1", NOW - 2 * DAY, SaleChannel::Store, 30_000.0, "shoes"),
        400,
    );
    // Recency 5 (within 30 days), frequency 1 (one purchase), monetary 3 (≥ 20,000).
    assert_eq!(
        p.scores(&params, NOW),
        Scores {
            recency: 5,
            frequency: 1,
            monetary: 3
        }
    );
    assert_eq!(p.tier(&params, NOW), "regular");
    // Before the purchase it did not count.
    assert_eq!(p.tier(&params, NOW - 3 * DAY), "new");
    // 200 days later recency has fallen to 2 (within 365 days only).
    assert_eq!(p.scores(&params, NOW + 200 * DAY).recency, 2);
    for i in 0..16 {
        p.add_purchase(
            purchase(
                &format!("q{i}"),
                NOW - DAY + i,
                SaleChannel::Online,
                10_000.0,
                "bags",
            ),
            400,
        );
    }
    assert_eq!(p.scores(&params, NOW).total(), 15);
    assert_eq!(p.tier(&params, NOW), "champion");
}

#[test]
fn rules_hold_within_their_windows() {
    let params = ProfileParams::default();
    let mut p = Profile::new("c1");
    p.add_purchase(
        purchase("p1", NOW - 20 * DAY, SaleChannel::Online, 8000.0, "shoes"),
        400,
    );
    let rule = |v: serde_json::Value| -> Rule { serde_json::from_value(v).unwrap() };
    let shoes30 = rule(
        serde_json::json!({"kind": "bought_category", "category": "shoes", "within_days": 30}),
    );
    let shoes10 = rule(
        serde_json::json!({"kind": "bought_category", "category": "shoes", "within_days": 10}),
    );
    assert!(shoes30.holds(&p, &params, NOW, &no_tz));
    assert!(!shoes10.holds(&p, &params, NOW, &no_tz));
    assert!(
        !shoes30.holds(&p, &params, NOW + 11 * DAY, &no_tz),
        "the window passed"
    );
    assert!(Rule::OnlineOnly.holds(&p, &params, NOW, &no_tz));
    assert!(!Rule::StoreOnly.holds(&p, &params, NOW, &no_tz));
    assert!(
        !Rule::OnlineOnly.holds(&p, &params, NOW - 30 * DAY, &no_tz),
        "before it bought"
    );
    let spent = rule(serde_json::json!({"kind": "spent", "at_least": 8000, "within_days": 30}));
    assert!(spent.holds(&p, &params, NOW, &no_tz));
    p.add_purchase(
        purchase("p2", NOW - DAY, SaleChannel::Store, 10.0, "socks"),
        400,
    );
    assert!(!Rule::OnlineOnly.holds(&p, &params, NOW, &no_tz));
}

#[test]
fn visits_this_month_count_in_the_store_time_zone() {
    let params = ProfileParams::default();
    let tokyo: Tz = "Asia/Tokyo".parse().unwrap();
    let tz_of = |s: &str| (s == "s1").then_some(tokyo);
    // 2026-11-30 16:00 UTC is 2026-12-01 01:00 in Tokyo: a new month there.
    let now = chrono::Utc
        .with_ymd_and_hms(2026, 11, 30, 16, 0, 0)
        .unwrap()
        .timestamp_millis();
    let mut p = Profile::new("c1");
    for h in [2, 3, 4] {
        // 14:00, 13:00, 12:00 UTC on the 30th: still November in Tokyo (until 15:00 UTC).
        p.add_visit("s1", now - h * 3_600_000, 400);
    }
    let r = |store: Option<&str>| Rule::Visited {
        store: store.map(str::to_owned),
        at_least: 1,
        within_days: None,
        this_month: true,
    };
    assert!(
        !r(Some("s1")).holds(&p, &params, now, &tz_of),
        "December in Tokyo"
    );
    assert!(r(None).holds(&p, &params, now, &tz_of), "November in UTC");
    let three = Rule::Visited {
        store: Some("s1".into()),
        at_least: 3,
        within_days: Some(1),
        this_month: false,
    };
    assert!(three.holds(&p, &params, now, &tz_of));
}

#[test]
fn profiles_keep_only_recent_detail_but_count_everything() {
    let mut p = Profile::new("c1");
    for d in 0..500 {
        p.add_visit("s1", NOW - (500 - d) * DAY, 400);
    }
    assert_eq!(p.visits, 500);
    assert!(p.recent_visits.len() <= 400);
    assert_eq!(p.first_visit_ms, Some(NOW - 500 * DAY));
    assert!(p.recent_visits.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
}

#[test]
fn bad_params_and_rules_are_named_by_key() {
    assert!(ProfileParams::default().problems("profiles").is_empty());
    let bad = ProfileParams {
        currency: "yen".into(),
        recency_days: [30, 90, 180, 365],
        frequency: [0, 1, 2, 3],
        tiers: vec![TierParams {
            name: "gold".into(),
            min_score: 12,
        }],
        time_zone: "Mars/Olympus".into(),
        keep_days: 10,
        ..ProfileParams::default()
    };
    let keys: Vec<String> = bad
        .problems("profiles")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    for k in [
        "profiles.currency",
        "profiles.recency_days",
        "profiles.frequency",
        "profiles.tiers",
        "profiles.time_zone",
        "profiles.keep_days",
    ] {
        assert!(keys.contains(&k.to_owned()), "{k} in {keys:?}");
    }
    let r = Rule::Visited {
        store: None,
        at_least: 0,
        within_days: Some(3),
        this_month: true,
    };
    let fields: Vec<String> = r.problems(400).into_iter().map(|(f, _)| f).collect();
    assert_eq!(fields, ["at_least", "within_days"]);
    let r = Rule::BoughtCategory {
        category: "x".into(),
        within_days: 500,
    };
    assert_eq!(r.problems(400)[0].0, "within_days");
}

proptest! {
    /// A new purchase never lowers a customer's score (so never their tier).
    #[test]
    fn a_purchase_never_lowers_the_score(
        old in proptest::collection::vec((0i64..400, 0u32..200_000, any::<bool>()), 0..30),
        total in 0u32..200_000,
    ) {
        let params = ProfileParams::default();
        let mut p = Profile::new("c1");
        for (i, (days_ago, amount, online)) in old.iter().enumerate() {
            let channel = if *online { SaleChannel::Online } else { SaleChannel::Store };
            p.add_purchase(purchase(&format!("p{i}"), NOW - days_ago * DAY, channel, f64::from(*amount), "x"), 400);
        }
        let before = p.scores(&params, NOW).total();
        p.add_purchase(purchase("new", NOW, SaleChannel::Store, f64::from(total), "x"), 400);
        prop_assert!(p.scores(&params, NOW).total() >= before);
    }
}
