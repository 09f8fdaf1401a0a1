//! Per-gateway ingest statistics: the first consumer of the event log, and the pattern every
//! later stage follows (DESIGN.md, "The cloud's pipeline"): read records in log order from the
//! stage's stored offset, fold them with a pure function, and commit the outputs together with
//! the new offset in one transaction. A crash replays from the last commit and counts nothing
//! twice.

pub mod keys;

use std::collections::BTreeMap;
use std::sync::Arc;

use omo_device_config::payload::PresenceEvent;
use omo_device_config::Timestamp;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ingest::record::Record;
use crate::store::event_log::{self, advance, position};
use crate::store::{Commit, Space, Store, StoreError};

/// This stage's name in the offsets space.
pub const CONSUMER: &str = "stats";
/// Records folded per commit at most.
const BATCH: usize = 2000;

/// What one gateway has delivered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayStats {
    pub enter: u64,
    pub stay: u64,
    pub exit: u64,
    pub footfall: u64,
    /// Seqs the gateway reported dropped (outbox full): counted loss.
    pub dropped: u64,
    pub last_event_ts: Option<Timestamp>,
    pub last_received: Option<Timestamp>,
}

impl GatewayStats {
    pub fn events(&self) -> u64 {
        self.enter + self.stay + self.exit + self.footfall
    }
}

/// Stats keyed by their key in the stats space (`gateway/{id}`, `source/{name}`).
pub type Folded = BTreeMap<String, GatewayStats>;

/// Folds one record into `stats` (pure).
pub fn fold(stats: &mut Folded, record: &Record) {
    match record {
        Record::Gateway(e) => {
            let s = stats.entry(keys::gateway(e.gateway.as_str())).or_default();
            match &e.event {
                PresenceEvent::Enter(_) => s.enter = s.enter.saturating_add(1),
                PresenceEvent::Stay(_) => s.stay = s.stay.saturating_add(1),
                PresenceEvent::Exit(_) => s.exit = s.exit.saturating_add(1),
                PresenceEvent::Footfall(_) => s.footfall = s.footfall.saturating_add(1),
            }
            s.last_event_ts = s.last_event_ts.max(Some(e.event_ts));
            s.last_received = Some(e.received);
        }
        Record::GatewayDropped {
            gateway,
            seqs,
            received,
            ..
        } => {
            let s = stats.entry(keys::gateway(gateway.as_str())).or_default();
            s.dropped = s
                .dropped
                .saturating_add(u64::try_from(seqs.count()).unwrap_or(u64::MAX));
            s.last_received = Some(*received);
        }
        Record::App(_) | Record::Line(_) | Record::Checkin(_) | Record::Purchase(_) => {
            let name = match record {
                Record::App(_) => "app",
                Record::Line(_) => "line",
                Record::Purchase(_) => "purchase",
                _ => "qr",
            };
            let s = stats.entry(keys::source(name)).or_default();
            s.stay += 1;
            s.last_received = Some(record.received());
        }
        Record::Tick { .. } | Record::Erased { .. } => {}
    }
}

/// Folds the next records after this stage's offset and commits; returns how many it read.
pub fn step(store: &dyn Store) -> Result<usize, StoreError> {
    let from = position(store, CONSUMER)?;
    let records = event_log::read(store, from, BATCH)?;
    let Some(&(last, _)) = records.last() else {
        return Ok(0);
    };
    let mut stats = Folded::new();
    for (offset, bytes) in &records {
        match Record::decode(bytes) {
            Ok(record) => {
                if let Some(key) = stats_key(&record) {
                    if let std::collections::btree_map::Entry::Vacant(slot) = stats.entry(key) {
                        let current = load_one(store, slot.key())?;
                        slot.insert(current);
                    }
                }
                fold(&mut stats, &record);
            }
            // Skipped, never fatal: one unreadable record must not stop the pipeline.
            Err(e) => tracing::error!(offset, error = %e, "unreadable event-log record skipped"),
        }
    }
    let mut c = Commit::new();
    for (key, s) in &stats {
        c.put(
            Space::Stats,
            key.clone(),
            serde_json::to_vec(s).expect("stats serialise"),
        );
    }
    advance(&mut c, CONSUMER, from, last + 1);
    store.commit(c)?;
    Ok(records.len())
}

fn stats_key(record: &Record) -> Option<String> {
    match record {
        Record::Gateway(e) => Some(keys::gateway(e.gateway.as_str())),
        Record::GatewayDropped { gateway, .. } => Some(keys::gateway(gateway.as_str())),
        Record::App(_) => Some(keys::source("app")),
        Record::Line(_) => Some(keys::source("line")),
        Record::Checkin(_) => Some(keys::source("qr")),
        Record::Purchase(_) => Some(keys::source("purchase")),
        Record::Tick { .. } | Record::Erased { .. } => None,
    }
}

fn load_one(store: &dyn Store, key: &str) -> Result<GatewayStats, StoreError> {
    match store.get(Space::Stats, key.as_bytes())? {
        None => Ok(GatewayStats::default()),
        Some(v) => {
            serde_json::from_slice(&v).map_err(|e| StoreError::Backend(format!("stats {key}: {e}")))
        }
    }
}

/// Every stored stats entry.
pub fn load(store: &dyn Store) -> Result<Folded, StoreError> {
    crate::store::barrier::scan_all(store, Space::Stats)?
        .into_iter()
        .map(|(k, v)| {
            let key = String::from_utf8_lossy(&k).into_owned();
            let s = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Backend(format!("stats {key}: {e}")))?;
            Ok((key, s))
        })
        .collect()
}

/// Runs the stage while this instance holds it: folds whenever the log grows.
pub async fn run(
    store: Arc<dyn Store>,
    mut log_end: watch::Receiver<u64>,
    mut assignment: watch::Receiver<crate::cluster::lease::Assignment>,
) {
    loop {
        if !assignment.borrow_and_update().single.contains(CONSUMER) {
            if assignment.changed().await.is_err() {
                return;
            }
            continue;
        }
        let s = store.clone();
        let stepped = tokio::task::spawn_blocking(move || step(s.as_ref())).await;
        let end = *log_end.borrow();
        let read = match &stepped {
            Ok(Ok(n)) => *n,
            _ => 0,
        };
        crate::store::event_log::report_progress(store.as_ref(), CONSUMER, end, read);
        match stepped {
            Ok(Ok(n)) if n > 0 => continue,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "stats stage failed; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            // The runtime is shutting down.
            Err(e) if e.is_cancelled() => return,
            Err(e) => tracing::error!(error = %e, "stats stage task failed"),
        }
        tokio::select! {
            changed = log_end.changed() => if changed.is_err() { return },
            changed = assignment.changed() => if changed.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::record::GatewayEvent;
    use crate::store::event_log::EventLog;
    use crate::store::sled_store::SledStore;
    use omo_device_config::payload::{Epoch, Footfall};
    use omo_device_config::{GatewayId, SeqRanges, StoreId};

    fn footfall(gw: &str, seq: u64) -> Record {
        let t: Timestamp = "2026-11-23T10:00:00.000Z".parse().unwrap();
        Record::Gateway(GatewayEvent {
            gateway: GatewayId::new(gw).unwrap(),
            store: StoreId::new("s").unwrap(),
            epoch: Epoch(1),
            event: PresenceEvent::Footfall(Footfall {
                seq,
                ts: t,
                devices: 2,
            }),
            event_ts: t,
            received: t,
        })
    }

    #[test]
    fn counts_each_record_once_across_steps_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let t: Timestamp = "2026-11-23T10:00:00.000Z".parse().unwrap();
        {
            let s = SledStore::open(dir.path(), 1 << 20).unwrap();
            let mut log = EventLog::open(&s).unwrap();
            let mut c = Commit::new();
            for seq in 1..=5 {
                log.append(&mut c, &footfall("g1", seq).encode());
            }
            log.append(&mut c, &Record::Tick { received: t }.encode());
            log.append(&mut c, b"not json");
            log.append(
                &mut c,
                &Record::GatewayDropped {
                    gateway: GatewayId::new("g1").unwrap(),
                    store: StoreId::new("s").unwrap(),
                    epoch: Epoch(1),
                    seqs: SeqRanges::from_range(6, 9),
                    received: t,
                }
                .encode(),
            );
            s.commit(c).unwrap();
            assert_eq!(step(&s).unwrap(), 8);
            assert_eq!(step(&s).unwrap(), 0);
            s.flush().unwrap();
        }
        let s = SledStore::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(
            step(&s).unwrap(),
            0,
            "a restart resumes after the last commit"
        );
        let mut log = EventLog::open(&s).unwrap();
        let mut c = Commit::new();
        log.append(&mut c, &footfall("g2", 1).encode());
        s.commit(c).unwrap();
        assert_eq!(step(&s).unwrap(), 1);
        let all = load(&s).unwrap();
        assert_eq!(all["gateway/g1"].footfall, 5);
        assert_eq!(all["gateway/g1"].dropped, 4);
        assert_eq!(all["gateway/g2"].events(), 1);
    }
}
