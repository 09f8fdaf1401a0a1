//! Erasures asked of any instance, done by the one that runs the customer's partition.
//!
//! The visit engine's state about a customer lives in the memory of the instance holding their
//! partition, so only that instance can forget it without writing it back at its next step.
//! Whoever is asked (any instance behind the load balancer) stores a request under
//! `erase/{customer}` ([`keys::erase_request`]); the holder's stage reads the requests between
//! two steps ([`VisitStage::take_erasures`]), erases the customer's part and writes what it
//! removed into the request in the same commit; the one asked waits for that
//! ([`erasure_outcome`]) and finishes the erasure. The request moves with the partition: a new
//! holder finds it where the old one left it. The last step of the erasure deletes it
//! ([`forget_erasure_request`]).

use serde::{Deserialize, Serialize};

use super::{VisitStage, VisitsErased};
use crate::cluster::Partition;
use crate::store::{barrier, Commit, Space, Store, StoreError};
use crate::visits::keys;

/// An erasure asked for, and what the visit stage removed once it did its part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Request {
    /// `None` until the stage has done its part.
    pub done: Option<VisitsErased>,
}

impl Request {
    fn read(store: &dyn Store, customer: &str) -> Result<Option<Request>, StoreError> {
        let Some(bytes) = store.get(Space::Visits, keys::erase_request(customer).as_bytes())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::backend("erasure request", format!("{customer}: {e}")))
    }

    /// Adds to `c` what an erasure of `customer` says to whoever asked: the request as read
    /// now, if there is one, becomes done with `erased` — expected unchanged, so an instance
    /// that read the requests before another did this one and its asker finished (deleting
    /// it) conflicts instead of writing it back. No request (an erasure run directly): nothing.
    pub fn put_done(
        store: &dyn Store,
        c: &mut Commit,
        customer: &str,
        erased: VisitsErased,
    ) -> Result<(), StoreError> {
        let key = keys::erase_request(customer);
        let Some(asked) = store.get(Space::Visits, key.as_bytes())? else {
            return Ok(());
        };
        c.expect(Space::Visits, key.as_bytes(), Some(asked));
        let done = Request { done: Some(erased) };
        c.put(
            Space::Visits,
            key,
            serde_json::to_vec(&done).expect("a request serialises"),
        );
        Ok(())
    }
}

/// Asks the visit stage to erase `customer`'s part (their identity step is done). Asking again
/// while it is under way, or after it was done, changes nothing.
pub fn request_erasure(store: &dyn Store, customer: &str) -> Result<(), StoreError> {
    let key = keys::erase_request(customer);
    if store.get(Space::Visits, key.as_bytes())?.is_some() {
        return Ok(());
    }
    let mut c = Commit::new();
    c.expect(Space::Visits, key.as_bytes(), None);
    c.put(
        Space::Visits,
        key,
        serde_json::to_vec(&Request::default()).expect("a request serialises"),
    );
    match store.commit(c) {
        // Asked twice at once: the other request stands.
        Err(StoreError::Conflict { .. }) => Ok(()),
        r => r,
    }
}

/// What the visit stage removed of `customer`, once it did its part of their erasure; `None`
/// while it has not (or nobody asked).
pub fn erasure_outcome(
    store: &dyn Store,
    customer: &str,
) -> Result<Option<VisitsErased>, StoreError> {
    Ok(Request::read(store, customer)?.and_then(|r| r.done))
}

/// Deletes `customer`'s erasure request (the erasure's last step).
pub fn forget_erasure_request(store: &dyn Store, customer: &str) -> Result<(), StoreError> {
    let mut c = Commit::new();
    c.delete(Space::Visits, keys::erase_request(customer));
    store.commit(c)
}

impl VisitStage {
    /// Does the erasures asked of the partitions this stage runs and not yet done; answers how
    /// many. One that fails is left for the next call (a conflict: another instance holding
    /// the partition too wrote it first, and this one reads it again).
    pub fn take_erasures(
        &mut self,
        store: &dyn Store,
        inputs: &super::Inputs,
    ) -> Result<usize, StoreError> {
        let prefix = keys::ERASE_REQUESTS;
        let mut done = 0;
        for (k, v) in barrier::scan_prefix(store, Space::Visits, prefix.as_bytes(), usize::MAX)? {
            let customer = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            let request: Request = match serde_json::from_slice(&v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(customer, error = %e, "unreadable erasure request skipped");
                    continue;
                }
            };
            let held = self
                .parts
                .contains_key(&Partition::of(&customer, self.count).index());
            if request.done.is_some() || !held {
                continue;
            }
            match self.erase(store, inputs, &customer) {
                Ok(erased) => {
                    tracing::info!(
                        visits = erased.visits,
                        states = erased.visit_states,
                        "visit stage erased a customer"
                    );
                    done += 1;
                }
                Err(e) => tracing::warn!(error = %e, "an erasure is left for the next step"),
            }
        }
        Ok(done)
    }
}
