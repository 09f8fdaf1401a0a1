//! LINE Beacon: the LINE Simple Beacon frame in service data of UUID 0xFE6F — frame type 0x02,
//! a 5-byte hardware id (HWID), the measured power and a 1–13 byte device message, which a
//! LINE Beacon (as opposed to a Simple Beacon) fills with its secure message.

use omo_device_config::BeaconId;

/// The 16-bit service UUID LINE registered.
pub const LINE_SERVICE_UUID: u16 = 0xFE6F;
const FRAME_TYPE: u8 = 0x02;
/// Longest device message.
pub const MAX_MESSAGE: usize = 13;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LineBeacon {
    pub hwid: [u8; 5],
    /// Measured power at 1 m, dBm; 0x7F (127) means "not given" in Simple Beacons.
    pub tx_power: i8,
    message: [u8; MAX_MESSAGE],
    message_len: u8,
}

impl LineBeacon {
    /// A frame; a message longer than 13 bytes is cut to 13.
    pub fn new(hwid: [u8; 5], tx_power: i8, message: &[u8]) -> LineBeacon {
        let n = message.len().min(MAX_MESSAGE);
        let mut buf = [0u8; MAX_MESSAGE];
        buf[..n].copy_from_slice(&message[..n]);
        LineBeacon {
            hwid,
            tx_power,
            message: buf,
            message_len: n as u8,
        }
    }

    /// The device (secure) message; empty when the frame carries none.
    pub fn secure_message(&self) -> &[u8] {
        &self.message[..usize::from(self.message_len)]
    }

    /// Measured power at 1 m, unless the frame says it is not given.
    pub fn measured_power(&self) -> Option<i8> {
        (self.tx_power != 0x7F).then_some(self.tx_power)
    }

    /// Decodes the service data after the UUID; `None` if it is not a LINE Beacon frame.
    pub fn decode(data: &[u8]) -> Option<LineBeacon> {
        if data.len() < 7 || data.len() > 7 + MAX_MESSAGE || data[0] != FRAME_TYPE {
            return None;
        }
        let mut hwid = [0u8; 5];
        hwid.copy_from_slice(&data[1..6]);
        Some(LineBeacon::new(hwid, data[6] as i8, &data[7..]))
    }

    /// The service data after the UUID.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(FRAME_TYPE);
        out.extend_from_slice(&self.hwid);
        out.push(self.tx_power as u8);
        out.extend_from_slice(self.secure_message());
    }

    pub fn id(&self) -> BeaconId {
        BeaconId::Line { hwid: self.hwid }
    }
}
