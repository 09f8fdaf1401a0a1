//! Measurement (DESIGN.md, "Measurement"): one analysis row per (campaign, analysis id) — a
//! random pseudonym per customer and campaign — holding the group, the first eligible trigger
//! and the outcomes; funnel counters per (campaign, group); and the report built from them
//! alone, so erasing a customer (who loses only the link to their analysis id) leaves every
//! total as it was.
//!
//! Keys in the campaigns space: `analysis-link/{campaign}/{customer}` → analysis id;
//! `analysis/{campaign}/{analysis id}` → [`AnalysisRow`]; `funnel/{campaign}/{group}/{metric}`
//! → a big-endian u64, and `funnel/{campaign}/@{shard:04x}/{group}/{metric}` the rows of one
//! shard of it that the decision stage and the delivery worker add to (see
//! `crate::tallies::funnel::CounterKey`): a report adds them all up.
//!
//! Lift: per variant over the holdout, the difference of the return rates with a Wald 95 %
//! interval, and their ratio with a log-scale 95 % interval, both over customers.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::store::barrier::scan_prefix;
use crate::store::{Space, Store, StoreError};

/// The holdout's group name.
pub const HOLDOUT: &str = "holdout";
/// A store visit entered this soon after the first trigger belongs to the same trip (the
/// store-wide visit that accompanies a zone's, still forming): it is not a return.
pub const SAME_TRIP_MS: i64 = 2 * 60_000;
/// Below this many customers in a group, or five outcomes (or non-outcomes) in either, the
/// normal approximation behind the intervals does not hold: the report says so.
pub const MIN_CUSTOMERS: u64 = 30;

/// One customer's measurement in one campaign, under a pseudonym.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisRow {
    /// A variant id or [`HOLDOUT`].
    pub group: String,
    pub first_trigger_ms: i64,
    /// The visit that triggered it (never its own return).
    #[serde(default)]
    pub visit: String,
    /// Returns count until here.
    #[serde(default)]
    pub window_end_ms: i64,
    /// How the customer can be reached: any of `ios`, `android`, `line`.
    #[serde(default)]
    pub platforms: BTreeSet<String>,
    /// The first new visit to the campaign's stores in the window, if any.
    #[serde(default)]
    pub returned_ms: Option<i64>,
    #[serde(default)]
    pub redeemed: u32,
    /// Sum of redeemed amounts.
    #[serde(default)]
    pub spend: f64,
    /// The store of the first trigger (`online` for an online purchase; empty in rows
    /// written before stores were recorded).
    #[serde(default)]
    pub store: String,
}

use super::keys;

/// A customer's link to their analysis row in a campaign.
pub enum Linked {
    /// No row: their first eligible trigger is still to come.
    No,
    /// The row, its key and its stored bytes.
    Row(String, AnalysisRow, Vec<u8>),
    /// Linked, but the row is missing or unreadable (logged): left alone, never recreated.
    Unusable,
}

/// A customer's analysis row in a campaign.
pub fn row_of(store: &dyn Store, campaign: &str, customer: &str) -> Result<Linked, StoreError> {
    let Some(id) = store.get(
        Space::Campaigns,
        keys::analysis_link(campaign, customer).as_bytes(),
    )?
    else {
        return Ok(Linked::No);
    };
    let key = keys::analysis(campaign, &String::from_utf8_lossy(&id));
    let Some(bytes) = store.get(Space::Campaigns, key.as_bytes())? else {
        tracing::error!(campaign, row = %key, "analysis link without its row");
        return Ok(Linked::Unusable);
    };
    match serde_json::from_slice(&bytes) {
        Ok(row) => Ok(Linked::Row(key, row, bytes)),
        Err(e) => {
            tracing::error!(campaign, row = %key, error = %e, "unreadable analysis row left alone");
            Ok(Linked::Unusable)
        }
    }
}

/// A 95 % interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// One variant's lift over the holdout.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Lift {
    pub variant: String,
    /// Treated rate − holdout rate.
    pub difference: f64,
    pub difference_ci95: Interval,
    /// Treated rate ÷ holdout rate (absent when the holdout rate is 0).
    pub ratio: Option<f64>,
    pub ratio_ci95: Option<Interval>,
    /// The groups are too small (or the outcomes too rare) for the intervals to be read.
    pub too_small: bool,
}

const Z95: f64 = 1.959_963_984_540_054;

/// Lift of a group with `x1` of `n1` customers returning over one with `x0` of `n0`.
pub fn lift(variant: &str, (x1, n1): (u64, u64), (x0, n0): (u64, u64)) -> Lift {
    let rate = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let (p1, p0) = (rate(x1, n1), rate(x0, n0));
    let difference = p1 - p0;
    let var = |p: f64, n: u64| {
        if n == 0 {
            0.0
        } else {
            p * (1.0 - p) / n as f64
        }
    };
    let se = (var(p1, n1) + var(p0, n0)).sqrt();
    let (ratio, ratio_ci95) = if x0 > 0 && x1 > 0 {
        let r = p1 / p0;
        let se_log = ((1.0 - p1) / x1 as f64 + (1.0 - p0) / x0 as f64).sqrt();
        (
            Some(r),
            Some(Interval {
                low: (r.ln() - Z95 * se_log).exp(),
                high: (r.ln() + Z95 * se_log).exp(),
            }),
        )
    } else {
        (None, None)
    };
    let small = |x: u64, n: u64| n < MIN_CUSTOMERS || x < 5 || n - x < 5;
    Lift {
        variant: variant.to_owned(),
        difference,
        difference_ci95: Interval {
            low: difference - Z95 * se,
            high: difference + Z95 * se,
        },
        ratio,
        ratio_ci95,
        too_small: small(x1, n1) || small(x0, n0),
    }
}

/// One group's line of the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupReport {
    pub group: String,
    /// Customers with an eligible trigger (analysis rows).
    pub customers: u64,
    /// Of them, reachable on each platform.
    pub platforms: BTreeMap<String, u64>,
    /// The funnel: triggers, eligible, sent, delivered, expired, cancelled, redeemed, and
    /// `suppressed:REASON` / `failed:REASON` counts.
    pub funnel: BTreeMap<String, u64>,
    /// Customers with a new visit to the campaign's stores in the attribution window.
    pub returned: u64,
    /// Customers whose attribution window is still open: while any are, the rates count
    /// returns so far (both groups alike, as assignment is random, so the difference leans
    /// toward zero, never away from it).
    pub windows_open: u64,
    pub return_rate: f64,
    pub redeemed_customers: u64,
    pub spend: f64,
}

/// A campaign's report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub campaign: String,
    pub attribution_days: u32,
    pub groups: Vec<GroupReport>,
    pub lift: Vec<Lift>,
}

/// Builds the report of `campaign` from its analysis rows and funnel counters; `variants`
/// lists its variant ids (groups appear even when empty).
pub fn build(
    store: &dyn Store,
    campaign: &str,
    variants: &[String],
    attribution_days: u32,
    now_ms: i64,
) -> Result<Report, StoreError> {
    let mut groups: BTreeMap<String, GroupReport> = variants
        .iter()
        .cloned()
        .chain([HOLDOUT.to_owned()])
        .map(|g| {
            (
                g.clone(),
                GroupReport {
                    group: g,
                    ..GroupReport::default()
                },
            )
        })
        .collect();
    let prefix = super::keys::analysis_prefix(campaign);
    for (key, bytes) in scan_prefix(store, Space::Campaigns, prefix.as_bytes(), usize::MAX)? {
        let row: AnalysisRow = serde_json::from_slice(&bytes)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", String::from_utf8_lossy(&key))))?;
        let g = groups
            .entry(row.group.clone())
            .or_insert_with(|| GroupReport {
                group: row.group.clone(),
                ..GroupReport::default()
            });
        g.customers += 1;
        for p in &row.platforms {
            *g.platforms.entry(p.clone()).or_default() += 1;
        }
        g.returned += u64::from(row.returned_ms.is_some());
        g.windows_open += u64::from(row.window_end_ms > now_ms);
        g.redeemed_customers += u64::from(row.redeemed > 0);
        g.spend += row.spend;
    }
    let prefix = crate::tallies::funnel::funnel_prefix(campaign);
    for (key, bytes) in scan_prefix(store, Space::Campaigns, prefix.as_bytes(), usize::MAX)? {
        let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        // A counter kept by shard has a row per shard: they add up.
        let Some((group, metric)) = crate::tallies::funnel::unsharded(&rest).split_once('/') else {
            continue;
        };
        let n =
            crate::tallies::funnel::counter_value(&String::from_utf8_lossy(&key), Some(&bytes))?;
        *groups
            .entry(group.to_owned())
            .or_insert_with(|| GroupReport {
                group: group.to_owned(),
                ..GroupReport::default()
            })
            .funnel
            .entry(metric.to_owned())
            .or_default() += n;
    }
    for g in groups.values_mut() {
        g.return_rate = if g.customers == 0 {
            0.0
        } else {
            g.returned as f64 / g.customers as f64
        };
    }
    let holdout = groups
        .get(HOLDOUT)
        .map(|h| (h.returned, h.customers))
        .unwrap_or((0, 0));
    let lift = groups
        .values()
        .filter(|g| g.group != HOLDOUT)
        .map(|g| lift(&g.group, (g.returned, g.customers), holdout))
        .collect();
    Ok(Report {
        campaign: campaign.to_owned(),
        attribution_days,
        groups: groups.into_values().collect(),
        lift,
    })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The report as CSV: one line per group, its lift over the holdout on the variants' lines.
pub fn to_csv(r: &Report) -> String {
    let metrics: BTreeSet<&String> = r.groups.iter().flat_map(|g| g.funnel.keys()).collect();
    let mut out = String::from(
        "campaign,group,customers,ios,android,line,returned,windows_open,return_rate,redeemed_customers,spend",
    );
    for m in &metrics {
        out.push(',');
        out.push_str(&csv_field(m));
    }
    out.push_str(
        ",difference,difference_low,difference_high,ratio,ratio_low,ratio_high,too_small\n",
    );
    let opt = |x: Option<f64>| x.map(|v| format!("{v:.6}")).unwrap_or_default();
    for g in &r.groups {
        let p = |k: &str| g.platforms.get(k).copied().unwrap_or(0);
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{:.6},{},{:.2}",
            csv_field(&r.campaign),
            csv_field(&g.group),
            g.customers,
            p("ios"),
            p("android"),
            p("line"),
            g.returned,
            g.windows_open,
            g.return_rate,
            g.redeemed_customers,
            g.spend
        ));
        for m in &metrics {
            out.push_str(&format!(",{}", g.funnel.get(*m).copied().unwrap_or(0)));
        }
        match r.lift.iter().find(|l| l.variant == g.group) {
            Some(l) => out.push_str(&format!(
                ",{:.6},{:.6},{:.6},{},{},{},{}\n",
                l.difference,
                l.difference_ci95.low,
                l.difference_ci95.high,
                opt(l.ratio),
                opt(l.ratio_ci95.map(|i| i.low)),
                opt(l.ratio_ci95.map(|i| i.high)),
                l.too_small
            )),
            None => out.push_str(",,,,,,,\n"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Commit;
    use crate::tallies::funnel::Counts;
    use rand::{Rng, SeedableRng};

    /// Simulated populations with a known effect: 5,000 customers each, 20 % of the holdout
    /// and 26 % of the treated return. The 95 % interval must cover the true difference in
    /// about 95 % of seeded runs — at least 90 of 100.
    #[test]
    fn the_difference_interval_covers_the_true_effect_in_95_percent_of_runs() {
        let (n, p0, p1) = (5_000u64, 0.20, 0.26);
        let mut covered = 0;
        let mut ratio_covered = 0;
        for seed in 0..100u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut draw = |p: f64| (0..n).filter(|_| rng.random_bool(p)).count() as u64;
            let (x0, x1) = (draw(p0), draw(p1));
            let l = lift("a", (x1, n), (x0, n));
            assert!(!l.too_small);
            if l.difference_ci95.low <= p1 - p0 && p1 - p0 <= l.difference_ci95.high {
                covered += 1;
            }
            let r = l.ratio_ci95.unwrap();
            if r.low <= p1 / p0 && p1 / p0 <= r.high {
                ratio_covered += 1;
            }
        }
        eprintln!("95 % intervals covered the true difference in {covered}/100 runs, the ratio in {ratio_covered}/100");
        assert!(covered >= 90, "covered {covered}/100");
        assert!(ratio_covered >= 90, "ratio covered {ratio_covered}/100");
    }

    /// The report reads the same lift from stored analysis rows.
    #[test]
    fn the_report_computes_lift_from_the_stored_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sled_store::SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut c = Commit::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut x, mut n) = ([0u64; 2], [0u64; 2]);
        for i in 0..2_000u32 {
            let treated = i % 2 == 0;
            let returned = rng.random_bool(if treated { 0.26 } else { 0.20 });
            let g = usize::from(treated);
            n[g] += 1;
            x[g] += u64::from(returned);
            let row = AnalysisRow {
                group: if treated { "a".into() } else { HOLDOUT.into() },
                first_trigger_ms: 0,
                visit: "v".into(),
                window_end_ms: 1,
                platforms: BTreeSet::from(["ios".to_owned()]),
                returned_ms: returned.then_some(1),
                redeemed: 0,
                spend: 0.0,
                store: "s1".into(),
            };
            c.put(
                Space::Campaigns,
                keys::analysis("c", &format!("{i:08}")),
                serde_json::to_vec(&row).unwrap(),
            );
        }
        let mut counts = Counts::default();
        counts.add("c", "a", "sent");
        counts.add("c", "a", "sent");
        counts.write(&store, &mut c).unwrap();
        // Two instances' shards of the same counter add up with the unsharded row.
        for shard in [3, 12] {
            let mut counts = Counts::in_shard(shard);
            counts.add("c", "a", "sent");
            counts.write(&store, &mut c).unwrap();
        }
        store.commit(c).unwrap();
        let r = build(&store, "c", &["a".to_owned(), "b".to_owned()], 7, 0).unwrap();
        // Every row has a field under each header (a spreadsheet's columns line up).
        let csv = to_csv(&r);
        let header = csv.lines().next().unwrap().split(',').count();
        for line in csv.lines().skip(1) {
            assert_eq!(line.split(',').count(), header, "{line}\n{csv}");
        }
        assert!(csv.lines().count() > 2, "{csv}");
        assert_eq!(r.lift[0], lift("a", (x[1], n[1]), (x[0], n[0])));
        assert_eq!(r.lift[1].variant, "b");
        assert_eq!(
            r.groups.iter().find(|g| g.group == "a").unwrap().funnel["sent"],
            4
        );
        assert_eq!(
            r.groups
                .iter()
                .find(|g| g.group == HOLDOUT)
                .unwrap()
                .platforms["ios"],
            n[0]
        );
    }

    #[test]
    fn small_groups_and_rare_outcomes_are_flagged() {
        assert!(lift("a", (3, 20), (2, 20)).too_small);
        assert!(lift("a", (2, 1000), (1, 1000)).too_small);
        let none = lift("a", (10, 100), (0, 100));
        assert!(none.too_small && none.ratio.is_none());
        assert!(!lift("a", (260, 1000), (200, 1000)).too_small);
    }
}
