//! The MQTT connection: options from the gateway config (client id = username = gateway id,
//! 64 KiB packets, TLS with the ring provider, a signed `offline` last will on the retained
//! status topic), and the task that drives rumqttc's event loop, reconnecting with capped
//! exponential backoff and jitter and telling the daemon what happened.

use std::sync::Arc;
use std::time::Duration;

use omo_device_config::envelope::MAX_PACKET_BYTES;
use omo_device_config::gateway_config::GatewayConfig;
use rand::Rng;
use rumqttc::{
    ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

pub use omo_device_config::broker_url::BrokerSetupError as MqttSetupError;
use omo_device_config::broker_url::{tls_client_config, BrokerUrl};

/// rumqttc options for this gateway, with `will` (a sealed `offline` status) as last will.
pub fn options(config: &GatewayConfig, will: Vec<u8>) -> Result<MqttOptions, MqttSetupError> {
    let url = BrokerUrl::parse(&config.broker.url, "broker.url")?;
    let id = config.identity.gateway.as_str();
    let mut o = MqttOptions::new(id, url.host, url.port);
    o.set_credentials(id, config.broker.password.clone().unwrap_or_default());
    o.set_keep_alive(Duration::from_secs(u64::from(config.broker.keep_alive_s)));
    o.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    o.set_clean_session(false);
    let status = omo_device_config::Topic::new(
        config.identity.store.clone(),
        config.identity.gateway.clone(),
        omo_device_config::Channel::Status,
    );
    o.set_last_will(LastWill::new(
        status.to_string(),
        will,
        QoS::AtLeastOnce,
        true,
    ));
    if url.tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_client_config(
                config.broker.ca_file.as_deref(),
                "broker.ca_file",
            )?),
        )));
    }
    Ok(o)
}

/// What the connection task reports to the daemon.
#[derive(Debug)]
pub enum Link {
    Connected,
    Disconnected(String),
    Publish { topic: String, payload: Vec<u8> },
}

/// Drives the event loop until `tx` closes; on errors waits with capped exponential backoff
/// and jitter (1 s doubling to 60 s, on the process clock) before rumqttc reconnects.
pub async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Link>,
    clock: omo_device_config::Clock,
) {
    let mut failures: u32 = 0;
    loop {
        let link = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                Link::Connected
            }
            Ok(Event::Incoming(Packet::Publish(p))) => Link::Publish {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
            },
            Ok(_) => continue,
            Err(e) => {
                failures = failures.saturating_add(1);
                let reason = describe(&e);
                if tx.send(Link::Disconnected(reason)).await.is_err() {
                    return;
                }
                let base = 1000u64.saturating_mul(1 << failures.min(6)).min(60_000);
                let wait = Duration::from_millis(rand::rng().random_range(base / 2..=base));
                // Never spin: at a high clock speed still wait a little wall time.
                let wall = clock
                    .wall_duration(wait)
                    .unwrap_or(wait)
                    .max(Duration::from_millis(50));
                tokio::time::sleep(wall).await;
                continue;
            }
        };
        if tx.send(link).await.is_err() {
            return;
        }
    }
}

/// A connection error as one line an operator can act on.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => format!(
            "the broker refused this gateway's credentials ({code:?}): check broker.password and that the gateway is registered and enabled"
        ),
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        other => format!("connection to the broker lost: {other}"),
    }
}
