//! The write side of the reports: what the stages add up as they commit, so a report reads a
//! few thousand small rows instead of every visit, delivery and purchase of its range.
//! The read side is `crate::reports`.

pub mod funnel;
pub mod hours;
