//! Campaigns (DESIGN.md, "The cloud's pipeline" and "Measurement"): definitions and the pure
//! decision for one trigger. The decision stage, delivery and measurement build on these.

pub mod decide;
pub mod definition;
mod forget;
pub mod keys;
pub mod reach;
pub mod redemptions;
pub mod report;
pub mod stage;
pub mod stored;
pub mod test_send;

pub use forget::{decisions_of, expire_caps_history, expire_decisions, forget, Forgotten};
