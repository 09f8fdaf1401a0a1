//! What the visit stage's spaces forget: visits and transitions past the visits' period
//! (retention), and the transitions about an erased customer (their visits and engine state
//! go in the stage itself, [`super::stage::VisitStage::erase`]).

use serde::Deserialize;

use super::keys;
use super::stage::{transitions_end, VisitRecord};
use crate::cluster::Partition;
use crate::store::sweep::{Rows, Sweeper};
use crate::store::{scan_prefix_from, Commit, Space, Store, StoreError};

/// Rows read per page by [`forget_transitions`].
const PAGE: usize = 4096;

#[derive(Deserialize)]
struct TransitionHead {
    decided_ms: i64,
}

/// Deletes the transitions decided before `cutoff` (ms), in order per partition, never one at
/// or past `decided[p]` (the decision stage's position in partition `p`) nor the newest one of
/// a partition (the stage numbers the next from it). Answers how many went.
pub fn expire_transitions(
    sw: &mut Sweeper,
    cutoff: i64,
    decided: &[u64],
) -> Result<u64, StoreError> {
    let count = u16::try_from(decided.len())
        .map_err(|_| StoreError::backend("partitions", "more than there can be"))?;
    let mut n = 0;
    for (p, upper) in Partition::all(count).zip(decided) {
        n += expire_transitions_of(sw, cutoff, p, *upper)?;
    }
    Ok(n)
}

fn expire_transitions_of(
    sw: &mut Sweeper,
    cutoff: i64,
    partition: Partition,
    upper: u64,
) -> Result<u64, StoreError> {
    // Transitions are numbered from 1; a malformed key is an error, not seq 0.
    let newest = transitions_end(sw.store, partition)? - 1;
    if newest == 0 {
        return Ok(0);
    }
    let upper = upper.min(newest);
    let prefix = partition.key_prefix();
    let mut n = 0;
    loop {
        let page = scan_prefix_from(sw.store, Space::Transitions, &prefix, &prefix, sw.batch)?;
        let before = n;
        let mut c = Commit::new();
        let mut done = page.len() < sw.batch;
        for (k, v) in &page {
            if keys::transition_seq(partition, k)? >= upper {
                done = true;
                break;
            }
            // An erased one is empty: nothing to keep.
            let decided = serde_json::from_slice::<TransitionHead>(v)
                .map(|t| t.decided_ms)
                .unwrap_or(i64::MIN);
            if decided >= cutoff {
                done = true;
                break;
            }
            c.delete(Space::Transitions, k.clone());
            n += 1;
        }
        let empty = c.is_empty();
        sw.commit(c, &[("transitions", n - before)])?;
        if done || empty {
            return Ok(n);
        }
    }
}

/// Deletes the finished visits that began before `cutoff` (ms), with their indexes (the
/// scope index is in time order per scope); an open one waits for a later sweep (its stage
/// may yet extend it). Answers how many went.
pub fn expire(sw: &mut Sweeper, cutoff: i64) -> Result<u64, StoreError> {
    let store = sw.store;
    let rows = Rows {
        kind: "visits",
        space: Space::Visits,
        prefix: keys::SCOPE_INDEX,
    };
    // by-scope/{kind}/{id}/{ms:016x}/{visit}
    sw.time_ordered(rows, 2, cutoff, |visit, c| {
        let row = keys::visit(visit);
        if let Some(b) = store.get(Space::Visits, row.as_bytes())? {
            // One that cannot be read goes with its index: nothing could show it.
            if let Ok(v) = serde_json::from_slice::<VisitRecord>(&b) {
                if v.exited.is_none() {
                    return Ok(false);
                }
                c.delete(Space::Visits, keys::of_customer(&v.customer, visit));
            }
            c.delete(Space::Visits, row);
        }
        Ok(true)
    })
}

/// Blanks the transitions about customer `id`, page by page, each kept as an empty value (so
/// the transitions' sequence and the decision stage's position stay as they were). The visit
/// stage writes none about them once their erasure began. Answers how many.
pub fn forget_transitions(store: &dyn Store, id: &str) -> Result<usize, StoreError> {
    let mut n = 0;
    // Only their partition holds transitions about them.
    let prefix = Partition::of(id, crate::cluster::count(store)?).key_prefix();
    let mut from = prefix.clone();
    loop {
        let page = scan_prefix_from(store, Space::Transitions, &prefix, &from, PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(n);
        };
        from = last.clone();
        from.push(0);
        let mut c = Commit::new();
        for (k, v) in &page {
            if !v.is_empty() && crate::vocab::customer_of("transition", v).as_deref() == Some(id) {
                c.put(Space::Transitions, k.clone(), Vec::new());
                n += 1;
            }
        }
        if !c.is_empty() {
            store.commit(c)?;
        }
        if page.len() < PAGE {
            return Ok(n);
        }
    }
}
