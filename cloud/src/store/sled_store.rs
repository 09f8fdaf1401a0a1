//! [`Store`] on sled: one tree per [`Space`], commits as multi-tree sled transactions.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::{Commit, Entry, Hex, Space, Store, StoreError};

pub struct SledStore {
    db: sled::Db,
    trees: Vec<sled::Tree>,
    /// Per space, the commits applied that wrote to it ([`Store::commits_to`]).
    commits: [AtomicU64; Space::ALL.len()],
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledStore, StoreError> {
        // A store dropped a moment ago in this process releases its file lock only when sled's
        // background flusher has stopped: retry briefly before calling the dir taken.
        let mut attempts = 0;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(cache_bytes)
                .open()
            {
                Ok(db) => break db,
                Err(e) if attempts < 40 && e.to_string().to_lowercase().contains("lock") => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => {
                    return Err(StoreError::Backend(format!(
                        "opening {}: {e}",
                        dir.display()
                    )))
                }
            }
        };
        let trees = Space::ALL
            .iter()
            .map(|s| db.open_tree(s.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        Ok(SledStore {
            db,
            trees,
            commits: Default::default(),
        })
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        &self.trees[space.index()]
    }
}

impl Store for SledStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(space)
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan(&self, space: Space, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.tree(space)
            .range(from..)
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        if from >= end {
            return Ok(Vec::new());
        }
        self.tree(space)
            .range(from..end)
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        Ok(self
            .tree(space)
            .last()
            .map_err(backend)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.tree(space)
            .range(..end)
            .next_back()
            .transpose()
            .map_err(backend)
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        if commit.writes.is_empty() && commit.expects.is_empty() {
            return Ok(());
        }
        let result = self.trees.as_slice().transaction(|txs| {
            for (space, key, expected) in &commit.expects {
                let now = txs[space.index()].get(key)?;
                if now.as_deref() != expected.as_deref() {
                    return Err(ConflictableTransactionError::Abort((*space, key.clone())));
                }
            }
            for (space, key, value) in &commit.writes {
                match value {
                    Some(v) => txs[space.index()].insert(key.as_slice(), v.as_slice())?,
                    None => txs[space.index()].remove(key.as_slice())?,
                };
            }
            Ok(())
        });
        match result {
            Ok(()) => {
                // Counted once applied, so a count taken before a read never hides this one.
                let mut written = [false; Space::ALL.len()];
                for (space, _, _) in &commit.writes {
                    written[space.index()] = true;
                }
                for (n, _) in self.commits.iter().zip(written).filter(|(_, w)| *w) {
                    n.fetch_add(1, Ordering::Release);
                }
                Ok(())
            }
            Err(TransactionError::Abort((space, key))) => Err(StoreError::Conflict {
                space,
                key: Hex(key),
            }),
            Err(TransactionError::Storage(e)) => Err(backend(e)),
        }
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        Ok(())
    }

    fn commits_to(&self, space: Space) -> u64 {
        self.commits[space.index()].load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::{store_conformance, Fixture};

    struct SledFixture(tempfile::TempDir);

    impl Fixture for SledFixture {
        fn open(&self) -> Arc<dyn Store> {
            Arc::new(SledStore::open(self.0.path(), 1 << 20).unwrap())
        }
    }

    store_conformance!(Some(SledFixture(tempfile::tempdir().unwrap())));
}
