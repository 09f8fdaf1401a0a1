//! The campaigns' pages: the list and one campaign's funnel, groups and lift.

use super::*;

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

pub(super) async fn campaigns_page(
    s: Session,
    State(state): State<AppState>,
) -> Result<Response, ApiError> {
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

pub(super) async fn campaign_page(
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
