//! AltBeacon: manufacturer data of any company, beacon code 0xBEAC, a 20-byte beacon id
//! (id1: 16 bytes, id2 and id3: 2 bytes each, big-endian), the reference RSSI at 1 m and one
//! manufacturer-reserved byte.

use omo_device_config::BeaconId;

const CODE: [u8; 2] = [0xBE, 0xAC];
/// Manufacturer data length: company id, code, 20-byte id, reference RSSI, reserved.
pub const MFG_LEN: usize = 26;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AltBeacon {
    /// The advertiser's Bluetooth company id.
    pub mfg_id: u16,
    pub id1: [u8; 16],
    pub id2: u16,
    pub id3: u16,
    /// Average RSSI at 1 m, dBm.
    pub ref_rssi: i8,
    pub mfg_reserved: u8,
}

impl AltBeacon {
    /// Decodes manufacturer data (company id included); `None` if it is not an AltBeacon.
    pub fn decode(mfg: &[u8]) -> Option<AltBeacon> {
        if mfg.len() != MFG_LEN || mfg[2..4] != CODE {
            return None;
        }
        let mut id1 = [0u8; 16];
        id1.copy_from_slice(&mfg[4..20]);
        Some(AltBeacon {
            mfg_id: u16::from_le_bytes([mfg[0], mfg[1]]),
            id1,
            id2: u16::from_be_bytes([mfg[20], mfg[21]]),
            id3: u16::from_be_bytes([mfg[22], mfg[23]]),
            ref_rssi: mfg[24] as i8,
            mfg_reserved: mfg[25],
        })
    }

    /// The manufacturer data (company id included).
    pub fn encode(&self) -> [u8; MFG_LEN] {
        let mut out = [0u8; MFG_LEN];
        out[..2].copy_from_slice(&self.mfg_id.to_le_bytes());
        out[2..4].copy_from_slice(&CODE);
        out[4..20].copy_from_slice(&self.id1);
        out[20..22].copy_from_slice(&self.id2.to_be_bytes());
        out[22..24].copy_from_slice(&self.id3.to_be_bytes());
        out[24] = self.ref_rssi as u8;
        out[25] = self.mfg_reserved;
        out
    }

    pub fn id(&self) -> BeaconId {
        BeaconId::AltBeacon {
            id1: self.id1,
            id2: self.id2,
            id3: self.id3,
        }
    }
}
