//! omo's cloud service: ingest from gateways, apps and LINE; identity; zones and visits;
//! campaigns; delivery; reports.
//!
//! Each pipeline stage is a pure state machine fed from the durable event log; the service
//! around them owns the broker, the HTTP server and the store.

pub mod seq_ledger;
pub mod store;
