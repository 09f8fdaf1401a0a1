//! A short write barrier around any [`Store`], so a backup reads one consistent snapshot
//! (DESIGN.md, "Operations": sled's own export is not one). Commits share the barrier; a
//! snapshot holds it alone while it reads every space, so no commit lands half-way through.

use std::sync::{Arc, RwLock};

use super::{Commit, Entry, Space, Store, StoreError};

/// Every entry of every space, in key order.
pub type Snapshot = Vec<(Space, Vec<Entry>)>;

pub struct BarrierStore {
    inner: Arc<dyn Store>,
    barrier: RwLock<()>,
}

impl BarrierStore {
    pub fn new(inner: Arc<dyn Store>) -> BarrierStore {
        BarrierStore {
            inner,
            barrier: RwLock::new(()),
        }
    }

    /// Reads every space as of one moment: the engine's own snapshot where it has one (a
    /// database shared by several instances), else while no commit of this process can run
    /// (blocking them for as long as it reads).
    pub fn snapshot(&self) -> Result<Snapshot, StoreError> {
        if let Some(snapshot) = self.inner.consistent_snapshot() {
            return snapshot;
        }
        let _alone = self
            .barrier
            .write()
            .map_err(|_| StoreError::Backend("write barrier poisoned".into()))?;
        Space::ALL
            .into_iter()
            .map(|space| Ok((space, scan_all(self.inner.as_ref(), space)?)))
            .collect()
    }
}

/// Every entry of `space`, paging through it.
pub fn scan_all(store: &dyn Store, space: Space) -> Result<Vec<Entry>, StoreError> {
    let mut out: Vec<Entry> = Vec::new();
    let mut from = Vec::new();
    loop {
        let page = store.scan(space, &from, 4096)?;
        let Some((last, _)) = page.last() else {
            return Ok(out);
        };
        from = last.clone();
        from.push(0);
        out.extend(page);
    }
}

/// Up to `limit` entries of `space` whose keys start with `prefix`, in key order.
pub fn scan_prefix(
    store: &dyn Store,
    space: Space,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    super::scan_prefix_from(store, space, prefix, prefix, limit)
}

impl Store for BarrierStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(space, key)
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
        let _shared = self
            .barrier
            .read()
            .map_err(|_| StoreError::Backend("write barrier poisoned".into()))?;
        self.inner.commit(commit)
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        let _shared = self
            .barrier
            .read()
            .map_err(|_| StoreError::Backend("write barrier poisoned".into()))?;
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
    use crate::store::sled_store::SledStore;

    #[test]
    fn prefix_scans_stop_at_the_prefix_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        let mut c = Commit::new();
        for k in ["a/1", "b/1", "b/2", "b/3", "c/1"] {
            c.put(Space::Stats, k.as_bytes().to_vec(), b"v".to_vec());
        }
        s.commit(c).unwrap();
        let keys = |limit| -> Vec<Vec<u8>> {
            scan_prefix(&s, Space::Stats, b"b/", limit)
                .unwrap()
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(
            keys(10),
            [b"b/1".to_vec(), b"b/2".to_vec(), b"b/3".to_vec()]
        );
        assert_eq!(keys(2).len(), 2);
        assert!(scan_prefix(&s, Space::Stats, b"d/", 10).unwrap().is_empty());
    }

    #[test]
    fn a_snapshot_sees_whole_commits_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BarrierStore::new(Arc::new(
            SledStore::open(dir.path(), 1 << 20).unwrap(),
        )));
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0u32..300 {
                    let mut c = Commit::new();
                    c.put(Space::EventLog, i.to_be_bytes().to_vec(), b"e".to_vec());
                    c.put(Space::Offsets, b"n".to_vec(), i.to_be_bytes().to_vec());
                    store.commit(c).unwrap();
                }
            })
        };
        for _ in 0..20 {
            let snap = store.snapshot().unwrap();
            let log = &snap.iter().find(|(s, _)| *s == Space::EventLog).unwrap().1;
            let offsets = &snap.iter().find(|(s, _)| *s == Space::Offsets).unwrap().1;
            match offsets.first() {
                None => assert!(log.is_empty()),
                Some((_, v)) => {
                    let n = u32::from_be_bytes(v.as_slice().try_into().unwrap());
                    assert_eq!(log.len() as u32, n + 1);
                }
            }
        }
        writer.join().unwrap();
    }
}
