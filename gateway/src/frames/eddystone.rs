//! Eddystone frames in service data of UUID 0xFEAA: UID (0x00), URL (0x10, with its scheme
//! prefixes and expansion codes), unencrypted TLM version 0 (0x20) and EID (0x30).
//! Eddystone's ranging data is the power at 0 m; the power at 1 m is 41 dB lower.

use omo_device_config::BeaconId;

/// The 16-bit service UUID Google registered for Eddystone.
pub const EDDYSTONE_SERVICE_UUID: u16 = 0xFEAA;
const UID: u8 = 0x00;
const URL: u8 = 0x10;
const TLM: u8 = 0x20;
const EID: u8 = 0x30;
/// Loss over the first metre, used to turn power at 0 m into power at 1 m.
pub const LOSS_AT_1M_DB: i16 = 41;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EddystoneUid {
    /// Calibrated power at 0 m, dBm.
    pub tx_power: i8,
    pub namespace: [u8; 10],
    pub instance: [u8; 6],
}

/// URL scheme prefixes, by code.
const SCHEMES: [&str; 4] = ["http://www.", "https://www.", "http://", "https://"];
/// URL expansion codes 0x00..=0x0D.
const EXPANSIONS: [&str; 14] = [
    ".com/", ".org/", ".edu/", ".net/", ".info/", ".biz/", ".gov/", ".com", ".org", ".edu", ".net",
    ".info", ".biz", ".gov",
];
/// Longest encoded URL after the scheme byte.
pub const MAX_URL_BYTES: usize = 17;

/// An Eddystone-URL frame, kept in its compressed form; [`EddystoneUrl::url`] expands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EddystoneUrl {
    pub tx_power: i8,
    scheme: u8,
    encoded: [u8; MAX_URL_BYTES],
    len: u8,
}

/// Why a URL cannot be an Eddystone-URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("URL must start with http:// or https://")]
    Scheme,
    #[error("URL needs {0} bytes once compressed; Eddystone-URL holds 17")]
    TooLong(usize),
    #[error("URL has {0:?}, which Eddystone-URL cannot carry (printable ASCII only)")]
    Char(char),
}

impl EddystoneUrl {
    /// Compresses a URL with the longest matching scheme prefix and expansion codes.
    pub fn from_url(tx_power: i8, url: &str) -> Result<EddystoneUrl, UrlError> {
        let (scheme, rest) = SCHEMES
            .iter()
            .enumerate()
            .filter(|(_, p)| url.starts_with(**p))
            .max_by_key(|(_, p)| p.len())
            .map(|(i, p)| (i as u8, &url[p.len()..]))
            .ok_or(UrlError::Scheme)?;
        let mut encoded = Vec::with_capacity(MAX_URL_BYTES);
        let mut rest = rest;
        while let Some(c) = rest.chars().next() {
            let expansion = EXPANSIONS
                .iter()
                .enumerate()
                .filter(|(_, e)| rest.starts_with(**e))
                .max_by_key(|(_, e)| e.len());
            if let Some((code, e)) = expansion {
                encoded.push(code as u8);
                rest = &rest[e.len()..];
            } else if (0x21..0x7F).contains(&(c as u32)) {
                encoded.push(c as u8);
                rest = &rest[1..];
            } else {
                return Err(UrlError::Char(c));
            }
        }
        if encoded.len() > MAX_URL_BYTES {
            return Err(UrlError::TooLong(encoded.len()));
        }
        let mut buf = [0u8; MAX_URL_BYTES];
        buf[..encoded.len()].copy_from_slice(&encoded);
        Ok(EddystoneUrl {
            tx_power,
            scheme,
            encoded: buf,
            len: encoded.len() as u8,
        })
    }

    /// The expanded URL.
    pub fn url(&self) -> String {
        let mut out = String::from(SCHEMES[usize::from(self.scheme)]);
        for &b in &self.encoded[..usize::from(self.len)] {
            match EXPANSIONS.get(usize::from(b)) {
                Some(e) => out.push_str(e),
                None => out.push(char::from(b)),
            }
        }
        out
    }

    fn decode(data: &[u8]) -> Option<EddystoneUrl> {
        // data: frame type, tx power, scheme, encoded URL
        if data.len() < 3 || data.len() > 3 + MAX_URL_BYTES || data[2] > 3 {
            return None;
        }
        let encoded = &data[3..];
        // Codes 0x0E..=0x20 and 0x7F..=0xFF are reserved.
        if encoded
            .iter()
            .any(|&b| (0x0E..=0x20).contains(&b) || b >= 0x7F)
        {
            return None;
        }
        let mut buf = [0u8; MAX_URL_BYTES];
        buf[..encoded.len()].copy_from_slice(encoded);
        Some(EddystoneUrl {
            tx_power: data[1] as i8,
            scheme: data[2],
            encoded: buf,
            len: encoded.len() as u8,
        })
    }
}

/// Unencrypted telemetry (TLM version 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EddystoneTlm {
    /// Battery voltage, mV; 0 when the beacon does not measure it.
    pub battery_mv: u16,
    /// Temperature as signed 8.8 fixed point; 0x8000 (-128.0) when not measured.
    pub temperature_raw: i16,
    /// Advertisements sent since power-on or reboot.
    pub adv_count: u32,
    /// Time since power-on or reboot, in 0.1 s.
    pub uptime_ds: u32,
}

impl EddystoneTlm {
    /// Degrees Celsius, or `None` when the beacon does not measure temperature.
    pub fn temperature_c(&self) -> Option<f64> {
        (self.temperature_raw != i16::MIN).then(|| f64::from(self.temperature_raw) / 256.0)
    }

    pub fn uptime_s(&self) -> f64 {
        f64::from(self.uptime_ds) / 10.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EddystoneEid {
    /// Calibrated power at 0 m, dBm.
    pub tx_power: i8,
    pub eid: [u8; 8],
}

/// One Eddystone frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Eddystone {
    Uid(EddystoneUid),
    Url(EddystoneUrl),
    Tlm(EddystoneTlm),
    Eid(EddystoneEid),
}

impl Eddystone {
    /// Decodes service data after the UUID; `None` if it is no Eddystone frame we read
    /// (encrypted TLM included).
    pub fn decode(data: &[u8]) -> Option<Eddystone> {
        match *data.first()? {
            UID if data.len() == 18 || data.len() == 20 => {
                let mut namespace = [0u8; 10];
                let mut instance = [0u8; 6];
                namespace.copy_from_slice(&data[2..12]);
                instance.copy_from_slice(&data[12..18]);
                Some(Eddystone::Uid(EddystoneUid {
                    tx_power: data[1] as i8,
                    namespace,
                    instance,
                }))
            }
            URL => EddystoneUrl::decode(data).map(Eddystone::Url),
            TLM if data.len() == 14 && data[1] == 0x00 => Some(Eddystone::Tlm(EddystoneTlm {
                battery_mv: u16::from_be_bytes([data[2], data[3]]),
                temperature_raw: i16::from_be_bytes([data[4], data[5]]),
                adv_count: u32::from_be_bytes([data[6], data[7], data[8], data[9]]),
                uptime_ds: u32::from_be_bytes([data[10], data[11], data[12], data[13]]),
            })),
            EID if data.len() == 10 => {
                let mut eid = [0u8; 8];
                eid.copy_from_slice(&data[2..10]);
                Some(Eddystone::Eid(EddystoneEid {
                    tx_power: data[1] as i8,
                    eid,
                }))
            }
            _ => None,
        }
    }

    /// The service data after the UUID.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Eddystone::Uid(u) => {
                out.extend_from_slice(&[UID, u.tx_power as u8]);
                out.extend_from_slice(&u.namespace);
                out.extend_from_slice(&u.instance);
                out.extend_from_slice(&[0, 0]); // RFU
            }
            Eddystone::Url(u) => {
                out.extend_from_slice(&[URL, u.tx_power as u8, u.scheme]);
                out.extend_from_slice(&u.encoded[..usize::from(u.len)]);
            }
            Eddystone::Tlm(t) => {
                out.extend_from_slice(&[TLM, 0x00]);
                out.extend_from_slice(&t.battery_mv.to_be_bytes());
                out.extend_from_slice(&t.temperature_raw.to_be_bytes());
                out.extend_from_slice(&t.adv_count.to_be_bytes());
                out.extend_from_slice(&t.uptime_ds.to_be_bytes());
            }
            Eddystone::Eid(e) => {
                out.extend_from_slice(&[EID, e.tx_power as u8]);
                out.extend_from_slice(&e.eid);
            }
        }
    }

    /// The beacon id; URL and TLM frames identify no beacon.
    pub fn id(&self) -> Option<BeaconId> {
        match self {
            Eddystone::Uid(u) => Some(BeaconId::EddystoneUid {
                namespace: u.namespace,
                instance: u.instance,
            }),
            Eddystone::Eid(e) => Some(BeaconId::EddystoneEid { eid: e.eid }),
            Eddystone::Url(_) | Eddystone::Tlm(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_compression_and_expansion() {
        let u = EddystoneUrl::from_url(-20, "https://www.example.com/shop").unwrap();
        assert_eq!((u.scheme, u.len), (1, 12)); // "example" + .com/ + "shop"
        assert_eq!(u.url(), "https://www.example.com/shop");
        let u = EddystoneUrl::from_url(-20, "http://omo.info").unwrap();
        assert_eq!(u.url(), "http://omo.info");
        assert_eq!(EddystoneUrl::from_url(0, "ftp://x"), Err(UrlError::Scheme));
        assert!(matches!(
            EddystoneUrl::from_url(0, "https://a-very-long-host-name.example/x"),
            Err(UrlError::TooLong(_))
        ));
        assert_eq!(
            EddystoneUrl::from_url(0, "https://a b"),
            Err(UrlError::Char(' '))
        );
    }

    #[test]
    fn tlm_units() {
        let t = EddystoneTlm {
            battery_mv: 3000,
            temperature_raw: 0x1880, // 24.5 °C
            adv_count: 10,
            uptime_ds: 12345,
        };
        assert_eq!(t.temperature_c(), Some(24.5));
        assert_eq!(t.uptime_s(), 1234.5);
        let none = EddystoneTlm {
            temperature_raw: i16::MIN,
            ..t
        };
        assert_eq!(none.temperature_c(), None);
    }
}
