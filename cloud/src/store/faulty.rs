//! A store for tests whose commits and reads can be made to fail (a database going away), or
//! whose next commits conflict (another instance changed what they expect).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};

use super::testing::TestStore;
use super::{Commit, Entry, Hex, Space, Store, StoreError};

pub struct Faulty {
    pub inner: TestStore,
    /// Commits fail; from the first that does, reads fail too (the store went away).
    pub commits_fail: AtomicBool,
    pub reads_fail: AtomicBool,
    /// How many of the next commits meet a conflict.
    pub conflicts: AtomicU32,
}

impl Faulty {
    pub fn new(inner: TestStore) -> Faulty {
        Faulty {
            inner,
            commits_fail: false.into(),
            reads_fail: false.into(),
            conflicts: 0.into(),
        }
    }

    fn read(&self) -> Result<(), StoreError> {
        if self.reads_fail.load(SeqCst) {
            return Err(StoreError::Backend("injected".into()));
        }
        Ok(())
    }

    fn commit_check(&self) -> Result<(), StoreError> {
        if self.commits_fail.load(SeqCst) {
            self.reads_fail.store(true, SeqCst);
            return Err(StoreError::Backend("injected".into()));
        }
        let conflicts = self.conflicts.load(SeqCst);
        if conflicts > 0 {
            self.conflicts.store(conflicts - 1, SeqCst);
            return Err(StoreError::Conflict {
                space: Space::SeqRanges,
                key: Hex(b"injected".to_vec()),
            });
        }
        Ok(())
    }
}

impl Store for Faulty {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read()?;
        self.inner.get(space, key)
    }

    fn scan(&self, space: Space, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.read()?;
        self.inner.scan(space, from, limit)
    }

    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.read()?;
        self.inner.scan_range(space, from, end, limit)
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        self.read()?;
        self.inner.last(space)
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.read()?;
        self.inner.last_before(space, end)
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.commit_check()?;
        self.inner.commit(commit)
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        self.commit_check()?;
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
