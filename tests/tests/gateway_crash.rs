//! Crash tests at named points (DESIGN.md: the `fail` crate, compiled in by the `failpoints`
//! feature that this crate turns on): the gateway aborts exactly there — after writing events
//! but before flushing them, after flushing but before publishing, after publishing but before
//! the ack, after settling an ack but before that is flushed — and is started again on the same
//! data dir. Each test checks that its failpoint fired, then that the cloud ends up with every
//! seq the gateway wrote, each stored once, no gap, and an empty outbox.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use omo_tests::scenario::{
    broker_and_cloud, check_no_gaps, check_nothing_missing, drained, wait_until, write_replay,
    GatewayUnderTest, Visit,
};
use omo_tests::BrokerKind;

async fn crash_at(failpoint: &str, after: u32) -> anyhow::Result<()> {
    let gut = GatewayUnderTest::new("s1", "g1", 30)?;
    let (broker, cloud) = broker_and_cloud(&gut, BrokerKind::Mosquitto).await?;
    let visits: Vec<Visit> = (0..6)
        .map(|i| Visit {
            beacon: i + 1,
            from_s: i64::from(i) * 60,
            to_s: i64::from(i) * 60 + 300,
        })
        .collect();
    let replay = gut.dir.path().join("visits.jsonl");
    write_replay(&replay, &visits)?;
    let config = gut.write_config(broker.port, &replay)?;
    let spec = format!("{failpoint}={after}*off->return");
    let mut gw = gut.start_with_env(&config, &[("FAILPOINTS", &spec)])?;
    let status = gw.wait_exit(Duration::from_secs(60))?;
    let log = gw.log_text();
    assert!(
        log.contains(&format!("failpoint {failpoint} fired")),
        "the failpoint fired:\n{log}"
    );
    assert_eq!(
        status.signal(),
        Some(6),
        "aborted (SIGABRT), not a clean exit: {status:?}"
    );

    // Started again on the same data dir, without failpoints, with a short visit to finish.
    let rest = gut.dir.path().join("after.jsonl");
    write_replay(
        &rest,
        &[Visit {
            beacon: 9,
            from_s: 0,
            to_s: 120,
        }],
    )?;
    let config = gut.write_config(broker.port, &rest)?;
    let mut gw = gut.start(&config)?;
    let ctx = || format!("gateway log:\n{}", gw.log_text());
    wait_until(
        Duration::from_secs(60),
        "the replay to finish",
        || gw.log_text().contains("replay finished"),
        ctx,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    wait_until(
        Duration::from_secs(60),
        "the outbox to drain",
        || cloud.with(|s| drained(s, "g1")),
        ctx,
    )
    .await?;
    cloud.with(|seen| -> anyhow::Result<()> {
        let epochs = check_no_gaps(seen, "g1")?;
        assert_eq!(epochs.len(), 1, "same data dir, same epoch: {epochs:?}");
        check_nothing_missing(seen, "g1", &mut gw)
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_push_before_flush() -> anyhow::Result<()> {
    crash_at("outbox.after_push_before_flush", 8).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_flush_before_publish() -> anyhow::Result<()> {
    crash_at("outbox.after_flush_before_publish", 8).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_publish_before_ack() -> anyhow::Result<()> {
    crash_at("uplink.after_publish_before_ack", 6).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_after_settle_before_flush() -> anyhow::Result<()> {
    crash_at("outbox.after_settle_before_flush", 6).await
}
