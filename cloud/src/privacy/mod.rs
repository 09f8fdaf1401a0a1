//! Data rights (DESIGN.md, "Privacy by design"): everything the cloud holds about one
//! customer as one JSON document for a disclosure request (`GET /v1/admin/customers/{id}/export`),
//! and the erasure of a customer (`DELETE /v1/admin/customers/{id}`).
//!
//! An erasure runs in three steps, each finished before the next: the identity step removes the
//! record, its links and installs in one commit and keeps what the rest needs under
//! `erasing/{id}` ([`crate::identity::begin_erasure`]); the visit stage forgets the customer's engine
//! state and visits ([`crate::visits::stage::VisitStage::erase`]), asked through the store so
//! that the instance running their partition does it whichever instance was asked
//! ([`crate::visits::request_erasure`]); [`finish_erasure`] then
//! asks each owner to forget the rest — observations in the event log, visit transitions, decisions, caps history,
//! analysis links, install dedup keys —, strips the personal fields of their deliveries and redemptions
//! (cancelling deliveries not yet sent) and deletes the `erasing/` record last. Aggregates stay:
//! funnel counters, analysis rows under their pseudonyms, footfall, ingest statistics.
//!
//! It reads every place a customer's data sits: the identity record (links, consent records,
//! attributes) and installs, the visits, the decisions and deliveries about them (with the
//! offer texts and coupons), the redemptions of those coupons, and the observations in the
//! event log — app reports and LINE events carry the customer id, gateway sightings are
//! matched by the static beacon ids the customer carries. A disclosure is rare and complete
//! beats fast: the campaign and log spaces are scanned in pages.
//!
//! Retention ([`retention`]) is the other data duty: what is older than its period goes.
//! Both call the operations of the modules that own the rows (`visits::forget_transitions`,
//! `delivery::forget`, `campaigns::expire_decisions`, …); none formats another module's keys.

mod erasure;
mod export;
pub mod retention;

use std::collections::BTreeSet;

use omo_device_config::BeaconId;

use crate::identity::{eid_resolver::EidResolver, Customer};
use crate::ingest::record::Record;

pub use erasure::{finish_erasure, finish_waiting_erasures, Finished};
pub use export::export;

/// Rows read per page while scanning.
const PAGE: usize = 4096;

/// Which event-log records are about one customer: their app reports and LINE events, and the
/// gateway sightings of a beacon id they carry or of an EID their keys broadcast.
struct About {
    id: String,
    carried: BTreeSet<BeaconId>,
    eids: Option<EidResolver>,
}

impl About {
    fn new(c: &Customer) -> About {
        let keys: Vec<_> = c
            .eid_keys
            .iter()
            .filter_map(|k| k.identity().ok().map(|i| (c.id.clone(), i)))
            .collect();
        About {
            id: c.id.clone(),
            carried: c.beacons.iter().cloned().collect(),
            eids: (!keys.is_empty())
                .then(|| EidResolver::new(keys, crate::identity::eid_resolver::EID_SKEW_S)),
        }
    }

    fn matches(&mut self, record: &Record) -> bool {
        match record {
            Record::App(r) => r.customer == self.id,
            Record::Line(l) => l.customer == self.id,
            Record::Checkin(q) => q.customer == self.id,
            Record::Purchase(p) => p.customer == self.id,
            Record::Gateway(e) => {
                let Some((_, s)) = e.event.as_sighting() else {
                    return false;
                };
                if self.carried.contains(&s.beacon) {
                    return true;
                }
                match (&s.beacon, self.eids.as_mut()) {
                    (BeaconId::EddystoneEid { eid }, Some(r)) => r
                        .resolve(*eid, e.event_ts.millis().div_euclid(1000))
                        .is_some(),
                    _ => false,
                }
            }
            _ => false,
        }
    }
}
