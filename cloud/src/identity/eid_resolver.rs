//! Resolving rotating Eddystone-EIDs to customers without trying every key on every sighting:
//! for a window of time, every enrolled key's EIDs are computed once into a hash table, and
//! the table is rebuilt as time moves on. A sighting is then one lookup, plus a check that the
//! matching rotation period lies within the clock-skew window of the sighting's time.
//!
//! Events replayed from long ago fall outside the current table; they get a table of their
//! own, and a few such tables are cached, so an old backlog does not thrash the current one.

use std::collections::HashMap;

use omo_device_config::eid::{EidIdentity, MAX_EXPONENT};

/// How far a table reaches beyond the skew window on each side, seconds: the table is rebuilt
/// when time moves by this much.
const MARGIN_S: i64 = 900;
/// Tables kept at once (the current one and a few for replayed backlogs).
const TABLES: usize = 4;

struct Table {
    /// Centre of the window the table covers, Unix seconds.
    centre: i64,
    eids: HashMap<[u8; 8], Vec<(u32, u32)>>,
    /// Used for eviction: the most recent lookup number.
    used: u64,
}

/// Enrolled keys and precomputed EID tables.
pub struct EidResolver {
    keys: Vec<(String, EidIdentity)>,
    skew_s: u32,
    tables: Vec<Table>,
    lookups: u64,
    builds: u64,
}

/// How far an EID advertiser's clock may be off, seconds.
pub const EID_SKEW_S: u32 = 300;

impl EidResolver {
    /// `keys`: (customer id, identity) pairs. `skew_s`: how far an advertiser's clock may be off.
    pub fn new(keys: Vec<(String, EidIdentity)>, skew_s: u32) -> EidResolver {
        EidResolver {
            keys,
            skew_s,
            tables: Vec::new(),
            lookups: 0,
            builds: 0,
        }
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// How many tables were built so far (for metrics and tests).
    pub fn builds(&self) -> u64 {
        self.builds
    }

    /// Replaces the enrolled keys (after an identity change); tables are rebuilt lazily.
    pub fn set_keys(&mut self, keys: Vec<(String, EidIdentity)>) {
        self.keys = keys;
        self.tables.clear();
    }

    /// Enrols one more key, adding its EIDs to the tables already built (no rebuild).
    pub fn add_key(&mut self, customer: String, key: EidIdentity) {
        let index = self.keys.len() as u32;
        let reach = self.skew_s.saturating_add(MARGIN_S as u32);
        for table in &mut self.tables {
            for (period_start, eid) in key.eids_in_window(table.centre, reach) {
                table
                    .eids
                    .entry(eid)
                    .or_default()
                    .push((index, period_start));
            }
        }
        self.keys.push((customer, key));
    }

    /// The customer whose key broadcast `eid` around Unix time `unix_s`.
    pub fn resolve(&mut self, eid: [u8; 8], unix_s: i64) -> Option<&str> {
        self.lookups += 1;
        let reach = MARGIN_S;
        let i = match self
            .tables
            .iter()
            .position(|t| (unix_s - t.centre).abs() <= reach)
        {
            Some(i) => i,
            None => self.build(unix_s),
        };
        self.tables[i].used = self.lookups;
        let skew = i64::from(self.skew_s);
        let candidates = self.tables[i].eids.get(&eid)?;
        let (index, _) = candidates.iter().find(|&&(index, period_start)| {
            let key = &self.keys[index as usize].1;
            let Some(lo) = key.beacon_time(unix_s - skew) else {
                return false;
            };
            let hi = key.beacon_time(unix_s + skew).unwrap_or(u32::MAX);
            let period_end = u64::from(period_start) + (1u64 << key.exponent.min(MAX_EXPONENT)) - 1;
            u64::from(period_start) <= u64::from(hi) && period_end >= u64::from(lo)
        })?;
        Some(self.keys[*index as usize].0.as_str())
    }

    /// Builds the table centred on `unix_s`, evicting the least recently used; its index.
    fn build(&mut self, unix_s: i64) -> usize {
        self.builds += 1;
        let reach = self.skew_s.saturating_add(MARGIN_S as u32);
        let mut eids: HashMap<[u8; 8], Vec<(u32, u32)>> =
            HashMap::with_capacity(self.keys.len() * 4);
        for (index, (_, key)) in self.keys.iter().enumerate() {
            for (period_start, eid) in key.eids_in_window(unix_s, reach) {
                eids.entry(eid)
                    .or_default()
                    .push((index as u32, period_start));
            }
        }
        let table = Table {
            centre: unix_s,
            eids,
            used: self.lookups,
        };
        if self.tables.len() < TABLES {
            self.tables.push(table);
            self.tables.len() - 1
        } else {
            let (i, _) = self
                .tables
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| t.used)
                .expect("TABLES is not zero");
            self.tables[i] = table;
            i
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::eid::eid;
    use proptest::prelude::*;

    fn key(n: u8, exponent: u8, clock_offset_s: i64) -> EidIdentity {
        EidIdentity {
            identity_key: [n; 16],
            exponent,
            clock_offset_s,
        }
    }

    const T: i64 = 1_790_000_000;

    #[test]
    fn resolves_current_and_neighbouring_eids_and_not_far_ones() {
        let keys: Vec<_> = (0..50u8)
            .map(|n| (format!("c{n}"), key(n, 10, 1000 * i64::from(n))))
            .collect();
        let mut r = EidResolver::new(keys.clone(), 300);
        for (customer, k) in &keys {
            let now = k.beacon_time(T).unwrap();
            assert_eq!(
                r.resolve(eid(&k.identity_key, 10, now), T),
                Some(customer.as_str())
            );
            // Just after a rotation, the previous period's EID is within the skew window.
            let start = omo_device_config::eid::period_start(10, now);
            let just_after = T - i64::from(now - start) + 10;
            assert_eq!(
                r.resolve(eid(&k.identity_key, 10, start - 1024), just_after),
                Some(customer.as_str())
            );
            // An EID from a day ago is not accepted now.
            let old = now - 86_400;
            assert_eq!(r.resolve(eid(&k.identity_key, 10, old), T), None);
        }
        // Lookups around T (within one rotation) need at most the table at T and one neighbour.
        assert!(r.builds() <= 2, "{}", r.builds());
        assert_eq!(r.resolve([0; 8], T), None);
    }

    #[test]
    fn a_replayed_backlog_gets_its_own_table_and_the_current_one_stays() {
        let k = key(7, 10, 0);
        let mut r = EidResolver::new(vec![("c".into(), k.clone())], 300);
        let now_eid = |t: i64| eid(&k.identity_key, 10, k.beacon_time(t).unwrap());
        assert!(r.resolve(now_eid(T), T).is_some());
        for i in 0..10 {
            let old = T - 86_400 + i;
            assert!(r.resolve(now_eid(old), old).is_some());
            assert!(r.resolve(now_eid(T), T).is_some());
        }
        assert_eq!(r.builds(), 2);
        // Time moving on rebuilds once per margin, not per lookup.
        for s in (0..3600).step_by(10) {
            assert!(r.resolve(now_eid(T + s), T + s).is_some());
        }
        assert!(
            r.builds() <= 2 + 3600 / MARGIN_S as u64 + 1,
            "{}",
            r.builds()
        );
    }

    #[test]
    fn a_key_added_later_resolves_without_a_rebuild() {
        let mut r = EidResolver::new(vec![("a".into(), key(1, 10, 0))], 300);
        let k2 = key(2, 10, 0);
        let e = eid(&k2.identity_key, 10, k2.beacon_time(T).unwrap());
        assert_eq!(r.resolve(e, T), None);
        r.add_key("b".into(), k2);
        assert_eq!(r.resolve(e, T), Some("b"));
        assert_eq!(r.builds(), 1);
    }

    proptest! {
        /// The table answers exactly as the linear search over every key does.
        #[test]
        fn agrees_with_linear_resolution(offset in -200_000i64..200_000, k in 0u8..=12, skew in 0u32..2000, n in 0u8..20, dt in -5000i64..5000) {
            let keys: Vec<_> = (0..20u8).map(|i| (format!("c{i}"), key(i, k, offset + i64::from(i)))).collect();
            let mut r = EidResolver::new(keys.clone(), skew);
            let ids: Vec<EidIdentity> = keys.iter().map(|(_, k)| k.clone()).collect();
            let seen_at = T + dt;
            let kk = &keys[usize::from(n)].1;
            let observed = eid(&kk.identity_key, k, kk.beacon_time(seen_at).unwrap());
            let linear = omo_device_config::eid::resolve(&ids, observed, T, skew).map(|m| keys[m.index].0.clone());
            prop_assert_eq!(r.resolve(observed, T).map(str::to_owned), linear);
        }
    }
}
