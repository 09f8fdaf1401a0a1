//! Visits read back: a customer's visits, a scope's visits and footfall in a time range.

use omo_device_config::Timestamp;

use super::engine::Scope;
use super::keys;
use super::stage::{ts, Footfall, VisitRecord};
use crate::store::{Space, Store, StoreError};

/// Visits of a customer.
pub fn visits_of_customer(
    store: &dyn Store,
    customer: &str,
    limit: usize,
) -> Result<Vec<VisitRecord>, StoreError> {
    let prefix = keys::customer_prefix(customer);
    let ids: Vec<String> =
        crate::store::barrier::scan_prefix(store, Space::Visits, prefix.as_bytes(), limit)?
            .into_iter()
            .map(|(k, _)| String::from_utf8_lossy(&k[prefix.len()..]).into_owned())
            .collect();
    load_visits(store, ids)
}

/// Visits of a scope entered in `[from_ms, to_ms)`.
pub fn visits_in_scope(
    store: &dyn Store,
    scope: &Scope,
    from_ms: i64,
    to_ms: i64,
    limit: usize,
) -> Result<Vec<VisitRecord>, StoreError> {
    let prefix = keys::scope_prefix(scope);
    let start = format!("{prefix}{:016x}", from_ms.max(0));
    let end = format!("{prefix}{:016x}", to_ms.max(0));
    let ids = crate::store::ids_in_range(
        store,
        Space::Visits,
        (start.as_bytes(), end.as_bytes()),
        limit,
    )?;
    load_visits(store, ids)
}

fn load_visits(store: &dyn Store, ids: Vec<String>) -> Result<Vec<VisitRecord>, StoreError> {
    ids.into_iter()
        .filter_map(|id| {
            store
                .get(Space::Visits, keys::visit(&id).as_bytes())
                .transpose()
        })
        .map(|r| {
            r.and_then(|b| serde_json::from_slice(&b).map_err(|e| StoreError::backend("visit", e)))
        })
        .collect()
}

/// Footfall of a scope per hour in `[from_ms, to_ms)`.
pub fn footfall(
    store: &dyn Store,
    scope: &Scope,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<(Timestamp, Footfall)>, StoreError> {
    let prefix = keys::footfall_prefix(&keys::scope_text(scope));
    let start = format!("{prefix}{:016x}", from_ms.max(0));
    let end = format!("{prefix}{:016x}", to_ms.max(0));
    store
        .scan_range(Space::Visits, start.as_bytes(), end.as_bytes(), 10_000)?
        .into_iter()
        .map(|(k, v)| {
            let hour =
                i64::from_str_radix(String::from_utf8_lossy(&k[prefix.len()..]).as_ref(), 16)
                    .map_err(|e| StoreError::backend("footfall key", e))?;
            let f: Footfall =
                serde_json::from_slice(&v).map_err(|e| StoreError::backend("footfall", e))?;
            Ok((ts(hour), f))
        })
        .collect()
}
