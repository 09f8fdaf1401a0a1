//! Purchases over HTTP (`crate::purchases` has the rules):
//!
//! - `POST /v1/purchases`: one purchase. A store purchase is sent with that store's POS key
//!   (`Bearer pk_….SECRET`), an online one with an e-commerce key (`Bearer ek_….SECRET`); an
//!   operator token may send either. 201 when stored, 200 with `duplicate` for the same order
//!   again, 409 for another order under a recorded order id, 422 naming the field at fault.
//! - `POST /v1/purchases/import`: NDJSON, one purchase per line (history). Every line is
//!   checked on its own: the valid ones land, the others are reported with their line number.
//! - `POST /v1/admin/ecommerce-keys` (operator): a new e-commerce key, shown once;
//!   `GET /v1/admin/ecommerce-keys` lists their ids; `DELETE /v1/admin/ecommerce-keys/{id}`
//!   revokes one (POS keys: `DELETE /v1/admin/stores/{id}/pos-keys/{key}`).
//! - `GET /v1/admin/purchases?customer=ID` or `?store=ID|online=true&from=&to=` (operator).

use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use omo_device_config::{StoreId, Timestamp};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{admin_auth, bearer, parse_json, ApiError, AppState, Operator};
use crate::config::Role;
use crate::ingest::record::{PurchaseEvent, Record};
use crate::ingest::AppendRequest;
use crate::purchases::{self, PurchaseError, PurchaseIn, Recorded};
use crate::store::{Store, StoreError};
use crate::vocab::SaleChannel;

/// An import body may be this large (a history file); other requests keep `http.max_body_bytes`.
const MAX_IMPORT_BYTES: usize = 64 << 20;
/// Rejected lines listed at most in an import's answer (all are counted).
const MAX_LISTED: usize = 1000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/purchases", post(record))
        .route("/v1/purchases/import", post(import))
        .route(
            "/v1/admin/ecommerce-keys",
            post(add_ecommerce_key).get(list_ecommerce_keys),
        )
        .route(
            "/v1/admin/ecommerce-keys/:id",
            axum::routing::delete(remove_ecommerce_key),
        )
        .route("/v1/admin/purchases", get(list))
}

/// Who is sending purchases.
#[derive(Debug, Clone, PartialEq)]
enum Sender {
    /// A store's POS (its key's store).
    Pos(StoreId),
    /// The brand's e-commerce system.
    Shop,
    Operator,
}

/// The sender a request's bearer token names.
fn sender(state: &AppState, headers: &HeaderMap) -> Result<Sender, ApiError> {
    let unauthorized = || {
        ApiError::unauthorized(
            "a POS key (Bearer pk_….SECRET), an e-commerce key (Bearer ek_….SECRET) or an operator token is required",
        )
    };
    let token = bearer(headers).ok_or_else(unauthorized)?;
    if token.starts_with("pk_") {
        let (id, secret) = token.split_once('.').ok_or_else(unauthorized)?;
        let hash = crate::secrets::sha256_hex(secret.as_bytes());
        let registry = state.registry.read().expect("registry lock");
        let store = registry.site().stores.iter().find(|s| {
            registry.pos_keys(&s.id).iter().any(|k| {
                k.id == id
                    && subtle::ConstantTimeEq::ct_eq(k.sha256.as_bytes(), hash.as_bytes()).into()
            })
        });
        return store
            .map(|s| Sender::Pos(s.id.clone()))
            .ok_or_else(unauthorized);
    }
    if token.starts_with("ek_") {
        return if purchases::is_shop_key(state.store.as_ref(), token)? {
            Ok(Sender::Shop)
        } else {
            Err(unauthorized())
        };
    }
    admin_auth(state, headers, Role::Operator)?;
    Ok(Sender::Operator)
}

/// Whether `sender` may record `p`.
fn allowed(sender: &Sender, p: &PurchaseIn) -> Result<(), ApiError> {
    let forbidden = |m: &str| ApiError::new(StatusCode::FORBIDDEN, "forbidden", m);
    match (sender, p.channel) {
        (Sender::Operator, _) | (Sender::Shop, SaleChannel::Online) => Ok(()),
        (Sender::Pos(s), SaleChannel::Store) if p.store.as_deref() == Some(s.as_str()) => Ok(()),
        (Sender::Pos(_), SaleChannel::Store) => {
            Err(forbidden("a POS key records its own store's purchases"))
        }
        (Sender::Pos(_), SaleChannel::Online) => {
            Err(forbidden("online purchases come with an e-commerce key"))
        }
        (Sender::Shop, SaleChannel::Store) => {
            Err(forbidden("store purchases come with the store's POS key"))
        }
    }
}

fn purchase_error(e: PurchaseError) -> ApiError {
    match e {
        PurchaseError::Invalid { field, message } => ApiError::field(&field, message),
        PurchaseError::Conflict(order) => ApiError::conflict(format!(
            "order_id {order} was recorded before with other content"
        )),
        PurchaseError::Store(e) if e.0.starts_with("storage unavailable") => {
            ApiError::from(StoreError::Unavailable(e.0))
        }
        PurchaseError::Store(e) => ApiError::internal(e),
    }
}

/// Records one purchase, re-reading on a conflict; (stored now, the record).
fn store_one(
    store: &dyn Store,
    p: PurchaseIn,
    now: Timestamp,
) -> Result<(bool, purchases::Purchase), ApiError> {
    // Purchases at one store in one hour add to the same tally: tills at once take turns.
    for _ in 0..50 {
        match purchases::prepare(store, p.clone(), now).map_err(purchase_error)? {
            Recorded::Again(earlier) => return Ok((false, earlier)),
            Recorded::New(purchase, commit) => match store.commit(commit) {
                Ok(()) => {
                    metrics::counter!("omo_purchases_total", "channel" => channel_name(purchase.sent.channel)).increment(1);
                    return Ok((true, purchase));
                }
                Err(crate::store::StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            },
        }
    }
    Err(ApiError::conflict("the purchase kept conflicting; retry"))
}

fn channel_name(c: SaleChannel) -> &'static str {
    match c {
        SaleChannel::Store => "store",
        SaleChannel::Online => "online",
    }
}

async fn record(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let who = sender(&state, &headers)?;
    let p: PurchaseIn = parse_json(&body)?;
    allowed(&who, &p)?;
    let now = Timestamp::new(state.clock.now());
    let store = state.store.clone();
    let (new, purchase) = tokio::task::spawn_blocking(move || {
        let stored = store_one(store.as_ref(), p, now)?;
        store.flush()?;
        Ok::<_, ApiError>(stored)
    })
    .await
    .map_err(ApiError::internal)??;
    to_pipeline(&state, std::slice::from_ref(&purchase)).await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"purchase": purchase, "duplicate": !new})),
    )
        .into_response())
}

/// A history import: each line on its own; the answer counts and lists what happened.
async fn import(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    // Who is sending, before the body is read: an unknown caller costs nothing.
    let who = sender(&state, &headers)?;
    let body = axum::body::to_bytes(request.into_body(), MAX_IMPORT_BYTES)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("an import body is {MAX_IMPORT_BYTES} bytes at most: {e}"),
            )
        })?;
    let now = Timestamp::new(state.clock.now());
    let store = state.store.clone();
    let (answer, landed) = tokio::task::spawn_blocking(move || {
        let (mut lines, mut stored, mut duplicates, mut refused) = (0u64, 0u64, 0u64, 0u64);
        let mut rejected = Vec::new();
        let mut landed = Vec::new();
        for (i, line) in body.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            lines += 1;
            let outcome = std::str::from_utf8(line)
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!("not UTF-8 at byte {}", e.valid_up_to()),
                    )
                })
                .and_then(|line| parse_json::<PurchaseIn>(line.as_bytes()))
                .and_then(|p| allowed(&who, &p).map(|()| p))
                .and_then(|p| store_one(store.as_ref(), p, now));
            match outcome {
                Ok((new, purchase)) => {
                    if new {
                        stored += 1;
                    } else {
                        duplicates += 1;
                    }
                    landed.push(purchase);
                }
                Err(e) if e.status == StatusCode::INTERNAL_SERVER_ERROR => return Err(e),
                Err(e) => {
                    refused += 1;
                    if rejected.len() < MAX_LISTED {
                        rejected.push(
                            json!({"line": i + 1, "status": e.status.as_u16(), "error": e.message}),
                        );
                    }
                }
            }
        }
        store.flush()?;
        let answer = json!({
            "lines": lines, "stored": stored, "duplicates": duplicates,
            "refused": refused, "rejected": rejected,
        });
        Ok::<_, ApiError>((answer, landed))
    })
    .await
    .map_err(ApiError::internal)??;
    for chunk in landed.chunks(PIPELINE_CHUNK) {
        to_pipeline(&state, chunk).await?;
    }
    Ok(Json(answer).into_response())
}

/// Purchases handed to ingest at once by an import.
const PIPELINE_CHUNK: usize = 1000;

/// Hands purchases of known customers to the pipeline (their profiles, purchase-triggered
/// campaigns): one event-log record each, taken once per purchase id, so the same order sent
/// again — after a crash between its row and its record, say — is not counted twice.
/// Answers once the records are durable.
async fn to_pipeline(state: &AppState, stored: &[purchases::Purchase]) -> Result<(), ApiError> {
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "ingest is not running",
        )
    };
    let now = Timestamp::new(state.clock.now());
    let mut answers = Vec::new();
    for p in stored {
        let Some(customer) = &p.customer_id else {
            continue;
        };
        let record = Record::Purchase(PurchaseEvent {
            purchase: p.id.clone(),
            customer: customer.clone(),
            channel: p.sent.channel,
            store: p.sent.store.as_deref().and_then(|s| StoreId::new(s).ok()),
            event_ts: p.sent.at,
            // Now: the log's times only grow (the purchase's own time is `event_ts`).
            received: now,
            currency: p.sent.currency.clone(),
            total: p.total,
            categories: p.sent.lines.iter().map(|l| l.category.clone()).collect(),
        });
        let key = crate::ingest::keys::purchase(&p.id);
        let value = crate::ingest::keys::processed_id_value(json!({}), now.millis());
        let (reply, answer) = tokio::sync::oneshot::channel();
        state
            .ingest
            .send(AppendRequest {
                records: vec![record],
                dedup: Some((key, value)),
                reply,
            })
            .await
            .map_err(|_| unavailable())?;
        answers.push(answer);
    }
    for answer in answers {
        answer
            .await
            .map_err(|_| unavailable())?
            .map_err(ApiError::from)?;
    }
    Ok(())
}

async fn add_ecommerce_key(
    _: Operator,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let (id, key, c) = purchases::new_shop_key();
    super::commit_durably(&state, c).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id, "key": key}))).into_response())
}

async fn list_ecommerce_keys(
    _: Operator,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let ids = purchases::shop_key_ids(state.store.as_ref())?;
    Ok(Json(json!({"items": ids})).into_response())
}

/// Revokes an e-commerce key: from the next request on, it records nothing.
async fn remove_ecommerce_key(
    _: Operator,
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let c = purchases::revoke_shop_key(state.store.as_ref(), &id)?
        .ok_or_else(|| ApiError::not_found(format!("e-commerce key {id}")))?;
    super::commit_durably(&state, c).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    customer: Option<String>,
    store: Option<String>,
    #[serde(default)]
    online: bool,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    limit: Option<usize>,
}

async fn list(
    _: Operator,
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let range = (
        q.from.map_or(0, Timestamp::millis),
        q.to.map_or(i64::MAX / 2, Timestamp::millis),
    );
    let store = state.store.as_ref();
    let items = match (&q.customer, &q.store, q.online) {
        (Some(c), None, false) => purchases::of_customer(store, c, limit)?,
        (None, Some(s), false) => purchases::in_range(store, Some(s), range, limit)?,
        (None, None, true) => purchases::in_range(store, None, range, limit)?,
        _ => {
            return Err(ApiError::field(
                "customer",
                "give one of customer, store or online=true",
            ))
        }
    };
    let items: Vec<Value> = items.into_iter().map(|p| json!(p)).collect();
    Ok(Json(json!({"items": items})).into_response())
}
