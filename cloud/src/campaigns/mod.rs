//! Campaigns (DESIGN.md, "The cloud's pipeline" and "Measurement"): definitions and the pure
//! decision for one trigger. The decision stage, delivery and measurement build on these.

pub mod decide;
pub mod definition;
pub mod keys;
pub mod report;
pub mod stage;
pub mod stored;
