//! Several `omo-cloud run` instances on one PostgreSQL database and one Mosquitto broker with
//! a shared subscription (issue 32): the gateways' batches go to whichever instance the broker
//! picks, one instance dies mid-stream — killed, or aborted at `ingest.after_flush_before_ack`
//! or `decide.after_commit_before_send` — and every seq of every epoch is stored once, each
//! shopper's offer sent once; the survivor takes over every partition within its lease time,
//! and the dead instance, started again, takes back about half. With the leases off, both
//! instances run every stage and every partition, and still decide each trigger once and send
//! each offer once. An erasure asked of either instance is done whole.

use std::time::Duration;

use omo_device_config::payload::Epoch;
use omo_device_config::SeqRanges;
use omo_tests::cloud::{metric, CloudUnderTest, Creds, MqttGateway, ADMIN_TOKEN};
use omo_tests::instances::{
    broker_for, held, instance, send_until_acked, until_caught_up, until_held, Pair, BATCH, EVENTS,
    LEASE_S, SHOPPERS,
};
use reqwest::Method;
use serde_json::json;

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
    tokio::task::block_in_place(|| pair.pg.as_mut().expect("a local cluster").pause())
        .map_err(anyhow::Error::msg)?;
    let round = pair.round(4);
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
    tokio::task::block_in_place(|| pair.pg.as_mut().expect("a local cluster").resume())
        .map_err(anyhow::Error::msg)?;

    // The gateway resends what was not acknowledged, and goes on.
    pair.hear_shoppers(&mut gw, 4..8).await?;
    pair.offers_sent_once(pair.a()).await?;
    for cloud in &mut pair.clouds {
        cloud.wait_stored("g1", 8 * SHOPPERS as u64).await?;
        assert!(!cloud.process().exited(), "{}", cloud.log());
    }
    pair.stop()
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
