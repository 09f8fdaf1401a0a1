//! What identity forgets: a customer in an erasure's first step ([`begin_erasure`], keeping
//! what the other steps need under `erasing/{id}`) and its `erasing/` record once they are
//! done; LINE account-link nonces past their expiry (retention).

use super::*;
use crate::store::sweep::{Rows, Sweeper};
use crate::store::{Commit, Space, Store, StoreError};

/// Deletes the LINE account-link nonces that expired before `now_ms`, never used, walking on
/// from `cursor`; answers how many went.
pub fn expire_line_nonces(
    sw: &mut Sweeper,
    cursor: &mut Vec<u8>,
    now_ms: i64,
) -> Result<u64, StoreError> {
    let rows = Rows {
        kind: "line_nonces",
        space: Space::Identity,
        prefix: keys::LINE_NONCES,
    };
    sw.rolling(rows, cursor, |_, v| {
        let expires = serde_json::from_slice::<serde_json::Value>(v)
            .ok()?
            .get("expires_ms")?
            .as_i64()?;
        (expires < now_ms).then(Vec::new)
    })
}

/// Ends the erasure of customer `id`: its `erasing/` record goes, the last thing an erasure
/// removes.
pub fn end_erasure(store: &dyn Store, id: &str) -> Result<(), StoreError> {
    let mut c = Commit::new();
    c.delete(Space::Identity, keys::erasing(id));
    store.commit(c)
}

/// What an erasure removes from the identity space, kept under `erasing/{id}` until the rest
/// of the customer's data is gone too (so an erasure cut short is finished by asking again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Erasing {
    pub customer: Customer,
    pub installs: Vec<Install>,
}

/// An erasure under way (its first step committed, the rest not finished).
pub fn erasing(store: &dyn Store, id: &str) -> Result<Option<Erasing>, StoreError> {
    Ok(read(store, &keys::erasing(id))?.map(|(e, _)| e))
}

/// Every erasure under way (first step committed, last not yet): the ones an asker left
/// (answered 202, or gone mid-way) for [`crate::privacy::finish_waiting_erasures`].
pub fn erasures_under_way(store: &dyn Store) -> Result<Vec<Erasing>, StoreError> {
    let prefix = keys::erasing("");
    let mut out = Vec::new();
    for (k, v) in
        crate::store::barrier::scan_prefix(store, Space::Identity, prefix.as_bytes(), usize::MAX)?
    {
        match serde_json::from_slice::<Erasing>(&v) {
            Ok(e) => out.push(e),
            Err(e) => tracing::warn!(
                key = %String::from_utf8_lossy(&k),
                error = %e,
                "unreadable erasure record skipped"
            ),
        }
    }
    Ok(out)
}

/// The first step of erasing customer `id`: one commit that removes the record, every index
/// key that points at it (member id, LINE user, beacons, EID keys) and its installs (with their
/// push tokens and token hashes), and keeps what the rest of the erasure needs under
/// [`keys::erasing`]. `None`: no such customer.
pub fn begin_erasure(store: &dyn Store, id: &str) -> Result<Option<(Erasing, Commit)>, StoreError> {
    let Some((customer, bytes)) = read::<Customer>(store, &keys::customer(id))? else {
        return Ok(None);
    };
    let mut c = Commit::new();
    c.expect(Space::Identity, keys::customer(id), Some(bytes));
    c.delete(Space::Identity, keys::customer(id));
    for (key, _, _) in index_keys(&customer) {
        if lookup(store, &key)?.as_deref() == Some(id) {
            c.delete(Space::Identity, key);
        }
    }
    let mut installs = Vec::new();
    for i in &customer.installs {
        if let Some(install) = install(store, i)? {
            installs.push(install);
        }
        c.delete(Space::Identity, keys::install(i));
    }
    // LINE account-link nonces waiting for the member: an accountLink event after this
    // commit must not bring the member back.
    if let Some(member) = &customer.member_id {
        let mut from = keys::LINE_NONCES.as_bytes().to_vec();
        loop {
            let page = crate::store::scan_prefix_from(
                store,
                Space::Identity,
                keys::LINE_NONCES.as_bytes(),
                &from,
                1000,
            )?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (k, v) in &page {
                if serde_json::from_slice::<serde_json::Value>(v)
                    .is_ok_and(|p| p["member_id"].as_str() == Some(member.as_str()))
                {
                    c.delete(Space::Identity, k.clone());
                }
            }
            if page.len() < 1000 {
                break;
            }
        }
    }
    let erasing = Erasing { customer, installs };
    c.put(Space::Identity, keys::erasing(id), json(&erasing));
    Ok(Some((erasing, c)))
}
