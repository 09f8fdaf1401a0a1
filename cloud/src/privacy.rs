//! Data rights (DESIGN.md, "Privacy by design"): everything the cloud holds about one
//! customer as one JSON document for a disclosure request (`GET /v1/admin/customers/{id}/export`),
//! and the erasure of a customer (`DELETE /v1/admin/customers/{id}`).
//!
//! An erasure runs in three steps, each finished before the next: the identity step removes the
//! record, its links and installs in one commit and keeps what the rest needs under
//! `erasing/{id}` ([`identity::begin_erasure`]); the visit stage forgets the customer's engine
//! state and visits ([`crate::visits::stage::VisitStage::erase`]); [`finish_erasure`] then
//! removes the rest — observations in the event log, visit transitions, decisions, caps history,
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

use std::collections::BTreeSet;

use omo_device_config::BeaconId;
use serde::Serialize;
use serde_json::{json, Value};

use crate::delivery::{self, Delivery, Status};
use crate::identity::{self, eid_resolver::EidResolver, Customer, Erasing};
use crate::ingest::record::Record;
use crate::store::event_log;
use crate::store::{scan_prefix_from, Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;

/// Rows read per page while scanning.
const PAGE: usize = 4096;
/// Visits exported at most (years of daily visits).
const MAX_VISITS: usize = 1_000_000;

/// Every row of `space` under `prefix`, page by page.
fn each_row(
    store: &dyn Store,
    space: Space,
    prefix: &str,
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut from = prefix.as_bytes().to_vec();
    loop {
        let page = scan_prefix_from(store, space, prefix.as_bytes(), &from, PAGE)?;
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        from = last.clone();
        from.push(0);
        for (k, v) in &page {
            f(k, v)?;
        }
        if page.len() < PAGE {
            return Ok(());
        }
    }
}

fn parse(what: &str, v: &[u8]) -> Result<Value, StoreError> {
    serde_json::from_slice(v).map_err(|e| StoreError::Backend(format!("{what}: {e}")))
}

/// The export of customer `id`, or `None` if there is no such customer.
pub fn export(
    store: &dyn Store,
    id: &str,
    now: omo_device_config::Timestamp,
) -> Result<Option<Value>, StoreError> {
    let Some(customer) = identity::customer(store, id)? else {
        return Ok(None);
    };
    let mut installs = Vec::new();
    for i in &customer.installs {
        if let Some(install) = identity::install(store, i)? {
            // The token's hash is a secret of the service, not data about the person.
            installs.push(json!({
                "id": install.id, "platform": install.platform, "push_token": install.push_token,
                "created": install.created, "revoked": install.revoked,
            }));
        }
    }
    let visits = crate::visits::stage::visits_of_customer(store, id, MAX_VISITS)?;

    let mut decisions = Vec::new();
    each_row(
        store,
        Space::Campaigns,
        crate::campaigns::keys::DECISIONS,
        |_, v| {
            let d = parse("decision", v)?;
            if d["customer"] == id {
                decisions.push(d);
            }
            Ok(())
        },
    )?;
    let mut deliveries = Vec::new();
    let mut coupons = BTreeSet::new();
    each_row(
        store,
        Space::Campaigns,
        delivery::keys::DELIVERIES,
        |_, v| {
            let d = parse("delivery", v)?;
            if d["customer"] == id {
                if let Some(c) = d["coupon"].as_str() {
                    coupons.insert(c.to_owned());
                }
                deliveries.push(d);
            }
            Ok(())
        },
    )?;
    let mut redemptions = Vec::new();
    for code in &coupons {
        if let Some(v) = store.get(
            Space::Campaigns,
            delivery::keys::redemption_key(code).as_bytes(),
        )? {
            redemptions.push(parse("redemption", &v)?);
        }
    }

    // The campaigns measuring them: the group they were assigned and their outcomes.
    let mut measured = Vec::new();
    for k in crate::campaigns::stored::all(store)? {
        if let crate::campaigns::report::Linked::Row(_, row, _) =
            crate::campaigns::report::row_of(store, &k.campaign.id, id)?
        {
            measured.push(json!({"campaign": k.campaign.id, "measurement": row}));
        }
    }
    let mut about = About::new(&customer);
    let mut observations = Vec::new();
    let mut from = 0;
    loop {
        let page = event_log::read(store, from, PAGE)?;
        let Some(&(last, _)) = page.last() else {
            break;
        };
        for (offset, bytes) in &page {
            let Ok(record) = Record::decode(bytes) else {
                continue;
            };
            if about.matches(&record) {
                let mut v = serde_json::to_value(&record)
                    .map_err(|e| StoreError::Backend(format!("log record {offset}: {e}")))?;
                v["offset"] = json!(offset);
                observations.push(v);
            }
        }
        from = last + 1;
        if page.len() < PAGE {
            break;
        }
    }
    // EID identity keys are secrets that let anyone follow the phone: their fingerprints.
    let mut person = serde_json::to_value(&customer)
        .map_err(|e| StoreError::Backend(format!("customer {id}: {e}")))?;
    person["eid_keys"] = json!(customer
        .eid_keys
        .iter()
        .map(|k| json!({
            "fingerprint": &crate::secrets::sha256_hex(k.identity_key.as_bytes())[..16],
            "exponent": k.exponent,
        }))
        .collect::<Vec<_>>());
    Ok(Some(json!({
        "exported": now,
        "customer": person,
        "installs": installs,
        "visits": visits,
        "decisions": decisions,
        "deliveries": deliveries,
        "redemptions": redemptions,
        "campaign_measurements": measured,
        "purchases": crate::purchases::of_customer(store, id, MAX_VISITS)?,
        "profile": crate::profiles::read(store, id)?,
        "observations": observations,
    })))
}

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

/// Commits `c` unless it is empty.
fn commit(store: &dyn Store, c: Commit) -> Result<(), StoreError> {
    if c.is_empty() {
        Ok(())
    } else {
        store.commit(c)
    }
}

/// Deletes every key of `space` under `prefix`; returns how many.
fn delete_prefix(store: &dyn Store, space: Space, prefix: &str) -> Result<usize, StoreError> {
    let mut n = 0;
    loop {
        let page = crate::store::barrier::scan_prefix(store, space, prefix.as_bytes(), PAGE)?;
        if page.is_empty() {
            return Ok(n);
        }
        let mut c = Commit::new();
        for (k, _) in page {
            c.delete(space, k);
            n += 1;
        }
        store.commit(c)?;
    }
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
    // Rows that cannot be read are skipped (logged), never a reason to stop an erasure.
    let customer_of = |what: &str, v: &[u8]| -> Option<String> {
        match serde_json::from_slice::<Value>(v) {
            Ok(v) => v["customer"].as_str().map(str::to_owned),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable {what} skipped by an erasure");
                None
            }
        }
    };

    // Observations: each record about them becomes its log time alone.
    let mut about = About::new(&erasing.customer);
    let log_end = blank_observations(store, &mut about, 0, &mut done)?;

    // Transitions about them: blanked page by page (the visit stage writes no new ones).
    let mut from = Vec::new();
    loop {
        let page = store.scan(Space::Transitions, &from, PAGE)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        from = last.clone();
        from.push(0);
        let mut c = Commit::new();
        for (k, v) in &page {
            if !v.is_empty() && customer_of("transition", v).as_deref() == Some(id) {
                c.put(Space::Transitions, k.clone(), Vec::new());
                done.transitions += 1;
            }
        }
        commit(store, c)?;
        if page.len() < PAGE {
            break;
        }
    }

    // Decisions about them.
    let mut decisions = Vec::new();
    each_row(
        store,
        Space::Campaigns,
        crate::campaigns::keys::DECISIONS,
        |k, v| {
            if customer_of("decision", v).as_deref() == Some(id) {
                decisions.push(k.to_vec());
            }
            Ok(())
        },
    )?;
    for keys in decisions.chunks(PAGE) {
        let mut c = Commit::new();
        for k in keys {
            c.delete(Space::Campaigns, k.clone());
        }
        store.commit(c)?;
    }
    done.decisions = decisions.len();

    // Their deliveries: first the order ids of the redemptions of their coupons (while the
    // deliveries still say whose they are, so an erasure cut short finds them again), then
    // the deliveries' personal fields; the unsent ones are cancelled (counted in the funnel
    // as the worker would).
    let mut theirs = Vec::new();
    each_row(
        store,
        Space::Campaigns,
        delivery::keys::DELIVERIES,
        |_, v| {
            if customer_of("delivery", v).as_deref() == Some(id) {
                if let Ok(d) = serde_json::from_slice::<Delivery>(v) {
                    theirs.push((d.id, d.coupon));
                }
            }
            Ok(())
        },
    )?;
    for (_, code) in &theirs {
        let key = delivery::keys::redemption_key(code);
        while let Some(bytes) = store.get(Space::Campaigns, key.as_bytes())? {
            let Ok(mut r) = serde_json::from_slice::<Value>(&bytes) else {
                tracing::warn!("unreadable redemption skipped by an erasure");
                break;
            };
            if r.get("order_id").is_none_or(Value::is_null) {
                break;
            }
            r["order_id"] = Value::Null;
            let mut c = Commit::new();
            c.expect(Space::Campaigns, key.clone(), Some(bytes));
            c.put(
                Space::Campaigns,
                key.clone(),
                serde_json::to_vec(&r).expect("redemptions serialise"),
            );
            match store.commit(c) {
                Ok(()) => {
                    done.redemptions_scrubbed += 1;
                    break;
                }
                // Changed meanwhile: read it again.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    for (d_id, _) in &theirs {
        // The worker may change the row meanwhile: read it again and retry on a conflict.
        loop {
            let Some((mut d, bytes)) = delivery::read(store, d_id)? else {
                break;
            };
            if d.customer != id {
                break;
            }
            let mut c = Commit::new();
            let mut counts = Counts::default();
            let cancel = d.status == Status::Pending;
            d.customer = String::new();
            d.text = String::new();
            d.flex = None;
            if cancel {
                delivery::worker::settle(
                    (&mut c, &mut counts),
                    d,
                    bytes,
                    Status::Cancelled,
                    Some("the customer was erased".into()),
                    now_ms,
                );
            } else {
                delivery::put(&mut c, &d, Some(bytes));
            }
            counts.write(store, &mut c)?;
            match store.commit(c) {
                Ok(()) => {
                    done.deliveries_scrubbed += 1;
                    done.deliveries_cancelled += usize::from(cancel);
                    break;
                }
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }

    done.caps_history = delete_prefix(
        store,
        Space::Campaigns,
        &crate::campaigns::keys::history_prefix(id),
    )?;
    let mut c = Commit::new();
    for k in crate::campaigns::stored::all(store)? {
        let link = crate::campaigns::keys::analysis_link(&k.campaign.id, id);
        if store.get(Space::Campaigns, link.as_bytes())?.is_some() {
            c.delete(Space::Campaigns, link);
            done.analysis_links += 1;
        }
    }
    commit(store, c)?;
    for install in &erasing.installs {
        done.dedup_keys += delete_prefix(
            store,
            Space::Dedup,
            &crate::ingest::keys::app_prefix(&install.id),
        )?;
    }
    let c = &erasing.customer;
    let refs: Vec<String> = c
        .member_id
        .iter()
        .chain(c.line_user.iter())
        .cloned()
        .chain(c.beacons.iter().map(ToString::to_string))
        .chain(erasing.installs.iter().map(|i| i.id.clone()))
        .collect();
    done.purchases_unlinked = crate::purchases::unlink_customer(store, id, &refs)?;
    // A report or LINE event let in just before the identity step may have reached the log
    // after the first pass: a second pass over what was appended since.
    blank_observations(store, &mut about, log_end, &mut done)?;
    let mut c = Commit::new();
    c.delete(Space::Identity, identity::keys::erasing(id));
    store.commit(c)?;
    Ok(done)
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
        match commit(store, c) {
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
