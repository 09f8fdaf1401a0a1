//! `POST /v1/redemptions`: a store's POS reports a coupon code redeemed, authenticated by that
//! store's API key (`Authorization: Bearer pk_….SECRET`). The code must exist, its offer must
//! have been delivered, and it must be valid at that store (one of its campaign's stores);
//! idempotent by code — the same code again from the same store answers the first
//! redemption, from another store 409. The redemption is attributed to its send: the
//! customer's analysis row counts it (and its amount) and the campaign's funnel too.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omo_device_config::{StoreId, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{parse_json, ApiError, AppState};
use crate::campaigns::report;
use crate::campaigns::stored;
use crate::delivery::{self, Status};
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::Counts;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/redemptions", post(redeem))
}

/// How far ahead of the service clock a POS may stamp a redemption.
const MAX_FUTURE_MS: i64 = 5 * 60_000;
/// The largest amount one redemption may carry, and a customer's spend at most (keeps sums
/// finite).
const MAX_AMOUNT: f64 = 1e9;
const MAX_SPEND: f64 = 1e12;

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

/// A stored redemption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redemption {
    pub code: String,
    pub delivery: String,
    pub campaign: String,
    pub variant: String,
    pub store: String,
    pub at: Timestamp,
    pub amount: Option<f64>,
    pub order_id: Option<String>,
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

/// The stores a campaign runs in (its stores and its zones' stores).
fn campaign_stores(state: &AppState, campaign: &str) -> Result<BTreeSet<String>, ApiError> {
    let Some((current, _)) = stored::current(state.store.as_ref(), campaign)? else {
        return Ok(BTreeSet::new());
    };
    let registry = state.registry.read().expect("registry lock");
    let places = &current.campaign.places;
    Ok(places
        .stores
        .iter()
        .cloned()
        .chain(
            registry
                .zones()
                .iter()
                .filter(|z| places.zones.contains(z.id()))
                .map(|z| z.store().to_string()),
        )
        .collect())
}

enum Prepared {
    /// Record it with this commit.
    New(Commit, Redemption),
    /// The same store redeemed this code before: that redemption.
    Again(Redemption),
}

/// Checks the code and builds the commit that records its redemption.
fn prepare(state: &AppState, req: &Request, at: Timestamp) -> Result<Prepared, ApiError> {
    let store: &dyn Store = state.store.as_ref();
    if let Some(bytes) = store.get(
        Space::Campaigns,
        delivery::keys::redemption_key(&req.code).as_bytes(),
    )? {
        let earlier: Redemption = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
        if earlier.store == req.store {
            return Ok(Prepared::Again(earlier));
        }
        return Err(ApiError::conflict(format!(
            "code: already redeemed at store {}",
            earlier.store
        )));
    }
    let id = store
        .get(Space::Campaigns, delivery::coupon_key(&req.code).as_bytes())?
        .ok_or_else(|| ApiError::not_found(format!("coupon code {}", req.code)))?;
    let (d, _) = delivery::read(store, &String::from_utf8_lossy(&id))?
        .ok_or_else(|| ApiError::internal("a coupon without its delivery"))?;
    // A code shown at the till proves its message arrived, even when the answer to the
    // request that carried it was lost (a crash, a timeout) and the delivery then expired.
    if d.status != Status::Delivered && d.attempts == 0 {
        return Err(ApiError::field(
            "code",
            format!("its offer was never sent ({:?})", d.status).to_lowercase(),
        ));
    }
    if !campaign_stores(state, &d.campaign)?.contains(&req.store) {
        return Err(ApiError::field(
            "store",
            format!("the coupon is not valid at store {}", req.store),
        ));
    }
    if at.millis() < d.decided_ms {
        return Err(ApiError::field("at", "before the offer was made"));
    }
    let redemption = Redemption {
        code: req.code.clone(),
        delivery: d.id.clone(),
        campaign: d.campaign.clone(),
        variant: d.variant.clone(),
        store: req.store.clone(),
        at,
        amount: req.amount,
        order_id: req.order_id.clone(),
    };
    let mut c = Commit::new();
    c.expect(
        Space::Campaigns,
        delivery::keys::redemption_key(&req.code),
        None,
    );
    c.put(
        Space::Campaigns,
        delivery::keys::redemption_key(&req.code),
        serde_json::to_vec(&redemption).map_err(ApiError::internal)?,
    );
    if let report::Linked::Row(key, mut row, bytes) =
        report::row_of(store, &d.campaign, &d.customer)?
    {
        row.redeemed += 1;
        row.spend = (row.spend + req.amount.unwrap_or(0.0)).min(MAX_SPEND);
        c.expect(Space::Campaigns, key.clone(), Some(bytes));
        c.put(
            Space::Campaigns,
            key,
            serde_json::to_vec(&row).map_err(ApiError::internal)?,
        );
    }
    let mut counts = Counts::default();
    counts.add(&d.campaign, &d.variant, "redeemed");
    counts.add_key(d.store_counter("redeemed"));
    counts.write(store, &mut c)?;
    Ok(Prepared::New(c, redemption))
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
        let (commit, redemption) = match prepare(&state, &req, at)? {
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
