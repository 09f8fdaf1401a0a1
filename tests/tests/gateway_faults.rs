//! The gateway's delivery promise under faults, against Mosquitto and against rumqttd (the
//! broker the cloud embeds, in its own process): broker outages, a SIGKILL during an outage, a
//! cloud that stops acknowledging, forged acks and configs, a fresh data dir, remote config,
//! refused credentials. Every event arrives at least once and is stored exactly once by id,
//! with no gap in seq, and the outbox drains once acks flow.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use omo_device_config::envelope::{seal, SigningKey};
use omo_device_config::payload::{PresenceAck, PresenceEvent};
use omo_device_config::{Channel, SeqRanges, Topic};
use omo_tests::cloud_stub::{CloudStub, Seen};
use omo_tests::scenario::{
    broker_and_cloud, check_no_gaps, check_nothing_missing, drained, hwid, wait_until,
    write_replay, GatewayUnderTest, Visit, CLOUD_PASSWORD, CLOUD_USER,
};
use omo_tests::{Broker, BrokerKind, Process};

const SPEED: u32 = 30;

/// `n` visits of 400 s, one starting every 100 s.
fn staggered(n: u8) -> Vec<Visit> {
    (0..n)
        .map(|i| Visit {
            beacon: i + 1,
            from_s: i64::from(i) * 100,
            to_s: i64::from(i) * 100 + 400,
        })
        .collect()
}

/// Beacon `n`'s transitions, in seq order.
fn kinds(seen: &Seen, n: u8) -> Vec<&'static str> {
    let id = format!("line:{}", hex::encode(hwid(n)));
    let mut events: Vec<&PresenceEvent> = seen.events.values().collect();
    events.sort_by_key(|e| e.seq());
    events
        .into_iter()
        .filter_map(|e| match e.as_sighting() {
            Some((k, s)) if s.beacon.to_string() == id => Some(match k {
                omo_device_config::payload::SightingKind::Enter => "enter",
                omo_device_config::payload::SightingKind::Stay => "stay",
                omo_device_config::payload::SightingKind::Exit => "exit",
            }),
            _ => None,
        })
        .collect()
}

struct Setup {
    broker: Broker,
    cloud: CloudStub,
    gut: GatewayUnderTest,
}

async fn setup(kind: BrokerKind) -> anyhow::Result<Setup> {
    let gut = GatewayUnderTest::new("s1", "g1", SPEED)?;
    let (broker, cloud) = broker_and_cloud(&gut, kind).await?;
    Ok(Setup { broker, cloud, gut })
}

impl Setup {
    fn context(&self, gw: &Process) -> String {
        let seen = self.cloud.with(|s| {
            format!(
                "events {} duplicates {} refused {}",
                s.events.len(),
                s.duplicates,
                s.refused
            )
        });
        format!(
            "{seen}\ngateway log:\n{}\nbroker log (tail):\n{}",
            gw.log_text(),
            tail(&self.broker.log_text())
        )
    }

    /// Writes a replay of `visits` and a config for it; returns (replay, config) paths.
    fn prepare(&self, visits: &[Visit]) -> anyhow::Result<(PathBuf, PathBuf)> {
        let replay = self.gut.dir.path().join("visits.jsonl");
        write_replay(&replay, visits)?;
        let config = self.gut.write_config(self.broker.port, &replay)?;
        Ok((replay, config))
    }

    /// Starts the gateway replaying `visits` and waits until the cloud has stored more than
    /// `events` events.
    async fn replay_until_events(
        &self,
        visits: &[Visit],
        events: usize,
    ) -> anyhow::Result<Process> {
        let (_, config) = self.prepare(visits)?;
        let gw = self.gut.start(&config)?;
        wait_until(
            Duration::from_secs(30),
            "first events",
            || self.cloud.with(|x| x.events.len() > events),
            || self.context(&gw),
        )
        .await?;
        Ok(gw)
    }

    /// Waits until the replay is over, everyone has left and the outbox is empty.
    async fn wait_done(&self, gw: &Process, timeout: Duration) -> anyhow::Result<()> {
        wait_until(
            timeout,
            "the replay to finish",
            || gw.log_text().contains("replay finished"),
            || self.context(gw),
        )
        .await?;
        // Exits fire 30 s (clock) after the last sighting: 1 s of wall time at ×30.
        tokio::time::sleep(Duration::from_secs(3)).await;
        wait_until(
            timeout,
            "the outbox to drain",
            || self.cloud.with(|s| drained(s, "g1")),
            || self.context(gw),
        )
        .await
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

async fn broker_outage(kind: BrokerKind) -> anyhow::Result<()> {
    let mut s = setup(kind).await?;
    let mut gw = s.replay_until_events(&staggered(16), 5).await?;
    s.broker.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    s.broker.restart()?;
    s.wait_done(&gw, Duration::from_secs(120)).await?;
    s.cloud.with(|seen| -> anyhow::Result<()> {
        let epochs = check_no_gaps(seen, "g1")?;
        assert_eq!(epochs.len(), 1, "{epochs:?}");
        for n in 1..=16 {
            let k = kinds(seen, n);
            assert_eq!(
                (k.first(), k.last()),
                (Some(&"enter"), Some(&"exit")),
                "beacon {n}: {k:?}"
            );
            assert_eq!(
                k.iter().filter(|x| **x == "enter").count(),
                1,
                "beacon {n}: {k:?}"
            );
        }
        Ok(())
    })?;
    s.cloud
        .with(|seen| check_nothing_missing(seen, "g1", &mut gw))?;
    Ok(())
}

async fn sigkill_during_outage(kind: BrokerKind) -> anyhow::Result<()> {
    let mut s = setup(kind).await?;
    let mut gw = s.replay_until_events(&staggered(8), 3).await?;
    s.broker.stop();
    // Events pile up in the outbox while the broker is away; then the power goes.
    tokio::time::sleep(Duration::from_secs(6)).await;
    gw.kill()?;
    let stored_before = s.cloud.with(|x| x.events.len());
    let second = s.gut.dir.path().join("after-restart.jsonl");
    write_replay(
        &second,
        &[Visit {
            beacon: 20,
            from_s: 0,
            to_s: 200,
        }],
    )?;
    let config = s.gut.write_config(s.broker.port, &second)?;
    let mut gw = s.gut.start(&config)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.broker.restart()?;
    s.wait_done(&gw, Duration::from_secs(120)).await?;
    s.cloud.with(|seen| -> anyhow::Result<()> {
        let epochs = check_no_gaps(seen, "g1")?;
        assert_eq!(epochs.len(), 1, "same data dir, same epoch: {epochs:?}");
        assert!(
            seen.events.len() > stored_before,
            "events written before the kill arrived after it"
        );
        let k = kinds(seen, 20);
        assert_eq!(
            (k.first(), k.last()),
            (Some(&"enter"), Some(&"exit")),
            "{k:?}"
        );
        Ok(())
    })?;
    assert!(
        gw.log_text().contains("outbox_depth="),
        "restart reports what it kept:\n{}",
        gw.log_text()
    );
    s.cloud
        .with(|seen| check_nothing_missing(seen, "g1", &mut gw))?;
    Ok(())
}

async fn cloud_stops_acking(kind: BrokerKind) -> anyhow::Result<()> {
    let s = setup(kind).await?;
    let mut gw = s.replay_until_events(&staggered(10), 3).await?;
    s.cloud.set_acking(false);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let depth = s.cloud.with(|x| {
        x.statuses
            .get("g1")
            .and_then(|v| v.last())
            .map_or(0, |st| st.outbox_depth)
    });
    assert!(depth > 0, "unacked events stay in the outbox");
    s.cloud.set_acking(true);
    s.wait_done(&gw, Duration::from_secs(120)).await?;
    s.cloud.with(|seen| -> anyhow::Result<()> {
        check_no_gaps(seen, "g1")?;
        assert!(seen.duplicates > 0, "unacked batches were resent");
        for n in 1..=10 {
            let k = kinds(seen, n);
            assert_eq!(
                k.iter().filter(|x| **x == "enter").count(),
                1,
                "stored once: beacon {n}: {k:?}"
            );
        }
        Ok(())
    })?;
    s.cloud
        .with(|seen| check_nothing_missing(seen, "g1", &mut gw))?;
    Ok(())
}

/// One test per scenario that runs it against Mosquitto and against rumqttd at once: the two
/// runs share nothing (own brokers, ports, data dirs), and both mostly wait on their clocks.
macro_rules! on_both_brokers {
    ($($name:ident),*) => {
        mod on_both_brokers {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() -> anyhow::Result<()> {
                    use anyhow::Context;
                    use omo_tests::BrokerKind;
                    let mosquitto = tokio::spawn(super::$name(BrokerKind::Mosquitto));
                    let rumqttd = tokio::spawn(super::$name(BrokerKind::Rumqttd));
                    let (mosquitto, rumqttd) = (mosquitto.await, rumqttd.await);
                    mosquitto.context("the Mosquitto run panicked")?.context("on Mosquitto")?;
                    rumqttd.context("the rumqttd run panicked")?.context("on rumqttd")?;
                    Ok(())
                }
            )*
        }
    };
}

on_both_brokers!(broker_outage, sigkill_during_outage, cloud_stops_acking);

/// On rumqttd, which has no ACL, another gateway's credentials can reach g1's downlink topics;
/// signatures are what make that useless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_acks_and_configs_change_nothing() -> anyhow::Result<()> {
    let gut = GatewayUnderTest::new("s1", "g1", SPEED)?;
    let g2 = GatewayUnderTest::new("s1", "g2", SPEED)?;
    let mut lines = gut.password_lines();
    lines.extend(g2.password_lines().into_iter().take(1));
    let broker = Broker::start(BrokerKind::Rumqttd, &lines, "")?;
    let cloud = CloudStub::start(
        broker.port,
        CLOUD_USER,
        CLOUD_PASSWORD,
        HashMap::from([("g1".to_owned(), gut.key.clone())]),
    )
    .await?;
    cloud.set_acking(false);
    let replay = gut.dir.path().join("visits.jsonl");
    write_replay(&replay, &staggered(4))?;
    let config = gut.write_config(broker.port, &replay)?;
    let gw = gut.start(&config)?;
    let ctx = || format!("gateway log:\n{}", gw.log_text());
    wait_until(
        Duration::from_secs(30),
        "events in g1's outbox",
        || cloud.with(|x| !x.events.is_empty()),
        ctx,
    )
    .await?;
    let epoch = cloud
        .with(|x| {
            x.events
                .keys()
                .next()
                .and_then(|id| id.split(':').nth(1))
                .map(str::to_owned)
        })
        .unwrap();

    // The forger logs in with g2's real credentials and signs with g2's key (or not at all).
    let forger = CloudStub::start(broker.port, "g2", &g2.password, HashMap::new()).await?;
    let ack_topic =
        Topic::new(gut.store.clone(), gut.gateway.clone(), Channel::PresenceAck).to_string();
    let config_topic =
        Topic::new(gut.store.clone(), gut.gateway.clone(), Channel::Config).to_string();
    let forged_ack = PresenceAck {
        epoch: epoch.parse()?,
        seqs: SeqRanges::from_range(1, 1_000_000),
        rejected: Vec::new(),
    };
    forger
        .publish(&ack_topic, seal(&ack_topic, &g2.key, &forged_ack)?, false)
        .await?;
    forger
        .publish(
            &ack_topic,
            seal(&ack_topic, &SigningKey::generate(), &forged_ack)?,
            false,
        )
        .await?;
    forger
        .publish(
            &ack_topic,
            br#"{"v":1,"msg":{"epoch":"00000000","seqs":[[1,9]],"rejected":[]}}"#.to_vec(),
            false,
        )
        .await?;
    // Correctly signed, by the cloud, but for another epoch (a stale ack of an old outbox).
    let stale = PresenceAck {
        epoch: omo_device_config::payload::Epoch(forged_ack.epoch.0.wrapping_add(1)),
        ..forged_ack.clone()
    };
    cloud
        .publish(&ack_topic, seal(&ack_topic, &gut.key, &stale)?, false)
        .await?;
    let forged_config = serde_json::json!({"version": 99, "presence": {"enter_rssi_dbm": -20.0}});
    forger
        .publish(
            &config_topic,
            seal(&config_topic, &g2.key, &forged_config)?,
            false,
        )
        .await?;
    wait_until(
        Duration::from_secs(20),
        "the forgeries to be refused",
        || gw.log_text().matches("refused a message").count() >= 4,
        ctx,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (depth, version) = cloud.with(|x| {
        let st = x
            .statuses
            .get("g1")
            .and_then(|v| v.last())
            .cloned()
            .unwrap();
        (st.outbox_depth, st.config_version)
    });
    assert!(depth > 0, "a forged ack emptied nothing");
    let log = gw.log_text();
    assert!(
        !log.contains("ack settled events"),
        "no forged or stale ack settled anything:\n{log}"
    );
    assert!(log.contains("ignored an ack for another epoch"), "{log}");
    assert_eq!(version, 0, "a forged config changed nothing");
    cloud.set_acking(true);
    wait_until(
        Duration::from_secs(60),
        "the outbox to drain with real acks",
        || cloud.with(|x| drained(x, "g1")),
        ctx,
    )
    .await?;
    cloud.with(|x| check_no_gaps(x, "g1"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_data_dir_gets_a_new_epoch() -> anyhow::Result<()> {
    let s = setup(BrokerKind::Mosquitto).await?;
    let (_, config) = s.prepare(&staggered(2))?;
    let mut gw = s.gut.start(&config)?;
    s.wait_done(&gw, Duration::from_secs(60)).await?;
    // A power cut: the broker publishes the gateway's signed last will.
    gw.kill()?;
    wait_until(
        Duration::from_secs(20),
        "the offline last will",
        || {
            s.cloud.with(|x| {
                x.statuses["g1"]
                    .last()
                    .is_some_and(|st| st.state == omo_device_config::payload::GatewayState::Offline)
            })
        },
        || s.context(&gw),
    )
    .await?;
    let first = s.cloud.with(|x| x.events.clone());
    std::fs::remove_dir_all(s.gut.data_dir())?;
    let gw = s.gut.start(&config)?;
    wait_until(
        Duration::from_secs(60),
        "events of the new epoch",
        || s.cloud.with(|x| x.events.len() > first.len() + 3),
        || s.context(&gw),
    )
    .await?;
    s.wait_done(&gw, Duration::from_secs(60)).await?;
    s.cloud.with(|seen| -> anyhow::Result<()> {
        let epochs = check_no_gaps(seen, "g1")?;
        assert_eq!(
            epochs.len(),
            2,
            "a reinstalled gateway starts a new epoch: {epochs:?}"
        );
        // The first install's events are untouched; the new ones use other ids.
        for (id, e) in &first {
            assert_eq!(seen.events.get(id), Some(e), "{id} changed");
        }
        let old_epoch = first
            .keys()
            .next()
            .and_then(|id| id.split(':').nth(1))
            .unwrap();
        let new: Vec<&String> = seen
            .events
            .keys()
            .filter(|id| !first.contains_key(*id))
            .collect();
        assert!(
            new.iter().all(|id| !id.contains(&format!(":{old_epoch}:"))),
            "{new:?}"
        );
        assert!(new.len() > 3);
        Ok(())
    })?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_config_is_validated_applied_persisted_and_acknowledged() -> anyhow::Result<()> {
    let s = setup(BrokerKind::Mosquitto).await?;
    let (_, config) = s.prepare(&staggered(2))?;
    let mut gw = s.gut.start(&config)?;
    wait_until(
        Duration::from_secs(30),
        "a heartbeat",
        || s.cloud.with(|x| x.statuses.contains_key("g1")),
        || s.context(&gw),
    )
    .await?;
    let topic = Topic::new(s.gut.store.clone(), s.gut.gateway.clone(), Channel::Config).to_string();
    let send = |doc: serde_json::Value| seal(&topic, &s.gut.key, &doc);
    // Invalid: refused with the key at fault, nothing changes.
    s.cloud
        .publish(
            &topic,
            send(serde_json::json!({"version": 2, "presence": {"ema_alpha": 7}}))?,
            true,
        )
        .await?;
    wait_until(
        Duration::from_secs(20),
        "a config/ack",
        || s.cloud.with(|x| x.config_acks.contains_key("g1")),
        || s.context(&gw),
    )
    .await?;
    let ack = s.cloud.with(|x| x.config_acks["g1"][0].clone());
    assert!(
        !ack.ok
            && ack
                .error
                .as_deref()
                .unwrap_or("")
                .contains("presence.ema_alpha"),
        "{ack:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        s.cloud
            .with(|x| x.statuses["g1"].last().map(|st| st.config_version)),
        Some(0),
        "a refused config changes nothing"
    );
    // Valid, with a key this gateway does not know: applied, with a warning.
    s.cloud.publish(&topic, send(serde_json::json!({"version": 3, "presence": {"stay_interval_s": 30}, "beta": true}))?, true).await?;
    wait_until(
        Duration::from_secs(20),
        "config version 3 in force",
        || {
            s.cloud.with(|x| {
                x.statuses["g1"]
                    .last()
                    .is_some_and(|st| st.config_version == 3)
            })
        },
        || s.context(&gw),
    )
    .await?;
    let ack = s
        .cloud
        .with(|x| x.config_acks["g1"].last().cloned().unwrap());
    assert!(
        ack.ok && ack.version == 3 && ack.warnings == ["beta: unknown key ignored"],
        "{ack:?}"
    );
    // It survives a restart (the broker's retained copy is cleared first, so it is the file).
    s.cloud.publish(&topic, Vec::new(), true).await?;
    gw.terminate(Duration::from_secs(10))?;
    let before = s.cloud.with(|x| x.statuses["g1"].len());
    let gw = s.gut.start(&config)?;
    wait_until(
        Duration::from_secs(20),
        "a heartbeat after restart",
        || s.cloud.with(|x| x.statuses["g1"].len() > before + 1),
        || s.context(&gw),
    )
    .await?;
    assert_eq!(
        s.cloud
            .with(|x| x.statuses["g1"].last().unwrap().config_version),
        3
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_explained_and_data_kept() -> anyhow::Result<()> {
    let s = setup(BrokerKind::Mosquitto).await?;
    let replay = s.gut.dir.path().join("visits.jsonl");
    write_replay(&replay, &staggered(2))?;
    let config = s
        .gut
        .write_config_with_password(s.broker.port, &replay, "not-the-password")?;
    let mut gw = s.gut.start(&config)?;
    wait_until(
        Duration::from_secs(20),
        "the refusal to be explained",
        || gw.log_text().contains("refused this gateway's credentials"),
        || s.context(&gw),
    )
    .await?;
    wait_until(
        Duration::from_secs(30),
        "the replay to finish",
        || gw.log_text().contains("replay finished"),
        || s.context(&gw),
    )
    .await?;
    assert!(!gw.exited(), "the daemon keeps running and retrying");
    gw.terminate(Duration::from_secs(10))?;
    // With the right password, everything recorded meanwhile is delivered.
    let config = s.gut.write_config(s.broker.port, &replay)?;
    std::fs::write(&replay, "")?;
    let gw = s.gut.start(&config)?;
    wait_until(
        Duration::from_secs(30),
        "the kept events",
        || {
            s.cloud
                .with(|x| kinds(x, 1).contains(&"exit") && drained(x, "g1"))
        },
        || s.context(&gw),
    )
    .await?;
    s.cloud.with(|x| check_no_gaps(x, "g1"))?;
    Ok(())
}
