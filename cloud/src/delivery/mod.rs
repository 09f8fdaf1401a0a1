//! Delivery (DESIGN.md, "Delivery"): the pure rules the senders follow — what an attempt's
//! answer means and when to try again ([`retry`]), and the per-channel rate limit ([`rate`]).
//! The senders themselves (LINE push, FCM HTTP v1, webhook) build on these.

pub mod rate;
pub mod retry;
