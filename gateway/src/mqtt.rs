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

    /// The stop begins: from now on no connection is made again, whatever the clock's
    /// speed (a connect already under way is finished, so what the daemon queues for its
    /// goodbye still goes out on it). Nothing reaches the daemon any more.
    pub fn stop_reconnecting(&self) {
        let _ = self.stop.send(true);
    }

    /// Ends the connection for a stop. With `goodbye_queued` (the daemon queued its `offline`
    /// status and a DISCONNECT) the task writes them if the link is up, or comes up from a
    /// connect under way, and ends once the DISCONNECT is out; it ends at once while the link
    /// is down. So the broker never sees this gateway connect, or drop a connection it would
    /// publish the last will for, after a clean stop. Waits at most `within` (wall time),
    /// then drops the connection; false if it had to.
    pub async fn close(self, goodbye_queued: bool, within: Duration) -> bool {
        self.stop_reconnecting();
        let mut task = self.task;
        if !goodbye_queued {
            task.abort();
            return true;
        }
        if tokio::time::timeout(within, &mut task).await.is_err() {
            tracing::warn!(
                wait_ms = within.as_millis() as u64,
                "the broker connection did not close in time; dropping it"
            );
            task.abort();
            return false;
        }
        true
    }
}

/// Drives the event loop until `tx` closes; on errors waits ([`ReconnectBackoff::GATEWAY`],
/// on the process clock) before rumqttc reconnects. Once `stop` is true it makes no new
/// connection: it ends at the DISCONNECT, at the first error, in its backoff, or before a
/// connect would begin.
async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Link>,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    // Whether the event loop has a connection (else its next poll connects).
    let mut connected = false;
    loop {
        if !connected && *stop.borrow() {
            return;
        }
        let link = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                failures = 0;
                connected = true;
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

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::AsyncClient;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A broker that drops every connection at once: each connect attempt fails, and the
    /// accepted connections count the attempts.
    fn dropping_broker() -> (u16, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().expect("bound").port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let counted = accepts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                counted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        (port, accepts)
    }

    /// At ×600 the backoff waits its 50 ms floor: the task retries about twenty times a
    /// second, and still makes no attempt once stopped.
    #[tokio::test]
    async fn a_stopped_connection_never_connects_again() {
        let (port, accepts) = dropping_broker();
        let (_client, eventloop) = AsyncClient::new(MqttOptions::new("g1", "127.0.0.1", port), 8);
        let (tx, mut rx) = mpsc::channel(64);
        let clock = Clock::scaled(chrono::Utc::now(), 600.0).expect("a clock");
        let connection = Connection::spawn(eventloop, tx, clock);
        let mut failures = 0;
        while failures < 3 {
            match rx.recv().await {
                Some(Link::Disconnected(_)) => failures += 1,
                Some(other) => panic!("unexpected {other:?}"),
                None => panic!("the task ended"),
            }
        }
        // The link is down: the goodbye cannot go out, and the task ends by itself.
        assert!(connection.close(true, Duration::from_secs(10)).await);
        let attempts = accepts.load(Ordering::SeqCst);
        assert!(attempts >= 3);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            accepts.load(Ordering::SeqCst),
            attempts,
            "connected after the stop"
        );
    }
}
