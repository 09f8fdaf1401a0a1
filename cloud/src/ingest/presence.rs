//! Checking one `presence` message from a gateway (pure: no store, no clock of its own).
//!
//! The signature is verified with the gateway's key before anything is parsed; then topic,
//! payload and registry must agree. Each event is read on its own, so one bad event is
//! acknowledged as rejected (with the field at fault) and the others are stored. Events
//! stamped too far in the future or the past are rejected for good, with the reason.

use std::collections::BTreeMap;

use omo_device_config::envelope::{open_raw, parse_message, EnvelopeError};
use omo_device_config::payload::{Epoch, PresenceEvent, Rejected, MAX_PRESENCE_BYTES};
use omo_device_config::{GatewayId, SeqRanges, StoreId, Timestamp, Topic};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::registry::GatewayEntry;

/// A message ingest will not look at any further, and why (a metric label and a log line).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("gateway {0} is not registered")]
    UnknownGateway(String),
    #[error("gateway {0} is disabled")]
    Disabled(String),
    #[error("bad signature: {0}")]
    BadSignature(EnvelopeError),
    #[error("gateway {gateway} belongs to store {registered}, not {topic}")]
    WrongStore {
        gateway: GatewayId,
        registered: StoreId,
        topic: StoreId,
    },
    #[error("payload names {field} {payload}, the topic {topic}")]
    Mismatch {
        field: &'static str,
        payload: String,
        topic: String,
    },
    #[error("malformed message: {0}")]
    Malformed(EnvelopeError),
    #[error("payload of {0} bytes is over the {MAX_PRESENCE_BYTES}-byte limit")]
    TooLarge(usize),
}

impl Refusal {
    /// The `reason` label of the rejected-messages counter.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::UnknownGateway(_) => "unknown_gateway",
            Refusal::Disabled(_) => "disabled_gateway",
            Refusal::BadSignature(_) => "bad_signature",
            Refusal::WrongStore { .. } => "wrong_store",
            Refusal::Mismatch { .. } => "payload_mismatch",
            Refusal::Malformed(_) => "malformed",
            Refusal::TooLarge(_) => "oversized",
        }
    }
}

/// Limits on event times, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TimeLimits {
    pub max_future_ms: i64,
    pub max_age_ms: i64,
}

/// A message that passed: what to store, what to reject.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedBatch {
    pub gateway: GatewayId,
    pub store: StoreId,
    pub epoch: Epoch,
    /// Acceptable events with their corrected time.
    pub events: Vec<(PresenceEvent, Timestamp)>,
    pub dropped: SeqRanges,
    /// Seqs never to be stored, grouped by reason.
    pub rejected: Vec<Rejected>,
    /// Events without a readable seq: they cannot even be rejected.
    pub unreadable: Vec<String>,
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    gateway: GatewayId,
    store: StoreId,
    epoch: Epoch,
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default)]
    dropped: SeqRanges,
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

/// Verifies and reads a presence message for `topic` from the registered `gateway`.
/// `offset_ms` is added to event times (the gateway's clock offset when it is not
/// synchronised); `now` is the cloud's clock.
pub fn check_presence(
    topic: &Topic,
    gateway: &GatewayEntry,
    payload: &[u8],
    offset_ms: i64,
    now: Timestamp,
    limits: TimeLimits,
) -> Result<CheckedBatch, Refusal> {
    if !gateway.record.enabled {
        return Err(Refusal::Disabled(gateway.record.id.to_string()));
    }
    if payload.len() > MAX_PRESENCE_BYTES {
        return Err(Refusal::TooLarge(payload.len()));
    }
    let msg = open_raw(&topic.to_string(), &gateway.key, payload).map_err(|e| match e {
        EnvelopeError::BadSignature
        | EnvelopeError::SignatureEncoding
        | EnvelopeError::MissingField("sig") => Refusal::BadSignature(e),
        other => Refusal::Malformed(other),
    })?;
    if gateway.record.store != topic.store {
        return Err(Refusal::WrongStore {
            gateway: gateway.record.id.clone(),
            registered: gateway.record.store.clone(),
            topic: topic.store.clone(),
        });
    }
    let de = &mut serde_json::Deserializer::from_str(msg.get());
    let batch: RawBatch<'_> = serde_path_to_error::deserialize(de).map_err(|e| {
        Refusal::Malformed(EnvelopeError::Message {
            path: e.path().to_string(),
            source: e.into_inner(),
        })
    })?;
    if batch.gateway != topic.gateway {
        return Err(Refusal::Mismatch {
            field: "gateway",
            payload: batch.gateway.to_string(),
            topic: topic.gateway.to_string(),
        });
    }
    if batch.store != topic.store {
        return Err(Refusal::Mismatch {
            field: "store",
            payload: batch.store.to_string(),
            topic: topic.store.to_string(),
        });
    }
    let mut events = Vec::with_capacity(batch.events.len());
    let mut rejected: BTreeMap<String, SeqRanges> = BTreeMap::new();
    let mut unreadable = Vec::new();
    for (i, raw) in batch.events.iter().enumerate() {
        match parse_message::<PresenceEvent>(raw.get()) {
            Ok(event) => {
                let corrected = corrected_ts(event.ts(), offset_ms);
                match event_problem(&event, corrected, now, limits) {
                    None => events.push((event, corrected)),
                    Some(reason) => rejected.entry(reason).or_default().insert(event.seq()),
                }
            }
            Err(e) => match serde_json::from_str::<SeqOnly>(raw.get()) {
                Ok(SeqOnly { seq }) => rejected
                    .entry(format!("events[{i}]: {e}"))
                    .or_default()
                    .insert(seq),
                Err(_) => unreadable.push(format!("events[{i}]: {e}")),
            },
        }
    }
    Ok(CheckedBatch {
        gateway: batch.gateway,
        store: batch.store,
        epoch: batch.epoch,
        events,
        dropped: batch.dropped,
        rejected: rejected
            .into_iter()
            .map(|(reason, seqs)| Rejected { seqs, reason })
            .collect(),
        unreadable,
    })
}

fn corrected_ts(ts: Timestamp, offset_ms: i64) -> Timestamp {
    Timestamp::from_millis(ts.millis().saturating_add(offset_ms)).unwrap_or(ts)
}

/// Why an event that parsed is still refused for good.
fn event_problem(
    event: &PresenceEvent,
    corrected: Timestamp,
    now: Timestamp,
    limits: TimeLimits,
) -> Option<String> {
    let ahead = corrected.millis() - now.millis();
    if ahead > limits.max_future_ms {
        return Some(format!(
            "ts is {} s ahead of the cloud's clock (limit {} s)",
            ahead / 1000,
            limits.max_future_ms / 1000
        ));
    }
    if -ahead > limits.max_age_ms {
        return Some(format!(
            "ts is {} s old (limit {} s)",
            -ahead / 1000,
            limits.max_age_ms / 1000
        ));
    }
    let (_, s) = event.as_sighting()?;
    if !(-127.0..=20.0).contains(&s.rssi) {
        return Some("rssi must be within -127..=20 dBm".into());
    }
    if s.distance_m < 0.0 || s.seen_s < 0.0 {
        return Some("distance_m and seen_s must not be negative".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::broker_auth::PasswordHash;
    use omo_device_config::envelope::seal;
    use omo_device_config::payload::{PresenceBatch, Sighting};
    use omo_device_config::site;
    use omo_device_config::{Channel, SigningKey};

    const LIMITS: TimeLimits = TimeLimits {
        max_future_ms: 300_000,
        max_age_ms: 86_400_000,
    };

    fn entry(key: &SigningKey) -> GatewayEntry {
        GatewayEntry {
            record: site::Gateway {
                id: GatewayId::new("g1").unwrap(),
                store: StoreId::new("s1").unwrap(),
                enabled: true,
                password_hash: String::new(),
                signing_key: key.to_hex(),
                location: None,
            },
            password: PasswordHash::new("pw"),
            key: key.clone(),
            desired: None,
            last_ack: None,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn event(seq: u64, at: &str) -> PresenceEvent {
        PresenceEvent::Enter(Sighting {
            seq,
            ts: ts(at),
            beacon: "line:016a4b2c3d".parse().unwrap(),
            rssi: -60.0,
            distance_m: 1.0,
            seen_s: 0.0,
        })
    }

    fn topic(store: &str) -> Topic {
        Topic::new(
            StoreId::new(store).unwrap(),
            GatewayId::new("g1").unwrap(),
            Channel::Presence,
        )
    }

    fn sealed(topic: &Topic, key: &SigningKey, events: Vec<PresenceEvent>) -> Vec<u8> {
        let batch = PresenceBatch {
            gateway: topic.gateway.clone(),
            store: topic.store.clone(),
            epoch: Epoch(9),
            events,
            dropped: SeqRanges::from_range(1, 2),
        };
        seal(&topic.to_string(), key, &batch).unwrap()
    }

    const NOW: &str = "2026-11-23T10:00:00.000Z";

    #[test]
    fn good_events_pass_and_bad_times_are_rejected_with_reasons() {
        let key = SigningKey::generate();
        let t = topic("s1");
        let payload = sealed(
            &t,
            &key,
            vec![
                event(3, "2026-11-23T09:59:59.000Z"),
                event(4, "2026-11-23T12:00:00.000Z"),
                event(5, "2026-11-20T10:00:00.000Z"),
            ],
        );
        let b = check_presence(&t, &entry(&key), &payload, 0, ts(NOW), LIMITS).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.events[0].0.seq(), 3);
        assert_eq!(b.dropped, SeqRanges::from_range(1, 2));
        let reasons: Vec<&str> = b.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(
            reasons.iter().any(|r| r.contains("7200 s ahead")),
            "{reasons:?}"
        );
        assert!(reasons.iter().any(|r| r.contains("s old")), "{reasons:?}");
    }

    #[test]
    fn an_unsynchronised_clock_is_corrected_before_the_checks() {
        let key = SigningKey::generate();
        let t = topic("s1");
        // The gateway's clock is 2 h ahead: the offset brings its events back.
        let payload = sealed(&t, &key, vec![event(1, "2026-11-23T12:00:00.000Z")]);
        let b = check_presence(&t, &entry(&key), &payload, -7_200_000, ts(NOW), LIMITS).unwrap();
        assert_eq!(b.events[0].1, ts(NOW));
        assert!(b.rejected.is_empty());
    }

    #[test]
    fn signature_store_and_payload_are_checked_in_that_order() {
        let key = SigningKey::generate();
        let other = SigningKey::generate();
        let t = topic("s1");
        let forged = sealed(&t, &other, vec![event(1, NOW)]);
        let e = check_presence(&t, &entry(&key), &forged, 0, ts(NOW), LIMITS).unwrap_err();
        assert_eq!(e.label(), "bad_signature");
        // Signed by the right key, but on another store's topic.
        let t2 = topic("s2");
        let elsewhere = sealed(&t2, &key, vec![event(1, NOW)]);
        let e = check_presence(&t2, &entry(&key), &elsewhere, 0, ts(NOW), LIMITS).unwrap_err();
        assert_eq!(e.label(), "wrong_store");
        // The payload names another gateway than the topic.
        let batch = PresenceBatch {
            gateway: GatewayId::new("g2").unwrap(),
            store: StoreId::new("s1").unwrap(),
            epoch: Epoch(1),
            events: vec![],
            dropped: SeqRanges::new(),
        };
        let p = seal(&t.to_string(), &key, &batch).unwrap();
        let e = check_presence(&t, &entry(&key), &p, 0, ts(NOW), LIMITS).unwrap_err();
        assert_eq!(e.label(), "payload_mismatch");
        assert!(e.to_string().contains("g2"), "{e}");
        let mut disabled = entry(&key);
        disabled.record.enabled = false;
        let ok = sealed(&t, &key, vec![]);
        assert_eq!(
            check_presence(&t, &disabled, &ok, 0, ts(NOW), LIMITS)
                .unwrap_err()
                .label(),
            "disabled_gateway"
        );
    }

    #[test]
    fn one_bad_event_is_rejected_by_seq_and_the_rest_stored() {
        let key = SigningKey::generate();
        let t = topic("s1");
        let msg = format!(
            r#"{{"gateway":"g1","store":"s1","epoch":"00000009","events":[{{"seq":1,"ts":"{NOW}","kind":"enter","beacon":"nonsense","rssi":-50,"distance_m":1,"seen_s":0}},{{"seq":2,"ts":"{NOW}","kind":"footfall","devices":3}},{{"kind":"exit"}}],"dropped":[]}}"#
        );
        let payload = omo_device_config::envelope::seal_raw(&t.to_string(), &key, msg.as_bytes());
        let b = check_presence(&t, &entry(&key), &payload, 0, ts(NOW), LIMITS).unwrap();
        assert_eq!(b.events.len(), 1);
        assert_eq!(b.rejected.len(), 1);
        assert_eq!(b.rejected[0].seqs, SeqRanges::from_range(1, 1));
        assert!(b.rejected[0].reason.contains("beacon"), "{:?}", b.rejected);
        assert_eq!(b.unreadable.len(), 1);
    }
}
