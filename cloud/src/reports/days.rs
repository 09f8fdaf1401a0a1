//! Each store's day as the people who run it read it (`GET /v1/admin/reports/today`, the
//! dashboard's overview and store list): today so far in the store's own time zone — visits,
//! visitors, median dwell, offers delivered, coupons redeemed, revenue — beside the same
//! weekday a week before, cut at the same time of day so the two compare; and the stores
//! ranked by their visits against that day.

use std::collections::BTreeMap;

use chrono::{Days, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::registry::Registry;
use crate::reports::{store_report_until, Range};
use crate::store::{Store, StoreError};

const WEEK_MS: i64 = 7 * 86_400_000;

/// One day's figures at a store.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DayFigures {
    pub visits: u64,
    pub visitors: u64,
    pub median_dwell_min: Option<f64>,
    pub offers_delivered: u64,
    pub redeemed: u64,
    /// By currency.
    pub revenue: BTreeMap<String, f64>,
}

/// A store's day so far, and the same weekday a week before up to the same local time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreDay {
    pub store: String,
    pub name: String,
    pub time_zone: String,
    /// The store's local date today.
    pub date: chrono::NaiveDate,
    pub today: DayFigures,
    pub last_week: DayFigures,
}

/// The stores' days, in the registry's order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Today {
    pub stores: Vec<StoreDay>,
    /// The store with the most visits above its last week (absent with fewer than 2 stores
    /// or no visits on either day anywhere).
    pub best: Option<String>,
    pub worst: Option<String>,
}

/// A store's figures on its local `date` up to `until_ms`.
fn figures(
    store: &dyn Store,
    id: &str,
    date: chrono::NaiveDate,
    tz: Tz,
    until_ms: i64,
    secret: &[u8; 32],
) -> Result<DayFigures, StoreError> {
    let Ok(range) = Range::new(date, date, tz) else {
        return Ok(DayFigures::default());
    };
    let r = store_report_until(store, id, range, until_ms, secret)?;
    Ok(DayFigures {
        visits: r.visits,
        visitors: r.unique_visitors,
        median_dwell_min: r.median_dwell_min,
        offers_delivered: r.offers.delivered,
        redeemed: r.offers.redeemed,
        revenue: r.purchases.revenue,
    })
}

/// Every store's day at `now_ms` (the cloud's clock).
pub fn today(
    store: &dyn Store,
    registry: &Registry,
    secret: &[u8; 32],
    now_ms: i64,
) -> Result<Today, StoreError> {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_default();
    let mut stores = Vec::new();
    for s in &registry.site().stores {
        let tz = crate::vocab::time_zone(&s.time_zone).unwrap_or(chrono_tz::UTC);
        let local = now.with_timezone(&tz);
        let date = local.date_naive();
        let week_before = date.checked_sub_days(Days::new(7)).unwrap_or(date);
        // The same local time a week before (across a DST change too).
        let week_before_now = week_before
            .and_time(local.time())
            .and_local_timezone(tz)
            .earliest()
            .map_or(now_ms - WEEK_MS, |t| t.timestamp_millis());
        stores.push(StoreDay {
            store: s.id.to_string(),
            name: s.name.clone(),
            time_zone: tz.name().to_owned(),
            date,
            today: figures(store, s.id.as_str(), date, tz, now_ms, secret)?,
            last_week: figures(
                store,
                s.id.as_str(),
                week_before,
                tz,
                week_before_now,
                secret,
            )?,
        });
    }
    let (best, worst) = ranked(&stores);
    Ok(Today {
        stores,
        best,
        worst,
    })
}

/// The stores with the most and the fewest visits against their last week's.
fn ranked(stores: &[StoreDay]) -> (Option<String>, Option<String>) {
    let change = |d: &StoreDay| d.today.visits as i64 - d.last_week.visits as i64;
    let busy = stores
        .iter()
        .filter(|d| d.today.visits + d.last_week.visits > 0)
        .collect::<Vec<_>>();
    if stores.len() < 2 || busy.is_empty() {
        return (None, None);
    }
    let best = stores
        .iter()
        .max_by_key(|d| (change(d), d.today.visits))
        .map(|d| d.store.clone());
    let worst = stores
        .iter()
        .min_by_key(|d| (change(d), d.today.visits))
        .map(|d| d.store.clone());
    let worst = worst.filter(|w| Some(w) != best.as_ref());
    (best, worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(store: &str, today: u64, last_week: u64) -> StoreDay {
        StoreDay {
            store: store.into(),
            name: store.into(),
            time_zone: "Asia/Tokyo".into(),
            date: chrono::NaiveDate::from_ymd_opt(2026, 12, 7).unwrap(),
            today: DayFigures {
                visits: today,
                ..DayFigures::default()
            },
            last_week: DayFigures {
                visits: last_week,
                ..DayFigures::default()
            },
        }
    }

    #[test]
    fn the_best_and_worst_stores_are_by_visits_against_last_week() {
        let (best, worst) = ranked(&[day("a", 10, 2), day("b", 5, 9), day("c", 4, 4)]);
        assert_eq!(best.as_deref(), Some("a"));
        assert_eq!(worst.as_deref(), Some("b"));
        assert_eq!(ranked(&[day("a", 10, 2)]), (None, None));
        assert_eq!(ranked(&[day("a", 0, 0), day("b", 0, 0)]), (None, None));
    }
}
