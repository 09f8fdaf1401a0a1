//! The LINE account link (LINE's member-card flow), joining a LINE user to the brand's member:
//!
//! 1. `POST /v1/admin/line-links/token` (operator; `{"line_user"}`): the brand's bot asks for a
//!    link token for a LINE user; the cloud gets it from LINE
//!    (`POST {line.api_base}/v2/bot/user/{userId}/linkToken`).
//! 2. `POST /v1/admin/line-links` (operator; `{"member_id", "link_token"}`): once the member has
//!    logged in on the brand's site, a one-time nonce for that member (valid 10 minutes) and the
//!    URL to send the user to (`https://access.line.me/dialog/bot/accountLink?...`).
//! 3. LINE's `accountLink` webhook event: with `result: ok` and a nonce the cloud issued and
//!    nobody used, the LINE user joins the member's customer
//!    ([`crate::identity::join_line_user`]). An unknown, used or expired nonce is refused and
//!    logged; nothing changes. Counted in `omo_line_account_links_total{result}`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omo_device_config::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::app::identity_error;
use super::{parse_json, ApiError, AppState, Operator};
use crate::identity;
use crate::store::{Commit, Space, Store, StoreError};

/// How long a nonce may wait for LINE's `accountLink` event.
const NONCE_TTL_MS: i64 = 10 * 60_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/line-links/token", post(link_token))
        .route("/v1/admin/line-links", post(nonce))
}

/// A nonce waiting for its `accountLink` event.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    member_id: String,
    expires_ms: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    line_user: String,
}

async fn link_token(
    _: Operator,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TokenIn = parse_json(&body)?;
    if req.line_user.is_empty()
        || req.line_user.len() > 128
        || !req.line_user.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return Err(ApiError::field("line_user", "must be a LINE user id"));
    }
    let token = state
        .config
        .line
        .channel_access_token
        .clone()
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "line.channel_access_token is not configured",
            )
        })?;
    let url = format!(
        "{}/v2/bot/user/{}/linkToken",
        state.config.line.api_base.trim_end_matches('/'),
        req.line_user
    );
    let client = crate::tls::http_client_builder()
        .timeout(std::time::Duration::from_secs(
            state.config.delivery.request_timeout_s,
        ))
        .build()
        .map_err(ApiError::internal)?;
    let bad_gateway = |m: String| ApiError::new(StatusCode::BAD_GATEWAY, "line", m);
    let resp = client
        .post(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| bad_gateway(format!("LINE did not answer: {e}")))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    let link_token = answer["linkToken"]
        .as_str()
        .filter(|_| status.is_success())
        .ok_or_else(|| bad_gateway(format!("LINE answered {status}: {answer}")))?;
    Ok(Json(json!({"link_token": link_token})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NonceIn {
    member_id: String,
    link_token: String,
}

async fn nonce(
    _: Operator,
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: NonceIn = parse_json(&body)?;
    if req.member_id.is_empty() || req.member_id.len() > 128 || req.member_id.contains(['/', '\n'])
    {
        return Err(ApiError::field("member_id", "must be 1..=128 characters"));
    }
    if req.link_token.is_empty()
        || req.link_token.len() > 256
        || !req
            .link_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
    {
        return Err(ApiError::field("link_token", "must be LINE's link token"));
    }
    let nonce = crate::secrets::new_token();
    let expires_ms = state.clock.now().timestamp_millis() + NONCE_TTL_MS;
    let pending = Pending {
        member_id: req.member_id,
        expires_ms,
    };
    let mut c = Commit::new();
    c.expect(
        Space::Identity,
        crate::identity::keys::line_nonce(&nonce),
        None,
    );
    c.put(
        Space::Identity,
        crate::identity::keys::line_nonce(&nonce),
        serde_json::to_vec(&pending).expect("nonces serialise"),
    );
    super::commit_durably(&state, c).await?;
    let url = format!(
        "https://access.line.me/dialog/bot/accountLink?linkToken={}&nonce={nonce}",
        req.link_token
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({"nonce": nonce, "url": url, "expires": Timestamp::from_millis(expires_ms)})),
    )
        .into_response())
}

/// What an `accountLink` event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    Joined,
    /// LINE reported the link failed (the nonce is spent).
    Failed,
    /// The nonce is unknown, used or expired: nothing changed.
    Refused(&'static str),
    /// This event was handled before (a redelivery).
    Again,
}

/// Handles an `accountLink` event: one commit consumes the nonce, records the event id and,
/// when LINE says ok, joins the LINE user to the nonce's member.
fn account_link(
    store: &dyn Store,
    (event_id, user): (&str, &str),
    (ok, nonce): (bool, &str),
    now: Timestamp,
) -> Result<Linked, identity::IdentityError> {
    let dedup = crate::ingest::keys::line_event(event_id);
    if store.get(Space::Dedup, &dedup)?.is_some() {
        return Ok(Linked::Again);
    }
    let Some(bytes) = store.get(
        Space::Identity,
        crate::identity::keys::line_nonce(nonce).as_bytes(),
    )?
    else {
        return Ok(Linked::Refused("unknown or used nonce"));
    };
    let pending: Pending = serde_json::from_slice(&bytes)
        .map_err(|e| StoreError::Backend(format!("LINE link nonce: {e}")))?;
    let mut c = Commit::new();
    c.expect(
        Space::Identity,
        crate::identity::keys::line_nonce(nonce),
        Some(bytes),
    );
    c.delete(Space::Identity, crate::identity::keys::line_nonce(nonce));
    c.expect(Space::Dedup, dedup.clone(), None);
    c.put(
        Space::Dedup,
        dedup,
        crate::ingest::keys::processed_id_value(json!({}), now.millis()),
    );
    let linked = if pending.expires_ms < now.millis() {
        Linked::Refused("expired nonce")
    } else if !ok {
        Linked::Failed
    } else {
        let (_, join) = identity::join_line_user(store, &pending.member_id, user, now)?;
        c.extend(join);
        Linked::Joined
    };
    store.commit(c)?;
    Ok(linked)
}

/// The webhook's `accountLink` event: handled, logged (without ids) and counted.
pub async fn handle_account_link(
    state: &AppState,
    (event_id, user): (String, String),
    (ok, nonce): (bool, String),
) -> Result<(), ApiError> {
    let store = state.store.clone();
    let now = Timestamp::new(state.clock.now());
    let mut attempts = 0;
    let linked = loop {
        attempts += 1;
        let (store, event_id, user, nonce) =
            (store.clone(), event_id.clone(), user.clone(), nonce.clone());
        let result = tokio::task::spawn_blocking(move || {
            account_link(store.as_ref(), (&event_id, &user), (ok, &nonce), now)
        })
        .await
        .map_err(ApiError::internal)?;
        match result {
            Err(identity::IdentityError::Store(StoreError::Conflict { .. })) if attempts < 5 => {
                continue
            }
            other => break other.map_err(identity_error)?,
        }
    };
    let result = match linked {
        Linked::Joined => {
            tracing::info!("LINE account linked to a member");
            "joined"
        }
        Linked::Failed => {
            tracing::info!("LINE account link failed on LINE's side");
            "failed"
        }
        Linked::Refused(why) => {
            tracing::warn!(reason = why, "LINE account link refused");
            "refused"
        }
        Linked::Again => "redelivered",
    };
    metrics::counter!("omo_line_account_links_total", "result" => result).increment(1);
    state.store.flush()?;
    Ok(())
}
