//! Any bytes as a gateway's presence message, both as the whole MQTT payload and as a `msg`
//! correctly signed (so the parser behind the signature check is reached): a refusal or a
//! checked batch, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omo_cloud::ingest::presence::{check_presence, TimeLimits};
use omo_cloud::registry::GatewayEntry;
use omo_device_config::broker_auth::PasswordHash;
use omo_device_config::envelope::seal_raw;
use omo_device_config::site::Gateway;
use omo_device_config::{Channel, GatewayId, SigningKey, StoreId, Timestamp, Topic};

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes([7; 32]);
    let entry = GatewayEntry {
        record: Gateway {
            id: GatewayId::new("g1").unwrap(),
            store: StoreId::new("s1").unwrap(),
            enabled: true,
            password_hash: String::new(),
            signing_key: key.to_hex(),
            location: None,
        },
        password: PasswordHash::new("x"),
        key: key.clone(),
        desired: None,
        last_ack: None,
    };
    let topic = Topic::new(entry.record.store.clone(), entry.record.id.clone(), Channel::Presence);
    let now = Timestamp::from_millis(1_790_000_000_000).unwrap();
    let limits = TimeLimits { max_future_ms: 300_000, max_age_ms: 86_400_000 };
    let _ = check_presence(&topic, &entry, data, 0, now, limits);
    let signed = seal_raw(&topic.to_string(), &key, data);
    let _ = check_presence(&topic, &entry, &signed, 12_345, now, limits);
});
