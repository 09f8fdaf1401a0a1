//! The dashboard served at `GET /` (DESIGN.md, "HTTP"): server-rendered pages (askama
//! templates compiled into the binary, charts drawn as SVG here) behind a session cookie got
//! from the login form ([`session`]), in Japanese or English ([`words`]: every word from the
//! catalogs, times in the store's or the dashboard's time zone). Every figure on a page comes
//! from the same function the admin API answers with (a "for developers" fold names the
//! endpoint); the page's script refreshes live figures from those endpoints and sends its
//! forms' changes to them with the session's CSRF token. Errors and unknown pages are pages
//! in the same frame ([`errors`]). No asset comes from anywhere but this binary.

mod campaigns;
pub mod charts;
mod composer;
mod customers;
pub mod errors;
mod gateways;
mod overview;
pub mod session;
mod stores;
pub mod words;

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
use crate::http::{ApiError, AppState};
use overview::overview_page;
pub use overview::render_overview;
use session::Session;
use words::{Lang, Words, LANG_COOKIE};

/// The pages and assets.
pub fn routes(state: AppState) -> Router<AppState> {
    let pages = Router::new()
        .route("/", get(overview_page))
        .route("/gateways", get(gateways::gateways_page))
        .route("/gateways/:id", get(gateways::gateway_page))
        .route("/stores", get(stores::stores_page))
        .route("/stores/:id", get(stores::store_page))
        .route("/customers", get(customers::customers_page))
        .route("/campaigns", get(campaigns::campaigns_page))
        .route("/campaigns/new", get(composer::new_page))
        .route("/campaigns/:id", get(campaigns::campaign_page))
        .route("/campaigns/:id/edit", get(composer::edit_page))
        .route_layer(axum::middleware::from_fn_with_state(
            state,
            errors::in_layout,
        ));
    Router::new()
        .merge(pages)
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/lang/:code", get(choose_language))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/assets/composer.js", get(composer_js))
        .route("/assets/map.js", get(map_js))
        .route("/assets/leaflet.js", get(leaflet_js))
        .route("/assets/leaflet.css", get(leaflet_css))
        .route("/favicon.ico", get(errors::favicon))
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

/// A page's reader: their session (a request without a valid one is sent to the login page
/// instead), their words, and the page's path (for the language switch to come back to).
pub struct Viewer {
    pub session: Session,
    pub t: Words,
    pub path: String,
}

impl Viewer {
    fn operator(&self) -> bool {
        self.session.role == Role::Operator
    }

    /// Whether the reader may compose, launch, pause and end campaigns.
    fn campaigns(&self) -> bool {
        matches!(self.session.role, Role::Operator | Role::Marketer)
    }
}

/// The words of a request to this cloud: its reader's language, the dashboard's time zone.
pub fn words_of(state: &AppState, headers: &HeaderMap) -> Words {
    Words::new(Lang::of_request(headers), dashboard_zone(state))
}

/// `[dashboard] time_zone` (checked when the configuration was read).
pub fn dashboard_zone(state: &AppState) -> chrono_tz::Tz {
    crate::vocab::time_zone(&state.config.dashboard.time_zone).unwrap_or(chrono_tz::UTC)
}

#[axum::async_trait]
impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let session = session_of(state, &parts.headers).ok_or_else(to_login)?;
        Ok(Viewer {
            session,
            t: words_of(state, &parts.headers),
            path: parts
                .uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_owned()),
        })
    }
}

/// The pages in the navigation, by their catalog key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Stores,
    Gateways,
    Campaigns,
    Customers,
    None,
}

/// What every page's frame shows.
pub struct Nav {
    pub title: String,
    pub csrf: String,
    pub role: String,
    /// Path, label, whether it is this page's section.
    pub links: Vec<(&'static str, String, bool)>,
    /// The language switch: code, name, link (empty for the language in use).
    pub langs: Vec<(&'static str, &'static str, String)>,
    pub script_words: String,
}

impl Nav {
    fn new(state: &AppState, v: &Viewer, section: Section, title: String) -> Nav {
        let mut links = vec![
            ("/", "nav.overview", Section::Overview),
            ("/stores", "nav.stores", Section::Stores),
            ("/gateways", "nav.gateways", Section::Gateways),
            ("/campaigns", "nav.campaigns", Section::Campaigns),
        ];
        // Personal data is on this page only, and only for operators.
        if v.operator() {
            links.push(("/customers", "nav.customers", Section::Customers));
        }
        Nav::frame(
            &v.t,
            title,
            session::csrf(&state.secret, &v.session),
            v.t.s(&format!("role.{}", session::role_name(v.session.role))),
            links
                .into_iter()
                .map(|(href, key, s)| (href, v.t.s(key), s == section))
                .collect(),
            &v.path,
        )
    }

    fn frame(
        t: &Words,
        title: String,
        csrf: String,
        role: String,
        links: Vec<(&'static str, String, bool)>,
        back: &str,
    ) -> Nav {
        let back = form_encode(back);
        Nav {
            title,
            csrf,
            role,
            links,
            langs: Lang::ALL
                .into_iter()
                .map(|l| {
                    let href = if l == t.lang {
                        String::new()
                    } else {
                        format!("/lang/{}?back={back}", l.code())
                    };
                    (l.code(), l.own_name(), href)
                })
                .collect(),
            script_words: t.script_words(),
        }
    }
}

/// `s` percent-encoded for a query value.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
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

#[derive(Deserialize)]
struct Back {
    back: Option<String>,
}

/// `GET /lang/{code}?back=PATH`: remembers the reader's language for a year and goes back to
/// the page (a path of this site only).
async fn choose_language(Path(code): Path<String>, Query(q): Query<Back>) -> Response {
    let back = q
        .back
        // A path of this site only: no scheme, no host, nothing a browser would drop or bend
        // (`/%09/host` decodes to a tab a browser skips, leaving `//host`).
        .filter(|b| {
            b.starts_with('/')
                && !b.starts_with("//")
                && b.bytes().all(|c| c.is_ascii_graphic() && c != b'\\')
        })
        .unwrap_or_else(|| "/".into());
    let Some(lang) = Lang::from_code(&code) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("language {code:?}: en or ja"),
        )
        .into_response();
    };
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!(
                    "{LANG_COOKIE}={}; Path=/; SameSite=Lax; Max-Age=31536000",
                    lang.code()
                ),
            ),
            (header::LOCATION, back),
        ],
    )
        .into_response()
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    t: Words,
    nav: Nav,
    error: bool,
    /// Its style sheet, inline: the login page loads no asset (assets need a session); the
    /// content security policy allows exactly this text by its hash.
    style: &'static str,
}

/// The login page's style sheet.
pub(crate) const LOGIN_CSS: &str = include_str!("../../../assets/login.css");

fn login_form(t: Words, error: bool) -> Response {
    let nav = Nav::frame(
        &t,
        t.s("login.title"),
        String::new(),
        String::new(),
        Vec::new(),
        "/login",
    );
    let mut r = html(&LoginPage {
        t,
        nav,
        error,
        style: LOGIN_CSS,
    });
    if error {
        *r.status_mut() = StatusCode::UNAUTHORIZED;
    }
    r
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    login_form(words_of(&state, &headers), false)
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
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
            login_form(words_of(&state, &headers), true)
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(v: Viewer, State(state): State<AppState>, Form(f): Form<CsrfForm>) -> Response {
    if !session::csrf_ok(&state.secret, &v.session, &f.csrf) {
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

async fn composer_js(State(state): State<AppState>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/composer.js"),
    )
}

async fn map_js(State(state): State<AppState>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/map.js"),
    )
}

/// Leaflet, vendored (`cloud/assets/vendor/leaflet/README.md`).
async fn leaflet_js(State(state): State<AppState>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        "text/javascript; charset=utf-8",
        include_str!("../../../assets/vendor/leaflet/leaflet.js"),
    )
}

async fn leaflet_css(State(state): State<AppState>, headers: HeaderMap) -> Response {
    asset(
        &state,
        &headers,
        "text/css; charset=utf-8",
        include_str!("../../../assets/vendor/leaflet/leaflet.css"),
    )
}

/// A JSON value as a page shows it (a dash for nothing).
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON timestamp as a page shows it, in the page's time zone.
fn when(t: &Words, v: &Value) -> String {
    v.as_str()
        .and_then(|s| s.parse::<omo_device_config::Timestamp>().ok())
        .map_or_else(|| text(v), |ts| t.time(&ts))
}
