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
    plan_svg: String,
    bars_svg: String,
    week_caption: String,
}

pub(super) async fn store_page(
    v: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = crate::http::documents::store_activity(&state, &id).await?;
    let t =
        v.t.in_zone(crate::vocab::time_zone(&a.time_zone).unwrap_or(chrono_tz::UTC));
    let (name, anchor, shapes) = {
        let registry = state.registry.read().expect("registry lock");
        let site = registry.site();
        let st = site.stores.iter().find(|x| x.id.as_str() == id);
        let now_of = |zone: &str| {
            a.zones
                .iter()
                .find(|z| z.id == zone)
                .map_or(0, |z| z.visitors_now)
        };
        let shapes: Vec<(String, charts::PlanShape, u64)> = site
            .geofences
            .iter()
            .filter(|g| g.store.as_str() == id)
            .filter_map(|g| {
                let shape = match (&g.geometry, &g.circle) {
                    (Some(geom), _) => charts::PlanShape::Polygons(geom.polygons("geometry").ok()?),
                    (None, Some(c)) => charts::PlanShape::Circle {
                        lon: c.lon,
                        lat: c.lat,
                        radius_m: c.radius_m,
                    },
                    (None, None) => return None,
                };
                let label = if g.name.is_empty() {
                    g.id.to_string()
                } else {
                    g.name.clone()
                };
                Some((label, shape, now_of(g.id.as_str())))
            })
            .collect();
        (
            st.map_or_else(|| id.clone(), |x| x.name.clone()),
            st.map_or((0.0, 0.0), |x| (x.location.lon, x.location.lat)),
            shapes,
        )
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
        plan_svg: if shapes.is_empty() {
            String::new()
        } else {
            charts::plan(anchor, &shapes, &t)
        },
        bars_svg: charts::bars(&hours, 24, &t.s("store.week")),
        week_caption: t.n("store.week.caption", week_total),
        id,
        t,
    }))
}
