//! A test subscriber that plays the cloud's part of the MQTT contract against a real broker:
//! it checks each presence payload's signature with the gateway's key, stores every event by
//! its id (`{gateway}:{epoch}:{seq}`, counting duplicates), and only then publishes a signed
//! `presence/ack`. Acking can be paused to test the gateway's resends. It is a test double of
//! the cloud for gateway tests, not a replacement for the cloud service.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omo_device_config::envelope::{open, seal, SigningKey};
use omo_device_config::payload::{ConfigAck, PresenceAck, PresenceBatch, PresenceEvent, Status};
use omo_device_config::topics::all_gateways_filter;
use omo_device_config::{Channel, SeqRanges, Topic};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// What the stub has seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// Stored events by id.
    pub events: BTreeMap<String, PresenceEvent>,
    /// Dropped seqs reported, by `{gateway}:{epoch}`.
    pub dropped: BTreeMap<String, SeqRanges>,
    /// Events received again after they were stored.
    pub duplicates: u64,
    /// Ids received again with different content: a reused seq, which must never happen.
    pub conflicts: u64,
    /// Payloads refused (bad signature, unknown gateway, malformed).
    pub refused: u64,
    /// Heartbeats and last wills, in arrival order, per gateway.
    pub statuses: HashMap<String, Vec<Status>>,
    /// Presence payloads received.
    pub batches: u64,
    /// Config acks, per gateway.
    pub config_acks: HashMap<String, Vec<ConfigAck>>,
}

/// A running stub; stops when dropped.
pub struct CloudStub {
    pub seen: Arc<Mutex<Seen>>,
    client: AsyncClient,
    acking: Arc<Mutex<bool>>,
    task: tokio::task::JoinHandle<()>,
}

impl CloudStub {
    /// Connects to the broker on `port` as `user` and serves gateways with these keys.
    pub async fn start(
        port: u16,
        user: &str,
        password: &str,
        keys: HashMap<String, SigningKey>,
    ) -> anyhow::Result<CloudStub> {
        CloudStub::start_with(options(user, password, "127.0.0.1", port), keys).await
    }

    /// Like [`CloudStub::start`], over TLS to `localhost`, trusting the CA in `ca_pem`.
    pub async fn start_tls(
        port: u16,
        user: &str,
        password: &str,
        ca_pem: &str,
        keys: HashMap<String, SigningKey>,
    ) -> anyhow::Result<CloudStub> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots.add(cert?)?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut o = options(user, password, "localhost", port);
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
        ));
        CloudStub::start_with(o, keys).await
    }

    async fn start_with(
        o: MqttOptions,
        keys: HashMap<String, SigningKey>,
    ) -> anyhow::Result<CloudStub> {
        let (client, mut eventloop) = AsyncClient::new(o, 256);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let acking = Arc::new(Mutex::new(true));
        let (s, a) = (seen.clone(), acking.clone());
        let publisher = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for c in [Channel::Presence, Channel::Status, Channel::ConfigAck] {
                            let _ = client
                                .subscribe(all_gateways_filter(c), QoS::AtLeastOnce)
                                .await;
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let acking = *a.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some((topic, payload)) =
                            handle(&s, &keys, &p.topic, &p.payload, acking)
                        {
                            let _ = client
                                .publish(topic, QoS::AtLeastOnce, false, payload)
                                .await;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        Ok(CloudStub {
            seen,
            client: publisher,
            acking,
            task,
        })
    }

    /// Stops or resumes acknowledging (events are still stored).
    pub fn set_acking(&self, on: bool) {
        *self.acking.lock().unwrap_or_else(|e| e.into_inner()) = on;
    }

    /// Publishes `payload` on `topic` (QoS 1, or retained) as the cloud.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>, retain: bool) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await?;
        Ok(())
    }

    /// Runs `f` on what has been seen.
    pub fn with<R>(&self, f: impl FnOnce(&Seen) -> R) -> R {
        f(&self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for CloudStub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options(user: &str, password: &str, host: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(user, host, port);
    o.set_credentials(user, password);
    o.set_keep_alive(Duration::from_secs(5));
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Stores a presence batch and returns the ack to publish; records a status.
fn handle(
    seen: &Mutex<Seen>,
    keys: &HashMap<String, SigningKey>,
    topic: &str,
    payload: &[u8],
    acking: bool,
) -> Option<(String, Vec<u8>)> {
    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
    let Ok(t) = Topic::parse(topic) else {
        seen.refused += 1;
        return None;
    };
    let Some(key) = keys.get(t.gateway.as_str()) else {
        seen.refused += 1;
        return None;
    };
    match t.channel {
        Channel::Status => {
            match open::<Status>(topic, key, payload) {
                Ok(s) => seen
                    .statuses
                    .entry(t.gateway.to_string())
                    .or_default()
                    .push(s),
                Err(_) => seen.refused += 1,
            }
            None
        }
        Channel::ConfigAck => {
            match open::<ConfigAck>(topic, key, payload) {
                Ok(a) => seen
                    .config_acks
                    .entry(t.gateway.to_string())
                    .or_default()
                    .push(a),
                Err(_) => seen.refused += 1,
            }
            None
        }
        Channel::Presence => {
            let Ok(batch) = open::<PresenceBatch>(topic, key, payload) else {
                seen.refused += 1;
                return None;
            };
            seen.batches += 1;
            let mut seqs = batch.dropped.clone();
            let prefix = format!("{}:{}", batch.gateway, batch.epoch);
            seen.dropped
                .entry(prefix.clone())
                .or_default()
                .merge(&batch.dropped);
            for e in batch.events {
                seqs.insert(e.seq());
                let id = format!("{prefix}:{}", e.seq());
                match seen.events.get(&id) {
                    Some(stored) if *stored == e => seen.duplicates += 1,
                    Some(_) => seen.conflicts += 1,
                    None => {
                        seen.events.insert(id, e);
                    }
                }
            }
            if !acking {
                return None;
            }
            let ack = PresenceAck {
                epoch: batch.epoch,
                seqs,
                rejected: Vec::new(),
            };
            let ack_topic = Topic::new(t.store, t.gateway, Channel::PresenceAck).to_string();
            let sealed = seal(&ack_topic, key, &ack).ok()?;
            Some((ack_topic, sealed))
        }
        _ => None,
    }
}
