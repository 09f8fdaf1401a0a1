//! A group that met a conflict is taken again (issue 32): several instances append to one log
//! and may be handed batches of the same gateway epoch, so a group's commit expects the log's
//! end and each seq ledger as this writer last saw them. When another instance changed one
//! first, the writer reads the log's end and the touched ledgers again and takes the group
//! again from what it was taken from — the seqs the other stored are duplicates now — rather
//! than dropping it for the gateway to resend.

use std::collections::BTreeSet;

use omo_device_config::payload::Epoch;
use omo_device_config::GatewayId;

use super::epochs::{self, info_key, ledger_key, EpochInfo};
use super::{AppendRequest, Appended, Group, Writer};
use crate::broker::Incoming;
use crate::ingest::record::Record;
use crate::store::{Space, Store, StoreError};
use omo_device_config::SeqRanges;

/// How long a group that keeps meeting conflicts is taken again before it fails as any store
/// error does (nothing acknowledged: gateways resend, HTTP clients retry). Appends no longer
/// conflict on the log's end on an engine several instances share (the store puts them after
/// another's: `Store::commit_appending`); what is left is two instances storing seqs of one
/// gateway epoch, or taking one idempotency key, at once. Each such conflict means the other
/// instance committed, so the instances as a whole go on; a bound in time rather than in
/// attempts keeps one that keeps losing from giving up while the other is busy.
pub(super) const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The pause before taking a group again after `conflicts` conflicts in a row: none at first,
/// then up to a few milliseconds at random, so two writers that keep meeting fall out of step.
pub(super) fn pause_after(conflicts: u32) -> std::time::Duration {
    use rand::Rng;
    if conflicts < 2 {
        return std::time::Duration::ZERO;
    }
    let most_us = 250u64 << conflicts.min(5);
    std::time::Duration::from_micros(rand::rng().random_range(0..most_us))
}

/// Conflicts in a row after which a group that holds append requests is taken again without
/// its gateway batches: those are what conflict (two instances storing seqs of one gateway
/// epoch), and an app or LINE's webhook waiting behind them would be answered 503. The
/// batches held back are taken in a group of their own right after (not dropped for the
/// gateway to resend).
pub(super) const BATCHES_LEFT_AFTER: u32 = 4;

/// Whether `topic` is a gateway's presence batch (the only message a gateway resends).
fn is_presence(topic: &str) -> bool {
    omo_device_config::Topic::parse(topic)
        .is_ok_and(|t| t.channel == omo_device_config::Channel::Presence)
}

/// What a group was taken from.
pub(super) enum Input {
    /// A message from the broker (its acknowledgement stays with the group).
    Mqtt { topic: String, payload: Vec<u8> },
    /// An append request (its reply stays with the group, in order).
    Append {
        records: Vec<Record>,
        dedup: Option<(Vec<u8>, Vec<u8>)>,
    },
}

impl Writer {
    /// The group taken again from `old`'s inputs, ticks, broker acknowledgements and reply
    /// channels, over the log end and ledgers as now read.
    /// With `batches` false, the gateways' presence batches are left out and answered
    /// (`held_back`) to be taken in a group of their own once this one is durable.
    pub(super) fn take_again(
        &mut self,
        old: Group,
        batches: bool,
        held_back: &mut Vec<Input>,
    ) -> Group {
        let mut group = Group {
            broker_acks: old.broker_acks,
            ..Group::default()
        };
        let mut replies = old.replies.into_iter().map(|(reply, _)| reply);
        for input in old.inputs {
            match input {
                // Presence batches only: statuses and config acks are not resent.
                Input::Mqtt { topic, payload } if !batches && is_presence(&topic) => {
                    metrics::counter!("omo_ingest_batches_held_back_total").increment(1);
                    held_back.push(Input::Mqtt { topic, payload });
                }
                Input::Mqtt { topic, payload } => self.take_mqtt(
                    Incoming {
                        topic,
                        payload,
                        ack: None,
                    },
                    &mut group,
                ),
                Input::Append { records, dedup } => {
                    let reply = replies.next().expect("one reply per append request");
                    let req = AppendRequest {
                        records,
                        dedup,
                        reply,
                    };
                    self.take_append(req, &mut group);
                }
            }
        }
        for received in old.ticks {
            self.log
                .append(&mut group.commit, &Record::Tick { received }.encode());
            group.ticks.push(received);
        }
        group
    }

    /// Commits the group, flushes, then acknowledges everything in it. A group that met a
    /// conflict (another instance appended, or stored some of its seqs) is taken again from
    /// what it was taken from, over the store as it now is, and committed again.
    pub(super) async fn finish(&mut self, group: Group) {
        let mut held_back = Vec::new();
        self.finish_group(group, &mut held_back).await;
        // Batches a group held back to let its append requests through go next, on their own.
        while !held_back.is_empty() {
            let group = self.take_held_back(std::mem::take(&mut held_back));
            self.finish_group(group, &mut held_back).await;
        }
    }

    /// A group of the presence batches a group held back (see [`BATCHES_LEFT_AFTER`]).
    pub(super) fn take_held_back(&mut self, held_back: Vec<Input>) -> Group {
        let mut group = Group::default();
        for input in held_back {
            if let Input::Mqtt { topic, payload } = input {
                let m = Incoming {
                    topic,
                    payload,
                    ack: None,
                };
                self.take_mqtt(m, &mut group);
            }
        }
        group
    }

    /// Adds ledger `key` holding `ranges` to the group's commit, expecting it as last seen.
    pub(super) fn put_ledger(&self, group: &mut Group, key: Vec<u8>, ranges: &SeqRanges) {
        let bytes = serde_json::to_vec(ranges).expect("seq ranges serialise");
        self.put_synced(group, key, bytes);
    }

    /// Adds `key` holding `bytes` to the group's commit, expecting it as last seen.
    fn put_synced(&self, group: &mut Group, key: Vec<u8>, bytes: Vec<u8>) {
        group.commit.expect(
            Space::SeqRanges,
            key.clone(),
            self.synced.get(&key).cloned(),
        );
        group
            .commit
            .put(Space::SeqRanges, key.clone(), bytes.clone());
        group.ledger_writes.push((key, bytes));
    }

    /// After a failed commit: reads the log position and the touched epochs' ledgers again
    /// (the store holds at least what memory does). Until it succeeds nothing more is taken.
    pub(super) fn recover(&mut self) -> Result<(), StoreError> {
        let Some(epochs) = self.stale.take() else {
            return Ok(());
        };
        let read = self
            .log
            .reset(self.store.as_ref())
            .and_then(|()| self.reload_ledgers(&epochs));
        if read.is_err() {
            self.stale = Some(epochs);
        }
        read
    }

    /// Takes into the ledgers and epoch records in memory what the store holds of `epochs`.
    fn reload_ledgers(&mut self, epochs: &BTreeSet<(GatewayId, Epoch)>) -> Result<(), StoreError> {
        for (gw, epoch) in epochs {
            let key = info_key(gw, *epoch);
            match self.store.get(Space::SeqRanges, &key)? {
                Some(v) => {
                    let info = EpochInfo::decode(gw, *epoch, &v)?;
                    self.epochs.insert((gw.clone(), *epoch), info);
                    self.synced.insert(key, v);
                }
                None => {
                    self.synced.remove(&key);
                }
            }
            for (key, ledger) in [
                (ledger_key(gw, *epoch), &mut self.ledger),
                (epochs::rejected_key(gw, *epoch), &mut self.rejected),
            ] {
                match self.store.get(Space::SeqRanges, &key)? {
                    Some(v) => {
                        let ranges: SeqRanges = serde_json::from_slice(&v).map_err(|e| {
                            StoreError::Backend(format!("seq ranges of {gw}/{epoch}: {e}"))
                        })?;
                        ledger.record_stored(gw, *epoch, &ranges);
                        self.synced.insert(key, v);
                    }
                    None => {
                        self.synced.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds to the group's commit the seq ledgers (stored and rejected) of the epochs it
    /// touched and its epochs' records.
    pub(super) fn stage_ledgers(&self, group: &mut Group) {
        group.ledger_writes.clear();
        for (gw, epoch) in group.touched.clone() {
            let (gw, epoch) = (&gw, &epoch);
            let mut all = self
                .ledger
                .stored(gw, epoch.to_owned())
                .cloned()
                .unwrap_or_default();
            if let Some(p) = group.pending.stored(gw, *epoch) {
                all.merge(p);
            }
            self.put_ledger(group, ledger_key(gw, *epoch), &all);
            if let Some(r) = group.rejected_pending.stored(gw, *epoch) {
                let mut all = self
                    .rejected
                    .stored(gw, *epoch)
                    .cloned()
                    .unwrap_or_default();
                all.merge(r);
                self.put_ledger(group, epochs::rejected_key(gw, *epoch), &all);
            }
        }
        let records: Vec<(Vec<u8>, Vec<u8>)> = group
            .epochs
            .iter()
            .map(|((gw, epoch), info)| {
                let bytes = serde_json::to_vec(info).expect("epoch records serialise");
                (info_key(gw, *epoch), bytes)
            })
            .collect();
        for (key, bytes) in records {
            self.put_synced(group, key, bytes);
        }
    }
}

impl Group {
    /// After the store put this group's records `delta` offsets further on than they were
    /// written (another instance appended first): the offsets its replies name move too.
    pub(super) fn moved_on(&mut self, delta: u64) {
        for (_, reply) in &mut self.replies {
            if let Ok(Appended::Stored { offsets }) = reply {
                for o in offsets {
                    *o += delta;
                }
            }
        }
    }
}
