//! Failover under two instances (issue 32): PostgreSQL as a primary and a synchronous streaming
//! replica managed by Patroni with etcd, on loopback; two `omo-cloud run` instances whose URL
//! names both nodes with `target_session_attrs=read-write`. The primary's machine dies
//! mid-stream (its Patroni and PostgreSQL killed with SIGKILL): the replica is promoted once
//! the leader key runs out, the instances follow it, and nothing they acknowledged is lost —
//! every seq stored once, each shopper's offer sent once. Runs where Patroni and etcd are
//! installed (Debian: `patroni`, `etcd-server`); CI requires it (`OMO_PATRONI_TESTS=required`).

use std::time::{Duration, Instant};

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
    pair.hear_shoppers(&mut gw, 0..3).await?;

    let old = db.leader().await.expect("a leader");
    db.kill(&old)?;
    let killed = Instant::now();
    // The next round is acknowledged once the instances write to the promoted replica (the
    // gateway resends it until then).
    pair.hear_shoppers(&mut gw, 3..4).await?;
    let acked_after = killed.elapsed();
    let members = db
        .until(Duration::from_secs(30), "a new leader", |m| {
            m.iter()
                .any(|m| m["role"] == "leader" && m["name"] != old.as_str())
        })
        .await?;
    eprintln!("failover: acks again {acked_after:?} after the primary died; members {members:?}");
    pair.hear_shoppers(&mut gw, 4..8).await?;

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
