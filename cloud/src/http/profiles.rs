//! Customer profiles and tag rules over HTTP (`crate::profiles` has the rules):
//!
//! - `GET /v1/admin/customers/{id}/profile` (operator): the profile with its scores, tier and
//!   rule tags as of now.
//! - `GET /v1/admin/tag-rules` (analyst): every rule, by tag.
//! - `PUT /v1/admin/tag-rules/{tag}` (operator): adds or replaces a rule; 422 names the field.
//!   Profiles pick it up as data arrive, and decisions at once (they evaluate rules at the
//!   trigger's time).
//! - `DELETE /v1/admin/tag-rules/{tag}` (operator).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use omo_device_config::Timestamp;
use serde_json::{json, Value};

use super::{parse_json, Analyst, ApiError, AppState, Operator};
use crate::profiles::{self, is_name, Profile, ProfileParams, Rule};
use crate::store::Store;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/customers/:id/profile", get(profile))
        .route("/v1/admin/tag-rules", get(list_rules))
        .route(
            "/v1/admin/tag-rules/:tag",
            axum::routing::put(put_rule).delete(delete_rule),
        )
}

fn at(ms: Option<i64>) -> Value {
    json!(ms.and_then(Timestamp::from_millis))
}

/// A profile as the API shows it, evaluated at `now_ms`.
pub fn view(
    p: &Profile,
    params: &ProfileParams,
    rules: &std::collections::BTreeMap<String, Rule>,
    now_ms: i64,
    tz_of: &dyn Fn(&str) -> Option<chrono_tz::Tz>,
) -> Value {
    let scores = p.scores(params, now_ms);
    json!({
        "customer": p.customer,
        "as_of": at(Some(now_ms)),
        "tier": params.tier_of(scores.total()),
        "scores": scores,
        "tags": p.tags(rules, params, now_ms, tz_of),
        "visits": p.visits,
        "first_visit": at(p.first_visit_ms),
        "last_visit": at(p.last_visit_ms),
        "purchases": p.purchases(),
        "store_purchases": p.store_purchases,
        "online_purchases": p.online_purchases,
        "online_share": p.online_share(),
        "first_purchase": at(p.first_purchase_ms),
        "last_purchase": at(p.last_purchase_ms),
        "spend": p.spend,
        "spend_in_window": p.spend_within(now_ms, params.window_days, &params.currency),
        "currency": params.currency,
        "categories": p.categories,
        "updated": at(Some(p.updated_ms)),
    })
}

async fn profile(
    _: Operator,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.as_ref();
    if crate::identity::customer(store, &id)?.is_none() {
        return Err(ApiError::not_found(format!("customer {id}")));
    }
    let p = profiles::read(store, &id)?.unwrap_or_else(|| Profile::new(&id));
    let rules = profiles::rules(store)?;
    let registry = state.registry.read().expect("registry lock");
    let tz_of = |s: &str| registry.store_tz(s);
    let now = state.clock.now().timestamp_millis();
    Ok(Json(view(&p, &state.config.profiles, &rules, now, &tz_of)).into_response())
}

async fn list_rules(_: Analyst, State(state): State<AppState>) -> Result<Response, ApiError> {
    let rules = profiles::rules(state.store.as_ref())?;
    Ok(Json(json!({"rules": rules})).into_response())
}

async fn put_rule(
    _: Operator,
    State(state): State<AppState>,
    Path(tag): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !is_name(&tag) {
        return Err(ApiError::field(
            "tag",
            "must be 1..=64 letters, digits, '-', '_', '.' or ':'",
        ));
    }
    let rule: Rule = parse_json(&body)?;
    if let Some((field, message)) = rule
        .problems(state.config.profiles.keep_days)
        .into_iter()
        .next()
    {
        return Err(ApiError::field(&field, message));
    }
    if let Rule::Visited { store: Some(s), .. } = &rule {
        let registry = state.registry.read().expect("registry lock");
        if !registry.site().stores.iter().any(|r| r.id.as_str() == s) {
            return Err(ApiError::field(
                "store",
                format!("{s:?} is not a registered store"),
            ));
        }
    }
    let store = state.store.clone();
    let (t, r) = (tag.clone(), rule.clone());
    tokio::task::spawn_blocking(move || {
        profiles::put_rule(store.as_ref(), &t, &r)?;
        store.flush()
    })
    .await
    .map_err(ApiError::internal)??;
    tracing::info!(tag, "tag rule stored");
    Ok((StatusCode::OK, Json(json!({"tag": tag, "rule": rule}))).into_response())
}

async fn delete_rule(
    _: Operator,
    State(state): State<AppState>,
    Path(tag): Path<String>,
) -> Result<Response, ApiError> {
    let store = state.store.clone();
    let t = tag.clone();
    let existed = tokio::task::spawn_blocking(move || {
        let existed = profiles::delete_rule(store.as_ref(), &t)?;
        store.flush()?;
        Ok::<_, crate::store::StoreError>(existed)
    })
    .await
    .map_err(ApiError::internal)??;
    if !existed {
        return Err(ApiError::not_found(format!("tag rule {tag}")));
    }
    tracing::info!(tag, "tag rule deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}
