//! Beacon ids in their canonical text form, as used in payloads, configs and APIs:
//! `ibeacon:{UUID}:{major}:{minor}`, `eddystone-uid:{namespace}:{instance}`,
//! `eddystone-eid:{eid}`, `altbeacon:{id1}:{id2}:{id3}`, `line:{hwid}`.
//!
//! Formatting always gives the canonical text (hex lower-case except the upper-case, hyphenated
//! iBeacon UUID). Parsing accepts hex in either case, so ids copied from vendor tools work, and
//! tells exactly which part is wrong. This is not the on-air frame codec; that lives in the gateway.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One beacon's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum BeaconId {
    IBeacon {
        uuid: [u8; 16],
        major: u16,
        minor: u16,
    },
    EddystoneUid {
        namespace: [u8; 10],
        instance: [u8; 6],
    },
    EddystoneEid {
        eid: [u8; 8],
    },
    AltBeacon {
        id1: [u8; 16],
        id2: u16,
        id3: u16,
    },
    Line {
        hwid: [u8; 5],
    },
}

/// What is wrong with a beacon id text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?}: {reason}")]
pub struct BeaconIdError {
    /// The text that was parsed (cut to 100 characters).
    pub input: String,
    pub reason: BeaconIdReason,
}

/// The reason inside a [`BeaconIdError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconIdReason {
    #[error("unknown beacon kind {0:?}; expected ibeacon, eddystone-uid, eddystone-eid, altbeacon or line")]
    UnknownKind(String),
    #[error("{kind} ids have {expected} parts after the kind, found {found}")]
    PartCount {
        kind: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{field} must be {expected} hex digits, found {found} characters")]
    HexLength {
        field: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("{field} has {found:?} at character {offset}, which is not a hex digit")]
    NotHex {
        field: &'static str,
        found: char,
        offset: usize,
    },
    #[error("uuid must be 8-4-4-4-12 hex digits with hyphens")]
    UuidShape,
    #[error("{field} {value:?} is not a decimal number")]
    NotANumber { field: &'static str, value: String },
    #[error("{field} {value} is out of range 0..=65535")]
    OutOfRange { field: &'static str, value: u64 },
}

impl BeaconId {
    /// The kind prefix of the canonical text.
    pub fn kind(&self) -> &'static str {
        match self {
            BeaconId::IBeacon { .. } => "ibeacon",
            BeaconId::EddystoneUid { .. } => "eddystone-uid",
            BeaconId::EddystoneEid { .. } => "eddystone-eid",
            BeaconId::AltBeacon { .. } => "altbeacon",
            BeaconId::Line { .. } => "line",
        }
    }
}

impl fmt::Display for BeaconId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BeaconId::IBeacon { uuid, major, minor } => {
                write!(f, "ibeacon:{}:{major}:{minor}", format_uuid(uuid))
            }
            BeaconId::EddystoneUid {
                namespace,
                instance,
            } => write!(
                f,
                "eddystone-uid:{}:{}",
                hex::encode(namespace),
                hex::encode(instance)
            ),
            BeaconId::EddystoneEid { eid } => write!(f, "eddystone-eid:{}", hex::encode(eid)),
            BeaconId::AltBeacon { id1, id2, id3 } => {
                write!(f, "altbeacon:{}:{id2}:{id3}", hex::encode(id1))
            }
            BeaconId::Line { hwid } => write!(f, "line:{}", hex::encode(hwid)),
        }
    }
}

/// Formats a 16-byte UUID upper-case with hyphens (8-4-4-4-12).
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let h = hex::encode_upper(uuid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl FromStr for BeaconId {
    type Err = BeaconIdError;

    fn from_str(s: &str) -> Result<Self, BeaconIdError> {
        parse(s).map_err(|reason| BeaconIdError {
            input: s.chars().take(100).collect(),
            reason,
        })
    }
}

impl TryFrom<String> for BeaconId {
    type Error = BeaconIdError;
    fn try_from(s: String) -> Result<Self, BeaconIdError> {
        s.parse()
    }
}

impl From<BeaconId> for String {
    fn from(id: BeaconId) -> String {
        id.to_string()
    }
}

fn parse(s: &str) -> Result<BeaconId, BeaconIdReason> {
    let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
    let parts: Vec<&str> = rest.split(':').collect();
    let expect = |kind: &'static str, n: usize| {
        if parts.len() == n {
            Ok(())
        } else {
            Err(BeaconIdReason::PartCount {
                kind,
                expected: n,
                found: if rest.is_empty() { 0 } else { parts.len() },
            })
        }
    };
    match kind {
        "ibeacon" => {
            expect("ibeacon", 3)?;
            Ok(BeaconId::IBeacon {
                uuid: parse_uuid(parts[0])?,
                major: parse_u16("major", parts[1])?,
                minor: parse_u16("minor", parts[2])?,
            })
        }
        "eddystone-uid" => {
            expect("eddystone-uid", 2)?;
            Ok(BeaconId::EddystoneUid {
                namespace: parse_hex("namespace", parts[0])?,
                instance: parse_hex("instance", parts[1])?,
            })
        }
        "eddystone-eid" => {
            expect("eddystone-eid", 1)?;
            Ok(BeaconId::EddystoneEid {
                eid: parse_hex("eid", parts[0])?,
            })
        }
        "altbeacon" => {
            expect("altbeacon", 3)?;
            Ok(BeaconId::AltBeacon {
                id1: parse_hex("id1", parts[0])?,
                id2: parse_u16("id2", parts[1])?,
                id3: parse_u16("id3", parts[2])?,
            })
        }
        "line" => {
            expect("line", 1)?;
            Ok(BeaconId::Line {
                hwid: parse_hex("hwid", parts[0])?,
            })
        }
        other => Err(BeaconIdReason::UnknownKind(
            other.chars().take(40).collect(),
        )),
    }
}

/// Parses exactly `N` bytes of hex (either case).
pub(crate) fn parse_hex<const N: usize>(
    field: &'static str,
    text: &str,
) -> Result<[u8; N], BeaconIdReason> {
    if let Some((offset, found)) = text.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(BeaconIdReason::NotHex {
            field,
            found,
            offset,
        });
    }
    if text.len() != 2 * N {
        return Err(BeaconIdReason::HexLength {
            field,
            expected: 2 * N,
            found: text.len(),
        });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).map_err(|_| BeaconIdReason::HexLength {
        field,
        expected: 2 * N,
        found: text.len(),
    })?;
    Ok(out)
}

/// Parses an 8-4-4-4-12 hyphenated UUID (either case).
pub fn parse_uuid(text: &str) -> Result<[u8; 16], BeaconIdReason> {
    let groups: Vec<&str> = text.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens != [8, 4, 4, 4, 12] {
        if let Some((offset, found)) = text
            .char_indices()
            .find(|(_, c)| !c.is_ascii_hexdigit() && *c != '-')
        {
            return Err(BeaconIdReason::NotHex {
                field: "uuid",
                found,
                offset,
            });
        }
        return Err(BeaconIdReason::UuidShape);
    }
    let joined: String = groups.concat();
    parse_hex::<16>("uuid", &joined).map_err(|e| match e {
        // Report the offset within the hyphenated text the user wrote.
        BeaconIdReason::NotHex { found, .. } => BeaconIdReason::NotHex {
            field: "uuid",
            found,
            offset: text.find(found).unwrap_or(0),
        },
        other => other,
    })
}

fn parse_u16(field: &'static str, text: &str) -> Result<u16, BeaconIdReason> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BeaconIdReason::NotANumber {
            field,
            value: text.chars().take(24).collect(),
        });
    }
    let value: u64 = text.parse().map_err(|_| BeaconIdReason::NotANumber {
        field,
        value: text.to_owned(),
    })?;
    u16::try_from(value).map_err(|_| BeaconIdReason::OutOfRange { field, value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UUID: &str = "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0";

    #[test]
    fn formats_canonically() {
        let id: BeaconId = format!("ibeacon:{}:1:2", UUID.to_lowercase())
            .parse()
            .unwrap();
        assert_eq!(id.to_string(), format!("ibeacon:{UUID}:1:2"));
        let id: BeaconId = "eddystone-uid:EDD1EBEAC04E5DEFA017:0BDB87539B67"
            .parse()
            .unwrap();
        assert_eq!(
            id.to_string(),
            "eddystone-uid:edd1ebeac04e5defa017:0bdb87539b67"
        );
        for canonical in [
            "eddystone-eid:0123456789abcdef",
            "altbeacon:0123456789abcdef0123456789abcdef:65535:0",
            "line:016a4b2c3d",
        ] {
            assert_eq!(
                canonical.parse::<BeaconId>().unwrap().to_string(),
                canonical
            );
        }
    }

    #[test]
    fn major_out_of_range_is_named() {
        let text = format!("ibeacon:{UUID}:70000:1");
        let err = text.parse::<BeaconId>().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("\"{text}\": major 70000 is out of range 0..=65535")
        );
    }

    #[test]
    fn precise_errors() {
        let reason = |s: &str| s.parse::<BeaconId>().unwrap_err().reason;
        assert_eq!(
            reason("line:016a4b2c"),
            BeaconIdReason::HexLength {
                field: "hwid",
                expected: 10,
                found: 8
            }
        );
        assert_eq!(
            reason("line:016a4b2cxz"),
            BeaconIdReason::NotHex {
                field: "hwid",
                found: 'x',
                offset: 8
            }
        );
        assert_eq!(
            reason("ibeacon:E2C56DB5DFFB48D2B060D0F5A71096E0:1:2"),
            BeaconIdReason::UuidShape
        );
        assert_eq!(
            reason(&format!("ibeacon:{UUID}:1")),
            BeaconIdReason::PartCount {
                kind: "ibeacon",
                expected: 3,
                found: 2
            }
        );
        assert_eq!(
            reason("ibeacon"),
            BeaconIdReason::PartCount {
                kind: "ibeacon",
                expected: 3,
                found: 0
            }
        );
        assert_eq!(
            reason(&format!("ibeacon:{UUID}:-1:2")),
            BeaconIdReason::NotANumber {
                field: "major",
                value: "-1".into()
            }
        );
        assert!(
            matches!(reason("bluetooth:1"), BeaconIdReason::UnknownKind(k) if k == "bluetooth")
        );
    }

    pub(crate) fn any_beacon_id() -> impl Strategy<Value = BeaconId> {
        prop_oneof![
            (any::<[u8; 16]>(), any::<u16>(), any::<u16>())
                .prop_map(|(uuid, major, minor)| BeaconId::IBeacon { uuid, major, minor }),
            (any::<[u8; 10]>(), any::<[u8; 6]>()).prop_map(|(namespace, instance)| {
                BeaconId::EddystoneUid {
                    namespace,
                    instance,
                }
            }),
            any::<[u8; 8]>().prop_map(|eid| BeaconId::EddystoneEid { eid }),
            (any::<[u8; 16]>(), any::<u16>(), any::<u16>())
                .prop_map(|(id1, id2, id3)| BeaconId::AltBeacon { id1, id2, id3 }),
            any::<[u8; 5]>().prop_map(|hwid| BeaconId::Line { hwid }),
        ]
    }

    proptest! {
        #[test]
        fn round_trips(id in any_beacon_id()) {
            let text = id.to_string();
            prop_assert_eq!(text.parse::<BeaconId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<BeaconId>(&json).unwrap(), id);
        }

        #[test]
        fn never_panics_on_text(s in ".{0,120}") {
            let _ = s.parse::<BeaconId>();
        }

        #[test]
        fn never_panics_on_near_misses(id in any_beacon_id(), cut in 0usize..80, junk in "[:0-9a-zA-Z-]{0,6}") {
            let text = id.to_string();
            let cut = cut.min(text.len());
            let _ = format!("{}{}", &text[..cut], junk).parse::<BeaconId>();
        }
    }
}
