//! Store and tier reports (the online-meets-offline figures a retailer reviews): over a range
//! of local dates in the store's time zone, per store — visits, unique visitors, the dwell
//! distribution, offers sent, clicked and redeemed, purchases and the revenue offers brought,
//! and each campaign's lift at that store — and per loyalty tier — customers, spend to date
//! and a simple projected 12-month value. A store report reads the tallies its writers keep
//! per store and hour ([`tally`]); the tier report reads the profiles. No personal id appears
//! in a report.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::Serialize;

use crate::campaigns::report::{lift, Lift, HOLDOUT};
use crate::campaigns::stored;
use crate::profiles::{Profile, ProfileParams};
use crate::store::{Store, StoreError};
use crate::tallies::hours::{self, Purchases};
use crate::vocab::SaleChannel;

pub mod activity;
pub mod days;
pub mod overview;
pub mod tally;
use tally::Tally;

const DAY_MS: i64 = 86_400_000;
/// The longest range a report covers, days.
pub const MAX_DAYS: i64 = 400;
/// The shortest span a spend rate is taken over, days: one purchase yesterday is not a
/// daily habit.
pub const MIN_RATE_DAYS: i64 = 90;
/// Dwell buckets, minutes: `[0, 5)`, `[5, 15)`, … `[120, ∞)` (of the dwell in whole minutes).
const DWELL_EDGES_MIN: [u64; 5] = [5, 15, 30, 60, 120];

/// A range of local dates, inclusive, in one time zone.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Range {
    pub from: NaiveDate,
    pub to: NaiveDate,
    #[serde(serialize_with = "tz_name")]
    pub time_zone: Tz,
}

fn tz_name<S: serde::Serializer>(tz: &Tz, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(tz.name())
}

impl Range {
    /// Checks the range: dates in the years 1970..=9999, `to` not before `from`, at most
    /// [`MAX_DAYS`].
    pub fn new(from: NaiveDate, to: NaiveDate, time_zone: Tz) -> Result<Range, String> {
        for d in [from, to] {
            if !(1970..=9999).contains(&d.year()) {
                return Err(format!("{d} is not within the years 1970..=9999"));
            }
        }
        if to < from {
            return Err(format!("to {to} is before from {from}"));
        }
        if (to - from).num_days() >= MAX_DAYS {
            return Err(format!("a report covers at most {MAX_DAYS} days"));
        }
        Ok(Range {
            from,
            to,
            time_zone,
        })
    }

    /// The first instant of local midnight of `date` (the earliest, across a DST change).
    fn midnight_ms(&self, date: NaiveDate) -> i64 {
        let local = date.and_hms_opt(0, 0, 0).expect("midnight exists");
        self.time_zone
            .from_local_datetime(&local)
            .earliest()
            .or_else(|| {
                // Midnight skipped by a DST change: the hour after it.
                self.time_zone
                    .from_local_datetime(&(local + chrono::Duration::hours(1)))
                    .earliest()
            })
            .map_or(0, |d| d.timestamp_millis())
    }

    /// `[start, end)` in ms since the epoch.
    pub fn bounds_ms(&self) -> (i64, i64) {
        (
            self.midnight_ms(self.from),
            self.midnight_ms(self.to + chrono::Days::new(1)),
        )
    }
}

/// Offers at a store.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Offers {
    /// Decided to send (any outcome).
    pub decided: u64,
    /// Delivered to the channel.
    pub delivered: u64,
    /// Their links followed (once per offer).
    pub clicked: u64,
    /// Their coupons redeemed.
    pub redeemed: u64,
}

impl Offers {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: &Offers) {
        self.decided += other.decided;
        self.delivered += other.delivered;
        self.clicked += other.clicked;
        self.redeemed += other.redeemed;
    }
}

/// One campaign at a store.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignAtStore {
    pub campaign: String,
    pub offers: Offers,
    pub revenue_attributed: BTreeMap<String, f64>,
    /// Customers whose first eligible trigger was at this store in the range, by group.
    pub customers: BTreeMap<String, u64>,
    /// Of them, those who came back within the attribution window.
    pub returned: BTreeMap<String, u64>,
    /// Each variant over the holdout, among these customers.
    pub lift: Vec<Lift>,
}

/// A store's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreReport {
    pub store: String,
    pub range: Range,
    /// Store visits that began in the range.
    pub visits: u64,
    pub unique_visitors: u64,
    /// Finished visits by dwell bucket (`0-5`, `5-15`, … `120+` whole minutes).
    pub dwell_minutes: BTreeMap<String, u64>,
    /// Visits still open (no dwell yet).
    pub visits_open: u64,
    pub median_dwell_min: Option<f64>,
    pub offers: Offers,
    pub purchases: Purchases,
    pub campaigns: Vec<CampaignAtStore>,
}

fn bucket(dwell_min: u64) -> String {
    let mut low = 0;
    for edge in DWELL_EDGES_MIN {
        if dwell_min < edge {
            return format!("{low}-{edge}");
        }
        low = edge;
    }
    format!("{low}+")
}

/// The report of store `id` (or `online`) over `range`: from the tallies of its whole UTC
/// hours and, at an end off a UTC hour, the stored rows of the part hour.
pub fn store_report(
    store: &dyn Store,
    id: &str,
    range: Range,
    secret: &[u8; 32],
) -> Result<StoreReport, StoreError> {
    store_report_until(store, id, range, i64::MAX, secret)
}

/// The report of store `id` over `range` up to `until_ms` (a day so far).
pub fn store_report_until(
    store: &dyn Store,
    id: &str,
    range: Range,
    until_ms: i64,
    secret: &[u8; 32],
) -> Result<StoreReport, StoreError> {
    let (start, end) = range.bounds_ms();
    let end = end.min(until_ms).max(start);
    let (first, last) = (
        hours::hour_of(start + hours::HOUR_MS - 1),
        hours::hour_of(end),
    );
    // Within one UTC hour that starts before `start` (a zone off the hour, just after its
    // midnight) no whole hour is in range: the stored rows of [start, end) alone.
    if first > last {
        let t = Tally::from_rows(store, id, &[(start, end)], secret)?;
        return report_of(store, id, range, t);
    }
    let mut t = Tally::read(store, id, (first, last))?;
    let parts: Vec<(i64, i64)> = [(start, first), (last, end)]
        .into_iter()
        .filter(|(a, b)| a < b)
        .collect();
    if !parts.is_empty() {
        t.merge(Tally::from_rows(store, id, &parts, secret)?);
    }
    report_of(store, id, range, t)
}

/// The same report from the stored rows alone, for checking the tallies: slow (it reads every
/// row of the range), and without what an erasure or the retention sweep deleted.
pub fn store_report_from_rows(
    store: &dyn Store,
    id: &str,
    range: Range,
    secret: &[u8; 32],
) -> Result<StoreReport, StoreError> {
    let t = Tally::from_rows(store, id, &[range.bounds_ms()], secret)?;
    report_of(store, id, range, t)
}

fn report_of(
    store: &dyn Store,
    id: &str,
    range: Range,
    mut t: Tally,
) -> Result<StoreReport, StoreError> {
    let unique_visitors = t.unique_visitors();
    let mut dwell_minutes: BTreeMap<String, u64> = BTreeMap::new();
    let dwell = t.visits.dwell_histogram();
    for (m, n) in &dwell {
        *dwell_minutes.entry(bucket(*m)).or_default() += n;
    }
    let mut lines: BTreeMap<String, CampaignAtStore> = BTreeMap::new();
    let mut offers = Offers::default();
    for (c, o) in &t.offers {
        offers.add(o);
        line(&mut lines, c).offers = o.clone();
    }
    for (c, revenue) in &t.purchases.campaigns {
        line(&mut lines, c).revenue_attributed = revenue.clone();
    }
    let definitions: BTreeMap<String, _> = stored::all(store)?
        .into_iter()
        .map(|k| (k.campaign.id.clone(), k.campaign))
        .collect();
    for (c, groups) in &t.groups {
        let l = line(&mut lines, c);
        l.customers = groups
            .iter()
            .map(|(g, v)| (g.clone(), v.customers))
            .collect();
        l.returned = groups
            .iter()
            .map(|(g, v)| (g.clone(), v.returned))
            .collect();
        let of = |g: &str| groups.get(g).map_or((0, 0), |v| (v.returned, v.customers));
        if let Some(definition) = definitions.get(c) {
            l.lift = definition
                .variants
                .iter()
                .map(|v| lift(&v.id, of(&v.id), of(HOLDOUT)))
                .collect();
        }
    }
    // Sums of the same amounts added in another order may differ in their last bits.
    let mut purchases = t.purchases.totals;
    round_money(&mut purchases.revenue);
    round_money(&mut purchases.revenue_attributed);
    for l in lines.values_mut() {
        round_money(&mut l.revenue_attributed);
    }
    Ok(StoreReport {
        store: id.to_owned(),
        range,
        visits: t.visits.visits,
        unique_visitors,
        dwell_minutes,
        visits_open: t.visits.open_visits(),
        median_dwell_min: median(&dwell),
        offers,
        purchases,
        campaigns: lines.into_values().collect(),
    })
}

/// Rounds each amount to 1/10,000 of its unit.
fn round_money(amounts: &mut BTreeMap<String, f64>) {
    for v in amounts.values_mut() {
        *v = (*v * 1e4).round() / 1e4;
    }
}

/// Campaign `c`'s line, made when first needed.
fn line<'a>(lines: &'a mut BTreeMap<String, CampaignAtStore>, c: &str) -> &'a mut CampaignAtStore {
    lines
        .entry(c.to_owned())
        .or_insert_with(|| CampaignAtStore {
            campaign: c.to_owned(),
            ..CampaignAtStore::default()
        })
}

/// The median of a histogram of whole minutes.
fn median(histogram: &BTreeMap<u64, u64>) -> Option<f64> {
    let n: u64 = histogram.values().sum();
    if n == 0 {
        return None;
    }
    // The i-th smallest value, from 0.
    let nth = |i: u64| {
        let mut seen = 0;
        for (m, count) in histogram {
            seen += count;
            if i < seen {
                return *m as f64;
            }
        }
        0.0
    };
    Some(if n % 2 == 1 {
        nth(n / 2)
    } else {
        (nth(n / 2 - 1) + nth(n / 2)) / 2.0
    })
}

/// One tier's line.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TierLine {
    pub tier: String,
    pub customers: u64,
    /// Of them, customers who bought in the range.
    pub buyers_in_range: u64,
    /// Spend in `profiles.currency`: in the range, and to date (all time, up to the range's end).
    pub spend_in_range: f64,
    pub spend_to_date: f64,
    /// Spend to date per customer.
    pub ltv_average: f64,
    /// Projected spend over the next 12 months: each customer's spend rate over the scoring
    /// window (or since their first purchase, if later, but at least [`MIN_RATE_DAYS`])
    /// times 365.
    pub projected_12m: f64,
    pub projected_12m_average: f64,
}

/// The tier report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TierReport {
    pub range: Range,
    /// Customers are placed in the tier they had at the range's end.
    pub currency: String,
    /// Only customers who visited or bought at this store in the range, if given.
    pub store: Option<String>,
    pub tiers: Vec<TierLine>,
}

/// Spend in `currency` up to `end_ms` (exclusive): the profile's all-time totals less what
/// came later.
fn spend_to(p: &Profile, currency: &str, end_ms: i64) -> f64 {
    let all = p.spend.get(currency).map_or(0.0, |s| s.store + s.online);
    let later: f64 = p
        .recent_purchases
        .iter()
        .filter(|x| x.at_ms >= end_ms && x.currency == currency)
        .map(|x| x.total)
        .sum();
    (all - later).max(0.0)
}

/// The tier report over `range` from `profiles` (every customer's profile) and the number of
/// customers `without_profile` (neither a visit nor a purchase yet: the lowest tier; left out
/// when the report is about one store).
pub fn tier_report(
    profiles: &[Profile],
    without_profile: u64,
    params: &ProfileParams,
    range: Range,
    only_store: Option<&str>,
) -> TierReport {
    let (start, end) = range.bounds_ms();
    let as_of = end - 1;
    let mut lines: BTreeMap<&str, TierLine> = params
        .tier_names()
        .into_iter()
        .map(|t| {
            (
                t,
                TierLine {
                    tier: t.to_owned(),
                    ..TierLine::default()
                },
            )
        })
        .collect();
    for p in profiles {
        if only_store.is_some_and(|s| !came_to(p, s, (start, end))) {
            continue;
        }
        let tier = params.tier_of(p.scores(params, as_of).total());
        let Some(line) = lines.get_mut(tier) else {
            continue;
        };
        line.add(p, params, (start, end), as_of);
    }
    if only_store.is_none() {
        if let Some(line) =
            lines.get_mut(params.tier_of(Profile::new("").scores(params, as_of).total()))
        {
            line.customers += without_profile;
        }
    }
    let mut tiers: Vec<TierLine> = params
        .tier_names()
        .into_iter()
        .filter_map(|t| lines.remove(t))
        .collect();
    for l in &mut tiers {
        if l.customers > 0 {
            l.ltv_average = l.spend_to_date / l.customers as f64;
            l.projected_12m_average = l.projected_12m / l.customers as f64;
        }
    }
    TierReport {
        range,
        currency: params.currency.clone(),
        store: only_store.map(str::to_owned),
        tiers,
    }
}

/// Whether `p` visited or bought at store `s` (or online, for `online`) in `[start, end)`.
fn came_to(p: &Profile, s: &str, (start, end): (i64, i64)) -> bool {
    p.recent_visits
        .iter()
        .any(|v| v.store == s && (start..end).contains(&v.at_ms))
        || p.recent_purchases.iter().any(|x| {
            let there = match x.channel {
                SaleChannel::Online => s == "online",
                SaleChannel::Store => x.store.as_deref() == Some(s),
            };
            there && (start..end).contains(&x.at_ms)
        })
}

impl TierLine {
    /// Counts customer `p` in the tier: their spend in `[start, end)` and to date, and their
    /// spend rate over the window before `as_of` projected to a year.
    fn add(&mut self, p: &Profile, params: &ProfileParams, (start, end): (i64, i64), as_of: i64) {
        self.customers += 1;
        let in_range: f64 = p
            .recent_purchases
            .iter()
            .filter(|x| (start..end).contains(&x.at_ms) && x.currency == params.currency)
            .map(|x| x.total)
            .sum();
        self.buyers_in_range += u64::from(
            p.recent_purchases
                .iter()
                .any(|x| (start..end).contains(&x.at_ms)),
        );
        self.spend_in_range += in_range;
        self.spend_to_date += spend_to(p, &params.currency, end);
        if let Some(first) = p.first_purchase_ms.filter(|f| *f < end) {
            let window_days = i64::from(params.window_days);
            // Spend and span over the same days: the window, or since the first purchase.
            let span_days =
                ((end - first) / DAY_MS).clamp(MIN_RATE_DAYS.min(window_days), window_days);
            let spent = p.spend_within(as_of, params.window_days, &params.currency);
            self.projected_12m += spent / span_days as f64 * 365.0;
        }
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A store report as CSV: one `section,campaign,metric,value` line per figure.
pub fn store_csv(r: &StoreReport) -> String {
    let mut csv = FigureCsv(String::from("section,campaign,metric,value\n"));
    csv.line("visits", "", "visits", r.visits);
    csv.line("visits", "", "unique_visitors", r.unique_visitors);
    csv.line("visits", "", "open", r.visits_open);
    if let Some(m) = r.median_dwell_min {
        csv.line("visits", "", "median_dwell_min", format!("{m:.1}"));
    }
    for (b, n) in &r.dwell_minutes {
        csv.line("dwell", "", &format!("{b} min"), n);
    }
    csv.offers("", &r.offers);
    let p = &r.purchases;
    csv.line("purchases", "", "count", p.count);
    csv.line("purchases", "", "identified", p.identified);
    csv.line("purchases", "", "attributed", p.attributed);
    for (cur, v) in &p.revenue {
        csv.line(
            "purchases",
            "",
            &format!("revenue {cur}"),
            format!("{v:.2}"),
        );
    }
    for (cur, v) in &p.revenue_attributed {
        let metric = format!("revenue_attributed {cur}");
        csv.line("purchases", "", &metric, format!("{v:.2}"));
    }
    for c in &r.campaigns {
        csv.campaign(c);
    }
    csv.0
}

/// The lines of a store report's CSV.
struct FigureCsv(String);

impl FigureCsv {
    fn line(&mut self, section: &str, campaign: &str, metric: &str, value: impl std::fmt::Display) {
        self.0.push_str(&format!(
            "{section},{},{},{value}\n",
            csv_field(campaign),
            csv_field(metric)
        ));
    }

    fn offers(&mut self, campaign: &str, o: &Offers) {
        self.line("offers", campaign, "decided", o.decided);
        self.line("offers", campaign, "delivered", o.delivered);
        self.line("offers", campaign, "clicked", o.clicked);
        self.line("offers", campaign, "redeemed", o.redeemed);
    }

    /// A campaign's offers, attributed revenue, customers and returns by group, and lift.
    fn campaign(&mut self, c: &CampaignAtStore) {
        let id = c.campaign.as_str();
        self.offers(id, &c.offers);
        for (cur, v) in &c.revenue_attributed {
            let metric = format!("revenue_attributed {cur}");
            self.line("campaign", id, &metric, format!("{v:.2}"));
        }
        for (g, n) in &c.customers {
            self.line("campaign", id, &format!("customers {g}"), n);
        }
        for (g, n) in &c.returned {
            self.line("campaign", id, &format!("returned {g}"), n);
        }
        for l in &c.lift {
            let v = &l.variant;
            let ci = &l.difference_ci95;
            self.line(
                "lift",
                id,
                &format!("{v} difference"),
                format!("{:.4}", l.difference),
            );
            self.line(
                "lift",
                id,
                &format!("{v} difference_ci95_low"),
                format!("{:.4}", ci.low),
            );
            self.line(
                "lift",
                id,
                &format!("{v} difference_ci95_high"),
                format!("{:.4}", ci.high),
            );
            self.line("lift", id, &format!("{v} too_small"), l.too_small);
        }
    }
}

/// A tier report as CSV: one line per tier.
pub fn tiers_csv(r: &TierReport) -> String {
    let mut out = String::from(
        "tier,customers,buyers_in_range,spend_in_range,spend_to_date,ltv_average,projected_12m,projected_12m_average\n",
    );
    for t in &r.tiers {
        out.push_str(&format!(
            "{},{},{},{:.2},{:.2},{:.2},{:.2},{:.2}\n",
            csv_field(&t.tier),
            t.customers,
            t.buyers_in_range,
            t.spend_in_range,
            t.spend_to_date,
            t.ltv_average,
            t.projected_12m,
            t.projected_12m_average
        ));
    }
    out
}

/// Stores a report may name: the registry's and `online`.
pub fn known_store(registry: &crate::registry::Registry, id: &str) -> Option<Option<Tz>> {
    if id == "online" {
        return Some(None);
    }
    let s = registry
        .site()
        .stores
        .iter()
        .find(|s| s.id.as_str() == id)?;
    Some(crate::vocab::time_zone(&s.time_zone))
}

#[cfg(test)]
mod tests;
