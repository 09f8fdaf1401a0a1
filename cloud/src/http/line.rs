//! `POST /v1/line/webhook`: the LINE platform's webhook. `X-Line-Signature` is checked in
//! constant time over the raw body before anything is parsed. `beacon` (enter, banner, stay),
//! `follow` and `unfollow` events are stored, each once by its `webhookEventId` (LINE
//! redelivers); `accountLink` events join a LINE user to the brand's member
//! ([`super::line_link`]); other event types are acknowledged and ignored.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use omo_device_config::{BeaconId, Timestamp};
use serde::Deserialize;
use serde_json::json;

use super::identity_error;
use super::{append, parse_json, ApiError, AppState};
use crate::config::Ingest;
use crate::identity;
use crate::ingest::record::{LineEvent, LineKind, Record};
use crate::ingest::Appended;
use crate::secrets::line_signature_valid;
use crate::store::Store;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/line/webhook", post(webhook))
}

#[derive(Debug, Deserialize)]
struct Webhook {
    events: Vec<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    webhook_event_id: String,
    /// Milliseconds since the Unix epoch.
    timestamp: i64,
    source: Source,
    #[serde(default)]
    beacon: Option<Beacon>,
    #[serde(default)]
    link: Option<Link>,
}

#[derive(Debug, Deserialize)]
struct Link {
    result: String,
    #[serde(default)]
    nonce: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Source {
    #[serde(default)]
    user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Beacon {
    hwid: String,
    #[serde(rename = "type")]
    kind: String,
}

const KINDS: [&str; 4] = ["beacon", "follow", "unfollow", "accountLink"];

/// One webhook event the cloud stores: its id, the LINE user, its time, what happened.
pub type WebhookEvent = (String, String, Timestamp, LineKind);

/// Reads a webhook body whose signature was checked: every event of a kind the cloud uses,
/// or the field at fault (a bad event refuses the delivery before anything is stored).
pub fn parse_webhook(
    body: &[u8],
    now: Timestamp,
    limits: &Ingest,
) -> Result<Vec<WebhookEvent>, ApiError> {
    let hook: Webhook = parse_json(body)?;
    // Read every event first: a bad one refuses the delivery before anything is stored.
    let mut events = Vec::new();
    for (i, raw) in hook.events.iter().enumerate() {
        let kind = raw.get("type").and_then(|t| t.as_str()).unwrap_or_default();
        if !KINDS.contains(&kind) {
            continue;
        }
        let e: Event = parse_json(raw.to_string().as_bytes())
            .map_err(|e| ApiError::field(&format!("events[{i}]"), e.message))?;
        let field = |f: &str| format!("events[{i}].{f}");
        let user = e
            .source
            .user_id
            .clone()
            .filter(|u| !u.is_empty() && u.len() <= 128 && !u.contains('/'))
            .ok_or_else(|| ApiError::field(&field("source.userId"), "a user id is required"))?;
        if e.webhook_event_id.is_empty() || e.webhook_event_id.len() > 128 {
            return Err(ApiError::field(
                &field("webhookEventId"),
                "must be 1..=128 characters",
            ));
        }
        let ts = Timestamp::from_millis(e.timestamp)
            .ok_or_else(|| ApiError::field(&field("timestamp"), "not a time"))?;
        let ahead = ts.millis() - now.millis();
        if ahead > limits.max_future_s as i64 * 1000 || -ahead > limits.max_age_s as i64 * 1000 {
            return Err(ApiError::field(
                &field("timestamp"),
                "too far from the cloud's clock",
            ));
        }
        let kind = match e.kind.as_str() {
            "beacon" => {
                let b = e
                    .beacon
                    .as_ref()
                    .ok_or_else(|| ApiError::field(&field("beacon"), "missing"))?;
                if !["enter", "banner", "stay"].contains(&b.kind.as_str()) {
                    return Err(ApiError::field(
                        &field("beacon.type"),
                        "must be enter, banner or stay",
                    ));
                }
                let beacon: BeaconId = format!("line:{}", b.hwid.to_ascii_lowercase())
                    .parse()
                    .map_err(|_| ApiError::field(&field("beacon.hwid"), "must be 10 hex digits"))?;
                LineKind::Beacon {
                    beacon,
                    beacon_type: b.kind.clone(),
                }
            }
            "follow" => LineKind::Follow,
            "accountLink" => {
                let l = e
                    .link
                    .as_ref()
                    .ok_or_else(|| ApiError::field(&field("link"), "missing"))?;
                if !["ok", "failed"].contains(&l.result.as_str()) {
                    return Err(ApiError::field(
                        &field("link.result"),
                        "must be ok or failed",
                    ));
                }
                if l.nonce.is_empty() || l.nonce.len() > 255 || l.nonce.contains('/') {
                    return Err(ApiError::field(
                        &field("link.nonce"),
                        "must be 1..=255 characters",
                    ));
                }
                LineKind::AccountLink {
                    ok: l.result == "ok",
                    nonce: l.nonce.clone(),
                }
            }
            _ => LineKind::Unfollow,
        };
        events.push((e.webhook_event_id, user, ts, kind));
    }
    Ok(events)
}

/// The customer linked to a LINE user (created on first sight), with a LINE consent record
/// for a follow (given) or unfollow (withdrawn) at the event's time `at`. Committed here, each
/// change on its own with the records it read expected unchanged; a conflict (another request
/// for the same user) is retried.
fn line_customer(
    store: &dyn Store,
    user: &str,
    follow: Option<bool>,
    (at, now): (Timestamp, Timestamp),
) -> Result<identity::Customer, identity::IdentityError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = (|| {
            let (mut customer, created) = identity::customer_for_line(store, user, now)?;
            if let Some(c) = created {
                store.commit(c)?;
            }
            if let Some(granted) = follow {
                // Following the account is the customer's consent to LINE messages;
                // unfollowing withdraws it at once (the handler then cancels the LINE
                // deliveries still waiting; the worker checks consent before every send too).
                let (old, bytes) = identity::customer_for_update(store, &customer.id)?;
                let mut updated = old.clone();
                updated.record_consent(identity::ConsentChange {
                    channel: identity::ConsentChannel::Line,
                    granted,
                    at,
                    recorded: now,
                    source: identity::ConsentSource::Line,
                    text_version: None,
                });
                if updated != old {
                    store.commit(identity::save_customer(
                        store,
                        Some((&old, &bytes)),
                        &updated,
                    )?)?;
                }
                customer = updated;
            }
            Ok(customer)
        })();
        match result {
            Err(identity::IdentityError::Store(crate::store::StoreError::Conflict { .. }))
                if attempts < 5 =>
            {
                continue
            }
            other => return other,
        }
    }
}

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = state.config.line.channel_secret.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "line.channel_secret is not configured",
        ));
    };
    let signature = headers
        .get("x-line-signature")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized("X-Line-Signature is missing"))?;
    if !line_signature_valid(secret.as_bytes(), &body, signature) {
        metrics::counter!("omo_ingest_rejected_total", "reason" => "line_signature").increment(1);
        return Err(ApiError::unauthorized(
            "X-Line-Signature does not match the body",
        ));
    }
    let now = Timestamp::new(state.clock.now());
    let events = parse_webhook(&body, now, &state.config.ingest)?;
    let mut stored = 0;
    for (event_id, user, ts, kind) in events {
        if let LineKind::AccountLink { ok, nonce } = kind {
            super::line_link::handle_account_link(&state, (event_id, user), (ok, nonce)).await?;
            continue;
        }
        let store = state.store.clone();
        let follow = match kind {
            LineKind::Follow => Some(true),
            LineKind::Unfollow => Some(false),
            LineKind::Beacon { .. } | LineKind::AccountLink { .. } => None,
        };
        // An event stamped ahead of the cloud's clock (allowed up to `max_future_s`) must not
        // outrank a consent change made now.
        let at = if ts.millis() > now.millis() { now } else { ts };
        let customer = tokio::task::spawn_blocking(move || {
            line_customer(store.as_ref(), &user, follow, (at, now))
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(identity_error)?;
        if follow == Some(false) {
            super::admin::cancel_withdrawn_sends(&state, customer.clone()).await;
        }
        let record = Record::Line(LineEvent {
            user: customer.line_user.clone().unwrap_or_default(),
            customer: customer.id.clone(),
            event_ts: ts,
            received: now,
            kind,
        });
        let dedup = (
            crate::ingest::keys::line_event(&event_id),
            crate::ingest::keys::processed_id_value(json!({}), now.millis()),
        );
        if let Appended::Stored { .. } = append(&state, vec![record], Some(dedup)).await? {
            stored += 1;
        }
    }
    Ok((StatusCode::OK, Json(json!({"stored": stored}))).into_response())
}
