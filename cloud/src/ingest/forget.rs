//! What ingest forgets: observations past their period (the event log's oldest entries),
//! processed-event ids past theirs, and an erased customer's installs' idempotency keys.

use serde::Deserialize;

use super::keys::{app_prefix, processed_id_value};
use crate::store::event_log;
use crate::store::sweep::{delete_prefix, Rows, Sweeper};
use crate::store::{Commit, Space, Store, StoreError};

/// What [`expire_log`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpiredLog {
    /// Records holding an observation (gateway, app, LINE, erased).
    pub observations: u64,
    /// Tick records.
    pub ticks: u64,
}

#[derive(Deserialize)]
struct RecordHead {
    source: String,
    received: omo_device_config::Timestamp,
}

/// Deletes the event-log entries whose records were all received before `cutoff` (ms),
/// oldest first, never a record at or past offset `upper` (the log's consumers have still to
/// read from there; the caller keeps the newest record below it).
pub fn expire_log(sw: &mut Sweeper, cutoff: i64, upper: u64) -> Result<ExpiredLog, StoreError> {
    let mut s = ExpiredLog::default();
    loop {
        let page = event_log::read_entries(sw.store, 0, sw.batch)?;
        let (ticks, observations) = (s.ticks, s.observations);
        let mut c = Commit::new();
        let records: usize = page.iter().map(|(_, r)| r.len()).sum();
        let mut done = records < sw.batch;
        // An entry (the records one commit appended) goes once all of its records may.
        'entries: for (first, records) in &page {
            let (mut entry_ticks, mut entry_observations) = (0, 0);
            for (offset, bytes) in records {
                if *offset >= upper {
                    done = true;
                    break 'entries;
                }
                // Every record has its log time; one that cannot be read holds nothing a
                // consumer could use and is older than the records after it.
                let head: Option<RecordHead> = serde_json::from_slice(bytes).ok();
                if head.as_ref().is_some_and(|h| h.received.millis() >= cutoff) {
                    done = true;
                    break 'entries;
                }
                if head.is_some_and(|h| h.source == "tick") {
                    entry_ticks += 1;
                } else {
                    entry_observations += 1;
                }
            }
            s.ticks += entry_ticks;
            s.observations += entry_observations;
            event_log::delete_entry(&mut c, *first);
        }
        let empty = c.is_empty();
        sw.commit(
            c,
            &[
                ("ticks", s.ticks - ticks),
                ("observations", s.observations - observations),
            ],
        )?;
        if done || empty {
            return Ok(s);
        }
    }
}

/// Processed-event ids written before `cutoff` (ms) go; ids written before they carried a
/// time are stamped `now_ms` (so they expire a period from now). Walks on from `cursor`;
/// answers (deleted, stamped).
pub fn expire_processed_ids(
    sw: &mut Sweeper,
    cursor: &mut Vec<u8>,
    cutoff: i64,
    now_ms: i64,
) -> Result<(u64, u64), StoreError> {
    let rows = Rows {
        kind: "processed_ids",
        space: Space::Dedup,
        prefix: "",
    };
    let mut unstamped = Vec::new();
    let deleted = sw.rolling(rows, cursor, |k, v| {
        let value: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
        match value.get("at").and_then(serde_json::Value::as_i64) {
            Some(at) => (at < cutoff).then(Vec::new),
            None => {
                unstamped.push((k.to_vec(), v.to_vec(), value));
                None
            }
        }
    })?;
    let mut stamped = 0;
    for chunk in unstamped.chunks(sw.batch) {
        let mut c = Commit::new();
        for (k, old, value) in chunk {
            let value = if value.is_object() {
                value.clone()
            } else {
                serde_json::json!({})
            };
            c.expect(Space::Dedup, k.clone(), Some(old.clone()));
            c.put(Space::Dedup, k.clone(), processed_id_value(value, now_ms));
        }
        // Taken again meanwhile: stamped on a later sweep.
        if sw.commit_unless_changed(c, &[])? {
            stamped += chunk.len() as u64;
        }
    }
    Ok((deleted, stamped))
}

/// Deletes the idempotency keys of an erased customer's installs; answers how many.
pub fn forget_installs<'a>(
    store: &dyn Store,
    installs: impl IntoIterator<Item = &'a str>,
) -> Result<usize, StoreError> {
    let mut n = 0;
    for install in installs {
        n += delete_prefix(store, Space::Dedup, &app_prefix(install))?;
    }
    Ok(n)
}
