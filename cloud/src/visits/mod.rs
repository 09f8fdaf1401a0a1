//! Visits: the pipeline stage that turns observations into visits (DESIGN.md, "The cloud's
//! pipeline" and "Presence is evidence; visits are decided once"). [`engine`] is the pure state
//! machine; [`keys`] spells the visits space's keys.

pub mod engine;
mod forget;
pub mod keys;
mod read;
pub mod stage;

pub use forget::{expire, expire_transitions, forget_transitions};
pub use read::{footfall, visits_in_scope, visits_of_customer};
pub use stage::{erasure_outcome, forget_erasure_request, request_erasure};
