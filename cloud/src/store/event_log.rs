//! The event log and consumer offsets (DESIGN.md, "The cloud's pipeline"): ingest appends each
//! accepted observation (and a tick every second) at the next offset; each later stage reads in
//! log order from its stored offset and commits its outputs together with its new offset, so a
//! crash anywhere replays from the last commit and produces the same outputs.
//!
//! Records are opaque bytes here; their meaning belongs to ingest and the stages.
//!
//! Keys in [`Space::EventLog`] are the offset of an entry's first record (8 bytes big-endian).
//! An entry is the records one commit appended, up to [`GROUP_MAX`] of them, at consecutive
//! offsets: [`GROUP`] then each record as a varint length and its bytes. (One sled write per
//! record was most of ingest's cost.) A value without that mark is one record: logs written
//! before groups still read. `log-end` in [`Space::Offsets`] holds the next offset, checked
//! and moved by every commit that appends, so two writers never take the same offsets.

use super::compact::{push_u64, Reader};
use super::{Commit, Space, Store, StoreError};

/// The first offset of every log.
pub const FIRST_OFFSET: u64 = 1;

/// The most records one entry holds.
pub const GROUP_MAX: u64 = 256;

/// How an entry of several records starts (a record is JSON: it never starts with NUL).
const GROUP: [u8; 2] = [0, 1];

/// The next offset, in [`Space::Offsets`].
const END: &[u8] = b"log-end";

fn key(offset: u64) -> [u8; 8] {
    offset.to_be_bytes()
}

fn offset_of(key: &[u8]) -> Result<u64, StoreError> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| StoreError::Backend(format!("event log key of {} bytes", key.len())))?;
    Ok(u64::from_be_bytes(bytes))
}

/// The key holding the log's end (the next offset), which every append expects and moves.
pub(super) fn end_key() -> &'static [u8] {
    END
}

/// Where one expectation or write of a commit whose append was written to start at `first`
/// goes when the store moves that append on by `delta` offsets (another writer appended
/// meanwhile): the appended entries (event-log keys from `first` on) and the check that
/// `first` is free move with it, and so does the log end it expects and writes; anything else
/// stays.
pub(super) fn moved(
    (first, delta): (u64, u64),
    space: Space,
    at: &[u8],
    value: Option<&[u8]>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), StoreError> {
    match space {
        Space::EventLog if at >= key(first).as_slice() => {
            let offset = offset_of(at)? + delta;
            Ok((key(offset).to_vec(), value.map(<[u8]>::to_vec)))
        }
        // The end it writes moves on, and the end it expects is where the append now starts
        // (absent: a writer that found no end starts at `first`).
        Space::Offsets if at == END => {
            let end = value.map_or(Ok(first), offset_of)? + delta;
            Ok((at.to_vec(), Some(key(end).to_vec())))
        }
        _ => Ok((at.to_vec(), value.map(<[u8]>::to_vec))),
    }
}

/// The offset a log-end value names.
pub(super) fn end_of(value: &[u8]) -> Result<u64, StoreError> {
    offset_of(value)
}

/// Adds `record` to an entry's value.
fn push_record(entry: &mut Vec<u8>, record: &[u8]) {
    push_u64(entry, record.len() as u64);
    entry.extend_from_slice(record);
}

/// The records of the entry at `first`, with their offsets.
fn records_of(first: u64, value: &[u8]) -> Vec<(u64, &[u8])> {
    let Some(body) = value.strip_prefix(&GROUP) else {
        return vec![(first, value)];
    };
    let mut r = Reader::new(body);
    let mut out = Vec::new();
    while !r.is_empty() {
        match r.bytes("a record's length and bytes") {
            Ok(record) => out.push((first + out.len() as u64, record)),
            Err(e) => {
                // One unreadable record, as a damaged record always was: consumers skip it
                // and move on rather than stop at it.
                tracing::error!(
                    entry = first,
                    "event log entry: byte {}: expected {}",
                    e.at + GROUP.len(),
                    e.expected
                );
                return vec![(first, value)];
            }
        }
    }
    out
}

/// Where a commit's appends go on: the entry being filled and the `log-end` write, by their
/// index among the commit's writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appending {
    entry: usize,
    first: u64,
    end: usize,
}

impl Appending {
    /// The offset the append's first record was written at.
    pub fn first(self) -> u64 {
        self.first
    }

    /// The same places once `by` writes come before them.
    pub(super) fn shifted(self, by: usize) -> Appending {
        Appending {
            entry: self.entry + by,
            end: self.end + by,
            ..self
        }
    }
}

/// The writer's handle: where the next record goes.
#[derive(Debug)]
pub struct EventLog {
    next: u64,
    /// `log-end` was absent when the log was opened (a new log, or one written before it) and
    /// this writer has not appended since.
    end_absent: bool,
}

impl EventLog {
    /// Picks up after the last record in the store.
    pub fn open(store: &dyn Store) -> Result<EventLog, StoreError> {
        let end = store.get(Space::Offsets, END)?;
        let next = match &end {
            Some(v) => offset_of(v)?,
            None => match store.last(Space::EventLog)? {
                Some((k, v)) => {
                    let first = offset_of(&k)?;
                    first + records_of(first, &v).len() as u64
                }
                None => FIRST_OFFSET,
            },
        };
        Ok(EventLog {
            next,
            end_absent: end.is_none(),
        })
    }

    /// The offset the next record will get.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Adds `record` at the next offset to `commit`, so it lands atomically with whatever else
    /// the commit writes; returns the offset. The commit's records share entries (up to
    /// [`GROUP_MAX`] each), and the commit fails with a conflict if another writer appended
    /// since this one last read the log's end. If the commit fails, call [`EventLog::reset`].
    /// One event log writer per commit.
    pub fn append(&mut self, commit: &mut Commit, record: &[u8]) -> u64 {
        let offset = self.next;
        self.next += 1;
        let end = match commit.log {
            Some(a) if offset - a.first < GROUP_MAX => {
                let entry = commit.writes[a.entry]
                    .2
                    .as_mut()
                    .expect("an entry is a put");
                push_record(entry, record);
                a.end
            }
            // The entry is full: the next one starts here.
            Some(a) => a.end,
            None => {
                // The end this writer left (or found): another writer's commit moved it…
                let expected = (!self.end_absent).then(|| key(offset).to_vec());
                self.end_absent = false;
                commit.expect(Space::Offsets, END, expected);
                // …and the offset free (a writer that does not keep log-end cannot be written
                // over unnoticed).
                commit.expect(Space::EventLog, key(offset), None);
                commit.put(Space::Offsets, END, Vec::new());
                commit.writes.len() - 1
            }
        };
        if commit.log.is_none_or(|a| a.first + GROUP_MAX <= offset) {
            let mut entry = GROUP.to_vec();
            push_record(&mut entry, record);
            commit.put(Space::EventLog, key(offset), entry);
            commit.log = Some(Appending {
                entry: commit.writes.len() - 1,
                first: offset,
                end,
            });
        }
        commit.writes[end].2 = Some(key(self.next).to_vec());
        offset
    }

    /// After a commit whose append the store moved on by `delta` offsets
    /// ([`Store::commit_appending`]): the next record goes after it.
    pub fn moved_on(&mut self, delta: u64) {
        self.next += delta;
    }

    /// Re-reads the position after a failed commit.
    pub fn reset(&mut self, store: &dyn Store) -> Result<(), StoreError> {
        *self = EventLog::open(store)?;
        Ok(())
    }
}

/// An entry's first offset and its records with their offsets.
pub type LogEntry = (u64, Vec<(u64, Vec<u8>)>);

/// The entry holding `offset`, as its first offset and its value, if the log holds it.
fn holding(store: &dyn Store, offset: u64) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    if let Some(v) = store.get(Space::EventLog, &key(offset))? {
        return Ok(Some((offset, v)));
    }
    let from = offset.saturating_sub(GROUP_MAX - 1);
    let before = store.scan_range(
        Space::EventLog,
        &key(from),
        &key(offset),
        GROUP_MAX as usize,
    )?;
    let Some((k, v)) = before.into_iter().last() else {
        return Ok(None);
    };
    let first = offset_of(&k)?;
    Ok((first + records_of(first, &v).len() as u64 > offset).then_some((first, v)))
}

/// The records of entry `(first, value)` from offset `from` on.
fn owned_records_from(first: u64, value: &[u8], from: u64) -> Vec<(u64, Vec<u8>)> {
    records_of(first, value)
        .into_iter()
        .filter(|(o, _)| *o >= from)
        .map(|(o, r)| (o, r.to_vec()))
        .collect()
}

/// The log's entries holding records from `from` on, in log order, each as its first offset
/// and its records, until they hold `limit` records (whole entries: up to [`GROUP_MAX`] - 1
/// more) or the log ends. Records before `from` in the first entry are left out.
pub fn read_entries(
    store: &dyn Store,
    from: u64,
    limit: usize,
) -> Result<Vec<LogEntry>, StoreError> {
    const PAGE: usize = 64;
    let mut out: Vec<LogEntry> = Vec::new();
    let mut count = 0;
    let mut at = from;
    if let Some((first, value)) = holding(store, from)? {
        let records = owned_records_from(first, &value, from);
        count = records.len();
        out.push((first, records));
        at = first + 1;
        if count >= limit {
            return Ok(out);
        }
    }
    loop {
        // Each entry holds a record at least: no more entries than records still wanted.
        let want = PAGE.min(limit - count).max(1);
        let page = store.scan(Space::EventLog, &key(at), want)?;
        for (k, v) in &page {
            let first = offset_of(k)?;
            let records = owned_records_from(first, v, from);
            count += records.len();
            out.push((first, records));
            at = first + 1;
            if count >= limit {
                return Ok(out);
            }
        }
        if page.len() < want {
            return Ok(out);
        }
    }
}

/// Records from `from` on, in log order: at least `limit` unless the log ends first (whole
/// entries, so up to [`GROUP_MAX`] - 1 more).
pub fn read(store: &dyn Store, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
    Ok(read_entries(store, from, limit)?
        .into_iter()
        .flat_map(|(_, records)| records)
        .collect())
}

/// Adds to `commit` the rewrite of each record named in `changes` (offset, new bytes; in
/// ascending offsets), each entry holding them written once. An offset the log does not hold
/// is left alone. The commit conflicts if any entry it rewrites changed since: read again and
/// retry.
pub fn replace(
    store: &dyn Store,
    commit: &mut Commit,
    changes: &[(u64, Vec<u8>)],
) -> Result<(), StoreError> {
    let mut i = 0;
    while i < changes.len() {
        let Some((first, value)) = holding(store, changes[i].0)? else {
            i += 1;
            continue;
        };
        let mut records: Vec<(u64, &[u8])> = records_of(first, &value);
        let end = first + records.len() as u64;
        let mut j = i;
        while j < changes.len() && (first..end).contains(&changes[j].0) {
            let (offset, bytes) = &changes[j];
            records[(offset - first) as usize].1 = bytes;
            j += 1;
        }
        if j == i {
            i += 1;
            continue;
        }
        let new = if value.starts_with(&GROUP) {
            let mut v = GROUP.to_vec();
            for (_, r) in &records {
                push_record(&mut v, r);
            }
            v
        } else {
            records[0].1.to_vec()
        };
        // Written over only as read: another erasure (or retention) may have changed it.
        commit.expect(Space::EventLog, key(first).to_vec(), Some(value.clone()));
        commit.put(Space::EventLog, key(first).to_vec(), new);
        i = j;
    }
    Ok(())
}

/// Adds to `commit` the deletion of the entry whose first record is at `first` (an entry goes
/// whole: the records one commit appended).
pub fn delete_entry(commit: &mut Commit, first: u64) {
    commit.delete(Space::EventLog, key(first).to_vec());
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
    match position(store, consumer) {
        Ok(at) => report_partitions_progress(consumer, end.saturating_sub(at), read),
        Err(_) => {
            metrics::counter!("omo_stage_records_total", "stage" => consumer).increment(read as u64)
        }
    }
}

/// Moves `consumer` from `from` to `to` as part of `commit`; the commit conflicts if another
/// instance moved it meanwhile, so a stage's outputs are committed once.
pub fn advance(commit: &mut Commit, consumer: &str, from: u64, to: u64) {
    expect_at(commit, consumer, from);
    commit.put(Space::Offsets, consumer.as_bytes(), key(to));
}

/// Makes `commit` apply only while `consumer` is still at `at` (what a stage writes of its own
/// state between two steps, an erasure say, is written by the one that holds that position).
pub fn expect_at(commit: &mut Commit, consumer: &str, at: u64) {
    let previous = (at != FIRST_OFFSET).then(|| key(at).to_vec());
    commit.expect(Space::Offsets, consumer.as_bytes(), previous);
}

/// How many times `consumer`'s own state was written outside its steps (an erasure of the
/// visit stage's engine): its steps expect it unchanged, so an instance holding the state
/// from before such a write conflicts and reads it again instead of writing it back.
pub fn revision(store: &dyn Store, consumer: &str) -> Result<u64, StoreError> {
    match store.get(Space::Offsets, revision_key(consumer).as_bytes())? {
        None => Ok(0),
        Some(v) => <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| StoreError::backend("revision", format!("{} bytes, not 8", v.len()))),
    }
}

fn revision_key(consumer: &str) -> String {
    format!("revision/{consumer}")
}

/// Makes `commit` apply only while `consumer`'s revision is still `seen`.
pub fn expect_revision(commit: &mut Commit, consumer: &str, seen: u64) {
    let value = (seen > 0).then(|| seen.to_be_bytes().to_vec());
    commit.expect(Space::Offsets, revision_key(consumer).into_bytes(), value);
}

/// Moves `consumer`'s revision on from `seen` as part of `commit` (expecting it at `seen`).
pub fn bump_revision(commit: &mut Commit, consumer: &str, seen: u64) {
    expect_revision(commit, consumer, seen);
    commit.put(
        Space::Offsets,
        revision_key(consumer).into_bytes(),
        (seen + 1).to_be_bytes().to_vec(),
    );
}

/// The positions of `consumers`, in their order, in one read.
pub fn positions(store: &dyn Store, consumers: &[String]) -> Result<Vec<u64>, StoreError> {
    let keys: Vec<Vec<u8>> = consumers.iter().map(|c| c.as_bytes().to_vec()).collect();
    store
        .get_many(Space::Offsets, &keys)?
        .into_iter()
        .map(|v| v.map_or(Ok(FIRST_OFFSET), |v| offset_of(&v)))
        .collect()
}

/// [`report_progress`] for a stage split in partitions: `lag` is how far the partitions this
/// instance holds are behind at most.
pub fn report_partitions_progress(stage: &'static str, lag: u64, read: usize) {
    metrics::counter!("omo_stage_records_total", "stage" => stage).increment(read as u64);
    metrics::gauge!("omo_stage_lag_records", "stage" => stage).set(lag as f64);
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
        let mut stale = EventLog {
            next: 4,
            end_absent: false,
        };
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
    fn a_log_written_one_record_per_key_still_reads_and_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        // As the writer stored records before entries and `log-end`.
        let mut c = Commit::new();
        for (o, r) in [(1u64, b"{\"a\":1}"), (2, b"{\"a\":2}"), (3, b"{\"a\":3}")] {
            c.put(Space::EventLog, key(o), r.to_vec());
        }
        s.commit(c).unwrap();
        let mut log = EventLog::open(&s).unwrap();
        assert_eq!(log.next_offset(), 4);
        let mut c = Commit::new();
        log.append(&mut c, b"d");
        log.append(&mut c, b"e");
        s.commit(c).unwrap();
        let all = read(&s, 2, 10).unwrap();
        let offsets: Vec<u64> = all.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, [2, 3, 4, 5]);
        assert_eq!(all[0].1, b"{\"a\":2}");
        assert_eq!(all[3].1, b"e");
        assert_eq!(EventLog::open(&s).unwrap().next_offset(), 6);
        // A writer that opened before `log-end` existed cannot append over it.
        let mut c = Commit::new();
        EventLog {
            next: 6,
            end_absent: true,
        }
        .append(&mut c, b"late");
        assert!(matches!(s.commit(c), Err(StoreError::Conflict { .. })));
        // A legacy record is rewritten as it was stored: one record, no entry mark.
        let mut c = Commit::new();
        replace(&s, &mut c, &[(3, b"{}".to_vec()), (5, b"E".to_vec())]).unwrap();
        s.commit(c).unwrap();
        assert_eq!(s.get(Space::EventLog, &key(3)).unwrap().unwrap(), b"{}");
        let all: Vec<Vec<u8>> = read(&s, 1, 10)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(all[2], b"{}");
        assert_eq!(all[3], b"d");
        assert_eq!(all[4], b"E");
    }

    #[test]
    fn one_commit_fills_entries_of_at_most_group_max_and_reads_from_inside_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut log = EventLog::open(&s).unwrap();
        let n = GROUP_MAX * 2 + 10;
        let mut c = Commit::new();
        for i in 0..n {
            log.append(&mut c, format!("r{i}").as_bytes());
        }
        s.commit(c).unwrap();
        assert_eq!(s.scan(Space::EventLog, &[], 100).unwrap().len(), 3);
        // From the middle of the second entry: exactly the records from there on.
        let from = GROUP_MAX + 7;
        let got = read(&s, from, 5).unwrap();
        assert_eq!(got[0], (from, format!("r{}", from - 1).into_bytes()));
        // Whole entries: the rest of the second one.
        assert_eq!(got.len() as u64, 2 * GROUP_MAX - from + 1);
        let all = read(&s, 1, usize::MAX).unwrap();
        assert_eq!(all.len() as u64, n);
        assert!(all
            .iter()
            .enumerate()
            .all(|(i, (o, r))| *o == i as u64 + 1 && *r == format!("r{i}").into_bytes()));
        // A record inside an entry is rewritten with the entry; the others stay.
        let mut c = Commit::new();
        replace(&s, &mut c, &[(2, b"x".to_vec()), (from, b"y".to_vec())]).unwrap();
        s.commit(c).unwrap();
        let after = read(&s, 1, usize::MAX).unwrap();
        assert_eq!(after.len() as u64, n);
        assert_eq!(after[1].1, b"x");
        assert_eq!(after[from as usize - 1].1, b"y");
        assert_eq!(after[2].1, b"r2");
        assert_eq!(EventLog::open(&s).unwrap().next_offset(), n + 1);
    }

    #[test]
    fn a_damaged_entry_reads_as_one_unreadable_record_and_the_log_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let damaged = vec![0, 1, 2, b'a', b'b', 9, b'c'];
        let mut c = Commit::new();
        c.put(Space::EventLog, key(1), damaged.clone());
        s.commit(c).unwrap();
        let mut log = EventLog::open(&s).unwrap();
        assert_eq!(log.next_offset(), 2);
        let mut c = Commit::new();
        log.append(&mut c, b"next");
        s.commit(c).unwrap();
        assert_eq!(
            read(&s, 1, 10).unwrap(),
            [(1, damaged), (2, b"next".to_vec())]
        );
    }

    #[test]
    fn a_rewrite_of_an_entry_changed_since_it_was_read_conflicts() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut log = EventLog::open(&s).unwrap();
        let mut c = Commit::new();
        for r in [b"a", b"b", b"c"] {
            log.append(&mut c, r);
        }
        s.commit(c).unwrap();
        // Two erasures read the entry; the first to commit wins, the second must read again.
        let (mut first, mut second) = (Commit::new(), Commit::new());
        replace(&s, &mut first, &[(1, b"x".to_vec())]).unwrap();
        replace(&s, &mut second, &[(3, b"z".to_vec())]).unwrap();
        s.commit(first).unwrap();
        assert!(matches!(s.commit(second), Err(StoreError::Conflict { .. })));
        let mut again = Commit::new();
        replace(&s, &mut again, &[(3, b"z".to_vec())]).unwrap();
        s.commit(again).unwrap();
        let all: Vec<Vec<u8>> = read(&s, 1, 10)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        assert_eq!(all, [b"x".to_vec(), b"b".to_vec(), b"z".to_vec()]);
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
