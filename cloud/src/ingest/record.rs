//! What the event log holds (DESIGN.md, "The cloud's pipeline"): one record per accepted
//! observation — its source (a gateway, an app install, a LINE user), the observation, the
//! event time and the time the cloud received it — and a tick every second of the clock, so
//! later stages take their time from the log and a replay fires timeouts at the same point.

use omo_device_config::payload::{Epoch, PresenceEvent};
use omo_device_config::{BeaconId, GatewayId, SeqRanges, StoreId, Timestamp};
use serde::{Deserialize, Serialize};

/// One event-log record. JSON, tagged by `source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Record {
    /// A second of the clock passed.
    Tick { received: Timestamp },
    /// A gateway's presence event.
    Gateway(GatewayEvent),
    /// Seqs a gateway dropped unsent (outbox full): stored so loss is counted, not hidden.
    GatewayDropped {
        gateway: GatewayId,
        store: StoreId,
        epoch: Epoch,
        seqs: SeqRanges,
        received: Timestamp,
    },
    /// An app install's report.
    App(AppReport),
    /// A LINE webhook event.
    Line(LineEvent),
    /// An app's QR check-in at a store (or one of its zones).
    Checkin(Checkin),
    /// A purchase resolved to a customer (its row is in the purchases space): for their
    /// profile and for campaigns triggered by purchases.
    Purchase(PurchaseEvent),
    /// In place of a record about an erased customer: only its log time is kept, so offsets
    /// and every consumer's position stay as they were.
    Erased { received: Timestamp },
}

impl Record {
    /// When the cloud received it: pipeline time.
    pub fn received(&self) -> Timestamp {
        match self {
            Record::Tick { received }
            | Record::Erased { received }
            | Record::GatewayDropped { received, .. }
            | Record::Gateway(GatewayEvent { received, .. })
            | Record::App(AppReport { received, .. })
            | Record::Line(LineEvent { received, .. })
            | Record::Checkin(Checkin { received, .. })
            | Record::Purchase(PurchaseEvent { received, .. }) => *received,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("log records serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// A presence event from a gateway, with its time corrected for the gateway's clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayEvent {
    pub gateway: GatewayId,
    pub store: StoreId,
    pub epoch: Epoch,
    pub event: PresenceEvent,
    /// The event's `ts`, corrected by the gateway's clock offset when its clock was not
    /// synchronised (otherwise equal to it).
    pub event_ts: Timestamp,
    pub received: Timestamp,
}

/// What an app install reported: any of a GPS fix, a Wi-Fi scan, beacon sightings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppReport {
    pub install: String,
    pub customer: String,
    pub event_ts: Timestamp,
    pub received: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gps: Option<GpsFix>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wifi: Vec<WifiSighting>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub beacons: Vec<BeaconSighting>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GpsFix {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WifiSighting {
    /// Lower-case, colon-separated.
    pub bssid: String,
    pub rssi: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BeaconSighting {
    pub id: BeaconId,
    pub rssi: f64,
}

/// A QR check-in: the customer's app scanned the code of a store or zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkin {
    pub install: String,
    pub customer: String,
    pub store: StoreId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    pub event_ts: Timestamp,
    pub received: Timestamp,
}

/// A purchase as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseEvent {
    /// The purchase's id (`p_…`).
    pub purchase: String,
    pub customer: String,
    pub channel: crate::vocab::SaleChannel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreId>,
    /// When it was bought.
    pub event_ts: Timestamp,
    pub received: Timestamp,
    pub currency: String,
    pub total: f64,
    pub categories: std::collections::BTreeSet<String>,
}

/// A LINE webhook event the pipeline uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LineEvent {
    pub user: String,
    /// The customer the LINE user is linked to.
    pub customer: String,
    pub event_ts: Timestamp,
    pub received: Timestamp,
    pub kind: LineKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LineKind {
    /// The LINE app saw a LINE Beacon (`enter`, `banner` or `stay`).
    Beacon {
        beacon: BeaconId,
        beacon_type: String,
    },
    Follow,
    Unfollow,
    /// LINE's account link result for the nonce the brand issued (handled by identity, never
    /// stored in the log).
    AccountLink {
        ok: bool,
        nonce: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::payload::Sighting;

    #[test]
    fn records_round_trip() {
        let t: Timestamp = "2026-11-23T10:00:00.000Z".parse().unwrap();
        let records = [
            Record::Tick { received: t },
            Record::Gateway(GatewayEvent {
                gateway: GatewayId::new("g1").unwrap(),
                store: StoreId::new("s1").unwrap(),
                epoch: Epoch(7),
                event: PresenceEvent::Enter(Sighting {
                    seq: 3,
                    ts: t,
                    beacon: "line:016a4b2c3d".parse().unwrap(),
                    rssi: -60.0,
                    distance_m: 1.5,
                    seen_s: 0.0,
                }),
                event_ts: t,
                received: t,
            }),
            Record::Line(LineEvent {
                user: "U1".into(),
                customer: "c1".into(),
                event_ts: t,
                received: t,
                kind: LineKind::Beacon {
                    beacon: "line:016a4b2c3d".parse().unwrap(),
                    beacon_type: "enter".into(),
                },
            }),
        ];
        for r in records {
            assert_eq!(Record::decode(&r.encode()).unwrap(), r);
            assert_eq!(r.received(), t);
        }
    }
}
