//! `status` (gateway → cloud, retained): the gateway's heartbeat, and its signed `offline`
//! last will. The cloud estimates the gateway's clock offset from `ts` and reconciles config
//! whenever `config_version` differs from the desired one.

use serde::{Deserialize, Serialize};

use crate::payload::Epoch;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayState {
    Online,
    Offline,
}

/// A gateway's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: GatewayState,
    pub ts: Timestamp,
    pub uptime_s: u64,
    /// Events written but not yet acknowledged by the cloud.
    pub outbox_depth: u64,
    pub adverts_per_s: f64,
    /// The version of the remote config in force (0: none received yet).
    pub config_version: u64,
    /// Events dropped since the outbox was created because it was full.
    pub dropped: u64,
    pub sw_version: String,
    /// Envelope versions this gateway reads.
    pub accepts_v: Vec<u64>,
    /// Whether the gateway's clock is synchronised (NTP); if not the cloud corrects its times.
    pub clock_synced: bool,
    /// The outbox's epoch, and the last seq it has written: so the cloud can tell which
    /// outbox a heartbeat speaks for, and how many events one held when it was lost.
    /// Optional (newer gateways send them; receivers ignore unknown fields).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
}
