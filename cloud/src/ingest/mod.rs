//! Durable ingest (DESIGN.md, "The cloud's pipeline" and "End-to-end acknowledgement"): the one
//! writer of the event log. It takes MQTT messages from the broker and append requests from
//! the HTTP handlers, stores what it accepts in one commit per group of messages, flushes,
//! and only then acknowledges: signed `presence/ack`s to gateways, PUBACKs to an external
//! broker, 2xx answers to HTTP clients. A tick record is appended every second of the clock.
//!
//! Group commit is what makes this fast: while one flush runs, the next messages queue, and
//! the next flush covers all of them.

pub mod epochs;
mod forget;
mod from_gateways;
pub mod gateways;
#[cfg(test)]
mod held_back_tests;
pub mod keys;
mod line_link;
pub mod presence;
pub mod record;
mod retry;

pub use forget::{expire_log, expire_processed_ids, forget_installs, ExpiredLog};
pub use line_link::account_link;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use omo_device_config::payload::{ConfigAck, Epoch};
use omo_device_config::{Clock, GatewayId, SeqRanges, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};

use crate::broker::{Incoming, Outbound};
use crate::registry::Registry;
use crate::seq_ledger::SeqLedger;
use crate::store::barrier::{scan_all, BarrierStore};
use crate::store::event_log::EventLog;
use crate::store::{Commit, Space, Store, StoreError};
use epochs::{parse_ledger_key, EpochEnd, EpochInfo};
use gateways::GatewayStates;
use presence::TimeLimits;
use record::Record;

/// A named crash point for crash tests (DESIGN.md): with the `failpoints` feature and
/// `FAILPOINTS=NAME=return`, the process aborts right there after saying which point fired.
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            eprintln!("failpoint {} fired: aborting", $name);
            std::process::abort()
        })
    };
}

/// An HTTP handler's request to append records, answered after they are durable.
pub struct AppendRequest {
    pub records: Vec<Record>,
    /// Taken once: a second request with the same key is answered [`Appended::Duplicate`]
    /// with the value stored under it by the first.
    pub dedup: Option<(Vec<u8>, Vec<u8>)>,
    pub reply: oneshot::Sender<Result<Appended, StoreError>>,
}

/// What happened to an append request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    Stored {
        offsets: Vec<u64>,
    },
    /// Its dedup key was taken before; the value stored with it.
    Duplicate(Vec<u8>),
}

/// Ingest limits from the config.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub times: TimeLimits,
    pub max_group: usize,
    pub max_clock_offset_ms: i64,
}

/// What ingest shares with the rest of the service.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<BarrierStore>,
    pub registry: Arc<RwLock<Registry>>,
    pub gateways: Arc<Mutex<GatewayStates>>,
    pub clock: Clock,
    /// The next event-log offset after the last durable record (stages wait on it).
    pub log_end: watch::Receiver<u64>,
    /// Live figures and alerts (events/s by source, gateways offline, outboxes dropping).
    pub live: Arc<crate::live::Live>,
}

/// The writer's own state.
pub struct Writer {
    live: Arc<crate::live::Live>,
    store: Arc<BarrierStore>,
    registry: Arc<RwLock<Registry>>,
    gateways: Arc<Mutex<GatewayStates>>,
    clock: Clock,
    outbound: Arc<Outbound>,
    limits: Limits,
    log: EventLog,
    ledger: SeqLedger,
    /// Seqs acked as rejected (never stored): settled for gap counting, never duplicates.
    rejected: SeqLedger,
    /// After a failed commit (which may have applied unseen): the epochs whose ledgers must be
    /// read again from the store, and whether the log position must be, before the next group.
    stale: Option<BTreeSet<(GatewayId, Epoch)>>,
    /// Each seq ledger and epoch record key as this writer last read or wrote it: a commit
    /// writing it expects it so, and conflicts if another instance wrote it meanwhile.
    synced: HashMap<Vec<u8>, Vec<u8>>,
    next_tick_ms: i64,
    log_end: watch::Sender<u64>,
    open_gaps: HashMap<(GatewayId, Epoch), u64>,
    /// When each epoch's batches arrived, and how it ended.
    epochs: HashMap<(GatewayId, Epoch), EpochInfo>,
}

/// Where an append request is answered.
type Reply = oneshot::Sender<Result<Appended, StoreError>>;

/// Everything one group commit writes and, after the flush, sends.
#[derive(Default)]
struct Group {
    commit: Commit,
    pending: SeqLedger,
    rejected_pending: SeqLedger,
    touched: BTreeSet<(GatewayId, Epoch)>,
    /// Epoch records this group changes.
    epochs: BTreeMap<(GatewayId, Epoch), EpochInfo>,
    acks: Vec<(String, Vec<u8>)>,
    broker_acks: Vec<rumqttc::Publish>,
    /// One per append request, in order (what it is answered once the group is durable).
    replies: Vec<(Reply, Result<Appended, StoreError>)>,
    /// What the group was taken from, to take it again after a conflict.
    inputs: Vec<retry::Input>,
    /// The ticks it appended.
    ticks: Vec<Timestamp>,
    /// The seq ledgers and epoch records it writes, as written (the next commit expects them).
    ledger_writes: Vec<(Vec<u8>, Vec<u8>)>,
    dedup: HashMap<Vec<u8>, Vec<u8>>,
    config_acks: Vec<(GatewayId, ConfigAck)>,
    events: u64,
    /// Records of append requests stored, by source.
    appended: BTreeMap<&'static str, u64>,
    duplicates: u64,
    dropped: u64,
}

fn count_rejected(reason: &'static str) {
    metrics::counter!("omo_ingest_rejected_total", "reason" => reason).increment(1);
}

impl Writer {
    /// Opens the log and the seq ledger from the store.
    pub fn open(
        store: Arc<BarrierStore>,
        registry: Arc<RwLock<Registry>>,
        clock: Clock,
        outbound: Arc<Outbound>,
        limits: Limits,
    ) -> Result<(Writer, Shared), StoreError> {
        let log = EventLog::open(store.as_ref())?;
        let mut ledger = SeqLedger::new();
        let mut rejected = SeqLedger::new();
        let mut epochs = HashMap::new();
        let mut synced = HashMap::new();
        for (k, v) in scan_all(store.as_ref(), Space::SeqRanges)? {
            if let Some(rest) = k.strip_prefix(epochs::PREFIX.as_bytes()) {
                let key = parse_ledger_key(rest).ok_or_else(|| {
                    StoreError::Backend(format!("epoch key {}", String::from_utf8_lossy(&k)))
                })?;
                let info = EpochInfo::decode(&key.0, key.1, &v)?;
                epochs.insert(key, info);
                synced.insert(k.clone(), v.clone());
                continue;
            }
            // A gateway may be called `rejected`: its own ledger key is `rejected/{epoch}`.
            let (is_rejected, rest) = match k.strip_prefix(epochs::REJECTED_PREFIX.as_bytes()) {
                Some(rest) if parse_ledger_key(rest).is_some() => (true, rest),
                _ => (false, k.as_slice()),
            };
            let (gw, epoch) = parse_ledger_key(rest).ok_or_else(|| {
                StoreError::Backend(format!("seq ranges key {}", String::from_utf8_lossy(&k)))
            })?;
            let ranges: SeqRanges = serde_json::from_slice(&v)
                .map_err(|e| StoreError::Backend(format!("seq ranges of {gw}/{epoch}: {e}")))?;
            synced.insert(k.clone(), v.clone());
            let target = if is_rejected {
                &mut rejected
            } else {
                &mut ledger
            };
            target.record_stored(&gw, epoch, &ranges);
        }
        let (log_end_tx, log_end_rx) = watch::channel(log.next_offset());
        let gateways = Arc::new(Mutex::new(GatewayStates::default()));
        let live = Arc::new(crate::live::Live::new());
        let next_tick_ms = (clock.now().timestamp_millis() / 1000 + 1) * 1000;
        let shared = Shared {
            store: store.clone(),
            registry: registry.clone(),
            gateways: gateways.clone(),
            clock: clock.clone(),
            log_end: log_end_rx,
            live: live.clone(),
        };
        let mut writer = Writer {
            live,
            store,
            registry,
            gateways,
            clock,
            outbound,
            limits,
            log,
            ledger,
            rejected,
            next_tick_ms,
            log_end: log_end_tx,
            open_gaps: HashMap::new(),
            epochs,
            stale: None,
            synced,
        };
        let all: Vec<(GatewayId, Epoch)> = writer
            .ledger
            .iter()
            .chain(writer.rejected.iter())
            .map(|(g, e, _)| (g.clone(), e))
            .collect();
        for (gw, epoch) in all {
            writer.update_gaps(&gw, epoch);
        }
        Ok((writer, shared))
    }

    /// Runs until both input channels close.
    pub async fn run(
        mut self,
        mut mqtt: mpsc::Receiver<Incoming>,
        mut http: mpsc::Receiver<AppendRequest>,
    ) {
        let (mut mqtt_open, mut http_open) = (true, true);
        while mqtt_open || http_open {
            if let Err(e) = self.recover() {
                // Nothing more is taken (gateways keep their events) until the store answers.
                tracing::warn!(error = %e, "ingest waits for the store to answer again");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let mut group = Group::default();
            let wait = self.until_next_tick();
            tokio::select! {
                m = mqtt.recv(), if mqtt_open => match m {
                    Some(m) => self.take_mqtt(m, &mut group),
                    None => mqtt_open = false,
                },
                a = http.recv(), if http_open => match a {
                    Some(a) => self.take_append(a, &mut group),
                    None => http_open = false,
                },
                _ = tokio::time::sleep(wait) => {}
            }
            let mut taken = 1;
            while taken < self.limits.max_group {
                if let Ok(m) = mqtt.try_recv() {
                    self.take_mqtt(m, &mut group);
                } else if let Ok(a) = http.try_recv() {
                    self.take_append(a, &mut group);
                } else {
                    break;
                }
                taken += 1;
            }
            self.add_ticks(&mut group);
            self.finish(group).await;
        }
    }

    fn until_next_tick(&self) -> Duration {
        let now = self.clock.now().timestamp_millis();
        let ahead = u64::try_from(self.next_tick_ms - now).unwrap_or(0);
        self.clock
            .wall_duration(Duration::from_millis(ahead))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(1))
    }

    fn add_ticks(&mut self, group: &mut Group) {
        let now = self.clock.now().timestamp_millis();
        // After a stall (or a restart) the clock may be far ahead: tick from now on rather
        // than fill the log with the missed seconds.
        if now - self.next_tick_ms > 60_000 {
            self.next_tick_ms = now / 1000 * 1000;
        }
        while self.next_tick_ms <= now {
            if let Some(received) = Timestamp::from_millis(self.next_tick_ms) {
                self.log
                    .append(&mut group.commit, &Record::Tick { received }.encode());
                group.ticks.push(received);
            }
            self.next_tick_ms += 1000;
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp::new(self.clock.now())
    }

    fn take_append(&mut self, req: AppendRequest, group: &mut Group) {
        group.inputs.push(retry::Input::Append {
            records: req.records.clone(),
            dedup: req.dedup.clone(),
        });
        if let Some((key, value)) = &req.dedup {
            let earlier = match group.dedup.get(key) {
                Some(v) => Some(v.clone()),
                None => match self.store.get(Space::Dedup, key) {
                    Ok(v) => v,
                    Err(e) => {
                        group.replies.push((req.reply, Err(e)));
                        return;
                    }
                },
            };
            if let Some(v) = earlier {
                // Answered after the flush too: the first request may still be in this group.
                group.replies.push((req.reply, Ok(Appended::Duplicate(v))));
                return;
            }
            group.dedup.insert(key.clone(), value.clone());
            // Taken once across instances: another that took it first makes this a conflict.
            group.commit.expect(Space::Dedup, key.clone(), None);
            group.commit.put(Space::Dedup, key.clone(), value.clone());
        }
        let offsets = req
            .records
            .iter()
            .map(|r| self.log.append(&mut group.commit, &r.encode()))
            .collect();
        for r in &req.records {
            let source = match r {
                Record::App(_) => "app",
                Record::Line(_) => "line",
                Record::Checkin(_) => "qr",
                Record::Purchase(_) => "purchase",
                _ => "other",
            };
            // Counted once the group is durable (a group taken again counts once).
            *group.appended.entry(source).or_default() += 1;
        }
        group
            .replies
            .push((req.reply, Ok(Appended::Stored { offsets })));
    }

    /// Commits `group` as [`Writer::finish`] says; the presence batches it left out after
    /// conflicts go to `held_back`.
    async fn finish_group(&mut self, mut group: Group, held_back: &mut Vec<retry::Input>) {
        let (since, mut conflicts) = (std::time::Instant::now(), 0);
        loop {
            self.stage_ledgers(&mut group);
            if group.commit.is_empty() {
                break;
            }
            let commit = std::mem::take(&mut group.commit);
            let written_at = commit.appends_at();
            let result = self.commit_durably(commit).await;
            // Another instance appended since this writer read the log's end: the store put
            // this group's records after its (PostgreSQL; sled has one writer).
            let result = result.map(|went| {
                if let (Some(went), Some(written)) = (went, written_at) {
                    group.moved_on(went.saturating_sub(written));
                    self.log.moved_on(went.saturating_sub(written));
                }
            });
            if let (Err(StoreError::Conflict { .. }), true) =
                (&result, since.elapsed() < retry::PATIENCE)
            {
                metrics::counter!("omo_ingest_commit_conflicts_total").increment(1);
                conflicts += 1;
                tokio::time::sleep(retry::pause_after(conflicts)).await;
                self.stale
                    .get_or_insert_with(BTreeSet::new)
                    .extend(group.touched.iter().chain(group.epochs.keys()).cloned());
                match self.recover() {
                    Ok(()) => {
                        let batches = conflicts < retry::BATCHES_LEFT_AFTER
                            || !group
                                .inputs
                                .iter()
                                .any(|i| matches!(i, retry::Input::Append { .. }));
                        group = self.take_again(group, batches, held_back);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ingest could not read the store again after a conflict")
                    }
                }
            }
            if let Err(e) = result {
                // Nothing is acknowledged: gateways resend, HTTP clients retry.
                tracing::error!(error = %e, "ingest commit failed; nothing in this group was acknowledged");
                metrics::counter!("omo_ingest_commit_failures_total").increment(1);
                for (reply, _) in group.replies {
                    let _ = reply.send(Err(e.clone()));
                }
                // A commit can fail and still have applied (a database connection lost at
                // COMMIT): before the next group, the log position and the seqs the store holds
                // of these epochs are read again, so a resend of them is a duplicate.
                self.stale
                    .get_or_insert_with(BTreeSet::new)
                    .extend(group.touched);
                return;
            }
            break;
        }
        for (key, bytes) in std::mem::take(&mut group.ledger_writes) {
            self.synced.insert(key, bytes);
        }
        self.after_durable(group).await;
    }

    /// Commits and flushes off the executor; answers where the store put the group's first
    /// record ([`crate::store::Store::commit_appending`]). A flush that fails after the commit
    /// stops the process: the group is visible but not durable, and nothing was acknowledged,
    /// so the ledger and dedup state in memory no longer match the disk; a restart recovers
    /// from it.
    async fn commit_durably(
        &self,
        commit: crate::store::Commit,
    ) -> Result<Option<u64>, StoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let went = store.commit_appending(commit)?;
            if let Err(e) = store.flush() {
                tracing::error!(error = %e, "flush failed after a commit; stopping so a restart recovers from the disk");
                std::process::exit(70);
            }
            Ok(went)
        })
        .await
        .unwrap_or_else(|e| Err(StoreError::Backend(format!("store task failed: {e}"))))
    }

    /// Once the group is durable: epoch ends reported, the ledgers in memory moved on, the
    /// acknowledgements and replies sent, the group counted.
    async fn after_durable(&mut self, mut group: Group) {
        // Durable now: an epoch's end is reported once, before anything can crash.
        for ((gw, epoch), info) in std::mem::take(&mut group.epochs) {
            let was_ended = self
                .epochs
                .get(&(gw.clone(), epoch))
                .is_some_and(|i| i.ended.is_some());
            if let (false, Some(end)) = (was_ended, &info.ended) {
                report_end(&gw, epoch, end);
                // Its outbox is gone: what is missing will never come (the end counts it).
                self.open_gaps.insert((gw.clone(), epoch), 0);
            }
            self.epochs.insert((gw, epoch), info);
        }
        if !group.acks.is_empty() {
            crate::crash_point!("ingest.after_flush_before_ack");
        }
        for (gw, epoch) in &group.touched {
            if let Some(p) = group.pending.stored(gw, *epoch) {
                self.ledger.record_stored(gw, *epoch, &p.clone());
            }
            if let Some(r) = group.rejected_pending.stored(gw, *epoch) {
                self.rejected.record_stored(gw, *epoch, &r.clone());
            }
            self.update_gaps(gw, *epoch);
        }
        metrics::gauge!("omo_presence_open_gap_seqs")
            .set(self.open_gaps.values().sum::<u64>() as f64);
        if !group.config_acks.is_empty() {
            let mut registry = self.registry.write().expect("registry lock");
            for (gw, ack) in group.config_acks {
                registry.set_last_ack(&gw, ack);
            }
        }
        let sent = group.acks.len() as u64;
        for (topic, payload) in group.acks {
            if let Err(e) = self.outbound.publish(topic, payload, false) {
                tracing::warn!(error = %e, "ack not sent; the gateway will resend and be acked again");
            }
        }
        for p in &group.broker_acks {
            self.outbound.ack(p).await;
        }
        for (reply, result) in group.replies {
            let _ = reply.send(result);
        }
        metrics::counter!("omo_ingest_events_total", "source" => "gateway").increment(group.events);
        self.live.events("gateway", group.events);
        for (source, n) in &group.appended {
            metrics::counter!("omo_ingest_events_total", "source" => *source).increment(*n);
            self.live.events(source, *n);
        }
        metrics::counter!("omo_ingest_duplicates_total").increment(group.duplicates);
        metrics::counter!("omo_ingest_dropped_total").increment(group.dropped);
        metrics::counter!("omo_ingest_acks_sent_total").increment(sent);
        self.log_end.send_replace(self.log.next_offset());
    }

    /// Records that a batch of `epoch` arrived; the first batch of a new epoch ends every
    /// older open epoch of the gateway (its outbox is gone).
    fn note_epoch(&mut self, gw: &GatewayId, epoch: Epoch, now: Timestamp, group: &mut Group) {
        let key = (gw.clone(), epoch);
        let known = group
            .epochs
            .get(&key)
            .or_else(|| self.epochs.get(&key))
            .cloned();
        if let Some(mut info) = known {
            info.last_received = now;
            group.epochs.insert(key, info);
            return;
        }
        // An epoch the ledger knew before its arrival times were kept (an upgrade) is not
        // new: it ends nothing.
        let known_before =
            self.ledger.stored(gw, epoch).is_some() || self.rejected.stored(gw, epoch).is_some();
        let last_offline = self
            .gateways
            .lock()
            .expect("gateway states lock")
            .get(gw)
            .and_then(|s| s.last_offline.clone());
        let others: BTreeSet<Epoch> = self
            .epochs
            .keys()
            .chain(group.epochs.keys())
            .filter(|(g, e)| g == gw && *e != epoch)
            .map(|(_, e)| *e)
            .collect();
        let open: Vec<(Epoch, EpochInfo)> = others
            .into_iter()
            .filter_map(|e| {
                let k = (gw.clone(), e);
                let info = group.epochs.get(&k).or_else(|| self.epochs.get(&k))?;
                (!known_before && info.ended.is_none()).then(|| (e, info.clone()))
            })
            .collect();
        for (old, mut info) in open {
            let mut settled = self.ledger.stored(gw, old).cloned().unwrap_or_default();
            for extra in [
                group.pending.stored(gw, old),
                self.rejected.stored(gw, old),
                group.rejected_pending.stored(gw, old),
            ]
            .into_iter()
            .flatten()
            {
                settled.merge(extra);
            }
            info.ended = Some(EpochEnd::new(
                (old, &info),
                (now, epoch),
                &settled,
                last_offline.as_ref(),
            ));
            group.epochs.insert((gw.clone(), old), info);
        }
        group.epochs.insert(
            key,
            EpochInfo {
                first_received: now,
                last_received: now,
                reported_written: None,
                ended: None,
            },
        );
    }

    /// Seqs of this epoch below the highest settled one that are neither stored nor rejected
    /// (seqs start at 1): events the gateway has not (yet) delivered.
    fn update_gaps(&mut self, gw: &GatewayId, epoch: Epoch) {
        let mut settled = self.ledger.stored(gw, epoch).cloned().unwrap_or_default();
        if let Some(r) = self.rejected.stored(gw, epoch) {
            settled.merge(r);
        }
        if self
            .epochs
            .get(&(gw.clone(), epoch))
            .is_some_and(|i| i.ended.is_some())
        {
            self.open_gaps.insert((gw.clone(), epoch), 0);
            return;
        }
        let (_, gaps) = epochs::last_and_missing(&settled);
        self.open_gaps.insert((gw.clone(), epoch), gaps);
    }
}

/// Says how an epoch ended: a warning when events may have been outstanding.
fn report_end(gw: &GatewayId, epoch: Epoch, end: &EpochEnd) {
    let clean = if end.clean { "true" } else { "false" };
    metrics::counter!("omo_gateway_epochs_ended_total", "clean" => clean).increment(1);
    if end.clean {
        tracing::info!(gateway = %gw, %epoch, next_epoch = %end.next_epoch, last_seq = end.last_seq, "gateway epoch ended cleanly");
    } else {
        tracing::warn!(gateway = %gw, %epoch, next_epoch = %end.next_epoch, last_seq = end.last_seq, missing = end.missing, outstanding_at_least = end.outstanding_at_least,
            "gateway epoch ended with events outstanding: the gateway has a new outbox (disk replaced or reinstalled) and did not report an empty one when it stopped; what it still held is lost");
    }
}
