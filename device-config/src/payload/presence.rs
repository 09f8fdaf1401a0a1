//! `presence` (gateway → cloud): a batch of presence events from one gateway's outbox epoch.
//!
//! An event's id is `{gateway}:{epoch}:{seq}`. The epoch is random, chosen when the outbox is
//! created, so a reinstalled gateway never reuses ids. A sealed batch is at most
//! [`MAX_PRESENCE_BYTES`]; [`seal_batches`] splits events to fit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::beacon_id::BeaconId;
use crate::envelope::{seal, sealed_overhead, EnvelopeError, SigningKey};
use crate::ids::{GatewayId, StoreId};
use crate::seq_ranges::SeqRanges;
use crate::time::Timestamp;

/// Largest sealed presence payload, in bytes.
pub const MAX_PRESENCE_BYTES: usize = 8 * 1024;

/// A gateway outbox's random epoch: 8 lower-case hex digits on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u32);

impl Epoch {
    /// A fresh random epoch, for a new outbox.
    pub fn random() -> Epoch {
        Epoch(rand::random())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Why a text is not an epoch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("epoch {0:?} is not 8 lower-case hex digits")]
pub struct EpochError(String);

impl FromStr for Epoch {
    type Err = EpochError;
    fn from_str(s: &str) -> Result<Epoch, EpochError> {
        let ok = s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .map(Epoch)
            .ok_or_else(|| EpochError(s.chars().take(20).collect()))
    }
}

impl Serialize for Epoch {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Epoch {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Epoch, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Which presence transition a sighting event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SightingKind {
    Enter,
    Stay,
    Exit,
}

/// One event of a batch. `kind` on the wire picks the variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum PresenceEvent {
    /// The gateway started hearing this beacon (past its enter hysteresis).
    Enter(Sighting),
    /// Still hearing it; sent every stay interval.
    Stay(Sighting),
    /// Stopped hearing it (timeout, or the signal stayed below the exit threshold).
    Exit(Sighting),
    /// Anonymous devices in range during one minute; never their addresses.
    Footfall(Footfall),
}

/// The body of an enter, stay or exit event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    pub seq: u64,
    pub ts: Timestamp,
    pub beacon: BeaconId,
    /// Smoothed RSSI, dBm.
    pub rssi: f64,
    /// Estimated distance from the path-loss model, metres.
    pub distance_m: f64,
    /// Seconds this beacon has been heard in this presence (0 at enter, dwell at stay/exit).
    pub seen_s: f64,
}

/// Devices counted in range during the minute starting at `ts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footfall {
    pub seq: u64,
    pub ts: Timestamp,
    pub devices: u32,
}

impl PresenceEvent {
    /// Builds an enter, stay or exit event.
    pub fn sighting(kind: SightingKind, body: Sighting) -> PresenceEvent {
        match kind {
            SightingKind::Enter => PresenceEvent::Enter(body),
            SightingKind::Stay => PresenceEvent::Stay(body),
            SightingKind::Exit => PresenceEvent::Exit(body),
        }
    }

    /// The transition and body of a sighting event; `None` for footfall.
    pub fn as_sighting(&self) -> Option<(SightingKind, &Sighting)> {
        match self {
            PresenceEvent::Enter(s) => Some((SightingKind::Enter, s)),
            PresenceEvent::Stay(s) => Some((SightingKind::Stay, s)),
            PresenceEvent::Exit(s) => Some((SightingKind::Exit, s)),
            PresenceEvent::Footfall(_) => None,
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            PresenceEvent::Enter(s) | PresenceEvent::Stay(s) | PresenceEvent::Exit(s) => s.seq,
            PresenceEvent::Footfall(f) => f.seq,
        }
    }

    pub fn ts(&self) -> Timestamp {
        match self {
            PresenceEvent::Enter(s) | PresenceEvent::Stay(s) | PresenceEvent::Exit(s) => s.ts,
            PresenceEvent::Footfall(f) => f.ts,
        }
    }

    /// The first non-finite number in the event, which JSON cannot carry.
    fn non_finite_field(&self) -> Option<&'static str> {
        let (_, s) = self.as_sighting()?;
        [
            ("rssi", s.rssi),
            ("distance_m", s.distance_m),
            ("seen_s", s.seen_s),
        ]
        .into_iter()
        .find(|(_, v)| !v.is_finite())
        .map(|(name, _)| name)
    }
}

/// A batch of events as the gateway sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceBatch {
    pub gateway: GatewayId,
    pub store: StoreId,
    pub epoch: Epoch,
    pub events: Vec<PresenceEvent>,
    /// Seqs the gateway dropped unsent because its outbox was full.
    pub dropped: SeqRanges,
}

/// One sealed payload and the seqs it carries (events and dropped ranges).
#[derive(Debug, Clone)]
pub struct SealedBatch {
    pub payload: Vec<u8>,
    pub seqs: SeqRanges,
}

/// Why a batch could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("event seq {seq} has a non-finite {field}")]
    NonFinite { seq: u64, field: &'static str },
    #[error("event seq {seq} alone needs {size} bytes, over the {limit}-byte limit")]
    EventTooLarge { seq: u64, size: usize, limit: usize },
    #[error("a {limit}-byte limit leaves no room for a batch header of {size} bytes")]
    LimitTooSmall { size: usize, limit: usize },
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
}

/// One planned payload: some dropped ranges, then some events.
#[derive(Default)]
struct Plan {
    ranges: Vec<(u64, u64)>,
    events: std::ops::Range<usize>,
}

/// Seals `dropped` and `events` into as few payloads of at most `limit` bytes as a greedy split
/// gives: dropped ranges first (spread over several payloads if there are very many), then the
/// events in order. Every seq given appears in exactly one payload.
pub fn seal_batches(
    topic: &str,
    key: &SigningKey,
    header: (&GatewayId, &StoreId, Epoch),
    events: &[PresenceEvent],
    dropped: &SeqRanges,
    limit: usize,
) -> Result<Vec<SealedBatch>, BatchError> {
    let (gateway, store, epoch) = header;
    let batch_of = |events: Vec<PresenceEvent>, dropped: SeqRanges| PresenceBatch {
        gateway: gateway.clone(),
        store: store.clone(),
        epoch,
        events,
        dropped,
    };
    let empty = serde_json::to_vec(&batch_of(Vec::new(), SeqRanges::new()))
        .map_err(EnvelopeError::Encode)?;
    let overhead = sealed_overhead() + empty.len();
    if overhead >= limit {
        return Err(BatchError::LimitTooSmall {
            size: overhead,
            limit,
        });
    }

    let plans = plan(events, dropped, overhead, limit)?;
    let mut sealed = Vec::with_capacity(plans.len());
    for plan in plans {
        if plan.ranges.is_empty() && plan.events.is_empty() {
            continue;
        }
        let mut dropped = SeqRanges::new();
        plan.ranges
            .iter()
            .for_each(|&(a, b)| dropped.insert_range(a, b));
        let mut seqs = dropped.clone();
        events[plan.events.clone()]
            .iter()
            .for_each(|e| seqs.insert(e.seq()));
        let payload = seal(topic, key, &batch_of(events[plan.events].to_vec(), dropped))?;
        debug_assert!(payload.len() <= limit, "planned split overflowed");
        sealed.push(SealedBatch { payload, seqs });
    }
    Ok(sealed)
}

/// Splits `dropped` and `events` greedily into payloads of at most `limit` bytes, counting item
/// sizes (a JSON array is its items joined by commas) over `overhead`, the size of a sealed
/// empty batch.
fn plan(
    events: &[PresenceEvent],
    dropped: &SeqRanges,
    overhead: usize,
    limit: usize,
) -> Result<Vec<Plan>, BatchError> {
    let mut plans = vec![Plan::default()];
    let mut size = overhead;
    for &(a, b) in dropped.ranges() {
        let len = format!("[{a},{b}]").len();
        let had_ranges = |plans: &Vec<Plan>| plans.last().is_some_and(|p| !p.ranges.is_empty());
        if size + usize::from(had_ranges(&plans)) + len > limit {
            plans.push(Plan::default());
            size = overhead;
        }
        size += usize::from(had_ranges(&plans)) + len;
        plans
            .last_mut()
            .expect("plans is non-empty")
            .ranges
            .push((a, b));
    }
    let mut start = 0;
    for (i, event) in events.iter().enumerate() {
        let len = event_len(event, overhead, limit)?;
        let comma = usize::from(i > start);
        if size + comma + len > limit {
            let plan = plans.last_mut().expect("plans is non-empty");
            plan.events = start..i;
            plans.push(Plan::default());
            start = i;
            size = overhead;
        }
        size += usize::from(i > start) + len;
    }
    let last = plans.last_mut().expect("plans is non-empty");
    last.events = start..events.len();
    Ok(plans)
}

/// The encoded size of `event`, which must be finite and fit a payload alone.
fn event_len(event: &PresenceEvent, overhead: usize, limit: usize) -> Result<usize, BatchError> {
    if let Some(field) = event.non_finite_field() {
        return Err(BatchError::NonFinite {
            seq: event.seq(),
            field,
        });
    }
    let len = serde_json::to_vec(event)
        .map_err(EnvelopeError::Encode)?
        .len();
    if overhead + len > limit {
        return Err(BatchError::EventTooLarge {
            seq: event.seq(),
            size: overhead + len,
            limit,
        });
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::open;
    use proptest::prelude::*;

    const TOPIC: &str = "omo/v1/stores/s1/gateways/g1/presence";

    fn sighting(seq: u64) -> PresenceEvent {
        PresenceEvent::Stay(Sighting {
            seq,
            ts: "2026-11-23T09:00:00.250Z".parse().unwrap(),
            beacon: "line:016a4b2c3d".parse().unwrap(),
            rssi: -67.5,
            distance_m: 2.4,
            seen_s: 120.0,
        })
    }

    fn header() -> (GatewayId, StoreId, Epoch) {
        (
            GatewayId::new("g1").unwrap(),
            StoreId::new("s1").unwrap(),
            Epoch(0x0bad_f00d),
        )
    }

    #[test]
    fn epoch_text() {
        assert_eq!(Epoch(0x0bad_f00d).to_string(), "0badf00d");
        assert_eq!("0badf00d".parse::<Epoch>().unwrap(), Epoch(0x0bad_f00d));
        for bad in ["0BADF00D", "badf00d", "0badf00d0", "+badf00d", ""] {
            assert!(bad.parse::<Epoch>().is_err(), "{bad}");
        }
    }

    #[test]
    fn splits_to_fit_and_keeps_every_event() {
        let key = SigningKey::from_bytes([1; 32]);
        let (g, s, e) = header();
        let events: Vec<_> = (1..=400).map(sighting).collect();
        let dropped = SeqRanges::from_range(1000, 1010);
        let sealed = seal_batches(
            TOPIC,
            &key,
            (&g, &s, e),
            &events,
            &dropped,
            MAX_PRESENCE_BYTES,
        )
        .unwrap();
        assert!(sealed.len() > 1);
        let mut back = Vec::new();
        for (i, b) in sealed.iter().enumerate() {
            assert!(b.payload.len() <= MAX_PRESENCE_BYTES);
            let batch: PresenceBatch = open(TOPIC, &key, &b.payload).unwrap();
            assert_eq!(
                batch.dropped.is_empty(),
                i > 0,
                "few dropped ranges share the first"
            );
            back.extend(batch.events);
        }
        assert_eq!(back, events);
        // Full payloads are close to the limit: the split is not wasteful.
        assert!(sealed[0].payload.len() > MAX_PRESENCE_BYTES - 200);
        assert!(sealed[0].seqs.covers(1000, 1010) && sealed[0].seqs.contains(1));
    }

    #[test]
    fn dropped_alone_is_a_batch_and_nothing_is_nothing() {
        let key = SigningKey::from_bytes([1; 32]);
        let (g, s, e) = header();
        let only = seal_batches(
            TOPIC,
            &key,
            (&g, &s, e),
            &[],
            &SeqRanges::from_range(3, 4),
            8192,
        )
        .unwrap();
        assert_eq!(only.len(), 1);
        assert!(
            seal_batches(TOPIC, &key, (&g, &s, e), &[], &SeqRanges::new(), 8192)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn very_many_dropped_ranges_spread_over_payloads() {
        let key = SigningKey::from_bytes([1; 32]);
        let (g, s, e) = header();
        // Every other seq dropped: 2,000 separate ranges, far more than one payload holds.
        let dropped: SeqRanges = (0..2000u64).map(|i| 1_000_000_000 + 2 * i).collect();
        let events: Vec<_> = (1..=50).map(sighting).collect();
        let sealed = seal_batches(
            TOPIC,
            &key,
            (&g, &s, e),
            &events,
            &dropped,
            MAX_PRESENCE_BYTES,
        )
        .unwrap();
        assert!(sealed.len() > 2);
        let mut all_dropped = SeqRanges::new();
        let mut back = Vec::new();
        for b in &sealed {
            assert!(b.payload.len() <= MAX_PRESENCE_BYTES);
            let batch: PresenceBatch = open(TOPIC, &key, &b.payload).unwrap();
            all_dropped.merge(&batch.dropped);
            back.extend(batch.events);
        }
        assert_eq!(all_dropped, dropped);
        assert_eq!(back, events);
    }

    #[test]
    fn refuses_what_cannot_fit_or_be_written() {
        let key = SigningKey::from_bytes([1; 32]);
        let (g, s, e) = header();
        let err = seal_batches(
            TOPIC,
            &key,
            (&g, &s, e),
            &[sighting(1)],
            &SeqRanges::new(),
            200,
        )
        .unwrap_err();
        assert!(
            matches!(err, BatchError::EventTooLarge { seq: 1, .. }),
            "{err}"
        );
        let err = seal_batches(
            TOPIC,
            &key,
            (&g, &s, e),
            &[],
            &SeqRanges::from_range(1, 2),
            100,
        )
        .unwrap_err();
        assert!(matches!(err, BatchError::LimitTooSmall { .. }), "{err}");
        let mut bad = sighting(2);
        if let PresenceEvent::Stay(s) = &mut bad {
            s.rssi = f64::NAN;
        }
        let err =
            seal_batches(TOPIC, &key, (&g, &s, e), &[bad], &SeqRanges::new(), 8192).unwrap_err();
        assert_eq!(err.to_string(), "event seq 2 has a non-finite rssi");
    }

    #[test]
    fn unknown_fields_are_ignored_and_missing_ones_named() {
        let json = r#"{"gateway":"g1","store":"s1","epoch":"0badf00d","future":1,
            "events":[{"kind":"footfall","seq":1,"ts":"2026-11-23T09:00:00Z","devices":4,"x":[]}],
            "dropped":[]}"#;
        let batch: PresenceBatch = crate::envelope::parse_message(json).unwrap();
        assert_eq!(batch.events[0].seq(), 1);
        let json = r#"{"gateway":"g1","store":"s1","epoch":"0badf00d","dropped":[],
            "events":[{"kind":"enter","seq":1,"ts":"2026-11-23T09:00:00Z","beacon":"line:016a4b2c3d","rssi":-60,"distance_m":1}]}"#;
        let err = crate::envelope::parse_message::<PresenceBatch>(json).unwrap_err();
        assert!(err.to_string().contains("missing field `seen_s`"), "{err}");
        assert!(err.to_string().contains("events[0]"), "{err}");
    }

    proptest! {
        #[test]
        fn epoch_never_panics(s in ".{0,12}") {
            let _ = s.parse::<Epoch>();
        }

        #[test]
        fn batch_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = crate::envelope::parse_message::<PresenceBatch>(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn split_round_trips(n in 0usize..120, limit in 600usize..9000, gap in 0u64..3, holes in proptest::collection::vec(0u64..5000, 0..300)) {
            let key = SigningKey::from_bytes([2; 32]);
            let (g, s, e) = header();
            let events: Vec<_> = (0..n as u64).map(|i| sighting(1 + i * (1 + gap))).collect();
            let dropped: SeqRanges = holes.into_iter().map(|h| 1_000_000 + 2 * h).collect();
            let sealed = seal_batches(TOPIC, &key, (&g, &s, e), &events, &dropped, limit).unwrap();
            let (mut back, mut back_dropped, mut seqs) = (Vec::new(), SeqRanges::new(), SeqRanges::new());
            for b in &sealed {
                prop_assert!(b.payload.len() <= limit);
                let batch: PresenceBatch = open(TOPIC, &key, &b.payload).unwrap();
                back_dropped.merge(&batch.dropped);
                back.extend(batch.events);
                seqs.merge(&b.seqs);
            }
            prop_assert_eq!(&back_dropped, &dropped);
            prop_assert_eq!(&back, &events);
            let mut expected = dropped.clone();
            events.iter().for_each(|e| expected.insert(e.seq()));
            prop_assert_eq!(seqs, expected);
        }
    }
}
