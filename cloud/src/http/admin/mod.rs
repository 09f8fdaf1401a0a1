//! `/v1/admin/…`: the registry (site, stores with POS keys, gateways with their desired
//! config, beacons, zones — GeoJSON in and out), customers, ingest statistics and backups.
//! Bearer tokens with roles: operators may do everything; analysts may read what carries no
//! personal data or secrets. Lists are paginated with `?after=ID&limit=N`. One file per
//! resource; this one holds the routes and what they share.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use omo_device_config::site::{self, Site};
use omo_device_config::{GatewayId, StoreId, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

use super::identity_error;
use super::{parse_json, Analyst, ApiError, AppState, Operator};
use crate::identity::{self, Consent, Customer, EidKey};
use crate::registry::{self, PosKey, Registry, RegistryError, Zone};
use crate::store::{Space, Store};

mod customers;
mod gateways;
mod ops;
mod records;

use records::{delete_record, get_record, list_records, put_record};

pub use customers::cancel_withdrawn_sends;
pub(crate) use customers::{customer_document, offers_of, record_consent_change};
pub(crate) use gateways::{desired_config_text, gateway_document};

pub fn routes() -> Router<AppState> {
    site_records().merge(people_and_operations())
}

/// The site (stores, gateways, beacons, zones), with the overview and a store's activity.
fn site_records() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/site",
            get(records::get_site).put(records::put_site),
        )
        .route("/v1/admin/stores", get(list_records::<site::Store>))
        .route(
            "/v1/admin/stores/:id",
            get(records::get_store)
                .put(put_record::<site::Store>)
                .delete(delete_record::<site::Store>),
        )
        .route("/v1/admin/stores/:id/pos-keys", post(records::add_pos_key))
        .route(
            "/v1/admin/stores/:id/pos-keys/:key",
            axum::routing::delete(records::remove_pos_key),
        )
        .route("/v1/admin/gateways", get(gateways::list_gateways))
        .route(
            "/v1/admin/gateways/:id",
            get(gateways::get_gateway)
                .put(put_record::<site::Gateway>)
                .delete(delete_record::<site::Gateway>),
        )
        .route(
            "/v1/admin/gateways/:id/config",
            get(gateways::get_gateway_config).put(gateways::put_gateway_config),
        )
        .route("/v1/admin/overview", get(ops::get_overview))
        .route(
            "/v1/admin/stores/:id/activity",
            get(ops::get_store_activity),
        )
        .route(
            "/v1/admin/gateways/:id/disable",
            post(gateways::disable_gateway),
        )
        .route(
            "/v1/admin/gateways/:id/enable",
            post(gateways::enable_gateway),
        )
        .route(
            "/v1/admin/gateways/:id/location",
            axum::routing::put(records::put_location::<site::Gateway>),
        )
        .route("/v1/admin/beacons", get(list_records::<site::Beacon>))
        .route(
            "/v1/admin/beacons/:id/location",
            axum::routing::put(records::put_location::<site::Beacon>),
        )
        .route(
            "/v1/admin/beacons/:id",
            get(get_record::<site::Beacon>)
                .put(put_record::<site::Beacon>)
                .delete(delete_record::<site::Beacon>),
        )
        .route("/v1/admin/zones", get(records::list_zones))
        .route(
            "/v1/admin/zones/:id",
            get(records::get_zone)
                .put(records::put_zone)
                .delete(records::delete_zone),
        )
        .route(
            "/v1/admin/geofences.geojson",
            get(records::geofences_geojson),
        )
}

/// Customers and the operations' reads.
fn people_and_operations() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/customers",
            get(customers::list_customers).post(customers::create_customer),
        )
        .route(
            "/v1/admin/customers/:id",
            get(customers::get_customer)
                .patch(customers::patch_customer)
                .delete(customers::erase_customer),
        )
        .route(
            "/v1/admin/customers/:id/consent",
            post(customers::record_consent),
        )
        .route(
            "/v1/admin/customers/:id/export",
            get(customers::export_customer),
        )
        .route(
            "/v1/admin/customers/:id/offers",
            get(customers::customer_offers),
        )
        .route(
            "/v1/admin/installs/:id/revoke",
            post(customers::revoke_install),
        )
        .route("/v1/admin/stats", get(ops::ingest_stats))
        .route("/v1/admin/visits", get(ops::list_visits))
        .route("/v1/admin/footfall", get(ops::get_footfall))
        .route("/v1/admin/transitions", get(ops::list_transitions))
        .route("/v1/admin/backup", post(ops::backup))
}

#[derive(Debug, Deserialize)]
pub(super) struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

fn paginate(mut items: Vec<(String, Value)>, page: &Page) -> Value {
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let rest: Vec<(String, Value)> = items
        .into_iter()
        .filter(|(id, _)| page.after.as_ref().is_none_or(|a| id > a))
        .collect();
    let next = (rest.len() > limit).then(|| rest[limit - 1].0.clone());
    let items: Vec<Value> = rest.into_iter().take(limit).map(|(_, v)| v).collect();
    json!({"items": items, "next": next})
}

/// A gateway as the API shows it: never its signing key or password hash.
fn gateway_json(g: &site::Gateway) -> Value {
    json!({"id": g.id, "store": g.store, "enabled": g.enabled, "location": g.location})
}

fn site_json(site: &Site) -> Value {
    let mut v = serde_json::to_value(site).expect("site serialises");
    if let Some(gws) = v.get_mut("gateways").and_then(Value::as_array_mut) {
        for g in gws {
            if let Some(o) = g.as_object_mut() {
                o.remove("signing_key");
                o.remove("password_hash");
            }
        }
    }
    v
}

fn registry_error(e: RegistryError, deleting: bool) -> ApiError {
    match e {
        RegistryError::Invalid(problems) => {
            let message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            if deleting {
                ApiError::conflict(format!("still referenced: {message}"))
            } else {
                // By field too (`wifi_zones[2].bssids[0]`), for a form or a map to show each.
                ApiError::fields(problems.into_iter().map(|p| (p.key, p.message)).collect())
            }
        }
        RegistryError::Store(s) => s.into(),
        other => ApiError::internal(other),
    }
}

/// Makes the registry exactly `site` (validated), durably, and reloads the in-memory view.
/// The caller holds `state.registry_writes` from before it read the site it changed, so no
/// concurrent edit is undone.
pub async fn apply_site(state: &AppState, site: Site, deleting: bool) -> Result<(), ApiError> {
    let current = state.registry.read().expect("registry lock").clone();
    let commit =
        registry::replace_site(&current, &site).map_err(|e| registry_error(e, deleting))?;
    commit_and_reload(state, commit, deleting).await
}

/// Commits a registry change durably and reloads the in-memory registry from the store.
async fn commit_and_reload(
    state: &AppState,
    commit: crate::store::Commit,
    deleting: bool,
) -> Result<(), ApiError> {
    let store = state.store.clone();
    let fresh = tokio::task::spawn_blocking(move || {
        store.commit(commit)?;
        store.flush()?;
        Registry::load(store.as_ref())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| registry_error(e, deleting))?;
    *state.registry.write().expect("registry lock") = fresh;
    Ok(())
}

fn current_site(state: &AppState) -> Site {
    state.registry.read().expect("registry lock").site().clone()
}

/// Reads a record body whose `id` must match the path.
fn record_for<T: serde::de::DeserializeOwned + serde::Serialize>(
    body: &[u8],
    id: &str,
) -> Result<T, ApiError> {
    let mut v: Value = parse_json(body)?;
    match v.get("id") {
        None => {
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), Value::String(id.to_owned()));
            }
        }
        Some(Value::String(s)) if s == id => {}
        Some(_) => return Err(ApiError::field("id", "must match the id in the path")),
    }
    parse_json(v.to_string().as_bytes())
}

/// 201 with the record when it was created, 200 when it replaced one.
fn saved(created: bool, record: Value) -> Response {
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (status, Json(record)).into_response()
}

fn upsert<T>(list: &mut Vec<T>, record: T, same: impl Fn(&T) -> bool) -> bool {
    match list.iter_mut().find(|r| same(r)) {
        Some(r) => {
            *r = record;
            false
        }
        None => {
            list.push(record);
            true
        }
    }
}

fn remove<T>(list: &mut Vec<T>, same: impl Fn(&T) -> bool, what: &str) -> Result<(), ApiError> {
    let before = list.len();
    list.retain(|r| !same(r));
    if list.len() == before {
        Err(ApiError::not_found(what))
    } else {
        Ok(())
    }
}
