//! The contract between omo's store devices and its cloud (DESIGN.md, "Contracts"): ids and
//! beacon ids, MQTT topics, the signed envelope and its payloads, the gateway config and site
//! registry schemas, the shared clock, Eddystone-EID maths, and broker provisioning.
//!
//! Everything here is plain data and pure functions: no sockets, no files except where a
//! function says it reads one, no clock reads except `Clock`.

pub mod beacon_id;
pub mod broker_auth;
pub mod broker_url;
pub mod clock;
pub mod eid;
pub mod envelope;
pub mod gateway_config;
pub mod ids;
pub mod params;
pub mod payload;
pub mod problems;
pub mod provision;
pub mod reconnect;
pub mod seq_ranges;
pub mod site;
pub mod time;
pub mod topics;

pub use beacon_id::BeaconId;
pub use clock::{Clock, ClockSpec};
pub use envelope::SigningKey;
pub use ids::{GatewayId, StoreId, ZoneId};
pub use seq_ranges::SeqRanges;
pub use time::Timestamp;
pub use topics::{Channel, Topic};
