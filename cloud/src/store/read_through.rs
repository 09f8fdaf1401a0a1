//! A store seen through what a step read ahead: keys fetched at once with
//! [`Store::get_many`], and scans inside ranges fetched whole with [`Store::scan_ranges`], are
//! answered from memory; everything else goes to the store. A stage
//! that knows what its step will ask (the customers of its transitions, say) reads it in one
//! round trip on an engine across a network. What was read ahead is forgotten at the first
//! commit through it, so nothing read after a write is stale.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Commit, Entry, Space, Store, StoreError};

/// What was read ahead: each key's value, `None` if it was absent.
type Ahead = HashMap<(Space, Vec<u8>), Option<Vec<u8>>>;

/// Ranges read ahead whole, by (space, end): where each began and its entries.
type Ranges = HashMap<(Space, Vec<u8>), (Vec<u8>, Vec<Entry>)>;

pub struct ReadThrough<'a> {
    inner: &'a dyn Store,
    ahead: Mutex<Ahead>,
    ranges: Mutex<Ranges>,
}

impl<'a> ReadThrough<'a> {
    pub fn new(inner: &'a dyn Store) -> ReadThrough<'a> {
        ReadThrough {
            inner,
            ahead: Mutex::new(HashMap::new()),
            ranges: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what was read ahead (a commit through it may change it).
    fn forget(&self) {
        self.ahead.lock().expect("read-ahead lock").clear();
        self.ranges.lock().expect("read-ahead lock").clear();
    }

    /// Reads the `(from, end)` ranges now, in one call, for the scans that follow: a scan of
    /// `[f, end)` with `f` at or after a range's `from` is answered from it, if the range was
    /// read whole (fewer than `limit` entries; a longer one is left to the store).
    pub fn read_ranges_ahead(
        &self,
        space: Space,
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        limit: usize,
    ) -> Result<(), StoreError> {
        let found = self.inner.scan_ranges(space, &ranges, limit)?;
        let mut held = self.ranges.lock().expect("read-ahead lock");
        for ((from, end), entries) in ranges.into_iter().zip(found) {
            if entries.len() < limit {
                held.insert((space, end), (from, entries));
            }
        }
        Ok(())
    }

    /// Reads `keys` of `space` now, in one call, for the gets that follow.
    pub fn read_ahead(&self, space: Space, mut keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        keys.sort_unstable();
        keys.dedup();
        let values = self.inner.get_many(space, &keys)?;
        let mut ahead = self.ahead.lock().expect("read-ahead lock");
        for (k, v) in keys.into_iter().zip(values) {
            ahead.insert((space, k), v);
        }
        Ok(())
    }
}

impl Store for ReadThrough<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let held = self
            .ahead
            .lock()
            .expect("read-ahead lock")
            .get(&(space, key.to_vec()))
            .cloned();
        match held {
            Some(v) => Ok(v),
            None => self.inner.get(space, key),
        }
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.inner.get_many(space, keys)
    }

    fn scan(&self, space: Space, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.inner.scan(space, from, limit)
    }

    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let held = self.ranges.lock().expect("read-ahead lock");
        if let Some((start, entries)) = held.get(&(space, end.to_vec())) {
            if start.as_slice() <= from {
                return Ok(entries
                    .iter()
                    .filter(|(k, _)| k.as_slice() >= from)
                    .take(limit)
                    .cloned()
                    .collect());
            }
        }
        drop(held);
        self.inner.scan_range(space, from, end, limit)
    }

    fn scan_ranges(
        &self,
        space: Space,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: usize,
    ) -> Result<Vec<Vec<Entry>>, StoreError> {
        self.inner.scan_ranges(space, ranges, limit)
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        self.inner.last(space)
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.inner.last_before(space, end)
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.forget();
        self.inner.commit(commit)
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        self.forget();
        self.inner.commit_appending(commit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn commits_to(&self, space: Space) -> u64 {
        self.inner.commits_to(space)
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::places;

    #[test]
    fn keys_read_ahead_answer_from_memory_until_a_commit() {
        for place in places() {
            let store = place.open();
            let mut c = Commit::new();
            c.put(Space::Identity, b"a".to_vec(), b"1".to_vec());
            store.commit(c).unwrap();
            let through = ReadThrough::new(&store);
            through
                .read_ahead(Space::Identity, vec![b"a".to_vec(), b"gone".to_vec()])
                .unwrap();
            // Changed behind its back: what was read ahead answers (as a read at the step's
            // start would have).
            let mut c = Commit::new();
            c.put(Space::Identity, b"a".to_vec(), b"2".to_vec());
            c.put(Space::Identity, b"gone".to_vec(), b"now".to_vec());
            store.commit(c).unwrap();
            assert_eq!(
                through.get(Space::Identity, b"a").unwrap(),
                Some(b"1".to_vec())
            );
            assert_eq!(through.get(Space::Identity, b"gone").unwrap(), None);
            assert_eq!(
                through.get(Space::Visits, b"a").unwrap(),
                None,
                "another space"
            );
            // A commit through it forgets what it read ahead.
            through.commit(Commit::new()).unwrap();
            assert_eq!(
                through.get(Space::Identity, b"a").unwrap(),
                Some(b"2".to_vec())
            );
        }
    }

    #[test]
    fn ranges_read_at_once_are_each_ranges_scan_and_answer_from_memory_until_a_commit() {
        for place in places() {
            let store = place.open();
            let mut c = Commit::new();
            for k in ["a/1", "a/2", "a/3", "b/1", "c/1", "c/2"] {
                c.put(
                    Space::Campaigns,
                    k.as_bytes().to_vec(),
                    k.as_bytes().to_vec(),
                );
            }
            store.commit(c).unwrap();
            let range = |from: &str, end: &str| (from.as_bytes().to_vec(), end.as_bytes().to_vec());
            let ranges = [
                range("a/", "a0"),
                range("b/", "b0"),
                range("c/2", "c0"),
                range("d/", "d0"),
                range("z", "a"),
            ];
            let one_by_one: Vec<Vec<Entry>> = ranges
                .iter()
                .map(|(f, e)| store.scan_range(Space::Campaigns, f, e, 2).unwrap())
                .collect();
            assert_eq!(
                store.scan_ranges(Space::Campaigns, &ranges, 2).unwrap(),
                one_by_one
            );
            assert_eq!(one_by_one[0].len(), 2, "at most the limit of each");
            assert_eq!(
                store.scan_ranges(Space::Campaigns, &[], 2).unwrap(),
                Vec::<Vec<Entry>>::new()
            );

            let through = ReadThrough::new(&store);
            through
                .read_ranges_ahead(Space::Campaigns, ranges.to_vec(), 3)
                .unwrap();
            let mut c = Commit::new();
            c.put(Space::Campaigns, b"b/2".to_vec(), b"new".to_vec());
            store.commit(c).unwrap();
            // Answered as read: a later start within a range read whole, and a smaller limit.
            let keys = |entries: Vec<Entry>| -> Vec<Vec<u8>> {
                entries.into_iter().map(|(k, _)| k).collect()
            };
            assert_eq!(
                keys(
                    through
                        .scan_range(Space::Campaigns, b"b/", b"b0", 10)
                        .unwrap()
                ),
                [b"b/1".to_vec()]
            );
            assert_eq!(
                keys(
                    through
                        .scan_range(Space::Campaigns, b"a/2", b"a0", 1)
                        .unwrap()
                ),
                [b"a/2".to_vec()]
            );
            // A range that was not read whole, or starts earlier, goes to the store.
            assert_eq!(
                through
                    .scan_range(Space::Campaigns, b"a/", b"a0", 10)
                    .unwrap()
                    .len(),
                3
            );
            assert_eq!(
                through
                    .scan_range(Space::Campaigns, b"b", b"b0", 10)
                    .unwrap()
                    .len(),
                2
            );
            through.commit(Commit::new()).unwrap();
            assert_eq!(
                through
                    .scan_range(Space::Campaigns, b"b/", b"b0", 10)
                    .unwrap()
                    .len(),
                2
            );
        }
    }
}
