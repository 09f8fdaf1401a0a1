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
use serde::Deserialize;
use serde_json::json;

use super::identity_error;
use super::{parse_json, ApiError, AppState, Operator};
use crate::identity::{self, Linked};
use crate::store::{Store, StoreError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/line-links/token", post(link_token))
        .route("/v1/admin/line-links", post(nonce))
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
    let now_ms = state.clock.now().timestamp_millis();
    let (nonce, expires_ms, c) = identity::new_link_nonce(&req.member_id, now_ms);
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
            crate::ingest::account_link(store.as_ref(), (&event_id, &user), (ok, &nonce), now)
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
