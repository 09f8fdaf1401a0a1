//! The real `omo-gateway` against a real Mosquitto: a replayed store visit becomes signed
//! presence events that a cloud stand-in stores and acknowledges, and the outbox drains.

use std::time::Duration;

use omo_device_config::payload::{GatewayState, PresenceEvent, SightingKind};
use omo_tests::scenario::{
    broker_and_cloud, check_no_gaps, drained, hwid, wait_until, write_replay, GatewayUnderTest,
    Visit,
};
use omo_tests::BrokerKind;

/// Beacon `n`'s transitions in seq order.
fn sightings<'a>(events: impl Iterator<Item = &'a PresenceEvent>, n: u8) -> Vec<SightingKind> {
    let id = format!("line:{}", hex::encode(hwid(n)));
    let mut events: Vec<_> = events.collect();
    events.sort_by_key(|e| e.seq());
    events
        .into_iter()
        .filter_map(|e| e.as_sighting())
        .filter(|(_, s)| s.beacon.to_string() == id)
        .map(|(k, _)| k)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_visit_reaches_the_cloud_and_the_outbox_drains() -> anyhow::Result<()> {
    let gut = GatewayUnderTest::new("s1", "g1", 60)?;
    let (broker, cloud) = broker_and_cloud(&gut, BrokerKind::Mosquitto).await?;
    // A from 0 to 120 s, B from 30 to 200 s, C walks past the door (10–16 s).
    let replay = gut.dir.path().join("visit.jsonl");
    let visits = [
        Visit {
            beacon: 1,
            from_s: 0,
            to_s: 120,
        },
        Visit {
            beacon: 2,
            from_s: 30,
            to_s: 200,
        },
        Visit {
            beacon: 3,
            from_s: 10,
            to_s: 16,
        },
    ];
    let lines = write_replay(&replay, &visits)?;
    let mut text = std::fs::read_to_string(&replay)?;
    text += "this line is not JSON\n";
    std::fs::write(&replay, text)?;
    let bad_line = lines + 1;
    let config = gut.write_config(broker.port, &replay)?;
    let mut gateway = gut.start(&config)?;

    let ctx = || {
        format!(
            "gateway log:\n{}\nbroker log:\n{}",
            gateway.log_text(),
            broker.log_text()
        )
    };
    wait_until(
        Duration::from_secs(60),
        "both visits to end and the outbox to drain",
        || {
            cloud.with(|s| {
                sightings(s.events.values(), 1).contains(&SightingKind::Exit)
                    && sightings(s.events.values(), 2).contains(&SightingKind::Exit)
                    && drained(s, "g1")
            })
        },
        ctx,
    )
    .await?;

    cloud.with(|s| -> anyhow::Result<()> {
        assert_eq!(s.refused, 0, "every payload was correctly signed");
        for n in [1, 2] {
            let kinds = sightings(s.events.values(), n);
            assert_eq!(kinds.first(), Some(&SightingKind::Enter), "{n}: {kinds:?}");
            assert_eq!(kinds.last(), Some(&SightingKind::Exit), "{n}: {kinds:?}");
            let enters = kinds.iter().filter(|k| **k == SightingKind::Enter).count();
            assert_eq!(enters, 1, "{n}: {kinds:?}");
            assert!(
                kinds.contains(&SightingKind::Stay),
                "{n} stayed minutes: {kinds:?}"
            );
        }
        assert!(
            sightings(s.events.values(), 3).is_empty(),
            "the walk-by is no visit"
        );
        assert_eq!(
            check_no_gaps(s, "g1")?.len(),
            1,
            "one epoch, seqs from 1 with no gap"
        );
        let footfall = s
            .events
            .values()
            .any(|e| matches!(e, PresenceEvent::Footfall(_)));
        assert!(footfall, "footfall counted");
        Ok(())
    })?;
    let log = gateway.log_text();
    assert!(
        log.contains(&format!("replay line {bad_line}: ")),
        "the malformed line is reported with its number:\n{log}"
    );

    let status = gateway.terminate(Duration::from_secs(10))?;
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        gateway.log_text()
    );
    wait_until(
        Duration::from_secs(10),
        "an offline status after shutdown",
        || {
            cloud.with(|s| {
                s.statuses["g1"]
                    .last()
                    .is_some_and(|st| st.state == GatewayState::Offline)
            })
        },
        String::new,
    )
    .await?;
    Ok(())
}
