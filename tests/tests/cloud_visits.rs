//! Visits through the real `omo-cloud` (clock at ×60): a gateway hears a customer's carried
//! beacon and another customer's app reports GPS fixes in a geofence; the visits, their dwell
//! and their transitions are read back through the admin API — and the same holds when the
//! visit stage crashes at its commit mid-visit and the cloud restarts.

use std::collections::BTreeMap;
use std::time::Duration;

use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::SeqRanges;
use omo_tests::cloud::{CloudUnderTest, Creds, MqttGateway, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

const SITE: &str = r#"
[[gateway_zones]]
id = "floor"
store = "s1"
name = "Floor"
gateways = ["g1"]
max_distance_m = 10.0

[[geofences]]
id = "plaza"
store = "s1"
name = "Plaza"
circle = { lat = 35.60, lon = 139.70, radius_m = 150.0 }
"#;

const CARRIED: &str = "line:00000000aa";

/// Rounds of 30 s (clock) each: a stay from the gateway and a GPS fix from the app.
struct Shopper {
    token: String,
    seq: u64,
    /// Clock time of the first and the last round, ms.
    span: Option<(i64, i64)>,
}

impl Shopper {
    async fn round(&mut self, cloud: &CloudUnderTest, gw: &mut MqttGateway) -> anyhow::Result<()> {
        let now = cloud.clock_now();
        self.span = Some(
            self.span
                .map_or((now.millis(), now.millis()), |(first, _)| {
                    (first, now.millis())
                }),
        );
        self.seq += 1;
        let event = PresenceEvent::Stay(Sighting {
            seq: self.seq,
            ts: now,
            beacon: CARRIED.parse()?,
            rssi: -60.0,
            distance_m: 2.0,
            seen_s: 30.0,
        });
        gw.publish_presence(Epoch(5), vec![event], SeqRanges::new())
            .await?;
        let ack = gw
            .next_ack(Duration::from_secs(10))
            .await?
            .ok_or_else(|| anyhow::anyhow!("no ack"))?;
        anyhow::ensure!(ack.seqs.contains(self.seq), "not acked: {ack:?}");
        let fix = json!({"ts": now, "idempotency_key": format!("fix-{}", self.seq), "gps": {"lat": 35.6001, "lon": 139.7001, "accuracy_m": 10.0}});
        let (status, body) = cloud
            .call(
                Method::POST,
                "/v1/app/locations",
                Some(fix),
                Some(&self.token),
            )
            .await?;
        anyhow::ensure!(status == 202, "{status} {body}");
        Ok(())
    }
}

async fn setup(cloud: &CloudUnderTest) -> anyhow::Result<(String, String, String)> {
    let (status, a) = cloud
        .call(
            Method::POST,
            "/v1/admin/customers",
            Some(json!({"beacons": [CARRIED], "line_user": "U-a", "consent": {"line": true, "location": true}, "attributes": {"name": "Aki"}})),
            Some(ADMIN_TOKEN),
        )
        .await?;
    anyhow::ensure!(status == 201, "{a}");
    let (status, b) = cloud
        .call(
            Method::POST,
            "/v1/app/installs",
            Some(CloudUnderTest::install_for_member("ios", "m-b")),
            None,
        )
        .await?;
    anyhow::ensure!(status == 201, "{b}");
    Ok((
        a["id"].as_str().unwrap().to_owned(),
        b["customer_id"].as_str().unwrap().to_owned(),
        b["token"].as_str().unwrap().to_owned(),
    ))
}

async fn visits(cloud: &CloudUnderTest, customer: &str) -> anyhow::Result<BTreeMap<String, Value>> {
    let v = cloud
        .admin(&format!("/v1/admin/visits?customer={customer}"))
        .await?;
    Ok(v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                format!(
                    "{}/{}",
                    v["scope"]["kind"].as_str().unwrap(),
                    v["id"].as_str().unwrap()
                ),
                v.clone(),
            )
        })
        .collect())
}

/// Waits until every visit of `customer` has exited, and there are `n` of them.
async fn exited(
    cloud: &CloudUnderTest,
    customer: &str,
    n: usize,
) -> anyhow::Result<BTreeMap<String, Value>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    loop {
        let v = visits(cloud, customer).await?;
        if v.len() == n && v.values().all(|v| !v["exited"].is_null()) {
            return Ok(v);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "visits of {customer}: {v:#?}\n{}",
            cloud.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every visit id has exactly one enter and one exit in the transitions.
async fn one_enter_and_exit_each(cloud: &CloudUnderTest) -> anyhow::Result<()> {
    let t = cloud.admin("/v1/admin/transitions?limit=1000").await?;
    let mut counts: BTreeMap<(String, String), u32> = BTreeMap::new();
    for t in t["items"].as_array().unwrap() {
        *counts
            .entry((
                t["visit"].as_str().unwrap().to_owned(),
                t["kind"]["kind"].as_str().unwrap().to_owned(),
            ))
            .or_default() += 1;
    }
    for ((visit, kind), n) in &counts {
        if kind == "enter" || kind == "exit" {
            anyhow::ensure!(*n == 1, "visit {visit}: {n} × {kind}: {counts:?}");
        }
    }
    Ok(())
}

/// The dwell is the time between the first and the last evidence (the clock runs at ×60 while
/// the rounds take what the machine gives them, so the expectation comes from the rounds).
fn check_visit(v: &Value, span: (i64, i64)) {
    let dwell = v["dwell_s"].as_i64().unwrap();
    let expected = (span.1 - span.0) / 1000;
    assert!(
        (dwell - expected).abs() <= 45,
        "dwell {dwell}, evidence spanned {expected} s: {v}"
    );
    assert!(
        v["milestones_min"].as_array().unwrap().contains(&json!(5)),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_and_an_app_make_visits_read_back_through_the_api() -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::with_site(vec![g1.clone()], None, SITE, 60)?;
    cloud.start()?;
    let (a, b, token) = setup(&cloud).await?;
    // A campaign on entering the store, running today in every time zone.
    let today = chrono::Utc::now().date_naive();
    let campaign = json!({
        "name": "Welcome", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
        "schedule": {"from": (today - chrono::Days::new(2)).to_string(), "to": (today + chrono::Days::new(2)).to_string(), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "caps": {"per_customer": 1, "period_days": 1}, "budget": 10, "offer_ttl_minutes": 60, "channels": ["line", "push"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome {name} to {store}: {coupon}"}}]
    });
    let (status, body) = cloud
        .call(
            Method::PUT,
            "/v1/admin/campaigns/welcome",
            Some(campaign),
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 201, "{body}");
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let mut shopper = Shopper {
        token,
        seq: 0,
        span: None,
    };
    // About ten minutes of clock time.
    for _ in 0..20 {
        shopper.round(&cloud, &mut gw).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let va = exited(&cloud, &a, 2).await?;
    assert!(
        va.keys().any(|k| k.starts_with("zone/")) && va.keys().any(|k| k.starts_with("store/")),
        "{va:?}"
    );
    let span = shopper.span.expect("rounds ran");
    va.values().for_each(|v| check_visit(v, span));
    assert_eq!(va.values().next().unwrap()["sources"], json!(["gateway"]));
    let vb = exited(&cloud, &b, 2).await?;
    vb.values().for_each(|v| check_visit(v, span));
    assert!(vb.values().all(|v| v["sources"] == json!(["app"])));
    one_enter_and_exit_each(&cloud).await?;
    let z = cloud.admin("/v1/admin/visits?zone=plaza").await?;
    assert_eq!(z["items"].as_array().unwrap().len(), 1, "{z}");

    // The store enters fired the campaign: one LINE delivery for the customer with LINE
    // consent, and the app-only customer (no push token) suppressed for consent.
    let deliveries = cloud.admin("/v1/admin/deliveries").await?;
    let items = deliveries["items"].as_array().unwrap();
    assert_eq!(
        items.len(),
        1,
        "{deliveries}\n{}",
        cloud.admin("/v1/admin/decisions").await?
    );
    assert_eq!(
        (&items[0]["customer"], &items[0]["channel"]),
        (&json!(a), &json!("line"))
    );
    assert!(
        items[0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Welcome Aki to Store s1: "),
        "{deliveries}"
    );
    let decisions = cloud.admin("/v1/admin/decisions").await?;
    let outcome_of = |c: &str| -> Vec<String> {
        decisions["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["customer"] == c)
            .map(|d| {
                format!(
                    "{}:{}",
                    d["outcome"].as_str().unwrap(),
                    d["reason"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    assert_eq!(outcome_of(&a), ["send:"], "{decisions}");
    assert_eq!(outcome_of(&b), ["suppressed:consent"], "{decisions}");

    // Anonymous footfall from the gateway, per zone and hour.
    let minute = omo_device_config::payload::Footfall {
        seq: 100,
        ts: cloud.clock_now(),
        devices: 7,
    };
    gw.publish_presence(
        Epoch(5),
        vec![PresenceEvent::Footfall(minute)],
        SeqRanges::new(),
    )
    .await?;
    assert!(gw.next_ack(Duration::from_secs(10)).await?.is_some());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let f = cloud.admin("/v1/admin/footfall?zone=floor").await?;
        if f["items"].as_array().is_some_and(|i| i.len() == 1) {
            assert_eq!(f["items"][0]["device_minutes"], 7, "{f}");
            assert_eq!(f["items"][0]["peak"], 7, "{f}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{f}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_visit_stage_mid_visit_changes_no_visit() -> anyhow::Result<()> {
    let g1 = Creds::new("s1", "g1")?;
    let mut cloud = CloudUnderTest::with_site(vec![g1.clone()], None, SITE, 60)?;
    // The stage commits about sixty times a second at ×60: this fires a few seconds in.
    cloud.start_with_env(&[("FAILPOINTS", "visits.before_commit=250*off->return")])?;
    let (a, b, token) = setup(&cloud).await?;
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let mut shopper = Shopper {
        token: token.clone(),
        seq: 0,
        span: None,
    };
    let mut before = BTreeMap::new();
    let mut rounds = 0;
    while !cloud_exited(&mut cloud) && rounds < 40 {
        if shopper.round(&cloud, &mut gw).await.is_err() {
            break;
        }
        rounds += 1;
        if let Ok(v) = visits(&cloud, &a).await {
            if !v.is_empty() {
                before = v;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    cloud.process().wait_exit(Duration::from_secs(20))?;
    assert!(
        cloud.log().contains("failpoint visits.before_commit fired"),
        "{}",
        cloud.log()
    );
    assert!(
        !before.is_empty(),
        "the crash came before any visit was entered; rounds {rounds}"
    );
    assert!(
        before.values().all(|v| v["exited"].is_null()),
        "the crash came after the visit ended: {before:?}"
    );
    drop(gw);

    cloud.start()?;
    let mut gw = MqttGateway::connect(cloud.mqtt_port, &g1, &g1.password).await?;
    let seq = shopper.seq;
    let mut shopper = Shopper {
        token,
        seq,
        span: None,
    };
    for _ in 0..6 {
        shopper.round(&cloud, &mut gw).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let after = exited(&cloud, &a, 2).await?;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "identical visit ids"
    );
    exited(&cloud, &b, 2).await?;
    one_enter_and_exit_each(&cloud).await?;
    cloud.stop()?;
    Ok(())
}

fn cloud_exited(cloud: &mut CloudUnderTest) -> bool {
    cloud.process().exited()
}
