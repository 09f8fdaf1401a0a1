//! The stores' pages: the list and one store's activity.

use super::*;

#[derive(Template)]
#[template(path = "stores.html")]
struct StoresPage {
    t: Words,
    nav: Nav,
    /// Each store's day so far.
    stores: Vec<super::overview::StoreDayRow>,
    /// Id, time zone, zones, gateways.
    rows: Vec<(String, String, usize, usize)>,
}

pub(super) async fn stores_page(
    v: Viewer,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let today = crate::http::documents::stores_today(&state).await?;
    let rows = {
        let registry = state.registry.read().expect("registry lock");
        let zones = registry.zones();
        registry
            .site()
            .stores
            .iter()
            .map(|st| {
                (
                    st.id.to_string(),
                    st.time_zone.clone(),
                    zones.iter().filter(|z| z.store() == &st.id).count(),
                    registry
                        .gateways()
                        .filter(|g| g.record.store == st.id)
                        .count(),
                )
            })
            .collect()
    };
    Ok(html(&StoresPage {
        nav: Nav::new(&state, &v, Section::Stores, v.t.s("nav.stores")),
        stores: today
            .stores
            .iter()
            .map(|d| super::overview::StoreDayRow::new(&v.t, d))
            .collect(),
        rows,
        t: v.t,
    }))
}

#[derive(Template)]
#[template(path = "store.html")]
struct StorePage {
    t: Words,
    nav: Nav,
    id: String,
    name: String,
    /// Id, name, kind, visitors now.
    zones: Vec<(String, String, String, u64)>,
    visitors_now: u64,
    /// The store has no geofence to draw yet.
    no_geofences: bool,
    bars_svg: String,
    week_caption: String,
    operator: bool,
    /// The map's data for its script: the store's location, its geofences as GeoJSON with the
    /// visitors in each now, its beacons and gateways, and the basemap.
    map: String,
    /// The store's beacons and gateways.
    devices: Vec<DeviceRow>,
    /// The store's Wi-Fi zones, each with its record for the form.
    wifi: Vec<WifiRow>,
}

/// A beacon or a gateway as the store's page lists it and its map draws it.
#[derive(serde::Serialize)]
struct DeviceRow {
    /// `beacon` or `gateway`, and in words.
    kind: &'static str,
    #[serde(skip)]
    kind_words: String,
    id: String,
    /// Its name, else its id.
    #[serde(rename = "name")]
    label: String,
    /// Where it is placed (lat, lon), if it is.
    at: Option<[f64; 2]>,
}

/// A Wi-Fi zone as the store's page lists it.
struct WifiRow {
    id: String,
    name: String,
    bssids: Vec<String>,
    min_matches: u32,
    /// The record, for the form's edit button.
    record: String,
}

/// The store's beacons and gateways, and its Wi-Fi zones.
fn store_devices(state: &AppState, t: &Words, id: &str) -> (Vec<DeviceRow>, Vec<WifiRow>) {
    let registry = state.registry.read().expect("registry lock");
    let site = registry.site();
    let row = |kind: &'static str,
               id: String,
               name: &str,
               at: &Option<omo_device_config::site::LatLon>| DeviceRow {
        kind,
        kind_words: t.s(&format!("store.device.{kind}")),
        label: if name.is_empty() {
            id.clone()
        } else {
            name.to_owned()
        },
        id,
        at: at.map(|l| [l.lat, l.lon]),
    };
    let devices = site
        .beacons
        .iter()
        .filter(|b| b.store.as_str() == id)
        .map(|b| row("beacon", b.id.to_string(), &b.name, &b.location))
        .chain(
            site.gateways
                .iter()
                .filter(|g| g.store.as_str() == id)
                .map(|g| row("gateway", g.id.to_string(), "", &g.location)),
        )
        .collect();
    let wifi = site
        .wifi_zones
        .iter()
        .filter(|z| z.store.as_str() == id)
        .map(|z| WifiRow {
            id: z.id.to_string(),
            name: z.name.clone(),
            bssids: z.bssids.clone(),
            min_matches: z.min_matches,
            record: serde_json::json!(z).to_string(),
        })
        .collect();
    (devices, wifi)
}

pub(super) async fn store_page(
    v: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = crate::http::documents::store_activity(&state, &id).await?;
    let t =
        v.t.in_zone(crate::vocab::time_zone(&a.time_zone).unwrap_or(chrono_tz::UTC));
    let name = {
        let registry = state.registry.read().expect("registry lock");
        let site = registry.site();
        site.stores
            .iter()
            .find(|x| x.id.as_str() == id)
            .map_or_else(|| id.clone(), |x| x.name.clone())
    };
    let hours: Vec<(String, u64)> = a
        .visits_per_hour
        .iter()
        .map(|h| {
            (
                h.hour
                    .parse::<omo_device_config::Timestamp>()
                    .map_or_else(|_| h.hour.clone(), |ts| t.time(&ts)),
                h.visits,
            )
        })
        .collect();
    // The store's visitors now: open visits of its store scope equal those of its zones at
    // most; the zones' sum would count a visitor in two zones twice, so take the largest.
    let visitors_now = a.zones.iter().map(|z| z.visitors_now).max().unwrap_or(0);
    let week_total: u64 = a.visits_per_hour.iter().map(|h| h.visits).sum();
    let (devices, wifi) = store_devices(&state, &t, &id);
    let map = map_data(&state, (&id, &devices), &a);
    let no_geofences = map["zones"]["features"]
        .as_array()
        .is_none_or(Vec::is_empty);
    let map = map.to_string().replace('<', "\\u003c");
    Ok(html(&StorePage {
        nav: Nav::new(&state, &v, Section::Stores, name.clone()),
        zones: a
            .zones
            .iter()
            .map(|z| {
                let label = if z.name.is_empty() {
                    z.id.clone()
                } else {
                    z.name.clone()
                };
                (
                    z.id.clone(),
                    label,
                    t.s(&format!("zone.kind.{}", z.kind)),
                    z.visitors_now,
                )
            })
            .collect(),
        name,
        visitors_now,
        no_geofences,
        bars_svg: charts::bars(&hours, 24, &t.s("store.week")),
        week_caption: t.n("store.week.caption", week_total),
        operator: v.operator(),
        map,
        devices,
        wifi,
        id,
        t,
    }))
}

/// What the store's map draws: the store's location, its geofences (RFC 7946 winding, with
/// each one's visitors now), its beacons and gateways where they are placed, and the basemap
/// set in `cloud.toml`, if any.
fn map_data(
    state: &AppState,
    (id, devices): (&str, &[DeviceRow]),
    a: &crate::reports::activity::Activity,
) -> serde_json::Value {
    let registry = state.registry.read().expect("registry lock");
    let site = registry.site();
    let store = site.stores.iter().find(|s| s.id.as_str() == id);
    let features: Vec<serde_json::Value> = site
        .geofences
        .iter()
        .filter(|g| g.store.as_str() == id)
        .map(|g| {
            let now = a
                .zones
                .iter()
                .find(|z| z.id == g.id.as_str())
                .map_or(0, |z| z.visitors_now);
            let (geometry, radius) = match (&g.geometry, &g.circle) {
                (Some(geom), _) => (
                    serde_json::json!({
                        "type": geom.kind,
                        "coordinates": crate::zones::winding::rfc7946(&geom.kind, &geom.coordinates),
                    }),
                    None,
                ),
                (None, Some(c)) => (
                    serde_json::json!({"type": "Point", "coordinates": [c.lon, c.lat]}),
                    Some(c.radius_m),
                ),
                (None, None) => (serde_json::Value::Null, None),
            };
            serde_json::json!({
                "type": "Feature",
                "id": g.id,
                "properties": {"name": g.name, "radius_m": radius, "now": now},
                "geometry": geometry,
            })
        })
        .collect();
    // A gateway zone with a distance reaches that far around each of its placed gateways.
    let located: std::collections::HashMap<&str, [f64; 2]> = devices
        .iter()
        .filter(|d| d.kind == "gateway")
        .filter_map(|d| Some((d.id.as_str(), d.at?)))
        .collect();
    let reach: Vec<serde_json::Value> = site
        .gateway_zones
        .iter()
        .filter(|z| z.store.as_str() == id)
        .flat_map(|z| {
            let located = &located;
            z.gateways.iter().filter_map(move |g| {
                Some(serde_json::json!({"at": located.get(g.as_str())?, "radius_m": z.max_distance_m?}))
            })
        })
        .collect();
    serde_json::json!({
        "store": id,
        "devices": devices,
        "reach": reach,
        "center": store.map(|s| [s.location.lat, s.location.lon]),
        "zones": {"type": "FeatureCollection", "features": features},
        "tiles": state.config.dashboard.tile_url,
        "attribution": state.config.dashboard.tile_attribution,
    })
}
