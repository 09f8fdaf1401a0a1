//! Several `omo-cloud run` instances on one PostgreSQL database and one Mosquitto broker with
//! a shared subscription, for the tests of issue 32: instances on a throwaway cluster (or any
//! database's URL), the broker with the generated ACL, shoppers heard through one gateway
//! whose batches the broker shares out, and the checks those tests share (every offer sent
//! once, partitions held, stages caught up).

use std::time::Duration;

use crate::cloud::{metric, sightings, CloudUnderTest, Creds, External, MqttGateway, Outbound};
use crate::{Broker, BrokerKind};
use omo_cloud::store::postgres::cluster::LocalCluster;
use omo_device_config::broker_auth::broker_files;
use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::SeqRanges;
use omo_sim::fake_line::FakeLine;
use serde_json::json;

/// Events each gateway sends, in batches of [`BATCH`].
pub const EVENTS: u64 = 400;
pub const BATCH: u64 = 20;
/// The instances' lease time, seconds (the smallest allowed: the test waits out one).
pub const LEASE_S: u64 = 3;

/// Sends `seqs` as one batch until an ack covers them all, as a gateway resends what is not
/// acked (an instance killed with the batch in flight never acks it).
pub async fn send_until_acked(
    gw: &mut MqttGateway,
    epoch: Epoch,
    seqs: std::ops::RangeInclusive<u64>,
) -> anyhow::Result<()> {
    send_events_until_acked(gw, epoch, sightings(seqs, PresenceEvent::Stay)).await
}

/// Sends `events` as one batch until an ack covers their seqs.
pub async fn send_events_until_acked(
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
pub fn instance(
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
pub fn instance_with(
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
pub fn broker_for(gateways: &[Creds]) -> anyhow::Result<Broker> {
    let (lines, acl) = broker_files(
        ("omo-cloud", "cloud-password"),
        gateways
            .iter()
            .map(|g| (&g.store, &g.gateway, g.password.as_str())),
    );
    Broker::start(BrokerKind::Mosquitto, &lines, &acl)
}

/// How many partitions of `stage` `cloud` holds, as its `/metrics` says.
pub async fn held(cloud: &CloudUnderTest, stage: &str) -> anyhow::Result<u64> {
    let text = cloud.metrics().await?;
    Ok(metric(
        &text,
        "omo_partitions_held",
        &[&format!("stage=\"{stage}\"")],
    ) as u64)
}

/// Waits until `check` holds of the partitions the instances hold (each instance's count of
/// visit partitions, in order).
pub async fn until_held(
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

/// The fake LINE's channel access token.
pub const LINE_TOKEN: &str = "line-channel-access-token";
/// Shoppers enrolled: enough that both halves of the partitions hold some.
pub const SHOPPERS: usize = 12;
/// The instances' clock runs so many times faster than the wall (a round of sightings is
/// 30 s of it); slow enough that a partition taken over after its lease time decides its
/// enters within the 600 s a trigger may be late.
pub const SPEED: u32 = 30;

/// The beacon shopper `i` carries.
pub fn beacon(i: usize) -> String {
    format!("line:{:010x}", 0xb000 + i)
}

/// Two instances `a` and `b` on one database with one gateway, a fake LINE and one shared
/// clock; the site imported, neither started.
pub struct Pair {
    /// The throwaway cluster the database is on, when [`Pair::new`] started it.
    pub pg: Option<LocalCluster>,
    pub broker: Broker,
    pub line: FakeLine,
    pub g1: Creds,
    pub clouds: Vec<CloudUnderTest>,
}

impl Pair {
    /// On database `db` of a throwaway cluster; `None` when PostgreSQL cannot be started here
    /// (and is not required). `cluster`: more lines of the instances' `[cluster]` section.
    pub async fn new(db: &str, cluster: &str) -> anyhow::Result<Option<Pair>> {
        let Some(pg) = crate::postgres::cluster()? else {
            return Ok(None);
        };
        pg.create_database(db).map_err(anyhow::Error::msg)?;
        let mut pair = Pair::on((&pg.url(db), pg.password()), cluster).await?;
        pair.pg = Some(pg);
        Ok(Some(pair))
    }

    /// On the empty database at `url`, logged in with `password`.
    pub async fn on((url, password): (&str, &str), cluster: &str) -> anyhow::Result<Pair> {
        let g1 = Creds::new("s1", "g1")?;
        let broker = broker_for(std::slice::from_ref(&g1))?;
        let line = FakeLine::start("127.0.0.1:0".parse()?, LINE_TOKEN).await?;
        let now = chrono::Utc::now();
        let origin = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // The clock starts at noon in Tokyo (the stores' zone) today, whatever the wall time:
        // a test of a few minutes at [`SPEED`] must not pass the stores' midnight, where the
        // welcome offer's daily cap starts afresh and a shopper could be offered twice.
        let noon = now
            .date_naive()
            .and_hms_opt(3, 0, 0)
            .expect("a time")
            .and_utc();
        let start = noon.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
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
                (url, password),
                (outbound, cluster),
            )?;
            cloud.share_clock(&start, SPEED, &origin);
            clouds.push(cloud);
        }
        clouds[0].import_site()?;
        Ok(Pair {
            pg: None,
            broker,
            line,
            g1,
            clouds,
        })
    }

    pub fn a(&self) -> &CloudUnderTest {
        &self.clouds[0]
    }

    pub fn b(&self) -> &CloudUnderTest {
        &self.clouds[1]
    }

    /// Enrols [`SHOPPERS`] customers with LINE consent, half through each instance, and
    /// launches a welcome offer on entering the store; answers the customers' ids.
    pub async fn welcome(&self) -> anyhow::Result<Vec<String>> {
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
    pub async fn hear_shoppers(
        &self,
        gw: &mut MqttGateway,
        rounds: std::ops::Range<u64>,
    ) -> anyhow::Result<()> {
        for round in rounds {
            send_events_until_acked(gw, Epoch(4), self.round(round)).await?;
            tokio::time::sleep(Duration::from_millis(30_000 / u64::from(SPEED))).await;
        }
        Ok(())
    }

    /// Round `round` of sightings of every shopper, at the clock's now (seqs numbered on from
    /// the rounds before, in the gateway's epoch 4).
    pub fn round(&self, round: u64) -> Vec<PresenceEvent> {
        let now = self.a().clock_now();
        (0..SHOPPERS)
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
            .collect()
    }

    /// Waits until `cloud` lists a delivered offer for each shopper, then checks that each
    /// trigger was decided once and LINE accepted one push per shopper, each under its
    /// delivery's retry key (a request repeated after a timeout is answered 409 under the same
    /// key, never accepted twice).
    pub async fn offers_sent_once(&self, cloud: &CloudUnderTest) -> anyhow::Result<()> {
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
    pub async fn shared_out(&self) -> anyhow::Result<MqttGateway> {
        until_held(&[self.a(), self.b()], Duration::from_secs(20), |n| {
            n == [4, 4]
        })
        .await?;
        self.welcome().await?;
        MqttGateway::connect(self.broker.port, &self.g1, &self.g1.password).await
    }

    pub fn stop(&mut self) -> anyhow::Result<()> {
        for cloud in &mut self.clouds {
            cloud.stop()?;
        }
        Ok(())
    }
}

/// Waits until `cloud`'s partitions of `stage` have read their input to its end.
pub async fn until_caught_up(cloud: &CloudUnderTest, stage: &str) -> anyhow::Result<()> {
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
