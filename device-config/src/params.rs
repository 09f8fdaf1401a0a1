//! The gateway parameters the cloud may change remotely: presence detection, frame filters and
//! the heartbeat. They appear both in the local `gateway.toml` (as defaults) and in the remote
//! config document, so they are defined once here, with their defaults and validation.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::beacon_id::{format_uuid, parse_hex, parse_uuid};
use crate::problems::{key, Problems};

/// How the presence engine smooths RSSI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Smoothing {
    /// A 1-D Kalman filter (constant-level model).
    Kalman,
    /// An exponential moving average.
    Ema,
}

/// Presence detection: smoothing, distance and the enter/stay/exit hysteresis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PresenceParams {
    pub smoothing: Smoothing,
    /// EMA weight of a new sample, in (0, 1].
    pub ema_alpha: f64,
    /// Kalman process noise, dB² per second: how fast the true level may drift.
    pub kalman_process_noise: f64,
    /// Kalman measurement noise, dB² (σ² of one RSSI reading).
    pub kalman_measurement_noise: f64,
    /// Log-distance path-loss exponent (2 free space, 2.5–4 indoors).
    pub path_loss_exponent: f64,
    /// Measured power at 1 m used when a frame carries none, dBm.
    pub default_measured_power_dbm: f64,
    /// Smoothed RSSI must stay at or above this for `enter_min_s` to enter, dBm.
    pub enter_rssi_dbm: f64,
    pub enter_min_s: f64,
    /// Smoothed RSSI below this for `exit_below_s` exits, dBm; must be below `enter_rssi_dbm`.
    pub exit_rssi_dbm: f64,
    pub exit_below_s: f64,
    /// No sighting at all for this long exits.
    pub exit_timeout_s: f64,
    /// A `stay` event is sent every this many seconds while present.
    pub stay_interval_s: u32,
    /// Count anonymous devices in range per minute and send `footfall` events.
    pub footfall: bool,
}

/// The smallest gap between enter and exit thresholds: closer ones flap on RSSI noise.
pub const MIN_HYSTERESIS_DB: f64 = 3.0;

impl Default for PresenceParams {
    fn default() -> PresenceParams {
        PresenceParams {
            smoothing: Smoothing::Kalman,
            ema_alpha: 0.3,
            kalman_process_noise: 0.5,
            kalman_measurement_noise: 36.0,
            path_loss_exponent: 2.2,
            default_measured_power_dbm: -59.0,
            enter_rssi_dbm: -80.0,
            enter_min_s: 10.0,
            exit_rssi_dbm: -88.0,
            exit_below_s: 15.0,
            exit_timeout_s: 30.0,
            stay_interval_s: 60,
            footfall: true,
        }
    }
}

impl PresenceParams {
    /// Records every problem under `prefix` (`presence`).
    pub fn validate(&self, prefix: &str, p: &mut Problems) {
        let k = |f| key(prefix, f);
        p.check(
            self.ema_alpha > 0.0 && self.ema_alpha <= 1.0,
            k("ema_alpha"),
            format!("{} is not in (0, 1]", self.ema_alpha),
        );
        for (field, v) in [
            ("kalman_process_noise", self.kalman_process_noise),
            ("kalman_measurement_noise", self.kalman_measurement_noise),
        ] {
            p.check(
                v > 0.0 && v.is_finite(),
                k(field),
                format!("{v} must be a positive number"),
            );
        }
        p.check(
            (1.0..=6.0).contains(&self.path_loss_exponent),
            k("path_loss_exponent"),
            format!("{} is not in 1.0..=6.0", self.path_loss_exponent),
        );
        for (field, v) in [
            (
                "default_measured_power_dbm",
                self.default_measured_power_dbm,
            ),
            ("enter_rssi_dbm", self.enter_rssi_dbm),
            ("exit_rssi_dbm", self.exit_rssi_dbm),
        ] {
            p.check(
                (-127.0..=20.0).contains(&v),
                k(field),
                format!("{v} dBm is not in -127..=20"),
            );
        }
        p.check(
            self.enter_rssi_dbm - self.exit_rssi_dbm >= MIN_HYSTERESIS_DB,
            k("exit_rssi_dbm"),
            format!(
                "{} dBm must be at least {MIN_HYSTERESIS_DB} dB below enter_rssi_dbm ({} dBm), or presence flaps on noise",
                self.exit_rssi_dbm, self.enter_rssi_dbm
            ),
        );
        for (field, v, min) in [
            ("enter_min_s", self.enter_min_s, 0.0),
            ("exit_below_s", self.exit_below_s, 1.0),
            ("exit_timeout_s", self.exit_timeout_s, 2.0),
        ] {
            p.check(
                v >= min && v <= 86_400.0,
                k(field),
                format!("{v} s is not in {min}..=86400"),
            );
        }
        p.check(
            (1..=86_400).contains(&self.stay_interval_s),
            k("stay_interval_s"),
            format!("{} s is not in 1..=86400", self.stay_interval_s),
        );
    }
}

/// A frame kind, named as `omo-gateway decode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    Ibeacon,
    EddystoneUid,
    EddystoneUrl,
    EddystoneTlm,
    EddystoneEid,
    Altbeacon,
    LineBeacon,
}

impl FrameKind {
    pub const ALL: [FrameKind; 7] = [
        FrameKind::Ibeacon,
        FrameKind::EddystoneUid,
        FrameKind::EddystoneUrl,
        FrameKind::EddystoneTlm,
        FrameKind::EddystoneEid,
        FrameKind::Altbeacon,
        FrameKind::LineBeacon,
    ];
}

macro_rules! hex_filter_id {
    ($(#[$doc:meta])* $name:ident, $len:literal, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; $len]);

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&hex::encode(self.0))
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<$name, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                parse_hex::<$len>($field, &text)
                    .map($name)
                    .map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_filter_id!(
    /// An Eddystone namespace (10 bytes, 20 hex digits).
    Namespace,
    10,
    "namespace"
);
hex_filter_id!(
    /// A LINE Beacon hardware id (5 bytes, 10 hex digits).
    Hwid,
    5,
    "hwid"
);

/// An iBeacon proximity UUID, written hyphenated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Serialize for Uuid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_uuid(&self.0))
    }
}

impl<'de> Deserialize<'de> for Uuid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Uuid, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_uuid(&text)
            .map(Uuid)
            .map_err(serde::de::Error::custom)
    }
}

/// Which frames the gateway reports. An empty allow list allows everything; deny wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filters {
    /// Frame kinds turned into presence.
    pub kinds: Vec<FrameKind>,
    /// Sightings weaker than this are ignored, dBm.
    pub min_rssi_dbm: f64,
    pub allow_ibeacon_uuids: Vec<Uuid>,
    pub deny_ibeacon_uuids: Vec<Uuid>,
    pub allow_eddystone_namespaces: Vec<Namespace>,
    pub deny_eddystone_namespaces: Vec<Namespace>,
    pub allow_line_hwids: Vec<Hwid>,
    pub deny_line_hwids: Vec<Hwid>,
}

impl Default for Filters {
    fn default() -> Filters {
        Filters {
            kinds: vec![
                FrameKind::Ibeacon,
                FrameKind::EddystoneUid,
                FrameKind::EddystoneEid,
                FrameKind::Altbeacon,
                FrameKind::LineBeacon,
            ],
            min_rssi_dbm: -100.0,
            allow_ibeacon_uuids: Vec::new(),
            deny_ibeacon_uuids: Vec::new(),
            allow_eddystone_namespaces: Vec::new(),
            deny_eddystone_namespaces: Vec::new(),
            allow_line_hwids: Vec::new(),
            deny_line_hwids: Vec::new(),
        }
    }
}

impl Filters {
    pub fn validate(&self, prefix: &str, p: &mut Problems) {
        p.check(
            (-127.0..=20.0).contains(&self.min_rssi_dbm),
            key(prefix, "min_rssi_dbm"),
            format!("{} dBm is not in -127..=20", self.min_rssi_dbm),
        );
        for (i, kind) in self.kinds.iter().enumerate() {
            if self.kinds[..i].contains(kind) {
                p.push(key(prefix, &format!("kinds[{i}]")), "listed twice");
            }
        }
    }
}

/// The heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusParams {
    /// Seconds between `status` heartbeats.
    pub heartbeat_s: u32,
}

impl Default for StatusParams {
    fn default() -> StatusParams {
        StatusParams { heartbeat_s: 30 }
    }
}

impl StatusParams {
    pub fn validate(&self, prefix: &str, p: &mut Problems) {
        p.check(
            (5..=3600).contains(&self.heartbeat_s),
            key(prefix, "heartbeat_s"),
            format!("{} s is not in 5..=3600", self.heartbeat_s),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let mut p = Problems::default();
        PresenceParams::default().validate("presence", &mut p);
        Filters::default().validate("filters", &mut p);
        StatusParams::default().validate("status", &mut p);
        assert!(p.is_empty(), "{:?}", p.0);
    }

    #[test]
    fn flapping_thresholds_are_refused() {
        let params = PresenceParams {
            enter_rssi_dbm: -80.0,
            exit_rssi_dbm: -79.0,
            ema_alpha: 0.0,
            ..PresenceParams::default()
        };
        let mut p = Problems::default();
        params.validate("presence", &mut p);
        let keys: Vec<_> = p.0.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(keys, ["presence.ema_alpha", "presence.exit_rssi_dbm"]);
        assert!(p.0[1].message.contains("flaps"));
    }

    #[test]
    fn filter_ids_parse_and_print() {
        let f: Filters = serde_json::from_str(
            r#"{"allow_ibeacon_uuids":["e2c56db5-dffb-48d2-b060-d0f5a71096e0"],"deny_line_hwids":["016A4B2C3D"]}"#,
        )
        .unwrap();
        let back = serde_json::to_value(&f).unwrap();
        assert_eq!(
            back["allow_ibeacon_uuids"][0],
            "E2C56DB5-DFFB-48D2-B060-D0F5A71096E0"
        );
        assert_eq!(back["deny_line_hwids"][0], "016a4b2c3d");
        let err = serde_json::from_str::<Filters>(r#"{"deny_line_hwids":["016A4B"]}"#).unwrap_err();
        assert!(
            err.to_string().contains("hwid must be 10 hex digits"),
            "{err}"
        );
    }
}
