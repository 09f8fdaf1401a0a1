//! A campaign's budget, spent exactly by partitions deciding at once without one row they all
//! wait on.
//!
//! - `budget/{campaign}` (the pool) counts the units handed out: sends counted there before the
//!   budget was split, and units allotted to shards;
//! - `budget/{campaign}/@{shard:04x}` (a slice) is what a shard (the first partition a step
//!   holds) was allotted and has spent, two big-endian u64s.
//!
//! Sends so far = pool − Σ (allotted − spent). A step spends from its own slice while the pool
//! is within the budget; when its slice is empty it takes a part of what the pool has left
//! (a sixteenth, at least one), expecting the pool as read. When the pool is spent, units left
//! in other slices (a shard no step runs now) are taken, half of the fullest slice's at a
//! time, expecting that slice. When the budget was lowered below the pool, a send expects
//! every slice it counted.
//! Every unit is in the pool's count once, and a slice is written only expecting it as read,
//! so two steps never spend the same unit, and a trigger is refused only when the sends so far
//! reach the budget.

use std::collections::BTreeMap;

use crate::campaigns::keys;
use crate::store::barrier::scan_prefix;
use crate::store::{Commit, Space, Store, StoreError};
use crate::tallies::funnel::counter_value;

/// The part of what is left that a slice takes at once.
const TAKE_DIVISOR: u64 = 16;

/// What a slice was allotted and has spent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Slice {
    allotted: u64,
    spent: u64,
}

impl Slice {
    fn left(self) -> u64 {
        self.allotted.saturating_sub(self.spent)
    }

    fn parse(key: &str, bytes: &[u8]) -> Result<Slice, StoreError> {
        let n = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        match bytes.len() {
            16 => Ok(Slice {
                allotted: n(&bytes[..8]),
                spent: n(&bytes[8..]),
            }),
            _ => Err(StoreError::backend(key, "a budget slice is not 16 bytes")),
        }
    }

    fn bytes(self) -> Vec<u8> {
        [self.allotted.to_be_bytes(), self.spent.to_be_bytes()].concat()
    }
}

/// A row as read (its bytes, for the commit's expectation, and its value) and as the step
/// leaves it.
#[derive(Debug, Clone)]
struct Row<T> {
    key: String,
    bytes: Option<Vec<u8>>,
    read: T,
    now: T,
}

impl<T: PartialEq + Copy> Row<T> {
    fn new(key: String, bytes: Option<Vec<u8>>, read: T) -> Row<T> {
        Row {
            key,
            bytes,
            read,
            now: read,
        }
    }

    /// Writes its value if it changed (or `always`), expecting it as read.
    fn write(self, c: &mut Commit, always: bool, encode: impl Fn(T) -> Vec<u8>) {
        if always || self.now != self.read {
            c.expect(Space::Campaigns, self.key.clone(), self.bytes);
            c.put(Space::Campaigns, self.key, encode(self.now));
        }
    }
}

impl Row<Slice> {
    fn slice(key: String, bytes: Option<Vec<u8>>) -> Result<Row<Slice>, StoreError> {
        let read = match &bytes {
            Some(b) => Slice::parse(&key, b)?,
            None => Slice::default(),
        };
        Ok(Row::new(key, bytes, read))
    }
}

/// One campaign's budget as a step sees it.
#[derive(Debug)]
struct Budget {
    pool: Row<u64>,
    own: Row<Slice>,
    /// Every other slice, once the step needed them.
    others: Option<Vec<Row<Slice>>>,
    /// A send counted on every slice (the budget was lowered below the pool).
    counted_all: bool,
}

impl Budget {
    fn read(store: &dyn Store, campaign: &str, shard: u16) -> Result<Budget, StoreError> {
        let pool_key = keys::budget(campaign);
        let bytes = store.get(Space::Campaigns, pool_key.as_bytes())?;
        let pool = counter_value(&pool_key, bytes.as_deref())?;
        let own_key = keys::budget_slice(campaign, shard);
        let own = store.get(Space::Campaigns, own_key.as_bytes())?;
        Ok(Budget {
            pool: Row::new(pool_key, bytes, pool),
            own: Row::slice(own_key, own)?,
            others: None,
            counted_all: false,
        })
    }

    /// Every other slice of `campaign` (read once per step: a few, one per shard).
    fn others(
        &mut self,
        store: &dyn Store,
        campaign: &str,
    ) -> Result<&mut Vec<Row<Slice>>, StoreError> {
        if self.others.is_none() {
            let prefix = keys::budget_slices(campaign);
            let mut all = Vec::new();
            for (k, v) in scan_prefix(store, Space::Campaigns, prefix.as_bytes(), usize::MAX)? {
                let key = String::from_utf8_lossy(&k).into_owned();
                if key != self.own.key {
                    all.push(Row::slice(key, Some(v))?);
                }
            }
            self.others = Some(all);
        }
        Ok(self.others.as_mut().expect("read above"))
    }

    /// The sends so far: the pool less what every slice has left.
    fn sent(&mut self, store: &dyn Store, campaign: &str) -> Result<u64, StoreError> {
        let (pool, own_left) = (self.pool.now, self.own.now.left());
        let others: u64 = self
            .others(store, campaign)?
            .iter()
            .map(|r| r.now.left())
            .sum();
        Ok(pool.saturating_sub(own_left + others))
    }

    /// Whether a send is left under `limit`.
    fn left(&mut self, store: &dyn Store, campaign: &str, limit: u64) -> Result<bool, StoreError> {
        if self.pool.now < limit || (self.own.now.left() > 0 && self.pool.now <= limit) {
            return Ok(true);
        }
        Ok(self.sent(store, campaign)? < limit)
    }

    /// Spends one send under `limit` (after [`Budget::left`] said one is left); false if it
    /// found none, which `left` rules out.
    fn spend(&mut self, limit: u64) -> bool {
        let pool = self.pool.now;
        if self.own.now.left() > 0 {
            // Within the pool, or the budget was lowered and every slice was counted.
            self.counted_all |= pool > limit;
        } else if pool < limit {
            let take = ((limit - pool) / TAKE_DIVISOR).max(1);
            self.pool.now += take;
            self.own.now.allotted += take;
        } else {
            self.counted_all |= pool > limit;
            // Half of what the fullest other slice has left: shards that all ran out do not
            // take from one slice a unit at a time.
            let from = self
                .others
                .as_mut()
                .and_then(|o| o.iter_mut().max_by_key(|r| r.now.left()))
                .filter(|r| r.now.left() > 0);
            let Some(row) = from else {
                return false;
            };
            let take = (row.now.left() / 2).max(1);
            row.now.allotted -= take;
            self.own.now.allotted += take;
        }
        self.own.now.spent += 1;
        true
    }

    /// The rows it changed, each expecting what it read; every row it counted when a send
    /// rested on all of them.
    fn write(self, c: &mut Commit) {
        let all = self.counted_all;
        self.own.write(c, false, Slice::bytes);
        self.pool.write(c, all, |n| n.to_be_bytes().to_vec());
        for row in self.others.unwrap_or_default() {
            row.write(c, all, Slice::bytes);
        }
    }
}

/// The budgets a step reads and spends, by campaign.
#[derive(Debug)]
pub(super) struct Budgets {
    shard: u16,
    by_campaign: BTreeMap<String, Budget>,
}

impl Budgets {
    /// Budgets spent from `shard`'s slices.
    pub(super) fn new(shard: u16) -> Budgets {
        Budgets {
            shard,
            by_campaign: BTreeMap::new(),
        }
    }

    fn of(&mut self, store: &dyn Store, campaign: &str) -> Result<&mut Budget, StoreError> {
        if !self.by_campaign.contains_key(campaign) {
            let b = Budget::read(store, campaign, self.shard)?;
            self.by_campaign.insert(campaign.to_owned(), b);
        }
        Ok(self.by_campaign.get_mut(campaign).expect("inserted above"))
    }

    /// Whether `campaign` has a send left under `limit`.
    pub(super) fn left(
        &mut self,
        store: &dyn Store,
        campaign: &str,
        limit: u64,
    ) -> Result<bool, StoreError> {
        self.of(store, campaign)?.left(store, campaign, limit)
    }

    /// Spends one of `campaign`'s sends (its budget was read by [`Budgets::left`], which
    /// said one is left).
    pub(super) fn spend(&mut self, campaign: &str, limit: u64) {
        let spent = self
            .by_campaign
            .get_mut(campaign)
            .is_some_and(|b| b.spend(limit));
        if !spent {
            debug_assert!(spent, "a send of {campaign} found no unit `left` counted");
            tracing::error!(campaign, "a send found no budget unit left; counted none");
        }
    }

    /// The rows the step changed, each expecting what it read.
    pub(super) fn write(self, c: &mut Commit) {
        for b in self.by_campaign.into_values() {
            b.write(c);
        }
    }
}

/// The sends counted against `campaign`'s budget so far.
#[cfg(test)]
pub(super) fn sent(store: &dyn Store, campaign: &str) -> Result<u64, StoreError> {
    Budget::read(store, campaign, 0)?.sent(store, campaign)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{places, Place};
    use proptest::prelude::*;

    /// A step of `shard` deciding `triggers` sends under `limit`: how many it spent, and its
    /// budgets to commit.
    fn step(store: &dyn Store, shard: u16, triggers: u32, limit: u64) -> (u64, Budgets) {
        let mut b = Budgets::new(shard);
        let mut spent = 0;
        for _ in 0..triggers {
            if b.left(store, "w", limit).unwrap() {
                b.spend("w", limit);
                spent += 1;
            }
        }
        (spent, b)
    }

    fn commit(store: &dyn Store, b: Budgets) -> Result<(), StoreError> {
        let mut c = Commit::new();
        b.write(&mut c);
        store.commit(c)
    }

    /// Steps of other shards spend what one shard left in its slice once the pool is spent,
    /// and a lowered budget is kept exactly.
    #[test]
    fn units_left_in_a_slice_are_spent_by_others_and_a_lowered_budget_holds() {
        for place in places() {
            let store = place.open();
            let (spent, b) = step(&store, 0, 1, 1000);
            assert_eq!(spent, 1);
            commit(&store, b).unwrap();
            // Shard 0 took a sixteenth of the budget, and spent one of it.
            assert_eq!(sent(&store, "w").unwrap(), 1);
            let (spent, b) = step(&store, 5, 2000, 1000);
            assert_eq!(spent, 999, "every unit, those in shard 0's slice too");
            commit(&store, b).unwrap();
            assert_eq!(sent(&store, "w").unwrap(), 1000);
            assert_eq!(step(&store, 9, 5, 1000).0, 0);
            // Raised, then lowered below what was handed out.
            let (spent, b) = step(&store, 0, 10, 1100);
            assert_eq!(spent, 10);
            commit(&store, b).unwrap();
            assert_eq!(step(&store, 0, 10, 1005).0, 0, "1010 sent already");
            let (spent, b) = step(&store, 5, 200, 1200);
            commit(&store, b).unwrap();
            assert_eq!(sent(&store, "w").unwrap(), 1010 + spent);
            assert_eq!(spent, 190);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Steps of several shards, two at a time reading the same state before either
        /// commits (the second's commit retried on a conflict), under a budget that changes
        /// between pairs: the sends counted are the sends made, a commit that spends leaves
        /// them within the budget, and a trigger is refused only when the sends had reached
        /// it. (A step that read the budget before a marketer changed it decides by what it
        /// read, as any decision that raced the change: two steps of a pair read one budget.)
        #[test]
        fn spent_exactly_by_shards_at_once(
            steps in proptest::collection::vec((0u16..4, 0u32..12, 0u64..60), 1..24)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = Place::Sled(dir).open();
            let mut made = 0;
            for pair in steps.chunks(2) {
                let limit = pair[0].2;
                let read: Vec<_> = pair
                    .iter()
                    .map(|&(shard, n, _)| (shard, n, limit, step(&store, shard, n, limit)))
                    .collect();
                for (shard, n, limit, (spent, b)) in read {
                    let (spent, b) = match commit(&store, b) {
                        Ok(()) => (spent, None),
                        Err(StoreError::Conflict { .. }) => {
                            let again = step(&store, shard, n, limit);
                            (again.0, Some(again.1))
                        }
                        Err(e) => panic!("{e}"),
                    };
                    if let Some(b) = b {
                        commit(&store, b).unwrap();
                    }
                    made += spent;
                    let now = sent(&store, "w").unwrap();
                    prop_assert_eq!(now, made);
                    if spent > 0 {
                        prop_assert!(now <= limit, "{} sent over a budget of {}", now, limit);
                    }
                    if spent < u64::from(n) {
                        prop_assert!(now >= limit, "refused at {} sent under a budget of {}", now, limit);
                    }
                }
            }
        }
    }
}
