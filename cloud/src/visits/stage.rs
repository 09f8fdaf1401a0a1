//! The visit stage: reads the event log from its offset, resolves who each observation is
//! (rotating EIDs at the event's corrected time, carried beacon ids, app installs, LINE users),
//! matches it against the zones, feeds the [`VisitEngine`], and commits the transitions, the
//! visits they change, footfall, the engine's changed states and its new offset in one
//! transaction. A crash replays from the last commit to the same visits and ids.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};

use omo_device_config::payload::PresenceEvent;
use omo_device_config::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::engine::{Scope, Source, Transition, TransitionKind, VisitEngine, VisitParams};
use super::keys;
use crate::cluster::lease::Assignment;
use crate::cluster::{self, Partition};
use crate::identity::eid_resolver::EidResolver;
use crate::ingest::record::{GatewayEvent, PurchaseEvent, Record};
use crate::profiles::ProfileParams;
use crate::registry::Registry;
use crate::store::event_log;
use crate::store::read_through::ReadThrough;
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::hours::VisitHours;
use crate::zones::ZoneSet;

mod erasures;
mod evidence;
mod journal;
mod located;
mod part;
mod write;

pub use erasures::{erasure_outcome, forget_erasure_request, request_erasure};
use located::Located;
use part::Part;

/// This stage's name in the offsets space.
pub const CONSUMER: &str = "visits";
/// Records folded per commit at most.
const BATCH: usize = 2000;

/// A visit as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitRecord {
    pub id: String,
    pub customer: String,
    pub scope: Scope,
    pub entered: Timestamp,
    pub exited: Option<Timestamp>,
    pub dwell_s: Option<u64>,
    pub milestones_min: Vec<u32>,
    pub sources: BTreeSet<Source>,
    /// The enter was decided more than the maximum trigger lateness after it happened.
    pub late: bool,
}

/// Anonymous footfall of one scope in one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Footfall {
    /// Sum over the hour's minutes of the devices counted in range.
    pub device_minutes: u64,
    /// Minutes reported.
    pub minutes: u64,
    /// Most devices in one minute.
    pub peak: u32,
}

/// What [`VisitStage::erase`] removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisitsErased {
    pub visit_states: usize,
    pub buffered_evidence: usize,
    pub visits: usize,
}

/// How often a running stage reads the erasures asked of it when nobody woke it (another
/// instance was asked).
const ERASURES_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What the stage needs besides the store.
pub struct Inputs {
    pub registry: Arc<RwLock<Registry>>,
    pub eids: Arc<Mutex<EidResolver>>,
    pub params: VisitParams,
    /// The server secret that keys visit ids.
    pub id_key: [u8; 32],
    /// How profiles score tiers (`[profiles]`).
    pub profiles: ProfileParams,
}

/// The stage's in-memory part in one instance: the partitions it runs (all of them, unless
/// instances share the stage), the zones it was built with, and the identity it read.
pub struct VisitStage {
    parts: BTreeMap<u16, Part>,
    /// The store's partition count.
    count: u16,
    zones: ZoneSet,
    zone_generation: u64,
    /// Identity read in earlier steps.
    located: Located,
}

pub(super) fn ts(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms).unwrap_or_else(|| Timestamp::from_millis(0).expect("epoch"))
}

impl VisitStage {
    /// Restores every partition's engine as last committed (one instance running the stage).
    pub fn open(store: &dyn Store, inputs: &Inputs) -> Result<VisitStage, StoreError> {
        let count = cluster::count(store)?;
        VisitStage::open_partitions(store, inputs, Partition::all(count))
    }

    /// Restores the engines of the `held` partitions as last committed.
    pub fn open_partitions(
        store: &dyn Store,
        inputs: &Inputs,
        held: impl IntoIterator<Item = Partition>,
    ) -> Result<VisitStage, StoreError> {
        let registry = inputs.registry.read().expect("registry lock");
        let (zones, problems) = ZoneSet::new(&registry.zones(), inputs.params.match_rules());
        for p in problems {
            tracing::error!(problem = %p, "zone skipped");
        }
        let mut stage = VisitStage {
            parts: BTreeMap::new(),
            count: cluster::count(store)?,
            zones,
            zone_generation: registry.generation,
            located: Located::default(),
        };
        drop(registry);
        for p in held {
            stage.hold(store, inputs, p)?;
        }
        Ok(stage)
    }

    /// Takes `partition` on: restores its engine as last committed.
    pub fn hold(
        &mut self,
        store: &dyn Store,
        inputs: &Inputs,
        partition: Partition,
    ) -> Result<(), StoreError> {
        if partition.count() != self.count {
            return Err(StoreError::backend(
                "visit stage partition",
                format!("{partition} is not one of this store's {}", self.count),
            ));
        }
        let part = Part::open(store, inputs, partition)?;
        self.parts.insert(partition.index(), part);
        Ok(())
    }

    /// Runs `want` from now on: lets go of the partitions not in it, takes on the others (one
    /// that cannot be opened now is tried again at the next call).
    pub fn adjust(&mut self, store: &dyn Store, inputs: &Inputs, want: &BTreeSet<Partition>) {
        for p in self.held() {
            if !want.contains(&p) {
                self.release(p);
                tracing::info!(partition = %p, "visit stage partition let go");
            }
        }
        for p in want {
            if self.parts.contains_key(&p.index()) {
                continue;
            }
            match self.hold(store, inputs, *p) {
                Ok(()) => tracing::info!(partition = %p, "visit stage partition taken on"),
                Err(e) => {
                    tracing::warn!(partition = %p, error = %e, "visit stage partition not taken on yet")
                }
            }
        }
    }

    /// Lets `partition` go (another instance runs it from what this one committed).
    pub fn release(&mut self, partition: Partition) {
        self.parts.remove(&partition.index());
    }

    /// The partitions this stage runs.
    pub fn held(&self) -> Vec<Partition> {
        self.parts.values().map(|p| p.partition).collect()
    }

    /// The visits open in the held partitions' engines.
    pub fn open_visits(&self) -> usize {
        self.parts.values().map(|p| p.engine.open()).sum()
    }

    /// How far the held partitions are behind `end` (the log's next offset), at most.
    pub fn lag(&self, end: u64) -> u64 {
        self.parts
            .values()
            .map(|p| end.saturating_sub(p.at))
            .max()
            .unwrap_or(0)
    }

    /// The engine of `customer`'s partition, if this stage runs it.
    pub(super) fn engine_of(&self, customer: &str) -> Option<&VisitEngine> {
        let index = Partition::of(customer, self.count).index();
        self.parts.get(&index).map(|p| &p.engine)
    }

    /// Folds the next records after the held partitions' offsets and commits every
    /// partition's outputs with its new offset, in one commit; returns how many records it
    /// read.
    pub fn step(&mut self, store: &dyn Store, inputs: &Inputs) -> Result<usize, StoreError> {
        for part in self.parts.values_mut().filter(|p| p.stale) {
            // One that cannot be read yet is left out of this step; the others go on.
            part.reopen(store, inputs);
        }
        let Some(from) = self.parts.values().filter(|p| !p.stale).map(|p| p.at).min() else {
            return Ok(0);
        };
        self.refresh_zones(inputs);
        let records = event_log::read(store, from, BATCH)?;
        let Some(&(last, _)) = records.last() else {
            return Ok(0);
        };
        let mut folded: BTreeMap<u16, Folded> = self
            .parts
            .iter()
            .filter(|(_, p)| !p.stale && p.at <= last)
            .map(|(i, p)| (*i, Folded::from(p.at)))
            .collect();
        let mut located = std::mem::take(&mut self.located);
        located.start_step(store);
        let decoded: Vec<(u64, Record)> = records
            .iter()
            .filter_map(|(offset, bytes)| match Record::decode(bytes) {
                Ok(record) => Some((*offset, record)),
                Err(e) => {
                    tracing::error!(offset, error = %e, "unreadable event-log record skipped");
                    None
                }
            })
            .collect();
        let folding = located.prefetch(store, &decoded.iter().map(|(_, r)| r).collect::<Vec<_>>());
        let folding = folding.and_then(|()| {
            for (offset, record) in decoded {
                self.fold(record, offset, (store, inputs), &mut located, &mut folded)?
            }
            Ok(())
        });
        located.count_skipped();
        self.located = located;
        if let Err(e) = folding {
            // The engines moved on without the store: start again from what was committed.
            for i in folded.keys() {
                self.parts
                    .get_mut(i)
                    .expect("a held part")
                    .reopen(store, inputs);
            }
            return Err(e);
        }
        let log_ms = records
            .iter()
            .rev()
            .find_map(|(_, b)| Record::decode(b).ok())
            .map_or(0, |r| r.received().millis());
        // One commit for every held partition (each writes the stores' hour tallies of its
        // own, `tally/{store}/{hour}/{partition}`).
        let mut c = Commit::new();
        let mut hours = VisitHours::default();
        let ahead = ReadThrough::new(store);
        let step = folded
            .iter()
            .flat_map(|(i, f)| f.transitions.iter().map(|t| (*i, t)));
        let mut staged = write::read_ahead(&ahead, step);
        for (i, f) in &folded {
            if staged.is_err() {
                break;
            }
            let part = self.parts.get_mut(i).expect("a held part");
            staged = part.stage(
                (&ahead, inputs),
                f,
                (log_ms, last + 1),
                (&mut hours, &mut c),
            );
        }
        hours.write(&mut c);
        let committed = staged.and_then(|()| {
            crate::crash_point!("visits.before_commit");
            if folded.values().any(|f| f.app_left) {
                crate::crash_point!("visits.app_left_before_commit");
            }
            store.commit(c)
        });
        for i in folded.keys() {
            let part = self.parts.get_mut(i).expect("a held part");
            match &committed {
                Ok(()) => part.at = last + 1,
                // The engines moved on without the store: start again from what was committed.
                Err(_) => part.reopen(store, inputs),
            }
        }
        committed.map(|()| records.len())
    }

    /// Builds the zones again if the registry changed them since.
    fn refresh_zones(&mut self, inputs: &Inputs) {
        let registry = inputs.registry.read().expect("registry lock");
        if registry.generation != self.zone_generation {
            let (zones, problems) = ZoneSet::new(&registry.zones(), inputs.params.match_rules());
            for p in problems {
                tracing::error!(problem = %p, "zone skipped");
            }
            self.zones = zones;
            self.zone_generation = registry.generation;
        }
    }

    /// Folds one record at `offset` of the log into each held partition it concerns that has
    /// not read it yet: a tick moves every engine's time, a purchase is a transition of its
    /// customer's own, a gateway's footfall is counted by the first partition, any other
    /// observation is evidence for its customer's engine (if they are known and consent).
    fn fold(
        &mut self,
        record: Record,
        offset: u64,
        (store, inputs): (&dyn Store, &Inputs),
        located: &mut Located,
        folded: &mut BTreeMap<u16, Folded>,
    ) -> Result<(), StoreError> {
        let log_ms = record.received().millis();
        let count = self.count;
        // The partition `customer` is in, if it is held and has not read this record yet.
        let unread = |folded: &BTreeMap<u16, Folded>, customer: &str| {
            let i = Partition::of(customer, count).index();
            folded.get(&i).filter(|f| f.from <= offset).map(|_| i)
        };
        match record {
            Record::Tick { .. } => {
                for (i, f) in folded.iter_mut().filter(|(_, f)| f.from <= offset) {
                    let part = self.parts.get_mut(i).expect("a held part");
                    f.transitions.extend(part.engine.tick(log_ms));
                }
            }
            Record::Purchase(p) => {
                // Only about a customer still known (not erased since it was logged).
                if let Some(i) = unread(folded, &p.customer) {
                    if located.known(store, &p.customer)? {
                        let max_lateness_ms = i64::from(inputs.params.max_lateness_s) * 1000;
                        let t = purchase_transition(p, log_ms, max_lateness_ms);
                        folded.get_mut(&i).expect("held").transitions.push(t);
                    }
                }
            }
            Record::Gateway(GatewayEvent {
                event: PresenceEvent::Footfall(f),
                gateway,
                store: s,
                ..
            }) => {
                let Some(first) = folded.get_mut(&0).filter(|f| f.from <= offset) else {
                    return Ok(());
                };
                let hour = f.ts.millis().div_euclid(3_600_000) * 3_600_000;
                for scope in self.gateway_scopes(&gateway, &s) {
                    let e = first
                        .footfall
                        .entry((keys::scope_text(&scope), hour))
                        .or_default();
                    e.device_minutes = e.device_minutes.saturating_add(u64::from(f.devices));
                    e.minutes = e.minutes.saturating_add(1);
                    e.peak = e.peak.max(f.devices);
                }
            }
            record => {
                let evidence = self.evidence(&record, offset, store, &inputs.eids, located)?;
                let from_app = matches!(record, Record::App(_));
                for evidence in evidence {
                    let Some(i) = unread(folded, &evidence.customer) else {
                        continue;
                    };
                    if located.allows(store, &evidence.customer)? {
                        let f = folded.get_mut(&i).expect("held");
                        f.app_left |= from_app && !evidence.inside;
                        let part = self.parts.get_mut(&i).expect("a held part");
                        f.transitions.extend(part.engine.observe(evidence, log_ms));
                    }
                }
            }
        }
        Ok(())
    }

    /// Erases a customer's part of the visit stage (DESIGN.md, "Privacy by design"): the
    /// engine's states and buffered evidence about them, and their visits with the visit
    /// indexes. One commit, by the instance that runs their partition; run between two steps,
    /// so no step in flight writes them back. Their identity is gone before this runs, so
    /// nothing later in the log is turned into a visit or a transition of theirs (the
    /// transitions already written are blanked afterwards, outside the stage:
    /// [`crate::privacy::finish_erasure`]).
    pub fn erase(
        &mut self,
        store: &dyn Store,
        inputs: &Inputs,
        customer: &str,
    ) -> Result<VisitsErased, StoreError> {
        let partition = Partition::of(customer, self.count);
        let Some(part) = self.parts.get_mut(&partition.index()) else {
            return Err(StoreError::Unavailable(format!(
                "the visit stage's partition {partition} is not run by this instance"
            )));
        };
        if part.stale {
            *part = Part::open(store, inputs, partition)?;
        }
        let erased = part.erase(store, customer, &inputs.id_key);
        if erased.is_err() {
            // The engine forgot without the store: start again from what was committed (an
            // erasure asked again then finds the states still there).
            part.reopen(store, inputs);
        }
        erased
    }
}

/// The seq `partition`'s next transition will get (they are numbered from 1 per partition in
/// the order this stage decided them).
pub fn transitions_end(store: &dyn Store, partition: Partition) -> Result<u64, StoreError> {
    let prefix = partition.key_prefix();
    match crate::store::last_with_prefix(store, Space::Transitions, &prefix)? {
        Some((k, _)) => Ok(keys::transition_seq(partition, &k)? + 1),
        None => Ok(1),
    }
}

/// What a step folded from its records for one partition, before it is written.
struct Folded {
    /// The partition's offset before the step: it folds the records from there.
    from: u64,
    transitions: Vec<Transition>,
    /// Footfall added per (scope, hour).
    footfall: BTreeMap<(String, i64), Footfall>,
    /// Whether an app report said its customer left somewhere (a crash test stops the stage
    /// there).
    app_left: bool,
}

impl From<u64> for Folded {
    fn from(from: u64) -> Folded {
        Folded {
            from,
            transitions: Vec::new(),
            footfall: BTreeMap::new(),
            app_left: false,
        }
    }
}

/// A purchase as a transition of its own (its id in place of a visit's), logged at `log_ms`;
/// late if it reached the cloud more than `max_lateness_ms` after it was made.
fn purchase_transition(p: PurchaseEvent, log_ms: i64, max_lateness_ms: i64) -> Transition {
    let at_ms = p.event_ts.millis();
    Transition {
        visit: p.purchase,
        customer: p.customer,
        scope: p
            .store
            .map_or(Scope::Online, |s| Scope::Store(s.to_string())),
        kind: TransitionKind::Purchase {
            total: p.total,
            currency: p.currency,
            categories: p.categories,
        },
        at_ms,
        decided_ms: log_ms,
        late: p.received.millis() - at_ms > max_lateness_ms,
        sources: BTreeSet::new(),
    }
}

/// Runs the stage over the partitions this instance is assigned: folds whenever the log grows,
/// takes on and lets go of partitions as the assignment changes, and between two steps does
/// the erasures asked of its partitions ([`request_erasure`]) — at once when `erasures` wakes
/// it (this instance was asked), else within [`ERASURES_EVERY`].
pub async fn run(
    store: Arc<dyn Store>,
    inputs: Arc<Inputs>,
    (mut log_end, mut assignment): (watch::Receiver<u64>, watch::Receiver<Assignment>),
    erasures: Arc<tokio::sync::Notify>,
    live: Arc<crate::live::Live>,
) {
    let opened = {
        let (store, inputs) = (store.clone(), inputs.clone());
        tokio::task::spawn_blocking(move || {
            VisitStage::open_partitions(store.as_ref(), &inputs, [])
        })
        .await
    };
    let mut stage = match opened {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return tracing::error!(error = %e, "visit stage could not start"),
        Err(e) => return tracing::error!(error = %e, "visit stage could not start"),
    };
    let mut erasures_due = tokio::time::Instant::now();
    loop {
        let want = assignment.borrow_and_update().of(CONSUMER);
        let (s, i) = (store.clone(), inputs.clone());
        let erase = tokio::time::Instant::now() >= erasures_due;
        if erase {
            erasures_due = tokio::time::Instant::now() + ERASURES_EVERY;
        }
        let result = tokio::task::spawn_blocking(move || {
            stage.adjust(s.as_ref(), &i, &want);
            // Erasures first, between two steps.
            if erase {
                if let Err(e) = stage.take_erasures(s.as_ref(), &i) {
                    tracing::warn!(error = %e, "erasure requests not read; reading them again");
                }
            }
            let n = stage.step(s.as_ref(), &i);
            (stage, n)
        })
        .await;
        let n = match result {
            Ok((st, n)) => {
                stage = st;
                n
            }
            Err(e) => return tracing::error!(error = %e, "visit stage task failed"),
        };
        live.set_open_visits(stage.open_visits() as u64);
        let end = *log_end.borrow();
        let read = n.as_ref().map_or(0, |n| *n);
        event_log::report_partitions_progress(CONSUMER, stage.lag(end), read);
        match n {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            // Another instance committed this partition first: read again and go on.
            Err(StoreError::Conflict { .. }) => {
                tracing::debug!("visit step conflicted; reading again");
                metrics::counter!("omo_stage_step_conflicts_total", "stage" => CONSUMER)
                    .increment(1);
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "visit stage failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        tokio::select! {
            changed = log_end.changed() => if changed.is_err() { return },
            changed = assignment.changed() => if changed.is_err() { return },
            () = erasures.notified() => erasures_due = tokio::time::Instant::now(),
            () = tokio::time::sleep_until(erasures_due) => {}
        }
    }
}

#[cfg(test)]
impl VisitStage {
    /// Every held partition's engine as a value to compare.
    fn snapshot(&self) -> Vec<impl PartialEq + std::fmt::Debug> {
        self.parts.values().map(|p| p.engine.snapshot()).collect()
    }
}

#[cfg(test)]
mod app_outside_tests;
#[cfg(test)]
mod partition_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity;
    use crate::identity::{new_customer, save_customer, ConsentSource, EidKey};
    use crate::ingest::record::GatewayEvent;
    use crate::profiles;
    use crate::registry::replace_site;
    use crate::store::barrier::scan_all;
    use crate::store::event_log::EventLog;
    use crate::store::testing::{places, Place, TestStore};
    use crate::store::Commit;
    use crate::visits::visits_of_customer;
    use omo_device_config::eid::{eid, EidIdentity};
    use omo_device_config::payload::{Epoch, Sighting};
    use omo_device_config::site::Site;
    use omo_device_config::{BeaconId, GatewayId, StoreId};

    const SITE: &str = r#"
[[stores]]
id = "s1"
name = "S"
time_zone = "Asia/Tokyo"
location = { lat = 35.6, lon = 139.7 }

[[gateways]]
id = "g1"
store = "s1"
password_hash = "$7$101$Xcy/Gs5LfpqcCySG$/G0Y9IDsEwGLnHmNMfIbFXFOIvnnj4g7FTnh9iSC/bHHmbF/5lt2fEZ1QollTlxn7V65dtthaO5oeaE06ThENg=="
signing_key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

[[gateway_zones]]
id = "floor"
store = "s1"
name = "Floor"
gateways = ["g1"]
max_distance_m = 10.0
"#;

    /// A new store holding only what the stage reads (registry, identities, event log) of
    /// `store`: the stage's outputs start again from nothing.
    fn inputs_only(place: &Place, store: &TestStore) -> (Place, TestStore) {
        let fresh = place.fresh_like();
        let copy = fresh.open();
        for space in [Space::Registry, Space::Identity, Space::EventLog] {
            let mut c = Commit::new();
            for (k, v) in scan_all(store, space).unwrap() {
                c.put(space, k, v);
            }
            copy.commit(c).unwrap();
        }
        (fresh, copy)
    }

    /// Saves `customer` as new, with location consent given at `t`.
    pub(super) fn save_located(
        store: &dyn Store,
        mut customer: crate::identity::Customer,
        t: Timestamp,
    ) -> crate::identity::Customer {
        let located = crate::identity::Consent {
            location: true,
            ..Default::default()
        };
        customer.set_consent(located, ConsentSource::Admin, None, t);
        store
            .commit(save_customer(store, None, &customer).unwrap())
            .unwrap();
        customer
    }

    /// A store with `SITE` and customers c0..c3 carrying static beacons, with location consent.
    fn store_of_three(place: &Place) -> (TestStore, Inputs, Vec<BeaconId>) {
        store_of(place, 3, None)
    }

    /// A store with `SITE` and `n` customers c0.. carrying static beacons, with location
    /// consent; split in `partitions` (none: one, as a store from before partitions).
    pub(super) fn store_of(
        place: &Place,
        n: usize,
        partitions: Option<u16>,
    ) -> (TestStore, Inputs, Vec<BeaconId>) {
        let store = place.open();
        if let Some(p) = partitions {
            crate::cluster::settle(&store, Some(p)).unwrap();
        }
        let site = Site::parse(SITE, false).unwrap();
        store
            .commit(replace_site(&Registry::default(), &site).unwrap())
            .unwrap();
        let t = Timestamp::from_millis(1_790_000_000_000).unwrap();
        let mut beacons = Vec::new();
        for i in 0..n {
            let mut customer = new_customer(t);
            customer.id = format!("c{i}");
            let beacon: BeaconId = format!("ibeacon:0A0D0000-0000-4000-8000-00000000000A:1:{i}")
                .parse()
                .unwrap();
            customer.beacons.push(beacon);
            save_located(&store, customer, t);
            beacons.push(beacon);
        }
        let inputs = Inputs {
            registry: Arc::new(RwLock::new(Registry::load(&store).unwrap())),
            eids: Arc::new(Mutex::new(EidResolver::new(Vec::new(), 300))),
            params: VisitParams {
                enter_after_s: 4,
                exit_timeout_s: 8,
                exit_grace_s: 2,
                reorder_window_s: 3,
                max_lateness_s: 20,
                ..VisitParams::default()
            },
            profiles: Default::default(),
            id_key: [9; 32],
        };
        (store, inputs, beacons)
    }

    /// Gateway g1's event, received at `received`.
    pub(super) fn g1_event(event: PresenceEvent, at: Timestamp, received: Timestamp) -> Record {
        Record::Gateway(GatewayEvent {
            gateway: GatewayId::new("g1").unwrap(),
            store: StoreId::new("s1").unwrap(),
            epoch: Epoch(1),
            event,
            event_ts: at,
            received,
        })
    }

    /// Appends `records` to each store's log, one commit each.
    fn append_to_each(logs: [(&TestStore, &mut EventLog); 2], records: &[Record]) {
        for (store, log) in logs {
            let mut c = Commit::new();
            for r in records {
                log.append(&mut c, &r.encode());
            }
            store.commit(c).unwrap();
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// A stage opened again after any commit holds the engine that committed — its states
        /// and its reorder buffer — and decides what a stage that never stopped decides.
        #[test]
        fn a_stage_opened_again_after_any_commit_goes_on_as_if_it_never_stopped(
            seconds in proptest::collection::vec(
                (proptest::option::of((0usize..3, 0i64..5000, 0u8..3)), proptest::prelude::any::<bool>()),
                1..80,
            ),
        ) {
            let (place_a, place_b) = (Place::sled(), Place::sled());
            let (a, inputs_a, beacons) = store_of_three(&place_a);
            let (b, inputs_b, _) = store_of_three(&place_b);
            let mut log_a = EventLog::open(&a).unwrap();
            let mut log_b = EventLog::open(&b).unwrap();
            let mut stage_a = VisitStage::open(&a, &inputs_a).unwrap();
            let mut stage_b = VisitStage::open(&b, &inputs_b).unwrap();
            let t0 = 1_790_000_000_000i64;
            for (s, (event, reopen)) in seconds.into_iter().enumerate() {
                let received = ts(t0 + s as i64 * 1000);
                let mut records = vec![Record::Tick { received }];
                if let Some((who, delay_ms, kind)) = event {
                    let at = ts(received.millis() - delay_ms);
                    let sighting = Sighting {
                        seq: s as u64 + 1,
                        ts: at,
                        beacon: beacons[who],
                        rssi: -60.0,
                        distance_m: 3.0,
                        seen_s: 0.0,
                    };
                    let event = match kind {
                        0 => PresenceEvent::Enter(sighting),
                        1 => PresenceEvent::Stay(sighting),
                        _ => PresenceEvent::Exit(sighting),
                    };
                    records.push(g1_event(event, at, received));
                }
                append_to_each([(&a, &mut log_a), (&b, &mut log_b)], &records);
                while stage_a.step(&a, &inputs_a).unwrap() > 0 {}
                while stage_b.step(&b, &inputs_b).unwrap() > 0 {}
                if reopen {
                    let reopened = VisitStage::open(&b, &inputs_b).unwrap();
                    proptest::prop_assert_eq!(reopened.snapshot(), stage_b.snapshot());
                    stage_b = reopened;
                }
            }
            proptest::prop_assert_eq!(
                scan_all(&a, Space::Transitions).unwrap(),
                scan_all(&b, Space::Transitions).unwrap()
            );
        }
    }

    /// What a running stage read of identity is read again after a commit changes it: a
    /// consent withdrawn between two steps keeps the later sightings out of any visit, and a
    /// beacon handed to another customer places that customer from then on.
    #[test]
    fn a_running_stage_sees_identity_changed_between_its_steps() {
        for place in places() {
            sees_identity_changed_between_steps(&place);
        }
    }

    fn sees_identity_changed_between_steps(place: &Place) {
        let (store, inputs, beacons) = store_of_three(place);
        let mut log = EventLog::open(&store).unwrap();
        let mut stage = VisitStage::open(&store, &inputs).unwrap();
        let t0 = 1_790_000_000_000i64;
        let mut seq = 0;
        let mut second = |from: i64, to: i64, who: &[usize], stage: &mut VisitStage| {
            for s in from..to {
                let received = ts(t0 + s * 1000);
                let mut c = Commit::new();
                log.append(&mut c, &Record::Tick { received }.encode());
                for w in who {
                    seq += 1;
                    let sighting = Sighting {
                        seq,
                        ts: received,
                        beacon: beacons[*w],
                        rssi: -60.0,
                        distance_m: 3.0,
                        seen_s: 0.0,
                    };
                    let e = g1_event(PresenceEvent::Stay(sighting), received, received);
                    log.append(&mut c, &e.encode());
                }
                store.commit(c).unwrap();
                while stage.step(&store, &inputs).unwrap() > 0 {}
            }
        };
        // c0 and c1 are seen for two seconds: candidates, not yet entered (4 s).
        second(0, 2, &[0, 1], &mut stage);
        assert!(stage.located.of.contains_key("c0"));
        // c0 withdraws location consent; c1's beacon now belongs to c2.
        let t = ts(t0);
        let (old, bytes) = crate::identity::customer_for_update(&store, "c0").unwrap();
        let mut now_not = old.clone();
        now_not.set_consent(Default::default(), ConsentSource::App, Some("v2"), t);
        store
            .commit(save_customer(&store, Some((&old, &bytes)), &now_not).unwrap())
            .unwrap();
        let (old, bytes) = crate::identity::customer_for_update(&store, "c1").unwrap();
        let mut without = old.clone();
        without.beacons.clear();
        store
            .commit(save_customer(&store, Some((&old, &bytes)), &without).unwrap())
            .unwrap();
        let (old, bytes) = crate::identity::customer_for_update(&store, "c2").unwrap();
        let mut with = old.clone();
        with.beacons = vec![beacons[1]];
        store
            .commit(save_customer(&store, Some((&old, &bytes)), &with).unwrap())
            .unwrap();
        second(2, 20, &[0, 1], &mut stage);
        let scopes = |c: &str| -> Vec<Scope> {
            visits_of_customer(&store, c, 10)
                .unwrap()
                .into_iter()
                .map(|v| v.scope)
                .collect()
        };
        assert_eq!(scopes("c0"), Vec::<Scope>::new());
        assert_eq!(scopes("c1"), Vec::<Scope>::new());
        assert_eq!(scopes("c2").len(), 2, "c2 entered the zone and the store");
    }

    use crate::store::faulty::Faulty;
    use std::sync::atomic::Ordering::SeqCst;

    /// A commit that fails, then an open again that fails too: the stage opens before its
    /// next step and decides what a stage whose store never failed decides.
    #[test]
    fn a_failed_commit_and_a_failed_reopen_are_followed_by_an_open() {
        for place_a in places() {
            failed_commit_and_reopen(&place_a, &place_a.fresh_like());
        }
    }

    fn failed_commit_and_reopen(place_a: &Place, place_b: &Place) {
        let (a, inputs_a, beacons) = store_of_three(place_a);
        let (b, inputs_b, _) = store_of_three(place_b);
        let flaky = Faulty::new(b.clone());
        let mut stage_a = VisitStage::open(&a, &inputs_a).unwrap();
        let mut stage_b = VisitStage::open(&flaky, &inputs_b).unwrap();
        let (mut log_a, mut log_b) = (EventLog::open(&a).unwrap(), EventLog::open(&b).unwrap());
        let t0 = 1_790_000_000_000i64;
        for s in 0..120i64 {
            let received = ts(t0 + s * 1000);
            let at = ts(received.millis() - 500);
            let sighting = Sighting {
                seq: s as u64 + 1,
                ts: at,
                beacon: beacons[(s % 2) as usize],
                rssi: -60.0,
                distance_m: 3.0,
                seen_s: 0.0,
            };
            let records = [
                Record::Tick { received },
                g1_event(PresenceEvent::Stay(sighting), at, received),
            ];
            append_to_each([(&a, &mut log_a), (&b, &mut log_b)], &records);
            while stage_a.step(&a, &inputs_a).unwrap() > 0 {}
            if s == 40 {
                // The step's commit fails and so does the open after it.
                flaky.commits_fail.store(true, SeqCst);
                assert!(stage_b.step(&flaky, &inputs_b).is_err());
                assert!(stage_b.parts.values().any(|p| p.stale));
                flaky.commits_fail.store(false, SeqCst);
                flaky.reads_fail.store(false, SeqCst);
            }
            while stage_b.step(&flaky, &inputs_b).unwrap() > 0 {}
        }
        let transitions = scan_all(&a, Space::Transitions).unwrap();
        assert!(transitions.len() >= 4, "{} transitions", transitions.len());
        assert_eq!(transitions, scan_all(&b, Space::Transitions).unwrap());
        assert_eq!(stage_a.snapshot(), stage_b.snapshot());
        // And what it committed opens as that engine.
        let reopened = VisitStage::open(&b, &inputs_b).unwrap();
        assert_eq!(reopened.snapshot(), stage_a.snapshot());
    }

    /// A purchase sent again (its ingest key long expired) is a second log record: its
    /// transition comes again (the decision stage decides it once), its profile counts it once.
    #[test]
    fn a_purchase_logged_twice_is_folded_into_the_profile_once() {
        for place in places() {
            purchase_logged_twice(&place);
        }
    }

    fn purchase_logged_twice(place: &Place) {
        let store = place.open();
        let t0 = Timestamp::from_millis(1_790_000_000_000).unwrap();
        let customer = new_customer(t0);
        store
            .commit(save_customer(&store, None, &customer).unwrap())
            .unwrap();
        let inputs = Inputs {
            registry: Arc::new(RwLock::new(Registry::load(&store).unwrap())),
            eids: Arc::new(Mutex::new(EidResolver::new(Vec::new(), 300))),
            params: VisitParams::default(),
            profiles: Default::default(),
            id_key: [9; 32],
        };
        let purchase = |received_ms: i64| {
            Record::Purchase(crate::ingest::record::PurchaseEvent {
                purchase: "p_1".into(),
                customer: customer.id.clone(),
                channel: crate::vocab::SaleChannel::Online,
                store: None,
                event_ts: t0,
                received: ts(received_ms),
                currency: "JPY".into(),
                total: 1200.0,
                categories: BTreeSet::from(["coffee".to_owned()]),
            })
            .encode()
        };
        let mut stage = VisitStage::open(&store, &inputs).unwrap();
        for received in [t0.millis(), t0.millis() + 20 * 86_400_000] {
            let mut log = EventLog::open(&store).unwrap();
            let mut c = Commit::new();
            log.append(&mut c, &purchase(received));
            store.commit(c).unwrap();
            while stage.step(&store, &inputs).unwrap() > 0 {}
        }
        let p = profiles::read(&store, &customer.id).unwrap().unwrap();
        assert_eq!((p.online_purchases, p.spend["JPY"].online), (1, 1200.0));
        let transitions: Vec<Transition> = scan_all(&store, Space::Transitions)
            .unwrap()
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).unwrap())
            .collect();
        assert_eq!(transitions.len(), 2);
        assert!(
            !transitions[0].late && transitions[1].late,
            "{transitions:?}"
        );
        assert_eq!(transitions[1].scope, Scope::Online);
    }

    /// The phone's EID changes every 2^10 s: a 40-minute stay spans three EIDs, heard by the
    /// gateway, resolved at each event's time through the precomputed tables.
    #[test]
    fn an_eid_rotating_during_a_40_minute_stay_is_one_visit_of_40_minutes() {
        for place in places() {
            eid_rotating_during_a_stay(&place);
        }
    }

    fn eid_rotating_during_a_stay(place: &Place) {
        let store = place.open();
        let site = Site::parse(SITE, false).unwrap();
        store
            .commit(replace_site(&Registry::default(), &site).unwrap())
            .unwrap();
        let t0: i64 = 1_790_000_000;
        let key = EidKey {
            identity_key: "0123456789abcdef0123456789abcdef".into(),
            exponent: 10,
            clock_offset_s: 0,
        };
        let identity: EidIdentity = key.identity().unwrap();
        let mut customer = new_customer(Timestamp::from_millis(t0 * 1000).unwrap());
        customer.eid_keys.push(key);
        let t = Timestamp::from_millis(t0 * 1000).unwrap();
        let customer = save_located(&store, customer, t);
        let inputs = Inputs {
            registry: Arc::new(RwLock::new(Registry::load(&store).unwrap())),
            eids: Arc::new(Mutex::new(EidResolver::new(
                identity::all_eid_keys(&store).unwrap(),
                300,
            ))),
            params: VisitParams::default(),
            profiles: Default::default(),
            id_key: [9; 32],
        };
        let mut log = EventLog::open(&store).unwrap();
        let mut c = Commit::new();
        let mut seen = BTreeSet::new();
        for s in 0..3000i64 {
            let at = ts((t0 + s) * 1000);
            if s <= 2400 && s % 30 == 0 {
                let id = eid(
                    &identity.identity_key,
                    10,
                    identity.beacon_time(t0 + s).unwrap(),
                );
                seen.insert(id);
                let event = PresenceEvent::Stay(Sighting {
                    seq: s as u64 + 1,
                    ts: at,
                    beacon: BeaconId::EddystoneEid { eid: id },
                    rssi: -60.0,
                    distance_m: 3.0,
                    seen_s: 30.0,
                });
                let record = Record::Gateway(GatewayEvent {
                    gateway: GatewayId::new("g1").unwrap(),
                    store: StoreId::new("s1").unwrap(),
                    epoch: Epoch(1),
                    event,
                    event_ts: at,
                    received: at,
                });
                log.append(&mut c, &record.encode());
            }
            log.append(&mut c, &Record::Tick { received: at }.encode());
        }
        store.commit(c).unwrap();
        assert!(seen.len() >= 3, "the EID rotated: {} ids", seen.len());
        let mut stage = VisitStage::open(&store, &inputs).unwrap();
        while stage.step(&store, &inputs).unwrap() > 0 {}
        let visits = visits_of_customer(&store, &customer.id, 10).unwrap();
        assert_eq!(visits.len(), 2, "{visits:?}");
        for v in &visits {
            assert_eq!(v.dwell_s, Some(2400), "{v:?}");
            assert_eq!(v.milestones_min, vec![5, 10, 20, 30]);
        }
        // The store's index entry holds the customer and, once it ended, the dwell.
        let entries =
            crate::store::barrier::scan_prefix(&store, Space::Visits, b"by-scope/store/s1/", 10)
                .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(
            keys::parse_scope_index_value(&entries[0].1),
            Some((customer.id.clone(), Some(2400)))
        );
        let scopes: BTreeSet<Scope> = visits.iter().map(|v| v.scope.clone()).collect();
        assert_eq!(
            scopes,
            BTreeSet::from([Scope::Zone("floor".into()), Scope::Store("s1".into())])
        );
        // Replaying from scratch (a lost offset) derives the same visit ids.
        let ids: BTreeSet<String> = visits.iter().map(|v| v.id.clone()).collect();
        let (_place2, copy) = inputs_only(place, &store);
        let mut again = VisitStage::open(&copy, &inputs).unwrap();
        while again.step(&copy, &inputs).unwrap() > 0 {}
        let replayed: BTreeSet<String> = visits_of_customer(&copy, &customer.id, 10)
            .unwrap()
            .into_iter()
            .map(|v| v.id)
            .collect();
        assert_eq!(replayed, ids);
        // Without location consent the same observations make no visit at all.
        let (_place3, withdrawn) = inputs_only(place, &store);
        let (old, bytes) = crate::identity::customer_for_update(&withdrawn, &customer.id).unwrap();
        let mut now_not = old.clone();
        now_not.set_consent(Default::default(), ConsentSource::App, Some("v2"), t);
        withdrawn
            .commit(save_customer(&withdrawn, Some((&old, &bytes)), &now_not).unwrap())
            .unwrap();
        let mut stage = VisitStage::open(&withdrawn, &inputs).unwrap();
        while stage.step(&withdrawn, &inputs).unwrap() > 0 {}
        assert!(visits_of_customer(&withdrawn, &customer.id, 10)
            .unwrap()
            .is_empty());
    }
}
