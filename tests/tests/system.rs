//! The whole system end to end: real `omo-gateway`s replaying store visits into the real
//! `omo-cloud` (its embedded broker, or Mosquitto with the provisioned ACL), the app API and
//! LINE webhooks beside them, offers out to the simulators' fake LINE and FCM servers — and
//! the same under faults: a broker outage with a gateway killed in it, a cloud crash (and a
//! crash at `ingest.after_flush_before_ack` on the backlog), a backlog many batches long, a
//! gateway disk replaced, gateway clocks 10 minutes off, LINE 429 storms and 500s, an FCM
//! token unregistered. After each: no presence event lost (every seq of every epoch stored,
//! except what a replaced disk held, which the cloud reports), no offer twice, none for
//! events past the trigger lateness, every offer final with its reason, and no secret or
//! personal id in the logs at info level.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use omo_sim::fault::Fault;
use omo_tests::cloud::metric;
use omo_tests::scenario::Visit;
use omo_tests::system::{carried_beacon, gateway_zones, visits, Layout, System};
use reqwest::Method;
use serde_json::json;

fn line_user(n: u8) -> String {
    format!("U{:030x}{n:02x}", 0xfeed_u32)
}

/// The LINE users offers reached (each accepted push once per retry key), counted.
fn line_offers(sys: &System) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    for a in sys.line.accepted() {
        seen.entry(a.to).or_default().insert(a.retry_key);
    }
    seen.into_iter()
        .map(|(to, keys)| (to, keys.len()))
        .collect()
}

/// The FCM tokens offers reached, counted by distinct delivery id.
fn push_offers(sys: &System) -> BTreeMap<String, usize> {
    let mut seen: BTreeMap<String, BTreeSet<Option<String>>> = BTreeMap::new();
    for a in sys.fcm.accepted() {
        seen.entry(a.token).or_default().insert(a.delivery_id);
    }
    seen.into_iter().map(|(to, ids)| (to, ids.len())).collect()
}

fn once_each(who: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    who.into_iter().map(|w| (w, 1)).collect()
}

/// Stops every gateway with SIGTERM (after [`System::wait_settled`]: nothing in flight) and
/// checks that the cloud holds every seq of the epoch each one was in.
async fn stop_and_check_nothing_lost(sys: &mut System) -> anyhow::Result<()> {
    for i in 0..sys.gateways.len() {
        let (epoch, last) = sys.gateways[i].stop()?;
        let name = sys.gateways[i].name();
        anyhow::ensure!(last > 0, "{name} wrote no events");
        sys.check_epoch_complete(&name, &epoch, last).await?;
    }
    Ok(())
}

/// One store entry at each of three stores: gateway g1 (clock right), g2 (10 minutes behind)
/// and g3 (10 minutes ahead), both reporting unsynchronised clocks; an app user reporting a
/// store beacon; a LINE user whose LINE app hears the store's LINE Beacon. Exactly one offer
/// per consenting customer arrives, on their channel, though one of them visits twice and
/// another customer has no consent; and no secret or personal id is logged at info level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_day_gives_each_offer_once_on_its_channel() -> anyhow::Result<()> {
    let site = gateway_zones(&[("s1", "g1"), ("s2", "g2"), ("s3", "g3")])
        + r#"
[[beacons]]
id = "line:0a0b0c0d01"
store = "s1"
name = "entrance LINE Beacon"

[[beacon_zones]]
id = "s1-entrance"
store = "s1"
name = "Entrance"
beacons = ["line:0a0b0c0d01"]
"#;
    // Carriers 1, 2 (twice), 5 (app) and 6 (no consent) and 7 (unknown) at s1; 3 at s2; 4 at s3.
    let mut g1 = visits([1, 2, 5, 6, 7], 0, 600);
    g1.extend(visits([2], 900, 1500));
    let layout = Layout {
        gateways: vec![
            ("s1", "g1", 0, g1),
            ("s2", "g2", -600, visits([3], 0, 600)),
            ("s3", "g3", 600, visits([4], 0, 600)),
        ],
        site,
        mosquitto: false,
        speed: 60,
    };
    let mut sys = System::build(layout).await?;
    sys.welcome_campaign(&["s1", "s2", "s3"], &["line", "push"])
        .await?;
    let mut expected_line = Vec::new();
    for n in [1, 2, 3, 4] {
        sys.line_customer(Some(&carried_beacon(n)), &line_user(n))
            .await?;
        expected_line.push(line_user(n));
    }
    let (_, carrier_token) = sys
        .app_customer("m-5", Some(&carried_beacon(5)), "fcm-token-carrier-5")
        .await?;
    sys.admin_call(
        Method::POST,
        "/v1/admin/customers",
        json!({"beacons": [carried_beacon(6)], "line_user": line_user(6), "consent": {"line": false}}),
        201,
    )
    .await?;
    let (_, app_token) = sys
        .app_customer("m-app", None, "fcm-token-app-user")
        .await?;
    sys.line_customer(None, &line_user(9)).await?;
    expected_line.push(line_user(9));

    sys.start_gateways()?;
    // Ten clock minutes (ten seconds): the app reports the store beacon and the LINE app
    // hears the LINE Beacon, every 30 and 60 clock seconds.
    for round in 0..20u32 {
        let now = sys.cloud.clock_now();
        let report = json!({"ts": now, "idempotency_key": format!("r-{round}"), "beacons": [{"id": "line:0a0b0c0d01", "rssi": -65}]});
        let (status, body) = sys
            .cloud
            .call(
                Method::POST,
                "/v1/app/locations",
                Some(report),
                Some(&app_token),
            )
            .await?;
        anyhow::ensure!(status == 202, "app report: {status} {body}");
        if round % 2 == 0 {
            let kind = if round == 0 { "enter" } else { "stay" };
            sys.line_webhook(
                vec![json!({"type": "beacon", "mode": "active", "timestamp": now.millis(), "webhookEventId": format!("ev-{round}"),
                    "deliveryContext": {"isRedelivery": false}, "source": {"type": "user", "userId": line_user(9)},
                    "replyToken": "r", "beacon": {"hwid": "0a0b0c0d01", "type": kind}})],
            )
            .await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The replay runs 25 clock minutes; every offer is out long before it ends.
    let deliveries = sys.settled_deliveries(7, Duration::from_secs(60)).await?;
    sys.wait_settled(Duration::from_secs(60)).await?;
    let deliveries_after = sys.settled_deliveries(7, Duration::from_secs(10)).await?;
    assert_eq!(deliveries_after.len(), 7, "{deliveries_after:#?}");
    for d in &deliveries {
        assert_eq!(d["status"], "delivered", "{d}");
    }
    assert_eq!(line_offers(&sys), once_each(expected_line), "LINE offers");
    assert_eq!(
        push_offers(&sys),
        once_each([
            "fcm-token-carrier-5".to_owned(),
            "fcm-token-app-user".to_owned()
        ]),
        "push offers"
    );
    // The cloud corrected the two unsynchronised clocks by about ±10 minutes.
    for (gw, offset_s) in [("g2", 600.0), ("g3", -600.0)] {
        let g = sys.cloud.admin(&format!("/v1/admin/gateways/{gw}")).await?;
        let got = g["runtime"]["clock_offset_ms"].as_f64().unwrap_or(0.0) / 1000.0;
        assert!(
            (got - offset_s).abs() < 120.0,
            "{gw}: offset {got} s, expected about {offset_s} s"
        );
    }
    stop_and_check_nothing_lost(&mut sys).await?;
    let mut secrets = sys.own_secrets();
    secrets.extend((1..=9).map(line_user));
    secrets.extend([
        "fcm-token-carrier-5".to_owned(),
        "fcm-token-app-user".to_owned(),
        carrier_token,
        app_token,
        "m-5".to_owned(),
        "m-app".to_owned(),
    ]);
    sys.check_logs_keep(&secrets)?;
    Ok(())
}

/// Mosquitto (with the provisioned ACL) stops for 30 s while two gateways replay a store
/// hour at ×10; one gateway is killed with SIGKILL during the outage and restarted on the
/// same disk. LINE answers a 429 storm and then 500s, and one app customer's FCM token is
/// unregistered. Afterwards every seq of every epoch is stored, every entering customer got
/// one offer, the unregistered token's offer failed with its reason, and nothing is logged
/// that should not be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_and_a_killed_gateway_lose_nothing() -> anyhow::Result<()> {
    // Six carriers per store arriving 20 clock seconds apart, each staying 5 clock minutes.
    let arrivals = |first: u8| -> Vec<Visit> {
        (0..6u8)
            .map(|i| Visit {
                beacon: first + i,
                from_s: i64::from(i) * 20,
                to_s: i64::from(i) * 20 + 300,
            })
            .collect()
    };
    let layout = Layout {
        gateways: vec![("s1", "g1", 0, arrivals(1)), ("s2", "g2", 0, arrivals(11))],
        site: gateway_zones(&[("s1", "g1"), ("s2", "g2")]),
        mosquitto: true,
        speed: 10,
    };
    let mut sys = System::build(layout).await?;
    sys.welcome_campaign(&["s1", "s2"], &["line", "push"])
        .await?;
    let mut expected = Vec::new();
    for n in (1..=5).chain(11..=16) {
        sys.line_customer(Some(&carried_beacon(n)), &line_user(n))
            .await?;
        expected.push(line_user(n));
    }
    let (_, install) = sys
        .app_customer("m-6", Some(&carried_beacon(6)), "fcm-token-gone")
        .await?;
    sys.fcm.unregister("fcm-token-gone");
    sys.line.inject(Fault {
        status: 429,
        count: 6,
        retry_after_s: Some(1),
        latency_ms: 0,
    });
    sys.line.inject(Fault {
        status: 500,
        count: 4,
        retry_after_s: None,
        latency_ms: 0,
    });
    sys.start_gateways()?;
    tokio::time::sleep(Duration::from_secs(10)).await;
    sys.broker.as_mut().expect("mosquitto").stop();
    tokio::time::sleep(Duration::from_secs(8)).await;
    sys.gateway("g1").kill()?;
    sys.gateway("g1").start()?;
    tokio::time::sleep(Duration::from_secs(22)).await;
    sys.broker.as_mut().expect("mosquitto").restart()?;
    // g1 replays its visits again from its restart; both drain.
    sys.wait_settled(Duration::from_secs(120)).await?;
    let deliveries = sys.settled_deliveries(12, Duration::from_secs(60)).await?;
    assert_eq!(deliveries.len(), 12, "{deliveries:#?}");
    for d in &deliveries {
        if d["channel"] == "push" {
            assert_eq!(d["status"], "failed", "{d}");
            let reason = d["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("UNREGISTERED") || reason.contains("unregistered"),
                "{d}"
            );
        } else {
            assert_eq!(d["status"], "delivered", "{d}");
        }
    }
    assert_eq!(line_offers(&sys), once_each(expected), "LINE offers");
    let retried = sys
        .line
        .request_log()
        .iter()
        .filter(|r| r.status != 200)
        .count();
    assert_eq!(retried, 10, "the storm and the 500s were all answered");
    // The dashboard's overview alerted both: the storm and the token FCM gave up.
    let overview = sys.cloud.admin("/v1/admin/overview").await?;
    for kind in ["line_429_storm", "push_tokens_invalidated"] {
        assert!(
            overview["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["kind"] == kind)),
            "no {kind} alert: {overview}"
        );
    }
    let metrics = sys.cloud.metrics().await?;
    assert!(
        metric(&metrics, "omo_ingest_rejected_total", &[]) == 0.0,
        "{metrics}"
    );
    stop_and_check_nothing_lost(&mut sys).await?;
    let mut secrets = sys.own_secrets();
    secrets.extend((1..=16).map(line_user));
    secrets.extend(["fcm-token-gone".to_owned(), install]);
    sys.check_logs_keep(&secrets)?;
    Ok(())
}

/// The embedded broker's outage is the cloud's crash: the cloud is killed for 30 clock
/// minutes while gateway g1 keeps 30 customers in the store (a backlog many batches long),
/// five more customers arrive in it (their entries reach the cloud past the trigger
/// lateness: visits, but no offers), and gateway g2 is killed and its disk replaced. The
/// cloud comes back first with a crash at `ingest.after_flush_before_ack` on the backlog,
/// then for good. Three customers arriving after it get offers; nobody gets two; g1's epoch
/// is complete; g2's old epoch is reported as ended with events outstanding, and exactly the
/// events its old outbox still held are missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cloud_crash_with_a_backlog_and_a_replaced_disk() -> anyhow::Result<()> {
    // ×60: a wall second is a clock minute. g1: carriers 1-30 all hour, 31-35 arrive during
    // the outage, 36-38 after it. g2: carriers 41-43 all hour.
    let mut g1 = visits(1..=30, 0, 3600);
    g1.extend(visits(31..=35, 900, 1500));
    g1.extend(visits(36..=38, 2700, 3300));
    let layout = Layout {
        gateways: vec![
            ("s1", "g1", 0, g1),
            ("s2", "g2", 0, visits(41..=43, 0, 3600)),
        ],
        site: gateway_zones(&[("s1", "g1"), ("s2", "g2")]),
        mosquitto: false,
        speed: 60,
    };
    let mut sys = System::build(layout).await?;
    sys.welcome_campaign(&["s1", "s2"], &["line"]).await?;
    let mut ids = BTreeMap::new();
    for n in (1..=38).chain(41..=43) {
        let id = sys
            .line_customer(Some(&carried_beacon(n)), &line_user(n))
            .await?;
        ids.insert(n, id);
    }
    sys.start_gateways()?;
    // Before the crash: the 33 customers present at the start get their offers.
    sys.settled_deliveries(33, Duration::from_secs(7)).await?;
    sys.cloud.process().kill()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    sys.gateway("g2").kill()?;
    let (old_epoch, old_last) = sys.gateway("g2").replace_disk()?;
    sys.gateway("g2").start()?;
    tokio::time::sleep(Duration::from_secs(27)).await;
    // Back, but crashing after storing the first backlog group and before acking it (the
    // gateways are waiting: that can be before its ports could be seen open).
    sys.cloud
        .spawn_with_env(&[("FAILPOINTS", "ingest.after_flush_before_ack=return")])?;
    let status = sys.cloud.process().wait_exit(Duration::from_secs(30))?;
    assert!(!status.success());
    assert!(
        sys.cloud
            .log()
            .contains("failpoint ingest.after_flush_before_ack fired"),
        "{}",
        sys.cloud.log()
    );
    sys.cloud.start()?;
    // g1's replay ends at 60 s, the new g2's 60 s after its restart; both drain.
    sys.wait_settled(Duration::from_secs(120)).await?;
    let deliveries = sys.settled_deliveries(36, Duration::from_secs(60)).await?;
    assert_eq!(deliveries.len(), 36, "{deliveries:#?}");
    for d in &deliveries {
        assert_eq!(d["status"], "delivered", "{d}");
    }
    let offered: BTreeSet<u8> = (1..=30).chain(36..=38).chain(41..=43).collect();
    assert_eq!(
        line_offers(&sys),
        once_each(offered.iter().map(|n| line_user(*n))),
        "LINE offers"
    );
    // Carriers 31-35: their entries were decided late and suppressed.
    let decisions = sys.cloud.admin("/v1/admin/decisions?limit=1000").await?;
    for n in 31..=35 {
        let late = decisions["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|d| {
                d["customer"] == json!(ids[&n])
                    && d["outcome"] == "suppressed"
                    && d["reason"] == "late"
            });
        assert!(late, "carrier {n}: no late suppression in {decisions:#}");
    }
    // g2's replaced disk: the old epoch ended with events outstanding; what it held is lost.
    let epochs = sys.epochs("g2").await?;
    let old = &epochs[&old_epoch];
    assert_eq!(old["ended"]["clean"], json!(false), "{old}");
    let stored = old["last_seq"].as_u64().unwrap_or(0);
    assert_eq!(old["missing"], json!(0), "{old}");
    assert!(
        stored < old_last,
        "the old outbox held nothing unacked (stored {stored} of {old_last}): the test did not test"
    );
    eprintln!(
        "g2's replaced disk: epoch {old_epoch} wrote {old_last} seqs, the cloud stored {stored}: {} lost; the cloud's end record: {}",
        old_last - stored,
        old["ended"]
    );
    let reported = old["ended"]["reported_written"].as_u64().unwrap_or(0);
    assert!(
        reported <= old_last
            && old["ended"]["outstanding_at_least"] == json!(reported.saturating_sub(stored)),
        "{old}"
    );
    // Reported once (by whichever cloud process stored the new epoch's first batch).
    let reports = sys
        .cloud
        .log()
        .matches("gateway epoch ended with events outstanding")
        .count();
    assert_eq!(reports, 1, "{}", sys.cloud.log());
    stop_and_check_nothing_lost(&mut sys).await?;
    // The backlog was many batches long: g1 reconnected with more events in its outbox than
    // ten 8 KiB presence payloads hold (an event is at least 110 bytes on the wire).
    let backlog = sys
        .gateway("g1")
        .log()
        .lines()
        .filter(|l| l.contains("connected to the broker"))
        .filter_map(|l| {
            l.split("outbox_depth=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(0);
    eprintln!("g1's backlog when the cloud came back: {backlog} events");
    assert!(backlog * 110 > 10 * 8192, "backlog of {backlog} events");
    let mut secrets = sys.own_secrets();
    secrets.extend(ids.keys().map(|n| line_user(*n)));
    sys.check_logs_keep(&secrets)?;
    Ok(())
}
