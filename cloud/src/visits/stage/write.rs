//! What a step of the visit stage writes besides the engine's state: the transitions in
//! decision order, the visits they change with the visit indexes and the stores' report
//! tallies, the customers' profiles, and footfall.

use std::collections::{BTreeMap, BTreeSet};

use super::{ts, Footfall, Inputs, VisitRecord};
use crate::cluster::Partition;
use crate::profiles::{self, Profile, PurchaseMark};
use crate::store::read_through::ReadThrough;
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::hours::{self as tally, VisitHours};
use crate::visits::engine::{Scope, Transition, TransitionKind};
use crate::visits::keys;

/// Reads ahead what writing `transitions` (each with its partition's index) will read, in
/// three round trips for a whole step instead of a few per transition: the visits they belong
/// to, the profiles an enter or a purchase changes (and whether a purchase was folded in),
/// then the store index entries the enters and exits set (as [`index_entry`] names them for
/// [`transitions`]) and the stores' hour tallies those entries count in.
pub(super) fn read_ahead<'a>(
    ahead: &ReadThrough<'_>,
    transitions: impl Iterator<Item = (u16, &'a Transition)> + Clone,
) -> Result<(), StoreError> {
    let mut visits = BTreeSet::new();
    let mut profile_keys = BTreeSet::new();
    for (_, t) in transitions.clone() {
        match (&t.kind, &t.scope) {
            (TransitionKind::Purchase { .. }, _) => {
                profile_keys.insert(profiles::keys::folded_key(&t.customer, &t.visit));
                profile_keys.insert(profiles::keys::profile_key(&t.customer));
                continue;
            }
            (TransitionKind::Enter, Scope::Store(_)) => {
                profile_keys.insert(profiles::keys::profile_key(&t.customer));
            }
            _ => {}
        }
        visits.insert(keys::visit(&t.visit).into_bytes());
    }
    ahead.read_ahead(Space::Visits, visits.into_iter().collect())?;
    ahead.read_ahead(
        Space::Profiles,
        profile_keys.into_iter().map(String::into_bytes).collect(),
    )?;
    // A visit's scope and entry time are its first transition's (or its stored row's).
    let mut seen: BTreeMap<&str, VisitRecord> = BTreeMap::new();
    let mut entries = BTreeSet::new();
    for (partition, t) in transitions {
        if matches!(t.kind, TransitionKind::Purchase { .. }) {
            continue;
        }
        let v = match seen.entry(t.visit.as_str()) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(stored_visit(ahead, t)?),
        };
        if let Some((key, Scope::Store(s), entered_ms)) = index_entry(t, v) {
            entries.insert(key);
            entries.insert(tally::visits_shard_key(s, entered_ms, partition));
        }
    }
    ahead.read_ahead(
        Space::Visits,
        entries.into_iter().map(String::into_bytes).collect(),
    )
}

/// The scope index entry an enter or an exit sets — its key, the visit's scope and when it
/// entered — an exit's from its visit `v`.
fn index_entry<'a>(t: &'a Transition, v: &'a VisitRecord) -> Option<(String, &'a Scope, i64)> {
    match t.kind {
        TransitionKind::Enter => Some((
            keys::in_scope(&t.scope, t.at_ms, &t.visit),
            &t.scope,
            t.at_ms,
        )),
        TransitionKind::Exit { .. } => Some((
            keys::in_scope(&v.scope, v.entered.millis(), &v.id),
            &v.scope,
            v.entered.millis(),
        )),
        _ => None,
    }
}

/// Stores each transition (numbered on from the last stored in its partition), updates the
/// visit it belongs to, the visit indexes and (in `hours`) the stores' report tallies.
pub(super) fn transitions(
    store: &dyn Store,
    partition: Partition,
    transitions: &[Transition],
    (secret, hours): (&[u8; 32], &mut VisitHours),
    c: &mut Commit,
) -> Result<(), StoreError> {
    let next = super::transitions_end(store, partition)?;
    let mut visits: BTreeMap<String, VisitRecord> = BTreeMap::new();
    let mut indexed: BTreeMap<String, IndexChange> = BTreeMap::new();
    for (seq, t) in (next..).zip(transitions) {
        c.put(
            Space::Transitions,
            keys::transition(partition, seq),
            serde_json::to_vec(t).expect("transitions serialise"),
        );
        if matches!(t.kind, TransitionKind::Purchase { .. }) {
            continue;
        }
        let mut v = match visits.remove(&t.visit) {
            Some(v) => v,
            None => stored_visit(store, t)?,
        };
        apply(store, t, &mut v, &mut indexed, c)?;
        visits.insert(t.visit.clone(), v);
    }
    for (id, v) in visits {
        c.put(
            Space::Visits,
            keys::visit(&id),
            serde_json::to_vec(&v).expect("visits serialise"),
        );
    }
    // The stores' tallies count what their visit index entries now hold (written once for
    // every partition of the commit: they share the stores' hours).
    for e in indexed.into_values().filter(|e| e.was != Some(e.now)) {
        let visitor = tally::visitor(secret, &e.customer);
        hours
            .get(store, &e.store, e.entered_ms, Some(partition.index()))?
            .change(visitor, e.was, e.now);
    }
    Ok(())
}

/// The visit `t` belongs to as stored, or a new one that `t` begins.
fn stored_visit(store: &dyn Store, t: &Transition) -> Result<VisitRecord, StoreError> {
    Ok(
        match store.get(Space::Visits, keys::visit(&t.visit).as_bytes())? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError::backend("visit", e))?,
            None => VisitRecord {
                id: t.visit.clone(),
                customer: t.customer.clone(),
                scope: t.scope.clone(),
                entered: ts(t.at_ms),
                exited: None,
                dwell_s: None,
                milestones_min: Vec::new(),
                sources: BTreeSet::new(),
                late: t.late,
            },
        },
    )
}

/// Applies transition `t` to its visit `v`, writing the visit indexes an enter or an exit
/// changes (and noting a store visit's entry for the tallies).
fn apply(
    store: &dyn Store,
    t: &Transition,
    v: &mut VisitRecord,
    indexed: &mut BTreeMap<String, IndexChange>,
    c: &mut Commit,
) -> Result<(), StoreError> {
    v.sources.extend(t.sources.iter().copied());
    match &t.kind {
        TransitionKind::Enter => {
            c.put(
                Space::Visits,
                keys::of_customer(&t.customer, &t.visit),
                Vec::new(),
            );
            let (key, scope, entered_ms) = index_entry(t, v).expect("an enter's entry");
            if let Scope::Store(s) = scope {
                let visit = (s.as_str(), entered_ms, t.customer.as_str());
                IndexChange::note(store, indexed, &key, visit, v.dwell_s, None)?;
            }
            c.put(
                Space::Visits,
                key,
                keys::scope_index_value(&t.customer, None),
            );
        }
        TransitionKind::Dwell { minutes } => v.milestones_min.push(*minutes),
        TransitionKind::Exit { dwell_s } => {
            let (key, scope, entered_ms) = index_entry(t, v).expect("an exit's entry");
            if let Scope::Store(s) = scope {
                let visit = (s.as_str(), entered_ms, v.customer.as_str());
                IndexChange::note(store, indexed, &key, visit, v.dwell_s, Some(*dwell_s))?;
            }
            v.exited = Some(ts(t.at_ms));
            v.dwell_s = Some(*dwell_s);
            c.put(
                Space::Visits,
                key,
                keys::scope_index_value(&v.customer, Some(*dwell_s)),
            );
        }
        TransitionKind::Purchase { .. } => {}
    }
    Ok(())
}

/// A store visit's index entry written by a step: what it held before the step and holds now.
struct IndexChange {
    store: String,
    entered_ms: i64,
    customer: String,
    /// Absent, or the visit's dwell (`None` while open).
    was: Option<Option<u64>>,
    now: Option<u64>,
}

impl IndexChange {
    /// Notes that the step sets entry `key` of visit `(store, entered_ms, customer)` to the
    /// dwell `now`; `row_dwell`: the dwell its visit row holds before this write (for an
    /// older entry that holds nothing itself).
    fn note(
        store: &dyn Store,
        indexed: &mut BTreeMap<String, IndexChange>,
        key: &str,
        (s, entered_ms, customer): (&str, i64, &str),
        row_dwell: Option<u64>,
        now: Option<u64>,
    ) -> Result<(), StoreError> {
        if let Some(e) = indexed.get_mut(key) {
            e.now = now;
            return Ok(());
        }
        let was = store
            .get(Space::Visits, key.as_bytes())?
            .map(|v| keys::parse_scope_index_value(&v).map_or(row_dwell, |(_, d)| d));
        indexed.insert(
            key.to_owned(),
            IndexChange {
                store: s.to_owned(),
                entered_ms,
                customer: customer.to_owned(),
                was,
                now,
            },
        );
        Ok(())
    }
}

/// Folds the step's store visits and purchases into their customers' profiles and recomputes
/// their tiers and tags as of `log_ms` (the step's last log time).
pub(super) fn profiles(
    store: &dyn Store,
    inputs: &Inputs,
    transitions: &[Transition],
    log_ms: i64,
    c: &mut Commit,
) -> Result<(), StoreError> {
    let params = &inputs.profiles;
    let mut changed: BTreeMap<&str, Profile> = BTreeMap::new();
    let mut folded: BTreeSet<String> = BTreeSet::new();
    for t in transitions {
        if let TransitionKind::Purchase { .. } = t.kind {
            // Each purchase once, however often it is sent again (its ingest key expires).
            let key = profiles::folded_key(&t.customer, &t.visit);
            if folded.contains(&key) || store.get(Space::Profiles, key.as_bytes())?.is_some() {
                continue;
            }
            c.put(Space::Profiles, key.clone(), Vec::new());
            folded.insert(key);
        }
        let relevant = matches!(
            (&t.kind, &t.scope),
            (TransitionKind::Enter, Scope::Store(_)) | (TransitionKind::Purchase { .. }, _)
        );
        if !relevant {
            continue;
        }
        let p = match changed.entry(t.customer.as_str()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let p = profiles::read(store, &t.customer)?
                    .unwrap_or_else(|| Profile::new(&t.customer));
                e.insert(p)
            }
        };
        mark(p, t, params.keep_days);
    }
    if changed.is_empty() {
        return Ok(());
    }
    let rules = profiles::rules(store)?;
    let registry = inputs.registry.read().expect("registry lock");
    let tz_of = |s: &str| registry.store_tz(s);
    for (customer, mut p) in changed {
        p.refresh(&rules, params, log_ms, &tz_of);
        c.put(
            Space::Profiles,
            profiles::profile_key(customer),
            serde_json::to_vec(&p).expect("profiles serialise"),
        );
    }
    Ok(())
}

/// Adds a store visit's enter or a purchase to profile `p` (keeping `keep_days` of detail).
fn mark(p: &mut Profile, t: &Transition, keep_days: u32) {
    match (&t.kind, &t.scope) {
        (TransitionKind::Enter, Scope::Store(s)) => {
            p.add_visit(s, t.at_ms, keep_days);
        }
        (
            TransitionKind::Purchase {
                total,
                currency,
                categories,
            },
            scope,
        ) => p.add_purchase(
            PurchaseMark {
                id: t.visit.clone(),
                at_ms: t.at_ms,
                channel: match scope {
                    Scope::Online => crate::vocab::SaleChannel::Online,
                    _ => crate::vocab::SaleChannel::Store,
                },
                store: match scope {
                    Scope::Store(s) => Some(s.clone()),
                    _ => None,
                },
                currency: currency.clone(),
                total: *total,
                categories: categories.clone(),
            },
            keep_days,
        ),
        _ => {}
    }
}

/// Adds the step's footfall to each (scope, hour)'s stored total.
pub(super) fn footfall(
    store: &dyn Store,
    added: &BTreeMap<(String, i64), Footfall>,
    c: &mut Commit,
) -> Result<(), StoreError> {
    for ((scope, hour), add) in added {
        let key = keys::footfall(scope, *hour);
        let mut total: Footfall = match store.get(Space::Visits, key.as_bytes())? {
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| StoreError::backend("footfall", e))?
            }
            None => Footfall::default(),
        };
        total.device_minutes = total.device_minutes.saturating_add(add.device_minutes);
        total.minutes = total.minutes.saturating_add(add.minutes);
        total.peak = total.peak.max(add.peak);
        c.put(
            Space::Visits,
            key,
            serde_json::to_vec(&total).expect("footfall serialises"),
        );
    }
    Ok(())
}
