//! `POST /v1/redemptions`: a store's POS reports a coupon code redeemed, authenticated by that
//! store's API key (`Authorization: Bearer pk_….SECRET`). The code must exist, its offer must
//! have been delivered, and it must be valid at that store (one of its campaign's stores);
//! idempotent by code — the same code again from the same store answers the first
//! redemption, from another store 409. The redemption is attributed to its send: the
//! customer's analysis row counts it (and its amount) and the campaign's funnel too.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omo_device_config::{StoreId, Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::{parse_json, ApiError, AppState};
use crate::campaigns::redemptions::{self, Prepared, Redeeming, Refused};
use crate::store::StoreError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/redemptions", post(redeem))
}

/// How far ahead of the service clock a POS may stamp a redemption.
const MAX_FUTURE_MS: i64 = 5 * 60_000;
/// The largest amount one redemption may carry.
const MAX_AMOUNT: f64 = 1e9;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    store: String,
    code: String,
    /// When it was redeemed (default: now).
    #[serde(default)]
    at: Option<Timestamp>,
    /// The purchase amount, in the store's currency.
    #[serde(default)]
    amount: Option<f64>,
    #[serde(default)]
    order_id: Option<String>,
}

/// The store a POS key belongs to must be `store`.
fn pos_auth(state: &AppState, headers: &HeaderMap, store: &StoreId) -> Result<(), ApiError> {
    let unauthorized = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a POS API key of this store is required (Authorization: Bearer pk_….SECRET)",
        )
    };
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let (id, secret) = bearer.split_once('.').ok_or_else(unauthorized)?;
    let hash = crate::secrets::sha256_hex(secret.as_bytes());
    let registry = state.registry.read().expect("registry lock");
    let ok = registry.pos_keys(store).iter().any(|k| {
        k.id == id && subtle::ConstantTimeEq::ct_eq(k.sha256.as_bytes(), hash.as_bytes()).into()
    });
    if ok {
        Ok(())
    } else {
        Err(unauthorized())
    }
}

fn refused(r: Refused) -> ApiError {
    match r {
        Refused::UnknownCode(_) => ApiError::not_found(r.to_string()),
        Refused::Elsewhere(_) => ApiError::conflict(r.to_string()),
        Refused::Field(field, why) => ApiError::field(field, why),
        Refused::Store(e) => e.into(),
    }
}

async fn redeem(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: Request = parse_json(&body)?;
    let store = StoreId::new(&req.store).map_err(|e| ApiError::field("store", e))?;
    pos_auth(&state, &headers, &store)?;
    if req.code.is_empty() || req.code.len() > 64 {
        return Err(ApiError::field("code", "must be 1..=64 characters"));
    }
    if req.amount.is_some_and(|a| !(0.0..=MAX_AMOUNT).contains(&a)) {
        return Err(ApiError::field("amount", "must be a number within 0..=1e9"));
    }
    let now = Timestamp::new(state.clock.now());
    let at = req.at.unwrap_or(now);
    if at.millis() > now.millis() + MAX_FUTURE_MS {
        return Err(ApiError::field("at", "is in the future"));
    }
    // Two POS requests for one campaign's counters at once: the loser re-reads and retries.
    for _ in 0..5 {
        let redeeming = Redeeming {
            store: &req.store,
            code: &req.code,
            at,
            amount: req.amount,
            order_id: req.order_id.as_deref(),
        };
        let prepared = {
            let registry = state.registry.read().expect("registry lock");
            redemptions::prepare(state.store.as_ref(), &registry, &redeeming)
        };
        let (commit, redemption) = match prepared.map_err(refused)? {
            Prepared::New(c, r) => (c, r),
            Prepared::Again(r) => return Ok((StatusCode::OK, Json(json!(r))).into_response()),
        };
        match super::commit_durably(&state, commit).await {
            Ok(()) => {
                metrics::counter!("omo_redemptions_total").increment(1);
                return Ok((StatusCode::CREATED, Json(json!(redemption))).into_response());
            }
            Err(e) if e.status == StatusCode::CONFLICT => continue,
            Err(e) => return Err(e),
        }
    }
    Err(ApiError::from(StoreError::Backend(
        "the redemption kept conflicting; retry".into(),
    )))
}
