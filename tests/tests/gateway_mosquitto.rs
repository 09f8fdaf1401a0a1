//! The real `omo-gateway` against a real Mosquitto: a replayed store visit becomes signed
//! presence events that a cloud stand-in stores and acknowledges, and the outbox drains.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use omo_device_config::broker_auth::{cloud_acl, gateway_acl, password_line, PasswordHash};
use omo_device_config::envelope::SigningKey;
use omo_device_config::payload::{GatewayState, PresenceEvent};
use omo_device_config::{GatewayId, StoreId};
use omo_gateway::frames::{encode, Frame, LineBeacon};
use omo_tests::cloud_stub::CloudStub;
use omo_tests::{gateway_binary, Broker, BrokerKind, Process};

const START: &str = "2026-11-23T09:00:00Z";
const SPEED: u32 = 60;

fn hwid(n: u8) -> [u8; 5] {
    [0x01, 0x6a, 0x4b, 0x2c, n]
}

/// Three LINE Beacon carriers: A from 0 to 120 s, B from 30 to 200 s, C walks past (10–16 s).
/// Writes the replay file and returns the number of its last line, which is malformed.
fn replay_file(path: &std::path::Path) -> anyhow::Result<usize> {
    let start = chrono::DateTime::parse_from_rfc3339(START)?.timestamp_millis();
    let mut lines = String::new();
    for t in 0..240i64 {
        for (n, from, to) in [(1u8, 0, 120), (2, 30, 200), (3, 10, 16)] {
            if t >= from && t < to {
                let adv = encode(&[Frame::Line(LineBeacon::new(hwid(n), -59, &[]))]);
                let ts = omo_device_config::Timestamp::from_millis(start + t * 1000).unwrap();
                lines += &format!(
                    "{{\"ts\":\"{ts}\",\"addr\":\"02:00:00:00:00:{n:02x}\",\"rssi\":-62,\"adv\":\"{}\"}}\n",
                    hex::encode(adv)
                );
            }
        }
    }
    lines += "this line is not JSON\n";
    std::fs::write(path, &lines)?;
    Ok(lines.lines().count())
}

/// Beacon `n`'s transitions in seq order.
fn sightings<'a>(events: impl Iterator<Item = &'a PresenceEvent>, n: u8) -> Vec<&'static str> {
    let id = format!("line:{}", hex::encode(hwid(n)));
    let mut events: Vec<_> = events.collect();
    events.sort_by_key(|e| e.seq());
    events
        .into_iter()
        .filter_map(|e| match e {
            PresenceEvent::Enter(s) if s.beacon.to_string() == id => Some("enter"),
            PresenceEvent::Stay(s) if s.beacon.to_string() == id => Some("stay"),
            PresenceEvent::Exit(s) if s.beacon.to_string() == id => Some("exit"),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_visit_reaches_the_cloud_and_the_outbox_drains() -> anyhow::Result<()> {
    let (store, gw) = (StoreId::new("s1")?, GatewayId::new("g1")?);
    let gw_password = "gateway-password-for-tests";
    let cloud_password = "cloud-password-for-tests";
    let key = SigningKey::generate();
    let broker = Broker::start(
        BrokerKind::Mosquitto,
        &[
            password_line("g1", &PasswordHash::new(gw_password)),
            password_line("omo-cloud", &PasswordHash::new(cloud_password)),
        ],
        &format!("{}\n{}", gateway_acl(&store, &gw), cloud_acl("omo-cloud")),
    )?;
    let cloud = CloudStub::start(
        broker.port,
        "omo-cloud",
        cloud_password,
        HashMap::from([("g1".to_owned(), key.clone())]),
    )
    .await?;

    let dir = tempfile::tempdir()?;
    let replay = dir.path().join("visit.jsonl");
    let bad_line = replay_file(&replay)?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            r#"[identity]
store = "s1"
gateway = "g1"
[broker]
url = "mqtt://127.0.0.1:{port}"
password = "{gw_password}"
signing_key = "{key}"
keep_alive_s = 5
[scan]
source = "replay"
replay_file = {replay:?}
[outbox]
resend_interval_s = 5
[data]
dir = {data:?}
"#,
            port = broker.port,
            key = key.to_hex(),
            replay = replay.display().to_string(),
            data = dir.path().join("data").display().to_string(),
        ),
    )?;
    let clock = format!("{START}@{SPEED}");
    let mut gateway = Process::start(
        &gateway_binary()?,
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--clock",
            &clock,
        ],
        &[],
    )?;

    // Wait for both visits to be over and everything acknowledged (outbox depth 0).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = cloud.with(|s| {
            let a = sightings(s.events.values(), 1);
            let b = sightings(s.events.values(), 2);
            let drained = s
                .statuses
                .get("g1")
                .and_then(|v| v.last())
                .is_some_and(|st| st.outbox_depth == 0);
            a.contains(&"exit") && b.contains(&"exit") && drained
        });
        if done {
            break;
        }
        assert!(
            !gateway.exited(),
            "gateway exited early:\n{}",
            gateway.log_text()
        );
        assert!(
            Instant::now() < deadline,
            "timed out; gateway log:\n{}\nbroker log:\n{}",
            gateway.log_text(),
            broker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    cloud.with(|s| {
        assert_eq!(s.refused, 0, "every payload was correctly signed");
        let a = sightings(s.events.values(), 1);
        let b = sightings(s.events.values(), 2);
        for (name, kinds) in [("A", &a), ("B", &b)] {
            assert_eq!(kinds.first(), Some(&"enter"), "{name}: {kinds:?}");
            assert_eq!(kinds.last(), Some(&"exit"), "{name}: {kinds:?}");
            assert_eq!(
                kinds.iter().filter(|k| **k == "enter").count(),
                1,
                "{name}: {kinds:?}"
            );
            assert!(kinds.contains(&"stay"), "{name} stayed minutes: {kinds:?}");
        }
        assert!(
            sightings(s.events.values(), 3).is_empty(),
            "the walk-by is no visit"
        );
        // One epoch, seqs from 1 with no gap.
        let seqs: Vec<u64> = s
            .events
            .keys()
            .map(|id| id.rsplit(':').next().unwrap().parse().unwrap())
            .collect();
        let epochs: std::collections::BTreeSet<&str> = s
            .events
            .keys()
            .map(|id| id.split(':').nth(1).unwrap())
            .collect();
        assert_eq!(epochs.len(), 1);
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "no gap in seq"
        );
        assert!(
            s.events
                .values()
                .any(|e| matches!(e, PresenceEvent::Footfall(_))),
            "footfall counted"
        );
    });
    assert!(
        gateway
            .log_text()
            .contains(&format!("replay line {bad_line}: ")),
        "the malformed line is reported with its number:\n{}",
        gateway.log_text()
    );

    let status = gateway.terminate(Duration::from_secs(10))?;
    assert!(
        status.success(),
        "clean exit: {status:?}\n{}",
        gateway.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cloud.with(|s| {
        s.statuses
            .get("g1")
            .and_then(|v| v.last())
            .is_some_and(|st| st.state == GatewayState::Offline)
    }) {
        assert!(
            Instant::now() < deadline,
            "no offline status after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
