//! The profiles space read and written outside the visit stage's fold: a profile, the tag
//! rules, every profile for reports, and retention's trimming of the detail profiles keep.

use std::collections::BTreeMap;

use super::keys::{self, profile_key, rule_key};
use super::{Profile, Rule};
use crate::store::sweep::Sweeper;
use crate::store::{Commit, Space, Store, StoreError};

/// A customer's profile, if they have one.
pub fn read(store: &dyn Store, customer: &str) -> Result<Option<Profile>, StoreError> {
    store
        .get(Space::Profiles, profile_key(customer).as_bytes())?
        .map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::backend("profile", e)))
        .transpose()
}

/// Every tag rule, by tag.
pub fn rules(store: &dyn Store) -> Result<BTreeMap<String, Rule>, StoreError> {
    let mut out = BTreeMap::new();
    for (k, v) in crate::store::barrier::scan_prefix(
        store,
        Space::Profiles,
        keys::RULES.as_bytes(),
        usize::MAX,
    )? {
        let tag = String::from_utf8_lossy(&k[keys::RULES.len()..]).into_owned();
        match serde_json::from_slice(&v) {
            Ok(r) => {
                out.insert(tag, r);
            }
            Err(e) => tracing::error!(tag, error = %e, "unreadable tag rule skipped"),
        }
    }
    Ok(out)
}

/// Stores (or replaces) the rule of `tag`.
pub fn put_rule(store: &dyn Store, tag: &str, rule: &Rule) -> Result<(), StoreError> {
    let mut c = Commit::new();
    c.put(
        Space::Profiles,
        rule_key(tag),
        serde_json::to_vec(rule).expect("rules serialise"),
    );
    store.commit(c)
}

/// Deletes the rule of `tag`; whether there was one.
pub fn delete_rule(store: &dyn Store, tag: &str) -> Result<bool, StoreError> {
    let key = rule_key(tag);
    let Some(held) = store.get(Space::Profiles, key.as_bytes())? else {
        return Ok(false);
    };
    let mut c = Commit::new();
    c.expect(Space::Profiles, key.clone(), Some(held));
    c.delete(Space::Profiles, key);
    store.commit(c)?;
    Ok(true)
}

/// Every profile (for reports), in customer order.
pub fn all(store: &dyn Store) -> Result<Vec<Profile>, StoreError> {
    let mut out = Vec::new();
    for (_, v) in crate::store::barrier::scan_prefix(
        store,
        Space::Profiles,
        keys::PROFILES.as_bytes(),
        usize::MAX,
    )? {
        match serde_json::from_slice(&v) {
            Ok(p) => out.push(p),
            Err(e) => tracing::error!(error = %e, "unreadable profile skipped"),
        }
    }
    Ok(out)
}

/// Trims the detail profiles keep (each visit's and purchase's store and time) older than
/// `cutoff` (ms): a profile no new data trimmed is rewritten without it, walking on from
/// `cursor`. The visit stage writes profiles too; a page it changed meanwhile conflicts and
/// waits for the next sweep. Answers how many visits and purchases were dropped.
pub fn trim_details(
    sw: &mut Sweeper,
    cursor: &mut Vec<u8>,
    cutoff: i64,
) -> Result<u64, StoreError> {
    let mut n = 0;
    sw.pages(Space::Profiles, keys::PROFILES, cursor, |sw, page| {
        let mut c = Commit::new();
        let mut dropped = 0;
        for (k, v) in page {
            let Ok(mut p) = serde_json::from_slice::<Profile>(v) else {
                continue;
            };
            let before = p.recent_visits.len() + p.recent_purchases.len();
            p.recent_visits.retain(|x| x.at_ms >= cutoff);
            p.recent_purchases.retain(|x| x.at_ms >= cutoff);
            let gone = before - p.recent_visits.len() - p.recent_purchases.len();
            if gone > 0 {
                c.expect(Space::Profiles, k.clone(), Some(v.clone()));
                c.put(
                    Space::Profiles,
                    k.clone(),
                    serde_json::to_vec(&p).expect("profiles serialise"),
                );
                dropped += gone as u64;
            }
        }
        if sw.commit_unless_changed(c, &[("profile_details", dropped)])? {
            n += dropped;
        }
        Ok(())
    })?;
    Ok(n)
}
