//! The store-and-forward outbox in sled: every presence event gets its `seq` and is written
//! here before it is published, and leaves only when a `presence/ack` from the cloud settles
//! it (stored or rejected) — not on the broker's PUBACK (DESIGN.md, "End-to-end
//! acknowledgement").
//!
//! The outbox has a random epoch chosen when it is created, so a reinstalled gateway never
//! reuses event ids. It is bounded by bytes and age: past either, the oldest events are dropped
//! and their seqs kept as `dropped` ranges that travel to the cloud like events, so loss is
//! counted, never hidden. Durability: writes are durable once [`Outbox::flush`] returns; the
//! daemon publishes only what a completed flush covers.
//!
//! Layout (one tree): `0x00 name` → metadata, `0x01 seq(u64 BE)` → the event as JSON.

use std::path::Path;

use omo_device_config::payload::{Epoch, PresenceAck, PresenceEvent};
use omo_device_config::SeqRanges;

const META_EPOCH: &[u8] = b"\x00epoch";
const META_NEXT_SEQ: &[u8] = b"\x00next_seq";
const META_DROPPED: &[u8] = b"\x00dropped";
const META_DROPPED_TOTAL: &[u8] = b"\x00dropped_total";
const EVENT_PREFIX: u8 = 0x01;

/// Bounds on what the outbox keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Total event bytes kept before the oldest are dropped.
    pub max_bytes: u64,
    /// Events older than this (by their `ts`) are dropped, milliseconds.
    pub max_age_ms: i64,
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
}

impl OutboxLimits {
    pub fn from_config(o: &omo_device_config::gateway_config::Outbox) -> OutboxLimits {
        OutboxLimits {
            max_bytes: o.max_bytes,
            max_age_ms: i64::try_from(o.max_age_s.saturating_mul(1000)).unwrap_or(i64::MAX),
            cache_bytes: u64::from(o.cache_mb) * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error(transparent)]
    Storage(#[from] sled::Error),
    #[error("outbox record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("outbox could not encode event seq {seq}: {reason}")]
    Encode { seq: u64, reason: String },
}

/// The outbox of one gateway.
pub struct Outbox {
    db: sled::Db,
    tree: sled::Tree,
    epoch: Epoch,
    next_seq: u64,
    depth: u64,
    bytes: u64,
    /// Dropped seqs not yet settled by an ack.
    dropped: SeqRanges,
    dropped_total: u64,
    limits: OutboxLimits,
}

fn event_key(seq: u64) -> [u8; 9] {
    let mut k = [EVENT_PREFIX; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Result<u64, OutboxError> {
    let bytes: [u8; 8] = key
        .get(1..9)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt(key, "event key is not 9 bytes"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn corrupt(key: &[u8], reason: impl Into<String>) -> OutboxError {
    OutboxError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: reason.into(),
    }
}

fn u64_meta(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>, OutboxError> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => {
            let b: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(key, "not 8 bytes"))?;
            Ok(Some(u64::from_be_bytes(b)))
        }
    }
}

/// Opens the sled database in `dir`. sled locks its files; a previous holder that is still
/// letting go of them (a process restarted while the old one exits, or a handle dropped a
/// moment ago whose flusher thread has not finished) gets up to two seconds.
fn open_locked(dir: &Path, cache_bytes: u64) -> Result<sled::Db, sled::Error> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
        {
            Err(sled::Error::Io(e))
                if e.kind() == std::io::ErrorKind::Other
                    && e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Outbox {
    /// Opens the outbox in `dir`, creating it (with a fresh random epoch) if it is new.
    pub fn open(dir: &Path, limits: OutboxLimits) -> Result<Outbox, OutboxError> {
        let db = open_locked(dir, limits.cache_bytes)?;
        let tree = db.open_tree("outbox")?;
        let epoch = match tree.get(META_EPOCH)? {
            Some(v) => {
                let b: [u8; 4] = v
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt(META_EPOCH, "not 4 bytes"))?;
                Epoch(u32::from_be_bytes(b))
            }
            None => {
                let epoch = Epoch::random();
                tree.insert(META_EPOCH, &epoch.0.to_be_bytes())?;
                tree.flush()?;
                epoch
            }
        };
        let next_seq = u64_meta(&tree, META_NEXT_SEQ)?.unwrap_or(1);
        let dropped_total = u64_meta(&tree, META_DROPPED_TOTAL)?.unwrap_or(0);
        let dropped = match tree.get(META_DROPPED)? {
            None => SeqRanges::new(),
            Some(v) => {
                serde_json::from_slice(&v).map_err(|e| corrupt(META_DROPPED, e.to_string()))?
            }
        };
        let (mut depth, mut bytes) = (0, 0);
        for item in tree.scan_prefix([EVENT_PREFIX]) {
            let (_, v) = item?;
            depth += 1;
            bytes += v.len() as u64;
        }
        Ok(Outbox {
            db,
            tree,
            epoch,
            next_seq,
            depth,
            bytes,
            dropped,
            dropped_total,
            limits,
        })
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Events waiting for the cloud's acknowledgement.
    pub fn depth(&self) -> u64 {
        self.depth
    }

    /// Bytes of events waiting.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events dropped since the outbox was created.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Dropped seqs the cloud has not yet acknowledged.
    pub fn pending_dropped(&self) -> &SeqRanges {
        &self.dropped
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Adds an event built for the next seq; returns the seq. Durable after [`Outbox::flush`].
    pub fn push(&mut self, build: impl FnOnce(u64) -> PresenceEvent) -> Result<u64, OutboxError> {
        let seq = self.next_seq;
        let event = build(seq);
        let json = serde_json::to_vec(&event).map_err(|e| OutboxError::Encode {
            seq,
            reason: e.to_string(),
        })?;
        let mut batch = sled::Batch::default();
        batch.insert(&event_key(seq)[..], json.as_slice());
        batch.insert(META_NEXT_SEQ, &(seq + 1).to_be_bytes());
        self.tree.apply_batch(batch)?;
        self.next_seq = seq + 1;
        self.depth += 1;
        self.bytes += json.len() as u64;
        Ok(seq)
    }

    /// Makes every write so far durable.
    pub async fn flush(&self) -> Result<(), OutboxError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Makes every write so far durable, blocking (for shutdown and tests).
    pub fn flush_blocking(&self) -> Result<(), OutboxError> {
        self.db.flush()?;
        Ok(())
    }

    /// Drops the oldest events while the outbox is over its byte bound or they are older than
    /// its age bound, recording them as dropped. Returns how many were dropped.
    pub fn enforce_limits(&mut self, now_ms: i64) -> Result<u64, OutboxError> {
        let mut gone = SeqRanges::new();
        let mut freed = 0u64;
        let mut count = 0u64;
        for item in self.tree.scan_prefix([EVENT_PREFIX]) {
            let (k, v) = item?;
            let over_bytes = self.bytes - freed > self.limits.max_bytes;
            let too_old = match serde_json::from_slice::<PresenceEvent>(&v) {
                Ok(e) => now_ms - e.ts().millis() > self.limits.max_age_ms,
                // An unreadable event can never be sent: drop it, and say so by its seq.
                Err(_) => true,
            };
            if !(over_bytes || too_old) {
                break;
            }
            gone.insert(seq_of(&k)?);
            freed += v.len() as u64;
            count += 1;
        }
        self.drop_events(&gone, count, freed)?;
        Ok(count)
    }

    /// Removes `gone` (`count` events, `freed` bytes) and records them as dropped.
    fn drop_events(&mut self, gone: &SeqRanges, count: u64, freed: u64) -> Result<(), OutboxError> {
        if count == 0 {
            return Ok(());
        }
        let mut dropped = self.dropped.clone();
        dropped.merge(gone);
        let mut batch = sled::Batch::default();
        for &(a, b) in gone.ranges() {
            for seq in a..=b {
                batch.remove(&event_key(seq)[..]);
            }
        }
        let json =
            serde_json::to_vec(&dropped).map_err(|e| corrupt(META_DROPPED, e.to_string()))?;
        batch.insert(META_DROPPED, json);
        batch.insert(
            META_DROPPED_TOTAL,
            &(self.dropped_total + count).to_be_bytes(),
        );
        self.tree.apply_batch(batch)?;
        self.dropped = dropped;
        self.dropped_total += count;
        self.depth -= count;
        self.bytes -= freed;
        Ok(())
    }

    /// Removes what an ack settles (stored or rejected); an ack for another epoch changes
    /// nothing. Returns how many events left.
    pub fn settle(&mut self, ack: &PresenceAck) -> Result<u64, OutboxError> {
        if ack.epoch != self.epoch {
            return Ok(0);
        }
        let settled = ack.settled();
        let mut batch = sled::Batch::default();
        let (mut count, mut freed) = (0u64, 0u64);
        for &(a, b) in settled.ranges() {
            for item in self.tree.range(event_key(a)..=event_key(b)) {
                let (k, v) = item?;
                batch.remove(k);
                count += 1;
                freed += v.len() as u64;
            }
        }
        let dropped = self.dropped.difference(&settled);
        if dropped != self.dropped {
            let json =
                serde_json::to_vec(&dropped).map_err(|e| corrupt(META_DROPPED, e.to_string()))?;
            batch.insert(META_DROPPED, json);
        }
        self.tree.apply_batch(batch)?;
        self.dropped = dropped;
        self.depth -= count;
        self.bytes -= freed;
        Ok(count)
    }

    /// Up to `max` waiting events with a seq above `after` (all if `None`), oldest first.
    /// A record that no longer reads as an event is dropped (and reported as dropped) rather
    /// than blocking everything behind it.
    pub fn events_after(
        &mut self,
        after: Option<u64>,
        max: usize,
    ) -> Result<Vec<PresenceEvent>, OutboxError> {
        let start = after.map_or(0, |s| s.saturating_add(1));
        let range = self.tree.range(event_key(start)..);
        self.read_events(range, max)
    }

    /// The waiting events among `seqs`, oldest first (what a resend carries).
    pub fn events_in(&mut self, seqs: &SeqRanges) -> Result<Vec<PresenceEvent>, OutboxError> {
        let mut out = Vec::new();
        for &(a, b) in seqs.ranges() {
            let range = self.tree.range(event_key(a)..=event_key(b));
            out.extend(self.read_events(range, usize::MAX)?);
        }
        Ok(out)
    }

    fn read_events(
        &mut self,
        range: sled::Iter,
        max: usize,
    ) -> Result<Vec<PresenceEvent>, OutboxError> {
        let mut out = Vec::new();
        let (mut bad, mut count, mut freed) = (SeqRanges::new(), 0, 0);
        for item in range {
            if out.len() >= max {
                break;
            }
            let (k, v) = item?;
            match serde_json::from_slice(&v) {
                Ok(e) => out.push(e),
                Err(e) => {
                    let seq = seq_of(&k)?;
                    tracing::error!(seq, error = %e, "dropping an unreadable outbox record");
                    bad.insert(seq);
                    count += 1;
                    freed += v.len() as u64;
                }
            }
        }
        self.drop_events(&bad, count, freed)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
