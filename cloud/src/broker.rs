//! The cloud's side of MQTT: either the embedded rumqttd broker (default: one command runs the
//! whole cloud) with logins checked against the gateway registry, or a connection to an
//! external broker (Mosquitto, EMQX) with a persistent session and manual acks, so a PUBLISH
//! is acknowledged to the broker only after ingest has stored it.
//!
//! Both give ingest the same thing: a stream of [`Incoming`] messages and an [`Outbound`] to
//! publish acks and configs with.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use omo_device_config::broker_url::{tls_client_config, BrokerUrl};
use omo_device_config::envelope::MAX_PACKET_BYTES;
use omo_device_config::reconnect::ReconnectBackoff;
use omo_device_config::topics::{all_gateways_filter, Direction};
use omo_device_config::Channel;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use rumqttd::{
    Broker, Config, ConnectionSettings, Notification, RouterConfig, SegmentConfig, ServerSettings,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::registry::Registry;

/// The broker: embedded (`listen`) unless `url` names an external one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Mqtt {
    /// Where the embedded broker listens for gateways.
    pub listen: SocketAddr,
    /// An external broker (`mqtt://` or `mqtts://`); when set, nothing is embedded.
    pub url: Option<String>,
    /// External broker: the cloud's client id (its persistent session) and username.
    pub client_id: String,
    pub username: String,
    pub password: Option<String>,
    /// External broker over mqtts: PEM CA file (default: system roots).
    pub ca_file: Option<PathBuf>,
    /// External broker: subscribe to presence through this shared-subscription group
    /// (`$share/GROUP/…`) so several cloud instances split the stream; empty: no sharing.
    pub share_group: String,
    pub keep_alive_s: u16,
}

impl Default for Mqtt {
    fn default() -> Mqtt {
        Mqtt {
            listen: SocketAddr::from(([0, 0, 0, 0], 1883)),
            url: None,
            client_id: "omo-cloud".into(),
            username: "omo-cloud".into(),
            password: None,
            ca_file: None,
            share_group: String::new(),
            keep_alive_s: 30,
        }
    }
}

/// A message from a gateway.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
    /// External broker: the PUBLISH to acknowledge once the message is dealt with.
    pub ack: Option<rumqttc::Publish>,
}

/// Where the cloud publishes.
pub enum Outbound {
    /// The embedded broker's in-process link (QoS 0, no retain: DESIGN.md says why that is
    /// enough).
    Embedded(Mutex<rumqttd::local::LinkTx>),
    External(AsyncClient),
}

impl Outbound {
    /// Queues a publish without waiting; an error means it was not queued (the gateway will
    /// resend, or come back online, and get it again).
    pub fn publish(&self, topic: String, payload: Vec<u8>, retain: bool) -> Result<(), String> {
        match self {
            Outbound::Embedded(link) => link
                .lock()
                .map_err(|_| "broker link lock poisoned".to_owned())?
                .try_publish(topic, payload)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Outbound::External(client) => client
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
        }
    }

    /// Acknowledges an external broker's PUBLISH (after it was stored), waiting for room in
    /// the client's queue: a PUBACK dropped here would hold the broker's in-flight window.
    pub async fn ack(&self, publish: &rumqttc::Publish) {
        if let Outbound::External(client) = self {
            if let Err(e) = client.ack(publish).await {
                tracing::warn!(error = %e, "could not queue a PUBACK; the broker redelivers after a reconnect");
            }
        }
    }
}

/// The topic filters the cloud reads.
pub fn filters(share_group: &str) -> Vec<String> {
    [Channel::Presence, Channel::Status, Channel::ConfigAck]
        .into_iter()
        .map(|c| {
            let f = format!("omo/v1/stores/+/gateways/+/{}", c.suffix());
            if share_group.is_empty() || c != Channel::Presence {
                f
            } else {
                format!("$share/{share_group}/{f}")
            }
        })
        .collect()
}

/// The router keeps one log per subscription, and every gateway subscribes to its own acks
/// and configs: with the default segments each of those logs would keep everything sent to its
/// gateway up to 64 MiB, and the broker's memory would grow by every ack for as long as it
/// runs. A gateway needs only what it has not read yet: an ack it missed is made good by
/// resending the batch, a config by the cloud sending it again at the gateway's next heartbeat
/// while the version it reports differs. So the cloud → gateway channels keep
/// two small segments each (a segment can overrun its size by one message).
fn gateway_bound_segments() -> HashMap<String, SegmentConfig> {
    Channel::ALL
        .into_iter()
        .filter(|c| c.direction() == Direction::CloudToGateway)
        .map(|c| {
            (
                all_gateways_filter(c),
                SegmentConfig {
                    max_segment_size: GATEWAY_BOUND_SEGMENT_BYTES,
                    max_segment_count: 2,
                },
            )
        })
        .collect()
}

/// A cloud → gateway segment: about 30 presence acks.
const GATEWAY_BOUND_SEGMENT_BYTES: usize = 4 * 1024;

/// Starts the embedded broker on `listen`, checking logins against `registry`; returns the
/// cloud's link to it.
pub fn start_embedded(
    listen: SocketAddr,
    registry: Arc<RwLock<Registry>>,
    tx: mpsc::Sender<Incoming>,
) -> anyhow::Result<Outbound> {
    // rumqttd binds in its own thread and only logs a failure: check the port first so a
    // busy port is one clear error at start.
    drop(
        std::net::TcpListener::bind(listen)
            .with_context(|| format!("mqtt.listen {listen}: cannot listen"))?,
    );
    let mut broker = Broker::new(embedded_config(listen, registry));
    // No gateway id contains a colon, so no gateway can take the cloud's link name.
    let (mut link_tx, link_rx) = broker
        .link("omo-cloud:link")
        .map_err(|e| anyhow::anyhow!("embedded broker link: {e}"))?;
    for f in filters("") {
        link_tx
            .subscribe(f)
            .map_err(|e| anyhow::anyhow!("embedded broker subscribe: {e}"))?;
    }
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })?;
    tokio::spawn(forward_from_link(link_rx, tx));
    Ok(Outbound::Embedded(Mutex::new(link_tx)))
}

/// The embedded broker's settings: one listener for the gateways, logins checked against
/// `registry`, small memory segments.
fn embedded_config(listen: SocketAddr, registry: Arc<RwLock<Registry>>) -> Config {
    let mut server = ServerSettings {
        name: "gateways".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PACKET_BYTES,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    server.set_auth_handler(move |client_id: String, user: String, pass: String| {
        let registry = registry.clone();
        async move {
            let ok = registry
                .read()
                .map(|r| r.broker_login_ok(&client_id, &user, &pass))
                .unwrap_or(false);
            if !ok {
                tracing::warn!(client_id = %client_id.chars().take(64).collect::<String>(), "broker login refused");
                metrics::counter!("omo_broker_logins_refused_total").increment(1);
            }
            ok
        }
    });
    Config {
        router: RouterConfig {
            max_connections: 20_000,
            max_outgoing_packet_count: 1000,
            // The router keeps what it forwards in memory segments; gateways resend anything
            // unacknowledged, so a small log is enough (4 × 16 MiB for what the cloud reads).
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 4,
            custom_segment: Some(gateway_bound_segments()),
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("gateways".to_owned(), server)])),
        ..Config::default()
    }
}

/// Hands what the broker forwards on the cloud's link to ingest until either side closes.
async fn forward_from_link(mut link_rx: rumqttd::local::LinkRx, tx: mpsc::Sender<Incoming>) {
    loop {
        match link_rx.next().await {
            Ok(Some(Notification::Forward(f))) => {
                let incoming = Incoming {
                    topic: String::from_utf8_lossy(&f.publish.topic).into_owned(),
                    payload: f.publish.payload.to_vec(),
                    ack: None,
                };
                if tx.send(incoming).await.is_err() {
                    return;
                }
            }
            Ok(Some(Notification::Unschedule)) => {
                if link_rx.wake().await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "embedded broker link closed");
                return;
            }
        }
    }
}

/// Connects to the external broker at `mqtt.url`; the returned task keeps the connection
/// (reconnecting quickly, see [`Outage`]) and subscribes on every connect.
pub fn connect_external(
    mqtt: &Mqtt,
    url: &str,
    tx: mpsc::Sender<Incoming>,
) -> anyhow::Result<Outbound> {
    let url = BrokerUrl::parse(url, "mqtt.url")?;
    let mut o = MqttOptions::new(&mqtt.client_id, url.host, url.port);
    o.set_credentials(&mqtt.username, mqtt.password.clone().unwrap_or_default());
    o.set_keep_alive(Duration::from_secs(u64::from(mqtt.keep_alive_s.max(5))));
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    // A member of a shared subscription starts clean each time: the broker then hands a dead
    // member's share to the others instead of queueing it for its return (what it had in
    // flight is not acked, so the gateways resend it). Alone, the session persists: the broker
    // keeps what arrives while the cloud restarts.
    o.set_clean_session(!mqtt.share_group.is_empty());
    o.set_manual_acks(true);
    o.set_inflight(100);
    if url.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_client_config(mqtt.ca_file.as_deref(), "mqtt.ca_file")?),
        )));
    }
    let (client, mut eventloop) = AsyncClient::new(o, 1024);
    let subscriber = client.clone();
    let filters = filters(&mqtt.share_group);
    tokio::spawn(async move {
        let mut outage = Outage::default();
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    outage.ended();
                    for f in &filters {
                        if let Err(e) = subscriber.subscribe(f.clone(), QoS::AtLeastOnce).await {
                            tracing::error!(error = %e, filter = %f, "subscribe failed");
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let incoming = Incoming {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        ack: Some(p),
                    };
                    if tx.send(incoming).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    let wait = outage.failed(&e);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    });
    Ok(Outbound::External(client))
}

/// The external broker's outages as the connection task lives them: each failed attempt is
/// counted (`omo_mqtt_reconnect_attempts_total`), the first of an outage is logged (and any
/// whose error differs from the last logged, so a refused login after a network outage is
/// seen), and the outage is logged once more, with its length, when a connection is back. Retries follow
/// [`ReconnectBackoff::CLOUD`] on the wall clock: an outage is a network matter, whatever the
/// process clock's speed.
#[derive(Default)]
struct Outage {
    /// When the current outage began (None while connected), and its failed attempts.
    since: Option<(Instant, u32)>,
    /// The error last logged in this outage.
    logged: Option<String>,
    /// Whether a connection was ever made (the first connect is not a reconnect).
    ever_connected: bool,
}

impl Outage {
    /// A connect attempt or the connection failed; the wall time to wait before the next
    /// attempt (each counted).
    fn failed(&mut self, e: &rumqttc::ConnectionError) -> Duration {
        metrics::gauge!("omo_mqtt_connected").set(0.0);
        metrics::counter!("omo_mqtt_reconnect_attempts_total").increment(1);
        let error = e.to_string();
        let failures = match &mut self.since {
            Some((_, failures)) => {
                *failures = failures.saturating_add(1);
                if self.logged.as_ref() != Some(&error) {
                    tracing::warn!(%error, failures = *failures, "external broker still unreachable");
                } else {
                    tracing::debug!(%error, failures = *failures, "external broker still unreachable");
                }
                *failures
            }
            None => {
                self.since = Some((Instant::now(), 1));
                if self.ever_connected {
                    tracing::warn!(%error, "external broker connection lost; reconnecting");
                } else {
                    tracing::warn!(%error, "cannot reach the external broker; retrying");
                }
                1
            }
        };
        self.logged = Some(error);
        ReconnectBackoff::CLOUD.delay(failures, &mut rand::rng())
    }

    /// A connection is up (CONNACK received).
    fn ended(&mut self) {
        metrics::gauge!("omo_mqtt_connected").set(1.0);
        self.logged = None;
        match (self.since.take(), self.ever_connected) {
            (Some((since, attempts)), true) => {
                metrics::counter!("omo_mqtt_outages_total").increment(1);
                tracing::info!(
                    outage_ms = since.elapsed().as_millis() as u64,
                    attempts,
                    "connected to the external broker again"
                );
            }
            (Some((since, attempts)), false) => tracing::info!(
                waited_ms = since.elapsed().as_millis() as u64,
                attempts,
                "connected to the external broker"
            ),
            (None, _) => tracing::info!("connected to the external broker"),
        }
        self.ever_connected = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omo_device_config::{GatewayId, StoreId, Topic};

    /// MQTT's single-level wildcard, all these filters use.
    fn filter_matches(filter: &str, topic: &str) -> bool {
        let (f, t): (Vec<&str>, Vec<&str>) =
            (filter.split('/').collect(), topic.split('/').collect());
        f.len() == t.len() && f.iter().zip(&t).all(|(f, t)| *f == "+" || f == t)
    }

    #[test]
    fn what_a_gateway_subscribes_to_keeps_small_segments_and_nothing_else_does() {
        let segments = gateway_bound_segments();
        let store: StoreId = "s-1".parse().unwrap();
        let gateway: GatewayId = "gw-1".parse().unwrap();
        for c in Channel::ALL {
            let topic = Topic::new(store.clone(), gateway.clone(), c).to_string();
            let small = segments
                .keys()
                .filter(|f| filter_matches(f, &topic))
                .count();
            let to_gateway = c.direction() == Direction::CloudToGateway;
            assert_eq!(small, usize::from(to_gateway), "{topic}");
        }
        for s in segments.values() {
            assert!(s.max_segment_size * s.max_segment_count <= 16 * 1024);
        }
    }

    #[test]
    fn presence_alone_is_shared() {
        assert_eq!(
            filters("omo-cloud"),
            [
                "$share/omo-cloud/omo/v1/stores/+/gateways/+/presence",
                "omo/v1/stores/+/gateways/+/status",
                "omo/v1/stores/+/gateways/+/config/ack"
            ]
        );
        assert!(filters("").iter().all(|f| !f.starts_with('$')));
    }
}
