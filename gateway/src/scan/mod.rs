//! Scan sources: where advertisements come from. Every source hands the daemon the same
//! [`Advert`] — the raw AD structures as on air, the RSSI and the time on the process clock —
//! so one decoder serves BlueZ, replay and tests.

pub mod replay;

#[cfg(feature = "bluetooth")]
pub mod bluez;

/// One received advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    /// The advertiser's address (used only to count devices; never published).
    pub addr: [u8; 6],
    pub rssi: i16,
    /// AD structures, as on air.
    pub data: Vec<u8>,
    /// When it was heard, milliseconds since the Unix epoch on the process clock.
    pub at_ms: i64,
}

/// Parses `AA:BB:CC:DD:EE:FF` (either case).
pub fn parse_addr(text: &str) -> Option<[u8; 6]> {
    omo_device_config::site::parse_bssid(text)
}
