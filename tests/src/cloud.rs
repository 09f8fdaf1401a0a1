//! The real `omo-cloud` under test: a data dir, a site with provisioned gateways imported by
//! `omo-cloud import`, a config on free ports, the process (with its failpoints compiled
//! in), an HTTP client for its API, and MQTT clients that act as gateways would.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use omo_device_config::broker_auth::PasswordHash;
use omo_device_config::StoreId;
use serde_json::Value;

use crate::{binary, free_port, wait_for_port, Process};

pub use omo_sim::mqtt_gateway::{Creds, MqttGateway};

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const ANALYST_TOKEN: &str = "analyst-token-for-tests";
pub const MARKETER_TOKEN: &str = "marketer-token-for-tests";
pub const MEMBER_SECRET: &str = "member-link-secret-for-tests";
pub const LINE_SECRET: &str = "line-channel-secret-for-tests";

/// Path of the cloud binary, with its failpoints compiled in (this crate switches them on).
pub fn cloud_binary() -> anyhow::Result<PathBuf> {
    binary("omo-cloud", "omo-cloud")
}

/// An external broker for the cloud: URL and the cloud's credentials.
#[derive(Debug, Clone)]
pub struct External {
    pub url: String,
    pub username: String,
    pub password: String,
    /// One of several instances: its client id and the shared subscription's group.
    pub shared: Option<(String, String)>,
}

pub struct CloudUnderTest {
    pub dir: tempfile::TempDir,
    pub http_port: u16,
    pub mqtt_port: u16,
    pub gateways: Vec<Creds>,
    pub clock: String,
    /// The clock's start, and the wall time it started at.
    start: String,
    origin: String,
    speed: u32,
    pub external: Option<External>,
    pub process: Option<Process>,
    /// The PostgreSQL database (URL, password) the cloud keeps its state in, instead of the
    /// sled dir (see [`CloudUnderTest::use_postgres`]).
    postgres: Option<(String, String)>,
    /// What the processes before the current one logged.
    past_logs: String,
    /// Where deliveries go (see [`CloudUnderTest::set_outbound`]).
    outbound: Outbound,
    http: reqwest::Client,
}

/// The cloud's outbound endpoints and delivery settings, as config lines.
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    /// Lines added to `[line]` (`api_base`, `channel_access_token`, …).
    pub line: String,
    /// Lines added to `[app]` (`fcm_base`, `fcm_service_account_file`, …).
    pub app: String,
    /// Whole sections appended (`[webhook]`, `[delivery]`).
    pub sections: String,
}

impl CloudUnderTest {
    /// A data dir with a site of one store per distinct store id and the given gateways
    /// (imported with `omo-cloud import`), and a config on free ports.
    pub fn new(gateways: Vec<Creds>, external: Option<External>) -> anyhow::Result<CloudUnderTest> {
        CloudUnderTest::with_site(gateways, external, "", 1)
    }

    /// Like [`CloudUnderTest::new`], with `extra_site` TOML (zones, beacons) appended to the
    /// site, and a clock running at `speed`.
    pub fn with_site(
        gateways: Vec<Creds>,
        external: Option<External>,
        extra_site: &str,
        speed: u32,
    ) -> anyhow::Result<CloudUnderTest> {
        let mut cloud = CloudUnderTest::empty(gateways, external)?;
        cloud.speed = speed;
        cloud.clock = format!("{}@{speed}@{}", cloud.origin, cloud.origin);
        std::fs::write(
            cloud.dir.path().join("site.toml"),
            cloud.site_toml() + extra_site,
        )?;
        cloud.import_site()?;
        Ok(cloud)
    }

    /// Like [`CloudUnderTest::new`], its state in the (empty) PostgreSQL database at `url`.
    pub fn on_postgres(
        gateways: Vec<Creds>,
        url: &str,
        password: &str,
    ) -> anyhow::Result<CloudUnderTest> {
        let mut cloud = CloudUnderTest::empty(gateways, None)?;
        cloud.use_postgres(url, password)?;
        cloud.import_site()?;
        Ok(cloud)
    }

    /// Like [`CloudUnderTest::new`] but with nothing in the data dir (the site file is
    /// written, not imported): for a restore.
    pub fn empty(
        gateways: Vec<Creds>,
        external: Option<External>,
    ) -> anyhow::Result<CloudUnderTest> {
        let dir = tempfile::tempdir()?;
        let origin = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let cloud = CloudUnderTest {
            dir,
            http_port: free_port()?,
            mqtt_port: free_port()?,
            gateways,
            clock: format!("{origin}@1"),
            start: origin.clone(),
            origin: origin.clone(),
            speed: 1,
            external,
            process: None,
            postgres: None,
            past_logs: String::new(),
            outbound: Outbound::default(),
            http: omo_cloud::tls::http_client_builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        cloud.write_config()?;
        std::fs::write(cloud.dir.path().join("site.toml"), cloud.site_toml())?;
        Ok(cloud)
    }

    /// Runs the cloud on `--clock START@SPEED@ORIGIN` (shared with gateways started with the
    /// same value); takes effect at the next start.
    pub fn share_clock(&mut self, start: &str, speed: u32, origin: &str) {
        self.start = start.to_owned();
        self.origin = origin.to_owned();
        self.speed = speed;
        self.clock = format!("{start}@{speed}@{origin}");
    }

    /// The cloud's clock now.
    pub fn clock_now(&self) -> omo_device_config::Timestamp {
        let wall = chrono::Utc::now().timestamp_millis();
        omo_device_config::Timestamp::from_millis(self.clock_at(wall as u64)).expect("a time")
    }

    /// The cloud's clock at a wall time (Unix ms), in ms.
    pub fn clock_at(&self, wall_ms: u64) -> i64 {
        let ms = |t: &str| {
            t.parse::<chrono::DateTime<chrono::Utc>>()
                .expect("an RFC 3339 time")
                .timestamp_millis()
        };
        let wall = wall_ms as i64 - ms(&self.origin);
        ms(&self.start) + wall * i64::from(self.speed)
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    pub fn site_toml(&self) -> String {
        let mut stores: Vec<&StoreId> = self.gateways.iter().map(|g| &g.store).collect();
        stores.sort();
        stores.dedup();
        let mut t = String::new();
        for (i, s) in stores.iter().enumerate() {
            t += &format!(
                "[[stores]]\nid = \"{s}\"\nname = \"Store {s}\"\ntime_zone = \"Asia/Tokyo\"\nlocation = {{ lat = 35.6{i}, lon = 139.7 }}\n\n"
            );
        }
        for g in &self.gateways {
            t += &format!(
                "[[gateways]]\nid = \"{}\"\nstore = \"{}\"\npassword_hash = \"{}\"\nsigning_key = \"{}\"\n\n",
                g.gateway,
                g.store,
                PasswordHash::new(&g.password),
                g.key.to_hex()
            );
        }
        t
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let mqtt = match &self.external {
            None => format!("listen = \"127.0.0.1:{}\"", self.mqtt_port),
            Some(e) => {
                let (client, group) = e
                    .shared
                    .clone()
                    .unwrap_or_else(|| ("omo-cloud-test".into(), String::new()));
                format!(
                    "url = \"{}\"\nclient_id = \"{client}\"\nshare_group = \"{group}\"\nusername = \"{}\"\npassword = \"{}\"",
                    e.url, e.username, e.password
                )
            }
        };
        let data = match &self.postgres {
            None => format!(
                "dir = {:?}",
                self.dir.path().join("data").display().to_string()
            ),
            Some((url, password)) => format!(
                "engine = \"postgres\"\n[data.postgres]\nurl = {url:?}\npassword = {password:?}\npool_size = 4"
            ),
        };
        let text = format!(
            r#"[data]
cache_mb = 16
{data}
[http]
listen = "127.0.0.1:{http}"
[mqtt]
{mqtt}
[admin]
tokens = [{{ name = "tests", role = "operator", sha256 = "{sha}" }}, {{ name = "reports", role = "analyst", sha256 = "{analyst}" }}, {{ name = "campaigns", role = "marketer", sha256 = "{marketer}" }}]
[line]
channel_secret = "{LINE_SECRET}"
{line}
[app]
member_link_secret = "{MEMBER_SECRET}"
{app}
[log]
level = "info,omo_cloud=debug"
{sections}
"#,
            line = self.outbound.line,
            app = self.outbound.app,
            sections = self.outbound.sections,
            http = self.http_port,
            sha = omo_cloud::secrets::sha256_hex(ADMIN_TOKEN.as_bytes()),
            analyst = omo_cloud::secrets::sha256_hex(ANALYST_TOKEN.as_bytes()),
            marketer = omo_cloud::secrets::sha256_hex(MARKETER_TOKEN.as_bytes()),
        );
        std::fs::write(self.dir.path().join("cloud.toml"), text)?;
        Ok(())
    }

    /// Keeps the state in the PostgreSQL database at `url` from the next start (rewrites the
    /// config; the sled dir stays where it was).
    pub fn use_postgres(&mut self, url: &str, password: &str) -> anyhow::Result<()> {
        self.postgres = Some((url.to_owned(), password.to_owned()));
        self.write_config()
    }

    /// Sets where deliveries go (rewrites the config; takes effect at the next start).
    pub fn set_outbound(&mut self, outbound: Outbound) -> anyhow::Result<()> {
        self.outbound = outbound;
        self.write_config()
    }

    /// Starts `omo-cloud run` with extra environment (`FAILPOINTS`, say) and waits until it
    /// serves HTTP.
    pub fn start_with_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.spawn_with_env(env)?;
        // The embedded broker listens from its own thread: wait for it too.
        let mut ports = vec![self.http_port];
        if self.external.is_none() {
            ports.push(self.mqtt_port);
        }
        for port in ports {
            if let Err(e) = wait_for_port(port, Duration::from_secs(30)) {
                bail!("{e}; cloud log:\n{}", self.log());
            }
        }
        Ok(())
    }

    pub fn start(&mut self) -> anyhow::Result<()> {
        self.start_with_env(&[])
    }

    /// Starts the cloud without waiting for its ports: for a start expected to crash at a
    /// failpoint at once (gateways already waiting with a backlog), which may happen before
    /// anything could connect.
    pub fn spawn_with_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        let config = self.path("cloud.toml");
        let process = Process::start(
            &cloud_binary()?,
            &["run", "--config", &config, "--clock", &self.clock],
            env,
        )?;
        if let Some(old) = self.process.replace(process) {
            self.past_logs += &old.log_text();
        }
        Ok(())
    }

    /// What every process of this cloud has logged, oldest first.
    pub fn log(&self) -> String {
        let current = self
            .process
            .as_ref()
            .map(Process::log_text)
            .unwrap_or_default();
        format!("{}{current}", self.past_logs)
    }

    pub fn process(&mut self) -> &mut Process {
        self.process.as_mut().expect("the cloud was started")
    }

    /// Imports its `site.toml` into its data (`omo-cloud import`).
    pub fn import_site(&self) -> anyhow::Result<()> {
        self.command(&[
            "import",
            &self.path("site.toml"),
            "--config",
            &self.path("cloud.toml"),
        ])
        .map(drop)
    }

    /// Runs an `omo-cloud` subcommand to completion; its stdout, or an error with its stderr.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = std::process::Command::new(cloud_binary()?)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "omo-cloud {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops the cloud with SIGTERM.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.terminate(Duration::from_secs(20))?;
            self.past_logs += &p.log_text();
        }
        Ok(())
    }

    /// One API call; the status and the JSON body (Null when it is not JSON).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let url = format!("http://127.0.0.1:{}{path}", self.http_port);
        omo_sim::procs::call_json(&self.http, method, &url, body.as_ref(), auth).await
    }

    /// A raw POST with headers (webhooks).
    pub async fn post_raw(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("http://127.0.0.1:{}{path}", self.http_port))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// Enrols a customer through the admin API (`body` as `POST /v1/admin/customers` takes
    /// it); answers the customer document, or fails unless it was created.
    pub async fn add_customer(&self, body: Value) -> anyhow::Result<Value> {
        let (status, c) = self
            .call(
                reqwest::Method::POST,
                "/v1/admin/customers",
                Some(body),
                Some(ADMIN_TOKEN),
            )
            .await?;
        if status != 201 {
            bail!("POST /v1/admin/customers: {status} {c}");
        }
        Ok(c)
    }

    /// Puts campaign `id` through the admin API (`body` as `PUT /v1/admin/campaigns/{id}`
    /// takes it); fails unless it was created.
    pub async fn put_campaign(&self, id: &str, body: Value) -> anyhow::Result<()> {
        let path = format!("/v1/admin/campaigns/{id}");
        let (status, answer) = self
            .call(reqwest::Method::PUT, &path, Some(body), Some(ADMIN_TOKEN))
            .await?;
        if status != 201 {
            bail!("PUT {path}: {status} {answer}");
        }
        Ok(())
    }

    /// An admin GET.
    pub async fn admin(&self, path: &str) -> anyhow::Result<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, path, None, Some(ADMIN_TOKEN))
            .await?;
        if status != 200 {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// The Prometheus text at /metrics.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(self.get_text("/metrics", None).await?.1)
    }

    /// GET `path` as text (CSV, metrics), with a bearer token if given.
    pub async fn get_text(&self, path: &str, auth: Option<&str>) -> anyhow::Result<(u16, String)> {
        let mut req = self
            .http
            .get(format!("http://127.0.0.1:{}{path}", self.http_port));
        if let Some(token) = auth {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("calling {path}"))?;
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    /// An install registration body for a member, with the brand backend's proof and the
    /// customer's consent to location tracking given in the app.
    pub fn install_for_member(platform: &str, member: &str) -> Value {
        serde_json::json!({
            "platform": platform,
            "member_id": member,
            "member_sig": omo_cloud::secrets::hmac_hex(MEMBER_SECRET.as_bytes(), member.as_bytes()),
            "consent": {"location": true, "text_version": "tests-1"},
        })
    }

    /// Waits (up to 15 s) until the stats stage has counted exactly `n` events of `gateway`.
    pub async fn wait_stored(&self, gateway: &str, n: u64) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let got = self.stored_events(gateway).await?;
            if got == n {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{gateway}: {got} events stored, expected {n}\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Gateway events the stats stage has counted for `gateway` (enter+stay+exit+footfall).
    pub async fn stored_events(&self, gateway: &str) -> anyhow::Result<u64> {
        let g = self.admin(&format!("/v1/admin/gateways/{gateway}")).await?;
        let i = &g["ingest"];
        Ok(["enter", "stay", "exit", "footfall"]
            .iter()
            .map(|k| i[k].as_u64().unwrap_or(0))
            .sum())
    }
}

/// Sightings of one beacon with `seqs`, stamped now, each made an event by `kind`
/// (`PresenceEvent::Enter`, `PresenceEvent::Stay`, …).
pub fn sightings(
    seqs: std::ops::RangeInclusive<u64>,
    kind: fn(omo_device_config::payload::Sighting) -> omo_device_config::payload::PresenceEvent,
) -> Vec<omo_device_config::payload::PresenceEvent> {
    let at = omo_device_config::Timestamp::new(chrono::Utc::now());
    seqs.map(|seq| {
        kind(omo_device_config::payload::Sighting {
            seq,
            ts: at,
            beacon: "eddystone-eid:0011223344556677"
                .parse()
                .expect("a beacon id"),
            rssi: -70.0,
            distance_m: 4.0,
            seen_s: 0.0,
        })
    })
    .collect()
}

/// The sum of a Prometheus counter's samples whose line contains every `labels` fragment.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| labels.iter().all(|f| l.contains(f)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
