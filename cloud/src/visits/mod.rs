//! Visits: the pipeline stage that turns observations into visits (DESIGN.md, "The cloud's
//! pipeline" and "Presence is evidence; visits are decided once"). [`engine`] is the pure state
//! machine.

pub mod engine;
pub mod stage;
