//! Broker connection settings shared by every MQTT client in the system (gateway and cloud):
//! the `mqtt://` / `mqtts://` URL form and the rustls client set-up (ring provider, a CA file or
//! the system roots). The clients themselves live in their binaries.

/// Why a broker connection could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BrokerSetupError {
    #[error("{key} {url:?}: expected mqtt://host:port or mqtts://host:port")]
    Url { key: String, url: String },
    #[error("{key} {path}: {reason}")]
    CaFile {
        key: String,
        path: String,
        reason: String,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    /// Parses `url`; `key` names the config key in errors.
    pub fn parse(url: &str, key: &str) -> Result<BrokerUrl, BrokerSetupError> {
        let bad = || BrokerSetupError::Url {
            key: key.to_owned(),
            url: url.to_owned(),
        };
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
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

/// A rustls client config on the ring provider that trusts the CA in `ca_file` (PEM), or the
/// system roots when there is none. `key` names the config key in errors.
#[cfg(feature = "mqtt-tls")]
pub fn tls_client_config(
    ca_file: Option<&std::path::Path>,
    key: &str,
) -> Result<rustls::ClientConfig, BrokerSetupError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let ca_err = |reason: String| BrokerSetupError::CaFile {
                key: key.to_owned(),
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
                // A system root rustls cannot read is skipped, as every TLS client does.
                let _ = roots.add(c);
            }
            if roots.is_empty() {
                return Err(BrokerSetupError::Tls(format!(
                    "no system CA certificates found; set {key}"
                )));
            }
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BrokerSetupError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let parse = |u| BrokerUrl::parse(u, "broker.url").map(|b| (b.tls, b.host, b.port));
        assert_eq!(
            parse("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse("mqtts://broker.example").unwrap(),
            (true, "broker.example".into(), 8883)
        );
        assert_eq!(
            parse("mqtt://[::1]:1883").unwrap(),
            (false, "::1".into(), 1883)
        );
        for bad in ["http://x", "mqtt://:1883", "mqtt://h:99999", "h:1883"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("broker.url"), "{err}");
        }
    }

    #[cfg(feature = "mqtt-tls")]
    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate").unwrap();
        let err = tls_client_config(Some(&empty), "broker.ca_file")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ca.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = tls_client_config(Some(&dir.path().join("missing.pem")), "broker.ca_file")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.pem"), "{err}");
    }
}
