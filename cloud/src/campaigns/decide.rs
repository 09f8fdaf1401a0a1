//! The campaign decision for one trigger (pure: no store, no clock): given the campaign, the
//! customer, the transition and the customer's recent sends, either send (which variant,
//! which channel), record a holdout's "would have sent", or suppress with the reason — in a
//! fixed order, so every decision that does not send says why, for the funnel.
//!
//! Order: late → paused → audience → schedule → quiet hours → caps (per campaign and period,
//! cooldown, daily across campaigns) → budget → consent and channel → holdout. Holdout
//! customers pass every filter the treated pass and use up the same (shadow) caps, so both
//! groups are filtered alike. Schedules, quiet hours and caps use the store's local time.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::definition::Campaign;
use crate::delivery::DeliveryChannel;

/// Why a trigger did not send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Late,
    Paused,
    Audience,
    Schedule,
    QuietHours,
    Cap,
    Cooldown,
    DailyCap,
    Budget,
    Consent,
}

/// What one trigger decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Send {
        variant: String,
        channel: DeliveryChannel,
    },
    /// A holdout customer: everything a send needs held, nothing is sent.
    WouldSend {
        variant: String,
        channel: DeliveryChannel,
    },
    Suppressed {
        reason: Reason,
    },
}

impl Outcome {
    /// Whether it counts toward caps (sends and holdout shadow sends do).
    pub fn uses_caps(&self) -> bool {
        !matches!(self, Outcome::Suppressed { .. })
    }
}

/// A previous send (or holdout shadow send) to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastSend {
    pub campaign: String,
    pub at_ms: i64,
}

/// What the decision knows about the customer.
#[derive(Debug, Clone, Default)]
pub struct CustomerView {
    pub id: String,
    pub tags: BTreeSet<String>,
    pub attributes: std::collections::BTreeMap<String, serde_json::Value>,
    /// The loyalty tier at the trigger's time.
    pub tier: Option<String>,
    /// Channels the customer consented to and can be reached on (LINE id, push token, …).
    pub reachable: BTreeSet<DeliveryChannel>,
}

/// One trigger to decide.
#[derive(Debug, Clone)]
pub struct Trigger<'a> {
    pub customer: &'a CustomerView,
    /// The transition's time, ms.
    pub at_ms: i64,
    pub late: bool,
    /// The store's time zone (the schedule may override it).
    pub store_tz: Tz,
    /// This customer's sends in the last days (all campaigns), any order.
    pub history: &'a [PastSend],
    /// Whether the campaign's budget has a send (not holdout) left.
    pub budget_left: bool,
}

/// Stable assignment of a customer to a campaign's holdout or a variant: a hash of
/// (campaign, customer), so a customer stays in one arm for the campaign's life.
pub fn assign<'a>(campaign: &'a Campaign, customer: &str) -> Option<&'a str> {
    let h = Sha256::digest(format!("{}\u{0}{customer}", campaign.id));
    let bucket = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) % 10_000;
    if bucket < u64::from(campaign.holdout_percent) * 100 {
        return None;
    }
    let total: u64 = campaign.variants.iter().map(|v| u64::from(v.weight)).sum();
    let mut point = u64::from_be_bytes(h[8..16].try_into().expect("8 bytes")) % total.max(1);
    for v in &campaign.variants {
        if point < u64::from(v.weight) {
            return Some(&v.id);
        }
        point -= u64::from(v.weight);
    }
    campaign.variants.last().map(|v| v.id.as_str())
}

fn local(tz: &Tz, ms: i64) -> DateTime<Tz> {
    tz.from_utc_datetime(
        &DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .naive_utc(),
    )
}

/// Decides one trigger of `campaign`.
pub fn decide(campaign: &Campaign, t: &Trigger<'_>) -> Outcome {
    let suppressed = |reason| Outcome::Suppressed { reason };
    if t.late {
        return suppressed(Reason::Late);
    }
    if campaign.paused {
        return suppressed(Reason::Paused);
    }
    let c = t.customer;
    if !in_audience(&campaign.audience, c) {
        return suppressed(Reason::Audience);
    }
    let tz: Tz = campaign
        .schedule
        .time_zone
        .as_deref()
        .and_then(crate::vocab::time_zone)
        .unwrap_or(t.store_tz);
    let now = local(&tz, t.at_ms);
    if let Some(reason) = off_schedule(campaign, &now).or_else(|| over_caps(campaign, t, &tz)) {
        return suppressed(reason);
    }
    if !t.budget_left {
        return suppressed(Reason::Budget);
    }
    let Some(channel) = campaign
        .channels
        .iter()
        .find(|ch| c.reachable.contains(ch))
        .copied()
    else {
        return suppressed(Reason::Consent);
    };
    match assign(campaign, &c.id) {
        Some(variant) => Outcome::Send {
            variant: variant.to_owned(),
            channel,
        },
        None => Outcome::WouldSend {
            variant: campaign
                .variants
                .first()
                .map(|v| v.id.clone())
                .unwrap_or_default(),
            channel,
        },
    }
}

/// Whether the customer is in the audience: every included tag, no excluded one, the
/// attributes asked for, one of the tiers if any are named.
/// Whether customer `c` is in audience `a`.
pub fn in_audience(a: &super::definition::Audience, c: &CustomerView) -> bool {
    a.include_tags.is_subset(&c.tags)
        && a.exclude_tags.is_disjoint(&c.tags)
        && a.attributes
            .iter()
            .all(|(k, v)| c.attributes.get(k) == Some(v))
        && (a.tiers.is_empty() || c.tier.as_ref().is_some_and(|t| a.tiers.contains(t)))
}

/// Why the campaign does not run at local time `now`: outside its schedule, or in its quiet
/// hours.
fn off_schedule(campaign: &Campaign, now: &DateTime<Tz>) -> Option<Reason> {
    let s = &campaign.schedule;
    let date = now.date_naive();
    let in_schedule = s.from <= date
        && date <= s.to
        && s.days.contains(&now.weekday().into())
        && s.hours.is_none_or(|h| h.contains(now.time()));
    if !in_schedule {
        return Some(Reason::Schedule);
    }
    campaign
        .quiet_hours
        .is_some_and(|q| q.contains(now.time()))
        .then_some(Reason::QuietHours)
}

/// Which cap the customer's sends (`t.history`, dates in `tz`) have reached: the campaign's
/// per period, its cooldown, or the daily cap over all campaigns.
fn over_caps(campaign: &Campaign, t: &Trigger<'_>, tz: &Tz) -> Option<Reason> {
    let local_date = |ms: i64| -> NaiveDate { local(tz, ms).date_naive() };
    let date = local_date(t.at_ms);
    let first_day =
        date - chrono::Days::new(u64::from(campaign.caps.period_days.saturating_sub(1)));
    let ours: Vec<&PastSend> = t
        .history
        .iter()
        .filter(|p| p.campaign == campaign.id)
        .collect();
    let in_period = ours
        .iter()
        .filter(|p| (first_day..=date).contains(&local_date(p.at_ms)))
        .count();
    if in_period >= campaign.caps.per_customer as usize {
        return Some(Reason::Cap);
    }
    let cooldown_ms = i64::from(campaign.caps.cooldown_minutes) * 60_000;
    if ours
        .iter()
        .any(|p| p.at_ms <= t.at_ms && t.at_ms - p.at_ms < cooldown_ms)
    {
        return Some(Reason::Cooldown);
    }
    let daily = campaign.caps.per_customer_daily_all?;
    let today = t
        .history
        .iter()
        .filter(|p| local_date(p.at_ms) == date)
        .count();
    (today >= daily as usize).then_some(Reason::DailyCap)
}

#[cfg(test)]
mod tests;
