//! Apple iBeacon: manufacturer data of company 0x004C, type 0x02, length 0x15, then the
//! proximity UUID, major, minor (big-endian) and the measured power at 1 m.

use omo_device_config::BeaconId;

/// Apple's Bluetooth company id.
pub const APPLE: u16 = 0x004C;
const PREFIX: [u8; 4] = [0x4C, 0x00, 0x02, 0x15];
/// Manufacturer data length: company id, type, length, 21 bytes of beacon.
pub const MFG_LEN: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IBeacon {
    pub uuid: [u8; 16],
    pub major: u16,
    pub minor: u16,
    /// Measured power at 1 m, dBm.
    pub tx_power: i8,
}

impl IBeacon {
    /// Decodes manufacturer data (company id included); `None` if it is not an iBeacon.
    pub fn decode(mfg: &[u8]) -> Option<IBeacon> {
        if mfg.len() != MFG_LEN || mfg[..4] != PREFIX {
            return None;
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&mfg[4..20]);
        Some(IBeacon {
            uuid,
            major: u16::from_be_bytes([mfg[20], mfg[21]]),
            minor: u16::from_be_bytes([mfg[22], mfg[23]]),
            tx_power: mfg[24] as i8,
        })
    }

    /// The manufacturer data (company id included).
    pub fn encode(&self) -> [u8; MFG_LEN] {
        let mut out = [0u8; MFG_LEN];
        out[..4].copy_from_slice(&PREFIX);
        out[4..20].copy_from_slice(&self.uuid);
        out[20..22].copy_from_slice(&self.major.to_be_bytes());
        out[22..24].copy_from_slice(&self.minor.to_be_bytes());
        out[24] = self.tx_power as u8;
        out
    }

    pub fn id(&self) -> BeaconId {
        BeaconId::IBeacon {
            uuid: self.uuid,
            major: self.major,
            minor: self.minor,
        }
    }
}
