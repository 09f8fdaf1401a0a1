//! The cloud's config file (`cloud.toml`): data dir, HTTP listener, broker (embedded or
//! external), ingest limits, admin tokens, LINE channel, logging. Every key is documented in
//! `cloud/examples/cloud.toml`. An unknown key is an error, and every problem is reported with
//! its key. Secrets may come from the environment instead (see the `*_ENV` constants).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use omo_device_config::gateway_config::LogFormat;
use omo_device_config::problems::{parse_document, Format, Problem, Reader, UnknownKeys};
use omo_device_config::Clock;
use serde::{Deserialize, Serialize};

use crate::broker::Mqtt;
use crate::delivery::fcm::FcmSender;
use crate::delivery::line::LineSender;
use crate::delivery::retry::Backoff;
use crate::delivery::webhook::WebhookSender;
use crate::delivery::worker::{Senders, Settings};

mod check;

/// Overrides `mqtt.password` (external broker).
pub const MQTT_PASSWORD_ENV: &str = "OMO_CLOUD_MQTT_PASSWORD";
/// The PostgreSQL password (`data.postgres.password`).
pub const PG_PASSWORD_ENV: &str = "OMO_CLOUD_PG_PASSWORD";
/// Overrides `line.channel_secret`.
pub const LINE_SECRET_ENV: &str = "OMO_CLOUD_LINE_CHANNEL_SECRET";
/// Overrides `app.member_link_secret`.
pub const MEMBER_LINK_SECRET_ENV: &str = "OMO_CLOUD_MEMBER_LINK_SECRET";
/// Adds an operator token given in clear (for a demo or a test; production lists hashes).
pub const ADMIN_TOKEN_ENV: &str = "OMO_CLOUD_ADMIN_TOKEN";
/// Adds a marketer token given in clear (for a demo or a test).
pub const MARKETER_TOKEN_ENV: &str = "OMO_CLOUD_MARKETER_TOKEN";
/// Overrides `line.channel_access_token`.
pub const LINE_TOKEN_ENV: &str = "OMO_CLOUD_LINE_CHANNEL_TOKEN";
/// Overrides `webhook.secret`.
pub const WEBHOOK_SECRET_ENV: &str = "OMO_CLOUD_WEBHOOK_SECRET";

/// The whole `cloud.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudConfig {
    pub data: Data,
    #[serde(default)]
    pub cluster: crate::cluster::ClusterSettings,
    #[serde(default)]
    pub http: Http,
    #[serde(default)]
    pub mqtt: Mqtt,
    #[serde(default)]
    pub ingest: Ingest,
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub line: Line,
    #[serde(default)]
    pub app: App,
    #[serde(default)]
    pub webhook: Webhook,
    #[serde(default)]
    pub delivery: Delivery,
    #[serde(default)]
    pub visits: crate::visits::engine::VisitParams,
    #[serde(default)]
    pub retention: crate::privacy::retention::Retention,
    #[serde(default)]
    pub profiles: crate::profiles::ProfileParams,
    #[serde(default)]
    pub dashboard: Dashboard,
    #[serde(default)]
    pub log: Log,
}

/// The delivery worker's parts, as this configuration sets them.
impl CloudConfig {
    /// The delivery senders this configures (an unreadable FCM key file is an error).
    pub fn delivery_senders(&self) -> anyhow::Result<Senders> {
        let config = self;
        let client = crate::tls::http_client_builder()
            .timeout(Duration::from_secs(config.delivery.request_timeout_s))
            .pool_max_idle_per_host(config.delivery.concurrency)
            .build()?;
        let line = config
            .line
            .channel_access_token
            .as_ref()
            .map(|t| LineSender::new(client.clone(), &config.line.api_base, t));
        let fcm = match &config.app.fcm_service_account_file {
            Some(file) => Some(FcmSender::from_file(
                client.clone(),
                &config.app.fcm_base,
                file,
                config.app.fcm_token_url.as_deref(),
            )?),
            None => None,
        };
        let webhook = match (&config.webhook.url, &config.webhook.secret) {
            (Some(url), Some(secret)) => Some(WebhookSender::new(client, url, secret)),
            _ => None,
        };
        Ok(Senders { line, fcm, webhook })
    }

    /// How the delivery worker runs, on `clock`.
    pub fn delivery_settings(&self, clock: &Clock) -> Settings {
        let config = self;
        // The lease covers a request's wall-time limit, expressed on the service clock.
        let timeout = Duration::from_secs(config.delivery.request_timeout_s * 2 + 5);
        let speed = clock.speed().max(1.0);
        Settings {
            concurrency: config.delivery.concurrency,
            batch: config.delivery.batch,
            backoff: Backoff {
                first_ms: config.delivery.first_backoff_ms,
                max_ms: config.delivery.max_backoff_ms,
            },
            rates: [
                config.line.rate_per_s,
                config.app.push_rate_per_s,
                config.webhook.rate_per_s,
            ],
            lease_ms: (timeout.as_secs_f64() * 1000.0 * speed) as i64,
            counter_shard: (config.data.engine == Engine::Postgres)
                .then(|| crate::cluster::counter_shard(&config.cluster.instance_name())),
        }
    }
}

/// The operator dashboard (`GET /`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dashboard {
    /// IANA time zone of the overview's "today" (stores' own pages use the store's zone).
    pub time_zone: String,
    /// How long a login lasts, hours.
    pub session_hours: u32,
    /// The store map's basemap: a tile URL template (`https://…/{z}/{x}/{y}.png`) the
    /// reader's browser loads tiles from. None: the map draws to scale on a blank ground.
    #[serde(default)]
    pub tile_url: Option<String>,
    /// The basemap's attribution, shown on the map (its provider's terms usually ask for it).
    #[serde(default)]
    pub tile_attribution: Option<String>,
}

impl Default for Dashboard {
    fn default() -> Dashboard {
        Dashboard {
            time_zone: "UTC".into(),
            session_hours: 12,
            tile_url: None,
            tile_attribution: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Data {
    /// Which engine holds the state: sled in `dir` (one process, the default) or PostgreSQL.
    #[serde(default)]
    pub engine: Engine,
    /// The sled store's directory (one process at a time); required with sled.
    #[serde(default)]
    pub dir: PathBuf,
    /// sled page cache, MiB.
    #[serde(default = "default_cache_mb")]
    pub cache_mb: u32,
    /// The PostgreSQL engine's database; required with `engine = "postgres"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<crate::store::postgres::Settings>,
}

/// `data.engine`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    #[default]
    Sled,
    Postgres,
}

fn default_cache_mb() -> u32 {
    256
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Http {
    pub listen: SocketAddr,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
}

impl Default for Http {
    fn default() -> Http {
        Http {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 256 * 1024,
        }
    }
}

/// What ingest accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Ingest {
    /// Events stamped further than this ahead of the cloud's clock are rejected.
    pub max_future_s: u64,
    /// Events older than this are rejected (longer than any gateway outbox keeps them).
    pub max_age_s: u64,
    /// Messages stored per flush at most (group commit).
    pub max_group: usize,
    /// Largest clock offset (seconds) believed from one unsynchronised gateway heartbeat.
    pub max_clock_offset_s: u64,
}

impl Default for Ingest {
    fn default() -> Ingest {
        Ingest {
            max_future_s: 300,
            max_age_s: 8 * 86_400,
            max_group: 256,
            max_clock_offset_s: 86_400,
        }
    }
}

/// Who may use the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Admin {
    pub tokens: Vec<AdminToken>,
}

/// One admin bearer token, stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdminToken {
    /// Who holds it (shown in logs).
    pub name: String,
    pub role: Role,
    /// Lower-case hex SHA-256 of the token.
    pub sha256: String,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Operator,
    /// Campaigns (compose, launch, pause, end) and reports; no customer's identity, no site
    /// or gateway changes.
    Marketer,
    /// Reports only, no personal data.
    Analyst,
}

/// The brand's LINE channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Line {
    /// Checks `X-Line-Signature` on webhooks; without it the webhook answers 503.
    pub channel_secret: Option<String>,
    /// The Messaging API's base URL (a fake server's in tests and the demo).
    pub api_base: String,
    /// Bearer token for push; without it nothing is sent on LINE (deliveries wait).
    pub channel_access_token: Option<String>,
    /// Push requests per second at most (LINE's limit is 2,000/s).
    pub rate_per_s: u32,
}

impl Default for Line {
    fn default() -> Line {
        Line {
            channel_secret: None,
            api_base: "https://api.line.me".into(),
            channel_access_token: None,
            rate_per_s: 2000,
        }
    }
}

/// The brand app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct App {
    /// Shared with the brand's backend, which proves an install's `member_id` with
    /// `member_sig` = hex HMAC-SHA256(secret, member_id). Without it, installs cannot claim a
    /// member id (anyone could take over a member's customer).
    pub member_link_secret: Option<String>,
    /// FCM HTTP v1 base URL.
    pub fcm_base: String,
    /// The Firebase service-account key (JSON with `project_id`, `client_email`,
    /// `private_key`, `token_uri`); without it nothing is sent as app push (deliveries wait).
    pub fcm_service_account_file: Option<PathBuf>,
    /// Overrides the key file's `token_uri` (where the signed JWT is exchanged for a bearer).
    pub fcm_token_url: Option<String>,
    /// Push requests per second at most.
    pub push_rate_per_s: u32,
    /// Where a phone that scanned a store's QR poster is sent (the brand's link into its app;
    /// `?code=…` is added). Without it, `/q/{code}` shows a page asking to scan in the app.
    pub checkin_url: Option<String>,
}

impl Default for App {
    fn default() -> App {
        App {
            member_link_secret: None,
            fcm_base: "https://fcm.googleapis.com".into(),
            fcm_service_account_file: None,
            fcm_token_url: None,
            push_rate_per_s: 1000,
            checkin_url: None,
        }
    }
}

/// The brand's own endpoint for offers it delivers itself (the generic webhook channel).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Webhook {
    /// Where offers are POSTed; without it nothing is sent on this channel (deliveries wait).
    pub url: Option<String>,
    /// Signs each body: `X-Omo-Signature: sha256=<hex HMAC-SHA256(secret, body)>`.
    pub secret: Option<String>,
    /// Requests per second at most.
    pub rate_per_s: u32,
}

impl Default for Webhook {
    fn default() -> Webhook {
        Webhook {
            url: None,
            secret: None,
            rate_per_s: 200,
        }
    }
}

/// How deliveries are sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Delivery {
    /// Requests in flight at most, per channel.
    pub concurrency: usize,
    /// Deliveries taken per round (each round: one commit before sending, one after).
    pub batch: usize,
    /// One request's time limit, seconds (wall time).
    pub request_timeout_s: u64,
    /// First retry delay, milliseconds; doubles per attempt (with jitter) up to `max_backoff_ms`.
    pub first_backoff_ms: i64,
    pub max_backoff_ms: i64,
    /// This service's public base URL (`https://offers.example.com`): an offer's `{link}` is
    /// `{link_base}/r/{token}`. Without it, templates cannot name `{link}`.
    pub link_base: Option<String>,
}

impl Default for Delivery {
    fn default() -> Delivery {
        Delivery {
            concurrency: 64,
            batch: 500,
            request_timeout_s: 10,
            first_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            link_base: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

impl Default for Log {
    fn default() -> Log {
        Log {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

impl CloudConfig {
    pub const SECTIONS: [&'static str; 15] = [
        "data",
        "cluster",
        "http",
        "mqtt",
        "ingest",
        "admin",
        "line",
        "app",
        "webhook",
        "delivery",
        "visits",
        "retention",
        "profiles",
        "dashboard",
        "log",
    ];

    /// Parses and validates `cloud.toml` text with secrets from `env`; every problem, by key.
    pub fn from_toml(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<CloudConfig, Vec<Problem>> {
        let doc = parse_document(text, Format::Toml).map_err(|p| vec![p])?;
        let mut r = Reader::new(UnknownKeys::Errors);
        r.top_level(&doc, &Self::SECTIONS);
        let data = r.required::<Data>(&doc, "data");
        let cluster = r.optional::<crate::cluster::ClusterSettings>(&doc, "cluster");
        let http = r.optional::<Http>(&doc, "http");
        let mqtt = r.optional::<Mqtt>(&doc, "mqtt");
        let ingest = r.optional::<Ingest>(&doc, "ingest");
        let admin = r.optional::<Admin>(&doc, "admin");
        let line = r.optional::<Line>(&doc, "line");
        let app = r.optional::<App>(&doc, "app");
        let webhook = r.optional::<Webhook>(&doc, "webhook");
        let delivery = r.optional::<Delivery>(&doc, "delivery");
        let visits = r.optional::<crate::visits::engine::VisitParams>(&doc, "visits");
        let retention = r.optional::<crate::privacy::retention::Retention>(&doc, "retention");
        let profiles = r.optional::<crate::profiles::ProfileParams>(&doc, "profiles");
        let dashboard = r.optional::<Dashboard>(&doc, "dashboard");
        let log = r.optional::<Log>(&doc, "log");
        let mut problems = r.problems;
        let (
            Some(data),
            Some(cluster),
            Some(http),
            Some(mqtt),
            Some(ingest),
            Some(admin),
            Some(line),
            Some(app),
            Some(webhook),
            Some(delivery),
            Some(visits),
            Some(retention),
            Some(profiles),
            Some(dashboard),
            Some(log),
        ) = (
            data, cluster, http, mqtt, ingest, admin, line, app, webhook, delivery, visits,
            retention, profiles, dashboard, log,
        )
        else {
            return Err(problems);
        };
        let mut config = CloudConfig {
            data,
            cluster,
            http,
            mqtt,
            ingest,
            admin,
            line,
            app,
            webhook,
            delivery,
            visits,
            retention,
            profiles,
            dashboard,
            log,
        };
        config.take_secrets(env);
        problems.extend(config.check());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    /// The secrets the environment holds, over what the file says (an admin token from the
    /// environment is one more operator token).
    fn take_secrets(&mut self, env: impl Fn(&str) -> Option<String>) {
        if let Some(pw) = env(MQTT_PASSWORD_ENV) {
            self.mqtt.password = Some(pw);
        }
        if let (Some(pw), Some(pg)) = (env(PG_PASSWORD_ENV), self.data.postgres.as_mut()) {
            pg.password = Some(pw);
        }
        for (var, role) in [
            (ADMIN_TOKEN_ENV, Role::Operator),
            (MARKETER_TOKEN_ENV, Role::Marketer),
        ] {
            if let Some(token) = env(var) {
                self.admin.tokens.push(AdminToken {
                    name: var.into(),
                    role,
                    sha256: crate::secrets::sha256_hex(token.as_bytes()),
                });
            }
        }
        if let Some(secret) = env(LINE_SECRET_ENV) {
            self.line.channel_secret = Some(secret);
        }
        if let Some(token) = env(LINE_TOKEN_ENV) {
            self.line.channel_access_token = Some(token);
        }
        if let Some(secret) = env(MEMBER_LINK_SECRET_ENV) {
            self.app.member_link_secret = Some(secret);
        }
        if let Some(secret) = env(WEBHOOK_SECRET_ENV) {
            self.webhook.secret = Some(secret);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_example_is_valid_and_documents_every_key() {
        let text = include_str!("../examples/cloud.toml");
        let config = CloudConfig::from_toml(text, no_env).unwrap();
        assert_eq!(config.mqtt.url, None);
        // Every assignment in the example has a comment line right above it.
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let l = line.trim();
            if l.contains(" = ") && !l.starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].trim().starts_with('#'),
                    "line {} ({l}) has no comment above it",
                    i + 1
                );
            }
        }
        for section in CloudConfig::SECTIONS {
            assert!(
                text.contains(&format!("[{section}]")) || text.contains(&format!("[[{section}.")),
                "example lacks [{section}]"
            );
        }
    }

    #[test]
    fn every_problem_is_named_by_key() {
        let text = r#"
            typo = 1
            [data]
            dir = "d"
            cache_mb = 0
            [mqtt]
            url = "http://x"
            share_group = "a/b"
            [ingest]
            max_group = 0
            max_future_s = "soon"
            [[admin.tokens]]
            name = "ops"
            role = "root"
            sha256 = "ab"
        "#;
        let problems = CloudConfig::from_toml(text, no_env).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"typo"), "{problems:?}");
        assert!(keys.contains(&"ingest.max_future_s"), "{problems:?}");
        assert!(
            keys.iter().any(|k| k.starts_with("admin.tokens[0]")),
            "{problems:?}"
        );
        // Sections that read cleanly are still checked once the others are fixed.
        let text = "[data]\ndir = \"d\"\ncache_mb = 0\n[mqtt]\nurl = \"http://x\"\nshare_group = \"a/b\"\n[ingest]\nmax_group = 0\n";
        let problems = CloudConfig::from_toml(text, no_env).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "data.cache_mb",
                "mqtt.url",
                "mqtt.share_group",
                "ingest.max_group"
            ]
        );
    }

    #[test]
    fn secrets_come_from_the_environment() {
        let env = |k: &str| match k {
            MQTT_PASSWORD_ENV => Some("pw".to_owned()),
            ADMIN_TOKEN_ENV => Some("tok".to_owned()),
            LINE_SECRET_ENV => Some("line".to_owned()),
            _ => None,
        };
        let c = CloudConfig::from_toml("[data]\ndir = \"d\"\n", env).unwrap();
        assert_eq!(c.mqtt.password.as_deref(), Some("pw"));
        assert_eq!(c.line.channel_secret.as_deref(), Some("line"));
        assert_eq!(c.admin.tokens.len(), 1);
        assert_eq!(c.admin.tokens[0].role, Role::Operator);
        assert_eq!(c.admin.tokens[0].sha256, crate::secrets::sha256_hex(b"tok"));
    }

    #[test]
    fn the_engine_and_its_database_are_checked_by_key() {
        let keys = |text: &str| -> Vec<String> {
            match CloudConfig::from_toml(text, no_env) {
                Ok(_) => Vec::new(),
                Err(p) => p.iter().map(|p| p.to_string()).collect(),
            }
        };
        assert!(keys("[data]\n").iter().any(|p| p.contains("data.dir")));
        let no_db = keys("[data]\nengine = \"postgres\"\n");
        assert!(
            no_db.iter().any(|p| p.contains("data.postgres")),
            "{no_db:?}"
        );
        let bad =
            keys("[data]\nengine = \"postgres\"\n[data.postgres]\nurl = \"\"\npool_size = 0\n");
        assert!(
            bad.iter().any(|p| p.contains("data.postgres.url")),
            "{bad:?}"
        );
        assert!(
            bad.iter().any(|p| p.contains("data.postgres.pool_size")),
            "{bad:?}"
        );
        let typo = keys(
            "[data]\nengine = \"postgres\"\n[data.postgres]\nurl = \"postgres://h/db\"\npool = 3\n",
        );
        assert!(
            typo.iter().any(|p| p.contains("data.postgres.pool")),
            "{typo:?}"
        );
        let engine = keys("[data]\ndir = \"d\"\nengine = \"mysql\"\n");
        assert!(
            engine.iter().any(|p| p.contains("data.engine")),
            "{engine:?}"
        );

        let env = |k: &str| (k == PG_PASSWORD_ENV).then(|| "pgpw".to_owned());
        let c = CloudConfig::from_toml(
            "[data]\nengine = \"postgres\"\n[data.postgres]\nurl = \"postgres://omo@db1,db2/omo?target_session_attrs=read-write\"\n",
            env,
        )
        .unwrap();
        let pg = c.data.postgres.as_ref().unwrap();
        assert_eq!(c.data.engine, Engine::Postgres);
        assert_eq!(pg.password.as_deref(), Some("pgpw"));
        assert_eq!(pg.pool_size, 8);
    }
}
