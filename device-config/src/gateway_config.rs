//! The gateway's local config file (`gateway.toml`): identity, broker, scan source, presence
//! and filter defaults, outbox limits, data dir and logging. Every key is documented in
//! `device-config/examples/gateway.toml`. An unknown key is an error (a typo), and validation
//! reports every problem with its key. Secrets may come from the environment instead:
//! `OMO_GATEWAY_PASSWORD` and `OMO_GATEWAY_SIGNING_KEY` override the file.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::envelope::SigningKey;
use crate::ids::{GatewayId, StoreId};
use crate::params::{Filters, PresenceParams, StatusParams};
use crate::problems::{parse_document, Format, Problem, Problems, Reader, UnknownKeys};

/// Environment variable that overrides `broker.password`.
pub const PASSWORD_ENV: &str = "OMO_GATEWAY_PASSWORD";
/// Environment variable that overrides `broker.signing_key`.
pub const SIGNING_KEY_ENV: &str = "OMO_GATEWAY_SIGNING_KEY";

/// The whole `gateway.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayConfig {
    pub identity: Identity,
    pub broker: Broker,
    #[serde(default)]
    pub scan: Scan,
    #[serde(default)]
    pub presence: PresenceParams,
    #[serde(default)]
    pub filters: Filters,
    #[serde(default)]
    pub status: StatusParams,
    #[serde(default)]
    pub outbox: Outbox,
    pub data: Data,
    #[serde(default)]
    pub log: Log,
}

/// Which store and gateway this is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub store: StoreId,
    pub gateway: GatewayId,
}

/// How to reach the MQTT broker. The username is always the gateway id (DESIGN.md: username =
/// client id = gateway id), which is what provisioning registers and the ACL names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broker {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// PEM file of the CA that signed the broker's certificate (mqtts only; default: system roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub password: Option<String>,
    /// 64 hex digits; signs everything the gateway sends and checks what it receives.
    #[serde(default)]
    pub signing_key: Option<String>,
    #[serde(default = "default_keep_alive")]
    pub keep_alive_s: u16,
}

fn default_keep_alive() -> u16 {
    30
}

/// The source of advertisements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanSource {
    /// A Bluetooth adapter through BlueZ.
    Bluez,
    /// JSON Lines of recorded or simulated sightings.
    Replay,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scan {
    pub source: ScanSource,
    /// BlueZ adapter name; empty: the first adapter.
    pub adapter: String,
    /// Replay file, or `-` for standard input (replay only).
    pub replay_file: Option<PathBuf>,
    /// Pace the replay by its `ts` at the `--clock` speed; false: as fast as possible.
    pub replay_pace: bool,
    /// A scan that delivers nothing for this long is restarted.
    pub silence_restart_s: u32,
}

impl Default for Scan {
    fn default() -> Scan {
        Scan {
            source: ScanSource::Bluez,
            adapter: String::new(),
            replay_file: None,
            replay_pace: true,
            silence_restart_s: 60,
        }
    }
}

/// The store-and-forward outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outbox {
    /// Oldest events are dropped (and reported as dropped) beyond this many bytes.
    pub max_bytes: u64,
    /// Events older than this are dropped (and reported); at least the cloud's recovery time.
    pub max_age_s: u64,
    /// sled page cache, MiB: store hardware has little memory.
    pub cache_mb: u32,
    /// A batch not acknowledged within this is resent (with backoff and jitter).
    pub resend_interval_s: u32,
    /// The resend backoff stops growing here.
    pub resend_backoff_max_s: u32,
    /// Unacknowledged batches in flight at once.
    pub max_in_flight: u32,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox {
            max_bytes: 64 * 1024 * 1024,
            max_age_s: 7 * 86_400,
            cache_mb: 4,
            resend_interval_s: 15,
            resend_backoff_max_s: 300,
            max_in_flight: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    /// Where the outbox and the last good remote config live.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `omo_gateway=debug,info`.
    pub level: String,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl GatewayConfig {
    /// The top-level sections.
    pub const SECTIONS: [&'static str; 9] = [
        "identity", "broker", "scan", "presence", "filters", "status", "outbox", "data", "log",
    ];

    /// Parses and validates `gateway.toml` text, with secrets overridden from `env`
    /// (pass `|k| std::env::var(k).ok()` in production). Returns every problem: each section
    /// is read and checked on its own, so one bad value does not hide the others.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<GatewayConfig, Vec<Problem>> {
        let doc = parse_document(text, Format::Toml).map_err(|p| vec![p])?;
        let mut r = Reader::new(UnknownKeys::Errors);
        r.top_level(&doc, &Self::SECTIONS);
        let identity = r.required::<Identity>(&doc, "identity");
        let broker = r.required::<Broker>(&doc, "broker").map(|mut b| {
            if let Some(pw) = env(PASSWORD_ENV) {
                b.password = Some(pw);
            }
            if let Some(key) = env(SIGNING_KEY_ENV) {
                b.signing_key = Some(key);
            }
            b
        });
        let scan = r.optional::<Scan>(&doc, "scan");
        let presence = r.optional::<PresenceParams>(&doc, "presence");
        let filters = r.optional::<Filters>(&doc, "filters");
        let status = r.optional::<StatusParams>(&doc, "status");
        let outbox = r.optional::<Outbox>(&doc, "outbox");
        let data = r.required::<Data>(&doc, "data");
        let log = r.optional::<Log>(&doc, "log");
        // Check whatever could be read, even when other sections could not.
        let mut p = Problems::default();
        broker.iter().for_each(|x| x.validate(&mut p));
        scan.iter().for_each(|x| x.validate(&mut p));
        presence.iter().for_each(|x| x.validate("presence", &mut p));
        filters.iter().for_each(|x| x.validate("filters", &mut p));
        status.iter().for_each(|x| x.validate("status", &mut p));
        outbox.iter().for_each(|x| x.validate(&mut p));
        data.iter().for_each(|x| x.validate(&mut p));
        log.iter().for_each(|x| x.validate(&mut p));
        let mut problems = r.problems;
        problems.extend(p.0);
        let (
            Some(identity),
            Some(broker),
            Some(scan),
            Some(presence),
            Some(filters),
            Some(status),
            Some(outbox),
            Some(data),
            Some(log),
        ) = (
            identity, broker, scan, presence, filters, status, outbox, data, log,
        )
        else {
            return Err(problems);
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(GatewayConfig {
            identity,
            broker,
            scan,
            presence,
            filters,
            status,
            outbox,
            data,
            log,
        })
    }

    /// Checks every value; returns every problem.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut p = Problems::default();
        self.broker.validate(&mut p);
        self.scan.validate(&mut p);
        self.presence.validate("presence", &mut p);
        self.filters.validate("filters", &mut p);
        self.status.validate("status", &mut p);
        self.outbox.validate(&mut p);
        self.data.validate(&mut p);
        self.log.validate(&mut p);
        p.into_result()
    }

    /// The broker username: always the gateway id.
    pub fn username(&self) -> &str {
        self.identity.gateway.as_str()
    }

    /// The signing key, once `validate` has passed.
    pub fn signing_key(&self) -> Option<SigningKey> {
        self.broker
            .signing_key
            .as_deref()
            .and_then(|k| SigningKey::from_hex(k).ok())
    }
}

impl Broker {
    fn validate(&self, p: &mut Problems) {
        match self.url.split_once("://") {
            Some(("mqtt" | "mqtts", rest)) => {
                let (host, port) = rest.rsplit_once(':').unwrap_or((rest, "1883"));
                p.check(
                    !host.is_empty() && !host.contains('/'),
                    "broker.url",
                    format!("{:?} has no host", self.url),
                );
                p.check(
                    port.parse::<u16>().is_ok_and(|n| n > 0),
                    "broker.url",
                    format!("{:?} has no valid port", self.url),
                );
            }
            _ => p.push(
                "broker.url",
                format!("{:?} must start with mqtt:// or mqtts://", self.url),
            ),
        }
        if self.ca_file.is_some() && !self.url.starts_with("mqtts://") {
            p.push("broker.ca_file", "only used with an mqtts:// url");
        }
        match &self.password {
            None => p.push(
                "broker.password",
                format!("missing (set it here or in {PASSWORD_ENV})"),
            ),
            Some(pw) => p.check(!pw.is_empty(), "broker.password", "is empty"),
        }
        match self.signing_key.as_deref().map(SigningKey::from_hex) {
            None => p.push(
                "broker.signing_key",
                format!("missing (set it here or in {SIGNING_KEY_ENV})"),
            ),
            Some(Err(e)) => p.push("broker.signing_key", e.to_string()),
            Some(Ok(_)) => {}
        }
        p.check(
            (5..=600).contains(&self.keep_alive_s),
            "broker.keep_alive_s",
            format!("{} s is not in 5..=600", self.keep_alive_s),
        );
    }
}

impl Scan {
    fn validate(&self, p: &mut Problems) {
        match (self.source, &self.replay_file) {
            (ScanSource::Replay, None) => {
                p.push("scan.replay_file", "required when scan.source = \"replay\"")
            }
            (ScanSource::Bluez, Some(_)) => p.push(
                "scan.replay_file",
                "only used when scan.source = \"replay\"",
            ),
            _ => {}
        }
        p.check(
            (5..=3600).contains(&self.silence_restart_s),
            "scan.silence_restart_s",
            format!("{} s is not in 5..=3600", self.silence_restart_s),
        );
    }
}

impl Outbox {
    fn validate(&self, p: &mut Problems) {
        p.check(
            self.max_bytes >= 1024 * 1024,
            "outbox.max_bytes",
            format!("{} is below 1 MiB", self.max_bytes),
        );
        p.check(
            self.max_age_s >= 3600,
            "outbox.max_age_s",
            format!(
                "{} s is below one hour, shorter than a cloud may take to recover",
                self.max_age_s
            ),
        );
        p.check(
            (1..=256).contains(&self.cache_mb),
            "outbox.cache_mb",
            format!("{} is not in 1..=256", self.cache_mb),
        );
        p.check(
            (1..=3600).contains(&self.resend_interval_s),
            "outbox.resend_interval_s",
            format!("{} s is not in 1..=3600", self.resend_interval_s),
        );
        p.check(
            self.resend_backoff_max_s >= self.resend_interval_s,
            "outbox.resend_backoff_max_s",
            format!(
                "{} s is below resend_interval_s ({} s)",
                self.resend_backoff_max_s, self.resend_interval_s
            ),
        );
        p.check(
            (1..=1024).contains(&self.max_in_flight),
            "outbox.max_in_flight",
            format!("{} is not in 1..=1024", self.max_in_flight),
        );
    }
}

impl Data {
    fn validate(&self, p: &mut Problems) {
        p.check(!self.dir.as_os_str().is_empty(), "data.dir", "is empty");
    }
}

impl Log {
    fn validate(&self, p: &mut Problems) {
        p.check(!self.level.trim().is_empty(), "log.level", "is empty");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MINIMAL: &str = r#"
[identity]
store = "s1"
gateway = "g1"
[broker]
url = "mqtt://127.0.0.1:1883"
password = "pw"
signing_key = "0000000000000000000000000000000000000000000000000000000000000000"
[data]
dir = "/tmp/g1"
"#;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = GatewayConfig::from_toml(MINIMAL, no_env).unwrap();
        assert_eq!(c.username(), "g1");
        assert_eq!(c.presence, PresenceParams::default());
        assert_eq!(c.scan.source, ScanSource::Bluez);
        assert!(c.signing_key().is_some());
    }

    #[test]
    fn env_overrides_secrets() {
        let text = MINIMAL.replace("password = \"pw\"\n", "");
        let env = |k: &str| (k == PASSWORD_ENV).then(|| "from-env".to_string());
        assert_eq!(
            GatewayConfig::from_toml(&text, env)
                .unwrap()
                .broker
                .password
                .as_deref(),
            Some("from-env")
        );
        let problems = GatewayConfig::from_toml(&text, no_env).unwrap_err();
        assert_eq!(problems[0].key, "broker.password");
    }

    #[test]
    fn reports_every_problem_with_its_key() {
        let text = MINIMAL
            .replace("mqtt://127.0.0.1:1883", "http://x")
            .replace("[data]", "[presence]\nenter_rssi_dbm = -90\nstay_intervl_s = 5\n[scan]\nsource = \"replay\"\n[data]");
        let problems = GatewayConfig::from_toml(&text, no_env).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "presence.stay_intervl_s",
                "broker.url",
                "scan.replay_file",
                "presence.exit_rssi_dbm"
            ],
            "{problems:?}"
        );
        assert_eq!(problems[0].message, "unknown key");
    }

    #[test]
    fn type_errors_do_not_hide_other_problems() {
        let text = MINIMAL
            .replace("gateway = \"g1\"", "gateway = \"g/1\"")
            .replace("[data]", "[outbox]\ncache_mb = \"four\"\n[presence]\nema_alpha = 7\nsmoothing = \"median\"\n[log]\nlevel = \"\"\n[data]");
        let problems = GatewayConfig::from_toml(&text, no_env).unwrap_err();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "identity.gateway",
                "presence.smoothing",
                "outbox.cache_mb",
                "log.level"
            ],
            "{problems:?}"
        );
        assert!(
            problems[0].message.contains("'/' at byte 1"),
            "{}",
            problems[0]
        );
        assert!(
            problems[2].message.contains("invalid type"),
            "{}",
            problems[2]
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let text = String::from_utf8_lossy(&bytes);
            let _ = GatewayConfig::from_toml(&text, no_env);
        }

        #[test]
        fn never_panics_on_mangled_config(cut in 0usize..400, junk in ".{0,12}") {
            let cut = cut.min(MINIMAL.len());
            let text = format!("{}{}{}", &MINIMAL[..cut], junk, &MINIMAL[cut..]);
            let _ = GatewayConfig::from_toml(&text, no_env);
        }
    }
}
