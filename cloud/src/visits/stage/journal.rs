//! How the visit stage stores its engine: every commit adds one journal entry — the states
//! the step changed — instead of one write per changed key, and the journal's oldest entries
//! are folded into the per-key base as they age out. A customer present for an hour sends
//! evidence every few seconds; their state is rewritten in the base once they go quiet, not at
//! every step. The reorder buffer is not stored: it is the evidence, newer than the watermark,
//! of the log's records from the oldest one still buffered, and the stage derives it again
//! from there when it opens (as it derives every record after its offset). The journal and
//! that position are committed with the stage's offset, so a replay starts from exactly the
//! engine that was committed.
//!
//! Keys in [`Space::Visits`] (this module owns them):
//! - `state/{key as JSON}` → a [`State`] as JSON: the base of each customer × scope;
//! - `journal/{seq:016x}` → an [`Entry`] as JSON, applied over the base in seq order;
//! - `engine` → a [`Position`] as JSON: the watermark and where the buffer starts;
//! - `buffer` → the whole reorder buffer in one value (the format before the journal): read
//!   at open and deleted by the first commit.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::store::barrier::scan_prefix;
use crate::store::{Commit, Space, Store, StoreError};
use crate::visits::engine::{Buffered, Key, State, VisitEngine, VisitParams};

const STATE: &[u8] = b"state/";
const JOURNAL: &[u8] = b"journal/";
const POSITION: &[u8] = b"engine";
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
}

/// The engine's place in time and in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub watermark_ms: i64,
    /// The log offset of the oldest record with evidence in the reorder buffer (none: empty).
    pub buffered_from: Option<u64>,
}

/// The journal's bookkeeping, rebuilt at open. Each key is held once, under the entry that
/// last wrote it, so folding an entry writes exactly what no newer entry overrides.
#[derive(Debug, Default)]
pub struct Journal {
    /// The entries in the store, oldest first: (seq, log time).
    entries: VecDeque<(u64, i64)>,
    next_seq: u64,
    /// For each key in the journal, the newest entry that wrote it…
    newest: HashMap<Key, u64>,
    /// …and for each entry, the keys it is the newest writer of.
    keys_of: BTreeMap<u64, HashSet<Key>>,
    /// The old whole-buffer value is still in the store.
    legacy_buffer: bool,
    /// [`KEEP_LOG_MS`] and [`MAX_ENTRIES`] (tests fold sooner).
    keep_log_ms: i64,
    max_entries: usize,
}

fn backend(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("{what}: {e}"))
}

fn state_key(key: &Key) -> Vec<u8> {
    let mut k = STATE.to_vec();
    k.extend(serde_json::to_vec(key).expect("keys serialise"));
    k
}

fn journal_key(seq: u64) -> Vec<u8> {
    let mut k = JOURNAL.to_vec();
    k.extend(format!("{seq:016x}").as_bytes());
    k
}

impl Journal {
    /// Reads the engine as last committed — the base, then every journal entry over it — and
    /// where its reorder buffer starts in the log (for the stage to derive it again).
    pub fn open(
        store: &dyn Store,
        params: VisitParams,
        id_key: [u8; 32],
    ) -> Result<(Journal, VisitEngine, Option<u64>), StoreError> {
        let mut states: HashMap<Key, State> = HashMap::new();
        for (k, v) in scan_prefix(store, Space::Visits, STATE, usize::MAX)? {
            let key: Key = serde_json::from_slice(&k[STATE.len()..])
                .map_err(|e| backend("visit state key", e))?;
            let state = serde_json::from_slice(&v).map_err(|e| backend("visit state", e))?;
            states.insert(key, state);
        }
        let mut j = Journal {
            keep_log_ms: KEEP_LOG_MS,
            max_entries: MAX_ENTRIES,
            ..Journal::default()
        };
        for (k, v) in scan_prefix(store, Space::Visits, JOURNAL, usize::MAX)? {
            let seq = std::str::from_utf8(&k[JOURNAL.len()..])
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .ok_or_else(|| backend("visit journal key", String::from_utf8_lossy(&k)))?;
            let entry: Entry =
                serde_json::from_slice(&v).map_err(|e| backend("visit journal entry", e))?;
            for (key, state) in entry.states {
                match state {
                    Some(s) => states.insert(key.clone(), s),
                    None => states.remove(&key),
                };
                j.note_key(key, seq);
            }
            j.entries.push_back((seq, entry.log_ms));
            j.next_seq = seq + 1;
        }
        let position: Option<Position> = match store.get(Space::Visits, POSITION)? {
            Some(v) => Some(serde_json::from_slice(&v).map_err(|e| backend("visit engine", e))?),
            None => None,
        };
        let buffered = match store.get(Space::Visits, LEGACY_BUFFER)? {
            Some(v) => {
                j.legacy_buffer = true;
                serde_json::from_slice(&v).map_err(|e| backend("visit buffer", e))?
            }
            None => Buffered {
                watermark_ms: position.map_or(i64::MIN, |p| p.watermark_ms),
                evidence: Vec::new(),
            },
        };
        let engine = VisitEngine::restore(params, id_key, states.into_iter().collect(), buffered);
        Ok((j, engine, position.and_then(|p| p.buffered_from)))
    }

    fn note_key(&mut self, key: Key, seq: u64) {
        if let Some(old) = self.newest.insert(key.clone(), seq) {
            if let Some(keys) = self.keys_of.get_mut(&old) {
                keys.remove(&key);
            }
        }
        self.keys_of.entry(seq).or_default().insert(key);
    }

    /// Adds what the engine changed since the last commit to `c` as one journal entry, with
    /// its position, and folds the entries that aged out (as of log time `log_ms`) into the
    /// base. With `all`, folds the whole journal instead (an erasure: nothing about the erased
    /// stays in it).
    pub fn stage(&mut self, engine: &mut VisitEngine, log_ms: i64, all: bool, c: &mut Commit) {
        let states = engine.take_changes();
        if self.legacy_buffer {
            c.delete(Space::Visits, LEGACY_BUFFER.to_vec());
            self.legacy_buffer = false;
        }
        let position = Position {
            watermark_ms: engine.watermark_ms(),
            buffered_from: engine.buffered_from(),
        };
        c.put(
            Space::Visits,
            POSITION.to_vec(),
            serde_json::to_vec(&position).expect("positions serialise"),
        );
        if !states.is_empty() {
            let seq = self.next_seq;
            let entry = Entry { log_ms, states };
            c.put(
                Space::Visits,
                journal_key(seq),
                serde_json::to_vec(&entry).expect("journal entries serialise"),
            );
            for (key, _) in entry.states {
                self.note_key(key, seq);
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
                    state_key(&key),
                    serde_json::to_vec(s).expect("states serialise"),
                ),
                None => c.delete(Space::Visits, state_key(&key)),
            }
        }
        c.delete(Space::Visits, journal_key(seq));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::visits::engine::{Evidence, Scope, Source};
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
        store: &SledStore,
        log_ms: i64,
        all: bool,
    ) {
        let mut c = Commit::new();
        j.stage(engine, log_ms, all, &mut c);
        store.commit(c).unwrap();
    }

    /// The journal and engine as committed, and where the buffer starts.
    fn reopen(
        store: &SledStore,
        keep_log_ms: i64,
        max_entries: usize,
    ) -> (Journal, VisitEngine, Option<u64>) {
        let (mut j, engine, from) = Journal::open(store, params(), [7; 32]).unwrap();
        j.keep_log_ms = keep_log_ms;
        j.max_entries = max_entries;
        (j, engine, from)
    }

    fn journal_entries(store: &SledStore) -> usize {
        scan_prefix(store, Space::Visits, JOURNAL, usize::MAX)
            .unwrap()
            .len()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever was committed — journal entries, folded entries, an erasure folding all —
        /// opens as the states and watermark that committed it, with where the buffer starts;
        /// the stage's own tests show the buffer derived again from there.
        #[test]
        fn the_engine_opens_as_it_was_committed(
            steps in proptest::collection::vec((0u8..4, 0u8..3, any::<bool>(), 0i64..4000, 0u8..6), 1..120),
            keep_s in 0i64..20,
            max_entries in 1usize..6,
            erase_at in proptest::option::of(0usize..120),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = SledStore::open(dir.path(), 1 << 20).unwrap();
            let (mut j, mut engine, _) = reopen(&store, keep_s * 1000, max_entries);
            for (i, (customer, scope, inside, delay, commit_now)) in steps.into_iter().enumerate() {
                let log_ms = T0 + i as i64 * 1000;
                engine.observe(evidence(customer, scope, log_ms - delay, i as u64 + 1, inside), log_ms);
                engine.tick(log_ms);
                if erase_at == Some(i) {
                    engine.forget("c1");
                    commit(&mut j, &mut engine, &store, log_ms, true);
                    prop_assert_eq!(journal_entries(&store), 0);
                    let (_, reopened, _) = reopen(&store, keep_s * 1000, max_entries);
                    prop_assert!(reopened.snapshot().0.iter().all(|((c, _), _)| c != "c1"));
                }
                if commit_now == 0 {
                    commit(&mut j, &mut engine, &store, log_ms, false);
                    let (j2, mut reopened, from) = reopen(&store, keep_s * 1000, max_entries);
                    prop_assert_eq!(reopened.snapshot().0, engine.snapshot().0);
                    prop_assert_eq!(reopened.watermark_ms(), engine.watermark_ms());
                    prop_assert_eq!(from, engine.buffered_from());
                    prop_assert!(journal_entries(&store) <= max_entries);
                    // Go on from what was read back (the bookkeeping open rebuilt), with the
                    // buffer the stage would derive again.
                    for e in engine.buffered().evidence {
                        reopened.observe(e, log_ms);
                    }
                    prop_assert_eq!(reopened.snapshot(), engine.snapshot());
                    (j, engine) = (j2, reopened);
                }
            }
        }
    }

    #[test]
    fn a_store_written_before_the_journal_opens_and_is_rewritten_by_the_first_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
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
                state_key(&key),
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

        let (mut j, mut opened, from) = Journal::open(&store, params(), [7; 32]).unwrap();
        assert_eq!(opened.snapshot(), engine.snapshot());
        assert_eq!(from, None);
        commit(&mut j, &mut opened, &store, T0 + 8000, false);
        assert_eq!(store.get(Space::Visits, LEGACY_BUFFER).unwrap(), None);
        let (_, again, from) = Journal::open(&store, params(), [7; 32]).unwrap();
        assert_eq!(again.snapshot().0, engine.snapshot().0);
        assert_eq!(from, engine.buffered_from());
    }
}
