//! `config` (cloud → gateway) and `config/ack` (gateway → cloud).
//!
//! The remote config document carries the parameters the cloud may change without a restart,
//! with a monotonic `version`; a gateway ignores a document not newer than its own. Unknown
//! keys are not errors here (a newer cloud may know more): they come back as `warnings`.

use serde::{Deserialize, Serialize};

use crate::params::{Filters, PresenceParams, StatusParams};
use crate::problems::{parse_document, Format, Problem, Problems, Reader, UnknownKeys};

/// Largest config document, in bytes of its `msg` JSON.
pub const MAX_CONFIG_BYTES: usize = 48 * 1024;

/// A gateway's remote config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteConfig {
    /// Monotonic; 0 is reserved for "none received".
    pub version: u64,
    #[serde(default)]
    pub presence: PresenceParams,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub status: StatusParams,
}

/// A config document read: what it says, and the keys this build did not know.
#[derive(Debug, Clone)]
pub struct ReadConfig {
    pub config: RemoteConfig,
    pub warnings: Vec<String>,
}

impl RemoteConfig {
    /// Reads and validates a document (the raw `msg` JSON of a verified envelope).
    /// Every problem is returned; unknown keys are warnings.
    pub fn read(json: &str) -> Result<ReadConfig, Vec<Problem>> {
        if json.len() > MAX_CONFIG_BYTES {
            return Err(vec![Problem::new(
                "",
                format!(
                    "config document is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                    json.len()
                ),
            )]);
        }
        let doc = parse_document(json, Format::Json).map_err(|p| vec![p])?;
        let mut r = Reader::new(UnknownKeys::Warnings);
        r.top_level(&doc, &["version", "presence", "filters", "status"]);
        let version = r.required::<u64>(&doc, "version");
        let presence = r.optional::<PresenceParams>(&doc, "presence");
        let filters = r.optional::<Filters>(&doc, "filters");
        let status = r.optional::<StatusParams>(&doc, "status");
        let mut p = Problems::default();
        if let Some(v) = version {
            p.check(v > 0, "version", "must be at least 1");
        }
        presence.iter().for_each(|x| x.validate("presence", &mut p));
        filters.iter().for_each(|x| x.validate("filters", &mut p));
        status.iter().for_each(|x| x.validate("status", &mut p));
        r.problems.extend(p.0);
        let (Some(version), Some(presence), Some(filters), Some(status)) =
            (version, presence, filters, status)
        else {
            return Err(r.problems);
        };
        let warnings = r.finish()?;
        Ok(ReadConfig {
            config: RemoteConfig {
                version,
                presence,
                filters,
                status,
            },
            warnings,
        })
    }

    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut p = Problems::default();
        p.check(self.version > 0, "version", "must be at least 1");
        self.presence.validate("presence", &mut p);
        self.filters.validate("filters", &mut p);
        self.status.validate("status", &mut p);
        p.into_result()
    }

    /// Encodes the document, refusing one over [`MAX_CONFIG_BYTES`].
    pub fn to_json(&self) -> Result<Vec<u8>, Problem> {
        let json = serde_json::to_vec(self).map_err(|e| Problem::new("", e.to_string()))?;
        if json.len() > MAX_CONFIG_BYTES {
            return Err(Problem::new(
                "",
                format!(
                    "config document is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                    json.len()
                ),
            ));
        }
        Ok(json)
    }
}

/// The gateway's answer to a config document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigAck {
    pub version: u64,
    pub ok: bool,
    /// Why the document was refused (every problem, one per line), when `ok` is false.
    pub error: Option<String>,
    /// Unknown keys that were ignored.
    pub warnings: Vec<String>,
}

impl ConfigAck {
    /// The ack for a document that was applied.
    pub fn applied(read: &ReadConfig) -> ConfigAck {
        ConfigAck {
            version: read.config.version,
            ok: true,
            error: None,
            warnings: read.warnings.clone(),
        }
    }

    /// The ack for a refused document.
    pub fn refused(version: u64, problems: &[Problem]) -> ConfigAck {
        ConfigAck {
            version,
            ok: false,
            error: Some(
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            warnings: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = RemoteConfig::read(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn never_panics_on_json_like_text(s in "[{}\\[\\]:,\"a-z0-9.-]{0,120}") {
            let _ = RemoteConfig::read(&s);
        }
    }

    #[test]
    fn unknown_keys_are_warnings() {
        let read = RemoteConfig::read(
            r#"{"version":4,"presence":{"stay_interval_s":30,"sparkle":true},"beta":{}}"#,
        )
        .unwrap();
        assert_eq!(read.config.presence.stay_interval_s, 30);
        assert_eq!(
            read.warnings,
            [
                "beta: unknown key ignored",
                "presence.sparkle: unknown key ignored"
            ]
        );
        let ack = ConfigAck::applied(&read);
        assert!(ack.ok && ack.warnings.len() == 2);
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = RemoteConfig::read(
            r#"{"version":0,"presence":{"ema_alpha":2},"status":{"heartbeat_s":1}}"#,
        )
        .unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["version", "presence.ema_alpha", "status.heartbeat_s"]
        );
        let ack = ConfigAck::refused(0, &problems);
        assert_eq!(ack.error.unwrap().lines().count(), 3);
    }

    #[test]
    fn missing_version_and_oversize_are_refused() {
        let problems = RemoteConfig::read(r#"{"presence":{}}"#).unwrap_err();
        assert_eq!(
            (problems[0].key.as_str(), problems[0].message.as_str()),
            ("version", "missing")
        );
        let big = format!(
            r#"{{"version":1,"pad":"{}"}}"#,
            "x".repeat(MAX_CONFIG_BYTES)
        );
        assert!(RemoteConfig::read(&big).unwrap_err()[0]
            .message
            .contains("limit"));
    }
}
