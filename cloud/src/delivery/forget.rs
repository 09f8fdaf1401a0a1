//! What the outbox forgets: finished deliveries and the hourly counters past their period
//! (retention), and an erased customer's personal fields in their deliveries and in the
//! redemptions of their coupons, cancelling the deliveries not yet sent.

use serde_json::Value;

use super::{keys, outbox, read, Delivery, Status};
use crate::store::sweep::{each_row, Rows, Sweeper};
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;
use crate::vocab::customer_of;

/// Deletes the overview's hourly counters of hours before `cutoff` (ms); answers how many.
pub fn expire_hours(sw: &mut Sweeper, cutoff: i64) -> Result<u64, StoreError> {
    let rows = Rows {
        kind: "delivery_hours",
        space: Space::Campaigns,
        prefix: keys::HOURLY,
    };
    // hourly/{hour_ms:016x}/[@{shard:04x}/]{channel}/{status}
    sw.time_ordered(rows, 0, cutoff, |_, _| Ok(true))
}

/// Deletes the finished deliveries decided before `cutoff` (ms) with their coupon, click and
/// index keys (a pending one stays until the worker settles it), walking on from
/// `cursor`; answers how many went.
pub fn expire(sw: &mut Sweeper, cursor: &mut Vec<u8>, cutoff: i64) -> Result<u64, StoreError> {
    let rows = Rows {
        kind: "deliveries",
        space: Space::Campaigns,
        prefix: keys::DELIVERIES,
    };
    sw.rolling(rows, cursor, |_, v| {
        let d: Delivery = serde_json::from_slice(v).ok()?;
        (d.status.is_final() && d.decided_ms < cutoff).then(|| {
            let mut with = vec![
                keys::coupon_key(&d.coupon).into_bytes(),
                keys::clicked_key(&d.id).into_bytes(),
                d.index_key().into_bytes(),
            ];
            with.extend(d.click.as_deref().map(|t| keys::click_key(t).into_bytes()));
            with
        })
    })
}

/// What [`forget`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forgotten {
    /// Deliveries whose customer, text and message were removed.
    pub scrubbed: usize,
    /// Of those, the ones not yet sent: cancelled with the reason.
    pub cancelled: usize,
    /// Redemptions of their coupons whose order id was removed.
    pub redemptions_scrubbed: usize,
}

/// Removes customer `id` from their deliveries and the redemptions of their coupons:
/// first the redemptions' order ids (while the deliveries still say whose they are, so a
/// forgetting cut short finds them again), then the deliveries' personal fields; the unsent
/// ones are cancelled (counted in the funnel as the worker would, stamped `now_ms`).
pub fn forget(store: &dyn Store, id: &str, now_ms: i64) -> Result<Forgotten, StoreError> {
    let mut theirs = Vec::new();
    each_row(store, Space::Campaigns, keys::DELIVERIES, |_, v| {
        if customer_of("delivery", v).as_deref() == Some(id) {
            if let Ok(d) = serde_json::from_slice::<Delivery>(v) {
                theirs.push((d.id, d.coupon));
            }
        }
        Ok(())
    })?;
    let mut done = Forgotten::default();
    for (_, code) in &theirs {
        done.redemptions_scrubbed += usize::from(scrub_redemption(store, code)?);
    }
    for (d_id, _) in &theirs {
        if let Some(cancelled) = scrub_delivery(store, d_id, id, now_ms)? {
            done.scrubbed += 1;
            done.cancelled += usize::from(cancelled);
        }
    }
    Ok(done)
}

/// Removes the order id of the redemption of coupon `code`; answers whether there was one.
fn scrub_redemption(store: &dyn Store, code: &str) -> Result<bool, StoreError> {
    let key = keys::redemption_key(code);
    while let Some(bytes) = store.get(Space::Campaigns, key.as_bytes())? {
        let Ok(mut r) = serde_json::from_slice::<Value>(&bytes) else {
            tracing::warn!("unreadable redemption skipped by an erasure");
            return Ok(false);
        };
        if r.get("order_id").is_none_or(Value::is_null) {
            return Ok(false);
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
            Ok(()) => return Ok(true),
            // Changed meanwhile: read it again.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

/// Removes the personal fields of delivery `d_id` if it is still customer `id`'s, cancelling
/// it if it was not sent; answers `Some(cancelled)` if it changed it. The worker may change
/// the row meanwhile: it is read again and retried on a conflict.
fn scrub_delivery(
    store: &dyn Store,
    d_id: &str,
    id: &str,
    now_ms: i64,
) -> Result<Option<bool>, StoreError> {
    loop {
        let Some((mut d, bytes)) = read(store, d_id)? else {
            return Ok(None);
        };
        if d.customer != id {
            return Ok(None);
        }
        let mut c = Commit::new();
        let mut counts = Counts::default();
        let cancel = d.status == Status::Pending;
        d.customer = String::new();
        d.text = String::new();
        d.flex = None;
        if cancel {
            outbox::settle(
                (&mut c, &mut counts),
                d,
                bytes,
                Status::Cancelled,
                Some("the customer was erased".into()),
                now_ms,
            );
        } else {
            super::put(&mut c, &d, Some(bytes));
        }
        counts.write(store, &mut c)?;
        match store.commit(c) {
            Ok(()) => return Ok(Some(cancel)),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Customer `id`'s deliveries and the redemptions of their coupons, as stored (for their
/// export).
pub fn of_customer(store: &dyn Store, id: &str) -> Result<(Vec<Value>, Vec<Value>), StoreError> {
    let mut deliveries = Vec::new();
    let mut coupons = std::collections::BTreeSet::new();
    each_row(store, Space::Campaigns, keys::DELIVERIES, |_, v| {
        let d: Value = serde_json::from_slice(v).map_err(|e| StoreError::backend("delivery", e))?;
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
        let key = keys::redemption_key(code);
        if let Some(v) = store.get(Space::Campaigns, key.as_bytes())? {
            redemptions.push(
                serde_json::from_slice(&v).map_err(|e| StoreError::backend("redemption", e))?,
            );
        }
    }
    Ok((deliveries, redemptions))
}
