//! The stores' pages: the list and one store's activity.

use super::*;

#[derive(Template)]
#[template(path = "stores.html")]
struct StoresPage {
    nav: Nav,
    /// Id, name, time zone, zones, gateways.
    rows: Vec<(String, String, String, usize, usize)>,
}

pub(super) async fn stores_page(
    s: Session,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
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
                    st.name.clone(),
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
        nav: Nav::new(&state, &s, "Stores"),
        rows,
    }))
}

#[derive(Template)]
#[template(path = "store.html")]
struct StorePage {
    nav: Nav,
    name: String,
    a: activity::Activity,
    visitors_now: u64,
    plan_svg: String,
    bars_svg: String,
    week_total: u64,
}

pub(super) async fn store_page(
    s: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = store_activity(&state, &id).await?;
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
                h.hour.get(5..13).unwrap_or(&h.hour).replace('T', " "),
                h.visits,
            )
        })
        .collect();
    // The store's visitors now: open visits of its store scope equal those of its zones at
    // most; the zones' sum would count a visitor in two zones twice, so take the largest.
    let visitors_now = a.zones.iter().map(|z| z.visitors_now).max().unwrap_or(0);
    Ok(html(&StorePage {
        nav: Nav::new(&state, &s, "Stores"),
        name,
        visitors_now,
        plan_svg: if shapes.is_empty() {
            String::new()
        } else {
            charts::plan(anchor, &shapes)
        },
        bars_svg: charts::bars(&hours, 24),
        week_total: a.visits_per_hour.iter().map(|h| h.visits).sum(),
        a,
    }))
}
