//! The `msg` of every MQTT payload (DESIGN.md's MQTT table), as typed structs.
//!
//! Within envelope `v` 1 a receiver ignores fields it does not know, so a fleet can run two
//! software versions during a rollout; a missing field is an error that names it. Sealing and
//! opening is `envelope`'s job; the size rules live beside each type that has one.

pub mod ack;
pub mod config;
pub mod presence;
pub mod status;

pub use ack::{PresenceAck, Rejected};
pub use config::{ConfigAck, RemoteConfig, MAX_CONFIG_BYTES};
pub use presence::{
    Epoch, Footfall, PresenceBatch, PresenceEvent, Sighting, SightingKind, MAX_PRESENCE_BYTES,
};
pub use status::{GatewayState, Status};
