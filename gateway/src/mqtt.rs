//! The MQTT connection: options from the gateway config (client id = username = gateway id,
//! 64 KiB packets, TLS with the ring provider, a signed `offline` last will on the retained
//! status topic), and the task that drives rumqttc's event loop, reconnecting with capped
//! exponential backoff and jitter and telling the daemon what happened, until a stop closes
//! it for good.

use std::sync::Arc;
use std::time::Duration;

use omo_device_config::envelope::MAX_PACKET_BYTES;
use omo_device_config::gateway_config::GatewayConfig;
use omo_device_config::reconnect::ReconnectBackoff;
use omo_device_config::Clock;
use rumqttc::{
    ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet,
    QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

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

/// The task that drives rumqttc's event loop (see [`drive`]), and the switch that ends it.
pub struct Connection {
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Connection {
    /// Spawns the task; what happens on the link reaches `tx`.
    pub fn spawn(eventloop: EventLoop, tx: mpsc::Sender<Link>, clock: Clock) -> Connection {
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(drive(eventloop, tx, clock, stopping));
        Connection { task, stop }
    }

    /// Ends the connection for a stop. With `disconnect_queued` (the daemon queued its
    /// `offline` status and a DISCONNECT) the task writes them and ends once the DISCONNECT
    /// is out, or at once if the link drops first; otherwise it ends at once. It never
    /// reconnects again, whatever the clock's speed, so the broker never sees this gateway
    /// connect (and then publish its last will) after a clean stop. Waits at most `within`
    /// (wall time), then drops the connection.
    pub async fn close(self, disconnect_queued: bool, within: Duration) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if !disconnect_queued {
            task.abort();
            return;
        }
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::warn!(
                wait_ms = within.as_millis() as u64,
                "the broker connection did not close in time; dropping it"
            );
            task.abort();
        }
    }
}

/// Drives the event loop until `tx` closes or `stop` turns true; on errors waits
/// ([`ReconnectBackoff::GATEWAY`], on the process clock) before rumqttc reconnects. Once
/// stopping, it ends at the DISCONNECT, at the first error, or at once while disconnected.
async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Link>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut connected = false;
    loop {
        let polled = if connected {
            // Keep polling: the offline status and the DISCONNECT are still to be written.
            eventloop.poll().await
        } else {
            tokio::select! {
                polled = eventloop.poll() => polled,
                _ = stopped(&mut stop) => return,
            }
        };
        let link = match polled {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                connected = true;
                if *stop.borrow() {
                    return;
                }
                Link::Connected
            }
            // Written and flushed: the broker discards the will; nothing more goes out.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(Event::Incoming(Packet::Publish(p))) => Link::Publish {
                topic: p.topic.clone(),
                payload: p.payload.to_vec(),
            },
            Ok(_) => continue,
            Err(e) => {
                connected = false;
                if *stop.borrow() {
                    return;
                }
                failures = failures.saturating_add(1);
                if !forward(&tx, Link::Disconnected(describe(&e)), &mut stop).await {
                    return;
                }
                let wait = ReconnectBackoff::GATEWAY.delay(failures, &mut rand::rng());
                // Never spin: at a high clock speed still wait a little wall time.
                let wall = clock
                    .wall_duration(wait)
                    .unwrap_or(wait)
                    .max(Duration::from_millis(50));
                tokio::select! {
                    _ = tokio::time::sleep(wall) => continue,
                    _ = stopped(&mut stop) => return,
                }
            }
        };
        if !forward(&tx, link, &mut stop).await {
            return;
        }
    }
}

/// Hands `link` to the daemon; false when the daemon is gone. While stopping the daemon no
/// longer reads, so nothing is handed over (and a full channel never holds the task up).
async fn forward(tx: &mpsc::Sender<Link>, link: Link, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        sent = tx.send(link) => sent.is_ok(),
        _ = stopped(stop) => true,
    }
}

/// Resolves once `stop` is true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
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
