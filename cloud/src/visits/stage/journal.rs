//! How the visit stage stores its engine: every commit adds one journal entry — the states
//! and buffered evidence the step changed — instead of one write per changed key, and the
//! journal's oldest entries are folded into the per-key base as they age out. A customer
//! present for an hour sends evidence every few seconds; their state is rewritten in the base
//! once they go quiet, not at every step. The journal is committed with the stage's offset,
//! so a replay starts from exactly the engine that was committed.
//!
//! Keys in [`Space::Visits`] (this module owns them), each after the partition's key prefix
//! (`p003/`; none in a store of one partition, [`crate::cluster::Partition::key_prefix`]):
//! - `state/{key as JSON}` → a [`State`] as JSON: the base of each customer × scope;
//! - `buffered/{offset:016x}/{scope as JSON}` → an [`Evidence`] as JSON: the base of the
//!   reorder buffer;
//! - `watermark` → the engine's watermark, 8 bytes big-endian (two's complement);
//! - `journal/{seq:016x}` → an `Entry` in the binary form of [`codec`] (entries written
//!   before it are JSON and still read), applied over the base in seq order;
//! - `buffer` → the whole reorder buffer in one value (the format before the journal): read
//!   at open and deleted by the first commit.

use std::collections::{BTreeMap, VecDeque};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use serde::{Deserialize, Serialize};

mod codec;

use crate::store::barrier::scan_prefix;
use crate::store::{Commit, Space, Store, StoreError};
use crate::visits::engine::{Buffered, Evidence, EvidenceId, Key, State, VisitEngine, VisitParams};

/// Where a buffered evidence is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Base,
    Journal,
}

const STATE: &[u8] = b"state/";
const BUFFERED: &[u8] = b"buffered/";
const JOURNAL: &[u8] = b"journal/";
const WATERMARK: &[u8] = b"watermark";
const LEGACY_BUFFER: &[u8] = b"buffer";

/// An entry ages out of the journal when it is this much log time older than the newest…
const KEEP_LOG_MS: i64 = 60_000;
/// …or when the journal holds more entries than this (bounds the replay at open).
const MAX_ENTRIES: usize = 512;

/// What one commit changed.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Entry {
    /// The log time of the step that wrote it.
    log_ms: i64,
    /// Each changed key's state after the commit (`None`: gone).
    states: Vec<(Key, Option<State>)>,
    /// Evidence that entered the reorder buffer and was still in it.
    added: Vec<Evidence>,
    /// Evidence stored earlier in the journal that left the buffer.
    removed: Vec<EvidenceId>,
}

/// The journal's bookkeeping, rebuilt at open. Each key and each buffered evidence is held
/// once, under the entry that last wrote it, so folding an entry writes exactly what no
/// newer entry overrides.
#[derive(Debug, Default)]
pub struct Journal {
    /// The entries in the store, oldest first: (seq, log time).
    entries: VecDeque<(u64, i64)>,
    next_seq: u64,
    /// For each key in the journal, the newest entry that wrote it…
    newest: HashMap<Key, u64>,
    /// …and for each entry, the keys it is the newest writer of.
    keys_of: BTreeMap<u64, HashSet<Key>>,
    /// Buffered evidence stored in the base.
    in_base: HashSet<EvidenceId>,
    /// Buffered evidence stored in the journal, by the entry that added it.
    in_journal: HashMap<EvidenceId, u64>,
    evidence_of: BTreeMap<u64, HashMap<EvidenceId, Evidence>>,
    /// The old whole-buffer value is still in the store.
    legacy_buffer: bool,
    /// [`KEEP_LOG_MS`] and [`MAX_ENTRIES`] (tests fold sooner).
    keep_log_ms: i64,
    max_entries: usize,
    /// What this partition's keys start with.
    prefix: Vec<u8>,
}

/// A stored value of this module that cannot be read, named by its key.
fn unreadable(key: &[u8], e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("visits key {}: {e}", String::from_utf8_lossy(key)))
}

fn state_key(prefix: &[u8], key: &Key) -> Vec<u8> {
    let mut k = [prefix, STATE].concat();
    k.extend(serde_json::to_vec(key).expect("keys serialise"));
    k
}

fn buffered_key(prefix: &[u8], (offset, scope): &EvidenceId) -> Vec<u8> {
    let mut k = [prefix, BUFFERED].concat();
    k.extend(format!("{offset:016x}/").as_bytes());
    k.extend(serde_json::to_vec(scope).expect("scopes serialise"));
    k
}

fn journal_key(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut k = [prefix, JOURNAL].concat();
    k.extend(format!("{seq:016x}").as_bytes());
    k
}

impl Journal {
    /// Reads the engine of the partition whose keys start with `prefix` as last committed:
    /// the base, then every journal entry over it.
    pub fn open(
        store: &dyn Store,
        prefix: &[u8],
        params: VisitParams,
        id_key: [u8; 32],
    ) -> Result<(Journal, VisitEngine), StoreError> {
        let (state, buffered_at, journal_at, watermark, legacy_buffer) = (
            [prefix, STATE].concat(),
            [prefix, BUFFERED].concat(),
            [prefix, JOURNAL].concat(),
            [prefix, WATERMARK].concat(),
            [prefix, LEGACY_BUFFER].concat(),
        );
        let mut states: HashMap<Key, State> = HashMap::default();
        for (k, v) in scan_prefix(store, Space::Visits, &state, usize::MAX)? {
            let key: Key =
                serde_json::from_slice(&k[state.len()..]).map_err(|e| unreadable(&k, e))?;
            let state = serde_json::from_slice(&v).map_err(|e| unreadable(&k, e))?;
            states.insert(key, state);
        }
        let mut j = Journal {
            keep_log_ms: KEEP_LOG_MS,
            max_entries: MAX_ENTRIES,
            prefix: prefix.to_vec(),
            ..Journal::default()
        };
        let mut evidence: HashMap<EvidenceId, Evidence> = HashMap::default();
        for (k, v) in scan_prefix(store, Space::Visits, &buffered_at, usize::MAX)? {
            let e: Evidence = serde_json::from_slice(&v).map_err(|e| unreadable(&k, e))?;
            j.in_base.insert(e.id());
            evidence.insert(e.id(), e);
        }
        let mut watermark_ms = match store.get(Space::Visits, &watermark)? {
            Some(v) => i64::from_be_bytes(
                v.as_slice()
                    .try_into()
                    .map_err(|_| unreadable(&watermark, format!("{} bytes, not 8", v.len())))?,
            ),
            None => i64::MIN,
        };
        for (k, v) in scan_prefix(store, Space::Visits, &journal_at, usize::MAX)? {
            let seq = std::str::from_utf8(&k[journal_at.len()..])
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| unreadable(&k, "not a hexadecimal seq"))?;
            let entry: Entry = if v.first() == Some(&codec::FORMAT) {
                codec::decode(&v).map_err(|e| unreadable(&k, e))?
            } else {
                serde_json::from_slice(&v).map_err(|e| unreadable(&k, e))?
            };
            for (key, state) in entry.states {
                match state {
                    Some(s) => states.insert(key.clone(), s),
                    None => states.remove(&key),
                };
                j.note_key(key, seq);
            }
            for id in entry.removed {
                evidence.remove(&id);
                j.forget_evidence(&id);
            }
            for e in entry.added {
                j.note_evidence(&e, seq);
                evidence.insert(e.id(), e);
            }
            j.entries.push_back((seq, entry.log_ms));
            j.next_seq = seq
                .checked_add(1)
                .ok_or_else(|| unreadable(&k, "the last seq there is"))?;
        }
        let mut buffered: Vec<Evidence> = evidence.into_values().collect();
        if let Some(v) = store.get(Space::Visits, &legacy_buffer)? {
            let legacy: Buffered =
                serde_json::from_slice(&v).map_err(|e| unreadable(&legacy_buffer, e))?;
            j.legacy_buffer = true;
            if watermark_ms == i64::MIN {
                watermark_ms = legacy.watermark_ms;
            }
            buffered.extend(legacy.evidence);
        }
        let mut engine = VisitEngine::restore(
            params,
            id_key,
            states.into_iter().collect(),
            Buffered {
                watermark_ms,
                evidence: buffered,
            },
        );
        if j.legacy_buffer {
            // Stored again, one key each, by the first commit.
            engine.unstore_buffer();
        }
        Ok((j, engine))
    }

    fn note_key(&mut self, key: Key, seq: u64) {
        if let Some(old) = self.newest.insert(key.clone(), seq) {
            if let Some(keys) = self.keys_of.get_mut(&old) {
                keys.remove(&key);
                if keys.is_empty() {
                    self.keys_of.remove(&old);
                }
            }
        }
        self.keys_of.entry(seq).or_default().insert(key);
    }

    fn note_evidence(&mut self, e: &Evidence, seq: u64) {
        self.in_journal.insert(e.id(), seq);
        self.evidence_of
            .entry(seq)
            .or_default()
            .insert(e.id(), e.clone());
    }

    /// Forgets a buffered evidence; says where it was stored.
    fn forget_evidence(&mut self, id: &EvidenceId) -> Option<Stored> {
        if self.in_base.remove(id) {
            return Some(Stored::Base);
        }
        let seq = self.in_journal.remove(id)?;
        if let Some(held) = self.evidence_of.get_mut(&seq) {
            held.remove(id);
            // Evidence leaves the buffer within the reorder window, long before its entry is
            // folded: a drained map goes at once rather than holding its room until then.
            if held.is_empty() {
                self.evidence_of.remove(&seq);
            }
        }
        Some(Stored::Journal)
    }

    /// Adds what the engine changed since the last commit to `c` as one journal entry, and
    /// folds the entries that aged out (as of log time `log_ms`) into the base. With `all`,
    /// folds the whole journal instead (an erasure: nothing about the erased stays in it).
    pub fn stage(&mut self, engine: &mut VisitEngine, log_ms: i64, all: bool, c: &mut Commit) {
        let states = engine.take_changes();
        let (added, removed) = engine.take_buffer_changes();
        let seq = self.next_seq;
        let mut entry = Entry {
            log_ms,
            states,
            added,
            removed: Vec::new(),
        };
        for id in removed {
            match self.forget_evidence(&id) {
                Some(Stored::Base) => c.delete(Space::Visits, buffered_key(&self.prefix, &id)),
                Some(Stored::Journal) => entry.removed.push(id),
                None => {}
            }
        }
        if self.legacy_buffer {
            c.delete(Space::Visits, [&self.prefix, LEGACY_BUFFER].concat());
            self.legacy_buffer = false;
        }
        c.put(
            Space::Visits,
            [&self.prefix, WATERMARK].concat(),
            engine.watermark_ms().to_be_bytes().to_vec(),
        );
        if !(entry.states.is_empty() && entry.added.is_empty() && entry.removed.is_empty()) {
            c.put(
                Space::Visits,
                journal_key(&self.prefix, seq),
                codec::encode(&entry),
            );
            for (key, _) in entry.states {
                self.note_key(key, seq);
            }
            for e in &entry.added {
                self.note_evidence(e, seq);
            }
            self.entries.push_back((seq, log_ms));
            self.next_seq += 1;
        }
        while let Some(&(oldest, oldest_ms)) = self.entries.front() {
            let aged = oldest_ms < log_ms.saturating_sub(self.keep_log_ms)
                || self.entries.len() > self.max_entries;
            if !(all || aged) {
                break;
            }
            self.entries.pop_front();
            self.fold(engine, oldest, c);
        }
    }

    /// Moves what entry `seq` holds that no newer entry overrides into the base, and drops it.
    fn fold(&mut self, engine: &VisitEngine, seq: u64, c: &mut Commit) {
        for key in self.keys_of.remove(&seq).unwrap_or_default() {
            self.newest.remove(&key);
            match engine.state(&key) {
                Some(s) => c.put(
                    Space::Visits,
                    state_key(&self.prefix, &key),
                    serde_json::to_vec(s).expect("states serialise"),
                ),
                None => c.delete(Space::Visits, state_key(&self.prefix, &key)),
            }
        }
        for (id, e) in self.evidence_of.remove(&seq).unwrap_or_default() {
            c.put(
                Space::Visits,
                buffered_key(&self.prefix, &id),
                serde_json::to_vec(&e).expect("evidence serialises"),
            );
            self.in_journal.remove(&id);
            self.in_base.insert(id);
        }
        c.delete(Space::Visits, journal_key(&self.prefix, seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::testing::{places, Place};
    use crate::visits::engine::{Scope, Source};
    use proptest::prelude::*;

    const T0: i64 = 1_790_000_000_000;

    fn params() -> VisitParams {
        VisitParams {
            enter_after_s: 3,
            exit_timeout_s: 6,
            exit_grace_s: 2,
            reorder_window_s: 2,
            max_lateness_s: 8,
            ..VisitParams::default()
        }
    }

    fn evidence(customer: u8, scope: u8, at_ms: i64, offset: u64, inside: bool) -> Evidence {
        Evidence {
            customer: format!("c{customer}"),
            scope: if scope == 0 {
                Scope::Store("s1".into())
            } else {
                Scope::Zone(format!("z{scope}"))
            },
            at_ms,
            offset,
            source: Source::Gateway,
            inside,
        }
    }

    fn commit(
        j: &mut Journal,
        engine: &mut VisitEngine,
        store: &dyn Store,
        log_ms: i64,
        all: bool,
    ) {
        let mut c = Commit::new();
        j.stage(engine, log_ms, all, &mut c);
        store.commit(c).unwrap();
    }

    fn reopen(store: &dyn Store, keep_log_ms: i64, max_entries: usize) -> (Journal, VisitEngine) {
        let (mut j, engine) = Journal::open(store, b"", params(), [7; 32]).unwrap();
        j.keep_log_ms = keep_log_ms;
        j.max_entries = max_entries;
        (j, engine)
    }

    fn keys_with(store: &dyn Store, prefix: &[u8]) -> usize {
        scan_prefix(store, Space::Visits, prefix, usize::MAX)
            .unwrap()
            .len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever was committed — journal entries, folded entries, an erasure folding all —
        /// opens as the engine that committed it, and the reopened engine goes on alike.
        #[test]
        fn the_engine_opens_as_it_was_committed(
            steps in proptest::collection::vec((0u8..4, 0u8..3, any::<bool>(), 0i64..4000, 0u8..6), 1..120),
            keep_s in 0i64..20,
            max_entries in 1usize..6,
            erase_at in proptest::option::of(0usize..120),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            let (mut j, mut engine) = reopen(&store, keep_s * 1000, max_entries);
            for (i, (customer, scope, inside, delay, commit_now)) in steps.into_iter().enumerate() {
                let log_ms = T0 + i as i64 * 1000;
                engine.observe(evidence(customer, scope, log_ms - delay, i as u64 + 1, inside), log_ms);
                engine.tick(log_ms);
                if erase_at == Some(i) {
                    engine.forget("c1");
                    commit(&mut j, &mut engine, &store, log_ms, true);
                    prop_assert_eq!(keys_with(&store, JOURNAL), 0);
                    let (_, reopened) = reopen(&store, keep_s * 1000, max_entries);
                    let (states, buffered) = reopened.snapshot();
                    prop_assert!(states.iter().all(|((c, _), _)| c != "c1"));
                    prop_assert!(buffered.evidence.iter().all(|e| e.customer != "c1"));
                }
                if commit_now == 0 {
                    commit(&mut j, &mut engine, &store, log_ms, false);
                    let (j2, reopened) = reopen(&store, keep_s * 1000, max_entries);
                    prop_assert_eq!(reopened.snapshot(), engine.snapshot());
                    prop_assert!(keys_with(&store, JOURNAL) <= max_entries);
                    // Go on from what was read back: the bookkeeping open rebuilt is used.
                    (j, engine) = (j2, reopened);
                }
            }
        }
    }

    #[test]
    fn journal_entries_written_as_json_still_open() {
        for place in places() {
            journal_entries_written_as_json_still_open_on(&place);
        }
    }

    fn journal_entries_written_as_json_still_open_on(place: &Place) {
        let store = place.open();
        let mut engine = VisitEngine::new(params(), [7; 32]);
        for i in 0..6 {
            let log_ms = T0 + i * 1000;
            engine.observe(
                evidence(1, i as u8 % 2, log_ms - 500, i as u64 + 1, true),
                log_ms,
            );
            engine.tick(log_ms);
        }
        // One entry as the stage wrote it before the binary form.
        let (added, _) = engine.take_buffer_changes();
        let entry = Entry {
            log_ms: T0 + 5000,
            states: engine.take_changes(),
            added,
            removed: Vec::new(),
        };
        assert!(!entry.states.is_empty() && !entry.added.is_empty());
        let mut c = Commit::new();
        c.put(
            Space::Visits,
            journal_key(b"", 0),
            serde_json::to_vec(&entry).unwrap(),
        );
        c.put(
            Space::Visits,
            WATERMARK.to_vec(),
            engine.watermark_ms().to_be_bytes().to_vec(),
        );
        store.commit(c).unwrap();
        let (mut j, mut opened) = Journal::open(&store, b"", params(), [7; 32]).unwrap();
        assert_eq!(opened.snapshot(), engine.snapshot());
        // The next entry is binary, after the JSON one.
        opened.observe(evidence(2, 0, T0 + 5500, 7, true), T0 + 6000);
        commit(&mut j, &mut opened, &store, T0 + 6000, false);
        let next = store
            .get(Space::Visits, &journal_key(b"", 1))
            .unwrap()
            .unwrap();
        assert_eq!(next[0], codec::FORMAT);
        let (_, again) = Journal::open(&store, b"", params(), [7; 32]).unwrap();
        assert_eq!(again.snapshot(), opened.snapshot());
    }

    #[test]
    fn a_store_written_before_the_journal_opens_and_is_rewritten_by_the_first_commit() {
        for place in places() {
            a_store_written_before_the_journal_opens_and_is_rewritten_by_the_first_commit_on(
                &place,
            );
        }
    }

    fn a_store_written_before_the_journal_opens_and_is_rewritten_by_the_first_commit_on(
        place: &Place,
    ) {
        let store = place.open();
        // The engine as the stage stored it before the journal: every state under its key,
        // and the whole reorder buffer in one value.
        let mut engine = VisitEngine::new(params(), [7; 32]);
        for i in 0..8 {
            let log_ms = T0 + i * 1000;
            engine.observe(evidence(1, 0, log_ms - 500, i as u64 + 1, true), log_ms);
            engine.tick(log_ms);
        }
        let mut c = Commit::new();
        for (key, state) in engine.take_changes() {
            c.put(
                Space::Visits,
                state_key(b"", &key),
                serde_json::to_vec(&state.unwrap()).unwrap(),
            );
        }
        let buffered = engine.buffered();
        assert!(!buffered.evidence.is_empty());
        c.put(
            Space::Visits,
            LEGACY_BUFFER.to_vec(),
            serde_json::to_vec(&buffered).unwrap(),
        );
        store.commit(c).unwrap();

        let (mut j, mut opened) = Journal::open(&store, b"", params(), [7; 32]).unwrap();
        assert_eq!(opened.snapshot(), engine.snapshot());
        commit(&mut j, &mut opened, &store, T0 + 8000, false);
        assert_eq!(store.get(Space::Visits, LEGACY_BUFFER).unwrap(), None);
        let (_, again) = Journal::open(&store, b"", params(), [7; 32]).unwrap();
        assert_eq!(again.snapshot(), engine.snapshot());
    }
}
