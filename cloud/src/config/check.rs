//! `cloud.toml` checked as a whole, once each section has been read: what one key's value
//! means for another, in the order the example file lists them.

use omo_device_config::broker_url::BrokerUrl;
use omo_device_config::problems::Problem;

use super::{CloudConfig, Engine};

impl CloudConfig {
    pub(super) fn check(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        self.check_inputs(&mut p);
        self.check_delivery(&mut p);
        self.check_stages_and_pages(&mut p);
        p
    }

    /// The engine and where its data lives.
    fn check_data(&self, p: &mut Vec<Problem>) {
        if self.data.cache_mb == 0 {
            p.push(Problem::new("data.cache_mb", "must be at least 1"));
        }
        match (self.data.engine, &self.data.postgres) {
            (Engine::Sled, _) if self.data.dir.as_os_str().is_empty() => p.push(Problem::new(
                "data.dir",
                "must be set: the directory of the sled store (or set data.engine = \"postgres\")",
            )),
            (Engine::Sled, Some(_)) => p.push(Problem::new(
                "data.postgres",
                "is set but data.engine is \"sled\": set data.engine = \"postgres\" to use it",
            )),
            (Engine::Sled, None) => {}
            (Engine::Postgres, None) => p.push(Problem::new(
                "data.postgres",
                "must be set when data.engine is \"postgres\" (its url at least)",
            )),
            (Engine::Postgres, Some(pg)) => {
                for (key, message) in pg.problems() {
                    p.push(Problem::new(format!("data.postgres.{key}"), message));
                }
            }
        }
        for (key, message) in self.cluster.problems() {
            p.push(Problem::new(format!("cluster.{key}"), message));
        }
    }

    /// The data dir, the HTTP server, the broker, ingest, the admin tokens and the secrets.
    fn check_inputs(&self, p: &mut Vec<Problem>) {
        self.check_data(p);
        if self.http.max_body_bytes < 1024 {
            p.push(Problem::new("http.max_body_bytes", "must be at least 1024"));
        }
        if let Some(url) = &self.mqtt.url {
            if let Err(e) = BrokerUrl::parse(url, "mqtt.url") {
                p.push(Problem::new("mqtt.url", e.to_string()));
            }
            if self.mqtt.client_id.is_empty() {
                p.push(Problem::new("mqtt.client_id", "must not be empty"));
            }
        }
        if self.mqtt.share_group.contains(['/', '+', '#']) {
            p.push(Problem::new(
                "mqtt.share_group",
                "must not contain '/', '+' or '#'",
            ));
        }
        if self.ingest.max_group == 0 {
            p.push(Problem::new("ingest.max_group", "must be at least 1"));
        }
        for (i, t) in self.admin.tokens.iter().enumerate() {
            let ok = t.sha256.len() == 64
                && t.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !ok {
                p.push(Problem::new(
                    format!("admin.tokens[{i}].sha256"),
                    "must be 64 lower-case hex digits (sha256sum of the token)",
                ));
            }
        }
        if self
            .app
            .member_link_secret
            .as_ref()
            .is_some_and(|s| s.len() < 16)
        {
            p.push(Problem::new(
                "app.member_link_secret",
                "must be at least 16 characters",
            ));
        }
        if let Some(s) = &self.line.channel_secret {
            if s.is_empty() {
                p.push(Problem::new("line.channel_secret", "must not be empty"));
            }
        }
    }

    /// The senders' addresses, rates and secrets, and the delivery worker's limits.
    fn check_delivery(&self, p: &mut Vec<Problem>) {
        for (key, url) in [
            ("line.api_base", Some(&self.line.api_base)),
            ("app.fcm_base", Some(&self.app.fcm_base)),
            ("app.fcm_token_url", self.app.fcm_token_url.as_ref()),
            ("webhook.url", self.webhook.url.as_ref()),
            ("delivery.link_base", self.delivery.link_base.as_ref()),
            ("app.checkin_url", self.app.checkin_url.as_ref()),
        ] {
            if let Some(url) = url {
                if !(url.starts_with("https://") || url.starts_with("http://"))
                    || url.parse::<axum::http::Uri>().is_err()
                {
                    p.push(Problem::new(key, "must be an http:// or https:// URL"));
                }
            }
        }
        for (key, rate) in [
            ("line.rate_per_s", self.line.rate_per_s),
            ("app.push_rate_per_s", self.app.push_rate_per_s),
            ("webhook.rate_per_s", self.webhook.rate_per_s),
        ] {
            if rate == 0 {
                p.push(Problem::new(key, "must be at least 1"));
            }
        }
        if self.webhook.url.is_some() && self.webhook.secret.as_ref().is_none_or(|s| s.len() < 16) {
            p.push(Problem::new(
                "webhook.secret",
                "a webhook URL needs a secret of at least 16 characters",
            ));
        }
        let d = &self.delivery;
        for (key, bad) in [
            ("delivery.concurrency", d.concurrency == 0),
            ("delivery.batch", d.batch == 0),
            ("delivery.request_timeout_s", d.request_timeout_s == 0),
            ("delivery.first_backoff_ms", d.first_backoff_ms <= 0),
            (
                "delivery.max_backoff_ms",
                d.max_backoff_ms < d.first_backoff_ms,
            ),
        ] {
            if bad {
                p.push(Problem::new(
                    key,
                    "must be positive (and max_backoff_ms at least first_backoff_ms)",
                ));
            }
        }
    }

    /// The visit rules, retention, profiles, the dashboard and the log.
    fn check_stages_and_pages(&self, p: &mut Vec<Problem>) {
        // Gateways without a remote config use the default stay interval; the service checks
        // the stored configs against the same rule when it starts, and a config pushed later
        // must be shorter than both exit_timeout_s and exit_grace_s.
        let default_stay = omo_device_config::params::PresenceParams::default().stay_interval_s;
        for (key, message) in self.visits.problems("visits", default_stay) {
            p.push(Problem::new(key, message));
        }
        for (key, message) in self.retention.problems("retention", self.ingest.max_age_s) {
            p.push(Problem::new(key, message));
        }
        for (key, message) in self.profiles.problems("profiles") {
            p.push(Problem::new(key, message));
        }
        if self.profiles.keep_days > self.retention.visits_days {
            p.push(Problem::new(
                "profiles.keep_days",
                "must be at most retention.visits_days: a profile keeps visits no longer than they are kept",
            ));
        }
        if crate::vocab::time_zone(&self.dashboard.time_zone).is_none() {
            p.push(Problem::new(
                "dashboard.time_zone",
                "not an IANA time zone such as `Asia/Tokyo`",
            ));
        }
        if let Some(url) = &self.dashboard.tile_url {
            let templated = ["{z}", "{x}", "{y}"].iter().all(|p| url.contains(p));
            if !url.starts_with("https://") || !templated {
                p.push(Problem::new(
                    "dashboard.tile_url",
                    "must be an https:// URL with {z}, {x} and {y}",
                ));
            }
        }
        if !(1..=24 * 30).contains(&self.dashboard.session_hours) {
            p.push(Problem::new(
                "dashboard.session_hours",
                "must be within 1..=720",
            ));
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            p.push(Problem::new(
                "log.level",
                "not a tracing filter such as `info`",
            ));
        }
    }
}
