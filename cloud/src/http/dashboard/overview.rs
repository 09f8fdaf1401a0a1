//! The overview: how the day goes in every store (today so far beside the same weekday last
//! week, the best and the worst store), what is live now (shoppers in stores, offers
//! delivered and failed today), and alerts in words.

use omo_device_config::Timestamp;

use super::*;
use crate::http::documents::{overview_now, stores_today};
use crate::live::{Alert, AlertKind};
use crate::reports::days::{self, DayFigures};
use crate::reports::overview::Overview;

/// A store's day as the overview and the store list show it.
pub struct StoreDayRow {
    pub id: String,
    pub name: String,
    pub visits: String,
    pub last_week: String,
    /// The change against last week, signed, and its class (`good`, `bad` or empty).
    pub change: String,
    pub change_class: &'static str,
    pub visitors: String,
    pub dwell: String,
    pub offers: String,
    pub redeemed: String,
    pub revenue: String,
}

impl StoreDayRow {
    pub fn new(t: &Words, d: &days::StoreDay) -> StoreDayRow {
        let DayFigures {
            visits,
            visitors,
            median_dwell_min,
            offers_delivered,
            redeemed,
            revenue: money,
        } = &d.today;
        let change = *visits as i64 - d.last_week.visits as i64;
        StoreDayRow {
            id: d.store.clone(),
            name: d.name.clone(),
            visits: t.int(*visits),
            last_week: t.int(d.last_week.visits),
            change: if change > 0 {
                format!("+{}", t.signed(change))
            } else {
                t.signed(change)
            },
            change_class: match change {
                c if c > 0 => "good",
                c if c < 0 => "bad",
                _ => "",
            },
            visitors: t.int(*visitors),
            dwell: median_dwell_min
                .map_or_else(|| "—".into(), |m| t.minutes((m * 60.0).round() as u64)),
            offers: t.int(*offers_delivered),
            redeemed: t.int(*redeemed),
            revenue: t.amounts(money.iter().map(|(c, v)| (c, *v))),
        }
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    t: Words,
    nav: Nav,
    o: Overview,
    as_of: String,
    stores: Vec<StoreDayRow>,
    /// The best and the worst store, as sentences.
    ranking: Vec<String>,
    /// Gateways not heard from now, as sentences.
    silent: Vec<String>,
    /// When, what (as a sentence).
    alerts: Vec<(String, String)>,
    /// Source, events per second.
    events: Vec<(String, String)>,
    delivered: Vec<(&'static str, String, u64)>,
}

pub(super) async fn overview_page(
    v: Viewer,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let o = overview_now(&state).await?;
    let today = stores_today(&state).await?;
    let now = Timestamp::from_millis(state.clock.now().timestamp_millis());
    let silent = silent_gateways(&state, &v.t, now);
    let nav = Nav::new(&state, &v, Section::Overview, v.t.s("nav.overview"));
    Ok(html(&overview_template(v.t, nav, o, &today, silent)))
}

/// Gateways not online now, with their store and how long since they were heard.
fn silent_gateways(state: &AppState, t: &Words, now: Option<Timestamp>) -> Vec<String> {
    let registry = state.registry.read().expect("registry lock");
    let states = state.gateways.lock().expect("gateway states lock");
    let stores = &registry.site().stores;
    let mut out = Vec::new();
    for g in registry.gateways() {
        if !g.record.enabled {
            continue;
        }
        let run = states.get(&g.record.id);
        if run.is_some_and(|r| r.online) {
            continue;
        }
        let store = stores
            .iter()
            .find(|s| s.id == g.record.store)
            .map_or_else(|| g.record.store.to_string(), |s| s.name.clone());
        let id = g.record.id.to_string();
        out.push(match (run.and_then(|r| r.last_seen), now) {
            (Some(seen), Some(now)) => {
                let minutes = (now.millis() - seen.millis()).max(0) as u64 / 60_000;
                t.f("alert.silent", &[&store, &id, &t.minutes(minutes * 60)])
            }
            _ => t.f("alert.never_heard", &[&store, &id]),
        });
    }
    out
}

/// An alert as a sentence for the people who run the stores.
fn alert_sentence(t: &Words, a: &Alert) -> String {
    let n = a.count.unwrap_or(0);
    match a.kind {
        AlertKind::GatewayOffline => t.f("alert.gateway_offline", &[&a.subject]),
        AlertKind::OutboxDropping => t.f("alert.outbox_dropping", &[&a.subject, &t.int(n)]),
        AlertKind::Line429Storm => t.f("alert.line_429_storm", &[&t.int(n)]),
        AlertKind::PushTokensInvalidated => t.n("alert.push_tokens", n),
    }
}

/// The overview page's HTML for `o` (the benchmark renders it too).
pub fn render_overview(o: Overview, csrf: String, role: Role) -> Result<String, askama::Error> {
    let t = Words::new(Lang::En, chrono_tz::UTC);
    let nav = Nav::frame(
        &t,
        t.s("nav.overview"),
        csrf,
        t.s(&format!("role.{}", session::role_name(role))),
        vec![("/", t.s("nav.overview"), true)],
        "/",
    );
    let today = days::Today {
        stores: Vec::new(),
        best: None,
        worst: None,
    };
    overview_template(t, nav, o, &today, Vec::new()).render()
}

fn overview_template(
    t: Words,
    nav: Nav,
    o: Overview,
    today: &days::Today,
    silent: Vec<String>,
) -> OverviewPage {
    let name_of = |id: &Option<String>| {
        id.as_ref().and_then(|id| {
            today
                .stores
                .iter()
                .find(|s| &s.store == id)
                .map(|s| (s.name.clone(), s))
        })
    };
    let mut ranking = Vec::new();
    if let Some((name, s)) = name_of(&today.best) {
        ranking.push(t.f(
            "overview.best",
            &[&name, &t.int(s.today.visits), &t.int(s.last_week.visits)],
        ));
    }
    if let Some((name, s)) = name_of(&today.worst) {
        ranking.push(t.f(
            "overview.worst",
            &[&name, &t.int(s.today.visits), &t.int(s.last_week.visits)],
        ));
    }
    OverviewPage {
        as_of: t.f(
            "overview.as_of",
            &[&o.at.as_ref().map_or_else(String::new, |a| t.clock(a))],
        ),
        events: o
            .events_per_s
            .iter()
            .map(|(k, v)| (t.s(&format!("source.{k}")), format!("{v:.1}")))
            .collect(),
        delivered: o
            .today
            .channels
            .iter()
            .map(|(c, outcomes)| {
                (
                    *c,
                    t.s(&format!("channel.{c}")),
                    outcomes.get("delivered").copied().unwrap_or(0),
                )
            })
            .collect(),
        alerts: o
            .alerts
            .iter()
            .map(|a| (t.time_or_dash(a.at.as_ref()), alert_sentence(&t, a)))
            .collect(),
        stores: today
            .stores
            .iter()
            .map(|d| StoreDayRow::new(&t, d))
            .collect(),
        ranking,
        silent,
        o,
        nav,
        t,
    }
}
