//! `[data.postgres]`: where the database is and how to talk to it, checked by key; the URL
//! shown in logs without its password.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// `[data.postgres]` in `cloud.toml`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// A libpq-style URL: `postgres://user@host1:5432,host2:5432/omo?target_session_attrs=read-write`
    /// (several hosts and `target_session_attrs=read-write` follow a failover).
    pub url: String,
    /// Connections kept open at most.
    pub pool_size: usize,
    /// Longest a statement may run, milliseconds (0: no limit).
    pub statement_timeout_ms: u64,
    /// Longest a connection attempt may take, milliseconds.
    pub connect_timeout_ms: u64,
    /// The password (better: `OMO_CLOUD_PG_PASSWORD`); a password in the URL is used otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// With `sslmode=require` in the URL: the CA certificates (PEM) the server's certificate
    /// must chain to (else the system's roots).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            url: String::new(),
            pool_size: 8,
            statement_timeout_ms: 10_000,
            connect_timeout_ms: 5_000,
            password: None,
            ca_file: None,
        }
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url_for_logs())
            .field("pool_size", &self.pool_size)
            .field("statement_timeout_ms", &self.statement_timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Settings {
    /// What is wrong with these settings, as (key under `data.postgres`, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.url.trim().is_empty() {
            out.push((
                "url",
                "must be set when data.engine is \"postgres\"".to_owned(),
            ));
        } else {
            match self.url.parse::<tokio_postgres::Config>() {
                Err(e) => out.push(("url", format!("is not a PostgreSQL URL: {e}"))),
                Ok(c) if !requires_tls(&c) => {
                    if self.ca_file.is_some() {
                        out.push((
                            "ca_file",
                            "is set but the URL does not ask for sslmode=require".to_owned(),
                        ));
                    }
                }
                Ok(c) => {
                    let hosts = c.get_hosts();
                    let socket = |h: &tokio_postgres::config::Host| {
                        matches!(h, tokio_postgres::config::Host::Unix(_))
                    };
                    if hosts.is_empty() || hosts.iter().any(socket) {
                        out.push((
                            "url",
                            "asks for sslmode=require: name each host by its DNS name or \
                             address (the certificate is checked for it), not a unix socket"
                                .to_owned(),
                        ));
                    }
                }
            }
        }
        if !(1..=1024).contains(&self.pool_size) {
            out.push(("pool_size", "must be within 1..=1024".to_owned()));
        }
        if self.connect_timeout_ms == 0 {
            out.push(("connect_timeout_ms", "must be at least 1".to_owned()));
        }
        out
    }

    /// The URL as parsed, without its password or options, for logs: user, hosts and ports,
    /// database and `target_session_attrs`.
    pub fn url_for_logs(&self) -> String {
        let Ok(c) = self.url.parse::<tokio_postgres::Config>() else {
            return "(a URL that does not parse)".into();
        };
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let host = match h {
                    tokio_postgres::config::Host::Tcp(name) => name.clone(),
                    tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
                };
                match ports.get(i).or(ports.first()) {
                    Some(p) => format!("{host}:{p}"),
                    None => host,
                }
            })
            .collect();
        let attrs = match c.get_target_session_attrs() {
            tokio_postgres::config::TargetSessionAttrs::ReadWrite => {
                "?target_session_attrs=read-write"
            }
            _ => "",
        };
        format!(
            "postgres://{}@{}/{}{attrs}",
            c.get_user().unwrap_or(""),
            hosts.join(","),
            c.get_dbname().unwrap_or("")
        )
    }

    pub(super) fn client_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut config: tokio_postgres::Config = self
            .url
            .parse()
            .map_err(|e| StoreError::backend("data.postgres.url", e))?;
        if let Some(pw) = &self.password {
            config.password(pw);
        }
        if config.get_application_name().is_none() {
            config.application_name("omo-cloud");
        }
        config.connect_timeout(Duration::from_millis(self.connect_timeout_ms));
        // A connection whose server went silent is found out in about a minute, not hours.
        config.keepalives_idle(Duration::from_secs(30));
        let timeout = format!("-c statement_timeout={}", self.statement_timeout_ms);
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {timeout}"),
            _ => timeout,
        };
        config.options(&options);
        Ok(config)
    }
}

/// Whether `config` asks for TLS (`sslmode=require`; any other mode is plain TCP).
pub(super) fn requires_tls(config: &tokio_postgres::Config) -> bool {
    config.get_ssl_mode() == tokio_postgres::config::SslMode::Require
}
