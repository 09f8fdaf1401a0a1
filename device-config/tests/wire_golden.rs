//! Golden files pin the MQTT wire format: each payload type, sealed with a fixed key for its
//! topic, must encode to exactly the bytes in `tests/golden/*.json`, and those bytes must open
//! to the same value. A change here is a protocol change: bump the envelope `v` or keep old
//! receivers working. Regenerate deliberately with `OMO_UPDATE_GOLDEN=1 cargo test`.

use std::path::PathBuf;

use omo_device_config::envelope::{open, seal, SigningKey};
use omo_device_config::payload::{
    ConfigAck, Epoch, Footfall, GatewayState, PresenceAck, PresenceBatch, PresenceEvent, Rejected,
    RemoteConfig, Sighting, Status,
};
use omo_device_config::{Channel, GatewayId, SeqRanges, StoreId, Topic};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn key() -> SigningKey {
    SigningKey::from_hex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
        .unwrap()
}

fn topic(channel: Channel) -> String {
    Topic::new(
        StoreId::new("tokyo-shibuya").unwrap(),
        GatewayId::new("gw-1").unwrap(),
        channel,
    )
    .to_string()
}

fn check<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    name: &str,
    channel: Channel,
    value: &T,
) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/golden/{name}.json"));
    let sealed = seal(&topic(channel), &key(), value).unwrap();
    if std::env::var_os("OMO_UPDATE_GOLDEN").is_some() {
        let mut text = sealed.clone();
        text.push(b'\n');
        std::fs::write(&path, text).unwrap();
    }
    let golden = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (OMO_UPDATE_GOLDEN=1 writes it)", path.display()));
    let golden = golden.strip_suffix(b"\n").unwrap_or(&golden);
    assert_eq!(
        String::from_utf8_lossy(&sealed),
        String::from_utf8_lossy(golden),
        "{name}: encoding changed"
    );
    let back: T = open(&topic(channel), &key(), golden).unwrap();
    assert_eq!(&back, value, "{name}: decoding changed");
}

fn ts(s: &str) -> omo_device_config::Timestamp {
    s.parse().unwrap()
}

#[test]
fn presence() {
    let sighting = |seq, t: &str, beacon: &str, seen_s| Sighting {
        seq,
        ts: ts(t),
        beacon: beacon.parse().unwrap(),
        rssi: -71.5,
        distance_m: 3.2,
        seen_s,
    };
    let batch = PresenceBatch {
        gateway: GatewayId::new("gw-1").unwrap(),
        store: StoreId::new("tokyo-shibuya").unwrap(),
        epoch: Epoch(0x5eed_1234),
        events: vec![
            PresenceEvent::Enter(sighting(
                41,
                "2026-11-23T10:00:00.125Z",
                "eddystone-eid:0123456789abcdef",
                0.0,
            )),
            PresenceEvent::Stay(sighting(
                42,
                "2026-11-23T10:01:00.125Z",
                "ibeacon:E2C56DB5-DFFB-48D2-B060-D0F5A71096E0:100:1",
                60.0,
            )),
            PresenceEvent::Exit(sighting(
                43,
                "2026-11-23T10:05:30Z",
                "line:016a4b2c3d",
                330.5,
            )),
            PresenceEvent::Footfall(Footfall {
                seq: 44,
                ts: ts("2026-11-23T10:05:00Z"),
                devices: 17,
            }),
        ],
        dropped: SeqRanges::from_range(7, 9),
    };
    check("presence", Channel::Presence, &batch);
}

#[test]
fn presence_ack() {
    let ack = PresenceAck {
        epoch: Epoch(0x5eed_1234),
        seqs: [1, 2, 3, 41, 42, 44].into_iter().collect(),
        rejected: vec![Rejected {
            seqs: SeqRanges::from_range(43, 43),
            reason: "ts is 26 h in the future".into(),
        }],
    };
    check("presence_ack", Channel::PresenceAck, &ack);
}

#[test]
fn status() {
    let status = Status {
        state: GatewayState::Online,
        ts: ts("2026-11-23T10:00:30Z"),
        uptime_s: 86_400,
        outbox_depth: 12,
        adverts_per_s: 41.5,
        config_version: 3,
        dropped: 0,
        sw_version: "0.1.0".into(),
        accepts_v: vec![1],
        clock_synced: true,
        epoch: Some(Epoch(0x5eed_1234)),
        last_seq: Some(4711),
    };
    check("status", Channel::Status, &status);
    // A gateway from before `epoch` and `last_seq` sends neither; it still parses.
    let mut old = serde_json::to_value(&status).unwrap();
    old.as_object_mut()
        .unwrap()
        .retain(|k, _| k != "epoch" && k != "last_seq");
    let read: Status = serde_json::from_value(old).unwrap();
    assert_eq!((read.epoch, read.last_seq), (None, None));
}

#[test]
fn config_and_ack() {
    let mut config = RemoteConfig {
        version: 3,
        presence: Default::default(),
        filters: Default::default(),
        status: Default::default(),
    };
    config.presence.stay_interval_s = 30;
    check("config", Channel::Config, &config);
    let ack = ConfigAck {
        version: 3,
        ok: true,
        error: None,
        warnings: vec!["presence.sparkle: unknown key ignored".into()],
    };
    check("config_ack", Channel::ConfigAck, &ack);
}
