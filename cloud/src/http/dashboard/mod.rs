//! The operator dashboard served at `GET /` (DESIGN.md, "HTTP"): server-rendered pages
//! (askama templates compiled into the binary, charts drawn as SVG here) behind a session
//! cookie got from the login form ([`session`]). Every figure on a page comes from the same
//! function the admin API answers with, and the page says which endpoint; the page's script
//! refreshes live figures from those endpoints and sends its forms' changes to them with the
//! session's CSRF token. No asset comes from anywhere but this binary.

mod campaigns;
pub mod charts;
mod customers;
mod gateways;
pub mod session;
mod stores;

use askama::Template;
use axum::extract::{Form, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Role;
use crate::http::documents::{overview_now, store_activity};
use crate::http::{ApiError, AppState};
use crate::reports::{activity, overview};
use session::Session;

/// The pages and assets.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(overview_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/gateways", get(gateways::gateways_page))
        .route("/gateways/:id", get(gateways::gateway_page))
        .route("/stores", get(stores::stores_page))
        .route("/stores/:id", get(stores::store_page))
        .route("/customers", get(customers::customers_page))
        .route("/campaigns", get(campaigns::campaigns_page))
        .route("/campaigns/:id", get(campaigns::campaign_page))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
}

/// Unsafe admin API requests authenticated by the session cookie (no bearer token) must carry
/// the session's CSRF token in `X-CSRF-Token`: a layer over the whole router.
pub async fn csrf_guard(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let headers = request.headers();
    if !safe
        && request.uri().path().starts_with("/v1/admin/")
        && crate::http::bearer(headers).is_none()
    {
        if let Some(s) = session_of(&state, headers) {
            let given = headers
                .get(session::CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !session::csrf_ok(&state.secret, &s, given) {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "csrf",
                    "X-CSRF-Token: missing or not this session's",
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// The request's valid session, if any.
pub fn session_of(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let value = session::cookie_value(headers)?;
    session::verify(
        &state.secret,
        &state.config.admin.tokens,
        value,
        session::now_s(),
    )
}

/// Where a page sends a request without a session.
fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

/// A page's signed-in user: in a page handler's signature, a request without a valid session
/// is sent to the login page instead.
#[axum::async_trait]
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        session_of(state, &parts.headers).ok_or_else(to_login)
    }
}

/// What every page's frame shows.
pub struct Nav {
    pub title: &'static str,
    pub csrf: String,
    pub role: &'static str,
    /// Path, label, whether it is this page.
    pub links: Vec<(&'static str, &'static str, bool)>,
}

impl Nav {
    fn new(state: &AppState, s: &Session, title: &'static str) -> Nav {
        let mut links = vec![
            ("/", "Overview"),
            ("/stores", "Stores"),
            ("/gateways", "Gateways"),
            ("/campaigns", "Campaigns"),
        ];
        // Personal data is on this page only, and only for operators.
        if s.role == Role::Operator {
            links.push(("/customers", "Customers"));
        }
        Nav {
            links: links
                .into_iter()
                .map(|(href, label)| (href, label, label == title))
                .collect(),
            title,
            csrf: session::csrf(&state.secret, s),
            role: session::role_name(s.role),
        }
    }
}

fn html(t: &impl Template) -> Response {
    match t.render() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => ApiError::internal(format!("rendering a page: {e}")).into_response(),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
}

async fn login_page() -> Response {
    html(&LoginPage { error: None })
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(State(state): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    match session::token_entry(&state.config.admin.tokens, f.token.trim()) {
        Some(t) => {
            let hours = state.config.dashboard.session_hours;
            let value = session::issue(&state.secret, t, session::now_s(), hours);
            tracing::info!(holder = %t.name, "dashboard login");
            (
                StatusCode::SEE_OTHER,
                [
                    (header::SET_COOKIE, session::set_cookie(&value, hours)),
                    (header::LOCATION, "/".to_owned()),
                ],
            )
                .into_response()
        }
        None => {
            tracing::warn!("dashboard login refused: unknown token");
            let mut r = html(&LoginPage {
                error: Some("That token is not an admin token of this cloud.".into()),
            });
            *r.status_mut() = StatusCode::UNAUTHORIZED;
            r
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(s: Session, State(state): State<AppState>, Form(f): Form<CsrfForm>) -> Response {
    if !session::csrf_ok(&state.secret, &s, &f.csrf) {
        return ApiError::new(StatusCode::FORBIDDEN, "csrf", "csrf: not this session's")
            .into_response();
    }
    (
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::clear_cookie()),
            (header::LOCATION, "/login".to_owned()),
        ],
    )
        .into_response()
}

fn asset(
    state: &AppState,
    headers: &HeaderMap,
    kind: &'static str,
    body: &'static str,
) -> Response {
    if session_of(state, headers).is_none() {
        return ApiError::unauthorized("log in first").into_response();
    }
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

async fn css(State(state): State<AppState>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        "text/css; charset=utf-8",
        include_str!("../../../assets/app.css"),
    )
}

async fn js(State(state): State<AppState>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/app.js"),
    )
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    nav: Nav,
    o: overview::Overview,
    at: String,
    events: Vec<(&'static str, String)>,
    delivered: Vec<(&'static str, u64)>,
    alerts: Vec<(String, String, String, String)>,
}

async fn overview_page(s: Session, State(state): State<AppState>) -> Result<Response, ApiError> {
    let o = overview_now(&state).await?;
    Ok(html(&overview_template(
        Nav::new(&state, &s, "Overview"),
        o,
    )))
}

/// The overview page's HTML for `o` (the benchmark renders it too).
pub fn render_overview(
    o: overview::Overview,
    csrf: String,
    role: Role,
) -> Result<String, askama::Error> {
    let nav = Nav {
        title: "Overview",
        csrf,
        role: session::role_name(role),
        links: vec![("/", "Overview", true)],
    };
    overview_template(nav, o).render()
}

fn overview_template(nav: Nav, o: overview::Overview) -> OverviewPage {
    OverviewPage {
        nav,
        at: o.at.map(|t| t.to_string()).unwrap_or_default(),
        events: o
            .events_per_s
            .iter()
            .map(|(k, v)| (*k, format!("{v:.1}")))
            .collect(),
        delivered: o
            .today
            .channels
            .iter()
            .map(|(c, outcomes)| (*c, outcomes.get("delivered").copied().unwrap_or(0)))
            .collect(),
        alerts: o
            .alerts
            .iter()
            .map(|a| {
                (
                    a.at.map(|t| t.to_string()).unwrap_or_default(),
                    serde_json::to_value(a.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(|k| k.replace('_', " ")))
                        .unwrap_or_default(),
                    a.subject.clone(),
                    a.message.clone(),
                )
            })
            .collect(),
        o,
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
