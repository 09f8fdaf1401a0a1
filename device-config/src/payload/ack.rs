//! `presence/ack` (cloud → gateway): which seqs of an epoch the cloud has durably stored, and
//! which it will never store and why, so the gateway stops resending them.

use serde::{Deserialize, Serialize};

use super::presence::Epoch;
use crate::seq_ranges::SeqRanges;

/// The cloud's end-to-end acknowledgement of presence events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceAck {
    pub epoch: Epoch,
    /// Stored (or already stored: duplicates are acked again).
    pub seqs: SeqRanges,
    /// Refused for good, with the reason.
    pub rejected: Vec<Rejected>,
}

/// Seqs the cloud will never store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejected {
    pub seqs: SeqRanges,
    /// A short reason for the operator, e.g. `ts is 2 h in the future`.
    pub reason: String,
}

impl PresenceAck {
    /// Every seq this ack settles, stored or rejected: the gateway may forget all of them.
    pub fn settled(&self) -> SeqRanges {
        let mut all = self.seqs.clone();
        for r in &self.rejected {
            all.merge(&r.seqs);
        }
        all
    }
}
