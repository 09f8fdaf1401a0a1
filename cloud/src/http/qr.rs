//! QR check-in over HTTP (`crate::qr` has the codes):
//!
//! - `GET /v1/admin/stores/{id}/qr[?zone=ID]` (operator or analyst): the place's code and the
//!   URL its poster carries; `GET /v1/admin/stores/{id}/qr.svg[?zone=ID]` and `…/qr.png` the
//!   poster's QR code.
//! - `GET /q/{code}`: what a phone's camera opens — a redirect into the brand's app
//!   (`app.checkin_url?code=…`), or a small page asking to scan it in the app. 404 for a code
//!   no place has.
//! - `POST /v1/app/checkins` (install token; `{"code", "ts"?, "idempotency_key"}`): the app's
//!   scan, stored as a check-in observation — a visit opens at once.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use omo_device_config::{StoreId, Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::app::{append_once, authenticated_install, idempotency_key};
use super::{parse_json, Analyst, ApiError, AppState};
use crate::ingest::record::{Checkin, Record};
use crate::qr;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/stores/:id/qr", get(poster))
        .route("/v1/admin/stores/:id/qr.svg", get(poster_svg))
        .route("/v1/admin/stores/:id/qr.png", get(poster_png))
        .route("/q/:code", get(scanned))
        .route("/v1/app/checkins", post(checkin))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneQuery {
    zone: Option<String>,
}

fn secret(state: &AppState) -> Result<[u8; 32], ApiError> {
    Ok(crate::secrets::server_secret(state.store.as_ref())?)
}

/// The code and poster URL of a store, or of one of its zones.
fn code_and_url(
    state: &AppState,
    id: &str,
    zone: Option<&str>,
) -> Result<(String, String), ApiError> {
    let store = StoreId::new(id).map_err(|e| ApiError::field("store", e))?;
    {
        let registry = state.registry.read().expect("registry lock");
        if registry.store(&store).is_none() {
            return Err(ApiError::not_found(format!("store {id}")));
        }
        if let Some(z) = zone {
            if !registry
                .zones()
                .iter()
                .any(|r| r.id() == z && r.store() == &store)
            {
                return Err(ApiError::not_found(format!("zone {z} of store {id}")));
            }
        }
    }
    let base = state.config.delivery.link_base.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "not_configured",
            "QR posters need delivery.link_base in cloud.toml (this service's public URL)",
        )
    })?;
    let code = qr::code(&secret(state)?, &store, zone);
    let url = format!("{}/q/{code}", base.trim_end_matches('/'));
    Ok((code, url))
}

async fn poster(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Result<Response, ApiError> {
    let (code, url) = code_and_url(&state, &id, q.zone.as_deref())?;
    Ok(Json(json!({"store": id, "zone": q.zone, "code": code, "url": url})).into_response())
}

/// Draws a QR code holding a URL as an image's bytes.
type Render = fn(&str) -> Result<Vec<u8>, String>;

/// A poster's QR code as an image: `{id}/qr.svg` or `{id}/qr.png`.
async fn poster_image(
    state: AppState,
    id: String,
    zone: Option<String>,
    (content_type, render): (&'static str, Render),
) -> Result<Response, ApiError> {
    let (_, url) = code_and_url(&state, &id, zone.as_deref())?;
    let image = render(&url).map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, content_type)], image).into_response())
}

async fn poster_svg(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Result<Response, ApiError> {
    let svg = |url: &str| qr::svg(url).map(String::into_bytes);
    poster_image(state, id, q.zone, ("image/svg+xml", svg)).await
}

async fn poster_png(
    _: Analyst,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Result<Response, ApiError> {
    poster_image(state, id, q.zone, ("image/png", qr::png)).await
}

/// The place a code stands for, or 404.
fn place(state: &AppState, code: &str) -> Result<qr::Place, ApiError> {
    let secret = secret(state)?;
    let registry = state.registry.read().expect("registry lock");
    qr::place(&registry, &secret, code).ok_or_else(|| ApiError::not_found("QR code"))
}

async fn scanned(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let place = place(&state, &code)?;
    if let Some(app) = &state.config.app.checkin_url {
        let sep = if app.contains('?') { '&' } else { '?' };
        return Ok((
            StatusCode::FOUND,
            [(header::LOCATION, format!("{app}{sep}code={code}"))],
        )
            .into_response());
    }
    let name = {
        let registry = state.registry.read().expect("registry lock");
        registry
            .store(&place.store)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let name: String = name
        .chars()
        .map(|c| match c {
            '<' | '>' | '&' | '"' | '\'' => ' ',
            c => c,
        })
        .collect();
    Ok(Html(format!(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{name}</title><body><h1>{name}</h1><p>Scan this code in our app to check in.</p></body></html>"
    ))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckinIn {
    code: String,
    /// When it was scanned (default: now).
    #[serde(default)]
    ts: Option<Timestamp>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

async fn checkin(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let install = authenticated_install(&state, &headers).await?;
    let req: CheckinIn = parse_json(&body)?;
    let key = idempotency_key(&headers, req.idempotency_key.clone())?;
    let place = place(&state, &req.code)
        .map_err(|_| ApiError::field("code", "no store or zone has this code"))?;
    let now = Timestamp::new(state.clock.now());
    let ts = req.ts.unwrap_or(now);
    let limits = &state.config.ingest;
    let future_ms = i64::try_from(limits.max_future_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    let age_ms = i64::try_from(limits.max_age_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    if ts.millis() > now.millis().saturating_add(future_ms) {
        return Err(ApiError::field("ts", "is in the future"));
    }
    if ts.millis() < now.millis().saturating_sub(age_ms) {
        return Err(ApiError::field("ts", "is older than ingest.max_age_s"));
    }
    let record = Record::Checkin(Checkin {
        install: install.id.clone(),
        customer: install.customer.clone(),
        store: place.store,
        zone: place.zone,
        event_ts: ts,
        received: now,
    });
    // Check-ins keep their own idempotency keys apart from location reports'.
    append_once(&state, &install, &format!("checkin/{key}"), record, now).await
}
