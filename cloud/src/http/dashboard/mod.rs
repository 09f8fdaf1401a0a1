//! The operator dashboard served at `GET /` (DESIGN.md, "HTTP"): server-rendered pages
//! (askama templates compiled into the binary, charts drawn as SVG here) behind a session
//! cookie got from the login form ([`session`]). Every figure on a page comes from the same
//! function the admin API answers with, and the page says which endpoint; the page's script
//! refreshes live figures from those endpoints and sends its forms' changes to them with the
//! session's CSRF token. No asset comes from anywhere but this binary.

pub mod charts;
pub mod session;

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
        .route("/gateways", get(gateways_page))
        .route("/gateways/:id", get(gateway_page))
        .route("/stores", get(stores_page))
        .route("/stores/:id", get(store_page))
        .route("/customers", get(customers_page))
        .route("/campaigns", get(campaigns_page))
        .route("/campaigns/:id", get(campaign_page))
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

/// One gateway as its page row shows it, read from the API's gateway document.
pub struct GatewayRow {
    pub id: String,
    pub store: String,
    pub status: String,
    pub status_class: &'static str,
    pub last_seen: String,
    pub adverts: String,
    pub outbox: String,
    pub dropped: String,
    pub config: String,
    pub ack: String,
    pub gaps: u64,
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl GatewayRow {
    /// From `GET /v1/admin/gateways/{id}`'s document.
    pub fn from_api(v: &Value) -> GatewayRow {
        let runtime = &v["runtime"];
        let status = &runtime["last_status"];
        let (label, class) = if v["enabled"] == Value::Bool(false) {
            ("disabled", "bad")
        } else if runtime.is_null() {
            ("never seen", "bad")
        } else if runtime["online"] == Value::Bool(true) {
            ("online", "good")
        } else {
            ("offline", "bad")
        };
        let in_force = status["config_version"].as_u64();
        let desired = v["desired_config_version"].as_u64();
        let config = match (in_force, desired) {
            (Some(a), Some(d)) if a != d => format!("v{a} (v{d} pushed)"),
            (Some(a), _) => format!("v{a}"),
            (None, Some(d)) => format!("? (v{d} pushed)"),
            (None, None) => "—".into(),
        };
        let ack = &v["last_config_ack"];
        let ack = match ack["version"].as_u64() {
            None => "—".into(),
            Some(n) if ack["ok"] == Value::Bool(true) => format!("v{n} applied"),
            Some(n) => format!("v{n} refused: {}", text(&ack["error"])),
        };
        GatewayRow {
            id: text(&v["id"]),
            store: text(&v["store"]),
            status: label.into(),
            status_class: class,
            last_seen: text(&runtime["last_seen"]),
            adverts: status["adverts_per_s"]
                .as_f64()
                .map_or("—".into(), |a| format!("{a:.1}")),
            outbox: text(&status["outbox_depth"]),
            dropped: text(&status["dropped"]),
            config,
            ack,
            gaps: v["epochs"]
                .as_array()
                .map_or(0, |e| e.iter().filter_map(|e| e["missing"].as_u64()).sum()),
        }
    }
}

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    nav: Nav,
    rows: Vec<GatewayRow>,
    next: Option<String>,
}

#[derive(Deserialize)]
struct After {
    after: Option<String>,
}

const GATEWAYS_PER_PAGE: usize = 100;

async fn gateways_page(
    s: Session,
    State(state): State<AppState>,
    Query(q): Query<After>,
) -> Result<Response, ApiError> {
    let mut ids: Vec<String> = state
        .registry
        .read()
        .expect("registry lock")
        .gateways()
        .map(|g| g.record.id.to_string())
        .filter(|id| q.after.as_ref().is_none_or(|a| id > a))
        .collect();
    ids.sort();
    let next = (ids.len() > GATEWAYS_PER_PAGE).then(|| ids[GATEWAYS_PER_PAGE - 1].clone());
    let mut rows = Vec::new();
    for id in ids.into_iter().take(GATEWAYS_PER_PAGE) {
        match crate::http::admin::gateway_document(&state, &id).await {
            Ok(v) => rows.push(GatewayRow::from_api(&v)),
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(html(&GatewaysPage {
        nav: Nav::new(&state, &s, "Gateways"),
        rows,
        next,
    }))
}

#[derive(Template)]
#[template(path = "gateway.html")]
struct GatewayPage {
    nav: Nav,
    g: GatewayRow,
    operator: bool,
    config_text: String,
}

async fn gateway_page(
    s: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let v = crate::http::admin::gateway_document(&state, &id).await?;
    let config_text = crate::http::admin::desired_config_text(&state, &id).unwrap_or_default();
    Ok(html(&GatewayPage {
        nav: Nav::new(&state, &s, "Gateways"),
        g: GatewayRow::from_api(&v),
        operator: s.role == Role::Operator,
        config_text,
    }))
}

/// A campaign as its list row and page header show it.
pub struct CampaignRow {
    pub id: String,
    pub name: String,
    pub paused: bool,
    pub trigger: String,
    pub variants: String,
    pub holdout: u32,
    pub version: u32,
    pub updated: String,
}

impl CampaignRow {
    fn new(v: &crate::campaigns::stored::Versioned) -> CampaignRow {
        let c = &v.campaign;
        let trigger = serde_json::to_value(&c.trigger).unwrap_or(Value::Null);
        let kind = trigger["kind"].as_str().unwrap_or("?").replace('_', " ");
        CampaignRow {
            id: c.id.clone(),
            name: c.name.clone(),
            paused: c.paused,
            trigger: kind,
            variants: c
                .variants
                .iter()
                .map(|v| v.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            holdout: c.holdout_percent,
            version: v.version,
            updated: v.updated.to_string(),
        }
    }
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct CampaignsPage {
    nav: Nav,
    rows: Vec<CampaignRow>,
}

async fn campaigns_page(s: Session, State(state): State<AppState>) -> Result<Response, ApiError> {
    let all = crate::campaigns::stored::all(state.store.as_ref())?;
    Ok(html(&CampaignsPage {
        nav: Nav::new(&state, &s, "Campaigns"),
        rows: all.iter().map(CampaignRow::new).collect(),
    }))
}

/// The funnel's steps as the page names them, and the report's counter each reads.
const STEPS: [(&str, &str); 6] = [
    ("triggered", "triggers"),
    ("eligible", "eligible"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("clicked", "clicked"),
    ("redeemed", "redeemed"),
];

pub struct GroupRow {
    pub name: String,
    pub customers: u64,
    /// The funnel's steps, then visited after.
    pub steps: Vec<u64>,
    pub rate: String,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignPage {
    nav: Nav,
    c: CampaignRow,
    operator: bool,
    attribution_days: u32,
    steps: Vec<&'static str>,
    groups: Vec<GroupRow>,
    lift_svg: String,
    /// Variant, lift, interval, treated n, holdout n, note.
    lifts: Vec<(String, String, String, u64, u64, &'static str)>,
}

async fn campaign_page(
    s: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (current, _) = crate::campaigns::stored::current(state.store.as_ref(), &id)?
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))?;
    let report = crate::http::campaigns::campaign_report(&state, &id).await?;
    let groups: Vec<GroupRow> = report
        .groups
        .iter()
        .map(|g| {
            let mut steps: Vec<u64> = STEPS
                .iter()
                .map(|(_, key)| g.funnel.get(*key).copied().unwrap_or(0))
                .collect();
            steps.push(g.returned);
            GroupRow {
                name: g.group.clone(),
                customers: g.customers,
                steps,
                rate: format!("{:.1} %", g.return_rate * 100.0),
            }
        })
        .collect();
    let size = |name: &str| {
        report
            .groups
            .iter()
            .find(|g| g.group == name)
            .map_or(0, |g| g.customers)
    };
    let holdout = size(crate::campaigns::report::HOLDOUT);
    let bars: Vec<charts::LiftBar> = report
        .lift
        .iter()
        .map(|l| charts::LiftBar {
            variant: l.variant.clone(),
            difference: l.difference,
            low: l.difference_ci95.low,
            high: l.difference_ci95.high,
            treated: size(&l.variant),
            holdout,
            too_small: l.too_small,
        })
        .collect();
    let lifts = bars
        .iter()
        .map(|b| {
            (
                b.variant.clone(),
                format!("{:+.1}", b.difference * 100.0),
                format!("{:+.1} to {:+.1}", b.low * 100.0, b.high * 100.0),
                b.treated,
                b.holdout,
                if b.too_small {
                    "too few customers to read"
                } else {
                    ""
                },
            )
        })
        .collect();
    let mut steps: Vec<&'static str> = STEPS.iter().map(|(name, _)| *name).collect();
    steps.push("visited after");
    Ok(html(&CampaignPage {
        nav: Nav::new(&state, &s, "Campaigns"),
        operator: s.role == Role::Operator,
        attribution_days: report.attribution_days,
        lift_svg: if bars.is_empty() {
            String::new()
        } else {
            charts::lift_chart(&bars)
        },
        c: CampaignRow::new(&current),
        steps,
        groups,
        lifts,
    }))
}

#[derive(Template)]
#[template(path = "stores.html")]
struct StoresPage {
    nav: Nav,
    /// Id, name, time zone, zones, gateways.
    rows: Vec<(String, String, String, usize, usize)>,
}

async fn stores_page(s: Session, State(state): State<AppState>) -> Result<Response, ApiError> {
    let rows = {
        let registry = state.registry.read().expect("registry lock");
        let zones = registry.zones();
        registry
            .site()
            .stores
            .iter()
            .map(|st| {
                (
                    st.id.to_string(),
                    st.name.clone(),
                    st.time_zone.clone(),
                    zones.iter().filter(|z| z.store() == &st.id).count(),
                    registry
                        .gateways()
                        .filter(|g| g.record.store == st.id)
                        .count(),
                )
            })
            .collect()
    };
    Ok(html(&StoresPage {
        nav: Nav::new(&state, &s, "Stores"),
        rows,
    }))
}

#[derive(Template)]
#[template(path = "store.html")]
struct StorePage {
    nav: Nav,
    name: String,
    a: activity::Activity,
    visitors_now: u64,
    plan_svg: String,
    bars_svg: String,
    week_total: u64,
}

async fn store_page(
    s: Session,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let a = store_activity(&state, &id).await?;
    let (name, anchor, shapes) = {
        let registry = state.registry.read().expect("registry lock");
        let site = registry.site();
        let st = site.stores.iter().find(|x| x.id.as_str() == id);
        let now_of = |zone: &str| {
            a.zones
                .iter()
                .find(|z| z.id == zone)
                .map_or(0, |z| z.visitors_now)
        };
        let shapes: Vec<(String, charts::PlanShape, u64)> = site
            .geofences
            .iter()
            .filter(|g| g.store.as_str() == id)
            .filter_map(|g| {
                let shape = match (&g.geometry, &g.circle) {
                    (Some(geom), _) => charts::PlanShape::Polygons(geom.polygons("geometry").ok()?),
                    (None, Some(c)) => charts::PlanShape::Circle {
                        lon: c.lon,
                        lat: c.lat,
                        radius_m: c.radius_m,
                    },
                    (None, None) => return None,
                };
                let label = if g.name.is_empty() {
                    g.id.to_string()
                } else {
                    g.name.clone()
                };
                Some((label, shape, now_of(g.id.as_str())))
            })
            .collect();
        (
            st.map_or_else(|| id.clone(), |x| x.name.clone()),
            st.map_or((0.0, 0.0), |x| (x.location.lon, x.location.lat)),
            shapes,
        )
    };
    let hours: Vec<(String, u64)> = a
        .visits_per_hour
        .iter()
        .map(|h| {
            (
                h.hour.get(5..13).unwrap_or(&h.hour).replace('T', " "),
                h.visits,
            )
        })
        .collect();
    // The store's visitors now: open visits of its store scope equal those of its zones at
    // most; the zones' sum would count a visitor in two zones twice, so take the largest.
    let visitors_now = a.zones.iter().map(|z| z.visitors_now).max().unwrap_or(0);
    Ok(html(&StorePage {
        nav: Nav::new(&state, &s, "Stores"),
        name,
        visitors_now,
        plan_svg: if shapes.is_empty() {
            String::new()
        } else {
            charts::plan(anchor, &shapes)
        },
        bars_svg: charts::bars(&hours, 24),
        week_total: a.visits_per_hour.iter().map(|h| h.visits).sum(),
        a,
    }))
}

/// One customer as the operator's page shows them.
pub struct CustomerView {
    pub id: String,
    pub member: String,
    pub line: String,
    pub created: String,
    pub consent: Vec<(&'static str, bool)>,
    /// Install, platform, push token present, registered, revoked.
    pub devices: Vec<(String, String, &'static str, String, String)>,
    /// Where, entered, exited, dwell, sources.
    pub visits: Vec<(String, String, String, String, String)>,
    /// Campaign, when.
    pub offers: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "customers.html")]
struct CustomersPage {
    nav: Nav,
    query: String,
    error: Option<String>,
    customer: Option<CustomerView>,
}

#[derive(Deserialize)]
struct Lookup {
    id: Option<String>,
}

/// Visits and offers shown on a customer's page at most.
const CUSTOMER_ROWS: usize = 100;

fn customer_view(state: &AppState, id: &str) -> Result<CustomerView, ApiError> {
    let c = crate::http::admin::customer_document(state, id)?;
    let consent = ["line", "push", "webhook", "location"]
        .into_iter()
        .map(|ch| (ch, c["consent"][ch] == Value::Bool(true)))
        .collect();
    let devices = c["installs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                text(&i["id"]),
                text(&i["platform"]),
                if i["push_token"].is_string() {
                    "yes"
                } else {
                    "no"
                },
                text(&i["created"]),
                text(&i["revoked"]),
            )
        })
        .collect();
    let visits = crate::visits::visits_of_customer(state.store.as_ref(), id, CUSTOMER_ROWS)?
        .into_iter()
        .map(|v| {
            let scope = serde_json::to_value(&v.scope).unwrap_or(Value::Null);
            (
                format!("{} {}", text(&scope["kind"]), text(&scope["id"])),
                v.entered.to_string(),
                v.exited.map_or("open".into(), |t| t.to_string()),
                v.dwell_s.map_or("—".into(), |d| format!("{} min", d / 60)),
                v.sources
                    .iter()
                    .filter_map(|s| serde_json::to_value(s).ok()?.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
        .collect();
    let offers = crate::http::admin::offers_of(state, id)?
        .iter()
        .take(CUSTOMER_ROWS)
        .map(|o| (text(&o["campaign"]), text(&o["at"])))
        .collect();
    Ok(CustomerView {
        id: text(&c["id"]),
        member: text(&c["member_id"]),
        line: if c["line_user"].is_string() {
            "linked".into()
        } else {
            "—".into()
        },
        created: text(&c["created"]),
        consent,
        devices,
        visits,
        offers,
    })
}

async fn customers_page(
    s: Session,
    State(state): State<AppState>,
    Query(q): Query<Lookup>,
) -> Result<Response, ApiError> {
    if s.role != Role::Operator {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "customers are shown to operators only",
        ));
    }
    let query = q.id.unwrap_or_default().trim().to_owned();
    let (customer, error) = if query.is_empty() {
        (None, None)
    } else {
        let st = state.clone();
        let id = query.clone();
        match tokio::task::spawn_blocking(move || customer_view(&st, &id)).await {
            Ok(Ok(c)) => (Some(c), None),
            Ok(Err(e)) if e.status == StatusCode::NOT_FOUND => {
                (None, Some(format!("No customer {query}.")))
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(ApiError::internal(e)),
        }
    };
    Ok(html(&CustomersPage {
        nav: Nav::new(&state, &s, "Customers"),
        query,
        error,
        customer,
    }))
}
