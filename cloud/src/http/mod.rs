//! The cloud's HTTP API (axum): app reports, the LINE webhook, the admin API, health and
//! metrics. Errors are `{"error":{"code":…,"message":…}}` with a 4xx/5xx status, and a 4xx
//! names the field at fault. Every write of an observation goes through ingest, so it is in
//! the event log and flushed before the 2xx.

pub mod admin;
pub mod app;
pub mod campaigns;
pub mod dashboard;
pub mod documents;
pub mod line;
pub mod line_link;
pub mod links;
pub mod profiles;
pub mod purchases;
pub mod qr;
pub mod redemptions;
pub mod reports;
pub mod security;
pub mod test_sends;

use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use omo_device_config::Clock;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use crate::broker::Outbound;
use crate::config::{CloudConfig, Role};
use crate::identity::eid_resolver::EidResolver;
use crate::ingest::gateways::GatewayStates;
use crate::ingest::record::Record;
use crate::ingest::{AppendRequest, Appended};
use crate::registry::Registry;
use crate::store::barrier::BarrierStore;
use crate::store::{Store, StoreError};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<BarrierStore>,
    pub registry: Arc<RwLock<Registry>>,
    pub gateways: Arc<Mutex<GatewayStates>>,
    pub clock: Clock,
    pub ingest: mpsc::Sender<AppendRequest>,
    pub outbound: Arc<Outbound>,
    pub config: Arc<CloudConfig>,
    pub metrics: Option<PrometheusHandle>,
    pub eids: Arc<Mutex<EidResolver>>,
    /// Wakes this instance's visit stage when it was asked an erasure
    /// ([`crate::visits::request_erasure`]).
    pub erasures: Arc<tokio::sync::Notify>,
    /// Registry changes one at a time (each validates the whole site).
    pub registry_writes: Arc<tokio::sync::Mutex<()>>,
    /// The server secret (signs dashboard sessions and their CSRF tokens).
    pub secret: [u8; 32],
    /// Live figures and alerts for the overview.
    pub live: Arc<crate::live::Live>,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// A 422's problems by field (path, what is wrong), for a form to show beside each field;
    /// `message` says them all too.
    pub fields: Vec<(String, String)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    /// 422: a field's value is wrong.
    pub fn field(field: &str, message: impl std::fmt::Display) -> ApiError {
        ApiError::fields(vec![(field.to_owned(), message.to_string())])
    }

    /// 422: these fields' values are wrong (path, what is wrong).
    pub fn fields(problems: Vec<(String, String)>) -> ApiError {
        let message = problems
            .iter()
            .map(|(f, m)| {
                if f.is_empty() {
                    m.clone()
                } else {
                    format!("{f}: {m}")
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        ApiError {
            fields: problems,
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
        }
    }

    pub fn not_found(what: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the service log",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::Conflict { .. } => {
                ApiError::conflict("the record changed while this request ran; retry")
            }
            StoreError::Unavailable(why) => {
                tracing::warn!(error = %why, "request refused: the store is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the service's storage is unavailable for a moment; retry shortly",
                )
            }
            other => ApiError::internal(other),
        }
    }
}

/// An identity operation's refusal as an answer: the field at fault, a taken id (409), an
/// unknown customer (404), or the store's error.
pub(crate) fn identity_error(e: crate::identity::IdentityError) -> ApiError {
    use crate::identity::IdentityError;
    match e {
        IdentityError::Invalid { field, message } => ApiError::field(&field, message),
        IdentityError::Taken { .. } => ApiError::conflict(e.to_string()),
        IdentityError::NotFound(id) => ApiError::not_found(format!("customer {id}")),
        IdentityError::Store(s) => s.into(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if !self.fields.is_empty() {
            body["error"]["fields"] = self
                .fields
                .iter()
                .map(|(field, message)| json!({"field": field, "message": message}))
                .collect();
        }
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body, naming the field at fault: 400 when it is not JSON, 422 when a field
/// is wrong.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed",
                format!("body is not JSON: {inner}"),
            )
        } else {
            let path = if path == "." { String::new() } else { path };
            ApiError::field(&path, inner)
        }
    })
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Checks an admin bearer token, or else a dashboard session cookie (whose unsafe requests
/// [`crate::http::dashboard::csrf_guard`] checks for the CSRF token): 401 without a valid one, 403
/// when its role may not `need`.
pub fn admin_auth(state: &AppState, headers: &HeaderMap, need: Role) -> Result<Role, ApiError> {
    let role = match bearer(headers) {
        // Every configured token is compared, so the time taken does not say which one matched.
        Some(token) => {
            crate::http::dashboard::session::token_entry(&state.config.admin.tokens, token)
                .map(|t| t.role)
                .ok_or_else(|| ApiError::unauthorized("unknown admin token"))?
        }
        None if crate::http::dashboard::session::cookie_value(headers).is_some() => {
            crate::http::dashboard::session_of(state, headers)
                .map(|s| s.role)
                .ok_or_else(|| {
                    ApiError::unauthorized(
                        "the dashboard session is over or not valid; log in again",
                    )
                })?
        }
        None => return Err(ApiError::unauthorized("an admin bearer token is required")),
    };
    let allowed = match need {
        Role::Operator => role == Role::Operator,
        Role::Marketer => matches!(role, Role::Operator | Role::Marketer),
        Role::Analyst => true,
    };
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            match need {
                Role::Marketer => "this needs a marketer's or an operator's token",
                _ => "this needs an operator token",
            },
        ));
    }
    Ok(role)
}

/// Who may change campaigns: an operator or a marketer (`_: Marketer` in a handler's
/// signature; 401 without a valid token or session, 403 for an analyst's).
pub struct Marketer;

#[axum::async_trait]
impl FromRequestParts<AppState> for Marketer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        admin_auth(state, &parts.headers, Role::Marketer).map(|_| Marketer)
    }
}

/// Who may call an operator's endpoint: in a handler's signature (`_: Operator`), it answers
/// 401 without a valid admin token or dashboard session and 403 for an analyst's.
pub struct Operator;

/// Who may call a read-only endpoint: any valid admin token or dashboard session (an analyst's
/// or an operator's); holds the caller's role.
pub struct Analyst(pub Role);

#[axum::async_trait]
impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        admin_auth(state, &parts.headers, Role::Operator).map(|_| Operator)
    }
}

#[axum::async_trait]
impl FromRequestParts<AppState> for Analyst {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        admin_auth(state, &parts.headers, Role::Analyst).map(Analyst)
    }
}

/// Appends records through ingest; resolves once they are durable.
pub async fn append(
    state: &AppState,
    records: Vec<Record>,
    dedup: Option<(Vec<u8>, Vec<u8>)>,
) -> Result<Appended, ApiError> {
    let (reply, answer) = oneshot::channel();
    let request = AppendRequest {
        records,
        dedup,
        reply,
    };
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "ingest is not running",
        )
    };
    state
        .ingest
        .send(request)
        .await
        .map_err(|_| unavailable())?;
    match answer.await.map_err(|_| unavailable())? {
        Ok(a) => Ok(a),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// Commits and flushes off the executor.
pub(crate) async fn commit_durably(
    state: &AppState,
    commit: crate::store::Commit,
) -> Result<(), ApiError> {
    let store = state.store.clone();
    tokio::task::spawn_blocking(move || {
        store.commit(commit)?;
        store.flush()
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(())
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let limit = state.config.http.max_body_bytes;
    // ASCII throughout: the tile server's host is reduced to host characters.
    let csp = axum::http::HeaderValue::from_str(&security::content_security_policy(
        state.config.dashboard.tile_url.as_deref(),
    ))
    .expect("a policy is ASCII");
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .merge(app::routes())
        .merge(line::routes())
        .merge(admin::routes())
        .merge(campaigns::routes())
        .merge(test_sends::routes())
        .merge(redemptions::routes())
        .merge(purchases::routes())
        .merge(links::routes())
        .merge(profiles::routes())
        .merge(reports::routes())
        .merge(qr::routes())
        .merge(line_link::routes())
        .merge(crate::http::dashboard::routes(state.clone()))
        .fallback(crate::http::dashboard::errors::fallback)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::http::dashboard::csrf_guard,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| {
            security::headers(csp.clone(), request, next)
        }))
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.store.get(crate::store::Space::Offsets, b"healthz") {
        Ok(_) if !state.ingest.is_closed() => Json(json!({"status": "ok"})).into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable"})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .as_ref()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
