//! A store report's figures read back: from the hour tallies the writers keep
//! ([`crate::tallies::hours`]) and, where the time zone's midnight is not on a UTC hour (India,
//! Nepal, …), from the stored rows of the part hours at its ends ([`Tally::from_rows`]). The
//! same reading of the rows over all time fills the tallies once in a store written before
//! they existed ([`backfill`]); it is also the audit a report can be checked against
//! (`?source=rows`).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::Offers;
use crate::delivery::{self, Delivery, Status};
use crate::purchases;
use crate::store::{prefix_end, Commit, Space, Store, StoreError};
use crate::tallies::funnel;
use crate::tallies::hours::{self, hour_key, hour_of, visitor, PurchaseHour, VisitHour};
use crate::visits::keys;

/// Set in the meta space once the tallies hold everything stored before they existed.
const FILLED: &[u8] = b"report-tallies";
/// Entries read per page when going through stored rows.
const PAGE: usize = 4096;
/// Hours written per commit by [`backfill`].
const HOURS_PER_COMMIT: usize = 500;

/// A customer's measurement in a campaign at a store: first triggered, came back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Group {
    pub customers: u64,
    pub returned: u64,
}

/// One thing a report counts, read from the stored rows.
#[derive(Debug, Clone, PartialEq)]
enum Fact {
    Visit {
        visitor: u32,
        dwell_s: Option<u64>,
    },
    Offer {
        campaign: String,
        delivered: bool,
        clicked: bool,
        redeemed: bool,
    },
    Purchase {
        currency: String,
        total: f64,
        identified: bool,
        campaign: Option<String>,
    },
    Customer {
        campaign: String,
        group: String,
        returned: bool,
    },
}

/// What a store's report adds up over some span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub visits: VisitHour,
    pub purchases: PurchaseHour,
    /// By campaign.
    pub offers: BTreeMap<String, Offers>,
    /// By campaign and group.
    pub groups: BTreeMap<String, BTreeMap<String, Group>>,
}

impl Tally {
    fn add(&mut self, fact: Fact) {
        match fact {
            Fact::Visit { visitor, dwell_s } => {
                self.visits.visits += 1;
                self.visits.visitors.push(visitor);
                self.visits.count(dwell_s, true);
            }
            Fact::Offer {
                campaign,
                delivered,
                clicked,
                redeemed,
            } => {
                let o = self.offers.entry(campaign).or_default();
                o.decided += 1;
                o.delivered += u64::from(delivered);
                o.clicked += u64::from(clicked);
                o.redeemed += u64::from(redeemed);
            }
            Fact::Purchase {
                currency,
                total,
                identified,
                campaign,
            } => self
                .purchases
                .add(&currency, total, identified, campaign.as_deref()),
            Fact::Customer {
                campaign,
                group,
                returned,
            } => {
                let g = self
                    .groups
                    .entry(campaign)
                    .or_default()
                    .entry(group)
                    .or_default();
                g.customers += 1;
                g.returned += u64::from(returned);
            }
        }
    }

    /// Adds a stored counter's value (false: `metric` is not one of the counters').
    fn counter(&mut self, campaign: &str, metric: &str, n: u64) -> bool {
        if let Some((what, group)) = metric.split_once('/') {
            if !["customers", "returned"].contains(&what) {
                return false;
            }
            let g = self
                .groups
                .entry(campaign.to_owned())
                .or_default()
                .entry(group.to_owned())
                .or_default();
            if what == "customers" {
                g.customers += n;
            } else {
                g.returned += n;
            }
            return true;
        }
        if !["decided", "delivered", "clicked", "redeemed"].contains(&metric) {
            return false;
        }
        let o = self.offers.entry(campaign.to_owned()).or_default();
        match metric {
            "decided" => o.decided += n,
            "delivered" => o.delivered += n,
            "clicked" => o.clicked += n,
            _ => o.redeemed += n,
        }
        true
    }

    /// Every counter this tally holds, `(campaign, metric, value)`, zero ones left out.
    fn counters(&self) -> Vec<(String, String, u64)> {
        let mut out = Vec::new();
        for (c, o) in &self.offers {
            for (m, n) in [
                ("decided", o.decided),
                ("delivered", o.delivered),
                ("clicked", o.clicked),
                ("redeemed", o.redeemed),
            ] {
                out.push((c.clone(), m.to_owned(), n));
            }
        }
        for (c, groups) in &self.groups {
            for (g, v) in groups {
                out.push((c.clone(), format!("customers/{g}"), v.customers));
                out.push((c.clone(), format!("returned/{g}"), v.returned));
            }
        }
        out.retain(|(_, _, n)| *n > 0);
        out
    }

    pub fn merge(&mut self, other: Tally) {
        self.visits.merge(other.visits);
        self.purchases.merge(other.purchases);
        for (c, o) in other.offers {
            self.offers.entry(c).or_default().add(&o);
        }
        for (c, groups) in other.groups {
            let to = self.groups.entry(c).or_default();
            for (g, v) in groups {
                let t = to.entry(g).or_default();
                t.customers += v.customers;
                t.returned += v.returned;
            }
        }
    }

    /// How many distinct visitors: the distinct hashes, corrected for the expected
    /// collisions among 2³² values (exact in practice up to tens of thousands; about one in
    /// a hundred thousand off at a million).
    pub fn unique_visitors(&mut self) -> u64 {
        self.visits.normalize();
        let m = 2f64.powi(32);
        let v = self.visits.visitors.len() as f64;
        (-m * (-v / m).ln_1p()).round() as u64
    }

    /// The tallies of `place` for the UTC hours in `[from_hour, to_hour)`.
    pub fn read(
        store: &dyn Store,
        place: &str,
        (from_hour, to_hour): (i64, i64),
    ) -> Result<Tally, StoreError> {
        let mut t = Tally::default();
        let bounds = |prefix: &str| {
            (
                hour_key(prefix, place, from_hour),
                hour_key(prefix, place, to_hour),
            )
        };
        let (from, to) = bounds(hours::TALLY);
        let (from, to) = (from.as_bytes(), to.as_bytes());
        let unreadable = |k: &[u8], e: serde_json::Error| {
            let key = String::from_utf8_lossy(k);
            tracing::error!(key = %key, error = %e, "unreadable report tally left out");
        };
        each_entry(store, Space::Visits, (from, to), |k, v| {
            match serde_json::from_slice(v) {
                Ok(hour) => t.visits.merge(hour),
                Err(e) => unreadable(k, e),
            }
            Ok(())
        })?;
        each_entry(store, Space::Purchases, (from, to), |k, v| {
            match serde_json::from_slice(v) {
                Ok(hour) => t.purchases.merge(hour),
                Err(e) => unreadable(k, e),
            }
            Ok(())
        })?;
        let (from, to) = bounds(hours::AT_STORE);
        let prefix_len = hours::hour_prefix(hours::AT_STORE, place).len();
        each_entry(
            store,
            Space::Campaigns,
            (from.as_bytes(), to.as_bytes()),
            |k, v| {
                let key = String::from_utf8_lossy(k);
                // {hour:016x}/[@{shard:04x}/]{campaign}/{metric}
                let parsed = key
                    .get(prefix_len + 16 + 1..)
                    .and_then(|rest| funnel::unsharded(rest).split_once('/'))
                    .zip(<[u8; 8]>::try_from(v).ok());
                let counted = parsed.is_some_and(|((campaign, metric), n)| {
                    t.counter(campaign, metric, u64::from_be_bytes(n))
                });
                if !counted {
                    tracing::error!(key = %key, "unreadable report counter left out");
                }
                Ok(())
            },
        )?;
        Ok(t)
    }

    /// The same figures from the stored rows of `place` in the `[start, end)` spans: its
    /// visits, deliveries, purchases and analysis rows (what an erasure or retention deleted
    /// is missing here but still in the tallies).
    pub fn from_rows(
        store: &dyn Store,
        place: &str,
        spans: &[(i64, i64)],
        secret: &[u8; 32],
    ) -> Result<Tally, StoreError> {
        let mut t = Tally::default();
        let mut add = |_: &str, _: i64, fact: Fact| t.add(fact);
        for span in spans {
            each_indexed_fact(store, Some(place), *span, secret, &mut add)?;
        }
        each_customer_fact(store, Some(place), spans, &mut add)?;
        t.visits.normalize();
        Ok(t)
    }
}

/// Calls `f` with each entry of `space` in `[from, to)`, a page at a time.
fn each_entry(
    store: &dyn Store,
    space: Space,
    (from, to): (&[u8], &[u8]),
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut from = from.to_vec();
    loop {
        let page = store.scan_range(space, &from, to, PAGE)?;
        for (k, v) in &page {
            f(k, v)?;
        }
        match page.last() {
            Some((k, _)) if page.len() == PAGE => {
                from = k.clone();
                from.push(0);
            }
            _ => return Ok(()),
        }
    }
}

/// The index range of `prefix` for `place` in `[start, end)`, or every place's whole index.
fn index_range(prefix: &str, place: Option<&str>, (start, end): (i64, i64)) -> (String, String) {
    match place {
        Some(p) => (
            format!("{prefix}{p}/{:016x}", start.max(0)),
            format!("{prefix}{p}/{:016x}", end.max(0)),
        ),
        None => (
            prefix.to_owned(),
            String::from_utf8(prefix_end(prefix.as_bytes()).expect("a prefix short of 0xff"))
                .expect("the prefix ends in ASCII"),
        ),
    }
}

/// `{place}/{ms:016x}/{id}` (after an index's prefix) as its parts.
fn place_time_id(rest: &str) -> Option<(&str, i64, &str)> {
    let mut parts = rest.rsplitn(3, '/');
    let id = parts.next()?;
    let ms = i64::from_str_radix(parts.next()?, 16).ok()?;
    Some((parts.next()?, ms, id))
}

/// What a report reads of a visit row.
#[derive(Deserialize)]
struct VisitHead {
    customer: String,
    dwell_s: Option<u64>,
}

/// What a report reads of a purchase row.
#[derive(Deserialize)]
struct PurchaseHead {
    currency: String,
    total: f64,
    customer_id: Option<String>,
    attributed: Option<crate::purchases::Attribution>,
}

/// Calls `f(place, at_ms, id, value)` for each entry `{prefix}{place}/{ms:016x}/{id}` of the
/// index of `place` (every place when `None`) in `space` within `span`. An entry that cannot
/// be parsed is logged and left out.
fn each_index_entry(
    store: &dyn Store,
    (space, prefix): (Space, &str),
    place: Option<&str>,
    span: (i64, i64),
    mut f: impl FnMut(&str, i64, &str, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let (from, to) = index_range(prefix, place, span);
    each_entry(store, space, (from.as_bytes(), to.as_bytes()), |k, v| {
        let key = String::from_utf8_lossy(k);
        match place_time_id(&key[prefix.len()..]) {
            Some((s, at, id)) => f(s, at, id, v),
            None => {
                tracing::error!(key = %key, "unreadable index entry left out of a report");
                Ok(())
            }
        }
    })
}

/// The row under `key`, if there is one that can be read (one that cannot is logged as an
/// unreadable `what`).
fn read_row<T: DeserializeOwned>(
    store: &dyn Store,
    space: Space,
    key: &str,
    what: &str,
) -> Result<Option<T>, StoreError> {
    let Some(bytes) = store.get(space, key.as_bytes())? else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(row) => Ok(Some(row)),
        Err(e) => {
            tracing::error!(key, error = %e, "unreadable {what} left out of a report");
            Ok(None)
        }
    }
}

/// Calls `f(place, at_ms, fact)` for the visits, offers and purchases the stored rows hold
/// for `place` (every store and `online` when `None`) in `[start, end)`, through their indexes.
/// Rows that cannot be read are logged and left out.
fn each_indexed_fact(
    store: &dyn Store,
    place: Option<&str>,
    span: (i64, i64),
    secret: &[u8; 32],
    f: &mut dyn FnMut(&str, i64, Fact),
) -> Result<(), StoreError> {
    // Store visits, from their scope index.
    let visits = (Space::Visits, keys::STORE_SCOPE_INDEX);
    each_index_entry(store, visits, place, span, |s, at, id, value| {
        let visit = match keys::parse_scope_index_value(value) {
            Some((customer, dwell_s)) => VisitHead { customer, dwell_s },
            // An older entry without its figures: the visit row has them.
            None => match read_row(store, Space::Visits, &keys::visit(id), "visit")? {
                Some(v) => v,
                None => return Ok(()),
            },
        };
        let visitor = visitor(secret, &visit.customer);
        f(
            s,
            at,
            Fact::Visit {
                visitor,
                dwell_s: visit.dwell_s,
            },
        );
        Ok(())
    })?;

    // Offers, from the deliveries' store index.
    let deliveries = (Space::Campaigns, delivery::keys::STORE_INDEX);
    each_index_entry(store, deliveries, place, span, |s, at, id, _| {
        let key = delivery::row_key(id);
        let Some(d) = read_row::<Delivery>(store, Space::Campaigns, &key, "delivery")? else {
            return Ok(());
        };
        let exists = |key: String| -> Result<bool, StoreError> {
            Ok(store.get(Space::Campaigns, key.as_bytes())?.is_some())
        };
        let fact = Fact::Offer {
            delivered: d.status == Status::Delivered,
            clicked: exists(delivery::clicked_key(&d.id))?,
            redeemed: exists(delivery::keys::redemption_key(&d.coupon))?,
            campaign: d.campaign,
        };
        f(s, at, fact);
        Ok(())
    })?;

    // Purchases, from their store index and the online one (`online/{ms:016x}/{id}`, whose
    // place is its prefix).
    let mut indexes = Vec::new();
    if place.is_none_or(|p| p != "online") {
        indexes.push(((Space::Purchases, purchases::keys::STORE_INDEX), place));
    }
    if place.is_none_or(|p| p == "online") {
        indexes.push(((Space::Purchases, ""), Some("online")));
    }
    for (index, place) in indexes {
        each_index_entry(store, index, place, span, |s, at, id, _| {
            let key = purchases::keys::row(id);
            let Some(p) = read_row::<PurchaseHead>(store, Space::Purchases, &key, "purchase")?
            else {
                return Ok(());
            };
            let fact = Fact::Purchase {
                currency: p.currency,
                total: p.total,
                identified: p.customer_id.is_some(),
                campaign: p.attributed.map(|a| a.campaign),
            };
            f(s, at, fact);
            Ok(())
        })?;
    }
    Ok(())
}

/// Calls `f(place, at_ms, fact)` for the customers first triggered at `place` (every store
/// when `None`) within any of `spans`: one pass over every campaign's analysis rows (they have
/// no index by store and time).
fn each_customer_fact(
    store: &dyn Store,
    place: Option<&str>,
    spans: &[(i64, i64)],
    f: &mut dyn FnMut(&str, i64, Fact),
) -> Result<(), StoreError> {
    let within = |ms: i64| {
        spans
            .iter()
            .any(|(start, end)| (*start..*end).contains(&ms))
    };
    // Customers first triggered, from every campaign's analysis rows.
    let prefix = crate::campaigns::keys::ANALYSES;
    let to = prefix_end(prefix.as_bytes()).expect("a key prefix below 0xff");
    each_entry(store, Space::Campaigns, (prefix.as_bytes(), &to), |k, v| {
        let key = String::from_utf8_lossy(k);
        let Some((campaign, _)) = key[prefix.len()..].split_once('/') else {
            return Ok(());
        };
        let row: crate::campaigns::report::AnalysisRow = match serde_json::from_slice(v) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(row = %key, error = %e, "unreadable analysis row left out of a report");
                return Ok(());
            }
        };
        let here = place.is_none_or(|p| p == row.store);
        if row.store.is_empty() || !here || !within(row.first_trigger_ms) {
            return Ok(());
        }
        f(
            &row.store,
            row.first_trigger_ms,
            Fact::Customer {
                campaign: campaign.to_owned(),
                group: row.group,
                returned: row.returned_ms.is_some(),
            },
        );
        Ok(())
    })?;
    Ok(())
}

/// Fills the tallies from the stored rows, once: in a store written before they existed (the
/// marker is set when done; until then, running again writes the same values). Runs before
/// any writer starts. Returns the hours written, or `None` if they were filled before.
pub fn backfill(store: &dyn Store, secret: &[u8; 32]) -> Result<Option<usize>, StoreError> {
    if store.get(Space::Meta, FILLED)?.is_some() {
        return Ok(None);
    }
    let mut hours: BTreeMap<(String, i64), Tally> = BTreeMap::new();
    let mut add = |place: &str, at: i64, fact: Fact| {
        hours
            .entry((place.to_owned(), hour_of(at)))
            .or_default()
            .add(fact)
    };
    let always = (i64::MIN, i64::MAX);
    each_indexed_fact(store, None, always, secret, &mut add)?;
    each_customer_fact(store, None, &[always], &mut add)?;
    let written = hours.len();
    let mut c = Commit::new();
    for (n, ((place, hour), mut t)) in hours.into_iter().enumerate() {
        if !t.visits.is_empty() {
            t.visits.normalize();
            hours::put_visits(&mut c, &place, hour, &t.visits);
        }
        if t.purchases.totals.count > 0 {
            hours::put_purchases(&mut c, &place, hour, &t.purchases);
        }
        for (campaign, metric, value) in t.counters() {
            hours::put_counter(&mut c, (&place, hour), &campaign, &metric, value);
        }
        if (n + 1) % HOURS_PER_COMMIT == 0 {
            store.commit(std::mem::take(&mut c))?;
        }
    }
    c.put(Space::Meta, FILLED.to_vec(), b"1".to_vec());
    store.commit(c)?;
    store.flush()?;
    Ok(Some(written))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::tallies::hours::{add_purchase, counter, counter_key, HOUR_MS};

    #[test]
    fn a_visit_is_counted_once_open_then_by_its_dwell() {
        let mut h = VisitHour::default();
        h.change(7, None, None);
        assert_eq!((h.visits, h.open, h.visitors.clone()), (1, 1, vec![7]));
        // Its exit moves it from open to its dwell minute; a second exit moves it again.
        h.change(7, Some(None), Some(130));
        assert_eq!((h.visits, h.open), (1, 0));
        assert_eq!(h.dwell_min, BTreeMap::from([(2, 1)]));
        h.change(7, Some(Some(130)), Some(200));
        assert_eq!(h.dwell_min, BTreeMap::from([(3, 1)]));
        // The same visitor again is one visitor; another one is sorted in.
        h.change(7, None, Some(59));
        h.change(3, None, None);
        assert_eq!((h.visits, h.open, h.visitors.clone()), (3, 1, vec![3, 7]));
        assert_eq!(h.dwell_min, BTreeMap::from([(0, 1), (3, 1)]));
    }

    #[test]
    fn a_visit_counted_open_in_the_hours_row_and_ended_in_its_partitions_adds_up() {
        // Open in the hour's row of before the rows were split by partition…
        let mut before = VisitHour::default();
        before.change(7, None, None);
        // …and ended in its partition's row, which alone counts −1 open.
        let mut shard = VisitHour::default();
        shard.change(7, Some(None), Some(130));
        assert_eq!((shard.visits, shard.open, shard.open_visits()), (0, -1, 0));
        assert!(shard.dwell_histogram() == BTreeMap::from([(2, 1)]));
        let mut sum = VisitHour::default();
        sum.merge(before);
        sum.merge(shard);
        sum.normalize();
        assert_eq!(
            (sum.visits, sum.open_visits(), sum.visitors.clone()),
            (1, 0, vec![7])
        );
        assert_eq!(sum.dwell_histogram(), BTreeMap::from([(2, 1)]));
    }

    #[test]
    fn distinct_visitors_are_counted_through_their_hash_collisions() {
        let secret = [1; 32];
        let mut t = Tally::default();
        for i in 0..200_000 {
            // Every customer twice.
            t.visits
                .visitors
                .push(visitor(&secret, &format!("c_{}", i % 100_000)));
        }
        let n = t.unique_visitors();
        assert!(n.abs_diff(100_000) <= 5, "{n}");
        let mut few = Tally::default();
        few.visits.visitors = (0..50).map(|i| visitor(&secret, &i.to_string())).collect();
        assert_eq!(few.unique_visitors(), 50);
        // Another secret gives other hashes.
        assert_ne!(visitor(&secret, "c"), visitor(&[2; 32], "c"));
    }

    #[test]
    fn counters_are_read_back_by_campaign_and_group_and_an_unknown_one_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let at = 1_795_000_000_000;
        let mut c = Commit::new();
        for (campaign, metric, n) in [
            ("w", "decided", 3u64),
            ("w", "delivered", 2),
            ("w", "customers/holdout", 4),
            ("w", "returned/a", 1),
            ("x", "clicked", 1),
            ("x", "bogus", 9),
            ("x", "bogus/a", 9),
        ] {
            c.put(
                Space::Campaigns,
                counter_key("s1", at, campaign, metric),
                n.to_be_bytes().to_vec(),
            );
        }
        // A shard's row of the same counter adds up.
        c.put(
            Space::Campaigns,
            counter("s1", at, "w", "decided").key(Some(7)),
            5u64.to_be_bytes().to_vec(),
        );
        // Another store, and the next hour: not read.
        c.put(
            Space::Campaigns,
            counter_key("s2", at, "w", "decided"),
            1u64.to_be_bytes().to_vec(),
        );
        c.put(
            Space::Campaigns,
            counter_key("s1", at + HOUR_MS, "w", "decided"),
            1u64.to_be_bytes().to_vec(),
        );
        store.commit(c).unwrap();
        let h = hour_of(at);
        let t = Tally::read(&store, "s1", (h, h + HOUR_MS)).unwrap();
        assert_eq!((t.offers["w"].decided, t.offers["w"].delivered), (8, 2));
        assert_eq!(t.offers["x"].clicked, 1);
        assert_eq!(
            t.groups["w"],
            BTreeMap::from([
                (
                    "holdout".to_owned(),
                    Group {
                        customers: 4,
                        returned: 0
                    }
                ),
                (
                    "a".to_owned(),
                    Group {
                        customers: 0,
                        returned: 1
                    }
                ),
            ])
        );
        assert!(!t.groups.contains_key("x"));
        // What the counters say is what they were written from.
        let mut counters = t.counters();
        counters.sort();
        assert_eq!(counters.len(), 5);
    }

    #[test]
    fn purchases_add_up_by_currency_and_campaign() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        for (total, campaign) in [(100.0, Some("w")), (50.5, None), (20.0, Some("w"))] {
            let mut c = Commit::new();
            add_purchase(&store, &mut c, ("s1", 0), ("JPY", total, true, campaign)).unwrap();
            store.commit(c).unwrap();
        }
        let t = Tally::read(&store, "s1", (0, HOUR_MS)).unwrap();
        assert_eq!(
            (t.purchases.totals.count, t.purchases.totals.attributed),
            (3, 2)
        );
        assert_eq!(t.purchases.totals.revenue["JPY"], 170.5);
        assert_eq!(t.purchases.campaigns["w"]["JPY"], 120.0);
        // A commit built on a tally someone changed since is refused.
        let mut stale = Commit::new();
        add_purchase(&store, &mut stale, ("s1", 0), ("JPY", 1.0, false, None)).unwrap();
        let mut c = Commit::new();
        add_purchase(&store, &mut c, ("s1", 0), ("JPY", 2.0, false, None)).unwrap();
        store.commit(c).unwrap();
        assert!(matches!(
            store.commit(stale),
            Err(StoreError::Conflict { .. })
        ));
    }
}
