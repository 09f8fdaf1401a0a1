//! What the visit engine is fed and what it decides: evidence about a customer in a scope,
//! transitions, and the per-key state the stage stores.

use std::collections::BTreeSet;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Where a visit is: a zone, or the store the zone belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Scope {
    Zone(String),
    Store(String),
    /// The brand's online shop (purchase transitions only: no visit is ever online).
    Online,
}

/// Which kind of source saw the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Gateway,
    App,
    Line,
    /// A check-in: the customer's app scanned the store's (or zone's) QR code. Certain on its
    /// own: it opens a visit at once.
    Qr,
}

/// What one observation says about one customer in one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub customer: String,
    pub scope: Scope,
    /// Corrected event time, ms.
    pub at_ms: i64,
    /// The log offset of the record it came from (orders ties; derives visit ids).
    pub offset: u64,
    pub source: Source,
    pub inside: bool,
}

/// A decided change of a visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub visit: String,
    pub customer: String,
    pub scope: Scope,
    pub kind: TransitionKind,
    /// The transition's own time (event time), ms.
    pub at_ms: i64,
    /// The log time it was decided at, ms.
    pub decided_ms: i64,
    pub late: bool,
    pub sources: BTreeSet<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransitionKind {
    Enter,
    Dwell {
        minutes: u32,
    },
    Exit {
        dwell_s: u64,
    },
    /// A purchase by the customer (the transition's `visit` is the purchase id, its scope the
    /// store or [`Scope::Online`]); not part of any visit.
    Purchase {
        total: f64,
        currency: String,
        categories: BTreeSet<String>,
    },
}

impl Transition {
    /// Late as well when it belongs to a resumed visit (see the module's rules).
    pub(super) fn resumed(mut self, resumed: bool) -> Transition {
        self.late |= resumed;
        self
    }
}

/// One customer × scope's state (opaque outside the engine; stored by the stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    Candidate {
        first_ms: i64,
        last_ms: i64,
        opener: u64,
        sources: BTreeSet<Source>,
        /// It continues a visit exited before this evidence arrived (see the module's rules).
        #[serde(default)]
        resumed: bool,
        /// The remembered exit it began after, if any: evidence from before that exit moving
        /// its start back makes it a resumed piece of the exited visit.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_exit_ms: Option<i64>,
    },
    Open {
        visit: String,
        entered_ms: i64,
        last_ms: i64,
        outside_ms: Option<i64>,
        milestones: u8,
        sources: BTreeSet<Source>,
        /// Every transition of a resumed visit is late.
        #[serde(default)]
        resumed: bool,
    },
    /// A visit exited at `exit_ms`, remembered until the watermark reaches `until_ms`
    /// (`max_lateness_s` after the log time the exit was decided at).
    Closed { exit_ms: i64, until_ms: i64 },
}

/// A customer and a scope.
pub type Key = (String, Scope);

/// A buffered evidence's identity: one record's evidence is about one customer, once per
/// scope, so its log offset and scope name it.
pub type EvidenceId = (u64, Scope);

impl Evidence {
    pub fn id(&self) -> EvidenceId {
        (self.offset, self.scope.clone())
    }
}

/// What the stage stores besides the per-key states: the watermark and the evidence still in
/// the reorder buffer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buffered {
    pub watermark_ms: i64,
    pub evidence: Vec<Evidence>,
}

/// A visit id: a keyed hash (HMAC-SHA256 with the server's secret) of the opening evidence
/// (customer, scope, log offset), so it is the same on every replay and does not lead back
/// to the customer without the secret (DESIGN.md, "Derived ids").
pub fn visit_id(key: &[u8; 32], customer: &str, scope: &Scope, offset: u64) -> String {
    let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
    h.update(customer.as_bytes());
    h.update(&[0]);
    h.update(&serde_json::to_vec(scope).expect("scopes serialise"));
    h.update(&offset.to_be_bytes());
    format!("v_{}", hex::encode(&h.finalize().into_bytes()[..10]))
}
