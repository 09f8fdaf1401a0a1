//! Eddystone-EID against vectors computed independently with Python's `cryptography` package
//! (`tests/golden/eid_vectors.py`), including temporary-key roll-overs.

use omo_device_config::eid::{eid, temporary_key};
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    identity_key: String,
    exponent: u8,
    time: u32,
    temporary_key: String,
    eid: String,
}

#[test]
fn matches_independent_vectors() {
    let text = include_str!("golden/eid_vectors.json");
    let vectors: Vec<Vector> = serde_json::from_str(text).expect("golden file is valid JSON");
    assert!(vectors.len() >= 20);
    let mut rolled_over = false;
    for v in &vectors {
        let mut key = [0u8; 16];
        hex::decode_to_slice(&v.identity_key, &mut key).expect("16-byte key");
        assert_eq!(
            hex::encode(temporary_key(&key, v.time)),
            v.temporary_key,
            "temporary key for time {}",
            v.time
        );
        assert_eq!(
            hex::encode(eid(&key, v.exponent, v.time)),
            v.eid,
            "EID for key {} K={} time {}",
            v.identity_key,
            v.exponent,
            v.time
        );
        rolled_over |= v.time == 65536;
    }
    assert!(rolled_over, "the vectors include a temporary-key roll-over");
}

#[test]
fn temporary_key_changes_exactly_at_the_roll_over() {
    let key = [9u8; 16];
    assert_eq!(temporary_key(&key, 65535), temporary_key(&key, 0));
    assert_ne!(temporary_key(&key, 65536), temporary_key(&key, 65535));
}
