//! The gateways' pages: the list (with each one's health) and one gateway's detail.

use super::*;

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
pub(super) struct After {
    after: Option<String>,
}

const GATEWAYS_PER_PAGE: usize = 100;

pub(super) async fn gateways_page(
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

pub(super) async fn gateway_page(
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
