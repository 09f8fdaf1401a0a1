//! A disclosure: everything the cloud holds about one customer as one JSON document.

use serde_json::{json, Value};

use super::{About, PAGE};
use crate::identity;
use crate::ingest::record::Record;
use crate::store::event_log;
use crate::store::{Store, StoreError};

/// Visits exported at most (years of daily visits).
const MAX_VISITS: usize = 1_000_000;

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
    let visits = crate::visits::visits_of_customer(store, id, MAX_VISITS)?;

    let decisions = crate::campaigns::decisions_of(store, id)?;
    let (deliveries, redemptions) = crate::delivery::of_customer(store, id)?;

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
