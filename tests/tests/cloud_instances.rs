//! Several `omo-cloud run` instances on one PostgreSQL database and one Mosquitto broker with
//! a shared subscription (issue 32): the gateways' batches go to whichever instance the broker
//! picks, one instance is killed mid-stream, and every seq of every epoch is stored once; the
//! survivor takes over every partition within its lease time, and the killed instance, started
//! again, takes back about half. With the leases off, both instances run every stage and
//! every partition, and still decide each trigger once and send each offer once.

use std::time::Duration;

use omo_device_config::broker_auth::{cloud_acl, gateway_acl, password_line, PasswordHash};
use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::{SeqRanges, Timestamp};
use omo_sim::fake_line::FakeLine;
use omo_tests::cloud::{
    metric, CloudUnderTest, Creds, External, MqttGateway, Outbound, ADMIN_TOKEN,
};
use omo_tests::{Broker, BrokerKind};
use reqwest::Method;
use serde_json::json;

/// Events each gateway sends, in batches of [`BATCH`].
const EVENTS: u64 = 400;
const BATCH: u64 = 20;
/// The instances' lease time, seconds (the smallest allowed: the test waits out one).
const LEASE_S: u64 = 3;

fn events(seqs: std::ops::RangeInclusive<u64>) -> Vec<PresenceEvent> {
    let at = Timestamp::new(chrono::Utc::now());
    seqs.map(|seq| {
        PresenceEvent::Stay(Sighting {
            seq,
            ts: at,
            beacon: "eddystone-eid:0011223344556677".parse().unwrap(),
            rssi: -70.0,
            distance_m: 4.0,
            seen_s: 0.0,
        })
    })
    .collect()
}

/// Sends `seqs` as one batch until an ack covers them all, as a gateway resends what is not
/// acked (an instance killed with the batch in flight never acks it).
async fn send_until_acked(
    gw: &mut MqttGateway,
    epoch: Epoch,
    seqs: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<()> {
    send_events_until_acked(gw, epoch, events(seqs)).await
}

/// Sends `events` as one batch until an ack covers their seqs.
async fn send_events_until_acked(
    gw: &mut MqttGateway,
    epoch: Epoch,
    events: Vec<PresenceEvent>,
) -> anyhow::Result<()> {
    let mut want = SeqRanges::new();
    for e in &events {
        want.insert(e.seq());
    }
    for _ in 0..60 {
        gw.publish_presence(epoch, events.clone(), SeqRanges::new())
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(tokio::time::Instant::now()) {
            match gw.next_ack(left).await? {
                Some(ack) if ack.epoch == epoch && want.difference(&ack.seqs).is_empty() => {
                    return Ok(())
                }
                Some(_) => {}
                None => break,
            }
        }
    }
    anyhow::bail!("seqs {want:?} of {epoch:?} never acked")
}

/// An instance on the shared database and broker.
fn instance(
    name: &str,
    gateways: &[Creds],
    broker_port: u16,
    (url, password): (&str, &str),
) -> anyhow::Result<CloudUnderTest> {
    instance_with(
        name,
        gateways,
        broker_port,
        (url, password),
        Outbound::default(),
    )
}

/// An instance on the shared database and broker, with `outbound` (its sections before the
/// instance's `[cluster]`).
fn instance_with(
    name: &str,
    gateways: &[Creds],
    broker_port: u16,
    (url, password): (&str, &str),
    outbound: Outbound,
) -> anyhow::Result<CloudUnderTest> {
    let external = External {
        url: format!("mqtt://127.0.0.1:{broker_port}"),
        username: "omo-cloud".into(),
        password: "cloud-password".into(),
        shared: Some((format!("omo-cloud-{name}"), "omo".into())),
    };
    let mut cloud = CloudUnderTest::empty(gateways.to_vec(), Some(external))?;
    let cluster = format!("[cluster]\ninstance = \"{name}\"\nlease_s = {LEASE_S}\n");
    cloud.set_outbound(Outbound {
        sections: format!("{cluster}{}", outbound.sections),
        ..outbound
    })?;
    cloud.use_postgres(url, password)?;
    Ok(cloud)
}

/// A broker with `gateways` and the cloud's login, with the generated ACL.
fn broker_for(gateways: &[Creds]) -> anyhow::Result<Broker> {
    let mut lines = vec![password_line(
        "omo-cloud",
        &PasswordHash::new("cloud-password"),
    )];
    let mut acl = cloud_acl("omo-cloud");
    for g in gateways {
        lines.push(password_line(
            g.gateway.as_str(),
            &PasswordHash::new(&g.password),
        ));
        acl = format!("{acl}\n{}", gateway_acl(&g.store, &g.gateway));
    }
    Broker::start(BrokerKind::Mosquitto, &lines, &acl)
}

/// How many partitions of `stage` `cloud` holds, as its `/metrics` says.
async fn held(cloud: &CloudUnderTest, stage: &str) -> anyhow::Result<u64> {
    let text = cloud.metrics().await?;
    Ok(metric(
        &text,
        "omo_partitions_held",
        &[&format!("stage=\"{stage}\"")],
    ) as u64)
}

/// Waits until `check` holds of the partitions the instances hold (each instance's count of
/// visit partitions, in order).
async fn until_held(
    clouds: &[&CloudUnderTest],
    within: Duration,
    check: impl Fn(&[u64]) -> bool,
) -> anyhow::Result<Vec<u64>> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut counts = Vec::new();
        for c in clouds {
            counts.push(held(c, "visits").await?);
        }
        if check(&counts) {
            return Ok(counts);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("partitions held {counts:?} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_killed_store_every_seq_once_and_share_the_partitions(
) -> anyhow::Result<()> {
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    pg.create_database("shared").map_err(anyhow::Error::msg)?;
    let db = (pg.url("shared"), pg.password().to_owned());
    let gateways: Vec<Creds> = (1..=3)
        .map(|i| Creds::new("s1", &format!("g{i}")))
        .collect::<Result<_, _>>()?;
    let broker = broker_for(&gateways)?;
    let mut a = instance("a", &gateways, broker.port, (&db.0, &db.1))?;
    let mut b = instance("b", &gateways, broker.port, (&db.0, &db.1))?;
    a.import_site()?;
    a.start()?;
    b.start()?;
    // Two instances: four of the eight partitions each.
    until_held(&[&a, &b], Duration::from_secs(20), |n| n == [4, 4]).await?;
    // A third with the embedded broker is refused: it would serve gateways alone.
    let mut embedded = CloudUnderTest::empty(gateways.clone(), None)?;
    embedded.use_postgres(&db.0, &db.1)?;
    let refused = embedded
        .command(&["run", "--config", &embedded.path("cloud.toml")])
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("mqtt.url: another instance (")
            && refused.contains("the embedded broker serves one instance"),
        "{refused}"
    );

    let mut gws = Vec::new();
    for g in &gateways {
        gws.push(MqttGateway::connect(broker.port, g, &g.password).await?);
    }
    let epoch = Epoch(7);
    let mut next = 1;
    while next <= EVENTS {
        let last = (next + BATCH - 1).min(EVENTS);
        for gw in &mut gws {
            send_until_acked(gw, epoch, next..=last).await?;
        }
        if next == 101 {
            // The broker shared the batches out: each instance stored some.
            for cloud in [&a, &b] {
                let text = cloud.metrics().await?;
                let stored = metric(&text, "omo_ingest_events_total", &["source=\"gateway\""]);
                assert!(stored > 0.0, "an instance stored nothing:\n{text}");
            }
            // Mid-stream, b is killed with whatever it had in flight.
            b.process().kill()?;
        }
        next = last + 1;
    }
    // Every seq stored once: the statistics count each stored event once.
    for g in &gateways {
        a.wait_stored(g.gateway.as_str(), EVENTS).await?;
    }
    // a took b's partitions over once their leases ran out.
    until_held(&[&a], Duration::from_secs(LEASE_S * 3 + 10), |n| n == [8]).await?;
    let text = a.metrics().await?;
    assert_eq!(metric(&text, "omo_cluster_instances", &[]), 1.0, "{text}");
    // Every partition read the log to its end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = a.metrics().await?;
        let lag = metric(&text, "omo_stage_lag_records", &["stage=\"visits\""]);
        if lag == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "visit stage lag {lag}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A resend of everything is acked and stores nothing more.
    for gw in &mut gws {
        send_until_acked(gw, epoch, 1..=BATCH).await?;
    }
    // b started again takes back about half.
    b.start()?;
    until_held(&[&a, &b], Duration::from_secs(LEASE_S * 3 + 20), |n| {
        n == [4, 4]
    })
    .await?;
    for g in &gateways {
        a.wait_stored(g.gateway.as_str(), EVENTS).await?;
        b.wait_stored(g.gateway.as_str(), EVENTS).await?;
    }
    a.stop()?;
    b.stop()?;
    Ok(())
}

const LINE_TOKEN: &str = "line-channel-access-token";
const SHOPPERS: usize = 6;

/// The beacon shopper `i` carries.
fn beacon(i: usize) -> String {
    format!("line:{:010x}", 0xb000 + i)
}

/// Enrols [`SHOPPERS`] customers with LINE consent, half through each instance; answers their
/// ids.
async fn add_shoppers(a: &CloudUnderTest, b: &CloudUnderTest) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..SHOPPERS {
        let body = json!({"beacons": [beacon(i)], "line_user": format!("U{i:032x}"), "consent": {"line": true, "location": true}, "attributes": {"name": format!("Shopper {i}")}});
        let cloud = if i % 2 == 0 { a } else { b };
        let c = cloud.add_customer(body).await?;
        ids.push(c["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(ids)
}

/// The shoppers are heard in the store by `gw`, round after round (30 s of `clock`'s shared
/// clock each), long enough to enter a visit.
async fn hear_shoppers(gw: &mut MqttGateway, clock: &CloudUnderTest) -> anyhow::Result<()> {
    let mut seq = 0;
    for _ in 0..8 {
        let now = clock.clock_now();
        let events: Vec<PresenceEvent> = (0..SHOPPERS)
            .map(|i| {
                seq += 1;
                PresenceEvent::Stay(Sighting {
                    seq,
                    ts: now,
                    beacon: beacon(i).parse().unwrap(),
                    rssi: -60.0,
                    distance_m: 2.0,
                    seen_s: 30.0,
                })
            })
            .collect();
        send_events_until_acked(gw, Epoch(4), events).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leases_off_two_instances_running_every_stage_decide_and_send_once(
) -> anyhow::Result<()> {
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    pg.create_database("unleased").map_err(anyhow::Error::msg)?;
    let db = (pg.url("unleased"), pg.password().to_owned());
    let g1 = Creds::new("s1", "g1")?;
    let broker = broker_for(std::slice::from_ref(&g1))?;
    let line = FakeLine::start("127.0.0.1:0".parse()?, LINE_TOKEN).await?;
    let origin = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut clouds = Vec::new();
    for name in ["a", "b"] {
        let outbound = Outbound {
            line: format!(
                "api_base = \"{}\"\nchannel_access_token = \"{LINE_TOKEN}\"",
                line.base_url()
            ),
            sections: "leases = false\n".into(),
            ..Outbound::default()
        };
        let mut cloud = instance_with(
            name,
            std::slice::from_ref(&g1),
            broker.port,
            (&db.0, &db.1),
            outbound,
        )?;
        cloud.share_clock(&origin, 60, &origin);
        clouds.push(cloud);
    }
    let a = &clouds[0];
    a.import_site()?;
    for cloud in &mut clouds {
        cloud.start()?;
    }
    let (a, b) = (&clouds[0], &clouds[1]);
    add_shoppers(a, b).await?;
    let today = chrono::Utc::now().date_naive();
    let campaign = json!({
        "name": "Welcome", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
        "schedule": {"from": (today - chrono::Days::new(2)).to_string(), "to": (today + chrono::Days::new(2)).to_string(), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        "caps": {"per_customer": 1, "period_days": 1}, "budget": 1000, "offer_ttl_minutes": 600,
        "channels": ["line"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome {name} to {store}: {coupon}"}}]
    });
    let (status, body) = b
        .call(
            Method::PUT,
            "/v1/admin/campaigns/welcome",
            Some(campaign),
            Some(ADMIN_TOKEN),
        )
        .await?;
    anyhow::ensure!(status == 201, "{body}");
    let mut gw = MqttGateway::connect(broker.port, &g1, &g1.password).await?;
    hear_shoppers(&mut gw, a).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let deliveries = loop {
        let d = a.admin("/v1/admin/deliveries").await?["items"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if d.len() >= SHOPPERS && d.iter().all(|d| d["status"] == "delivered") {
            break d;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not settle: {d:#?}\n{}\n{}",
            a.log(),
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // One decision and one delivery per shopper, each sent once.
    assert_eq!(deliveries.len(), SHOPPERS, "{deliveries:#?}");
    let keys: std::collections::BTreeSet<&str> = deliveries
        .iter()
        .map(|d| d["trigger_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), SHOPPERS);
    // LINE accepted one push per shopper, each under its delivery's retry key (a request
    // repeated after a timeout would be answered 409 under the same key, never accepted twice).
    let accepted = line.accepted();
    let retry_keys: std::collections::BTreeSet<String> = accepted
        .iter()
        .filter_map(|a| a.retry_key.clone())
        .collect();
    assert_eq!(accepted.len(), SHOPPERS, "one accepted push per shopper");
    assert_eq!(retry_keys.len(), SHOPPERS, "each under its own retry key");
    let delivered: std::collections::BTreeSet<String> = deliveries
        .iter()
        .filter_map(|d| d["retry_key"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(retry_keys, delivered);
    // Both instances ran every partition of both stages (whichever committed a step first
    // wrote it; the other's commit conflicted and read again).
    for cloud in [a, b] {
        assert_eq!(held(cloud, "visits").await?, 8);
        assert_eq!(held(cloud, "decide").await?, 8);
    }
    for cloud in &mut clouds {
        cloud.stop()?;
    }
    Ok(())
}

/// A customer's erasure asked of either instance is done whole: the visit stage's part by
/// whichever instance runs the customer's partition (asked through the database), the rest by
/// the instance asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_asked_of_either_instance_is_done_by_the_partitions_holder() -> anyhow::Result<()>
{
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    pg.create_database("erasures").map_err(anyhow::Error::msg)?;
    let db = (pg.url("erasures"), pg.password().to_owned());
    let g1 = Creds::new("s1", "g1")?;
    let broker = broker_for(std::slice::from_ref(&g1))?;
    let origin = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut clouds = Vec::new();
    for name in ["a", "b"] {
        let mut cloud = instance(name, std::slice::from_ref(&g1), broker.port, (&db.0, &db.1))?;
        cloud.share_clock(&origin, 60, &origin);
        clouds.push(cloud);
    }
    clouds[0].import_site()?;
    for cloud in &mut clouds {
        cloud.start()?;
    }
    let (a, b) = (&clouds[0], &clouds[1]);
    until_held(&[a, b], Duration::from_secs(20), |n| n == [4, 4]).await?;
    let ids = add_shoppers(a, b).await?;
    let mut gw = MqttGateway::connect(broker.port, &g1, &g1.password).await?;
    hear_shoppers(&mut gw, a).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for id in &ids {
        while a.admin(&format!("/v1/admin/visits?customer={id}")).await?["items"]
            .as_array()
            .is_none_or(Vec::is_empty)
        {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "no visit of {id}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Each asked of one instance in turn: with four partitions each, some are run by the
    // other.
    for (i, id) in ids.iter().enumerate() {
        let (asked, other) = if i % 2 == 0 { (a, b) } else { (b, a) };
        let path = format!("/v1/admin/customers/{id}");
        let (status, receipt) = asked
            .call(Method::DELETE, &path, None, Some(ADMIN_TOKEN))
            .await?;
        assert_eq!(status, 200, "{receipt}");
        assert!(
            receipt["visits"]["visits"].as_u64() > Some(0),
            "{receipt:#}"
        );
        for cloud in [asked, other] {
            let (status, _) = cloud
                .call(Method::GET, &path, None, Some(ADMIN_TOKEN))
                .await?;
            assert_eq!(status, 404);
            let visits = cloud
                .admin(&format!("/v1/admin/visits?customer={id}"))
                .await?;
            assert_eq!(visits["items"], json!([]), "{visits:#}");
        }
    }
    for cloud in &mut clouds {
        cloud.stop()?;
    }
    Ok(())
}

/// One gateway's epoch shared out between two instances, then a new epoch: the old one ends
/// with every seq counted (each instance's view of the epoch is read again when the other
/// wrote it), whichever instance sees the new epoch first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_epoch_shared_by_two_instances_ends_with_nothing_missing() -> anyhow::Result<()> {
    let Some(pg) = omo_tests::postgres::cluster()? else {
        return Ok(());
    };
    pg.create_database("epochs").map_err(anyhow::Error::msg)?;
    let db = (pg.url("epochs"), pg.password().to_owned());
    let g1 = Creds::new("s1", "g1")?;
    let broker = broker_for(std::slice::from_ref(&g1))?;
    let mut a = instance("a", std::slice::from_ref(&g1), broker.port, (&db.0, &db.1))?;
    let mut b = instance("b", std::slice::from_ref(&g1), broker.port, (&db.0, &db.1))?;
    a.import_site()?;
    a.start()?;
    b.start()?;
    let mut gw = MqttGateway::connect(broker.port, &g1, &g1.password).await?;
    for first in (1..=200).step_by(BATCH as usize) {
        send_until_acked(&mut gw, Epoch(7), first..=first + BATCH - 1).await?;
    }
    for cloud in [&a, &b] {
        let text = cloud.metrics().await?;
        let stored = metric(&text, "omo_ingest_events_total", &["source=\"gateway\""]);
        assert!(stored > 0.0, "an instance stored nothing:\n{text}");
    }
    send_until_acked(&mut gw, Epoch(8), 1..=BATCH).await?;
    a.wait_stored("g1", 200 + BATCH).await?;
    let epochs = a.admin("/v1/admin/gateways/g1").await?["epochs"].clone();
    let old = epochs
        .as_array()
        .and_then(|e| e.iter().find(|e| e["epoch"] == "00000007"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(old["last_seq"], 200, "{epochs:#}");
    assert_eq!(old["missing"], 0, "{epochs:#}");
    assert_eq!(old["ended"]["last_seq"], 200, "{epochs:#}");
    assert_eq!(old["ended"]["missing"], 0, "{epochs:#}");
    a.stop()?;
    b.stop()?;
    Ok(())
}
