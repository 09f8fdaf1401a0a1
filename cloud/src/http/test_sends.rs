//! `POST /v1/admin/campaigns/{id}/test`: a campaign's messages sent now to the staff's own
//! phones (customers tagged `staff`) through the real channels, counted in no report; `GET
//! …/tests` lists the campaign's recent test sends with what became of each, without their
//! text or coupon ([`crate::campaigns::test_send`]).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::campaigns::current_campaign;
use super::{parse_json, ApiError, AppState, Marketer};
use crate::campaigns::test_send::{self, Asked, Refused, MAX_SENDS, NOT_A_TEST_DEVICE};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/campaigns/:id/test", post(send))
        .route("/v1/admin/campaigns/:id/tests", get(list))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestRequest {
    /// Customer ids, member numbers, LINE user ids or install ids.
    customers: Vec<String>,
    #[serde(default)]
    variant: Option<String>,
    #[serde(default)]
    store: Option<String>,
}

async fn send(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: TestRequest = parse_json(&body)?;
    let campaign = current_campaign(&state, &id)?.campaign;
    if req.customers.is_empty() || req.customers.len() > MAX_SENDS {
        return Err(ApiError::field(
            "customers",
            format!("name between 1 and {MAX_SENDS} staff test devices"),
        ));
    }
    let st = state.clone();
    let (commit, outcomes) = tokio::task::spawn_blocking(move || {
        let store = st.store.as_ref();
        // Each entry as staff know it, and the customer it names.
        let mut ids = Vec::new();
        let mut problems = Vec::new();
        for (i, entry) in req.customers.iter().enumerate() {
            // Unknown and not a test device get the same answer: a marketer learns nothing
            // about customers from it.
            let device = match crate::identity::find(store, entry.trim())? {
                Some(c) => crate::identity::customer(store, &c)?
                    .filter(test_send::is_test_device)
                    .map(|_| c),
                None => None,
            };
            match device {
                // Named twice (by id and by member number, say): sent once.
                Some(c) if ids.iter().any(|(_, d)| *d == c) => {}
                Some(c) => ids.push((entry.clone(), c)),
                None => problems.push((
                    format!("customers[{i}]"),
                    format!("{entry:?}: {NOT_A_TEST_DEVICE}"),
                )),
            }
        }
        if !problems.is_empty() {
            return Err(ApiError::fields(problems));
        }
        let customers: Vec<String> = ids.iter().map(|(_, c)| c.clone()).collect();
        let registry = st.registry.read().expect("registry lock").clone();
        let asked = Asked {
            customers: &customers,
            variant: req.variant.as_deref(),
            store: req.store.as_deref(),
        };
        let keys = test_send::Keys {
            secret: &st.secret,
            link_base: st.config.delivery.link_base.as_deref(),
        };
        let (commit, outcomes) = test_send::prepare(
            (store, &registry, &st.config.profiles),
            keys,
            &campaign,
            &asked,
            st.clock.now().timestamp_millis(),
        )
        .map_err(|e| match e {
            Refused::Field(f, m) => ApiError::field(f, m),
            Refused::Store(e) => e.into(),
        })?;
        // Each outcome with the entry it was asked as.
        let outcomes: Vec<Value> = outcomes
            .into_iter()
            .map(|o| {
                let to = ids
                    .iter()
                    .find(|(_, c)| *c == o.customer)
                    .map_or(o.customer.as_str(), |(e, _)| e.as_str());
                let mut v = json!(o);
                v["to"] = json!(to);
                v
            })
            .collect();
        Ok::<_, ApiError>((commit, outcomes))
    })
    .await
    .map_err(ApiError::internal)??;
    if !commit.is_empty() {
        super::commit_durably(&state, commit).await?;
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "items": outcomes }))).into_response())
}

async fn list(
    _: Marketer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    current_campaign(&state, &id)?;
    let now_ms = state.clock.now().timestamp_millis();
    // What became of each; not its text or coupon.
    let items: Vec<Value> = test_send::recent(state.store.as_ref(), &id, now_ms)?
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id, "customer": d.customer, "variant": d.variant, "channel": d.channel,
                "status": d.status, "reason": d.reason, "decided_ms": d.decided_ms,
                "done_ms": d.done_ms,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}
