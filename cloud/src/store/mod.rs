//! The cloud's storage trait: a few named key spaces, reads, and one atomic commit that
//! writes across spaces only if its preconditions still hold (DESIGN.md, "Growing past one
//! machine": every durable state goes through this trait, and a decision that must happen
//! once is checked and recorded in one transaction). `sled_store` implements it for one
//! process, `postgres` for one or several instances on a PostgreSQL database.
//!
//! Nothing here knows what the bytes mean: the event log, offsets and registry build on it.

pub mod barrier;
pub mod compact;
#[cfg(test)]
pub(crate) mod conformance;
pub mod event_log;
#[cfg(test)]
pub(crate) mod faulty;
pub mod postgres;
pub mod read_through;
pub mod sled_store;
pub mod sweep;
#[cfg(test)]
pub(crate) mod testing;

use std::fmt;

/// A key space (a sled tree; a table elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Space {
    /// Stores, gateways, beacons, zones.
    Registry,
    /// Customers, installs, LINE ids, EID keys.
    Identity,
    /// The append-only log of accepted observations, keyed by offset.
    EventLog,
    /// Each pipeline stage's position in the event log.
    Offsets,
    /// Per (gateway, epoch), the presence seqs stored.
    SeqRanges,
    /// Counters a consumer derives from the log (per-gateway ingest statistics, …).
    Stats,
    /// Idempotency keys and webhook event ids already taken.
    Dedup,
    /// Visits, their indexes, footfall, and the visit stage's engine state.
    Visits,
    /// Visit transitions in the order the visit stage decided them (the next stages' input).
    Transitions,
    /// The service's own settings, such as the server secret that keys derived ids.
    Meta,
    /// Campaign definitions, versioned.
    Campaigns,
    /// Purchases from POS and e-commerce, with their indexes.
    Purchases,
    /// Customer profiles (visits and purchases folded per customer) and tag rules.
    Profiles,
    /// Which instance runs which part of the pipeline, and the instances alive.
    Leases,
}

impl Space {
    pub const ALL: [Space; 14] = [
        Space::Registry,
        Space::Identity,
        Space::EventLog,
        Space::Offsets,
        Space::SeqRanges,
        Space::Stats,
        Space::Dedup,
        Space::Visits,
        Space::Transitions,
        Space::Meta,
        Space::Campaigns,
        Space::Purchases,
        Space::Profiles,
        Space::Leases,
    ];

    /// The space's stable name (its tree or table name).
    pub fn name(self) -> &'static str {
        match self {
            Space::Registry => "registry",
            Space::Identity => "identity",
            Space::EventLog => "event_log",
            Space::Offsets => "offsets",
            Space::SeqRanges => "seq_ranges",
            Space::Stats => "stats",
            Space::Dedup => "dedup",
            Space::Visits => "visits",
            Space::Transitions => "transitions",
            Space::Meta => "meta",
            Space::Campaigns => "campaigns",
            Space::Purchases => "purchases",
            Space::Profiles => "profiles",
            Space::Leases => "leases",
        }
    }

    /// The space called `name`.
    pub fn from_name(name: &str) -> Option<Space> {
        Space::ALL.into_iter().find(|s| s.name() == name)
    }

    pub(crate) fn index(self) -> usize {
        Space::ALL
            .iter()
            .position(|s| *s == self)
            .expect("Space::ALL lists every space")
    }
}

/// A set of writes applied all together or not at all, if every expectation holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Commit {
    expects: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    writes: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    /// Where this commit's event-log records go on ([`event_log::EventLog::append`]).
    log: Option<event_log::Appending>,
}

impl Commit {
    pub fn new() -> Commit {
        Commit::default()
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, space: Space, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.writes.push((space, key.into(), Some(value.into())));
    }

    /// Removes `key`.
    pub fn delete(&mut self, space: Space, key: impl Into<Vec<u8>>) {
        self.writes.push((space, key.into(), None));
    }

    /// Applies only if `key` holds `value` (`None`: is absent) when the commit runs.
    pub fn expect(&mut self, space: Space, key: impl Into<Vec<u8>>, value: Option<Vec<u8>>) {
        self.expects.push((space, key.into(), value));
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.expects.is_empty()
    }

    /// The offset this commit's event-log append starts at, as its writer wrote it (`None`:
    /// it appends nothing).
    pub fn appends_at(&self) -> Option<u64> {
        self.log.map(event_log::Appending::first)
    }

    /// Adds `other`'s expectations and writes to this commit (its writes after ours).
    pub fn extend(&mut self, other: Commit) {
        if let Some(log) = other.log {
            self.log = Some(log.shifted(self.writes.len()));
        }
        self.expects.extend(other.expects);
        self.writes.extend(other.writes);
    }
}

/// What went wrong in the store.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("storage failed: {0}")]
    Backend(String),
    /// An expectation did not hold: someone else changed the key first; nothing was written.
    #[error("conflict on {space:?} key {key}: it changed since it was read")]
    Conflict { space: Space, key: Hex },
    /// The store cannot be reached now (a database restarting or failing over). A commit that
    /// met this may or may not have applied: read again before deciding anything on it.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Stored bytes that cannot be read as `what` (a record, a key), with the reason.
    pub fn backend(what: &str, e: impl fmt::Display) -> StoreError {
        StoreError::Backend(format!("{what}: {e}"))
    }
}

/// Bytes shown as hex in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hex(pub Vec<u8>);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

/// A key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// The least key above every key that starts with `prefix` (None: no such key, scan to the end).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Up to `limit` entries of `space` whose keys start with `prefix` and are at or after `from`.
pub fn scan_prefix_from(
    store: &dyn Store,
    space: Space,
    prefix: &[u8],
    from: &[u8],
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let from = from.max(prefix);
    match prefix_end(prefix) {
        Some(end) => store.scan_range(space, from, &end, limit),
        None => store.scan(space, from, limit),
    }
}

/// The entry with the greatest key that starts with `prefix`.
pub fn last_with_prefix(
    store: &dyn Store,
    space: Space,
    prefix: &[u8],
) -> Result<Option<Entry>, StoreError> {
    let last = match prefix_end(prefix) {
        Some(end) => store.last_before(space, &end)?,
        None => store.last(space)?,
    };
    Ok(last.filter(|(k, _)| k.starts_with(prefix)))
}

/// The ids an index holds in `from..to`: the last `/`-separated part of each key (index keys
/// end with the id they point at).
pub fn ids_in_range(
    store: &dyn Store,
    space: Space,
    (from, to): (&[u8], &[u8]),
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    Ok(store
        .scan_range(space, from, to, limit)?
        .into_iter()
        .filter_map(|(k, _)| {
            String::from_utf8_lossy(&k)
                .rsplit('/')
                .next()
                .map(str::to_owned)
        })
        .collect())
}

/// The storage every durable part of the cloud goes through.
pub trait Store: Send + Sync {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// The values of `keys`, in their order: one round trip on an engine across a network
    /// (a stage reads what a step needs at once), a loop of `get` elsewhere.
    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        keys.iter().map(|k| self.get(space, k)).collect()
    }

    /// Up to `limit` entries with keys at or after `from`, in key order.
    fn scan(&self, space: Space, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError>;

    /// Up to `limit` entries with keys in `from..end`, in key order (reads nothing past `end`).
    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError>;

    /// Each `(from, end)` range's entries, up to `limit` of each, in key order (as
    /// [`Store::scan_range`] answers them), in the ranges' order: one round trip on an engine
    /// across a network, a loop of `scan_range` elsewhere.
    fn scan_ranges(
        &self,
        space: Space,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: usize,
    ) -> Result<Vec<Vec<Entry>>, StoreError> {
        ranges
            .iter()
            .map(|(from, end)| self.scan_range(space, from, end, limit))
            .collect()
    }

    /// The entry with the greatest key.
    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError>;

    /// The entry with the greatest key below `end`.
    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError>;

    /// Applies `commit` atomically; [`StoreError::Conflict`] (and no write) if an expectation
    /// fails. Not durable until [`Store::flush`] returns.
    fn commit(&self, commit: Commit) -> Result<(), StoreError>;

    /// Applies `commit` as [`Store::commit`] does, except that its event-log append (if it has
    /// one: [`event_log::EventLog::append`]) goes at the log's end as the store finds it when
    /// the commit runs, instead of failing because another writer appended since this one read
    /// the end; answers the offset its first record got. An engine several instances append
    /// to moves it (so they never conflict on the log's end, and wait their turn instead of
    /// retrying); the default leaves it where it was written, which is right for an engine
    /// one process writes.
    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        let first = commit.appends_at();
        self.commit(commit).map(|()| first)
    }

    /// Makes every commit so far durable. Blocks: call it off the async executor.
    fn flush(&self) -> Result<(), StoreError>;

    /// How many commits have written to `space` since the store was opened, counted once each
    /// is applied. What is read from `space` after taking this count stays current while the
    /// count stays the same, so a stage may keep what it read until the count moves. (An
    /// engine shared by several instances must count the others' commits too.)
    fn commits_to(&self, space: Space) -> u64;

    /// Whether other processes may write to this store too (several instances on one
    /// database): then [`Store::commits_to`] counts this process's commits only, and what was
    /// read is not kept past a step on its strength.
    fn shared(&self) -> bool {
        false
    }

    /// Every entry of every space as of one moment, if the engine can read that itself (a
    /// database's snapshot, which holds while other instances write); `None`: it cannot, and
    /// [`barrier::BarrierStore::snapshot`] stops this process's commits while it reads.
    fn consistent_snapshot(&self) -> Option<Result<barrier::Snapshot, StoreError>> {
        None
    }
}

/// A shared store is a store (`&arc` wherever a `&dyn Store` is wanted).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(space, key)
    }

    fn get_many(&self, space: Space, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        (**self).get_many(space, keys)
    }

    fn scan(&self, space: Space, from: &[u8], limit: usize) -> Result<Vec<Entry>, StoreError> {
        (**self).scan(space, from, limit)
    }

    fn scan_range(
        &self,
        space: Space,
        from: &[u8],
        end: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        (**self).scan_range(space, from, end, limit)
    }

    fn scan_ranges(
        &self,
        space: Space,
        ranges: &[(Vec<u8>, Vec<u8>)],
        limit: usize,
    ) -> Result<Vec<Vec<Entry>>, StoreError> {
        (**self).scan_ranges(space, ranges, limit)
    }

    fn last(&self, space: Space) -> Result<Option<Entry>, StoreError> {
        (**self).last(space)
    }

    fn last_before(&self, space: Space, end: &[u8]) -> Result<Option<Entry>, StoreError> {
        (**self).last_before(space, end)
    }

    fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        (**self).commit(commit)
    }

    fn commit_appending(&self, commit: Commit) -> Result<Option<u64>, StoreError> {
        (**self).commit_appending(commit)
    }

    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }

    fn commits_to(&self, space: Space) -> u64 {
        (**self).commits_to(space)
    }

    fn shared(&self) -> bool {
        (**self).shared()
    }

    fn consistent_snapshot(&self) -> Option<Result<barrier::Snapshot, StoreError>> {
        (**self).consistent_snapshot()
    }
}
