//! What an observation is evidence of: who it is about (a rotating EID resolved at the event's
//! time, a carried beacon id, an app install, a LINE user) and which scopes it places them in
//! or out of.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use omo_device_config::{BeaconId, GatewayId, StoreId, Timestamp};

use super::located::Located;
use super::VisitStage;
use crate::identity::eid_resolver::EidResolver;
use crate::ingest::record::Record;
use crate::store::{Store, StoreError};
use crate::visits::engine::{Evidence, Scope, Source};
use crate::zones::{Match, Observation, Report};

impl VisitStage {
    /// The scopes a gateway's own hearing places a device in: its gateway zones and its store.
    pub(super) fn gateway_scopes(&self, gateway: &GatewayId, store: &StoreId) -> Vec<Scope> {
        let probe = Observation::Gateway {
            gateway,
            rssi: 0.0,
            distance_m: 0.0,
        };
        let mut scopes: Vec<Scope> = self
            .zones
            .candidates(&probe)
            .into_iter()
            .map(|(i, _)| Scope::Zone(self.zones.zone(i).id.to_string()))
            .collect();
        scopes.push(Scope::Store(store.to_string()));
        scopes
    }

    /// The scopes an app report says `customer` has left. A report from outside names none of
    /// the zones it left, so it is judged against the zones the customer has a visit (or a
    /// candidate) in — the engine's live scopes, state committed with this stage's offset, so
    /// a replay with the same zones judges alike: each such zone the report is outside of (by
    /// its fix, scan or beacon list: [`ZoneSet::relate_report`]); and the store of such a
    /// zone, when the customer has a visit there and the report is inside or at the edge of
    /// none of its zones (`near`), with every other zone of that store they are in: a zone
    /// the report carries nothing about (a beacon zone when it lists no beacon, a gateway
    /// zone) does not hold the store, the grace does, for evidence still coming from there.
    pub(super) fn left(
        &self,
        customer: &str,
        report: &Report<'_>,
        near: &[(usize, Match)],
    ) -> Vec<Scope> {
        // Not this instance's customer: their partition folds the report elsewhere.
        let Some(engine) = self.engine_of(customer) else {
            return Vec::new();
        };
        let live: Vec<(&Scope, Option<usize>)> = engine
            .live_scopes(customer)
            .map(|scope| match scope {
                // A zone removed from the registry since has no index: it ends by timeout.
                Scope::Zone(z) => (scope, self.zones.index_of(z)),
                _ => (scope, None),
            })
            .collect();
        let mut left = BTreeSet::new();
        let mut stores: BTreeSet<&StoreId> = BTreeSet::new();
        for (scope, i) in &live {
            if let Some(i) = i {
                if self.zones.relate_report(*i, report) == Match::Outside {
                    left.insert((*scope).clone());
                    stores.insert(&self.zones.zone(*i).store);
                }
            }
        }
        for (i, _) in near {
            stores.remove(&self.zones.zone(*i).store);
        }
        for store in stores {
            let scope = Scope::Store(store.to_string());
            if !live.iter().any(|(s, _)| **s == scope) {
                continue;
            }
            left.insert(scope);
            for (scope, i) in &live {
                if i.is_some_and(|i| self.zones.zone(i).store == *store) {
                    left.insert((*scope).clone());
                }
            }
        }
        left.into_iter().collect()
    }

    /// Who a record is about, and what it says about which scopes.
    pub(super) fn evidence(
        &self,
        record: &Record,
        offset: u64,
        store: &dyn Store,
        eids: &Mutex<EidResolver>,
        located: &mut Located,
    ) -> Result<Vec<Evidence>, StoreError> {
        let mut out: BTreeMap<Scope, bool> = BTreeMap::new();
        let about = match record {
            Record::Gateway(e) => self.gateway_says(e, (store, eids, located), &mut out)?,
            Record::App(r) => Some(self.app_says(r, &mut out)),
            Record::Checkin(q) => {
                // The place itself: its store, and its zone if the code was a zone's.
                out.insert(Scope::Store(q.store.to_string()), true);
                if let Some(z) = &q.zone {
                    out.insert(Scope::Zone(z.clone()), true);
                }
                Some((q.customer.clone(), q.event_ts.millis(), Source::Qr))
            }
            Record::Line(l) => {
                let crate::ingest::record::LineKind::Beacon { beacon, .. } = &l.kind else {
                    return Ok(Vec::new());
                };
                let heard = Observation::Beacon {
                    id: beacon,
                    rssi: None,
                };
                self.inside_of(self.zones.candidates(&heard), &mut out);
                Some((l.customer.clone(), l.event_ts.millis(), Source::Line))
            }
            _ => None,
        };
        let Some((customer, at_ms, source)) = about else {
            return Ok(Vec::new());
        };
        Ok(out
            .into_iter()
            .map(|(scope, inside)| Evidence {
                customer: customer.clone(),
                scope,
                at_ms,
                offset,
                source,
                inside,
            })
            .collect())
    }

    /// Marks inside the zones an observation matched inside of, and their stores.
    fn inside_of(&self, found: Vec<(usize, Match)>, out: &mut BTreeMap<Scope, bool>) {
        for (i, m) in found {
            if m == Match::Inside {
                let z = self.zones.zone(i);
                out.insert(Scope::Zone(z.id.to_string()), true);
                out.insert(Scope::Store(z.store.to_string()), true);
            }
        }
    }

    /// What a gateway's sighting says: inside its zones and store, or (an exit) outside its
    /// zones only (another gateway of the store may still hear the device). `None`: the
    /// device is anonymous, or the event is no sighting.
    fn gateway_says(
        &self,
        e: &crate::ingest::record::GatewayEvent,
        (store, eids, located): (&dyn Store, &Mutex<EidResolver>, &mut Located),
        out: &mut BTreeMap<Scope, bool>,
    ) -> Result<Option<(String, i64, Source)>, StoreError> {
        let Some((kind, s)) = e.event.as_sighting() else {
            return Ok(None);
        };
        let Some(customer) = resolve(&s.beacon, e.event_ts, store, eids, located)? else {
            return Ok(None);
        };
        if kind == omo_device_config::payload::SightingKind::Exit {
            for scope in self.gateway_scopes(&e.gateway, &e.store) {
                if matches!(scope, Scope::Zone(_)) {
                    out.insert(scope, false);
                }
            }
        } else {
            let heard = Observation::Gateway {
                gateway: &e.gateway,
                rssi: s.rssi,
                distance_m: s.distance_m,
            };
            self.inside_of(self.zones.candidates(&heard), out);
            out.insert(Scope::Store(e.store.to_string()), true);
        }
        Ok(Some((customer, e.event_ts.millis(), Source::Gateway)))
    }

    /// What an app report says: inside the zones its fix, scan or beacons match, and outside
    /// the ones it shows the customer left ([`VisitStage::left`]).
    fn app_says(
        &self,
        r: &crate::ingest::record::AppReport,
        out: &mut BTreeMap<Scope, bool>,
    ) -> (String, i64, Source) {
        let mut near = Vec::new();
        if let Some(fix) = r.gps {
            near.extend(self.zones.candidates(&Observation::Gps(fix)));
        }
        if !r.wifi.is_empty() {
            near.extend(self.zones.candidates(&Observation::Wifi(&r.wifi)));
        }
        for b in &r.beacons {
            near.extend(self.zones.candidates(&Observation::Beacon {
                id: &b.id,
                rssi: Some(b.rssi),
            }));
        }
        let report = Report {
            gps: r.gps,
            wifi: &r.wifi,
            beacons: &r.beacons,
        };
        let left = self.left(&r.customer, &report, &near);
        self.inside_of(near, out);
        for scope in left {
            // Inside evidence from the same report wins (two zones of one store).
            out.entry(scope).or_insert(false);
        }
        (r.customer.clone(), r.event_ts.millis(), Source::App)
    }
}

/// The customer behind a beacon id a gateway heard: a rotating EID through the resolver at the
/// event's time, any other id through the ids customers carry. `None`: anonymous.
fn resolve(
    beacon: &BeaconId,
    at: Timestamp,
    store: &dyn Store,
    eids: &Mutex<EidResolver>,
    located: &mut Located,
) -> Result<Option<String>, StoreError> {
    if let BeaconId::EddystoneEid { eid } = beacon {
        let mut r = eids.lock().expect("eid resolver lock");
        return Ok(r
            .resolve(*eid, at.millis().div_euclid(1000))
            .map(str::to_owned));
    }
    located.carrier(store, beacon)
}
