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

/// Why the connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MqttSetupError {
    #[error("broker.url {0:?}: expected mqtt://host:port or mqtts://host:port")]
    Url(String),
    #[error("broker.ca_file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// `(tls, host, port)` of a broker URL.
pub fn parse_url(url: &str) -> Result<(bool, String, u16), MqttSetupError> {
    let bad = || MqttSetupError::Url(url.to_owned());
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let tls = match scheme {
        "mqtt" => false,
        "mqtts" => true,
        _ => return Err(bad()),
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| bad())?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((tls, host.to_owned(), port))
}

/// rumqttc options for this gateway, with `will` (a sealed `offline` status) as last will.
pub fn options(config: &GatewayConfig, will: Vec<u8>) -> Result<MqttOptions, MqttSetupError> {
    let (tls, host, port) = parse_url(&config.broker.url)?;
    let id = config.identity.gateway.as_str();
    let mut o = MqttOptions::new(id, host, port);
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
    if tls {
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(tls_config(config.broker.ca_file.as_deref())?),
        )));
    }
    Ok(o)
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, MqttSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_err = |reason: String| MqttSetupError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for c in certs {
                roots.add(c).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(MqttSetupError::Tls(
                    "no system CA certificates found; set broker.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_url("mqtts://broker.example").unwrap(),
            (true, "broker.example".into(), 8883)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1883").unwrap(),
            (false, "::1".into(), 1883)
        );
        for bad in ["http://x", "mqtt://:1883", "mqtt://h:99999", "h:1883"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = tls_config(Some(&empty)).unwrap_err().to_string();
        assert!(
            err.contains("ca.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = tls_config(Some(&dir.path().join("missing.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
