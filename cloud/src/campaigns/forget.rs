//! What the decision stage's rows forget: decisions and the frequency-cap history past their
//! period (retention), and an erased customer's decisions, cap history and links to their
//! analysis pseudonyms (the analysis rows stay: reports keep their totals).

use serde::Deserialize;
use serde_json::Value;

use super::keys;
use crate::store::sweep::{delete_keys, delete_prefix, each_row, Rows, Sweeper};
use crate::store::{Commit, Space, Store, StoreError};
use crate::vocab::customer_of;

#[derive(Deserialize)]
struct DecisionHead {
    at_ms: i64,
}

/// Deletes the cap history written before `cutoff` (ms); answers how many entries went.
pub fn expire_caps_history(sw: &mut Sweeper, cutoff: i64) -> Result<u64, StoreError> {
    let rows = Rows {
        kind: "caps_history",
        space: Space::Campaigns,
        prefix: keys::HISTORY,
    };
    // history/{customer}/{ms:016x}/{campaign}
    sw.time_ordered(rows, 1, cutoff, |_, _| Ok(true))
}

/// Deletes the decisions made before `cutoff` (ms), walking on from `cursor`; answers how
/// many went.
pub fn expire_decisions(
    sw: &mut Sweeper,
    cursor: &mut Vec<u8>,
    cutoff: i64,
) -> Result<u64, StoreError> {
    let rows = Rows {
        kind: "decisions",
        space: Space::Campaigns,
        prefix: keys::DECISIONS,
    };
    sw.rolling(rows, cursor, |_, v| {
        let at = serde_json::from_slice::<DecisionHead>(v).ok()?.at_ms;
        (at < cutoff).then(Vec::new)
    })
}

/// What [`forget`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    pub decisions: usize,
    /// Entries of the frequency-cap history.
    pub caps_history: usize,
    /// Links from the customer to their analysis pseudonyms.
    pub analysis_links: usize,
}

/// Removes the decisions about customer `id`, their cap history and their analysis links.
pub fn forget(store: &dyn Store, id: &str) -> Result<Forgotten, StoreError> {
    let mut decisions = Vec::new();
    each_row(store, Space::Campaigns, keys::DECISIONS, |k, v| {
        if customer_of("decision", v).as_deref() == Some(id) {
            decisions.push(k.to_vec());
        }
        Ok(())
    })?;
    delete_keys(store, Space::Campaigns, &decisions)?;
    let caps_history = delete_prefix(store, Space::Campaigns, &keys::history_prefix(id))?;
    let mut analysis_links = 0;
    let mut c = Commit::new();
    for k in super::stored::all(store)? {
        let link = keys::analysis_link(&k.campaign.id, id);
        if store.get(Space::Campaigns, link.as_bytes())?.is_some() {
            c.delete(Space::Campaigns, link);
            analysis_links += 1;
        }
    }
    if !c.is_empty() {
        store.commit(c)?;
    }
    Ok(Forgotten {
        decisions: decisions.len(),
        caps_history,
        analysis_links,
    })
}

/// The decisions about customer `id`, as stored (for their export).
pub fn decisions_of(store: &dyn Store, id: &str) -> Result<Vec<Value>, StoreError> {
    let mut out = Vec::new();
    each_row(store, Space::Campaigns, keys::DECISIONS, |_, v| {
        let d: Value = serde_json::from_slice(v).map_err(|e| StoreError::backend("decision", e))?;
        if d["customer"] == id {
            out.push(d);
        }
        Ok(())
    })?;
    Ok(out)
}
