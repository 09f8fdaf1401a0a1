//! Documents the JSON API and the dashboard's pages both show, computed at the cloud's
//! current time: the overview and a store's activity.

use super::{ApiError, AppState};
use crate::reports::{activity, overview};

/// The overview document at the cloud's current time (`GET /v1/admin/overview` answers it).
pub async fn overview_now(state: &AppState) -> Result<overview::Overview, ApiError> {
    // Checked when the configuration was read.
    let zone = &state.config.dashboard.time_zone;
    let tz = crate::vocab::time_zone(zone).ok_or_else(|| {
        ApiError::internal(format!("dashboard.time_zone: {zone:?} is not a time zone"))
    })?;
    let now_ms = state.clock.now().timestamp_millis();
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let registry = st.registry.read().expect("registry lock");
        let gateways = st.gateways.lock().expect("gateway states lock");
        overview::overview(
            st.store.as_ref(),
            &registry,
            &gateways,
            &st.live,
            tz,
            now_ms,
        )
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

/// `GET /v1/admin/stores/{id}/activity`'s document at the cloud's current time.
pub async fn store_activity(state: &AppState, id: &str) -> Result<activity::Activity, ApiError> {
    let now_ms = state.clock.now().timestamp_millis();
    let (st, id) = (state.clone(), id.to_owned());
    tokio::task::spawn_blocking(move || {
        let registry = st.registry.read().expect("registry lock").clone();
        activity::activity(st.store.as_ref(), &registry, &id, now_ms)?
            .ok_or_else(|| ApiError::not_found(format!("store {id}")))
    })
    .await
    .map_err(ApiError::internal)?
}

/// `GET /v1/admin/reports/today`'s document at the cloud's current time.
pub async fn stores_today(state: &AppState) -> Result<crate::reports::days::Today, ApiError> {
    let now_ms = state.clock.now().timestamp_millis();
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let registry = st.registry.read().expect("registry lock").clone();
        crate::reports::days::today(st.store.as_ref(), &registry, &st.secret, now_ms)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}
