//! Failover under two instances (issue 32): PostgreSQL as a primary and a synchronous streaming
//! replica managed by Patroni with etcd, on loopback; two `omo-cloud run` instances whose URL
//! names both nodes with `target_session_attrs=read-write`. The primary dies mid-stream, a
//! gateway batch in flight (its Patroni and PostgreSQL killed with SIGKILL, so connections to
//! it are refused at once; a machine that goes silent instead is not simulated): the replica is
//! promoted once the leader key runs out, the instances follow it, and nothing they
//! acknowledged is lost — every seq stored once; the shoppers' offers, all decided after the
//! failover, each sent once. Runs where Patroni and etcd are
//! installed (Debian: `patroni`, `etcd-server`); CI requires it (`OMO_PATRONI_TESTS=required`).

use std::time::{Duration, Instant};

use omo_device_config::payload::Epoch;
use omo_device_config::SeqRanges;
use omo_tests::instances::{until_caught_up, Pair, SHOPPERS};
use omo_tests::patroni::Patroni;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instances_follow_a_promoted_replica_and_lose_nothing_acknowledged(
) -> anyhow::Result<()> {
    let Some(mut db) = Patroni::start().await? else {
        return Ok(());
    };
    db.create_database("omo").await?;
    let mut pair = Pair::on((&db.url("omo"), db.password()), "").await?;
    for cloud in &mut pair.clouds {
        cloud.start()?;
    }
    let mut gw = pair.shared_out().await?;
    // One round before: the shoppers, the campaign and these sightings are acknowledged on
    // the first primary; no visit is long enough to enter yet, so every offer is decided
    // after the failover.
    pair.hear_shoppers(&mut gw, 0..1).await?;

    // The next round is in flight when the primary dies.
    gw.publish_presence(Epoch(4), pair.round(1), SeqRanges::new())
        .await?;
    let old = db.leader().await.expect("a leader");
    db.kill(&old).await?;
    let killed = Instant::now();
    // It is acknowledged once the instances have stored it, on the promoted replica (or, if it
    // was stored on the primary before it died, again from what they know).
    pair.hear_shoppers(&mut gw, 1..2).await?;
    let acked_after = killed.elapsed();
    let members = db
        .until(Duration::from_secs(30), "a new leader", |m| {
            m.iter()
                .any(|m| m["role"] == "leader" && m["name"] != old.as_str())
        })
        .await?;
    let new = members
        .iter()
        .find(|m| m["role"] == "leader")
        .and_then(|m| m["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    // Patroni names the leader as it promotes it: wait for the promotion itself.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !db.is_primary(&new).await.unwrap_or(false) {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{new} is not a primary\n{}",
            db.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "failover: {new} a primary {:?} after the primary died; the batch in flight acked after {acked_after:?}",
        killed.elapsed()
    );
    pair.hear_shoppers(&mut gw, 2..8).await?;

    pair.offers_sent_once(pair.a()).await?;
    for cloud in &pair.clouds {
        cloud.wait_stored("g1", 8 * SHOPPERS as u64).await?;
        for stage in ["visits", "decide"] {
            until_caught_up(cloud, stage).await?;
        }
    }
    for cloud in &mut pair.clouds {
        assert!(!cloud.process().exited(), "{}", cloud.log());
    }
    pair.stop()?;
    db.stop();
    Ok(())
}
