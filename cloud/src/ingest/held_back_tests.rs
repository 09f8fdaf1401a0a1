//! A group that keeps meeting conflicts lets its append requests through without its gateway
//! batches, and stores those batches in a group of its own right after.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use omo_device_config::envelope::seal;
use omo_device_config::payload::{Epoch, PresenceBatch, PresenceEvent, Sighting};
use omo_device_config::site::Site;
use omo_device_config::{Channel, Clock, GatewayId, SeqRanges, SigningKey, StoreId, Topic};
use tokio::sync::oneshot;

use super::presence::TimeLimits;
use super::record::Record;
use super::{AppendRequest, Group, Limits, Writer};
use crate::broker::{Incoming, Outbound};
use crate::registry::{replace_site, Registry};
use crate::store::barrier::BarrierStore;
use crate::store::faulty::Faulty;
use crate::store::sled_store::SledStore;
use crate::store::{event_log, Space, Store};

const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

const SITE: &str = r#"
[[stores]]
id = "s1"
name = "S"
time_zone = "Asia/Tokyo"
location = { lat = 35.6, lon = 139.7 }

[[gateways]]
id = "g1"
store = "s1"
password_hash = "$7$101$Xcy/Gs5LfpqcCySG$/G0Y9IDsEwGLnHmNMfIbFXFOIvnnj4g7FTnh9iSC/bHHmbF/5lt2fEZ1QollTlxn7V65dtthaO5oeaE06ThENg=="
signing_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_held_back_after_conflicts_are_stored_by_a_group_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let sled: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 1 << 20).unwrap());
    let site = Site::parse(SITE, false).unwrap();
    sled.commit(replace_site(&Registry::default(), &site).unwrap())
        .unwrap();
    let conflicting = Arc::new(Faulty::new(sled.clone()));
    let store = Arc::new(BarrierStore::new(conflicting.clone()));
    let registry = Arc::new(RwLock::new(Registry::load(store.as_ref()).unwrap()));
    // Acks go to a client no broker answers: queued, never sent.
    let (client, _events) =
        rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 64);
    let start = "2026-12-07T03:00:00Z".parse().unwrap();
    let limits = Limits {
        times: TimeLimits {
            max_future_ms: 300_000,
            max_age_ms: 86_400_000,
        },
        max_group: 100,
        max_clock_offset_ms: 60_000,
    };
    let (mut writer, _shared) = Writer::open(
        store.clone(),
        registry,
        Clock::manual(start),
        Arc::new(Outbound::External(client)),
        limits,
    )
    .unwrap();

    let topic = Topic::new(
        StoreId::new("s1").unwrap(),
        GatewayId::new("g1").unwrap(),
        Channel::Presence,
    );
    let at = |s: i64| {
        omo_device_config::Timestamp::from_millis(start.timestamp_millis() - s * 1000).unwrap()
    };
    let events: Vec<PresenceEvent> = (1..=3)
        .map(|seq| {
            PresenceEvent::Enter(Sighting {
                seq,
                ts: at(10 - seq as i64),
                beacon: "line:016a4b2c3d".parse().unwrap(),
                rssi: -60.0,
                distance_m: 1.0,
                seen_s: 0.0,
            })
        })
        .collect();
    let batch = PresenceBatch {
        gateway: topic.gateway.clone(),
        store: topic.store.clone(),
        epoch: Epoch(9),
        events,
        dropped: SeqRanges::default(),
    };
    let key = SigningKey::from_hex(KEY).unwrap();
    let mut group = Group::default();
    writer.take_mqtt(
        Incoming {
            topic: topic.to_string(),
            payload: seal(&topic.to_string(), &key, &batch).unwrap(),
            ack: None,
        },
        &mut group,
    );
    let (reply, answer) = oneshot::channel();
    let tick = Record::Tick { received: at(1) };
    writer.take_append(
        AppendRequest {
            records: vec![tick.clone()],
            dedup: None,
            reply,
        },
        &mut group,
    );
    // Four conflicts in a row: the fifth try goes without the batch.
    conflicting
        .conflicts
        .store(super::retry::BATCHES_LEFT_AFTER, Ordering::SeqCst);
    writer.finish(group).await;

    assert!(answer.await.unwrap().is_ok(), "the append request answered");
    let records: Vec<Record> = event_log::read(store.as_ref(), 0, 100)
        .unwrap()
        .into_iter()
        .map(|(_, b)| Record::decode(&b).unwrap())
        .collect();
    let gateway = records
        .iter()
        .filter(|r| matches!(r, Record::Gateway(_)))
        .count();
    assert_eq!(gateway, 3, "the held-back batch stored: {records:?}");
    let first_gateway = records
        .iter()
        .position(|r| matches!(r, Record::Gateway(_)))
        .unwrap();
    let appended = records.iter().position(|r| *r == tick).unwrap();
    assert!(
        appended < first_gateway,
        "the append went first: {records:?}"
    );
    // Its seqs are in the ledger: a resend of the batch is a duplicate.
    let ledger = sled
        .scan(Space::SeqRanges, b"", 100)
        .unwrap()
        .into_iter()
        .map(|(k, _)| String::from_utf8_lossy(&k).into_owned())
        .collect::<Vec<_>>();
    assert!(ledger.iter().any(|k| k.contains("g1")), "{ledger:?}");
}
