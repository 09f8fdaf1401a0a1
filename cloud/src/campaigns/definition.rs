//! A campaign as a marketer defines it (admin API, stored and versioned): what triggers it,
//! where, for whom, when, how often, through which channels, with which message — and its
//! experiment (variants and a holdout). [`Campaign::validate`] returns every problem with the
//! field at fault.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use crate::delivery::DeliveryChannel;

/// What fires a campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    Enter,
    /// A visit reached this dwell milestone (one of the cloud's `visits.dwell_milestones_min`).
    Dwell {
        minutes: u32,
    },
    Exit,
    /// The customer's `n`th visit within `within_days` days.
    NthVisit {
        n: u32,
        within_days: u32,
    },
    /// A purchase by the customer: in one of the campaign's stores (`channel: store`), in
    /// the online shop (`channel: online`, with `places.online`), or either; optionally only
    /// with a line of `category` or a total of at least `min_total`.
    Purchase {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        channel: Option<crate::vocab::SaleChannel>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_total: Option<f64>,
    },
}

/// Where: zones and/or whole stores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Places {
    pub zones: BTreeSet<String>,
    pub stores: BTreeSet<String>,
    /// The brand's online shop (purchase triggers only).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub online: bool,
}

/// For whom.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Audience {
    /// The customer must have every one of these tags.
    pub include_tags: BTreeSet<String>,
    /// … and none of these.
    pub exclude_tags: BTreeSet<String>,
    /// … and these attribute values exactly.
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// … and be in one of these loyalty tiers (`[profiles]` in `cloud.toml`) when the
    /// trigger happens; empty: any tier.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub tiers: BTreeSet<String>,
}

/// A daily window in the store's local time; `to` before `from` wraps past midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    pub from: NaiveTime,
    pub to: NaiveTime,
}

impl Window {
    /// Whether local time `t` is inside `[from, to)`.
    pub fn contains(&self, t: NaiveTime) -> bool {
        if self.from <= self.to {
            self.from <= t && t < self.to
        } else {
            t >= self.from || t < self.to
        }
    }
}

/// When, in each store's own time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// First and last local dates, inclusive.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Local days of the week (`mon` … `sun`).
    pub days: BTreeSet<Day>,
    /// Local hours of the day; absent: all day.
    #[serde(default)]
    pub hours: Option<Window>,
    /// Override the store's time zone (IANA name), e.g. for a chain-wide national campaign.
    #[serde(default)]
    pub time_zone: Option<String>,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl From<Weekday> for Day {
    fn from(w: Weekday) -> Day {
        match w {
            Weekday::Mon => Day::Mon,
            Weekday::Tue => Day::Tue,
            Weekday::Wed => Day::Wed,
            Weekday::Thu => Day::Thu,
            Weekday::Fri => Day::Fri,
            Weekday::Sat => Day::Sat,
            Weekday::Sun => Day::Sun,
        }
    }
}

/// How often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Caps {
    /// At most `count` sends to one customer from this campaign per `period_days` local days.
    pub per_customer: u32,
    pub period_days: u32,
    /// At most this many sends to one customer across all campaigns per local day.
    #[serde(default)]
    pub per_customer_daily_all: Option<u32>,
    /// No send to a customer within this many minutes of their last send from this campaign.
    #[serde(default)]
    pub cooldown_minutes: u32,
}

/// The message; `{name}`, `{store}`, `{coupon}` and `{link}` are filled per send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// The text (every channel; LINE's flex message uses it as its `altText`).
    pub text: String,
    /// A LINE flex message's `contents` (a bubble or carousel), sent after the text on LINE;
    /// variables are filled in its strings too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flex: Option<serde_json::Value>,
    /// Where the offer's link leads (the brand's page): `{link}` becomes a tracked link, unique
    /// per delivery, through the cloud's `GET /r/{token}`, which counts the click and redirects
    /// here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// Campaign and variant ids: 1..=64 letters, digits, '-', '_' or '.' (they are key segments).
fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The variables `text` names, or the first malformed one (by byte).
fn variables_in(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| {
            format!(
                "'{{' at byte {} is never closed",
                text.len() - rest.len() + open
            )
        })?;
        out.push(after[..close].to_owned());
        rest = &after[close + 1..];
    }
    Ok(out)
}

fn fill(text: &str, values: &BTreeMap<&str, String>) -> String {
    let mut text = text.to_owned();
    for (k, v) in values {
        text = text.replace(&format!("{{{k}}}"), v);
    }
    text
}

/// Every string in a JSON value, with its path (`contents.body.text`).
fn strings_of(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::String(s) => out.push((path, s.clone())),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings_of(x, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                strings_of(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn fill_json(v: &serde_json::Value, values: &BTreeMap<&str, String>) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) => serde_json::Value::String(fill(s, values)),
        serde_json::Value::Array(a) => a.iter().map(|x| fill_json(x, values)).collect(),
        serde_json::Value::Object(o) => o
            .iter()
            .map(|(k, x)| (k.clone(), fill_json(x, values)))
            .collect(),
        other => other.clone(),
    }
}

/// The variables a template may name.
pub const TEMPLATE_VARIABLES: [&str; 4] = ["name", "store", "coupon", "link"];

impl Template {
    /// The variables the text names, or the first malformed one.
    pub fn variables(&self) -> Result<Vec<String>, String> {
        variables_in(&self.text)
    }

    /// Per string of the flex contents (by path under `flex`), the variables it names.
    pub fn flex_variables(&self) -> Vec<(String, Result<Vec<String>, String>)> {
        let mut strings = Vec::new();
        if let Some(f) = &self.flex {
            strings_of(f, "flex".into(), &mut strings);
        }
        strings
            .into_iter()
            .map(|(path, s)| (path, variables_in(&s)))
            .collect()
    }

    /// The text with every variable filled from `values`.
    pub fn render(&self, values: &BTreeMap<&str, String>) -> String {
        fill(&self.text, values)
    }

    /// The flex contents with every variable filled, if any.
    pub fn render_flex(&self, values: &BTreeMap<&str, String>) -> Option<serde_json::Value> {
        self.flex.as_ref().map(|f| fill_json(f, values))
    }
}

/// One arm of the experiment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub id: String,
    pub weight: u32,
    pub template: Template,
}

/// A campaign definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub paused: bool,
    /// Saved, not launched: it decides nothing until `POST /v1/admin/campaigns/{id}/launch`.
    /// A launched campaign never becomes a draft again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draft: bool,
    /// Ended (`POST …/end`): it decides nothing again and cannot be resumed; the returns of
    /// the customers it reached are still measured to the end of their attribution window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    pub trigger: Trigger,
    pub places: Places,
    #[serde(default)]
    pub audience: Audience,
    pub schedule: Schedule,
    /// Local hours in which nothing is sent (wrapping past midnight allowed).
    #[serde(default)]
    pub quiet_hours: Option<Window>,
    pub caps: Caps,
    /// Sends at most, over the campaign's life.
    pub budget: u64,
    /// How long an offer stays worth delivering, minutes.
    pub offer_ttl_minutes: u32,
    /// Channels in order of preference: the first the customer can be reached on is used.
    pub channels: Vec<DeliveryChannel>,
    pub variants: Vec<Variant>,
    /// Per cent of customers held out (shadow decisions, no message), 0..=50.
    #[serde(default)]
    pub holdout_percent: u32,
    /// Days after a customer's first eligible trigger in which a new visit to the campaign's
    /// stores counts as the outcome lift is measured on, 1..=90.
    #[serde(default = "default_attribution_days")]
    pub attribution_days: u32,
}

fn default_attribution_days() -> u32 {
    7
}

/// Where a campaign is in its life, as people read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    Draft,
    /// Launched, its first date still to come.
    Scheduled,
    Active,
    Paused,
    /// Ended by hand, or its last date past.
    Ended,
}

impl Campaign {
    /// Whether its triggers are decided (launched, not ended; a paused campaign's are, as
    /// suppressed).
    pub fn is_live(&self) -> bool {
        !self.draft && !self.ended
    }

    /// Its lifecycle on local date `today`.
    pub fn lifecycle(&self, today: NaiveDate) -> Lifecycle {
        if self.draft {
            Lifecycle::Draft
        } else if self.ended || self.schedule.to < today {
            Lifecycle::Ended
        } else if self.paused {
            Lifecycle::Paused
        } else if today < self.schedule.from {
            Lifecycle::Scheduled
        } else {
            Lifecycle::Active
        }
    }
}

/// A problem with a campaign, by field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

mod validate;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn example() -> serde_json::Value {
        json!({
            "id": "welcome-coffee",
            "name": "Welcome coffee",
            "trigger": {"kind": "dwell", "minutes": 10},
            "places": {"stores": ["s1"]},
            "audience": {"include_tags": ["member"], "exclude_tags": ["staff"]},
            "schedule": {"from": "2026-11-01", "to": "2026-12-31", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "hours": {"from": "10:00:00", "to": "20:00:00"}},
            "quiet_hours": {"from": "22:00:00", "to": "08:00:00"},
            "caps": {"per_customer": 1, "period_days": 7, "per_customer_daily_all": 2, "cooldown_minutes": 60},
            "budget": 1000,
            "offer_ttl_minutes": 60,
            "channels": ["line", "push"],
            "variants": [{"id": "a", "weight": 1, "template": {"text": "Hi {name}, a coffee on us at {store}: {coupon}"}}],
            "holdout_percent": 10
        })
    }

    #[test]
    fn a_good_campaign_is_valid() {
        let c: Campaign = serde_json::from_value(example()).unwrap();
        c.validate(&[5, 10, 20, 30]).unwrap();
    }

    #[test]
    fn invalid_definitions_name_the_field_at_fault() {
        let mut v = example();
        v["schedule"]["time_zone"] = json!("Mars/Olympus");
        v["schedule"]["days"] = json!([]);
        v["caps"]["per_customer"] = json!(0);
        v["variants"][0]["template"]["text"] = json!("Hi {nickname}");
        v["variants"][0]["template"]["flex"] =
            json!({"type": "bubble", "body": {"contents": [{"text": "{points}"}]}});
        v["variants"][0]["id"] = json!("holdout");
        v["trigger"] = json!({"kind": "dwell", "minutes": 7});
        let c: Campaign = serde_json::from_value(v).unwrap();
        let fields: Vec<String> = c
            .validate(&[5, 10, 20, 30])
            .unwrap_err()
            .into_iter()
            .map(|p| p.field)
            .collect();
        assert_eq!(
            fields,
            [
                "trigger.minutes",
                "schedule.days",
                "schedule.time_zone",
                "caps.per_customer",
                "variants[0].id",
                "variants[0].template.text",
                "variants[0].template.flex.body.contents[0].text"
            ]
        );
        let unclosed = Template {
            text: "Hi {name".into(),
            flex: None,
            link: None,
        };
        assert!(unclosed.variables().unwrap_err().contains("byte 3"));
    }

    #[test]
    fn windows_wrap_past_midnight() {
        let w = Window {
            from: NaiveTime::from_hms_opt(22, 0, 0).unwrap(),
            to: NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
        };
        assert!(w.contains(NaiveTime::from_hms_opt(23, 30, 0).unwrap()));
        assert!(w.contains(NaiveTime::from_hms_opt(0, 0, 0).unwrap()));
        assert!(!w.contains(NaiveTime::from_hms_opt(8, 0, 0).unwrap()));
        assert!(!w.contains(NaiveTime::from_hms_opt(12, 0, 0).unwrap()));
    }

    #[test]
    fn templates_render_every_variable() {
        let t = Template {
            text: "Hi {name}, {store}: {coupon} {coupon}".into(),
            flex: Some(json!({"type": "bubble", "footer": ["{coupon}", 3]})),
            link: None,
        };
        let values = BTreeMap::from([
            ("name", "Aki".to_owned()),
            ("store", "Shibuya".to_owned()),
            ("coupon", "X1".to_owned()),
        ]);
        assert_eq!(t.render(&values), "Hi Aki, Shibuya: X1 X1");
        assert_eq!(
            t.render_flex(&values),
            Some(json!({"type": "bubble", "footer": ["X1", 3]}))
        );
    }
}
