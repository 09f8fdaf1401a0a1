//! The campaign composer (`/campaigns/new`, `/campaigns/{id}/edit`): every field of a
//! campaign definition as a form, the reach per channel counted as it changes, each message
//! previewed as the customer sees it (a LINE chat bubble with its flex message, a phone's push
//! notification), and each 422 shown beside its field. The page's script (`composer.js`)
//! builds the definition from the form and saves it through `PUT /v1/admin/campaigns/{id}`; a
//! new campaign is saved as a draft, launched from its page.

use super::*;
use crate::campaigns::definition::Campaign;

#[derive(Template)]
#[template(path = "composer.html")]
struct ComposerPage {
    t: Words,
    nav: Nav,
    /// The campaign edited (none: a new one).
    editing: Option<String>,
    /// The definition the form starts from, as JSON for the script.
    definition: String,
    /// Id, name.
    stores: Vec<(String, String)>,
    /// Id, name, store name.
    zones: Vec<(String, String, String)>,
    tiers: Vec<String>,
    /// Dwell milestones: minutes, as words.
    milestones: Vec<(u32, String)>,
    /// The channel choices: 1, 2, 3 and their labels.
    choices: Vec<(u32, String)>,
    /// Day code, its name.
    days: Vec<(&'static str, String)>,
    /// Channel code, its name.
    channels: Vec<(&'static str, String)>,
    preview_help: String,
    /// The preview's values of `{name}`, `{coupon}` and `{link}`, as JSON for the script.
    samples: String,
}

/// A new campaign's starting point: entering any of the site's stores, every day from today
/// for a month, one message, a 10 % holdout.
fn new_definition(today: chrono::NaiveDate) -> serde_json::Value {
    let until = today + chrono::Days::new(30);
    serde_json::json!({
        "name": "",
        "draft": true,
        "trigger": {"kind": "enter"},
        "places": {"stores": [], "zones": []},
        "audience": {},
        "schedule": {
            "from": today, "to": until,
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
        },
        "caps": {"per_customer": 1, "period_days": 7},
        "budget": 1000,
        "offer_ttl_minutes": 60,
        "channels": ["line", "push"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": ""}}],
        "holdout_percent": 10,
        "attribution_days": 7,
    })
}

pub(super) async fn new_page(
    v: Viewer,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let today = super::campaigns::today(&state);
    let definition = new_definition(today);
    composer(&state, v, None, definition)
}

pub(super) async fn edit_page(
    v: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let current = crate::http::campaigns::current_campaign(&state, &id)?;
    let definition =
        serde_json::to_value::<&Campaign>(&current.campaign).map_err(ApiError::internal)?;
    composer(&state, v, Some(id), definition)
}

fn composer(
    state: &AppState,
    v: Viewer,
    editing: Option<String>,
    definition: serde_json::Value,
) -> Result<Response, ApiError> {
    if !v.campaigns() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "campaigns are composed by marketers and operators",
        ));
    }
    let t = v.t;
    let (stores, zones) = {
        let registry = state.registry.read().expect("registry lock");
        let site = registry.site();
        let name_of = |id: &str| {
            site.stores
                .iter()
                .find(|s| s.id.as_str() == id)
                .map_or_else(|| id.to_owned(), |s| s.name.clone())
        };
        let stores = site
            .stores
            .iter()
            .map(|s| (s.id.to_string(), s.name.clone()))
            .collect();
        let mut zones: Vec<(String, String, String)> = registry
            .zones()
            .iter()
            .map(|z| {
                let id = z.id().to_owned();
                let name = if z.name().is_empty() {
                    id.clone()
                } else {
                    z.name().to_owned()
                };
                (id, name, name_of(z.store().as_str()))
            })
            .collect();
        zones.sort_by(|a, b| (&a.2, &a.1).cmp(&(&b.2, &b.1)));
        (stores, zones)
    };
    let title = match &editing {
        Some(_) => t.f(
            "composer.edit_title",
            &[&definition["name"].as_str().unwrap_or_default()],
        ),
        None => t.s("composer.new_title"),
    };
    Ok(html(&ComposerPage {
        nav: Nav::new(state, &v, Section::Campaigns, title),
        editing,
        definition: serde_json::to_string(&definition)
            .unwrap_or_default()
            .replace('<', "\\u003c"),
        stores,
        zones,
        tiers: state
            .config
            .profiles
            .tier_names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        milestones: state
            .config
            .visits
            .dwell_milestones_min
            .iter()
            .map(|m| (*m, t.minutes(u64::from(*m) * 60)))
            .collect(),
        choices: (1..=3)
            .map(|i| (i, t.f("composer.channels.choice", &[&i])))
            .collect(),
        days: ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            .into_iter()
            .map(|d| (d, t.s(&format!("day.{d}"))))
            .collect(),
        channels: ["line", "push", "webhook"]
            .into_iter()
            .map(|c| (c, t.s(&format!("channel.{c}"))))
            .collect(),
        preview_help: t.f("composer.preview.help", &[&t.s("composer.sample_name")]),
        samples: serde_json::json!({
            "name": t.s("composer.sample_name"),
            "coupon": "A1B2C3",
            "link": "https://omo.example/r/sample",
        })
        .to_string()
        .replace('<', "\\u003c"),
        t,
    }))
}
