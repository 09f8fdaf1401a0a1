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
    pub ack_class: &'static str,
    pub gaps: u64,
    /// The config version in force, if the gateway said.
    pub in_force: Option<u64>,
}

impl GatewayRow {
    /// From `GET /v1/admin/gateways/{id}`'s document; `stores` names the stores.
    pub fn from_api(t: &Words, v: &Value, store_name: &dyn Fn(&str) -> String) -> GatewayRow {
        let runtime = &v["runtime"];
        let status = &runtime["last_status"];
        let (label, class) = if v["enabled"] == Value::Bool(false) {
            ("gateway.disabled", "bad")
        } else if runtime.is_null() {
            ("gateway.never_seen", "bad")
        } else if runtime["online"] == Value::Bool(true) {
            ("gateway.online", "good")
        } else {
            ("gateway.offline", "bad")
        };
        let in_force = status["config_version"].as_u64();
        let desired = v["desired_config_version"].as_u64();
        let config = match (in_force, desired) {
            (Some(a), Some(d)) if a != d => t.f("gateway.config.pending", &[&a, &d]),
            (Some(0), _) | (None, None) => t.s("gateway.config.defaults"),
            (Some(a), _) => t.f("gateway.config.version", &[&a]),
            (None, Some(d)) => t.f("gateway.config.pushed", &[&d]),
        };
        let ack = &v["last_config_ack"];
        let (ack, ack_class) = match ack["version"].as_u64() {
            None => ("—".into(), ""),
            Some(n) if ack["ok"] == Value::Bool(true) => {
                (t.f("gateway.ack.applied", &[&n]), "good")
            }
            Some(n) => (
                t.f("gateway.ack.refused", &[&n, &text(&ack["error"])]),
                "bad",
            ),
        };
        GatewayRow {
            id: text(&v["id"]),
            store: store_name(v["store"].as_str().unwrap_or_default()),
            status: t.s(label),
            status_class: class,
            last_seen: when(t, &runtime["last_seen"]),
            adverts: status["adverts_per_s"]
                .as_f64()
                .map_or("—".into(), |a| format!("{a:.1}")),
            outbox: text(&status["outbox_depth"]),
            dropped: text(&status["dropped"]),
            config,
            ack,
            ack_class,
            gaps: v["epochs"]
                .as_array()
                .map_or(0, |e| e.iter().filter_map(|e| e["missing"].as_u64()).sum()),
            in_force,
        }
    }
}

/// A function naming the site's stores by id (the id when there is no such store).
fn store_names(state: &AppState) -> impl Fn(&str) -> String {
    let names: std::collections::BTreeMap<String, String> = state
        .registry
        .read()
        .expect("registry lock")
        .site()
        .stores
        .iter()
        .map(|s| (s.id.to_string(), s.name.clone()))
        .collect();
    move |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_owned())
}

#[derive(Template)]
#[template(path = "gateways.html")]
struct GatewaysPage {
    t: Words,
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
    v: Viewer,
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
    let names = store_names(&state);
    for id in ids.into_iter().take(GATEWAYS_PER_PAGE) {
        match crate::http::admin::gateway_document(&state, &id).await {
            Ok(doc) => rows.push(GatewayRow::from_api(&v.t, &doc, &names)),
            Err(e) if e.status == StatusCode::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
    }
    Ok(html(&GatewaysPage {
        nav: Nav::new(&state, &v, Section::Gateways, v.t.s("nav.gateways")),
        rows,
        next,
        t: v.t,
    }))
}

#[derive(Template)]
#[template(path = "gateway.html")]
struct GatewayPage {
    t: Words,
    nav: Nav,
    g: GatewayRow,
    operator: bool,
    config_text: String,
}

/// The config box's text: the config last pushed (else the gateway's defaults, which it runs
/// on until one is), with the next version number, ready to edit and push.
fn next_config(pushed: Option<String>, in_force: Option<u64>) -> String {
    let mut doc: Value = pushed
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_else(|| {
            serde_json::to_value(
                serde_json::from_str::<omo_device_config::payload::RemoteConfig>(
                    r#"{"version": 0}"#,
                )
                .ok(),
            )
            .unwrap_or(Value::Null)
        });
    if let Some(o) = doc.as_object_mut() {
        let at = o.get("version").and_then(Value::as_u64).unwrap_or(0);
        o.insert("version".into(), (at.max(in_force.unwrap_or(0)) + 1).into());
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

pub(super) async fn gateway_page(
    v: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let doc = crate::http::admin::gateway_document(&state, &id).await?;
    let g = GatewayRow::from_api(&v.t, &doc, &store_names(&state));
    let config_text = next_config(
        crate::http::admin::desired_config_text(&state, &id),
        g.in_force,
    );
    Ok(html(&GatewayPage {
        nav: Nav::new(
            &state,
            &v,
            Section::Gateways,
            v.t.f("gateway.title", &[&g.id]),
        ),
        operator: v.operator(),
        config_text,
        g,
        t: v.t,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_box_holds_the_next_version_of_the_config_in_force() {
        let fresh: Value = serde_json::from_str(&next_config(None, None)).unwrap();
        assert_eq!(fresh["version"], 1);
        assert!(
            fresh["presence"].is_object(),
            "the defaults are spelled out: {fresh}"
        );
        let pushed = r#"{"version": 4, "status": {"heartbeat_s": 30}}"#;
        let next: Value = serde_json::from_str(&next_config(Some(pushed.into()), Some(4))).unwrap();
        assert_eq!(next["version"], 5);
        assert_eq!(next["status"]["heartbeat_s"], 30);
        let ahead: Value = serde_json::from_str(&next_config(None, Some(7))).unwrap();
        assert_eq!(ahead["version"], 8);
    }
}
