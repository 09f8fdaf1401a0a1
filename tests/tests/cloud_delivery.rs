//! Offer delivery through the real `omo-cloud` (clock at ×60) to the simulators' fake LINE,
//! FCM and webhook servers on loopback. Customers walk into a store (a gateway hears the
//! beacons they carry), a campaign fires on the enter, and each trigger key must reach its
//! channel once as DESIGN.md counts it — LINE: one accepted retry key; FCM: one distinct
//! delivery id; webhook: one distinct Idempotency-Key — across a 429 storm and 5xx, and across
//! crashes at `decide.after_commit_before_send` and `deliver.after_request_before_record`.
//! Deliveries past their expiry are not sent, and a withdrawn consent cancels one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::SeqRanges;
use omo_sim::fake_fcm::FakeFcm;
use omo_sim::fake_line::{FakeLine, Fault};
use omo_sim::fake_webhook::FakeWebhook;
use omo_tests::cloud::{metric, CloudUnderTest, Creds, MqttGateway, Outbound, ADMIN_TOKEN};
use reqwest::Method;
use serde_json::{json, Value};

const SITE: &str = r#"
[[gateway_zones]]
id = "floor"
store = "s1"
name = "Floor"
gateways = ["g1"]
max_distance_m = 10.0
"#;
const LINE_TOKEN: &str = "line-channel-access-token";
const HOOK_SECRET: &str = "webhook-secret-for-tests";

fn key_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../simulators/fixtures/fcm-service-account.json")
}

fn beacon(i: usize) -> String {
    format!("line:{:010x}", 0xa000 + i)
}

/// The fakes, the cloud, and the customers by channel.
struct Rig {
    cloud: CloudUnderTest,
    line: FakeLine,
    fcm: FakeFcm,
    hook: FakeWebhook,
    g1: Creds,
    customers: BTreeMap<String, &'static str>,
    seq: u64,
}

impl Rig {
    /// Starts the fakes and the cloud (with `failpoints`), creates `n` customers per channel,
    /// and a campaign firing on entering the store with offers living `ttl_minutes`.
    async fn start(failpoints: Option<&str>, n: usize, ttl_minutes: u32) -> anyhow::Result<Rig> {
        let any = "127.0.0.1:0".parse()?;
        let line = FakeLine::start(any, LINE_TOKEN).await?;
        let fcm = FakeFcm::start(any, &key_file(), 3600).await?;
        let hook = FakeWebhook::start(any, HOOK_SECRET).await?;
        let g1 = Creds::new("s1", "g1")?;
        let mut cloud = CloudUnderTest::with_site(vec![g1.clone()], None, SITE, 60)?;
        cloud.set_outbound(Outbound {
            line: format!("api_base = \"{}\"\nchannel_access_token = \"{LINE_TOKEN}\"", line.base_url()),
            app: format!(
                "fcm_base = \"{}\"\nfcm_service_account_file = {:?}\nfcm_token_url = \"{}\"",
                fcm.base_url(),
                key_file().display().to_string(),
                fcm.token_url()
            ),
            sections: format!(
                "[webhook]\nurl = \"{}\"\nsecret = \"{HOOK_SECRET}\"\n[delivery]\nrequest_timeout_s = 1\n",
                hook.url()
            ),
        })?;
        match failpoints {
            Some(f) => cloud.start_with_env(&[("FAILPOINTS", f)])?,
            None => cloud.start()?,
        }
        let mut rig = Rig {
            cloud,
            line,
            fcm,
            hook,
            g1,
            customers: BTreeMap::new(),
            seq: 0,
        };
        for i in 0..n * 3 {
            let (channel, body) = match i % 3 {
                0 => (
                    "line",
                    json!({"beacons": [beacon(i)], "line_user": format!("U{i:032x}"), "consent": {"line": true, "location": true}, "attributes": {"name": format!("Shopper {i}")}}),
                ),
                1 => (
                    "push",
                    json!({"beacons": [beacon(i)], "member_id": format!("m-{i}"), "consent": {"push": true, "location": true}}),
                ),
                _ => (
                    "webhook",
                    json!({"beacons": [beacon(i)], "member_id": format!("m-{i}"), "consent": {"webhook": true, "location": true}}),
                ),
            };
            let c = rig.cloud.add_customer(body).await?;
            if channel == "push" {
                let mut install = CloudUnderTest::install_for_member("android", &format!("m-{i}"));
                install["push_token"] = json!(format!("fcm-token-{i}"));
                let (status, b) = rig
                    .cloud
                    .call(Method::POST, "/v1/app/installs", Some(install), None)
                    .await?;
                anyhow::ensure!(status == 201, "{b}");
            }
            rig.customers
                .insert(c["id"].as_str().unwrap().to_owned(), channel);
        }
        let today = chrono::Utc::now().date_naive();
        let campaign = json!({
            "name": "Welcome", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
            "schedule": {"from": (today - chrono::Days::new(2)).to_string(), "to": (today + chrono::Days::new(2)).to_string(), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            "caps": {"per_customer": 1, "period_days": 1}, "budget": 1000, "offer_ttl_minutes": ttl_minutes,
            "channels": ["line", "push", "webhook"],
            "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome {name} to {store}: {coupon}", "flex": {"type": "bubble", "body": {"type": "box", "layout": "vertical", "contents": [{"type": "text", "text": "{coupon}"}]}}}}]
        });
        rig.cloud.put_campaign("welcome", campaign).await?;
        Ok(rig)
    }

    /// Every customer is heard in the store for `rounds` rounds 30 s (clock) apart; stops
    /// early, without error, if the cloud exits (a failpoint).
    async fn walk_in(&mut self, rounds: usize) -> anyhow::Result<()> {
        let mut gw =
            MqttGateway::connect(self.cloud.mqtt_port, &self.g1, &self.g1.password).await?;
        let n = self.customers.len();
        for _ in 0..rounds {
            if self.cloud.process().exited() {
                return Ok(());
            }
            let now = self.cloud.clock_now();
            let mut events = Vec::new();
            for i in 0..n {
                self.seq += 1;
                events.push(PresenceEvent::Stay(Sighting {
                    seq: self.seq,
                    ts: now,
                    beacon: beacon(i).parse()?,
                    rssi: -60.0,
                    distance_m: 2.0,
                    seen_s: 30.0,
                }));
            }
            gw.publish_presence(Epoch(9), events, SeqRanges::new())
                .await?;
            if gw.next_ack(Duration::from_secs(10)).await?.is_none()
                && !self.cloud.process().exited()
            {
                anyhow::bail!("no ack\n{}", self.cloud.log());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }

    async fn deliveries(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.cloud.admin("/v1/admin/deliveries").await?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until there is one delivery per customer and each is final.
    async fn settled(&self, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d = self.deliveries().await?;
            let done = d.len() == self.customers.len()
                && d.iter()
                    .all(|d| !matches!(d["status"].as_str(), Some("pending") | Some("sending")));
            if done {
                return Ok(d);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "deliveries did not settle: {d:#?}\n{}",
                self.cloud.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Each customer's delivery went out on their channel and was delivered, and each reached
    /// its fake once as DESIGN.md counts it per channel.
    fn check_once(&self, deliveries: &[Value]) {
        let mut by_channel: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
        let triggers: BTreeSet<&str> = deliveries
            .iter()
            .map(|d| d["trigger_key"].as_str().unwrap())
            .collect();
        assert_eq!(
            triggers.len(),
            deliveries.len(),
            "one delivery per trigger key"
        );
        for d in deliveries {
            let customer = d["customer"].as_str().unwrap();
            let channel = d["channel"].as_str().unwrap();
            assert_eq!(self.customers[customer], channel, "{d}");
            assert_eq!(d["status"], "delivered", "{d}");
            by_channel.entry(channel).or_default().push(d);
        }
        let field = |ds: &[&Value], f: &str| -> BTreeSet<String> {
            ds.iter()
                .map(|d| d[f].as_str().unwrap().to_owned())
                .collect()
        };
        // LINE: one accepted request per retry key, and those keys are the deliveries'.
        let accepted = self.line.accepted();
        let keys: BTreeSet<String> = accepted
            .iter()
            .map(|a| a.retry_key.clone().expect("every push has a retry key"))
            .collect();
        assert_eq!(keys.len(), accepted.len(), "a retry key accepted twice");
        assert_eq!(keys, field(&by_channel["line"], "retry_key"));
        assert!(accepted
            .iter()
            .all(|a| a.texts.len() == 2 && a.texts[0].starts_with("Welcome Shopper")));
        // FCM: the distinct delivery ids that reached it are the push deliveries'.
        let ids: BTreeSet<String> = self
            .fcm
            .accepted()
            .iter()
            .map(|a| {
                a.delivery_id
                    .clone()
                    .expect("every message carries its delivery id")
            })
            .collect();
        assert_eq!(ids, field(&by_channel["push"], "id"));
        // Webhook: the distinct Idempotency-Keys are the webhook deliveries'.
        let kept: BTreeSet<String> = self.hook.kept().keys().cloned().collect();
        assert_eq!(kept, field(&by_channel["webhook"], "id"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_trigger_reaches_its_channel_once_through_a_429_storm_and_5xx() -> anyhow::Result<()> {
    let mut rig = Rig::start(None, 6, 60).await?;
    rig.line.inject(Fault {
        status: 429,
        count: 25,
        retry_after_s: Some(1),
        latency_ms: 0,
    });
    rig.fcm.inject(Fault {
        status: 503,
        count: 4,
        retry_after_s: None,
        latency_ms: 0,
    });
    rig.hook.inject(Fault {
        status: 500,
        count: 3,
        retry_after_s: None,
        latency_ms: 0,
    });
    rig.walk_in(4).await?;
    let deliveries = rig.settled(Duration::from_secs(60)).await?;
    rig.check_once(&deliveries);
    assert!(rig.line.requests() > 6, "the storm was met");
    // After a 429 with Retry-After: 1, the same retry key came back no sooner than a second
    // later in real time, though backoff runs on the ×60 clock.
    let log = rig.line.request_log();
    let mut retried = 0;
    for (i, r) in log.iter().enumerate() {
        if r.status != 429 {
            continue;
        }
        if let Some(next) = log[i + 1..].iter().find(|n| n.retry_key == r.retry_key) {
            retried += 1;
            assert!(
                next.received_ms >= r.received_ms + 950,
                "retried {} ms after a 429 with Retry-After: 1",
                next.received_ms - r.received_ms
            );
        }
    }
    assert!(retried >= 6, "{retried} retries after 429s");
    let metrics = rig.cloud.metrics().await?;
    assert!(
        metric(
            &metrics,
            "omo_delivery_retries_total",
            &["channel=\"line\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "omo_deliveries_total", &["result=\"delivered\""]),
        18.0
    );
    // Each stage publishes how far behind its input it is and how much it read; with the day
    // settled, the visit and statistics stages are at most a few ticks behind the log, and the
    // decision stage has read every transition.
    for stage in ["visits", "stats", "decide"] {
        let label = format!("stage=\"{stage}\"");
        assert!(
            metrics.contains(&format!("omo_stage_lag_records{{{label}}}")),
            "{metrics}"
        );
        let lag = metric(&metrics, "omo_stage_lag_records", &[label.as_str()]);
        assert!((0.0..1000.0).contains(&lag), "{stage} lag {lag}");
        let read = metric(&metrics, "omo_stage_records_total", &[label.as_str()]);
        assert!(read > 0.0, "{stage} read {read}: {metrics}");
    }
    assert_eq!(
        metric(&metrics, "omo_stage_lag_records", &["stage=\"decide\""]),
        0.0
    );
    // The pipeline's delay is recorded once per offer, at its first request, by channel.
    assert_eq!(
        metric(&metrics, "omo_event_to_offer_seconds_count", &[]),
        18.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("omo_event_to_offer_seconds_bucket{channel=\"line\",le=\"1\"}"),
        "{metrics}"
    );
    // The list pages: five rows at a time, each page after the last, give the same 18 rows.
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/v1/admin/deliveries?limit=5&after={a}"),
            None => "/v1/admin/deliveries?limit=5".to_owned(),
        };
        let page = rig.cloud.admin(&path).await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        assert!(items.len() <= 5);
        paged.extend(items);
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged.len(), 18);
    let ids = |rows: &[Value]| -> Vec<String> {
        rows.iter()
            .map(|d| d["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let mut all = ids(&deliveries);
    all.sort();
    assert_eq!(ids(&paged), all);
    redeem_and_report(&rig, &deliveries).await?;
    rig.cloud.stop()?;
    Ok(())
}

/// A new POS key of store s1.
async fn pos_key(cloud: &CloudUnderTest) -> anyhow::Result<String> {
    let (status, key) = cloud
        .call(
            Method::POST,
            "/v1/admin/stores/s1/pos-keys",
            None,
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 201, "{key}");
    Ok(key["key"].as_str().unwrap().to_owned())
}

/// A POS redeems a coupon (idempotent by code, by that store's key only), and the campaign's
/// report counts the funnel and the redemption.
async fn redeem_and_report(rig: &Rig, deliveries: &[Value]) -> anyhow::Result<()> {
    let cloud = &rig.cloud;
    let pos = &pos_key(cloud).await?;
    let code = deliveries[0]["coupon"].as_str().unwrap();
    let body = json!({"store": "s1", "code": code, "amount": 12.5});
    let (status, first) = cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(body.clone()),
            Some(pos),
        )
        .await?;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["campaign"], "welcome");
    let (status, again) = cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(body.clone()),
            Some(pos),
        )
        .await?;
    assert_eq!((status, &again), (200, &first), "idempotent by code");
    let (status, _) = cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(body),
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 401, "only a POS key of the store");
    let (status, e) = cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(json!({"store": "s1", "code": "NOSUCHCODE"})),
            Some(pos),
        )
        .await?;
    assert_eq!(status, 404, "{e}");
    let (status, e) = cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(json!({"store": "s1", "code": code, "amount": -1})),
            Some(pos),
        )
        .await?;
    assert_eq!(status, 422, "{e}");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("amount"));

    let (status, report) = cloud
        .call(
            Method::GET,
            "/v1/admin/reports/campaigns/welcome",
            None,
            Some(omo_tests::cloud::ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 200, "{report}");
    let a = report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "a")
        .unwrap();
    assert_eq!(a["customers"], 18, "{report}");
    assert_eq!(a["funnel"]["triggers"], 18, "{report}");
    assert_eq!(a["funnel"]["delivered"], 18, "{report}");
    assert_eq!(a["funnel"]["redeemed"], 1, "{report}");
    assert_eq!(a["redeemed_customers"], 1, "{report}");
    assert_eq!(a["spend"], 12.5, "{report}");
    assert_eq!(a["platforms"]["line"], 6, "{report}");
    assert_eq!(a["platforms"]["android"], 6, "{report}");
    assert_eq!(report["lift"][0]["too_small"], true, "no holdout: {report}");
    let (status, csv) = cloud
        .get_text(
            "/v1/admin/reports/campaigns/welcome?format=csv",
            Some(omo_tests::cloud::ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("campaign,group,customers"), "{csv}");
    assert!(
        lines.iter().any(|l| l.starts_with("welcome,a,18,")),
        "{csv}"
    );
    Ok(())
}

/// Runs the rig with `failpoint`, lets it fire, restarts, and checks that every trigger still
/// reached its channel once.
async fn crash_at(failpoint: &str) -> anyhow::Result<Rig> {
    let mut rig = Rig::start(Some(&format!("{failpoint}=return")), 4, 60).await?;
    rig.walk_in(6).await?;
    rig.cloud.process().wait_exit(Duration::from_secs(30))?;
    let log = rig.cloud.log();
    assert!(
        log.contains(&format!("failpoint {failpoint} fired")),
        "{log}"
    );
    rig.cloud.start()?;
    rig.walk_in(2).await?;
    let deliveries = rig.settled(Duration::from_secs(60)).await?;
    rig.check_once(&deliveries);
    Ok(rig)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_deciding_before_sending_sends_once() -> anyhow::Result<()> {
    let mut rig = crash_at("decide.after_commit_before_send").await?;
    rig.cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_request_before_recording_it_sends_once() -> anyhow::Result<()> {
    let mut rig = crash_at("deliver.after_request_before_record").await?;
    // The requests before the crash were sent again after it: LINE answered the repeated
    // retry keys 409, FCM got the same delivery ids, the webhook the same keys.
    assert!(
        rig.line.requests() > rig.line.accepted().len() as u64,
        "LINE saw no repeat"
    );
    assert!(rig.hook.repeats() >= 1 || rig.fcm.accepted().len() > 4);
    rig.cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_offers_are_not_sent_and_withdrawn_consent_cancels() -> anyhow::Result<()> {
    // Offers live 5 minutes of clock (5 s of wall time); LINE answers 503 throughout.
    let mut rig = Rig::start(None, 2, 5).await?;
    rig.line.inject(Fault {
        status: 503,
        count: 100_000,
        retry_after_s: None,
        latency_ms: 0,
    });
    rig.fcm.unregister("fcm-token-1");
    rig.walk_in(3).await?;
    let line_customers: Vec<String> = rig
        .customers
        .iter()
        .filter(|(_, ch)| **ch == "line")
        .map(|(c, _)| c.clone())
        .collect();
    // As soon as the first LINE delivery is written, its customer withdraws consent.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let withdrawn = loop {
        let d = rig.deliveries().await?;
        if let Some(first) = d.iter().find(|d| d["channel"] == "line") {
            break first["customer"].as_str().unwrap().to_owned();
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no LINE delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, body) = rig
        .cloud
        .call(
            Method::PATCH,
            &format!("/v1/admin/customers/{withdrawn}"),
            Some(json!({"consent": {"line": false}})),
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(status, 200, "{body}");
    let withdrawn_at = omo_sim::fault::now_ms();
    let deliveries = rig.settled(Duration::from_secs(60)).await?;
    let requests_when_settled = rig.line.requests();
    let status_of = |c: &str| {
        let d = deliveries.iter().find(|d| d["customer"] == c).unwrap();
        (
            d["status"].as_str().unwrap().to_owned(),
            d["reason"].as_str().unwrap_or("").to_owned(),
        )
    };
    let (s, reason) = status_of(&withdrawn);
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("cancelled", "consent for line withdrawn")
    );
    // No request for the withdrawn customer once the withdrawal was answered (one already in
    // flight may land within the same instant), and none for anyone past their expiry.
    let log = rig.line.request_log();
    let delivery_of = |c: &str| deliveries.iter().find(|d| d["customer"] == c).unwrap();
    let key_of = |c: &str| delivery_of(c)["retry_key"].as_str().unwrap().to_owned();
    assert!(
        log.iter()
            .filter(|r| r.retry_key.as_deref() == Some(key_of(&withdrawn).as_str()))
            .all(|r| r.received_ms <= withdrawn_at + 50),
        "a request after consent was withdrawn"
    );
    for c in &line_customers {
        let expires = delivery_of(c)["expires_ms"].as_i64().unwrap();
        let key = key_of(c);
        let requests: Vec<_> = log
            .iter()
            .filter(|r| r.retry_key.as_deref() == Some(key.as_str()))
            .collect();
        assert!(!requests.is_empty());
        for r in requests {
            // The request's arrival on the service clock (50 ms of wall slack = 3 s at ×60).
            let at = rig.cloud.clock_at(r.received_ms);
            assert!(
                at <= expires + 3_000,
                "a request {} ms past the expiry",
                at - expires
            );
        }
    }
    let other = line_customers.iter().find(|c| **c != withdrawn).unwrap();
    let (s, reason) = status_of(other);
    assert_eq!(s, "expired", "{reason}");
    assert!(reason.contains("503"), "{reason}");
    assert!(rig.line.accepted().is_empty());
    // The unregistered token failed for good (and is forgotten); the other push went out.
    let push: Vec<&Value> = deliveries
        .iter()
        .filter(|d| d["channel"] == "push")
        .collect();
    let failed: Vec<&&Value> = push.iter().filter(|d| d["status"] == "failed").collect();
    assert_eq!(failed.len(), 1, "{push:?}");
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("UNREGISTERED"),
        "{push:?}"
    );
    // Nothing more is sent after expiry.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(rig.line.requests(), requests_when_settled);
    rig.cloud.stop()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_send_reaches_the_staffs_phones_and_counts_in_no_report() -> anyhow::Result<()> {
    let rig = Rig::start(None, 1, 60).await?;
    let cloud = &rig.cloud;
    let marketer = Some(omo_tests::cloud::MARKETER_TOKEN);
    let path = "/v1/admin/campaigns/welcome/test";
    // Two of the customers are the staff's own phones (an operator tags them); the third is a
    // customer like any other: refused in the same words as an id nobody has.
    for id in rig
        .customers
        .iter()
        .filter(|(_, ch)| **ch != "webhook")
        .map(|(id, _)| id)
    {
        let (status, b) = cloud
            .call(
                Method::PATCH,
                &format!("/v1/admin/customers/{id}"),
                Some(json!({"tags": ["staff"]})),
                Some(ADMIN_TOKEN),
            )
            .await?;
        assert_eq!(status, 200, "{b}");
    }
    let (status, e) = cloud
        .call(
            Method::POST,
            path,
            Some(json!({"customers": [format!("U{:032x}", 0), "m-1", "m-2", "nobody"]})),
            marketer,
        )
        .await?;
    assert_eq!(status, 422, "{e}");
    let fields = e["error"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 2, "{e}");
    assert_eq!(fields[0]["field"], "customers[2]", "{e}");
    assert_eq!(fields[1]["field"], "customers[3]", "{e}");
    assert_eq!(
        fields[0]["message"].as_str().unwrap().replace("m-2", "x"),
        fields[1]["message"]
            .as_str()
            .unwrap()
            .replace("nobody", "x"),
        "an unknown id and a customer who is not a test device read alike: {e}"
    );
    let (status, e) = cloud
        .call(Method::POST, path, Some(json!({"customers": []})), marketer)
        .await?;
    assert_eq!(
        (status, &e["error"]["fields"][0]["field"]),
        (422, &json!("customers")),
        "{e}"
    );
    let (status, sent) = cloud
        .call(
            Method::POST,
            path,
            Some(json!({"customers": [format!("U{:032x}", 0), "m-1"]})),
            marketer,
        )
        .await?;
    assert_eq!(status, 202, "{sent}");
    let channels: Vec<&str> = sent["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["channel"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(channels, ["line", "push"], "{sent}");
    // Through the real channels: the fakes receive them, and the list says delivered.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let tests = loop {
        let (status, tests) = cloud
            .call(
                Method::GET,
                "/v1/admin/campaigns/welcome/tests",
                None,
                marketer,
            )
            .await?;
        assert_eq!(status, 200, "{tests}");
        let items = tests["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 2 && items.iter().all(|d| d["status"] == "delivered") {
            break items;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "test sends did not arrive: {tests}\n{}",
            cloud.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // The list says what became of each, not their text or coupon.
    assert!(tests
        .iter()
        .all(|d| d["coupon"].is_null() && d["text"].is_null()));
    let line = rig.line.accepted();
    assert_eq!(line.len(), 1);
    assert!(
        line[0].texts[0].starts_with("Welcome Shopper 0 to "),
        "{line:?}"
    );
    assert_eq!(rig.fcm.accepted().len(), 1);
    // In no funnel and no report; the coupon is not taken at the till.
    let report = cloud.admin("/v1/admin/reports/campaigns/welcome").await?;
    let funnel_total: u64 = report["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["funnel"].as_object().into_iter().flatten())
        .filter_map(|(_, n)| n.as_u64())
        .sum();
    assert_eq!(funnel_total, 0, "{report}");
    let overview = cloud.admin("/v1/admin/overview").await?;
    assert_eq!(
        overview["today"]["offers_delivered"],
        json!(0),
        "{overview}"
    );
    let pos = pos_key(cloud).await?;
    let rows = rig.deliveries().await?;
    let code = rows
        .iter()
        .find(|d| d["test"] == true)
        .and_then(|d| d["coupon"].as_str())
        .unwrap();
    let (status, e) = cloud
        .call(
            Method::POST,
            "/v1/redemptions",
            Some(json!({"store": "s1", "code": code})),
            Some(&pos),
        )
        .await?;
    assert_eq!(status, 422, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("test send"),
        "{e}"
    );
    // Analysts read reports; test sends are the composers' own.
    let (status, _) = cloud
        .call(
            Method::POST,
            path,
            Some(json!({"customers": ["m-1"]})),
            Some(omo_tests::cloud::ANALYST_TOKEN),
        )
        .await?;
    assert_eq!(status, 403);
    Ok(())
}
