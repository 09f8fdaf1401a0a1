//! A gateway's clean stop and a returning broker, over the real binaries at ×60: a gateway
//! stopped with SIGTERM and started on a new disk ends its old epoch clean (its `offline`
//! heartbeat is the last the broker hears of it: no reconnect, no last will), on Mosquitto
//! and on the embedded broker; and the cloud reads a Mosquitto that was down for 20 s again
//! within 3 s of its return, losing nothing. Apart from `system.rs`, so its tests do not
//! load the machine while those run.

use std::time::Duration;

use anyhow::Context;
use omo_tests::cloud::metric;
use omo_tests::scenario::stop_line;
use omo_tests::system::{gateway_zones, strip_ansi, visits, Layout, System};
use serde_json::json;

/// Stops `gw` with SIGTERM once its outbox is empty, replaces its disk and starts it again:
/// the cloud stored every seq of the old epoch and ends it clean (the stop's `offline`
/// heartbeat was the last thing it heard of that gateway, no last will after it), with no
/// warning; behind Mosquitto, the broker saw no connection from the gateway after its
/// DISCONNECT.
async fn clean_stop_then_new_disk(sys: &mut System, gw: &str) -> anyhow::Result<()> {
    sys.wait_settled(Duration::from_secs(90)).await?;
    let (epoch, last) = sys.gateway(gw).stop()?;
    let log = sys.gateway(gw).log();
    let stopped = stop_line(&log).unwrap_or_default();
    assert!(stopped.contains("outbox_depth=0"), "{stopped}");
    sys.check_epoch_complete(gw, &epoch, last).await?;
    // What the broker saw until a while after the process ended: a reconnect would be in it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let broker_log = sys.broker.as_ref().map(|b| b.log_text());
    let (old_epoch, _) = sys.gateway(gw).replace_disk()?;
    assert_eq!(old_epoch, epoch);
    sys.gateway(gw).start()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let epochs = sys.epochs(gw).await?;
        if let Some(ended) = epochs.get(&epoch).map(|e| &e["ended"]) {
            if ended.is_object() {
                break ended.clone();
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{gw}: the old epoch {epoch} did not end after the new disk's start: {epochs:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(ended["clean"], json!(true), "{ended}");
    assert_eq!(ended["last_seq"], json!(last), "{ended}");
    assert_eq!(ended["outstanding_at_least"], json!(0), "{ended}");
    let log = sys.cloud.log();
    assert!(
        !log.contains("gateway epoch ended with events outstanding")
            && log.contains("gateway epoch ended cleanly"),
        "{log}"
    );
    if let Some(broker_log) = broker_log {
        let after = broker_log
            .rfind(&format!("Received DISCONNECT from {gw}"))
            .map(|at| &broker_log[at..])
            .with_context(|| format!("no DISCONNECT from {gw} in the broker log:\n{broker_log}"))?;
        assert!(
            !after.contains(&format!(" as {gw} ")),
            "{gw} connected again after its DISCONNECT:\n{after}"
        );
    }
    Ok(())
}

/// Gateway g1 in store s1 (its gateway zone) at ×60, with customers 1-3 in the store for the
/// first `until_s` clock seconds; behind Mosquitto or the cloud's embedded broker.
fn one_gateway(until_s: i64, mosquitto: bool) -> Layout {
    Layout {
        gateways: vec![("s1", "g1", 0, visits(1..=3, 0, until_s))],
        site: gateway_zones(&[("s1", "g1")]),
        mosquitto,
        speed: 60,
    }
}

/// Behind Mosquitto at ×60: the broker stops for 20 s while a gateway has customers in the
/// store; the cloud subscribes again within 3 s of its return (read from the broker's log),
/// logs the outage once with its length, counts its attempts, and loses nothing. Then the
/// gateway stops cleanly and comes back on a new disk: its old epoch ends clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_broker_is_read_again_at_once_and_a_clean_stop_ends_clean() -> anyhow::Result<()>
{
    let mut sys = System::build(one_gateway(1800, true)).await?;
    sys.start_gateways()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let broker = sys.broker.as_mut().expect("mosquitto");
    broker.stop();
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before = broker.log_text().len();
    broker.restart()?;
    let back = std::time::Instant::now();
    let subscribed = "Received SUBSCRIBE from omo-cloud-test";
    while !broker.log_text()[before..].contains(subscribed) {
        anyhow::ensure!(
            back.elapsed() < Duration::from_secs(30),
            "the cloud did not subscribe again:\n{}",
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = back.elapsed();
    eprintln!("the cloud subscribed again {took:?} after the broker's return");
    assert!(took < Duration::from_secs(3), "{took:?}");
    let log = strip_ansi(&sys.cloud.log());
    let outages: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connected to the external broker again"))
        .collect();
    assert_eq!(outages.len(), 1, "{log}");
    let outage_ms: u64 = outages[0]
        .split("outage_ms=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| outages[0].to_owned())?;
    assert!((19_000..60_000).contains(&outage_ms), "{}", outages[0]);
    assert_eq!(
        log.matches("external broker connection lost").count(),
        1,
        "{log}"
    );
    let metrics = sys.cloud.metrics().await?;
    assert!(
        metric(&metrics, "omo_mqtt_reconnect_attempts_total", &[]) >= 2.0,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "omo_mqtt_outages_total", &[]), 1.0);
    assert_eq!(metric(&metrics, "omo_mqtt_connected", &[]), 1.0);
    clean_stop_then_new_disk(&mut sys, "g1").await
}

/// The same clean stop and new disk on the cloud's embedded broker at ×60.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_on_the_embedded_broker_ends_clean() -> anyhow::Result<()> {
    let mut sys = System::build(one_gateway(300, false)).await?;
    sys.start_gateways()?;
    clean_stop_then_new_disk(&mut sys, "g1").await
}
