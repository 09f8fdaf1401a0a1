//! Store and tier reports over HTTP (`crate::reports` builds them); analyst tokens may read
//! them (no personal ids). JSON, or CSV with `?format=csv` or `Accept: text/csv`.
//!
//! - `GET /v1/admin/reports/stores/{id}?from=DATE&to=DATE`: a store's figures (`online` for
//!   the online shop) over local dates in the store's time zone, inclusive; default the last
//!   7 days. From the tallies kept per store and hour; `&source=rows` builds the same report
//!   from the stored rows instead (slow: to check the tallies; an erasure's or the retention
//!   sweep's deletions show there, not in the tallies).
//! - `GET /v1/admin/reports/today`: every store's day so far in its own time zone beside the
//!   same weekday a week before to the same time of day, and the best and worst store.
//! - `GET /v1/admin/reports/tiers?from=DATE&to=DATE[&store=ID]`: customers per loyalty tier
//!   at the range's end with their spend and projected value; with `store`, only customers
//!   who visited or bought there in the range, in its time zone (else `profiles.time_zone`).

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::NaiveDate;
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::json;

use super::campaigns::{csv, wants_csv};
use super::{Analyst, ApiError, AppState};
use crate::reports::{self, Range};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/reports/stores/:id", get(store_report))
        .route("/v1/admin/reports/tiers", get(tier_report))
        .route("/v1/admin/reports/today", get(today_report))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    store: Option<String>,
    format: Option<String>,
    source: Option<String>,
}

/// The range asked for, in `tz`: the last 7 local days by default.
fn range(state: &AppState, q: &RangeQuery, tz: Tz) -> Result<Range, ApiError> {
    let today = state.clock.now().with_timezone(&tz).date_naive();
    let to = q.to.unwrap_or(today);
    let from = match q.from {
        Some(f) => f,
        None => to
            .checked_sub_days(chrono::Days::new(6))
            .ok_or_else(|| ApiError::field("to", format!("{to} is out of range")))?,
    };
    let field = if q
        .from
        .is_some_and(|f| !(1970..=9999).contains(&chrono::Datelike::year(&f)))
    {
        "from"
    } else {
        "to"
    };
    Range::new(from, to, tz).map_err(|e| ApiError::field(field, e))
}

/// The time zone of store `id` (`None`: not a store).
fn store_tz(state: &AppState, id: &str) -> Result<Option<Tz>, ApiError> {
    let registry = state.registry.read().expect("registry lock");
    Ok(reports::known_store(&registry, id).map(|tz| {
        tz.or_else(|| crate::vocab::time_zone(&state.config.profiles.time_zone))
            .unwrap_or(Tz::UTC)
    }))
}

async fn store_report(
    _: Analyst,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    if q.store.is_some() {
        return Err(ApiError::field("store", "the store is in the path"));
    }
    let csv_wanted = wants_csv(q.format.as_deref(), &headers)?;
    let tz = store_tz(&state, &id)?.ok_or_else(|| ApiError::not_found(format!("store {id}")))?;
    let range = range(&state, &q, tz)?;
    let build = match q.source.as_deref() {
        None | Some("tallies") => reports::store_report,
        Some("rows") => reports::store_report_from_rows,
        Some(other) => {
            return Err(ApiError::field(
                "source",
                format!("{other:?} is neither \"tallies\" nor \"rows\""),
            ))
        }
    };
    let (store, secret) = (state.store.clone(), state.secret);
    let report = tokio::task::spawn_blocking(move || build(store.as_ref(), &id, range, &secret))
        .await
        .map_err(ApiError::internal)??;
    Ok(if csv_wanted {
        csv(reports::store_csv(&report))
    } else {
        Json(json!(report)).into_response()
    })
}

async fn today_report(_: Analyst, State(state): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!(super::documents::stores_today(&state).await?)).into_response())
}

async fn tier_report(
    _: Analyst,
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    if q.source.is_some() {
        return Err(ApiError::field("source", "tier reports read the profiles"));
    }
    let csv_wanted = wants_csv(q.format.as_deref(), &headers)?;
    let tz = match &q.store {
        Some(s) => store_tz(&state, s)?
            .ok_or_else(|| ApiError::field("store", format!("{s:?} is not a store")))?,
        None => crate::vocab::time_zone(&state.config.profiles.time_zone).unwrap_or(Tz::UTC),
    };
    let range = range(&state, &q, tz)?;
    let store = state.store.clone();
    let config = state.config.clone();
    let only = q.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        let profiles = crate::profiles::all(store.as_ref())?;
        let customers = crate::identity::customer_ids(store.as_ref())?.len();
        let without = (customers as u64).saturating_sub(profiles.len() as u64);
        Ok::<_, crate::store::StoreError>(reports::tier_report(
            &profiles,
            without,
            &config.profiles,
            range,
            only.as_deref(),
        ))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(if csv_wanted {
        csv(reports::tiers_csv(&report))
    } else {
        Json(json!(report)).into_response()
    })
}
