//! Customer profiles and segments (the online-meets-offline view of one customer): what the
//! visit stage learns from their visits and purchases, folded into one row per customer —
//! first and last visit and purchase, counts, spend, categories bought, the online/offline
//! share — with a loyalty tier from recency-frequency-monetary scores (the "fan level") and
//! the tags of the marketer's rules.
//!
//! The visit stage is the only writer: it updates a profile in the same commit as the visits
//! and purchase transitions it comes from, so a replay after a crash folds nothing twice. The
//! tier and tags are recomputed on every update (stored with the profile, for lists and
//! reports) and again at every decision, as of the trigger's time, so a tag whose window has
//! passed no longer matches even if no new data came.
//!
//! Keys in the profiles space: `profile/{customer}` the row, `folded/{customer}/{purchase}`
//! each purchase folded in (so one sent again years later is not counted twice), `rule/{tag}`
//! a tag rule.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{Datelike, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::vocab::SaleChannel;

const DAY_MS: i64 = 86_400_000;
/// The most recent visits and purchases a profile keeps in detail (older ones stay counted).
const MAX_RECENT: usize = 2000;

/// `[profiles]` in `cloud.toml`: how recency, frequency and monetary value are scored and
/// which tier each total score reaches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileParams {
    /// The currency spend is scored, reported and projected in (ISO 4217); purchases in
    /// other currencies are counted but add no monetary value.
    pub currency: String,
    /// Frequency and monetary value count purchases in this many days before the day scored.
    pub window_days: u32,
    /// Recency scores 2, 3, 4, 5 when the last purchase is within these many days
    /// (decreasing); 1 when older or none.
    pub recency_days: [u32; 4],
    /// Frequency scores 2, 3, 4, 5 from these many purchases in the window (increasing).
    pub frequency: [u32; 4],
    /// Monetary value scores 2, 3, 4, 5 from this much spend in the window (increasing).
    pub monetary: [f64; 4],
    /// Tiers by the least total score (3..=15) that reaches them; one of them must take
    /// everyone (a least score of 3 or less).
    pub tiers: Vec<TierParams>,
    /// The time zone of calendar periods ("this month") in rules not about one store.
    pub time_zone: String,
    /// How long a profile keeps each visit and purchase in detail, days (the longest window
    /// a rule or score can use); at most `retention.visits_days`.
    pub keep_days: u32,
}

/// One tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierParams {
    pub name: String,
    pub min_score: u32,
}

impl Default for ProfileParams {
    fn default() -> ProfileParams {
        let tier = |name: &str, min_score| TierParams {
            name: name.into(),
            min_score,
        };
        ProfileParams {
            currency: "JPY".into(),
            window_days: 365,
            recency_days: [365, 180, 90, 30],
            frequency: [2, 4, 8, 16],
            monetary: [5_000.0, 20_000.0, 50_000.0, 150_000.0],
            tiers: vec![
                tier("champion", 13),
                tier("loyal", 10),
                tier("regular", 7),
                tier("casual", 4),
                tier("new", 0),
            ],
            time_zone: "UTC".into(),
            keep_days: 395,
        }
    }
}

/// Tag, tier and rule names: 1..=64 letters, digits, '-', '_', '.' or ':'.
pub fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

impl ProfileParams {
    /// Problems by key (`prefix.field`).
    pub fn problems(&self, prefix: &str) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut bad =
            |key: &str, message: &str| p.push((format!("{prefix}.{key}"), message.into()));
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            bad("currency", "must be an ISO 4217 code such as JPY");
        }
        if self.window_days == 0 {
            bad("window_days", "must be at least 1");
        }
        if self.recency_days[3] == 0 || self.recency_days.windows(2).any(|w| w[0] <= w[1]) {
            bad(
                "recency_days",
                "must be four positive day counts, decreasing",
            );
        }
        if self.frequency[0] == 0 || self.frequency.windows(2).any(|w| w[0] >= w[1]) {
            bad("frequency", "must be four positive counts, increasing");
        }
        if !self.monetary.iter().all(|m| m.is_finite() && *m >= 0.0)
            || self.monetary.windows(2).any(|w| w[0] >= w[1])
        {
            bad("monetary", "must be four amounts of at least 0, increasing");
        }
        let mut names = BTreeSet::new();
        for (i, t) in self.tiers.iter().enumerate() {
            if !is_name(&t.name) || !names.insert(t.name.as_str()) {
                bad(
                    &format!("tiers[{i}].name"),
                    "must be a unique name of 1..=64 letters, digits, '-', '_', '.' or ':'",
                );
            }
            if t.min_score > 15 {
                bad(
                    &format!("tiers[{i}].min_score"),
                    "must be at most 15 (three scores of 1..=5)",
                );
            }
        }
        if !self.tiers.iter().any(|t| t.min_score <= 3) {
            bad(
                "tiers",
                "one tier must take everyone (a min_score of 3 or less)",
            );
        }
        if crate::vocab::time_zone(&self.time_zone).is_none() {
            bad("time_zone", "must be an IANA time zone such as Asia/Tokyo");
        }
        if self.keep_days < self.window_days || self.keep_days < self.recency_days[0] {
            bad(
                "keep_days",
                "must cover window_days and the longest recency_days",
            );
        }
        p
    }

    /// The tier a total score reaches.
    pub fn tier_of(&self, score: u32) -> &str {
        self.tiers
            .iter()
            .filter(|t| t.min_score <= score)
            .max_by_key(|t| t.min_score)
            .map(|t| t.name.as_str())
            .unwrap_or_default()
    }

    /// The tiers from the highest.
    pub fn tier_names(&self) -> Vec<&str> {
        let mut t: Vec<&TierParams> = self.tiers.iter().collect();
        t.sort_by_key(|t| std::cmp::Reverse(t.min_score));
        t.into_iter().map(|t| t.name.as_str()).collect()
    }
}

/// A visit as a profile keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisitMark {
    pub store: String,
    pub at_ms: i64,
}

/// A purchase as a profile keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurchaseMark {
    pub id: String,
    pub at_ms: i64,
    pub channel: SaleChannel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<String>,
    pub currency: String,
    pub total: f64,
    pub categories: BTreeSet<String>,
}

/// What a customer bought of one category, all time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryStats {
    pub purchases: u64,
    pub last_ms: i64,
}

/// Spend in one currency, all time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Spend {
    pub store: f64,
    pub online: f64,
}

/// Recency, frequency and monetary scores (1..=5 each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scores {
    pub recency: u32,
    pub frequency: u32,
    pub monetary: u32,
}

impl Scores {
    pub fn total(&self) -> u32 {
        self.recency + self.frequency + self.monetary
    }
}

/// One customer's profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub customer: String,
    pub first_visit_ms: Option<i64>,
    pub last_visit_ms: Option<i64>,
    /// Store visits, all time.
    pub visits: u64,
    pub first_purchase_ms: Option<i64>,
    pub last_purchase_ms: Option<i64>,
    pub store_purchases: u64,
    pub online_purchases: u64,
    /// By currency.
    pub spend: BTreeMap<String, Spend>,
    pub categories: BTreeMap<String, CategoryStats>,
    /// Visits and purchases within `keep_days`, oldest first.
    pub recent_visits: Vec<VisitMark>,
    pub recent_purchases: Vec<PurchaseMark>,
    /// As of the last update.
    pub scores: Option<Scores>,
    pub tier: String,
    pub tags: BTreeSet<String>,
    pub updated_ms: i64,
}

impl Profile {
    pub fn new(customer: &str) -> Profile {
        Profile {
            customer: customer.to_owned(),
            ..Profile::default()
        }
    }

    pub fn purchases(&self) -> u64 {
        self.store_purchases + self.online_purchases
    }

    /// The share of purchases made online (0..=1), if any purchase.
    pub fn online_share(&self) -> Option<f64> {
        let all = self.purchases();
        (all > 0).then(|| self.online_purchases as f64 / all as f64)
    }

    /// Folds a store visit in.
    pub fn add_visit(&mut self, store: &str, at_ms: i64, keep_days: u32) {
        self.visits += 1;
        self.first_visit_ms = Some(self.first_visit_ms.map_or(at_ms, |f| f.min(at_ms)));
        self.last_visit_ms = Some(self.last_visit_ms.map_or(at_ms, |l| l.max(at_ms)));
        let at = self.recent_visits.partition_point(|v| v.at_ms <= at_ms);
        self.recent_visits.insert(
            at,
            VisitMark {
                store: store.to_owned(),
                at_ms,
            },
        );
        trim(&mut self.recent_visits, |v| v.at_ms, keep_days);
    }

    /// Folds a purchase in (a purchase already folded is not counted again).
    pub fn add_purchase(&mut self, p: PurchaseMark, keep_days: u32) {
        if self.recent_purchases.iter().any(|q| q.id == p.id) {
            return;
        }
        match p.channel {
            SaleChannel::Store => self.store_purchases += 1,
            SaleChannel::Online => self.online_purchases += 1,
        }
        let spend = self.spend.entry(p.currency.clone()).or_default();
        match p.channel {
            SaleChannel::Store => spend.store += p.total,
            SaleChannel::Online => spend.online += p.total,
        }
        for c in &p.categories {
            let s = self.categories.entry(c.clone()).or_default();
            s.purchases += 1;
            s.last_ms = s.last_ms.max(p.at_ms);
        }
        self.first_purchase_ms = Some(self.first_purchase_ms.map_or(p.at_ms, |f| f.min(p.at_ms)));
        self.last_purchase_ms = Some(self.last_purchase_ms.map_or(p.at_ms, |l| l.max(p.at_ms)));
        let at = self
            .recent_purchases
            .partition_point(|q| q.at_ms <= p.at_ms);
        self.recent_purchases.insert(at, p);
        trim(&mut self.recent_purchases, |p| p.at_ms, keep_days);
    }

    /// Store and online purchases made by `now_ms` (all time: the counts, less what the kept
    /// detail shows came later).
    pub fn purchases_by_channel(&self, now_ms: i64) -> (u64, u64) {
        let later = |c: SaleChannel| {
            self.recent_purchases
                .iter()
                .filter(|p| p.at_ms > now_ms && p.channel == c)
                .count() as u64
        };
        (
            self.store_purchases
                .saturating_sub(later(SaleChannel::Store)),
            self.online_purchases
                .saturating_sub(later(SaleChannel::Online)),
        )
    }

    /// Purchases at or before `now_ms` and after `now_ms - days`.
    fn purchases_within(&self, now_ms: i64, days: u32) -> impl Iterator<Item = &PurchaseMark> {
        let since = now_ms - i64::from(days) * DAY_MS;
        self.recent_purchases
            .iter()
            .filter(move |p| p.at_ms > since && p.at_ms <= now_ms)
    }

    /// Spend in `currency` within the window ending at `now_ms`.
    pub fn spend_within(&self, now_ms: i64, days: u32, currency: &str) -> f64 {
        self.purchases_within(now_ms, days)
            .filter(|p| p.currency == currency)
            .map(|p| p.total)
            .sum()
    }

    /// The scores as of `now_ms` (only what happened by then counts).
    pub fn scores(&self, params: &ProfileParams, now_ms: i64) -> Scores {
        let last = self
            .recent_purchases
            .iter()
            .rev()
            .find(|p| p.at_ms <= now_ms)
            .map(|p| p.at_ms);
        let recency = match last {
            Some(at) => {
                let age = now_ms - at;
                1 + params
                    .recency_days
                    .iter()
                    .filter(|d| age < i64::from(**d) * DAY_MS)
                    .count() as u32
            }
            None => 1,
        };
        let count = self.purchases_within(now_ms, params.window_days).count() as u64;
        let frequency = 1 + params
            .frequency
            .iter()
            .filter(|f| count >= u64::from(**f))
            .count() as u32;
        let spend = self.spend_within(now_ms, params.window_days, &params.currency);
        let monetary = 1 + params.monetary.iter().filter(|m| spend >= **m).count() as u32;
        Scores {
            recency,
            frequency,
            monetary,
        }
    }

    /// The tier as of `now_ms`.
    pub fn tier(&self, params: &ProfileParams, now_ms: i64) -> String {
        params
            .tier_of(self.scores(params, now_ms).total())
            .to_owned()
    }

    /// The tags `rules` give as of `now_ms`; `tz_of` names a store's time zone.
    pub fn tags(
        &self,
        rules: &BTreeMap<String, Rule>,
        params: &ProfileParams,
        now_ms: i64,
        tz_of: &dyn Fn(&str) -> Option<Tz>,
    ) -> BTreeSet<String> {
        rules
            .iter()
            .filter(|(_, r)| r.holds(self, params, now_ms, tz_of))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Recomputes the stored tier, scores and tags as of `now_ms`.
    pub fn refresh(
        &mut self,
        rules: &BTreeMap<String, Rule>,
        params: &ProfileParams,
        now_ms: i64,
        tz_of: &dyn Fn(&str) -> Option<Tz>,
    ) {
        let scores = self.scores(params, now_ms);
        self.tier = params.tier_of(scores.total()).to_owned();
        self.scores = Some(scores);
        self.tags = self.tags(rules, params, now_ms, tz_of);
        self.updated_ms = now_ms;
    }
}

/// Keeps the entries of the last `keep_days` before the newest, and at most [`MAX_RECENT`].
fn trim<T>(v: &mut Vec<T>, at: impl Fn(&T) -> i64, keep_days: u32) {
    let Some(newest) = v.last().map(&at) else {
        return;
    };
    let since = newest - i64::from(keep_days) * DAY_MS;
    let old = v.partition_point(|x| at(x) <= since);
    let over = v.len().saturating_sub(MAX_RECENT);
    v.drain(..old.max(over));
}

/// A rule-based tag: a customer has the tag while the rule holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// Bought something of `category` in the last `within_days` days.
    BoughtCategory { category: String, within_days: u32 },
    /// Visited (`store`, or any store) at least `at_least` times in the last `within_days`
    /// days, or this calendar month (in the store's time zone, or `profiles.time_zone`).
    Visited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        store: Option<String>,
        at_least: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within_days: Option<u32>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        this_month: bool,
    },
    /// Spent at least `at_least` (in `profiles.currency`) in the last `within_days` days.
    Spent { at_least: f64, within_days: u32 },
    /// Bought, and only online.
    OnlineOnly,
    /// Bought, and only in stores.
    StoreOnly,
}

impl Rule {
    /// Every problem with the rule, by field; `keep_days` bounds its windows.
    pub fn problems(&self, keep_days: u32) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let days = |p: &mut Vec<(String, String)>, d: u32| {
            if d == 0 || d > keep_days {
                p.push((
                    "within_days".into(),
                    format!("must be 1..={keep_days} (profiles.keep_days)"),
                ));
            }
        };
        match self {
            Rule::BoughtCategory {
                category,
                within_days,
            } => {
                if category.is_empty() || category.len() > 64 {
                    p.push(("category".into(), "must be 1..=64 characters".into()));
                }
                days(&mut p, *within_days);
            }
            Rule::Visited {
                store,
                at_least,
                within_days,
                this_month,
            } => {
                if let Some(s) = store {
                    if omo_device_config::StoreId::new(s).is_err() {
                        p.push(("store".into(), "is not a store id".into()));
                    }
                }
                if *at_least == 0 {
                    p.push(("at_least".into(), "must be at least 1".into()));
                }
                match (within_days, this_month) {
                    (Some(d), false) => days(&mut p, *d),
                    (None, true) => {}
                    _ => p.push((
                        "within_days".into(),
                        "give either within_days or this_month: true".into(),
                    )),
                }
            }
            Rule::Spent {
                at_least,
                within_days,
            } => {
                if !at_least.is_finite() || *at_least < 0.0 {
                    p.push(("at_least".into(), "must be an amount of at least 0".into()));
                }
                days(&mut p, *within_days);
            }
            Rule::OnlineOnly | Rule::StoreOnly => {}
        }
        p
    }

    /// Whether the rule holds for `profile` as of `now_ms`.
    pub fn holds(
        &self,
        profile: &Profile,
        params: &ProfileParams,
        now_ms: i64,
        tz_of: &dyn Fn(&str) -> Option<Tz>,
    ) -> bool {
        match self {
            Rule::BoughtCategory {
                category,
                within_days,
            } => profile
                .purchases_within(now_ms, *within_days)
                .any(|p| p.categories.contains(category)),
            Rule::Visited {
                store,
                at_least,
                within_days,
                this_month,
            } => {
                let since = match (within_days, this_month) {
                    (Some(d), _) => now_ms - i64::from(*d) * DAY_MS,
                    (None, _) => {
                        let tz = store
                            .as_deref()
                            .and_then(tz_of)
                            .or_else(|| crate::vocab::time_zone(&params.time_zone))
                            .unwrap_or(Tz::UTC);
                        month_start_ms(tz, now_ms)
                    }
                };
                let n = profile
                    .recent_visits
                    .iter()
                    .filter(|v| v.at_ms >= since && v.at_ms <= now_ms)
                    .filter(|v| store.as_ref().is_none_or(|s| &v.store == s))
                    .count();
                n >= *at_least as usize
            }
            Rule::Spent {
                at_least,
                within_days,
            } => profile.spend_within(now_ms, *within_days, &params.currency) >= *at_least,
            Rule::OnlineOnly | Rule::StoreOnly => {
                let (store, online) = profile.purchases_by_channel(now_ms);
                match self {
                    Rule::OnlineOnly => online > 0 && store == 0,
                    _ => store > 0 && online == 0,
                }
            }
        }
    }
}

/// The first instant of the calendar month `at_ms` falls in, in `tz`.
fn month_start_ms(tz: Tz, at_ms: i64) -> i64 {
    let Some(local) = tz.timestamp_millis_opt(at_ms).single() else {
        return at_ms;
    };
    let day1 = local.date_naive().with_day(1).unwrap_or(local.date_naive());
    let midnight = day1.and_hms_opt(0, 0, 0).expect("midnight exists");
    tz.from_local_datetime(&midnight)
        .earliest()
        .map_or(at_ms, |d| d.timestamp_millis())
}

pub mod keys;
mod stored;

pub use keys::{folded_key, profile_key};
pub use stored::{all, delete_rule, put_rule, read, rules, trim_details};

#[cfg(test)]
mod tests;
