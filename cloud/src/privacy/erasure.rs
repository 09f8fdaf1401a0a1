//! The last step of an erasure (see [`super`]): each owner forgets what it holds about the
//! customer.

use serde::Serialize;

use super::{About, PAGE};
use crate::identity::{self, Erasing};
use crate::ingest::record::Record;
use crate::store::event_log;
use crate::store::{Commit, Store, StoreError};
use crate::{campaigns, delivery, ingest, purchases, visits};

/// What the last step of an erasure removed or changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Finished {
    /// Event-log records about the customer, each replaced by its log time alone.
    pub observations: usize,
    /// Visit transitions about them, each kept as an empty value (so the transitions'
    /// sequence and the decision stage's position stay as they were).
    pub transitions: usize,
    pub decisions: usize,
    /// Entries of the frequency-cap history.
    pub caps_history: usize,
    /// Links from the customer to their analysis pseudonyms (the rows stay).
    pub analysis_links: usize,
    /// The installs' report idempotency keys.
    pub dedup_keys: usize,
    /// Deliveries whose customer, text and message were removed.
    pub deliveries_scrubbed: usize,
    /// Of those, the ones not yet sent: cancelled with the reason.
    pub deliveries_cancelled: usize,
    /// Redemptions of their coupons whose order id was removed.
    pub redemptions_scrubbed: usize,
    /// Purchases that lost the link to them (and the reference that named them).
    pub purchases_unlinked: usize,
}

/// The last step of erasing a customer whose identity step is done (see the module's
/// documentation). Every part is idempotent, so an erasure cut short is finished by running
/// it again; the `erasing/` record goes last. `now_ms` stamps the deliveries it cancels.
pub fn finish_erasure(
    store: &dyn Store,
    erasing: &Erasing,
    now_ms: i64,
) -> Result<Finished, StoreError> {
    let id = erasing.customer.id.as_str();
    let mut done = Finished::default();
    // Observations: each record about them becomes its log time alone.
    let mut about = About::new(&erasing.customer);
    let log_end = blank_observations(store, &mut about, 0, &mut done)?;
    done.transitions = visits::forget_transitions(store, id)?;
    // The deliveries first: a redemption taken meanwhile still finds its analysis row.
    let sent = delivery::forget(store, id, now_ms)?;
    (
        done.deliveries_scrubbed,
        done.deliveries_cancelled,
        done.redemptions_scrubbed,
    ) = (sent.scrubbed, sent.cancelled, sent.redemptions_scrubbed);
    let decided = campaigns::forget(store, id)?;
    (done.decisions, done.caps_history, done.analysis_links) = (
        decided.decisions,
        decided.caps_history,
        decided.analysis_links,
    );
    done.dedup_keys =
        ingest::forget_installs(store, erasing.installs.iter().map(|i| i.id.as_str()))?;
    done.purchases_unlinked = purchases::unlink_customer(store, id, &references(erasing))?;
    // A report or LINE event let in just before the identity step may have reached the log
    // after the first pass: a second pass over what was appended since.
    blank_observations(store, &mut about, log_end, &mut done)?;
    visits::forget_erasure_request(store, id)?;
    identity::end_erasure(store, id)?;
    Ok(done)
}

/// Finishes the erasures an asker left under way (answered 202 because the visit stage had
/// not yet done its part, or stopped mid-way): asks the visit stage again where it has not
/// done its part, and finishes those whose part is done. Answers how many it finished. Run by
/// the retention sweeper, so an erasure never waits on its asker to ask again.
pub fn finish_waiting_erasures(store: &dyn Store, now_ms: i64) -> Result<usize, StoreError> {
    let mut finished = 0;
    for erasing in identity::erasures_under_way(store)? {
        let id = erasing.customer.id.as_str();
        if visits::erasure_outcome(store, id)?.is_none() {
            visits::request_erasure(store, id)?;
            continue;
        }
        finish_erasure(store, &erasing, now_ms)?;
        finished += 1;
    }
    Ok(finished)
}

/// Every reference a purchase may name the erased customer by: member id, LINE user, the
/// beacons they carry, their installs.
fn references(erasing: &Erasing) -> Vec<String> {
    let c = &erasing.customer;
    c.member_id
        .iter()
        .chain(c.line_user.iter())
        .cloned()
        .chain(c.beacons.iter().map(ToString::to_string))
        .chain(erasing.installs.iter().map(|i| i.id.clone()))
        .collect()
}

/// Replaces every event-log record about the customer from offset `from` on by its log time
/// alone; returns the offset after the last record read.
fn blank_observations(
    store: &dyn Store,
    about: &mut About,
    mut from: u64,
    done: &mut Finished,
) -> Result<u64, StoreError> {
    let mut conflicts = 0;
    loop {
        let page = event_log::read(store, from, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            return Ok(from);
        };
        let mut changes = Vec::new();
        for (offset, bytes) in &page {
            let Ok(record) = Record::decode(bytes) else {
                continue;
            };
            if about.matches(&record) {
                let erased = Record::Erased {
                    received: record.received(),
                };
                changes.push((*offset, erased.encode()));
            }
        }
        let mut c = Commit::new();
        event_log::replace(store, &mut c, &changes)?;
        let committed = if c.is_empty() {
            Ok(())
        } else {
            store.commit(c)
        };
        match committed {
            // Another erasure (or retention) rewrote an entry of this page meanwhile: read
            // the page again, so neither undoes the other.
            Err(StoreError::Conflict { .. }) if conflicts < 16 => {
                conflicts += 1;
                continue;
            }
            r => r?,
        }
        done.observations += changes.len();
        from = last + 1;
        if page.len() < PAGE {
            return Ok(from);
        }
    }
}
