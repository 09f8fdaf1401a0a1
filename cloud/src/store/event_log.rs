//! The event log and consumer offsets (DESIGN.md, "The cloud's pipeline"): ingest appends each
//! accepted observation (and a tick every second) at the next offset; each later stage reads in
//! log order from its stored offset and commits its outputs together with its new offset, so a
//! crash anywhere replays from the last commit and produces the same outputs.
//!
//! Records are opaque bytes here; their meaning belongs to ingest and the stages.

use super::{Commit, Space, Store, StoreError};

/// The first offset of every log.
pub const FIRST_OFFSET: u64 = 1;

fn key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

fn offset_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Backend(format!("event log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The writer's handle: where the next record goes.
#[derive(Debug)]
pub struct EventLog {
    next: u64,
}

impl EventLog {
    /// Picks up after the last record in the store.
    pub fn open(store: &dyn Store) -> Result<EventLog, StoreError> {
        let next = match store.last(Space::EventLog)? {
            Some((k, _)) => offset_of(&k)? + 1,
            None => FIRST_OFFSET,
        };
        Ok(EventLog { next })
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Adds `record` at the next offset to `commit`, so it lands atomically with whatever else
    /// the commit writes; returns the offset. The commit fails with a conflict if another
    /// writer took any of its offsets. If the commit fails, call [`EventLog::reset`].
    ///
    /// One expectation covers all of a commit's records: the first's offset must be free. A
    /// writer appends from the offset after the last record it saw, so another writer's
    /// committed range that overlaps ours either starts at our first offset or before it (and
    /// then holds our first offset too): either way our first offset is taken. (A sled get per
    /// record was a tenth of ingest's cost.) One event log writer per commit.
    pub fn append(&mut self, commit: &mut Commit, record: &[u8]) -> u64 {
        let offset = self.next;
        if !commit.expects_an_absent_key(Space::EventLog) {
            commit.expect(Space::EventLog, key(offset), None);
        }
        commit.put(Space::EventLog, key(offset), record);
        self.next += 1;
        offset
    }

    /// Re-reads the position after a failed commit.
    pub fn reset(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        *self = EventLog::open(store)?;
        Ok(())
    }
}

/// Up to `limit` records from `from` on, in log order.
pub fn read(store: &dyn Store, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    store
        .scan(Space::EventLog, &key(from), limit)?
        .into_iter()
        .map(|(k, v)| Ok((offset_of(&k)?, v)))
        .collect()
}

/// The next offset `consumer` will read (where it resumes after a restart).
pub fn position(store: &dyn Store, consumer: &str) -> Result<u64, StoreError> {
    match store.get(Space::Offsets, consumer.as_bytes())? {
        None => Ok(FIRST_OFFSET),
        Some(v) => offset_of(&v),
    }
}

/// Publishes how many records `consumer` has still to read (`omo_stage_lag_records`), with
/// `end` the next offset of its input (the log, or another stage's numbered output): a stage
/// falling behind shows before its outputs are late; and counts the `read` records its last
/// step read (`omo_stage_records_total`: its throughput).
pub fn report_progress(store: &dyn Store, consumer: &'static str, end: u64, read: usize) {
    metrics::counter!("omo_stage_records_total", "stage" => consumer).increment(read as u64);
    if let Ok(at) = position(store, consumer) {
        metrics::gauge!("omo_stage_lag_records", "stage" => consumer)
            .set(end.saturating_sub(at) as f64);
    }
}

/// Moves `consumer` from `from` to `to` as part of `commit`; the commit conflicts if another
/// instance moved it meanwhile, so a stage's outputs are committed once.
pub fn advance(commit: &mut Commit, consumer: &str, from: u64, to: u64) {
    let previous = (from != FIRST_OFFSET).then(|| key(from).to_vec());
    commit.expect(Space::Offsets, consumer.as_bytes(), previous);
    commit.put(Space::Offsets, consumer.as_bytes(), key(to));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use proptest::prelude::*;

    fn open(dir: &std::path::Path) -> SledStore {
        SledStore::open(dir, 1 << 20).unwrap()
    }

    #[test]
    fn appends_read_back_in_order_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = open(dir.path());
            let mut log = EventLog::open(&s).unwrap();
            let mut c = Commit::new();
            assert_eq!(log.append(&mut c, b"a"), 1);
            assert_eq!(log.append(&mut c, b"b"), 2);
            s.commit(c).unwrap();
            s.flush().unwrap();
        }
        let s = open(dir.path());
        let mut log = EventLog::open(&s).unwrap();
        assert_eq!(log.next_offset(), 3);
        let mut c = Commit::new();
        log.append(&mut c, b"c");
        s.commit(c).unwrap();
        let all = read(&s, 1, 10).unwrap();
        assert_eq!(
            all,
            [(1, b"a".to_vec()), (2, b"b".to_vec()), (3, b"c".to_vec())]
        );
        assert_eq!(read(&s, 3, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_second_writer_cannot_take_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let (mut a, mut b) = (EventLog::open(&s).unwrap(), EventLog::open(&s).unwrap());
        let (mut ca, mut cb) = (Commit::new(), Commit::new());
        a.append(&mut ca, b"from a");
        b.append(&mut cb, b"from b");
        s.commit(ca).unwrap();
        assert!(matches!(s.commit(cb), Err(StoreError::Conflict { .. })));
        b.reset(&s).unwrap();
        assert_eq!(b.next_offset(), 2);
    }

    #[test]
    fn a_writer_that_saw_less_cannot_write_over_a_longer_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut first = EventLog::open(&s).unwrap();
        let mut c = Commit::new();
        first.append(&mut c, b"1");
        s.commit(c).unwrap();
        // Both saw offset 1; a commits 2..=6, then b tries 2..=3 and a stale c tries 4.
        let (mut a, mut b) = (EventLog::open(&s).unwrap(), EventLog::open(&s).unwrap());
        let (mut ca, mut cb) = (Commit::new(), Commit::new());
        for r in [b"a", b"b", b"c", b"d", b"e"] {
            a.append(&mut ca, r);
        }
        b.append(&mut cb, b"x");
        b.append(&mut cb, b"y");
        s.commit(ca).unwrap();
        assert!(matches!(s.commit(cb), Err(StoreError::Conflict { .. })));
        let mut stale = EventLog { next: 4 };
        let mut cs = Commit::new();
        stale.append(&mut cs, b"z");
        stale.append(&mut cs, b"w");
        assert!(matches!(s.commit(cs), Err(StoreError::Conflict { .. })));
        let all: Vec<Vec<u8>> = read(&s, 1, 10)
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(
            all,
            [b"1", b"a", b"b", b"c", b"d", b"e"].map(|r| r.to_vec())
        );
    }

    #[test]
    fn offsets_advance_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        assert_eq!(position(&s, "visits").unwrap(), FIRST_OFFSET);
        let mut c = Commit::new();
        advance(&mut c, "visits", FIRST_OFFSET, 5);
        s.commit(c).unwrap();
        assert_eq!(position(&s, "visits").unwrap(), 5);
        // A replayed commit from the old position is refused: outputs are not written twice.
        let mut again = Commit::new();
        advance(&mut again, "visits", FIRST_OFFSET, 5);
        again.put(Space::Stats, b"visits".to_vec(), b"counted twice".to_vec());
        assert!(matches!(s.commit(again), Err(StoreError::Conflict { .. })));
        assert_eq!(s.get(Space::Stats, b"visits").unwrap(), None);
    }

    proptest! {
        #[test]
        fn reads_return_exactly_what_was_appended(batches in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..4), 1..20), from in 1u64..30) {
            let dir = tempfile::tempdir().unwrap();
            let s = open(dir.path());
            let mut log = EventLog::open(&s).unwrap();
            let mut all = Vec::new();
            for b in &batches {
                let mut c = Commit::new();
                for byte in b {
                    let off = log.append(&mut c, &[*byte]);
                    all.push((off, vec![*byte]));
                }
                s.commit(c).unwrap();
            }
            let expected: Vec<_> = all.into_iter().filter(|(o, _)| *o >= from).collect();
            prop_assert_eq!(read(&s, from, usize::MAX).unwrap(), expected);
        }
    }
}
