//! Data rights: everything the cloud holds about one customer, as one JSON document for a
//! disclosure request (`GET /v1/admin/customers/{id}/export`, DESIGN.md "Privacy by design").
//!
//! It reads every place a customer's data sits: the identity record (links, consent records,
//! attributes) and installs, the visits, the decisions and deliveries about them (with the
//! offer texts and coupons), the redemptions of those coupons, and the observations in the
//! event log — app reports and LINE events carry the customer id, gateway sightings are
//! matched by the static beacon ids the customer carries. A disclosure is rare and complete
//! beats fast: the campaign and log spaces are scanned in pages.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::identity;
use crate::ingest::record::Record;
use crate::store::event_log;
use crate::store::{scan_prefix_from, Space, Store, StoreError};

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
    each_row(store, Space::Campaigns, "decision/", |_, v| {
        let d = parse("decision", v)?;
        if d["customer"] == id {
            decisions.push(d);
        }
        Ok(())
    })?;
    let mut deliveries = Vec::new();
    let mut coupons = BTreeSet::new();
    each_row(store, Space::Campaigns, "delivery/", |_, v| {
        let d = parse("delivery", v)?;
        if d["customer"] == id {
            if let Some(c) = d["coupon"].as_str() {
                coupons.insert(c.to_owned());
            }
            deliveries.push(d);
        }
        Ok(())
    })?;
    let mut redemptions = Vec::new();
    for code in &coupons {
        if let Some(v) = store.get(Space::Campaigns, format!("redemption/{code}").as_bytes())? {
            redemptions.push(parse("redemption", &v)?);
        }
    }

    let carried: BTreeSet<_> = customer.beacons.iter().cloned().collect();
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
            let about = match &record {
                Record::App(r) => r.customer == id,
                Record::Line(l) => l.customer == id,
                Record::Gateway(e) => e
                    .event
                    .as_sighting()
                    .is_some_and(|(_, s)| carried.contains(&s.beacon)),
                _ => false,
            };
            if about {
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
        "observations": observations,
    })))
}
