//! The campaigns' pages: the list and one campaign's funnel, groups and lift.

use super::*;

use crate::campaigns::definition::{Campaign, Lifecycle, Trigger};
use crate::campaigns::stored::{self, Versioned};

/// A campaign as its list row and page header show it.
pub struct CampaignRow {
    pub id: String,
    pub name: String,
    pub lifecycle: Lifecycle,
    /// The lifecycle in words, and its class.
    pub state: String,
    pub state_class: &'static str,
    pub trigger: String,
    pub variants: String,
    pub holdout: String,
    pub attribution: String,
    pub version: u32,
    pub updated: String,
}

/// A trigger in words.
fn trigger_words(t: &Words, trigger: &Trigger) -> String {
    match trigger {
        Trigger::Enter => t.s("trigger.enter"),
        Trigger::Dwell { minutes } => t.f("trigger.dwell", &[&t.minutes(u64::from(*minutes) * 60)]),
        Trigger::Exit => t.s("trigger.exit"),
        Trigger::NthVisit { n, within_days } => t.f(
            "trigger.nth_visit",
            &[
                &t.int(u64::from(*n)),
                &t.n("unit.days", u64::from(*within_days)),
            ],
        ),
        Trigger::Purchase { .. } => t.s("trigger.purchase"),
    }
}

impl CampaignRow {
    fn new(t: &Words, v: &Versioned, today: chrono::NaiveDate) -> CampaignRow {
        let c = &v.campaign;
        let lifecycle = c.lifecycle(today);
        let (key, class) = match lifecycle {
            Lifecycle::Draft => ("campaign.draft", ""),
            Lifecycle::Scheduled => ("campaign.scheduled", ""),
            Lifecycle::Active => ("campaign.active", "good"),
            Lifecycle::Paused => ("campaign.paused", "bad"),
            Lifecycle::Ended => ("campaign.ended", ""),
        };
        CampaignRow {
            id: c.id.clone(),
            name: c.name.clone(),
            lifecycle,
            state: t.s(key),
            state_class: class,
            trigger: trigger_words(t, &c.trigger),
            variants: c
                .variants
                .iter()
                .map(|v| v.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            holdout: format!("{}%", c.holdout_percent),
            attribution: t.n("unit.days", u64::from(c.attribution_days)),
            version: v.version,
            updated: t.time(&v.updated),
        }
    }
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct CampaignsPage {
    t: Words,
    nav: Nav,
    operator: bool,
    rows: Vec<CampaignRow>,
}

/// Today in the dashboard's time zone (a campaign's lifecycle on the pages).
pub(super) fn today(state: &AppState) -> chrono::NaiveDate {
    state
        .clock
        .now()
        .with_timezone(&dashboard_zone(state))
        .date_naive()
}

pub(super) async fn campaigns_page(
    v: Viewer,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let all = crate::campaigns::stored::all(state.store.as_ref())?;
    let today = today(&state);
    Ok(html(&CampaignsPage {
        nav: Nav::new(&state, &v, Section::Campaigns, v.t.s("nav.campaigns")),
        operator: v.campaigns(),
        rows: all
            .iter()
            .map(|c| CampaignRow::new(&v.t, c, today))
            .collect(),
        t: v.t,
    }))
}

/// The report's counters the funnel's steps read (each named `funnel.{counter}`).
const STEPS: [&str; 6] = [
    "triggers",
    "eligible",
    "sent",
    "delivered",
    "clicked",
    "redeemed",
];

pub struct GroupRow {
    pub name: String,
    pub label: String,
    pub customers: u64,
    /// The funnel's steps, then visited after.
    pub steps: Vec<String>,
    pub rate: String,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignPage {
    t: Words,
    nav: Nav,
    c: CampaignRow,
    operator: bool,
    steps: Vec<String>,
    groups: Vec<GroupRow>,
    /// Customers the campaign has measured (a lift needs some in both groups).
    measured: u64,
    lift_svg: String,
    /// Variant, lift, interval, treated n, holdout n, note.
    lifts: Vec<(String, String, String, String, String, String)>,
    /// What launching it would do, asked before it is (drafts only).
    launch_confirm: String,
    /// Versions, newest first: version, when, its changes.
    history: Vec<(u32, String, Vec<ChangeLine>)>,
    /// The variants' ids (a test send may pick one).
    variant_ids: Vec<String>,
    /// Recent test sends, newest first.
    tests: Vec<TestRow>,
}

/// A test send as the campaign's page lists it.
struct TestRow {
    when: String,
    to: String,
    variant: String,
    channel: String,
    /// Its status in words, and why it failed, if it did.
    result: String,
    reason: String,
    delivered: bool,
}

/// The campaign's recent test sends (for those who may send them).
fn test_rows(state: &AppState, t: &Words, id: &str) -> Result<Vec<TestRow>, ApiError> {
    let now_ms = state.clock.now().timestamp_millis();
    let sends = crate::campaigns::test_send::recent(state.store.as_ref(), id, now_ms)?;
    Ok(sends
        .into_iter()
        .map(|d| TestRow {
            when: omo_device_config::Timestamp::from_millis(d.decided_ms)
                .map_or_else(String::new, |ts| t.time(&ts)),
            to: d.customer,
            variant: d.variant,
            channel: t.s(&format!(
                "channel.{}",
                crate::delivery::channel_name(d.channel)
            )),
            result: t.s(&format!(
                "delivery.{}",
                crate::delivery::status_name(d.status)
            )),
            reason: d.reason.unwrap_or_default(),
            delivered: d.status == crate::delivery::Status::Delivered,
        })
        .collect())
}

pub(super) async fn campaign_page(
    v: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let current = crate::http::campaigns::current_campaign(&state, &id)?;
    let report = crate::http::campaigns::campaign_report(&state, &id).await?;
    let t = v.t;
    let groups: Vec<GroupRow> = report
        .groups
        .iter()
        .map(|g| {
            let mut steps: Vec<String> = STEPS
                .iter()
                .map(|key| t.int(g.funnel.get(*key).copied().unwrap_or(0)))
                .collect();
            steps.push(t.int(g.returned));
            GroupRow {
                name: g.group.clone(),
                label: if g.group == crate::campaigns::report::HOLDOUT {
                    t.s("campaign.holdout")
                } else {
                    t.f("campaign.variant", &[&g.group])
                },
                customers: g.customers,
                steps,
                rate: t.percent(g.return_rate),
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
    let measured: u64 = report.groups.iter().map(|g| g.customers).sum();
    let mut steps: Vec<String> = STEPS.iter().map(|k| t.s(&format!("funnel.{k}"))).collect();
    steps.push(t.s("funnel.returned"));
    let c = CampaignRow::new(&t, &current, today(&state));
    let launch_confirm = if c.lifecycle == Lifecycle::Draft && v.campaigns() {
        launch_confirmation(&state, &t, &current.campaign).await?
    } else {
        String::new()
    };
    let kept = stored::versions(state.store.as_ref(), &id, HISTORY_SHOWN + 1)?;
    let tests = if v.campaigns() {
        test_rows(&state, &t, &id)?
    } else {
        Vec::new()
    };
    Ok(html(&CampaignPage {
        launch_confirm,
        tests,
        variant_ids: current
            .campaign
            .variants
            .iter()
            .map(|v| v.id.clone())
            .collect(),
        history: history(&t, &kept),
        nav: Nav::new(&state, &v, Section::Campaigns, c.name.clone()),
        operator: v.campaigns(),
        // No customer yet: no interval to draw (it would read +0.0 [+0.0, +0.0]).
        lift_svg: if bars.is_empty() || measured == 0 {
            String::new()
        } else {
            charts::lift_chart(&bars, &t)
        },
        lifts: lift_rows(&t, &bars),
        c,
        steps,
        groups,
        measured,
        t,
    }))
}

/// The lift table's rows: message, lift, interval, sent, held out, reading.
fn lift_rows(
    t: &Words,
    bars: &[charts::LiftBar],
) -> Vec<(String, String, String, String, String, String)> {
    bars.iter()
        .map(|b| {
            (
                b.variant.clone(),
                format!("{:+.1}", b.difference * 100.0),
                t.f(
                    "campaign.lift.interval",
                    &[
                        &format!("{:+.1}", b.low * 100.0),
                        &format!("{:+.1}", b.high * 100.0),
                    ],
                ),
                t.int(b.treated),
                t.int(b.holdout),
                if b.too_small {
                    t.s("campaign.lift.too_small")
                } else {
                    String::new()
                },
            )
        })
        .collect()
}

/// Versions a campaign's page lists at most.
const HISTORY_SHOWN: usize = 20;

/// A change as the history lists it: the field in words, and the values before and after as
/// written (the marketer's own text, numbers, ids), or in words (yes and no).
pub struct ChangeLine {
    pub field: String,
    pub before: String,
    pub after: String,
}

/// Each version, newest first, with what it changed.
fn history(t: &Words, kept: &[Versioned]) -> Vec<(u32, String, Vec<ChangeLine>)> {
    let mut out: Vec<(u32, String, Vec<ChangeLine>)> = kept
        .iter()
        .enumerate()
        .filter(|(i, v)| *i > 0 || v.version == 1)
        .map(|(i, v)| {
            let changes = match i.checked_sub(1).map(|p| &kept[p]) {
                None => vec![ChangeLine {
                    field: t.s("campaign.history.created"),
                    before: String::new(),
                    after: String::new(),
                }],
                Some(before) => stored::changes(&before.campaign, &v.campaign)
                    .iter()
                    .map(|c| change_words(t, c))
                    .collect(),
            };
            (v.version, t.time(&v.updated), changes)
        })
        .collect();
    out.reverse();
    out.truncate(HISTORY_SHOWN);
    out
}

/// A change as a line: the field's name in words (its path where it has none), before, after.
fn change_words(t: &Words, c: &stored::Change) -> ChangeLine {
    // A flag left out of the record (draft, ended) is off.
    let flag = c.before.is_boolean() || c.after.is_boolean();
    let shown = |v: &Value| -> String {
        let s = match v {
            Value::Null if flag => t.s("no"),
            Value::Null => "—".to_owned(),
            Value::Bool(b) => t.s(if *b { "yes" } else { "no" }),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if s.chars().count() > 60 {
            format!("{}…", s.chars().take(59).collect::<String>())
        } else {
            s
        }
    };
    // `variants[0].template.text` reads as the message's field; other paths by their whole key.
    let (prefix, key) = match c.field.split_once("].") {
        Some((v, rest)) if v.starts_with("variants[") => (
            format!(
                "{} · ",
                t.f("campaign.variant", &[&v.trim_start_matches("variants[")])
            ),
            rest,
        ),
        _ => (String::new(), c.field.as_str()),
    };
    // The field's name, else the name of the nearest field it is part of (`schedule.hours.from`
    // reads as the schedule's hours), else its path.
    let mut name = key.to_owned();
    let mut part = key;
    loop {
        let words = t.s(&format!("field.{part}"));
        if !words.starts_with('⟦') {
            name = words;
            break;
        }
        match part.rfind(['.', '[']) {
            Some(i) => part = &part[..i],
            None => break,
        }
    }
    ChangeLine {
        field: format!("{prefix}{name}"),
        before: shown(&c.before),
        after: shown(&c.after),
    }
}

/// The question asked before launching `c`: about how many customers a day it would send to,
/// from the last 7 days' visitors at its stores, the share of customers it can reach and its
/// holdout; and its budget.
async fn launch_confirmation(
    state: &AppState,
    t: &Words,
    c: &Campaign,
) -> Result<String, ApiError> {
    let now_ms = state.clock.now().timestamp_millis();
    let (st, campaign) = (state.clone(), c.clone());
    let per_day = tokio::task::spawn_blocking(move || -> Result<f64, ApiError> {
        let registry = st.registry.read().expect("registry lock").clone();
        let reach = crate::campaigns::reach::reach(
            st.store.as_ref(),
            &registry,
            &st.config.profiles,
            &campaign,
            now_ms,
        )?;
        let mut stores: std::collections::BTreeSet<String> = campaign.places.stores.clone();
        for z in registry.zones() {
            if campaign.places.zones.contains(z.id()) {
                stores.insert(z.store().to_string());
            }
        }
        let mut visitors = 0u64;
        for s in &stores {
            let tz = registry.store_tz(s).unwrap_or(chrono_tz::UTC);
            let today = chrono::TimeZone::timestamp_millis_opt(&chrono::Utc, now_ms)
                .single()
                .unwrap_or_default()
                .with_timezone(&tz)
                .date_naive();
            let (Some(from), Some(to)) = (
                today.checked_sub_days(chrono::Days::new(7)),
                today.checked_sub_days(chrono::Days::new(1)),
            ) else {
                continue;
            };
            if let Ok(range) = crate::reports::Range::new(from, to, tz) {
                visitors += crate::reports::store_report(st.store.as_ref(), s, range, &st.secret)?
                    .unique_visitors;
            }
        }
        let share = if reach.customers == 0 {
            0.0
        } else {
            reach.sendable() as f64 / reach.customers as f64
        };
        Ok(visitors as f64 / 7.0 * share * (1.0 - f64::from(campaign.holdout_percent) / 100.0))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(t.f(
        "campaign.launch.confirm",
        &[&c.name, &t.int(per_day.round() as u64), &t.int(c.budget)],
    ))
}
