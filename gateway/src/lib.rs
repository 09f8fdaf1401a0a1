//! omo's store gateway: it hears BLE advertisements, decodes beacon frames, turns sightings
//! into presence and forwards it to the cloud through a durable outbox.
//!
//! The pure parts (advertising-data parsing, frame codecs, the presence engine) take bytes and
//! timestamps and return values; the daemon around them does the I/O.

pub mod ad;
pub mod daemon;
pub mod decode_cli;
pub mod filter;
pub mod footfall;
pub mod frames;
pub mod mqtt;
pub mod outbox;
pub mod presence;
pub mod rssi;
pub mod scan;
pub mod uplink;
