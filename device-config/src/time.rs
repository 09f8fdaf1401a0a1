//! Timestamps on the wire: RFC 3339 in UTC with milliseconds (`2026-11-23T09:00:00.123Z`).
//! Parsing accepts any RFC 3339 offset and converts to UTC.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time as payloads carry it, at millisecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Wraps a time, truncated to whole milliseconds so it survives the wire unchanged.
    pub fn new(t: DateTime<Utc>) -> Timestamp {
        Timestamp(
            DateTime::from_timestamp_millis(t.timestamp_millis())
                .expect("a DateTime's own millisecond count is in range"),
        )
    }

    /// Milliseconds since the Unix epoch; `None` outside chrono's range.
    pub fn from_millis(ms: i64) -> Option<Timestamp> {
        DateTime::from_timestamp_millis(ms).map(Timestamp)
    }

    pub fn millis(self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn datetime(self) -> DateTime<Utc> {
        self.0
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Timestamp {
        Timestamp::new(t)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Timestamp, chrono::ParseError> {
        DateTime::parse_from_rfc3339(s).map(|t| Timestamp::new(t.with_timezone(&Utc)))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        text.parse()
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_utc_millis() {
        let t: Timestamp = "2026-11-23T18:00:00.1234+09:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-23T09:00:00.123Z");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2026-11-23T09:00:00.123Z\""
        );
        let err = serde_json::from_str::<Timestamp>("\"yesterday\"").unwrap_err();
        assert!(err
            .to_string()
            .contains("\"yesterday\" is not an RFC 3339 time"));
    }

    proptest! {
        #[test]
        fn round_trips(ms in -62_000_000_000_000i64..250_000_000_000_000i64) {
            let t = Timestamp::from_millis(ms).unwrap();
            prop_assert_eq!(t.to_string().parse::<Timestamp>().unwrap(), t);
        }

        #[test]
        fn never_panics(s in ".{0,40}") {
            let _ = s.parse::<Timestamp>();
        }
    }
}
