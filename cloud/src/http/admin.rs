//! `/v1/admin/…`: the registry (site, stores with POS keys, gateways with their desired
//! config, beacons, zones — GeoJSON in and out), customers, ingest statistics and backups.
//! Bearer tokens with roles: operators may do everything; analysts may read what carries no
//! personal data or secrets. Lists are paginated with `?after=ID&limit=N`.

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

use super::app::identity_error;
use super::{parse_json, Analyst, ApiError, AppState, Operator};
use crate::identity::{self, Consent, Customer, EidKey};
use crate::registry::{self, PosKey, Registry, RegistryError, Zone};
use crate::store::{Space, Store};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/site", get(get_site).put(put_site))
        .route("/v1/admin/stores", get(list_stores))
        .route(
            "/v1/admin/stores/:id",
            get(get_store).put(put_store).delete(delete_store),
        )
        .route("/v1/admin/stores/:id/pos-keys", post(add_pos_key))
        .route(
            "/v1/admin/stores/:id/pos-keys/:key",
            axum::routing::delete(remove_pos_key),
        )
        .route("/v1/admin/gateways", get(list_gateways))
        .route(
            "/v1/admin/gateways/:id",
            get(get_gateway).put(put_gateway).delete(delete_gateway),
        )
        .route(
            "/v1/admin/gateways/:id/config",
            get(get_gateway_config).put(put_gateway_config),
        )
        .route("/v1/admin/overview", get(get_overview))
        .route("/v1/admin/stores/:id/activity", get(get_store_activity))
        .route("/v1/admin/gateways/:id/disable", post(disable_gateway))
        .route("/v1/admin/gateways/:id/enable", post(enable_gateway))
        .route("/v1/admin/beacons", get(list_beacons))
        .route(
            "/v1/admin/beacons/:id",
            get(get_beacon).put(put_beacon).delete(delete_beacon),
        )
        .route("/v1/admin/zones", get(list_zones))
        .route(
            "/v1/admin/zones/:id",
            get(get_zone).put(put_zone).delete(delete_zone),
        )
        .route("/v1/admin/geofences.geojson", get(geofences_geojson))
        .route(
            "/v1/admin/customers",
            get(list_customers).post(create_customer),
        )
        .route(
            "/v1/admin/customers/:id",
            get(get_customer)
                .patch(patch_customer)
                .delete(erase_customer),
        )
        .route("/v1/admin/customers/:id/consent", post(record_consent))
        .route("/v1/admin/customers/:id/export", get(export_customer))
        .route("/v1/admin/customers/:id/offers", get(customer_offers))
        .route("/v1/admin/installs/:id/revoke", post(revoke_install))
        .route("/v1/admin/stats", get(ingest_stats))
        .route("/v1/admin/visits", get(list_visits))
        .route("/v1/admin/footfall", get(get_footfall))
        .route("/v1/admin/transitions", get(list_transitions))
        .route("/v1/admin/backup", post(backup))
}

#[derive(Debug, Deserialize)]
struct Page {
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
    json!({"id": g.id, "store": g.store, "enabled": g.enabled})
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
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
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

async fn get_site(_: Analyst, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(site_json(&current_site(&state))).into_response())
}

async fn put_site(
    _: Operator,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::field("", format!("body is not UTF-8: {e}")))?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("json"));
    let site = Site::parse(text, json).map_err(|problems| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    let counts = json!({
        "stores": site.stores.len(), "gateways": site.gateways.len(), "beacons": site.beacons.len(),
        "zones": site.beacon_zones.len() + site.gateway_zones.len() + site.wifi_zones.len() + site.geofences.len(),
    });
    let _one_at_a_time = state.registry_writes.lock().await;
    apply_site(&state, site, false).await?;
    Ok(Json(counts).into_response())
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

async fn list_stores(
    _: Analyst,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let items = current_site(&state)
        .stores
        .iter()
        .map(|s| (s.id.to_string(), json!(s)))
        .collect();
    Ok(Json(paginate(items, &page)).into_response())
}

async fn get_store(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let registry = state.registry.read().expect("registry lock");
    let s = registry
        .site()
        .stores
        .iter()
        .find(|s| s.id.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("store {id}")))?;
    let keys: Vec<&str> = registry
        .pos_keys(&s.id)
        .iter()
        .map(|k| k.id.as_str())
        .collect();
    let mut v = json!(s);
    v["pos_keys"] = json!(keys);
    Ok(Json(v).into_response())
}

async fn put_store(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let record: site::Store = record_for(&body, &id)?;
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let created = upsert(&mut site.stores, record.clone(), |s| s.id == record.id);
    apply_site(&state, site, false).await?;
    Ok(saved(created, json!(record)))
}

async fn delete_store(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    remove(
        &mut site.stores,
        |s| s.id.as_str() == id,
        &format!("store {id}"),
    )?;
    apply_site(&state, site, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_pos_key(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store_id = StoreId::new(&id).map_err(|e| ApiError::field("store", e))?;
    if state
        .registry
        .read()
        .expect("registry lock")
        .store(&store_id)
        .is_none()
    {
        return Err(ApiError::not_found(format!("store {id}")));
    }
    let secret = crate::secrets::new_token();
    let key = PosKey {
        id: format!(
            "pk_{}",
            &crate::secrets::sha256_hex(secret.as_bytes())[..12]
        ),
        sha256: crate::secrets::sha256_hex(secret.as_bytes()),
    };
    let _one_at_a_time = state.registry_writes.lock().await;
    commit_and_reload(&state, registry::add_pos_key(&store_id, &key), false).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": key.id, "key": format!("{}.{secret}", key.id)})),
    )
        .into_response())
}

/// Revokes a POS key: from the next request on, it records nothing.
async fn remove_pos_key(
    _: Operator,
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let store_id = StoreId::new(&id).map_err(|e| ApiError::field("store", e))?;
    let _one_at_a_time = state.registry_writes.lock().await;
    let known = state
        .registry
        .read()
        .expect("registry lock")
        .pos_keys(&store_id)
        .iter()
        .any(|k| k.id == key);
    if !known {
        return Err(ApiError::not_found(format!("POS key {key} of store {id}")));
    }
    commit_and_reload(&state, registry::remove_pos_key(&store_id, &key), false).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
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

fn gateway_detail(state: &AppState, g: &registry::GatewayEntry, stats: Option<Value>) -> Value {
    let runtime = state
        .gateways
        .lock()
        .expect("gateway states lock")
        .get(&g.record.id)
        .map(|r| json!(r))
        .unwrap_or(Value::Null);
    let mut v = gateway_json(&g.record);
    v["desired_config_version"] = json!(g.desired.as_ref().map(|d| d.version));
    v["last_config_ack"] = json!(g.last_ack);
    v["runtime"] = runtime;
    v["ingest"] = stats.unwrap_or(Value::Null);
    v
}

async fn list_gateways(
    _: Analyst,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let stats = tokio::task::spawn_blocking(move || crate::stats::load(store.as_ref()))
        .await
        .map_err(ApiError::internal)??;
    let registry = state.registry.read().expect("registry lock").clone();
    let items = registry
        .gateways()
        .map(|g| {
            let s = stats
                .get(&crate::stats::keys::gateway(g.record.id.as_str()))
                .map(|s| json!(s));
            (g.record.id.to_string(), gateway_detail(&state, g, s))
        })
        .collect();
    Ok(Json(paginate(items, &page)).into_response())
}

async fn get_gateway(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(gateway_document(&state, &id).await?).into_response())
}

/// The desired remote config of a gateway as stored (`GET /v1/admin/gateways/{id}/config`).
pub(crate) fn desired_config_text(state: &AppState, id: &str) -> Option<String> {
    let registry = state.registry.read().expect("registry lock");
    let desired = registry.gateway(id)?.desired.as_ref()?;
    Some(String::from_utf8_lossy(&desired.json).into_owned())
}

async fn get_gateway_config(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let text = desired_config_text(&state, &id)
        .ok_or_else(|| ApiError::not_found(format!("a pushed config of gateway {id}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response())
}

/// `GET /v1/admin/gateways/{id}`'s document: the gateway, its run-time state, its ingest
/// counts and its epochs.
pub(crate) async fn gateway_document(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let g = state
        .registry
        .read()
        .expect("registry lock")
        .gateway(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("gateway {id}")))?;
    let stats = state
        .store
        .get(Space::Stats, crate::stats::keys::gateway(id).as_bytes())?;
    let stats = stats.and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let store = state.store.clone();
    let gw = g.record.id.clone();
    let epochs =
        tokio::task::spawn_blocking(move || crate::ingest::epochs::report(store.as_ref(), &gw))
            .await
            .map_err(ApiError::internal)??;
    let mut detail = gateway_detail(state, &g, stats);
    detail["epochs"] = json!(epochs);
    Ok(detail)
}

/// The live overview (`crate::reports::overview`).
async fn get_overview(_: Analyst, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(super::documents::overview_now(&state).await?).into_response())
}

/// A store's zones with their visitors now and its visits per hour for 7 days.
async fn get_store_activity(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(super::documents::store_activity(&state, &id).await?).into_response())
}

/// Registers (or replaces) a provisioned gateway: store, password hash, signing key.
async fn put_gateway(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let record: site::Gateway = record_for(&body, &id)?;
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let created = upsert(&mut site.gateways, record.clone(), |g| g.id == record.id);
    apply_site(&state, site, false).await?;
    Ok(saved(created, gateway_json(&record)))
}

async fn delete_gateway(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    remove(
        &mut site.gateways,
        |g| g.id.as_str() == id,
        &format!("gateway {id}"),
    )?;
    apply_site(&state, site, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_enabled(state: &AppState, id: &str, enabled: bool) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(state);
    let g = site
        .gateways
        .iter_mut()
        .find(|g| g.id.as_str() == id)
        .ok_or_else(|| ApiError::not_found(format!("gateway {id}")))?;
    g.enabled = enabled;
    let shown = gateway_json(g);
    apply_site(state, site, false).await?;
    Ok(Json(shown).into_response())
}

async fn disable_gateway(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(&state, &id, false).await
}

async fn enable_gateway(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    set_enabled(&state, &id, true).await
}

/// Sets a gateway's desired remote config and publishes it at once (it is published again
/// whenever the gateway comes online with another version).
async fn put_gateway_config(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let gw = GatewayId::new(&id).map_err(|e| ApiError::field("gateway", e))?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::field("", format!("body is not UTF-8: {e}")))?
        .to_owned();
    let _one_at_a_time = state.registry_writes.lock().await;
    let current = state.registry.read().expect("registry lock").clone();
    if current.gateway(&id).is_none() {
        return Err(ApiError::not_found(format!("gateway {id}")));
    }
    let (commit, desired) = registry::set_desired_config(
        &current,
        &gw,
        &text,
        state
            .config
            .visits
            .exit_timeout_s
            .min(state.config.visits.exit_grace_s),
    )
    .map_err(|e| registry_error(e, false))?;
    super::commit_durably(&state, commit).await?;
    let mut registry = state.registry.write().expect("registry lock");
    registry.set_desired(&gw, desired.clone());
    let entry = registry.gateway(&id).expect("checked above");
    let topic = omo_device_config::Topic::new(
        entry.record.store.clone(),
        gw.clone(),
        omo_device_config::Channel::Config,
    )
    .to_string();
    let payload = omo_device_config::envelope::seal_raw(&topic, &entry.key, &desired.json);
    let sent = state.outbound.publish(topic, payload, true).is_ok();
    Ok(Json(json!({"version": desired.version, "published": sent})).into_response())
}

async fn list_beacons(
    _: Analyst,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let items = current_site(&state)
        .beacons
        .iter()
        .map(|b| (b.id.to_string(), json!(b)))
        .collect();
    Ok(Json(paginate(items, &page)).into_response())
}

async fn get_beacon(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let site = current_site(&state);
    let b = site
        .beacons
        .iter()
        .find(|b| b.id.to_string() == id)
        .ok_or_else(|| ApiError::not_found(format!("beacon {id}")))?;
    Ok(Json(json!(b)).into_response())
}

async fn put_beacon(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let record: site::Beacon = record_for(&body, &id)?;
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let created = upsert(&mut site.beacons, record.clone(), |b| b.id == record.id);
    apply_site(&state, site, false).await?;
    Ok(saved(created, json!(record)))
}

async fn delete_beacon(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    remove(
        &mut site.beacons,
        |b| b.id.to_string() == id,
        &format!("beacon {id}"),
    )?;
    apply_site(&state, site, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_zones(
    _: Analyst,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let zones = state.registry.read().expect("registry lock").zones();
    let items = zones
        .iter()
        .map(|z| (z.id().to_owned(), json!(z)))
        .collect();
    Ok(Json(paginate(items, &page)).into_response())
}

async fn get_zone(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let zones = state.registry.read().expect("registry lock").zones();
    let z = zones
        .iter()
        .find(|z| z.id() == id)
        .ok_or_else(|| ApiError::not_found(format!("zone {id}")))?;
    Ok(Json(json!(z)).into_response())
}

fn without_zone(site: &mut Site, id: &str) -> bool {
    let before = site.beacon_zones.len()
        + site.gateway_zones.len()
        + site.wifi_zones.len()
        + site.geofences.len();
    site.beacon_zones.retain(|z| z.id.as_str() != id);
    site.gateway_zones.retain(|z| z.id.as_str() != id);
    site.wifi_zones.retain(|z| z.id.as_str() != id);
    site.geofences.retain(|z| z.id.as_str() != id);
    before
        != site.beacon_zones.len()
            + site.gateway_zones.len()
            + site.wifi_zones.len()
            + site.geofences.len()
}

/// A zone of any kind (`kind`: beacon, gateway, wifi, geofence); a geofence may also come as
/// a GeoJSON Feature (Polygon/MultiPolygon, or a Point with `properties.radius_m`).
async fn put_zone(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let v: Value = parse_json(&body)?;
    let zone = if v.get("type").and_then(Value::as_str) == Some("Feature") {
        Zone::Geofence(geofence_from_feature(&v, &id)?)
    } else {
        record_for::<Zone>(&body, &id)?
    };
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let existed = without_zone(&mut site, &id);
    match zone.clone() {
        Zone::Beacon(z) => site.beacon_zones.push(z),
        Zone::Gateway(z) => site.gateway_zones.push(z),
        Zone::Wifi(z) => site.wifi_zones.push(z),
        Zone::Geofence(z) => site.geofences.push(z),
    }
    apply_site(&state, site, false).await?;
    Ok(saved(!existed, json!(zone)))
}

async fn delete_zone(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    if !without_zone(&mut site, &id) {
        return Err(ApiError::not_found(format!("zone {id}")));
    }
    apply_site(&state, site, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn geofence_from_feature(v: &Value, id: &str) -> Result<site::Geofence, ApiError> {
    let props = v.get("properties").cloned().unwrap_or(json!({}));
    let store = props
        .get("store")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::field("properties.store", "required"))?;
    let name = props
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let geometry = v
        .get("geometry")
        .ok_or_else(|| ApiError::field("geometry", "required"))?;
    let kind = geometry
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let coordinates = geometry.get("coordinates").cloned().unwrap_or(Value::Null);
    let record = if kind == "Point" {
        let c = coordinates
            .as_array()
            .filter(|c| c.len() >= 2)
            .ok_or_else(|| ApiError::field("geometry.coordinates", "a Point needs [lon, lat]"))?;
        let radius = props
            .get("radius_m")
            .cloned()
            .ok_or_else(|| ApiError::field("properties.radius_m", "a circle needs a radius"))?;
        json!({"id": id, "store": store, "name": name, "circle": {"lon": c[0], "lat": c[1], "radius_m": radius}})
    } else {
        json!({"id": id, "store": store, "name": name, "geometry": {"type": kind, "coordinates": coordinates}})
    };
    parse_json(record.to_string().as_bytes())
}

/// Every geofence as an RFC 7946 FeatureCollection.
async fn geofences_geojson(
    _: Analyst,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let site = current_site(&state);
    let features: Vec<Value> = site
        .geofences
        .iter()
        .map(|g| {
            let geometry = match (&g.geometry, &g.circle) {
                (Some(geom), _) => json!({"type": geom.kind, "coordinates": geom.coordinates}),
                (None, Some(c)) => json!({"type": "Point", "coordinates": [c.lon, c.lat]}),
                (None, None) => Value::Null,
            };
            let mut props = json!({"store": g.store, "name": g.name});
            if let Some(c) = &g.circle {
                props["radius_m"] = json!(c.radius_m);
            }
            json!({"type": "Feature", "id": g.id, "properties": props, "geometry": geometry})
        })
        .collect();
    Ok(Json(json!({"type": "FeatureCollection", "features": features})).into_response())
}

/// Consent flags to set; an absent channel is left as it is.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentPatch {
    line: Option<bool>,
    push: Option<bool>,
    webhook: Option<bool>,
    location: Option<bool>,
}

impl ConsentPatch {
    fn over(&self, current: Consent) -> Consent {
        Consent {
            line: self.line.unwrap_or(current.line),
            push: self.push.unwrap_or(current.push),
            webhook: self.webhook.unwrap_or(current.webhook),
            location: self.location.unwrap_or(current.location),
        }
    }
}

/// Fields of a customer an operator may set (absent: unchanged).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerPatch {
    #[serde(default)]
    member_id: Option<Option<String>>,
    #[serde(default)]
    line_user: Option<Option<String>>,
    /// Channels to set (absent channels keep their consent).
    consent: Option<ConsentPatch>,
    /// The version of the consent text the flags in `consent` were agreed to under.
    consent_text_version: Option<String>,
    tags: Option<BTreeSet<String>>,
    attributes: Option<std::collections::BTreeMap<String, Value>>,
    beacons: Option<Vec<omo_device_config::BeaconId>>,
    eid_keys: Option<Vec<EidKey>>,
}

impl CustomerPatch {
    /// Applies the patch; consent flags that change become consent records with source
    /// `admin`, recorded at `now`.
    fn apply(self, c: &mut Customer, now: Timestamp) {
        if let Some(m) = self.member_id {
            c.member_id = m;
        }
        if let Some(l) = self.line_user {
            c.line_user = l;
        }
        if let Some(x) = self.consent {
            let wanted = x.over(c.consent);
            c.set_consent(
                wanted,
                identity::ConsentSource::Admin,
                self.consent_text_version.as_deref(),
                now,
            );
        }
        if let Some(x) = self.tags {
            c.tags = x;
        }
        if let Some(x) = self.attributes {
            c.attributes = x;
        }
        if let Some(x) = self.beacons {
            c.beacons = x;
        }
        if let Some(x) = self.eid_keys {
            c.eid_keys = x;
        }
    }
}

/// After a consent change: cancels the customer's waiting deliveries on channels they no
/// longer consent to. A failure is logged, not answered: the consent is recorded, and the
/// worker checks consent again before every send.
pub async fn cancel_withdrawn_sends(state: &AppState, customer: Customer) {
    if customer.consent.line && customer.consent.push && customer.consent.webhook {
        return;
    }
    let store = state.store.clone();
    let now_ms = state.clock.now().timestamp_millis();
    let done = tokio::task::spawn_blocking(move || {
        crate::delivery::worker::cancel_withdrawn(store.as_ref(), &customer, now_ms)
    })
    .await;
    match done {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => tracing::info!(
            cancelled = n,
            "consent withdrawn: waiting deliveries cancelled"
        ),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cancelling deliveries after a consent withdrawal failed")
        }
        Err(e) => {
            tracing::error!(error = %e, "cancelling deliveries after a consent withdrawal failed")
        }
    }
}

/// Rebuilds the EID resolver's keys from the identity store.
pub async fn refresh_eids(state: &AppState) {
    let store = state.store.clone();
    let eids = state.eids.clone();
    // Off the executor: the visit stage may hold the resolver while it builds a table.
    let refreshed = tokio::task::spawn_blocking(move || {
        let keys = identity::all_eid_keys(store.as_ref())?;
        eids.lock().expect("eid resolver lock").set_keys(keys);
        Ok::<_, crate::store::StoreError>(())
    })
    .await;
    match refreshed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "EID keys unreadable"),
        Err(e) => tracing::error!(error = %e, "EID refresh failed"),
    }
}

/// A customer as the API shows it: EID identity keys only as fingerprints (a leaked key would
/// let anyone follow that phone), installs without their token hashes.
fn customer_json(state: &AppState, c: &Customer) -> Result<Value, ApiError> {
    let mut v = json!(c);
    v["eid_keys"] = json!(c
        .eid_keys
        .iter()
        .map(|k| json!({
            "fingerprint": &crate::secrets::sha256_hex(k.identity_key.as_bytes())[..16],
            "exponent": k.exponent,
            "clock_offset_s": k.clock_offset_s,
        }))
        .collect::<Vec<_>>());
    let installs: Vec<Value> = c
        .installs
        .iter()
        .filter_map(|id| identity::install(state.store.as_ref(), id).transpose())
        .map(|r| r.map(|i| json!({"id": i.id, "platform": i.platform, "push_token": i.push_token, "created": i.created, "revoked": i.revoked})))
        .collect::<Result<_, _>>()?;
    v["installs"] = json!(installs);
    Ok(v)
}

async fn create_customer(
    _: Operator,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: CustomerPatch = parse_json(&body)?;
    let now = Timestamp::new(state.clock.now());
    let mut c = identity::new_customer(now);
    patch.apply(&mut c, now);
    let commit = identity::save_customer(state.store.as_ref(), None, &c).map_err(identity_error)?;
    super::commit_durably(&state, commit).await?;
    if !c.eid_keys.is_empty() {
        refresh_eids(&state).await;
    }
    Ok((StatusCode::CREATED, Json(customer_json(&state, &c)?)).into_response())
}

async fn list_customers(
    _: Operator,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let from = match &page.after {
        Some(a) => format!("{}\u{0}", identity::keys::customer(a)),
        None => identity::keys::CUSTOMERS.to_owned(),
    };
    let entries = state
        .store
        .scan(Space::Identity, from.as_bytes(), limit + 1)?;
    let mut items = Vec::new();
    for (k, v) in entries
        .iter()
        .filter(|(k, _)| k.starts_with(identity::keys::CUSTOMERS.as_bytes()))
    {
        let c: Customer = serde_json::from_slice(v).map_err(ApiError::internal)?;
        items.push((
            String::from_utf8_lossy(&k[identity::keys::CUSTOMERS.len()..]).into_owned(),
            customer_json(&state, &c)?,
        ));
    }
    Ok(Json(paginate(
        items,
        &Page {
            after: page.after,
            limit: Some(limit),
        },
    ))
    .into_response())
}

async fn get_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let c = identity::customer(state.store.as_ref(), &id)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    Ok(Json(customer_json(&state, &c)?).into_response())
}

/// The offers sent to a customer (campaign and time), newest first.
async fn customer_offers(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(json!({"items": offers_of(&state, &id)?})).into_response())
}

pub(crate) fn offers_of(state: &AppState, id: &str) -> Result<Vec<Value>, ApiError> {
    identity::customer(state.store.as_ref(), id)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    let mut sends = crate::campaigns::stage::history(state.store.as_ref(), id, 0)?;
    sends.reverse();
    Ok(sends
        .into_iter()
        .map(|s| json!({"campaign": s.campaign, "at": Timestamp::from_millis(s.at_ms)}))
        .collect())
}

/// `GET /v1/admin/customers/{id}`'s document.
pub(crate) fn customer_document(state: &AppState, id: &str) -> Result<Value, ApiError> {
    let c = identity::customer(state.store.as_ref(), id)?
        .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    customer_json(state, &c)
}

async fn patch_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let patch: CustomerPatch = parse_json(&body)?;
    let (old, bytes) =
        identity::customer_for_update(state.store.as_ref(), &id).map_err(identity_error)?;
    let mut c = old.clone();
    patch.apply(&mut c, Timestamp::new(state.clock.now()));
    update_customer(&state, (&old, &bytes), &c).await?;
    Ok(Json(customer_json(&state, &c)?).into_response())
}

/// Saves an operator's change to a customer, then what follows from it: the EID resolver
/// learns changed keys, and a withdrawn consent cancels the channel's waiting deliveries.
async fn update_customer(
    state: &AppState,
    (old, bytes): (&Customer, &[u8]),
    new: &Customer,
) -> Result<(), ApiError> {
    let commit = identity::save_customer(state.store.as_ref(), Some((old, bytes)), new)
        .map_err(identity_error)?;
    super::commit_durably(state, commit).await?;
    if new.eid_keys != old.eid_keys {
        refresh_eids(state).await;
    }
    if new.consent != old.consent {
        cancel_withdrawn_sends(state, new.clone()).await;
    }
    Ok(())
}

/// Erases a customer (a deletion request; `crate::privacy` has the steps): their identity
/// links, observations, visits, decisions and the personal fields of their deliveries and
/// redemptions. Answers with a receipt of what was removed; asking again finishes an erasure
/// that was cut short (its receipt then counts what that call removed).
async fn erase_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let who = id.clone();
    let begun = tokio::task::spawn_blocking(move || identity::begin_erasure(store.as_ref(), &who))
        .await
        .map_err(ApiError::internal)??;
    let erasing = match begun {
        Some((erasing, commit)) => {
            super::commit_durably(&state, commit).await?;
            if !erasing.customer.eid_keys.is_empty() {
                refresh_eids(&state).await;
            }
            erasing
        }
        None => identity::erasing(state.store.as_ref(), &id)?
            .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?,
    };
    let (done, visits) = tokio::sync::oneshot::channel();
    state
        .erasures
        .send(crate::visits::stage::Erase {
            customer: id.clone(),
            done,
        })
        .await
        .map_err(|_| ApiError::internal("the visit stage is not running"))?;
    let visits = visits
        .await
        .map_err(|_| ApiError::internal("the visit stage stopped during an erasure"))??;
    let store = state.store.clone();
    let now_ms = state.clock.now().timestamp_millis();
    let rest = erasing.clone();
    let finished = tokio::task::spawn_blocking(move || {
        let f = crate::privacy::finish_erasure(store.as_ref(), &rest, now_ms)?;
        store.flush()?;
        Ok::<_, crate::store::StoreError>(f)
    })
    .await
    .map_err(ApiError::internal)??;
    metrics::counter!("omo_customers_erased_total").increment(1);
    tracing::info!(
        visits = visits.visits,
        observations = finished.observations,
        deliveries = finished.deliveries_scrubbed,
        "customer erased"
    );
    let c = &erasing.customer;
    Ok(Json(json!({
        "customer": id,
        "erased": Timestamp::new(state.clock.now()),
        "identity": {
            "record": true,
            "member_id": c.member_id.is_some(),
            "line_user": c.line_user.is_some(),
            "beacons": c.beacons.len(),
            "eid_keys": c.eid_keys.len(),
            "installs": erasing.installs.len(),
            "push_tokens": erasing.installs.iter().filter(|i| i.push_token.is_some()).count(),
            "consent_records": c.consent_records.len(),
            "attributes": c.attributes.len(),
            "tags": c.tags.len(),
        },
        "visits": visits,
        "removed": finished,
        "kept": "aggregate counts: campaign funnels and analysis rows under their pseudonyms, footfall, ingest statistics",
    }))
    .into_response())
}

/// Everything held about a customer, as one JSON document (a disclosure request).
async fn export_customer(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let now = Timestamp::new(state.clock.now());
    let who = id.clone();
    let doc =
        tokio::task::spawn_blocking(move || crate::privacy::export(store.as_ref(), &who, now))
            .await
            .map_err(ApiError::internal)??
            .ok_or_else(|| ApiError::not_found(format!("customer {id}")))?;
    Ok(Json(doc).into_response())
}

/// One consent change an operator records: given or withdrawn at the store counter, or
/// imported from the brand's CRM.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentIn {
    channel: identity::ConsentChannel,
    granted: bool,
    /// `admin` (default) or `import`.
    #[serde(default)]
    source: Option<identity::ConsentSource>,
    /// When the customer gave or withdrew it (default: now); not in the future.
    #[serde(default)]
    at: Option<Timestamp>,
    #[serde(default)]
    text_version: Option<String>,
}

/// Records a consent change for a customer; the customer with its derived consent.
async fn record_consent(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ConsentIn = parse_json(&body)?;
    let now = Timestamp::new(state.clock.now());
    let source = req.source.unwrap_or(identity::ConsentSource::Admin);
    if !matches!(
        source,
        identity::ConsentSource::Admin | identity::ConsentSource::Import
    ) {
        return Err(ApiError::field(
            "source",
            "an operator records `admin` or `import` consents (the app and LINE record their own)",
        ));
    }
    let at = req.at.unwrap_or(now);
    if at.millis() > now.millis() {
        return Err(ApiError::field("at", "is in the future"));
    }
    let (old, bytes) =
        identity::customer_for_update(state.store.as_ref(), &id).map_err(identity_error)?;
    let mut c = old.clone();
    c.record_consent(identity::ConsentChange {
        channel: req.channel,
        granted: req.granted,
        at,
        recorded: now,
        source,
        text_version: req.text_version,
    });
    if c != old {
        update_customer(&state, (&old, &bytes), &c).await?;
    }
    Ok(Json(customer_json(&state, &c)?).into_response())
}

/// Revokes an app install (a lost or compromised phone): its token stops authenticating
/// reports and it gets no more pushes.
async fn revoke_install(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let now = Timestamp::new(state.clock.now());
    let (install, commit) = match identity::revoke_install(state.store.as_ref(), &id, now) {
        Ok(v) => v,
        Err(identity::IdentityError::NotFound(_)) => {
            return Err(ApiError::not_found(format!("install {id}")))
        }
        Err(e) => return Err(identity_error(e)),
    };
    if !commit.is_empty() {
        super::commit_durably(&state, commit).await?;
    }
    Ok(
        Json(json!({"id": install.id, "customer": install.customer, "revoked": install.revoked}))
            .into_response(),
    )
}

async fn ingest_stats(_: Analyst, State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let stats = tokio::task::spawn_blocking(move || crate::stats::load(store.as_ref()))
        .await
        .map_err(ApiError::internal)??;
    let log_end = crate::store::event_log::EventLog::open(state.store.as_ref())?.next_offset();
    let position = crate::store::event_log::position(state.store.as_ref(), crate::stats::CONSUMER)?;
    Ok(
        Json(json!({"stats": stats, "log_end": log_end, "stats_position": position}))
            .into_response(),
    )
}

/// A consistent snapshot of every space, as NDJSON: a header line, then one line per entry
/// with base64 key and value (`omo-cloud backup DIR` writes it to files).
async fn backup(_: Operator, State(state): State<AppState>) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let snapshot = tokio::task::spawn_blocking(move || store.snapshot())
        .await
        .map_err(ApiError::internal)??;
    let mut out = Vec::new();
    let counts: serde_json::Map<String, Value> = snapshot
        .iter()
        .map(|(space, entries)| (space.name().to_owned(), json!(entries.len())))
        .collect();
    let header_line =
        json!({"omo_backup": 1, "created": Timestamp::new(state.clock.now()), "counts": counts});
    out.extend_from_slice(header_line.to_string().as_bytes());
    out.push(b'\n');
    for (space, entries) in &snapshot {
        for (k, v) in entries {
            let line = json!({"space": space.name(), "key": STANDARD.encode(k), "value": STANDARD.encode(v)});
            out.extend_from_slice(line.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

#[derive(Debug, Deserialize)]
struct VisitQuery {
    customer: Option<String>,
    zone: Option<String>,
    store: Option<String>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<usize>,
}

impl VisitQuery {
    fn scope(&self) -> Result<Option<crate::visits::engine::Scope>, ApiError> {
        use crate::visits::engine::Scope;
        match (&self.zone, &self.store) {
            (Some(_), Some(_)) => Err(ApiError::field("zone", "give a zone or a store, not both")),
            (Some(z), None) => Ok(Some(Scope::Zone(z.clone()))),
            (None, Some(s)) => Ok(Some(Scope::Store(s.clone()))),
            (None, None) => Ok(None),
        }
    }

    fn range(&self) -> (i64, i64) {
        (
            self.from.map_or(0, Timestamp::millis),
            self.to.map_or(i64::MAX / 2, Timestamp::millis),
        )
    }
}

/// Visits by customer, or by zone or store entered within `[from, to)`.
async fn list_visits(
    _: Operator,
    State(state): State<AppState>,
    Query(q): Query<VisitQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let (from, to) = q.range();
    let items = match (&q.customer, q.scope()?) {
        (Some(c), None) => {
            crate::visits::stage::visits_of_customer(state.store.as_ref(), c, limit)?
        }
        (None, Some(scope)) => {
            crate::visits::stage::visits_in_scope(state.store.as_ref(), &scope, from, to, limit)?
        }
        _ => {
            return Err(ApiError::field(
                "customer",
                "give one of customer, zone or store",
            ))
        }
    };
    Ok(Json(json!({"items": items})).into_response())
}

/// Anonymous footfall per hour of a zone or store within `[from, to)`.
async fn get_footfall(
    _: Analyst,
    State(state): State<AppState>,
    Query(q): Query<VisitQuery>,
) -> Result<Response, ApiError> {
    let scope = q
        .scope()?
        .ok_or_else(|| ApiError::field("zone", "give a zone or a store"))?;
    let (from, to) = q.range();
    let hours: Vec<Value> = crate::visits::stage::footfall(state.store.as_ref(), &scope, from, to)?
        .into_iter()
        .map(|(hour, f)| json!({"hour": hour, "device_minutes": f.device_minutes, "minutes": f.minutes, "peak": f.peak}))
        .collect();
    Ok(Json(json!({"items": hours})).into_response())
}

#[derive(Debug, Deserialize)]
struct SeqPage {
    after: Option<u64>,
    limit: Option<usize>,
}

/// Visit transitions in the order the visit stage decided them, with their sequence numbers.
async fn list_transitions(
    _: Operator,
    State(state): State<AppState>,
    Query(page): Query<SeqPage>,
) -> Result<Response, ApiError> {
    let limit = page.limit.unwrap_or(100).clamp(1, 1000);
    let from = page.after.map_or(1, |a| a.saturating_add(1));
    let mut items = Vec::new();
    for (k, v) in state
        .store
        .scan(Space::Transitions, &from.to_be_bytes(), limit)?
    {
        let seq = u64::from_be_bytes(
            k.as_slice()
                .try_into()
                .map_err(|_| ApiError::internal("transition key"))?,
        );
        if v.is_empty() {
            // About an erased customer: its place only, so paging goes on past it.
            items.push(json!({"seq": seq, "erased": true}));
            continue;
        }
        let mut t: Value = serde_json::from_slice(&v).map_err(ApiError::internal)?;
        t["seq"] = json!(seq);
        items.push(t);
    }
    Ok(Json(json!({"items": items})).into_response())
}
