//! What the ingest writer takes from the gateways over MQTT: presence batches (each new
//! event appended once, every seq acknowledged after the group is durable), status and
//! config acknowledgements.

use omo_device_config::envelope::{open, seal, seal_raw, EnvelopeError};
use omo_device_config::payload::{ConfigAck, Epoch, PresenceAck, PresenceEvent, Status};
use omo_device_config::{Channel, GatewayId, SeqRanges, StoreId, Timestamp, Topic};

use super::gateways::config_to_send;
use super::presence::{self, check_presence};
use super::record::{GatewayEvent, Record};
use super::{count_rejected, Group, Writer};
use crate::broker::Incoming;
use crate::registry::{record_config_ack, GatewayEntry};

impl Writer {
    pub(super) fn take_mqtt(&mut self, m: Incoming, group: &mut Group) {
        group.inputs.push(super::retry::Input::Mqtt {
            topic: m.topic.clone(),
            payload: m.payload.clone(),
        });
        // An external broker's PUBLISH is acked after the flush whatever became of it: what
        // was refused will never be stored, so a redelivery would not help.
        if let Some(p) = m.ack {
            group.broker_acks.push(p);
        }
        let topic = match Topic::parse(&m.topic) {
            Ok(t) => t,
            Err(e) => {
                count_rejected("topic");
                tracing::warn!(topic = %m.topic.chars().take(200).collect::<String>(), error = %e, "message on an unknown topic");
                return;
            }
        };
        let registry = self.registry.clone();
        let registry = registry.read().expect("registry lock");
        let Some(entry) = registry.gateway(topic.gateway.as_str()) else {
            count_rejected("unknown_gateway");
            tracing::warn!(topic = %topic, "message from an unregistered gateway");
            return;
        };
        match topic.channel {
            Channel::Presence => self.take_presence(&topic, entry, &m.payload, group),
            Channel::Status => self.take_status(&topic, entry, &m.payload, group),
            Channel::ConfigAck => self.take_config_ack(&topic, entry, &m.payload, group),
            Channel::PresenceAck | Channel::Config => {}
        }
    }

    fn take_presence(
        &mut self,
        topic: &Topic,
        entry: &GatewayEntry,
        payload: &[u8],
        group: &mut Group,
    ) {
        let now = self.now();
        let correction = self
            .gateways
            .lock()
            .expect("gateway states lock")
            .get(&topic.gateway)
            .map_or(0, |s| s.correction_ms());
        let batch = match check_presence(topic, entry, payload, correction, now, self.limits.times)
        {
            Ok(b) => b,
            Err(refusal) => return refused(topic, &refusal),
        };
        for u in &batch.unreadable {
            count_rejected("unreadable_event");
            tracing::warn!(topic = %topic, problem = %u, "event without a readable seq");
        }
        let (gw, epoch) = (batch.gateway.clone(), batch.epoch);
        self.note_epoch(&gw, epoch, now, group);
        let mut known = self.ledger.stored(&gw, epoch).cloned().unwrap_or_default();
        if let Some(p) = group.pending.stored(&gw, epoch) {
            known.merge(p);
        }
        let (mut new, mut acked) = self.append_new(
            (&gw, &batch.store, epoch),
            batch.events,
            (&known, now),
            group,
        );
        let dropped_new = batch.dropped.difference(&known).difference(&new);
        acked.merge(&batch.dropped);
        if !dropped_new.is_empty() {
            group.dropped = group
                .dropped
                .saturating_add(u64::try_from(dropped_new.count()).unwrap_or(u64::MAX));
            let record = Record::GatewayDropped {
                gateway: gw.clone(),
                store: batch.store.clone(),
                epoch,
                seqs: dropped_new.clone(),
                received: now,
            };
            self.log.append(&mut group.commit, &record.encode());
            new.merge(&dropped_new);
        }
        group.pending.record_stored(&gw, epoch, &new);
        for r in &batch.rejected {
            group.rejected_pending.record_stored(&gw, epoch, &r.seqs);
        }
        group.touched.insert((gw, epoch));
        let ack = PresenceAck {
            epoch,
            seqs: acked,
            rejected: batch.rejected,
        };
        seal_ack(topic, entry, &ack, group);
    }

    /// Appends the events whose seqs neither the ledger (`known`) nor this batch holds;
    /// answers the seqs appended and the seqs to acknowledge (every one of the batch's).
    fn append_new(
        &mut self,
        (gw, store, epoch): (&GatewayId, &StoreId, Epoch),
        events: Vec<(PresenceEvent, Timestamp)>,
        (known, now): (&SeqRanges, Timestamp),
        group: &mut Group,
    ) -> (SeqRanges, SeqRanges) {
        let mut new = SeqRanges::new();
        let mut acked = SeqRanges::new();
        for (event, event_ts) in events {
            let seq = event.seq();
            acked.insert(seq);
            if known.contains(seq) || new.contains(seq) {
                group.duplicates += 1;
                continue;
            }
            new.insert(seq);
            group.events += 1;
            let record = Record::Gateway(GatewayEvent {
                gateway: gw.clone(),
                store: store.clone(),
                epoch,
                event,
                event_ts,
                received: now,
            });
            self.log.append(&mut group.commit, &record.encode());
        }
        (new, acked)
    }

    fn open_signed<T: serde::de::DeserializeOwned>(
        &self,
        topic: &Topic,
        entry: &GatewayEntry,
        payload: &[u8],
    ) -> Option<T> {
        match open::<T>(&topic.to_string(), &entry.key, payload) {
            Ok(v) if entry.record.store == topic.store && entry.record.enabled => Some(v),
            Ok(_) => {
                count_rejected(if entry.record.enabled {
                    "wrong_store"
                } else {
                    "disabled_gateway"
                });
                tracing::warn!(topic = %topic, "message from a gateway of another store, or disabled");
                None
            }
            Err(
                e @ (EnvelopeError::BadSignature
                | EnvelopeError::SignatureEncoding
                | EnvelopeError::MissingField("sig")),
            ) => {
                count_rejected("bad_signature");
                metrics::counter!("omo_ingest_bad_signatures_total").increment(1);
                tracing::warn!(topic = %topic, error = %e, "bad signature");
                None
            }
            Err(e) => {
                count_rejected("malformed");
                tracing::warn!(topic = %topic, error = %e, "malformed message");
                None
            }
        }
    }

    fn take_status(
        &mut self,
        topic: &Topic,
        entry: &GatewayEntry,
        payload: &[u8],
        group: &mut Group,
    ) {
        let Some(status) = self.open_signed::<Status>(topic, entry, payload) else {
            return;
        };
        // What this outbox says it has written, kept with its epoch (a known one only: the
        // first batch of a new epoch creates its record).
        if let (Some(epoch), Some(last)) = (status.epoch, status.last_seq) {
            let key = (topic.gateway.clone(), epoch);
            let known = group.epochs.get(&key).or_else(|| self.epochs.get(&key));
            if let Some(info) = known.filter(|i| i.reported_written.is_none_or(|w| w < last)) {
                let mut info = info.clone();
                info.reported_written = Some(last);
                group.epochs.insert(key, info);
            }
        }
        let now = self.now();
        // Alerted before the heartbeat shows in the gateway's state, so a reader that sees it
        // online also sees the alert.
        self.live
            .outbox_dropped(topic.gateway.as_str(), status.dropped, now.millis());
        let send = config_to_send(entry, &status).cloned();
        let mut states = self.gateways.lock().expect("gateway states lock");
        let change = states.on_status(&topic.gateway, status, now, self.limits.max_clock_offset_ms);
        if change.went_offline {
            // Under the states' lock, as the overview reads them: offline and alerted at once.
            self.live
                .gateway_offline(topic.gateway.as_str(), now.millis());
        }
        metrics::gauge!("omo_gateways_online").set(states.online_count() as f64);
        if let Some(offset) = states.get(&topic.gateway).and_then(|s| s.clock_offset_ms) {
            metrics::gauge!("omo_gateway_clock_offset_seconds", "gateway" => topic.gateway.to_string())
                .set(offset as f64 / 1000.0);
        }
        drop(states);
        if change.came_online {
            tracing::info!(gateway = %topic.gateway, store = %topic.store, "gateway online");
        }
        if change.went_offline {
            tracing::info!(gateway = %topic.gateway, store = %topic.store, "gateway offline");
        }
        if change.offset_ignored {
            tracing::warn!(gateway = %topic.gateway, "heartbeat time beyond the believable clock offset; ignored");
        }
        if let Some(desired) = send {
            let t =
                Topic::new(topic.store.clone(), topic.gateway.clone(), Channel::Config).to_string();
            let payload = seal_raw(&t, &entry.key, &desired.json);
            match self.outbound.publish(t, payload, true) {
                Ok(()) => {
                    tracing::info!(gateway = %topic.gateway, version = desired.version, "config sent")
                }
                Err(e) => tracing::warn!(gateway = %topic.gateway, error = %e, "config not sent"),
            }
        }
    }

    fn take_config_ack(
        &mut self,
        topic: &Topic,
        entry: &GatewayEntry,
        payload: &[u8],
        group: &mut Group,
    ) {
        let Some(ack) = self.open_signed::<ConfigAck>(topic, entry, payload) else {
            return;
        };
        if ack.ok {
            tracing::info!(gateway = %topic.gateway, version = ack.version, "config applied");
        } else {
            tracing::warn!(gateway = %topic.gateway, version = ack.version, error = ?ack.error, "config refused");
        }
        group.commit.extend(record_config_ack(&topic.gateway, &ack));
        group.config_acks.push((topic.gateway.clone(), ack));
    }
}

/// Counts and logs a presence message refused whole.
fn refused(topic: &Topic, refusal: &presence::Refusal) {
    count_rejected(refusal.label());
    if refusal.label() == "bad_signature" {
        metrics::counter!("omo_ingest_bad_signatures_total").increment(1);
    }
    tracing::warn!(topic = %topic, reason = %refusal, "presence message refused");
}

/// Seals the acknowledgement of a presence batch for its gateway, to be sent once the group
/// is durable.
fn seal_ack(topic: &Topic, entry: &GatewayEntry, ack: &PresenceAck, group: &mut Group) {
    let ack_topic = Topic::new(
        topic.store.clone(),
        topic.gateway.clone(),
        Channel::PresenceAck,
    )
    .to_string();
    match seal(&ack_topic, &entry.key, ack) {
        Ok(payload) => group.acks.push((ack_topic, payload)),
        Err(e) => tracing::error!(error = %e, "could not seal an ack"),
    }
}
