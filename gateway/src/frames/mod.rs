//! Beacon frames: decoding every frame found in one advertisement's AD structures, and
//! encoding frames into advertisements (for simulators and tests).
//!
//! One advertisement may carry several frames (an Eddystone UID beside a TLM, a LINE Beacon
//! beside its iBeacon). Decoding never allocates for the frames themselves, so the gateway can
//! decode every advertisement it hears; what the frames mean for presence is `presence`'s job.

pub mod altbeacon;
pub mod eddystone;
pub mod ibeacon;
pub mod line;

use omo_device_config::beacon_id::format_uuid;
use omo_device_config::params::FrameKind;
use omo_device_config::BeaconId;
use serde_json::{json, Value};

use crate::ad::{
    ad_structures, AdBuilder, AdError, AD_COMPLETE_16BIT_UUIDS, AD_FLAGS, AD_MANUFACTURER_DATA,
    AD_SERVICE_DATA_16,
};
pub use altbeacon::AltBeacon;
pub use eddystone::{
    Eddystone, EddystoneEid, EddystoneTlm, EddystoneUid, EddystoneUrl, EDDYSTONE_SERVICE_UUID,
};
pub use ibeacon::IBeacon;
pub use line::{LineBeacon, LINE_SERVICE_UUID};

/// One decoded beacon frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Frame {
    IBeacon(IBeacon),
    Eddystone(Eddystone),
    AltBeacon(AltBeacon),
    Line(LineBeacon),
}

impl Frame {
    /// The kind, named as `omo-gateway decode` and the gateway filters name it.
    pub fn kind(&self) -> FrameKind {
        match self {
            Frame::IBeacon(_) => FrameKind::Ibeacon,
            Frame::Eddystone(Eddystone::Uid(_)) => FrameKind::EddystoneUid,
            Frame::Eddystone(Eddystone::Url(_)) => FrameKind::EddystoneUrl,
            Frame::Eddystone(Eddystone::Tlm(_)) => FrameKind::EddystoneTlm,
            Frame::Eddystone(Eddystone::Eid(_)) => FrameKind::EddystoneEid,
            Frame::AltBeacon(_) => FrameKind::Altbeacon,
            Frame::Line(_) => FrameKind::LineBeacon,
        }
    }

    /// The beacon's id; `None` for frames that identify no beacon (Eddystone URL and TLM).
    pub fn beacon_id(&self) -> Option<BeaconId> {
        match self {
            Frame::IBeacon(b) => Some(b.id()),
            Frame::Eddystone(e) => e.id(),
            Frame::AltBeacon(b) => Some(b.id()),
            Frame::Line(b) => Some(b.id()),
        }
    }

    /// The power the frame says is received at 1 m, dBm, if it says.
    pub fn measured_power_1m(&self) -> Option<f64> {
        let at_0m = |tx: i8| Some(f64::from(i16::from(tx) - eddystone::LOSS_AT_1M_DB));
        match self {
            Frame::IBeacon(b) => Some(f64::from(b.tx_power)),
            Frame::AltBeacon(b) => Some(f64::from(b.ref_rssi)),
            Frame::Line(b) => b.measured_power().map(f64::from),
            Frame::Eddystone(Eddystone::Uid(u)) => at_0m(u.tx_power),
            Frame::Eddystone(Eddystone::Eid(e)) => at_0m(e.tx_power),
            Frame::Eddystone(Eddystone::Url(u)) => at_0m(u.tx_power),
            Frame::Eddystone(Eddystone::Tlm(_)) => None,
        }
    }

    /// The frame as `omo-gateway decode` prints it.
    pub fn to_json(&self) -> Value {
        let kind = serde_json::to_value(self.kind()).unwrap_or(Value::Null);
        let id = self.beacon_id().map(|i| i.to_string());
        match self {
            Frame::IBeacon(b) => json!({"kind": kind, "id": id, "uuid": format_uuid(&b.uuid),
                "major": b.major, "minor": b.minor, "tx_power": b.tx_power}),
            Frame::Eddystone(Eddystone::Uid(u)) => json!({"kind": kind, "id": id,
                "namespace": hex::encode(u.namespace), "instance": hex::encode(u.instance),
                "tx_power": u.tx_power}),
            Frame::Eddystone(Eddystone::Url(u)) => {
                json!({"kind": kind, "url": u.url(), "tx_power": u.tx_power})
            }
            Frame::Eddystone(Eddystone::Tlm(t)) => json!({"kind": kind, "version": 0,
                "battery_mv": t.battery_mv, "temperature_c": t.temperature_c(),
                "adv_count": t.adv_count, "uptime_s": t.uptime_s()}),
            Frame::Eddystone(Eddystone::Eid(e)) => json!({"kind": kind, "id": id,
                "eid": hex::encode(e.eid), "tx_power": e.tx_power}),
            Frame::AltBeacon(b) => json!({"kind": kind, "id": id, "id1": hex::encode(b.id1),
                "id2": b.id2, "id3": b.id3, "mfg_id": b.mfg_id, "ref_rssi": b.ref_rssi,
                "mfg_reserved": b.mfg_reserved}),
            Frame::Line(b) => {
                let mut v = json!({"kind": kind, "id": id, "hwid": hex::encode(b.hwid),
                    "tx_power": b.tx_power});
                if !b.secure_message().is_empty() {
                    v["secure_message"] = json!(hex::encode(b.secure_message()));
                }
                v
            }
        }
    }
}

/// Calls `each` with every frame in the advertisement, in order, and returns how many there
/// were. Stops at a malformed AD structure with its error (frames before it were delivered).
pub fn decode_each(adv: &[u8], mut each: impl FnMut(Frame)) -> Result<usize, AdError> {
    let mut n = 0;
    for ad in ad_structures(adv) {
        let ad = ad?;
        let frame = match ad.ad_type {
            AD_MANUFACTURER_DATA if ad.data.len() >= 4 => {
                let company = u16::from_le_bytes([ad.data[0], ad.data[1]]);
                if company == ibeacon::APPLE {
                    IBeacon::decode(ad.data).map(Frame::IBeacon)
                } else {
                    None
                }
                .or_else(|| AltBeacon::decode(ad.data).map(Frame::AltBeacon))
            }
            AD_SERVICE_DATA_16 if ad.data.len() >= 2 => {
                match u16::from_le_bytes([ad.data[0], ad.data[1]]) {
                    EDDYSTONE_SERVICE_UUID => {
                        Eddystone::decode(&ad.data[2..]).map(Frame::Eddystone)
                    }
                    LINE_SERVICE_UUID => LineBeacon::decode(&ad.data[2..]).map(Frame::Line),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(frame) = frame {
            n += 1;
            each(frame);
        }
    }
    Ok(n)
}

/// Every frame in the advertisement, or the error of its first malformed AD structure.
pub fn decode(adv: &[u8]) -> Result<Vec<Frame>, AdError> {
    let mut frames = Vec::new();
    decode_each(adv, |f| frames.push(f))?;
    Ok(frames)
}

/// An advertisement carrying `frames` as a beacon would send them: flags, the list of service
/// UUIDs the frames use, then one AD structure per frame.
pub fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut uuids = Vec::new();
    for f in frames {
        let uuid = match f {
            Frame::Eddystone(_) => EDDYSTONE_SERVICE_UUID,
            Frame::Line(_) => LINE_SERVICE_UUID,
            _ => continue,
        };
        if !uuids.chunks(2).any(|c: &[u8]| c == uuid.to_le_bytes()) {
            uuids.extend_from_slice(&uuid.to_le_bytes());
        }
    }
    let mut adv = AdBuilder::new().push(AD_FLAGS, &[0x06]);
    if !uuids.is_empty() {
        adv = adv.push(AD_COMPLETE_16BIT_UUIDS, &uuids);
    }
    for f in frames {
        adv = match f {
            Frame::IBeacon(b) => adv.push(AD_MANUFACTURER_DATA, &b.encode()),
            Frame::AltBeacon(b) => adv.push(AD_MANUFACTURER_DATA, &b.encode()),
            Frame::Eddystone(e) => {
                let mut data = EDDYSTONE_SERVICE_UUID.to_le_bytes().to_vec();
                e.encode(&mut data);
                adv.push(AD_SERVICE_DATA_16, &data)
            }
            Frame::Line(b) => {
                let mut data = LINE_SERVICE_UUID.to_le_bytes().to_vec();
                b.encode(&mut data);
                adv.push(AD_SERVICE_DATA_16, &data)
            }
        };
    }
    adv.build()
}

#[cfg(test)]
mod tests;
