//! What the visit stage has read of its customers' identity, kept across steps.

use omo_device_config::BeaconId;

use crate::identity;
use crate::ingest::record::Record;
use crate::store::{Space, Store, StoreError};

/// What the stage has read of its customers' identity — whether each is known and consents
/// to location tracking, and whom each beacon id names — kept across steps until a commit
/// writes the identity space (a registration, a consent changed, an erasure: then it is read
/// afresh; on a store other instances write too, each step reads afresh), at most [`KNOWN_MAX`] of each; and how much evidence a step skipped for want of a
/// known, consenting customer.
#[derive(Default)]
pub(super) struct Located {
    /// [`Store::commits_to`] the identity space when what is held was read.
    identity_commits: u64,
    pub(super) of: rustc_hash::FxHashMap<String, Option<bool>>,
    beacons: rustc_hash::FxHashMap<BeaconId, Option<String>>,
    unconsented: u64,
    unknown: u64,
}

/// Customers (and beacon ids) the stage keeps what it read of, at most: about 30 MB.
const KNOWN_MAX: usize = 1 << 17;

/// Adds to a map of [`Located`], emptying it first when it holds [`KNOWN_MAX`].
fn keep<K: std::hash::Hash + Eq, V>(map: &mut rustc_hash::FxHashMap<K, V>, k: K, v: V) {
    if map.len() >= KNOWN_MAX {
        map.clear();
    }
    map.insert(k, v);
}

impl Located {
    /// Starts a step: forgets what identity commits since may have changed, and the counts.
    pub(super) fn start_step(&mut self, store: &dyn Store) {
        let commits = store.commits_to(Space::Identity);
        // Another instance may have changed anyone's consent since: read afresh each step.
        if commits != self.identity_commits || store.shared() {
            self.of.clear();
            self.beacons.clear();
            self.identity_commits = commits;
        }
        self.unconsented = 0;
        self.unknown = 0;
    }

    /// Reads at once what the folding of `records` will ask about — the carriers of the
    /// non-rotating beacon ids gateways heard, and whether each customer named is known and
    /// consents — so an engine across a network answers in two round trips, not one per id.
    pub(super) fn prefetch(
        &mut self,
        store: &dyn Store,
        records: &[&Record],
    ) -> Result<(), StoreError> {
        let mut beacons: Vec<BeaconId> = records
            .iter()
            .filter_map(|r| match r {
                Record::Gateway(g) => g.event.as_sighting().map(|(_, s)| s.beacon),
                _ => None,
            })
            .filter(|b| !matches!(b, BeaconId::EddystoneEid { .. }))
            .filter(|b| !self.beacons.contains_key(b))
            .collect();
        beacons.sort_unstable();
        beacons.dedup();
        let carriers = identity::beacon_carriers(store, &beacons)?;
        for (b, c) in beacons.into_iter().zip(carriers) {
            keep(&mut self.beacons, b, c);
        }
        let mut customers: Vec<String> = records
            .iter()
            .filter_map(|r| match r {
                Record::Gateway(g) => g
                    .event
                    .as_sighting()
                    .and_then(|(_, s)| self.beacons.get(&s.beacon).cloned().flatten()),
                Record::App(a) => Some(a.customer.clone()),
                Record::Checkin(c) => Some(c.customer.clone()),
                Record::Line(l) => Some(l.customer.clone()),
                Record::Purchase(p) => Some(p.customer.clone()),
                _ => None,
            })
            .filter(|c| !self.of.contains_key(c))
            .collect();
        customers.sort_unstable();
        customers.dedup();
        let found = identity::customers(store, &customers)?;
        for (id, c) in customers.into_iter().zip(found) {
            keep(&mut self.of, id, c.map(|c| c.consent.location));
        }
        Ok(())
    }

    /// The customer carrying a (non-rotating) beacon id, if any.
    pub(super) fn carrier(
        &mut self,
        store: &dyn Store,
        beacon: &BeaconId,
    ) -> Result<Option<String>, StoreError> {
        if let Some(c) = self.beacons.get(beacon) {
            return Ok(c.clone());
        }
        let c = identity::beacon_carrier(store, beacon)?;
        keep(&mut self.beacons, *beacon, c.clone());
        Ok(c)
    }

    /// Whether `customer` consents to location tracking (`None`: not known, or erased).
    pub(super) fn consents(
        &mut self,
        store: &dyn Store,
        customer: &str,
    ) -> Result<Option<bool>, StoreError> {
        if let Some(a) = self.of.get(customer) {
            return Ok(*a);
        }
        let a = identity::customer(store, customer)?.map(|c| c.consent.location);
        keep(&mut self.of, customer.to_owned(), a);
        Ok(a)
    }

    /// Whether `customer` is known (not erased since): a record about one who is not is
    /// counted and skipped.
    pub(super) fn known(&mut self, store: &dyn Store, customer: &str) -> Result<bool, StoreError> {
        let known = self.consents(store, customer)?.is_some();
        if !known {
            self.unknown += 1;
        }
        Ok(known)
    }

    /// Whether evidence about `customer` may become part of a visit: without location consent
    /// an observation never does, nor one about a customer erased since it was logged.
    pub(super) fn allows(&mut self, store: &dyn Store, customer: &str) -> Result<bool, StoreError> {
        match self.consents(store, customer)? {
            Some(true) => Ok(true),
            Some(false) => {
                self.unconsented += 1;
                Ok(false)
            }
            None => {
                self.unknown += 1;
                Ok(false)
            }
        }
    }

    /// Counts at `/metrics` the evidence this step skipped for want of a known, consenting
    /// customer.
    pub(super) fn count_skipped(&self) {
        metrics::counter!("omo_visit_evidence_skipped_total", "reason" => "no_location_consent")
            .increment(self.unconsented);
        metrics::counter!("omo_visit_evidence_skipped_total", "reason" => "unknown_customer")
            .increment(self.unknown);
    }
}
