//! A store that counts its calls: how many of each kind, in which space, and the time they
//! took — where a stage's step spends its round trips.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use omo_cloud::store::barrier::Snapshot;
use omo_cloud::store::{Commit, Entry, Space, Store, StoreError};

/// Calls and time by (call, space).
type Tally = BTreeMap<(&'static str, String), (u64, Duration)>;

pub struct Counted<'a> {
    inner: &'a dyn Store,
    calls: Mutex<Tally>,
}

impl<'a> Counted<'a> {
    pub fn new(inner: &'a dyn Store) -> Counted<'a> {
        Counted {
            inner,
            calls: Mutex::new(BTreeMap::new()),
        }
    }

    fn timed<T>(&self, call: &'static str, space: Option<Space>, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        let space = space.map_or_else(String::new, |s| format!("{s:?}"));
        let mut calls = self.calls.lock().expect("tally lock");
        let e = calls.entry((call, space)).or_default();
        e.0 += 1;
        e.1 += started.elapsed();
        out
    }

    /// The calls so far, most time first, as lines; then forgets them.
    pub fn report(&self) -> Vec<String> {
        let calls = std::mem::take(&mut *self.calls.lock().expect("tally lock"));
        let mut rows: Vec<_> = calls.into_iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
        rows.into_iter()
            .map(|((call, space), (n, t))| {
                format!(
                    "  {call} {space}: {n} calls, {:.2} s ({:.0} µs each)",
                    t.as_secs_f64(),
                    t.as_secs_f64() * 1e6 / n.max(1) as f64
                )
            })
            .collect()
    }
}

impl Store for Counted<'_> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.timed("get", Some(space), || self.inner.get(space, key))
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        self.timed("get_many", Some(space), || self.inner.get_many(space, keys))
    }

    fn scan(&self, space: Space, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        self.timed("scan", Some(space), || self.inner.scan(space, from, limit))
    }

    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        self.timed("scan_range", Some(space), || {
            self.inner.scan_range(space, from, end, limit)
        })
    }

    fn scan_ranges(
        &self,
        space: Space,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: usize,
    ) -> Result<Vec<Vec<Entry>>, StoreError> {
        self.timed("scan_ranges", Some(space), || {
            self.inner.scan_ranges(space, ranges, limit)
        })
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        self.timed("last", Some(space), || self.inner.last(space))
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        self.timed("last_before", Some(space), || {
            self.inner.last_before(space, end)
        })
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        self.timed("commit", None, || self.inner.commit(commit))
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        self.timed("commit_appending", None, || {
            self.inner.commit_appending(commit)
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.timed("flush", None, || self.inner.flush())
    }

    fn commits_to(&self, space: Space) -> u64 {
        self.inner.commits_to(space)
    }

    fn shared(&self) -> bool {
        self.inner.shared()
    }

    fn consistent_snapshot(&self) -> Option<Result<Snapshot, StoreError>> {
        self.inner.consistent_snapshot()
    }
}
