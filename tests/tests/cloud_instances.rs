//! Several `omo-cloud run` instances on one PostgreSQL database and one Mosquitto broker with
//! a shared subscription (issue 32): the gateways' batches go to whichever instance the broker
//! picks, one instance dies mid-stream — killed, or aborted at `ingest.after_flush_before_ack`
//! or `decide.after_commit_before_send` — and every seq of every epoch is stored once, each
//! shopper's offer sent once; the survivor takes over every partition within its lease time,
//! and the dead instance, started again, takes back about half. With the leases off, both
//! instances run every stage and every partition, and still decide each trigger once and send
//! each offer once. An erasure asked of either instance is done whole.

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
        (Outbound::default(), ""),
    )
}

/// An instance on the shared database and broker, with `outbound` and more lines of its
/// `[cluster]` section.
fn instance_with(
    name: &str,
    gateways: &[Creds],
    broker_port: u16,
    (url, password): (&str, &str),
    (outbound, cluster): (Outbound, &str),
) -> anyhow::Result<CloudUnderTest> {
    let external = External {
        url: format!("mqtt://127.0.0.1:{broker_port}"),
        username: "omo-cloud".into(),
        password: "cloud-password".into(),
        shared: Some((format!("omo-cloud-{name}"), "omo".into())),
    };
    let mut cloud = CloudUnderTest::empty(gateways.to_vec(), Some(external))?;
    let cluster = format!("[cluster]\ninstance = \"{name}\"\nlease_s = {LEASE_S}\n{cluster}");
    cloud.set_outbound(Outbound {
        sections: format!("{}\n{cluster}", outbound.sections),
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
    until_caught_up(&a, "visits").await?;
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
/// Shoppers enrolled: enough that both halves of the partitions hold some.
const SHOPPERS: usize = 12;
/// The instances' clock runs so many times faster than the wall (a round of sightings is
/// 30 s of it); slow enough that a partition taken over after its lease time decides its
/// enters within the 600 s a trigger may be late.
const SPEED: u32 = 30;

/// The beacon shopper `i` carries.
fn beacon(i: usize) -> String {
    format!("line:{:010x}", 0xb000 + i)
}

/// Two instances `a` and `b` on a fresh database with one gateway, a fake LINE and one shared
/// clock; the site imported, neither started.
struct Pair {
    pg: omo_cloud::store::postgres::cluster::LocalCluster,
    broker: Broker,
    line: FakeLine,
    g1: Creds,
    clouds: Vec<CloudUnderTest>,
}

impl Pair {
    /// `None` when PostgreSQL cannot be started here (and is not required); `cluster`: more
    /// lines of the instances' `[cluster]` section.
    async fn new(db: &str, cluster: &str) -> anyhow::Result<Option<Pair>> {
        let Some(pg) = omo_tests::postgres::cluster()? else {
            return Ok(None);
        };
        pg.create_database(db).map_err(anyhow::Error::msg)?;
        let url = (pg.url(db), pg.password().to_owned());
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
                ..Outbound::default()
            };
            let mut cloud = instance_with(
                name,
                std::slice::from_ref(&g1),
                broker.port,
                (&url.0, &url.1),
                (outbound, cluster),
            )?;
            cloud.share_clock(&origin, SPEED, &origin);
            clouds.push(cloud);
        }
        clouds[0].import_site()?;
        Ok(Some(Pair {
            pg,
            broker,
            line,
            g1,
            clouds,
        }))
    }

    fn a(&self) -> &CloudUnderTest {
        &self.clouds[0]
    }

    fn b(&self) -> &CloudUnderTest {
        &self.clouds[1]
    }

    /// Enrols [`SHOPPERS`] customers with LINE consent, half through each instance, and
    /// launches a welcome offer on entering the store; answers the customers' ids.
    async fn welcome(&self) -> anyhow::Result<Vec<String>> {
        let mut ids = Vec::new();
        for i in 0..SHOPPERS {
            let body = json!({"beacons": [beacon(i)], "line_user": format!("U{i:032x}"), "consent": {"line": true, "location": true}, "attributes": {"name": format!("Shopper {i}")}});
            let c = self.clouds[i % 2].add_customer(body).await?;
            ids.push(c["id"].as_str().unwrap_or_default().to_owned());
        }
        let today = chrono::Utc::now().date_naive();
        let campaign = json!({
            "name": "Welcome", "trigger": {"kind": "enter"}, "places": {"stores": ["s1"]},
            "schedule": {"from": (today - chrono::Days::new(2)).to_string(), "to": (today + chrono::Days::new(2)).to_string(), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            "caps": {"per_customer": 1, "period_days": 1}, "budget": 1000, "offer_ttl_minutes": 600,
            "channels": ["line"],
            "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome {name} to {store}: {coupon}"}}]
        });
        self.b().put_campaign("welcome", campaign).await?;
        Ok(ids)
    }

    /// The shoppers are heard in the store by the gateway `gw`, `rounds` of 30 s of the shared
    /// clock each (eight make a visit long enough to enter).
    async fn hear_shoppers(
        &self,
        gw: &mut MqttGateway,
        rounds: std::ops::Range<u64>,
    ) -> anyhow::Result<()> {
        for round in rounds {
            let now = self.a().clock_now();
            let events: Vec<PresenceEvent> = (0..SHOPPERS)
                .map(|i| {
                    PresenceEvent::Stay(Sighting {
                        seq: round * SHOPPERS as u64 + i as u64 + 1,
                        ts: now,
                        beacon: beacon(i).parse().unwrap(),
                        rssi: -60.0,
                        distance_m: 2.0,
                        seen_s: 30.0,
                    })
                })
                .collect();
            send_events_until_acked(gw, Epoch(4), events).await?;
            tokio::time::sleep(Duration::from_millis(30_000 / u64::from(SPEED))).await;
        }
        Ok(())
    }

    /// Waits until `cloud` lists a delivered offer for each shopper, then checks that each
    /// trigger was decided once and LINE accepted one push per shopper, each under its
    /// delivery's retry key (a request repeated after a timeout is answered 409 under the same
    /// key, never accepted twice).
    async fn offers_sent_once(&self, cloud: &CloudUnderTest) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let deliveries = loop {
            let d = cloud.admin("/v1/admin/deliveries").await?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if d.len() >= SHOPPERS && d.iter().all(|d| d["status"] == "delivered") {
                break d;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "deliveries did not settle: {d:#?}\n{}\n{}",
                self.a().log(),
                self.b().log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert_eq!(deliveries.len(), SHOPPERS, "{deliveries:#?}");
        let keys: std::collections::BTreeSet<&str> = deliveries
            .iter()
            .map(|d| d["trigger_key"].as_str().unwrap())
            .collect();
        assert_eq!(keys.len(), SHOPPERS);
        let accepted = self.line.accepted();
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
        Ok(())
    }

    /// Once both instances hold four partitions each: the shoppers and the welcome campaign,
    /// and the gateway connected.
    async fn shared_out(&self) -> anyhow::Result<MqttGateway> {
        until_held(&[self.a(), self.b()], Duration::from_secs(20), |n| {
            n == [4, 4]
        })
        .await?;
        self.welcome().await?;
        MqttGateway::connect(self.broker.port, &self.g1, &self.g1.password).await
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        for cloud in &mut self.clouds {
            cloud.stop()?;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leases_off_two_instances_running_every_stage_decide_and_send_once(
) -> anyhow::Result<()> {
    let Some(mut pair) = Pair::new("unleased", "leases = false\n").await? else {
        return Ok(());
    };
    for cloud in &mut pair.clouds {
        cloud.start()?;
    }
    pair.welcome().await?;
    let mut gw = MqttGateway::connect(pair.broker.port, &pair.g1, &pair.g1.password).await?;
    pair.hear_shoppers(&mut gw, 0..8).await?;
    pair.offers_sent_once(pair.a()).await?;
    // Both instances ran every partition of both stages (whichever committed a step first
    // wrote it; the other's commit conflicted and read again).
    for cloud in &pair.clouds {
        assert_eq!(held(cloud, "visits").await?, 8);
        assert_eq!(held(cloud, "decide").await?, 8);
    }
    pair.stop()
}

/// How the instance `b` dies mid-stream.
#[derive(Debug, Clone, Copy)]
enum Death {
    /// SIGKILL after some rounds.
    Killed,
    /// Aborted at a crash point the first time it passes it.
    At(&'static str),
}

/// A store day through two instances with offers, `b` dying mid-stream as `death` says: every
/// seq stored once, one offer per shopper sent once, every partition of both stages read to
/// its end by the survivor, which holds every lease within its lease time and a margin; `b`
/// started again takes back half and sends nothing twice.
async fn one_of_two_dies(death: Death, db: &str) -> anyhow::Result<()> {
    let Some(mut pair) = Pair::new(db, "").await? else {
        return Ok(());
    };
    pair.clouds[0].start()?;
    match death {
        Death::Killed => pair.clouds[1].start()?,
        Death::At(point) => {
            let failpoint = format!("{point}=return");
            pair.clouds[1].start_with_env(&[("FAILPOINTS", &failpoint)])?;
        }
    }
    let mut gw = pair.shared_out().await?;
    pair.hear_shoppers(&mut gw, 0..3).await?;
    if let Death::Killed = death {
        pair.clouds[1].process().kill()?;
    }
    pair.hear_shoppers(&mut gw, 3..8).await?;
    if let Death::At(point) = death {
        let b = &mut pair.clouds[1];
        tokio::task::block_in_place(|| b.process().wait_exit(Duration::from_secs(30)))?;
        let fired = format!("failpoint {point} fired");
        assert!(b.log().contains(&fired), "{}", b.log());
    }
    let a = pair.a();
    until_held(&[a], Duration::from_secs(LEASE_S * 3 + 10), |n| n == [8]).await?;
    pair.offers_sent_once(a).await?;
    a.wait_stored("g1", 8 * SHOPPERS as u64).await?;
    for stage in ["visits", "decide"] {
        until_caught_up(a, stage).await?;
    }
    // b started again takes back about half, and sends nothing again.
    pair.clouds[1].start()?;
    until_held(
        &[pair.a(), pair.b()],
        Duration::from_secs(LEASE_S * 3 + 20),
        |n| n == [4, 4],
    )
    .await?;
    pair.b().wait_stored("g1", 8 * SHOPPERS as u64).await?;
    until_caught_up(pair.b(), "decide").await?;
    assert_eq!(pair.line.accepted().len(), SHOPPERS);
    pair.stop()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_killed_mid_stream_loses_and_doubles_nothing() -> anyhow::Result<()> {
    one_of_two_dies(Death::Killed, "killed").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_aborted_after_storing_before_acking_loses_and_doubles_nothing(
) -> anyhow::Result<()> {
    one_of_two_dies(Death::At("ingest.after_flush_before_ack"), "unacked").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_instances_aborted_after_deciding_before_sending_sends_once(
) -> anyhow::Result<()> {
    one_of_two_dies(Death::At("decide.after_commit_before_send"), "unsent").await
}

/// PostgreSQL stopped for 20 s under two instances mid-stream: neither acknowledges what it
/// could not store (the gateway keeps it), an HTTP write answers 503 on both, neither crashes;
/// once it is back, the gateway's resends drain through both, each seq stored once, each offer
/// sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_under_two_instances_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let Some(mut pair) = Pair::new("outage", "").await? else {
        return Ok(());
    };
    for cloud in &mut pair.clouds {
        cloud.start()?;
    }
    let mut gw = pair.shared_out().await?;
    pair.hear_shoppers(&mut gw, 0..4).await?;

    let stopped = std::time::Instant::now();
    tokio::task::block_in_place(|| pair.pg.pause()).map_err(anyhow::Error::msg)?;
    let round: Vec<PresenceEvent> = (0..SHOPPERS)
        .map(|i| {
            PresenceEvent::Stay(Sighting {
                seq: 4 * SHOPPERS as u64 + i as u64 + 1,
                ts: pair.a().clock_now(),
                beacon: beacon(i).parse().unwrap(),
                rssi: -60.0,
                distance_m: 2.0,
                seen_s: 30.0,
            })
        })
        .collect();
    // Twice, so the shared subscription hands it to both instances.
    for _ in 0..2 {
        gw.publish_presence(Epoch(4), round.clone(), SeqRanges::new())
            .await?;
        assert!(
            gw.next_ack(Duration::from_secs(3)).await?.is_none(),
            "nothing is acknowledged while the database is down"
        );
    }
    for cloud in &pair.clouds {
        let body = json!({"member_id": "m-outage", "consent": {"location": true}});
        let (status, answer) = cloud
            .call(
                Method::POST,
                "/v1/admin/customers",
                Some(body),
                Some(ADMIN_TOKEN),
            )
            .await?;
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    }
    let outage = Duration::from_secs(20);
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    tokio::task::block_in_place(|| pair.pg.resume()).map_err(anyhow::Error::msg)?;

    // The gateway resends what was not acknowledged, and goes on.
    pair.hear_shoppers(&mut gw, 4..8).await?;
    pair.offers_sent_once(pair.a()).await?;
    for cloud in &mut pair.clouds {
        cloud.wait_stored("g1", 8 * SHOPPERS as u64).await?;
        assert!(!cloud.process().exited(), "{}", cloud.log());
    }
    pair.stop()
}

/// Waits until `cloud`'s partitions of `stage` have read their input to its end.
async fn until_caught_up(cloud: &CloudUnderTest, stage: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = cloud.metrics().await?;
        let lag = metric(
            &text,
            "omo_stage_lag_records",
            &[&format!("stage=\"{stage}\"")],
        );
        if lag == 0.0 {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{stage} stage lag {lag}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A customer's erasure asked of either instance is done whole: the visit stage's part by
/// whichever instance runs the customer's partition (asked through the database), the rest by
/// the instance asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_asked_of_either_instance_is_done_by_the_partitions_holder() -> anyhow::Result<()>
{
    let Some(mut pair) = Pair::new("erasures", "").await? else {
        return Ok(());
    };
    for cloud in &mut pair.clouds {
        cloud.start()?;
    }
    let (a, b) = (pair.a(), pair.b());
    until_held(&[a, b], Duration::from_secs(20), |n| n == [4, 4]).await?;
    let ids = pair.welcome().await?;
    let mut gw = MqttGateway::connect(pair.broker.port, &pair.g1, &pair.g1.password).await?;
    pair.hear_shoppers(&mut gw, 0..8).await?;
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
    pair.stop()
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
