//! A store seen through what a step read ahead: keys fetched at once with
//! [`Store::get_many`] are answered from memory, everything else goes to the store. A stage
//! that knows what its step will ask (the customers of its transitions, say) reads it in one
//! round trip on an engine across a network. What was read ahead is forgotten at the first
//! commit through it, so nothing read after a write is stale.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{Commit, Entry, Space, Store, StoreError};

/// What was read ahead: each key's value, `None` if it was absent.
type Ahead = HashMap<(Space, Vec<u8>), Option<Vec<u8>>>;

pub struct ReadThrough<'a> {
    inner: &'a dyn Store,
    ahead: Mutex<Ahead>,
}

impl<'a> ReadThrough<'a> {
    pub fn new(inner: &'a dyn Store) -> ReadThrough<'a> {
        ReadThrough {
            inner,
            ahead: Mutex::new(HashMap::new()),
        }
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
        self.inner.scan_range(space, from, end, limit)
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        self.inner.last(space)
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.inner.last_before(space, end)
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.ahead.lock().expect("read-ahead lock").clear();
        self.inner.commit(commit)
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        self.ahead.lock().expect("read-ahead lock").clear();
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
}
