//! An MQTT client that acts as a gateway at the protocol level: its provisioned identity
//! (store, gateway, password, signing key), signed presence batches, and signature-checked
//! `presence/ack` and `config` messages. The load generator runs a fleet of them; the
//! end-to-end tests use them to speak for a gateway, or to forge one.

use std::time::Duration;

use anyhow::{bail, Context};
use omo_device_config::envelope::{open, seal};
use omo_device_config::payload::{Epoch, PresenceAck, PresenceBatch, PresenceEvent};
use omo_device_config::{Channel, GatewayId, SeqRanges, SigningKey, StoreId, Topic};
use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

/// A provisioned gateway's identity.
#[derive(Debug, Clone)]
pub struct Creds {
    pub store: StoreId,
    pub gateway: GatewayId,
    pub password: String,
    pub key: SigningKey,
}

impl Creds {
    pub fn new(store: &str, gateway: &str) -> anyhow::Result<Creds> {
        Ok(Creds {
            store: StoreId::new(store)?,
            gateway: GatewayId::new(gateway)?,
            password: format!("{gateway}-password"),
            key: SigningKey::generate(),
        })
    }

    pub fn topic(&self, channel: Channel) -> String {
        Topic::new(self.store.clone(), self.gateway.clone(), channel).to_string()
    }
}

/// An MQTT client acting as a gateway: it signs what it sends and checks what it receives.
pub struct MqttGateway {
    pub creds: Creds,
    pub client: AsyncClient,
    rx: mpsc::Receiver<(String, Vec<u8>)>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MqttGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MqttGateway {
    /// Connects with `password` and subscribes to its ack and config topics; an error if the
    /// broker refuses the login.
    pub async fn connect(port: u16, creds: &Creds, password: &str) -> anyhow::Result<MqttGateway> {
        let mut o = MqttOptions::new(creds.gateway.as_str(), "127.0.0.1", port);
        o.set_credentials(creds.gateway.as_str(), password);
        o.set_keep_alive(Duration::from_secs(5));
        o.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(o, 100);
        let connack = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(c))) => return Ok(c.code),
                    Ok(_) => {}
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Ok(code),
                    Err(e) => return Err(anyhow::anyhow!("{e}")),
                }
            }
        })
        .await
        .context("no CONNACK within 10 s")??;
        if connack != ConnectReturnCode::Success {
            bail!("refused: {connack:?}");
        }
        for c in [Channel::PresenceAck, Channel::Config] {
            client.subscribe(creds.topic(c), QoS::AtLeastOnce).await?;
        }
        let (tx, rx) = mpsc::channel(1000);
        let (again, topics) = (
            client.clone(),
            [Channel::PresenceAck, Channel::Config].map(|c| creds.topic(c)),
        );
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    // A clean session forgets subscriptions: subscribe again on reconnecting.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for t in &topics {
                            let _ = again.try_subscribe(t.as_str(), QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send((p.topic.clone(), p.payload.to_vec()))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        });
        // Let the subscriptions land before anything is published to them.
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(MqttGateway {
            creds: creds.clone(),
            client,
            rx,
            task,
        })
    }

    /// Publishes a signed presence batch.
    pub async fn publish_presence(
        &self,
        epoch: Epoch,
        events: Vec<PresenceEvent>,
        dropped: SeqRanges,
    ) -> anyhow::Result<()> {
        let topic = self.creds.topic(Channel::Presence);
        let batch = PresenceBatch {
            gateway: self.creds.gateway.clone(),
            store: self.creds.store.clone(),
            epoch,
            events,
            dropped,
        };
        self.publish_raw(&topic, seal(&topic, &self.creds.key, &batch)?)
            .await
    }

    pub async fn publish_raw(&self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await?;
        Ok(())
    }

    /// The next message on `channel`, within `timeout`; `None` if none came.
    pub async fn next_on(&mut self, channel: Channel, timeout: Duration) -> Option<Vec<u8>> {
        let want = self.creds.topic(channel);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some((topic, payload))) if topic == want => return Some(payload),
                Ok(Some(_)) => continue,
                _ => return None,
            }
        }
    }

    /// The next `presence/ack`, with its signature checked against this gateway's key.
    pub async fn next_ack(&mut self, timeout: Duration) -> anyhow::Result<Option<PresenceAck>> {
        match self.next_on(Channel::PresenceAck, timeout).await {
            None => Ok(None),
            Some(p) => Ok(Some(open(
                &self.creds.topic(Channel::PresenceAck),
                &self.creds.key,
                &p,
            )?)),
        }
    }
}
