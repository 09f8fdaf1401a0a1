//! Store, gateway and zone ids: the names that appear in MQTT topics, broker ACL and password
//! files, and the registry. Not beacon ids (see `beacon_id`), which have their own grammar.
//!
//! An id is 1..=64 bytes of `A-Z a-z 0-9 - _ .`. That is stricter than MQTT needs (it forbids
//! `/`, `+`, `#` and NUL) because the same id is a Mosquitto username, where `:` and whitespace
//! would break the password and ACL files.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest id, in bytes.
pub const MAX_ID_LEN: usize = 64;

/// Why a text is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} id is empty")]
    Empty { what: &'static str },
    #[error("{what} id is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} id {id:?} has {found:?} at byte {offset}; ids use only A-Z a-z 0-9 - _ .")]
    BadChar {
        what: &'static str,
        id: String,
        found: char,
        offset: usize,
    },
}

fn check_id(what: &'static str, id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty { what });
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            what,
            len: id.len(),
        });
    }
    if let Some((offset, found)) = id
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(IdError::BadChar {
            what,
            id: id.to_owned(),
            found,
            offset,
        });
    }
    Ok(())
}

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Checks and wraps an id.
            pub fn new(id: impl Into<String>) -> Result<Self, IdError> {
                let id = id.into();
                check_id($what, &id)?;
                Ok(Self(id))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

define_id!(
    /// A store's id.
    StoreId,
    "store"
);
define_id!(
    /// A gateway's id; also its MQTT client id and broker username.
    GatewayId,
    "gateway"
);
define_id!(
    /// A zone's id (beacon, gateway, Wi-Fi zone or geofence).
    ZoneId,
    "zone"
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_safe_charset() {
        assert_eq!(GatewayId::new("gw-01_a.b").unwrap().as_str(), "gw-01_a.b");
    }

    #[test]
    fn rejects_mqtt_specials_empty_and_long() {
        for bad in ["a/b", "a+b", "a#b", "a\0b", "a b", "a:b", "店"] {
            let err = StoreId::new(bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    IdError::BadChar { offset: 1, .. } | IdError::BadChar { offset: 0, .. }
                ),
                "{bad}: {err}"
            );
        }
        assert_eq!(StoreId::new(""), Err(IdError::Empty { what: "store" }));
        assert!(matches!(
            StoreId::new("x".repeat(65)),
            Err(IdError::TooLong { len: 65, .. })
        ));
        assert!(StoreId::new("x".repeat(64)).is_ok());
    }

    #[test]
    fn error_names_the_byte() {
        let err = GatewayId::new("gw/1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "gateway id \"gw/1\" has '/' at byte 2; ids use only A-Z a-z 0-9 - _ ."
        );
    }

    #[test]
    fn serde_checks_ids() {
        let ok: StoreId = serde_json::from_str("\"s1\"").unwrap();
        assert_eq!(ok.as_str(), "s1");
        assert!(serde_json::from_str::<StoreId>("\"s/1\"").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let _ = ZoneId::new(s);
        }
    }
}
