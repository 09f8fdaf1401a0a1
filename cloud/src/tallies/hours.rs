//! What a store's report adds up, kept per store (or `online`) and UTC hour as the data
//! arrive, so a report reads a few thousand small rows, not every visit, delivery and purchase
//! of its range. Each writer adds to them in the commit that stores what they count:
//!
//! - the visit stage: `tally/{store}/{hour:016x}/{partition:04x}` in the visits space, a
//!   [`VisitHour`] (visits entered in the hour, those still open, finished ones by dwell minute,
//!   the visitors), one row per visit partition ([`visits_shard_key`]): instances running other
//!   partitions never write the same row, so they do not wait on each other. A customer is in
//!   one partition, so the rows' visitor hashes stay distinct when a report adds them up.
//!   Rows without a partition (written before the rows were split, and by the backfill) are
//!   read alike: a report reads every row of an hour;
//! - purchases: `tally/{place}/{hour:016x}` in the purchases space, a [`PurchaseHour`];
//! - the campaign stage (decisions and analysis rows), the delivery worker, tracked links and
//!   redemptions: counters `at-store/{store}/{hour:016x}/{campaign}/{metric}` in the campaigns
//!   space (`at-store/{store}/{hour:016x}/@{shard:04x}/…` the rows of one shard of them, as the
//!   funnel's), big-endian u64s like the funnel's, with the metrics `decided`, `delivered`,
//!   `clicked`, `redeemed` (by the hour the offer was decided) and `customers/{group}`,
//!   `returned/{group}` (by the hour of the customer's first trigger).
//!
//! A report reads them back (`crate::reports::tally`), and where the time zone's midnight is
//! not on a UTC hour, or for a store written before the tallies existed, it reads the stored
//! rows themselves.
//!
//! Tallies are aggregates: an erasure or the retention sweep deletes rows but leaves the
//! tallies, as it leaves the campaign funnels. A visitor is held as a 32-bit hash keyed with
//! the server secret ([`visitor`]), never as an id: a report counts the distinct hashes of its
//! range and corrects for the few that collide.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::sweep::Sweeper;
use crate::store::{scan_prefix_from, Commit, Space, Store, StoreError};
use crate::tallies::funnel::CounterKey;

pub const HOUR_MS: i64 = 3_600_000;

/// The UTC hour `ms` falls in.
pub fn hour_of(ms: i64) -> i64 {
    ms.div_euclid(HOUR_MS) * HOUR_MS
}

/// The start of `place`'s rows under `prefix`.
pub fn hour_prefix(prefix: &str, place: &str) -> String {
    format!("{prefix}/{place}/")
}

/// The key of `place`'s row under `prefix` for the hour of `at_ms`.
pub fn hour_key(prefix: &str, place: &str, at_ms: i64) -> String {
    format!(
        "{}{:016x}",
        hour_prefix(prefix, place),
        hour_of(at_ms).max(0)
    )
}

/// The hour tallies' key prefix (in the visits and the purchases space).
pub const TALLY: &str = "tally";
/// Every hour tally's key starts so.
pub const TALLIES: &str = "tally/";
/// The campaigns space's per-store hour counters' key prefix.
pub const AT_STORE: &str = "at-store";

/// The visits space's tally of `store` for the hour of `at_ms`.
pub fn visits_key(store: &str, at_ms: i64) -> String {
    hour_key(TALLY, store, at_ms)
}

/// The start of a place's hour tallies.
pub fn place_prefix(place: &str) -> String {
    hour_prefix(TALLY, place)
}

/// The hour before which the retention sweep has dropped a store's visitor hashes.
pub fn visitors_dropped_key(store: &str) -> String {
    format!("tally-visitors-dropped/{store}")
}

/// The visits space's tally of `store` for the hour of `at_ms` kept by visit partition
/// `shard` (its index): after the hour's row of before, in the same range of keys.
pub fn visits_shard_key(store: &str, at_ms: i64, shard: u16) -> String {
    format!("{}/{shard:04x}", visits_key(store, at_ms))
}

/// The purchases space's tally of `place` (a store, or `online`) for the hour of `at_ms`.
pub fn purchases_key(place: &str, at_ms: i64) -> String {
    hour_key(TALLY, place, at_ms)
}

/// The campaigns space's counter of `metric` for `campaign` at `store` in the hour of `at_ms`.
pub fn counter_key(store: &str, at_ms: i64, campaign: &str, metric: &str) -> String {
    counter(store, at_ms, campaign, metric).key(None)
}

/// The same counter, to be kept by shard (`at-store/{store}/{hour:016x}/@{shard:04x}/…`).
pub fn counter(store: &str, at_ms: i64, campaign: &str, metric: &str) -> CounterKey {
    CounterKey::new(
        format!("{}/", hour_key(AT_STORE, store, at_ms)),
        format!("{campaign}/{metric}"),
    )
}

/// The 32-bit hash a customer is counted by among a store's visitors.
pub fn visitor(secret: &[u8; 32], customer: &str) -> u32 {
    let h = crate::secrets::keyed(secret, &["report-visitor", customer]);
    u32::from_be_bytes([h[0], h[1], h[2], h[3]])
}

/// A store's visits entered in one hour (in one partition's row, or all of them added up).
///
/// `open` and the dwell counts are signed: a visit counted open in an hour's row of before the
/// rows were split by partition is counted ended in its partition's row, which then holds −1
/// open; the rows added up are right. Read them through [`VisitHour::open_visits`] and
/// [`VisitHour::dwell_histogram`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VisitHour {
    pub visits: u64,
    /// Of them, those not ended yet.
    pub open: i64,
    /// The ended ones by their dwell in whole minutes.
    pub dwell_min: BTreeMap<u64, i64>,
    /// The visitors' [`visitor`] hashes, sorted, each once.
    pub visitors: Vec<u32>,
}

impl VisitHour {
    /// A visit's index entry went from `was` (absent, or the visit's dwell: `None` while
    /// open) to `now`.
    pub fn change(&mut self, visitor: u32, was: Option<Option<u64>>, now: Option<u64>) {
        match was {
            None => {
                self.visits += 1;
                if let Err(i) = self.visitors.binary_search(&visitor) {
                    self.visitors.insert(i, visitor);
                }
            }
            Some(dwell_s) => self.count(dwell_s, false),
        }
        self.count(now, true);
    }

    /// Forgets a visitor (an erased customer); their visits stay counted.
    pub fn forget(&mut self, visitor: u32) {
        if let Ok(i) = self.visitors.binary_search(&visitor) {
            self.visitors.remove(i);
        }
    }

    /// Counts a visit open (`None`) or ended after `dwell_s`, or takes it back.
    pub fn count(&mut self, dwell_s: Option<u64>, add: bool) {
        let step = |n: &mut i64| *n += if add { 1 } else { -1 };
        match dwell_s {
            None => step(&mut self.open),
            Some(d) => {
                let n = self.dwell_min.entry(d / 60).or_default();
                step(n);
                if *n == 0 {
                    self.dwell_min.remove(&(d / 60));
                }
            }
        }
    }

    /// Adds `other`'s visits; the visitors are sorted again by [`VisitHour::normalize`].
    pub fn merge(&mut self, other: VisitHour) {
        self.visits += other.visits;
        self.open += other.open;
        for (m, n) in other.dwell_min {
            *self.dwell_min.entry(m).or_default() += n;
        }
        self.visitors.extend(other.visitors);
    }

    /// Sorts the visitors and keeps each once.
    pub fn normalize(&mut self) {
        self.visitors.sort_unstable();
        self.visitors.dedup();
    }

    /// The visits not ended yet (none below zero).
    pub fn open_visits(&self) -> u64 {
        u64::try_from(self.open).unwrap_or(0)
    }

    /// The ended visits by their dwell in whole minutes (none below zero).
    pub fn dwell_histogram(&self) -> BTreeMap<u64, u64> {
        self.dwell_min
            .iter()
            .filter_map(|(m, n)| Some((*m, u64::try_from(*n).ok().filter(|n| *n > 0)?)))
            .collect()
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        *self == VisitHour::default()
    }
}

/// The tally stored under `key` (`None`: none yet). One that cannot be read is logged and
/// started afresh: counting goes on.
pub fn read_tally<T: DeserializeOwned + Default>(key: &str, stored: Option<&[u8]>) -> T {
    stored.map_or_else(T::default, |b| {
        serde_json::from_slice(b).unwrap_or_else(|e| {
            tracing::error!(key, error = %e, "unreadable report tally started afresh");
            T::default()
        })
    })
}

/// The visit tallies a step changes, each with the bytes it was read as: the step's commit
/// expects them unchanged (the retention sweep may drop their visitors meanwhile).
#[derive(Default)]
pub struct VisitHours(BTreeMap<String, (VisitHour, Option<Vec<u8>>)>);

impl VisitHours {
    /// The tally of `store` for the hour of `at_ms` — partition `shard`'s row, or with `None`
    /// the hour's row of before the rows were split — read on first use.
    pub fn get(
        &mut self,
        store: &dyn Store,
        place: &str,
        at_ms: i64,
        shard: Option<u16>,
    ) -> Result<&mut VisitHour, StoreError> {
        let key = match shard {
            Some(shard) => visits_shard_key(place, at_ms, shard),
            None => visits_key(place, at_ms),
        };
        let (hour, _) = match self.0.entry(key) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                let stored = store.get(Space::Visits, v.key().as_bytes())?;
                let hour = read_tally(v.key(), stored.as_deref());
                v.insert((hour, stored))
            }
        };
        Ok(hour)
    }

    /// Adds the changed tallies to `c`, each expecting what it was read as (one read and
    /// left as it was is not written).
    pub fn write(self, c: &mut Commit) {
        for (key, (hour, stored)) in self.0 {
            let bytes = serde_json::to_vec(&hour).expect("tallies serialise");
            let unchanged = match &stored {
                Some(b) => *b == bytes,
                None => hour.is_empty(),
            };
            if unchanged {
                continue;
            }
            c.expect(Space::Visits, key.clone(), stored);
            c.put(Space::Visits, key, bytes);
        }
    }
}

/// Purchases at a store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Purchases {
    pub count: u64,
    /// Purchases by an identified customer.
    pub identified: u64,
    /// Revenue by currency.
    pub revenue: BTreeMap<String, f64>,
    /// Purchases paid with an offer's coupon, and their revenue by currency.
    pub attributed: u64,
    pub revenue_attributed: BTreeMap<String, f64>,
}

/// A place's purchases made in one hour.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PurchaseHour {
    pub totals: Purchases,
    /// The revenue each campaign's coupons brought, by currency.
    pub campaigns: BTreeMap<String, BTreeMap<String, f64>>,
}

impl PurchaseHour {
    /// One purchase of `total` in `currency`; `campaign`: the one whose coupon paid it.
    pub fn add(&mut self, currency: &str, total: f64, identified: bool, campaign: Option<&str>) {
        let t = &mut self.totals;
        t.count += 1;
        t.identified += u64::from(identified);
        *t.revenue.entry(currency.to_owned()).or_default() += total;
        if let Some(c) = campaign {
            t.attributed += 1;
            *t.revenue_attributed.entry(currency.to_owned()).or_default() += total;
            *self
                .campaigns
                .entry(c.to_owned())
                .or_default()
                .entry(currency.to_owned())
                .or_default() += total;
        }
    }

    /// Adds `other`'s purchases.
    pub fn merge(&mut self, other: PurchaseHour) {
        let (t, o) = (&mut self.totals, other.totals);
        t.count += o.count;
        t.identified += o.identified;
        t.attributed += o.attributed;
        add_money(&mut t.revenue, o.revenue);
        add_money(&mut t.revenue_attributed, o.revenue_attributed);
        for (c, m) in other.campaigns {
            add_money(self.campaigns.entry(c).or_default(), m);
        }
    }
}

fn add_money(to: &mut BTreeMap<String, f64>, from: BTreeMap<String, f64>) {
    for (currency, v) in from {
        *to.entry(currency).or_default() += v;
    }
}

/// Adds `row` (a [`PurchaseHour`] as stored) to `c`, expecting the row it read: one more
/// purchase of `place` at `at_ms`.
pub fn add_purchase(
    store: &dyn Store,
    c: &mut Commit,
    (place, at_ms): (&str, i64),
    (currency, total, identified, campaign): (&str, f64, bool, Option<&str>),
) -> Result<(), StoreError> {
    let key = purchases_key(place, at_ms);
    let old = store.get(Space::Purchases, key.as_bytes())?;
    let mut row: PurchaseHour = read_tally(&key, old.as_deref());
    row.add(currency, total, identified, campaign);
    c.expect(Space::Purchases, key.clone(), old);
    c.put(
        Space::Purchases,
        key,
        serde_json::to_vec(&row).expect("tallies serialise"),
    );
    Ok(())
}

/// Drops the visitor hashes of the store tallies of hours before `cutoff_hour` (their counts
/// stay), store by store from where the last sweep stopped (`tally-visitors-dropped/{store}`:
/// the hour before which they are gone). Answers how many tallies lost theirs.
pub fn drop_visitors(sw: &mut Sweeper, cutoff_hour: i64) -> Result<u64, StoreError> {
    let mut n = 0;
    let mut next = TALLIES.as_bytes().to_vec();
    // Each store with tallies, from its first key.
    while let Some((first, _)) =
        scan_prefix_from(sw.store, Space::Visits, TALLIES.as_bytes(), &next, 1)?.pop()
    {
        let text = String::from_utf8_lossy(&first[TALLIES.len()..]).into_owned();
        let Some((place, _)) = text.split_once('/') else {
            break;
        };
        next = place_prefix(place).into_bytes();
        next.push(0xff);
        n += drop_visitors_of(sw, place, cutoff_hour)?;
    }
    Ok(n)
}

/// [`drop_visitors`] for the tallies of one store.
fn drop_visitors_of(sw: &mut Sweeper, place: &str, cutoff: i64) -> Result<u64, StoreError> {
    let done_key = visitors_dropped_key(place);
    let done = match sw.store.get(Space::Visits, done_key.as_bytes())? {
        Some(b) => <[u8; 8]>::try_from(b.as_slice()).map_or(0, i64::from_be_bytes),
        None => 0,
    };
    if done >= cutoff {
        return Ok(0);
    }
    let mut n = 0;
    let mut from = visits_key(place, done).into_bytes();
    let to = visits_key(place, cutoff).into_bytes();
    loop {
        let page = sw.store.scan_range(Space::Visits, &from, &to, sw.batch)?;
        let before = n;
        let mut c = Commit::new();
        for (k, v) in &page {
            let key = String::from_utf8_lossy(k);
            let mut hour: VisitHour = read_tally(&key, Some(v));
            if hour.visitors.is_empty() {
                continue;
            }
            hour.visitors.clear();
            c.expect(Space::Visits, k.clone(), Some(v.clone()));
            c.put(
                Space::Visits,
                k.clone(),
                serde_json::to_vec(&hour).expect("tallies serialise"),
            );
            n += 1;
        }
        let full = page.len() == sw.batch;
        if !full {
            c.put(
                Space::Visits,
                done_key.clone(),
                cutoff.to_be_bytes().to_vec(),
            );
        }
        sw.commit(c, &[("tally_visitors", n - before)])?;
        match page.last() {
            Some((k, _)) if full => {
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(n),
        }
    }
}

/// Adds to `c` the store tally of `place`'s hour `hour` as a whole (the backfill writes them
/// so, from the stored rows).
pub fn put_visits(c: &mut Commit, place: &str, hour: i64, tally: &VisitHour) {
    c.put(
        Space::Visits,
        visits_key(place, hour),
        serde_json::to_vec(tally).expect("tallies serialise"),
    );
}

/// Adds to `c` the purchase tally of `place`'s hour `hour` as a whole.
pub fn put_purchases(c: &mut Commit, place: &str, hour: i64, tally: &PurchaseHour) {
    c.put(
        Space::Purchases,
        purchases_key(place, hour),
        serde_json::to_vec(tally).expect("tallies serialise"),
    );
}

/// Adds to `c` the value of the counter `metric` of `campaign` at `store` in hour `hour`.
pub fn put_counter(
    c: &mut Commit,
    (store, hour): (&str, i64),
    campaign: &str,
    metric: &str,
    value: u64,
) {
    c.put(
        Space::Campaigns,
        counter_key(store, hour, campaign, metric),
        value.to_be_bytes().to_vec(),
    );
}
