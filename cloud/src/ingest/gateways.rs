//! What the cloud knows about each gateway at run time, from its `status` heartbeats: online
//! or offline, its last heartbeat, and its clock offset (pure state, fed with received times).
//!
//! The offset estimate is the smallest `received − ts` of the last few heartbeats: network
//! and broker delay only ever add to that difference, so the smallest sample is the closest.
//! Events from a gateway whose clock is not synchronised are corrected by it.

use std::collections::{HashMap, VecDeque};

use omo_device_config::payload::{GatewayState, Status};
use omo_device_config::{GatewayId, Timestamp};
use serde::Serialize;

use crate::registry::{DesiredConfig, GatewayEntry};

/// Heartbeats the offset estimate looks back over.
const OFFSET_SAMPLES: usize = 8;

/// One gateway's run-time state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayRuntime {
    pub online: bool,
    pub last_status: Option<Status>,
    pub last_seen: Option<Timestamp>,
    /// Estimated `cloud clock − gateway clock`, milliseconds.
    pub clock_offset_ms: Option<i64>,
    /// The last `offline` heartbeat (a clean stop's or the last will) and when it arrived.
    #[serde(skip)]
    pub last_offline: Option<(Timestamp, Status)>,

    #[serde(skip)]
    samples: VecDeque<i64>,
}

impl GatewayRuntime {
    /// What to add to this gateway's event times: its offset when its clock is not
    /// synchronised, else nothing.
    pub fn correction_ms(&self) -> i64 {
        match &self.last_status {
            Some(s) if !s.clock_synced => self.clock_offset_ms.unwrap_or(0),
            _ => 0,
        }
    }
}

/// What a heartbeat changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub came_online: bool,
    pub went_offline: bool,
    /// The sample was beyond the believable offset and was ignored.
    pub offset_ignored: bool,
}

/// Every gateway's run-time state.
#[derive(Debug, Default)]
pub struct GatewayStates {
    states: HashMap<GatewayId, GatewayRuntime>,
}

impl GatewayStates {
    pub fn get(&self, gateway: &GatewayId) -> Option<&GatewayRuntime> {
        self.states.get(gateway)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&GatewayId, &GatewayRuntime)> {
        self.states.iter()
    }

    pub fn online_count(&self) -> usize {
        self.states.values().filter(|s| s.online).count()
    }

    /// Takes a heartbeat received at `received`.
    pub fn on_status(
        &mut self,
        gateway: &GatewayId,
        status: Status,
        received: Timestamp,
        max_offset_ms: i64,
    ) -> StatusChange {
        let state = self.states.entry(gateway.clone()).or_default();
        let was_online = state.online;
        state.online = status.state == GatewayState::Online;
        state.last_seen = Some(received);
        let sample = received.millis() - status.ts.millis();
        let offset_ignored = sample.abs() > max_offset_ms;
        if !offset_ignored {
            state.samples.push_back(sample);
            if state.samples.len() > OFFSET_SAMPLES {
                state.samples.pop_front();
            }
            state.clock_offset_ms = state.samples.iter().copied().min();
        }
        if status.state == GatewayState::Offline {
            state.last_offline = Some((received, status.clone()));
        }

        state.last_status = Some(status);
        StatusChange {
            came_online: state.online && !was_online,
            went_offline: !state.online && was_online,
            offset_ignored,
        }
    }
}

/// The config to publish to a gateway that reported `status`, if any (DESIGN.md, "Config
/// reconciliation"): it is online with another version than the desired one, and the desired
/// version was not refused.
pub fn config_to_send<'a>(entry: &'a GatewayEntry, status: &Status) -> Option<&'a DesiredConfig> {
    let desired = entry.desired.as_ref()?;
    let refused = entry
        .last_ack
        .as_ref()
        .is_some_and(|a| a.version == desired.version && !a.ok);
    (status.state == GatewayState::Online && status.config_version != desired.version && !refused)
        .then_some(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::broker_auth::PasswordHash;
    use omo_device_config::payload::ConfigAck;
    use omo_device_config::site;
    use omo_device_config::{SigningKey, StoreId};

    fn status(state: GatewayState, ts: &str, synced: bool, version: u64) -> Status {
        Status {
            state,
            ts: ts.parse().unwrap(),
            uptime_s: 1,
            outbox_depth: 0,
            adverts_per_s: 0.0,
            config_version: version,
            dropped: 0,
            sw_version: "t".into(),
            accepts_v: vec![1],
            clock_synced: synced,
            epoch: None,
            last_seq: None,
        }
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_offset_is_the_smallest_recent_sample_and_applies_only_unsynchronised() {
        let g = GatewayId::new("g").unwrap();
        let mut s = GatewayStates::default();
        // Gateway clock 600 s behind; delays of 300 ms, then 20 ms.
        let c = s.on_status(
            &g,
            status(GatewayState::Online, "2026-01-01T00:00:00.000Z", false, 0),
            at("2026-01-01T00:10:00.300Z"),
            86_400_000,
        );
        assert!(c.came_online);
        s.on_status(
            &g,
            status(GatewayState::Online, "2026-01-01T00:01:00.000Z", false, 0),
            at("2026-01-01T00:11:00.020Z"),
            86_400_000,
        );
        assert_eq!(s.get(&g).unwrap().clock_offset_ms, Some(600_020));
        assert_eq!(s.get(&g).unwrap().correction_ms(), 600_020);
        // A synchronised clock is trusted as it is.
        s.on_status(
            &g,
            status(GatewayState::Online, "2026-01-01T00:12:00.000Z", true, 0),
            at("2026-01-01T00:12:00.010Z"),
            86_400_000,
        );
        assert_eq!(s.get(&g).unwrap().correction_ms(), 0);
        // An absurd sample is ignored.
        let c = s.on_status(
            &g,
            status(GatewayState::Offline, "1990-01-01T00:00:00.000Z", false, 0),
            at("2026-01-01T00:13:00.000Z"),
            86_400_000,
        );
        assert!(c.offset_ignored && c.went_offline);
        assert_eq!(s.online_count(), 0);
    }

    #[test]
    fn configs_are_resent_unless_refused() {
        let key = SigningKey::generate();
        let mut entry = GatewayEntry {
            record: site::Gateway {
                id: GatewayId::new("g").unwrap(),
                store: StoreId::new("s").unwrap(),
                enabled: true,
                password_hash: String::new(),
                signing_key: key.to_hex(),
                location: None,
            },
            password: PasswordHash::new("x"),
            key,
            desired: None,
            last_ack: None,
        };
        let online = |v| status(GatewayState::Online, "2026-01-01T00:00:00.000Z", true, v);
        assert!(config_to_send(&entry, &online(0)).is_none());
        entry.desired = Some(DesiredConfig {
            version: 2,
            json: b"{\"version\":2}".to_vec(),
        });
        assert!(config_to_send(&entry, &online(1)).is_some());
        assert!(config_to_send(&entry, &online(2)).is_none());
        let offline = status(GatewayState::Offline, "2026-01-01T00:00:00.000Z", true, 1);
        assert!(config_to_send(&entry, &offline).is_none());
        entry.last_ack = Some(ConfigAck {
            version: 2,
            ok: false,
            error: Some("bad".into()),
            warnings: vec![],
        });
        assert!(config_to_send(&entry, &online(1)).is_none());
    }
}
