//! The campaigns' pages: the list and one campaign's funnel, groups and lift.

use super::*;

use crate::campaigns::definition::Trigger;

/// A campaign as its list row and page header show it.
pub struct CampaignRow {
    pub id: String,
    pub name: String,
    pub paused: bool,
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
    fn new(t: &Words, v: &crate::campaigns::stored::Versioned) -> CampaignRow {
        let c = &v.campaign;
        CampaignRow {
            id: c.id.clone(),
            name: c.name.clone(),
            paused: c.paused,
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
    rows: Vec<CampaignRow>,
}

pub(super) async fn campaigns_page(
    v: Viewer,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
    let all = crate::campaigns::stored::all(state.store.as_ref())?;
    Ok(html(&CampaignsPage {
        nav: Nav::new(&state, &v, Section::Campaigns, v.t.s("nav.campaigns")),
        rows: all.iter().map(|c| CampaignRow::new(&v.t, c)).collect(),
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
}

pub(super) async fn campaign_page(
    v: Viewer,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (current, _) = crate::campaigns::stored::current(state.store.as_ref(), &id)?
        .ok_or_else(|| ApiError::not_found(format!("campaign {id}")))?;
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
    let c = CampaignRow::new(&t, &current);
    Ok(html(&CampaignPage {
        nav: Nav::new(&state, &v, Section::Campaigns, c.name.clone()),
        operator: v.operator(),
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
