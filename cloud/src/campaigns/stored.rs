//! Campaigns in the store, versioned: every change writes a new version (the previous ones
//! stay, so a decision can name the version it used) and moves `campaign/{id}` to it, in one
//! commit that expects the version it replaced.

use serde::{Deserialize, Serialize};

use super::definition::Campaign;
use crate::store::{Commit, Space, Store, StoreError};
use omo_device_config::Timestamp;

/// One version of a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versioned {
    pub version: u32,
    pub updated: Timestamp,
    pub campaign: Campaign,
}

fn decode(bytes: &[u8]) -> Result<Versioned, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Backend(format!("campaign record: {e}")))
}

/// The current version of a campaign, with the bytes a change must expect.
pub fn current(store: &dyn Store, id: &str) -> Result<Option<(Versioned, Vec<u8>)>, StoreError> {
    match store.get(Space::Campaigns, &super::keys::current(id))? {
        None => Ok(None),
        Some(bytes) => Ok(Some((decode(&bytes)?, bytes))),
    }
}

/// A given version.
pub fn version(store: &dyn Store, id: &str, version: u32) -> Result<Option<Versioned>, StoreError> {
    store
        .get(Space::Campaigns, &super::keys::version(id, version))?
        .map(|b| decode(&b))
        .transpose()
}

/// Every campaign's current version, by id.
pub fn all(store: &dyn Store) -> Result<Vec<Versioned>, StoreError> {
    crate::store::barrier::scan_prefix(
        store,
        Space::Campaigns,
        super::keys::CAMPAIGNS.as_bytes(),
        usize::MAX,
    )?
    .iter()
    .map(|(_, v)| decode(v))
    .collect()
}

/// Every version of a campaign, oldest first (at most `limit`, the newest kept).
pub fn versions(store: &dyn Store, id: &str, limit: usize) -> Result<Vec<Versioned>, StoreError> {
    let Some((current, _)) = current(store, id)? else {
        return Ok(Vec::new());
    };
    let keep = u32::try_from(limit).unwrap_or(u32::MAX).max(1);
    let first = current.version.saturating_sub(keep - 1).max(1);
    let mut out = Vec::new();
    for v in first..=current.version {
        if let Some(kept) = version(store, id, v)? {
            out.push(kept);
        }
    }
    Ok(out)
}

/// One field a version changed: its path (`caps.per_customer`, `variants[0].template.text`),
/// and its value before and after (`null` where it was or is absent).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub field: String,
    pub before: serde_json::Value,
    pub after: serde_json::Value,
}

/// The fields that differ between two versions of a campaign, in field order.
pub fn changes(before: &Campaign, after: &Campaign) -> Vec<Change> {
    let (a, b) = (
        serde_json::to_value(before).unwrap_or_default(),
        serde_json::to_value(after).unwrap_or_default(),
    );
    let mut out = Vec::new();
    diff(String::new(), &a, &b, &mut out);
    out
}

fn diff(path: String, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<Change>) {
    use serde_json::Value;
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let none = Value::Null;
                diff(
                    at(k),
                    x.get(k).unwrap_or(&none),
                    y.get(k).unwrap_or(&none),
                    out,
                );
            }
        }
        // Lists of objects (variants) compare item by item; other lists as wholes.
        (Value::Array(x), Value::Array(y))
            if x.len() == y.len() && x.iter().all(Value::is_object) =>
        {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(Change {
            field: path,
            before: a.clone(),
            after: b.clone(),
        }),
        _ => {}
    }
}

/// A commit that makes `campaign` the next version after `previous` (None: a new campaign).
pub fn save(
    previous: Option<(&Versioned, &[u8])>,
    campaign: Campaign,
    now: Timestamp,
) -> (Commit, Versioned) {
    let version = previous.map_or(1, |(p, _)| p.version + 1);
    let record = Versioned {
        version,
        updated: now,
        campaign,
    };
    let bytes = serde_json::to_vec(&record).expect("campaigns serialise");
    let id = record.campaign.id.clone();
    let mut c = Commit::new();
    c.expect(
        Space::Campaigns,
        super::keys::current(&id),
        previous.map(|(_, b)| b.to_vec()),
    );
    c.put(Space::Campaigns, super::keys::current(&id), bytes.clone());
    c.put(Space::Campaigns, super::keys::version(&id, version), bytes);
    (c, record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_names_each_field_it_changed_with_before_and_after() {
        let before: Campaign =
            serde_json::from_value(crate::campaigns::definition::tests::example()).unwrap();
        let mut after = before.clone();
        after.caps.per_customer += 1;
        after.variants[0].template.text = "New text {coupon}".into();
        after.paused = true;
        let c = changes(&before, &after);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            ["caps.per_customer", "paused", "variants[0].template.text"]
        );
        assert_eq!(c[0].after, serde_json::json!(before.caps.per_customer + 1));
        assert!(changes(&before, &before).is_empty());
        // A field that appears is a change from null.
        after.draft = true;
        assert!(changes(&before, &after)
            .iter()
            .any(|c| c.field == "draft" && c.before.is_null() && c.after == true));
    }
    use crate::store::sled_store::SledStore;

    #[test]
    fn versions_accumulate_and_a_stale_change_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let c: Campaign =
            serde_json::from_value(crate::campaigns::definition::tests::example()).unwrap();
        let now: Timestamp = "2026-11-23T00:00:00.000Z".parse().unwrap();
        let (commit, v1) = save(None, c.clone(), now);
        s.commit(commit).unwrap();
        let (cur, bytes) = current(&s, &c.id).unwrap().unwrap();
        assert_eq!(cur, v1);
        let mut paused = c.clone();
        paused.paused = true;
        let (commit, v2) = save(Some((&cur, &bytes)), paused, now);
        let (stale, _) = save(Some((&cur, &bytes)), c.clone(), now);
        s.commit(commit).unwrap();
        assert!(matches!(s.commit(stale), Err(StoreError::Conflict { .. })));
        assert_eq!(v2.version, 2);
        assert_eq!(version(&s, &c.id, 1).unwrap().unwrap(), v1);
        assert!(current(&s, &c.id).unwrap().unwrap().0.campaign.paused);
        assert_eq!(all(&s).unwrap().len(), 1);
    }
}
