//! `/v1/admin/site`, stores (with their POS keys), gateways, beacons and zones (geofences
//! also as GeoJSON): the site's records, each read and written whole. Stores, gateways and
//! beacons share one list, read, replace and delete ([`SiteRecord`]).

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::*;

/// A kind of the site's records the API lists, reads, replaces and deletes one at a time
/// (`/v1/admin/{kind}s/{id}`).
pub(super) trait SiteRecord: Serialize + DeserializeOwned + Clone + Send + 'static {
    /// What messages call one (`store`, `beacon`).
    const KIND: &'static str;
    /// The site's records of this kind.
    fn all(site: &mut Site) -> &mut Vec<Self>;
    /// Its id as the path names it.
    fn id_text(&self) -> String;
    /// The record as the API shows it.
    fn shown(&self) -> Value {
        json!(self)
    }
    /// Where it is placed on the store's map, for the kinds that are placed.
    fn location(&mut self) -> Option<&mut Option<site::LatLon>> {
        None
    }
}

impl SiteRecord for site::Store {
    const KIND: &'static str = "store";
    fn all(site: &mut Site) -> &mut Vec<Self> {
        &mut site.stores
    }
    fn id_text(&self) -> String {
        self.id.to_string()
    }
}

impl SiteRecord for site::Beacon {
    const KIND: &'static str = "beacon";
    fn all(site: &mut Site) -> &mut Vec<Self> {
        &mut site.beacons
    }
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    fn location(&mut self) -> Option<&mut Option<site::LatLon>> {
        Some(&mut self.location)
    }
}

impl SiteRecord for site::Gateway {
    const KIND: &'static str = "gateway";
    fn all(site: &mut Site) -> &mut Vec<Self> {
        &mut site.gateways
    }
    fn id_text(&self) -> String {
        self.id.to_string()
    }
    /// Never its signing key or password hash.
    fn shown(&self) -> Value {
        gateway_json(self)
    }
    fn location(&mut self) -> Option<&mut Option<site::LatLon>> {
        Some(&mut self.location)
    }
}

/// The records of kind `R`, paginated.
pub(super) async fn list_records<R: SiteRecord>(
    _: Analyst,
    State(state): State<AppState>,
    Query(page): Query<Page>,
) -> Result<Response, ApiError> {
    let mut site = current_site(&state);
    let items = R::all(&mut site)
        .iter()
        .map(|r| (r.id_text(), r.shown()))
        .collect();
    Ok(Json(paginate(items, &page)).into_response())
}

/// The record of kind `R` with `id`.
pub(super) async fn get_record<R: SiteRecord>(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let mut site = current_site(&state);
    let r = R::all(&mut site)
        .iter()
        .find(|r| r.id_text() == id)
        .ok_or_else(|| ApiError::not_found(format!("{} {id}", R::KIND)))?;
    Ok(Json(r.shown()).into_response())
}

/// Creates (201) or replaces (200) the record of kind `R` with `id`.
pub(super) async fn put_record<R: SiteRecord>(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let record: R = record_for(&body, &id)?;
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let created = upsert(R::all(&mut site), record.clone(), |r| {
        r.id_text() == record.id_text()
    });
    apply_site(&state, site, false).await?;
    Ok(saved(created, record.shown()))
}

/// Places the record of kind `R` with `id` on the store's map (`{"lat": …, "lon": …}`), or
/// takes it off (`null`): the rest of the record stays as it is.
pub(super) async fn put_location<R: SiteRecord>(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let at: Option<site::LatLon> = parse_json(&body)?;
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let record = R::all(&mut site)
        .iter_mut()
        .find(|r| r.id_text() == id)
        .ok_or_else(|| ApiError::not_found(format!("{} {id}", R::KIND)))?;
    let Some(location) = record.location() else {
        return Err(ApiError::not_found(format!("{} location", R::KIND)));
    };
    *location = at;
    let shown = record.shown();
    apply_site(&state, site, false).await?;
    Ok(Json(shown).into_response())
}

/// Deletes the record of kind `R` with `id` (refused while others name it).
pub(super) async fn delete_record<R: SiteRecord>(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    remove(
        R::all(&mut site),
        |r| r.id_text() == id,
        &format!("{} {id}", R::KIND),
    )?;
    apply_site(&state, site, true).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn get_site(
    _: Analyst,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    Ok(Json(site_json(&current_site(&state))).into_response())
}

pub(super) async fn put_site(
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

pub(super) async fn get_store(
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

pub(super) async fn add_pos_key(
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
pub(super) async fn remove_pos_key(
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

pub(super) async fn list_zones(
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

pub(super) async fn get_zone(
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

pub(super) fn without_zone(site: &mut Site, id: &str) -> bool {
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
/// a GeoJSON Feature (Polygon/MultiPolygon, or a Point with `properties.radius_m`). With
/// `If-None-Match: *` it only creates (409 if a zone of any kind has the id: the map's new
/// areas never replace another).
pub(super) async fn put_zone(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let create_only = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == b"*");
    let v: Value = parse_json(&body)?;
    let zone = if v.get("type").and_then(Value::as_str) == Some("Feature") {
        Zone::Geofence(geofence_from_feature(&v, &id)?)
    } else {
        record_for::<Zone>(&body, &id)?
    };
    let _one_at_a_time = state.registry_writes.lock().await;
    let mut site = current_site(&state);
    let existed = without_zone(&mut site, &id);
    if existed && create_only {
        return Err(ApiError::conflict(format!(
            "a zone {id} exists already: choose another id"
        )));
    }
    match zone.clone() {
        Zone::Beacon(z) => site.beacon_zones.push(z),
        Zone::Gateway(z) => site.gateway_zones.push(z),
        Zone::Wifi(z) => site.wifi_zones.push(z),
        Zone::Geofence(z) => site.geofences.push(z),
    }
    apply_site(&state, site, false).await?;
    Ok(saved(!existed, json!(zone)))
}

pub(super) async fn delete_zone(
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

pub(super) fn geofence_from_feature(v: &Value, id: &str) -> Result<site::Geofence, ApiError> {
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

/// Every geofence as an RFC 7946 FeatureCollection (`application/geo+json`; exterior rings
/// counter-clockwise, holes clockwise).
pub(super) async fn geofences_geojson(
    _: Analyst,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let site = current_site(&state);
    let features: Vec<Value> = site
        .geofences
        .iter()
        .map(|g| {
            let geometry = match (&g.geometry, &g.circle) {
                (Some(geom), _) => json!({
                    "type": geom.kind,
                    "coordinates": crate::zones::winding::rfc7946(&geom.kind, &geom.coordinates),
                }),
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
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/geo+json")],
        json!({"type": "FeatureCollection", "features": features}).to_string(),
    )
        .into_response())
}
