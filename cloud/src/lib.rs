//! omo's cloud service: ingest from gateways, apps and LINE; identity; zones and visits;
//! campaigns; delivery; reports.
//!
//! Each pipeline stage is a pure state machine fed from the durable event log; the service
//! around them owns the broker, the HTTP server and the store.

pub mod backup;
pub mod broker;
pub mod campaigns;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod http;
pub mod identity;
pub mod ingest;
pub mod live;
pub mod privacy;
pub mod profiles;
pub mod purchases;
pub mod qr;
pub mod registry;
pub mod reports;
pub mod secrets;
pub mod seq_ledger;
pub mod service;
pub mod stats;
pub mod store;
pub mod tallies;
pub mod tls;
pub mod visits;
pub mod vocab;
pub mod zones;
