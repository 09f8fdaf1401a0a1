//! The whole system under test: the real `omo-cloud` (embedded broker, or a real Mosquitto
//! with the provisioned passwords and ACL in front), real `omo-gateway`s replaying store
//! visits, and the simulators' fake LINE and FCM servers, all on one shared `--clock`. Every
//! process and file is cleaned up on drop; every wait is bounded.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use omo_device_config::broker_auth::broker_files;
use omo_gateway::outbox::{Outbox, OutboxLimits};
use omo_sim::fake_fcm::FakeFcm;
use omo_sim::fake_line::FakeLine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::cloud::{CloudUnderTest, Creds, External, Outbound, ADMIN_TOKEN};
use crate::scenario::{
    stopped_at, write_replay, GatewayUnderTest, Visit, CLOUD_PASSWORD, CLOUD_USER, START,
};
use crate::{Broker, BrokerKind, Process};

pub const LINE_TOKEN: &str = "line-channel-access-token-for-tests";

/// The canonical id of the LINE Beacon hwid a replay's carrier `n` transmits.
pub fn carried_beacon(n: u8) -> String {
    let hwid: String = crate::scenario::hwid(n)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("line:{hwid}")
}

/// Site TOML: one gateway zone per (store, gateway), the floor the gateway hears within 15 m.
pub fn gateway_zones(stores: &[(&str, &str)]) -> String {
    stores
        .iter()
        .map(|(store, gw)| {
            format!(
                "[[gateway_zones]]\nid = \"{store}-floor\"\nstore = \"{store}\"\nname = \"Floor\"\ngateways = [\"{gw}\"]\nmax_distance_m = 15.0\n\n"
            )
        })
        .collect()
}

/// Carriers `ns` in the store from `from_s` to `to_s` (clock seconds from replay start).
pub fn visits(ns: impl IntoIterator<Item = u8>, from_s: i64, to_s: i64) -> Vec<Visit> {
    ns.into_iter()
        .map(|beacon| Visit {
            beacon,
            from_s,
            to_s,
        })
        .collect()
}

/// One store gateway of the system: its identity, its replay, its process.
pub struct SystemGateway {
    pub gut: GatewayUnderTest,
    pub replay: PathBuf,
    /// `--clock-skew-s`: how far this gateway's clock is off the shared one.
    pub skew_s: i64,
    pub process: Option<Process>,
    config: PathBuf,
    /// Logs of the processes this gateway ran before the current one.
    past_logs: String,
}

impl SystemGateway {
    pub fn name(&self) -> String {
        self.gut.gateway.to_string()
    }

    /// Starts `omo-gateway run` on the shared clock (and its skew).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let skew = self.skew_s.to_string();
        let process = Process::start(
            &crate::gateway_binary()?,
            &[
                "run",
                "--config",
                &self.config.display().to_string(),
                "--clock",
                &self.gut.clock,
                "--clock-skew-s",
                &skew,
            ],
            &[],
        )?;
        self.process = Some(process);
        Ok(())
    }

    /// Kills the gateway at once (a power cut): no clean stop, nothing more sent.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut p) = self.process.take() {
            p.kill()?;
            self.past_logs += &p.log_text();
        }
        Ok(())
    }

    /// Stops the gateway with SIGTERM; the (epoch, last seq) it logged when it stopped.
    pub fn stop(&mut self) -> anyhow::Result<(String, u64)> {
        let mut p = self.process.take().context("the gateway is not running")?;
        p.terminate(Duration::from_secs(20))?;
        let log = p.log_text();
        self.past_logs += &log;
        stopped_at(&log)
            .with_context(|| format!("the gateway did not log where it stopped:\n{log}"))
    }

    /// Replaces the (stopped) gateway's disk: reads the epoch and last seq its outbox held,
    /// then deletes its data dir, so the next start makes a new outbox and epoch.
    pub fn replace_disk(&mut self) -> anyhow::Result<(String, u64)> {
        ensure!(
            self.process.is_none(),
            "stop the gateway before replacing its disk"
        );
        let dir = self.gut.data_dir();
        let outbox = Outbox::open(
            &dir.join("outbox"),
            OutboxLimits::from_config(&Default::default()),
        )
        .with_context(|| format!("reading the outbox in {}", dir.display()))?;
        let old = (
            outbox.epoch().to_string(),
            outbox.next_seq().saturating_sub(1),
        );
        drop(outbox);
        std::fs::remove_dir_all(&dir)?;
        Ok(old)
    }

    /// Everything this gateway's processes have logged.
    pub fn log(&self) -> String {
        let current = self
            .process
            .as_ref()
            .map(Process::log_text)
            .unwrap_or_default();
        format!("{}{current}", self.past_logs)
    }
}

/// What to build.
pub struct Layout {
    /// (store, gateway, clock skew in seconds, visits to replay) per gateway.
    pub gateways: Vec<(&'static str, &'static str, i64, Vec<Visit>)>,
    /// Site TOML beside the generated stores and gateways (zones, beacons).
    pub site: String,
    /// Mosquitto with the provisioned ACL in front (else the cloud's embedded broker).
    pub mosquitto: bool,
    /// Clock speed.
    pub speed: u32,
}

pub struct System {
    pub cloud: CloudUnderTest,
    pub broker: Option<Broker>,
    pub gateways: Vec<SystemGateway>,
    pub line: FakeLine,
    pub fcm: FakeFcm,
    /// Gateways registered in the cloud that no `omo-gateway` runs as (the test's own
    /// MQTT clients).
    pub extra: Vec<Creds>,
    /// The clock's speed.
    pub speed: u32,
}

impl System {
    /// Writes everything and starts the fakes, the broker and the cloud (not the gateways).
    pub async fn build(layout: Layout) -> anyhow::Result<System> {
        System::build_with_extra_gateways(layout, Vec::new()).await
    }

    /// Like [`System::build`], with `extra` gateways registered for the test's own clients.
    pub async fn build_with_extra_gateways(
        layout: Layout,
        extra: Vec<Creds>,
    ) -> anyhow::Result<System> {
        let any = "127.0.0.1:0".parse()?;
        let line = FakeLine::start(any, LINE_TOKEN).await?;
        let key_file = fcm_key_file();
        let fcm = FakeFcm::start(any, &key_file, 3600).await?;
        let origin = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let clock = format!("{START}@{}@{origin}", layout.speed);
        let mut gateways = Vec::new();
        for (store, gateway, skew_s, visits) in &layout.gateways {
            let mut gut = GatewayUnderTest::new(store, gateway, layout.speed)?;
            gut.clock = clock.clone();
            let replay = gut.dir.path().join("replay.ndjson");
            write_replay(&replay, visits)?;
            gateways.push(SystemGateway {
                gut,
                replay,
                skew_s: *skew_s,
                process: None,
                config: PathBuf::new(),
                past_logs: String::new(),
            });
        }
        let creds: Vec<Creds> = gateways
            .iter()
            .map(|g| Creds {
                store: g.gut.store.clone(),
                gateway: g.gut.gateway.clone(),
                password: g.gut.password.clone(),
                key: g.gut.key.clone(),
            })
            .chain(extra.iter().cloned())
            .collect();
        let broker = if layout.mosquitto {
            let (lines, acl) = broker_files(
                (CLOUD_USER, CLOUD_PASSWORD),
                creds
                    .iter()
                    .map(|c| (&c.store, &c.gateway, c.password.as_str())),
            );
            Some(Broker::start(BrokerKind::Mosquitto, &lines, &acl)?)
        } else {
            None
        };
        let external = broker.as_ref().map(|b| External {
            shared: None,
            url: format!("mqtt://127.0.0.1:{}", b.port),
            username: CLOUD_USER.into(),
            password: CLOUD_PASSWORD.into(),
        });
        let mut cloud = CloudUnderTest::with_site(creds, external, &layout.site, layout.speed)?;
        cloud.share_clock(START, layout.speed, &origin);
        cloud.set_outbound(Outbound {
            line: format!(
                "api_base = \"{}\"\nchannel_access_token = \"{LINE_TOKEN}\"",
                line.base_url()
            ),
            app: format!(
                "fcm_base = \"{}\"\nfcm_service_account_file = {:?}\nfcm_token_url = \"{}\"",
                fcm.base_url(),
                key_file.display().to_string(),
                fcm.token_url()
            ),
            sections: format!(
                "[delivery]\nrequest_timeout_s = 2\nlink_base = \"http://127.0.0.1:{}\"\n",
                cloud.http_port
            ),
        })?;
        let port = broker.as_ref().map_or(cloud.mqtt_port, |b| b.port);
        for g in &mut gateways {
            g.config = g.gut.write_config(port, &g.replay)?;
        }
        cloud.start()?;
        Ok(System {
            cloud,
            broker,
            gateways,
            line,
            fcm,
            extra,
            speed: layout.speed,
        })
    }

    pub fn gateway(&mut self, name: &str) -> &mut SystemGateway {
        self.gateways
            .iter_mut()
            .find(|g| g.gut.gateway.as_str() == name)
            .expect("a gateway of the layout")
    }

    /// Starts every gateway.
    pub fn start_gateways(&mut self) -> anyhow::Result<()> {
        for g in &mut self.gateways {
            g.start()?;
        }
        Ok(())
    }

    /// An admin call that must answer `want`.
    pub async fn admin_call(
        &self,
        method: Method,
        path: &str,
        body: Value,
        want: u16,
    ) -> anyhow::Result<Value> {
        let (status, got) = self
            .cloud
            .call(method.clone(), path, Some(body), Some(ADMIN_TOKEN))
            .await?;
        ensure!(status == want, "{method} {path}: {status} {got}");
        Ok(got)
    }

    /// A campaign firing on store entry, once a day per customer, on `channels`, for `stores`.
    pub async fn welcome_campaign(&self, stores: &[&str], channels: &[&str]) -> anyhow::Result<()> {
        let day = START[..10].parse::<chrono::NaiveDate>()?;
        let campaign = json!({
            "name": "Welcome", "trigger": {"kind": "enter"}, "places": {"stores": stores},
            "schedule": {"from": (day - chrono::Days::new(1)).to_string(), "to": (day + chrono::Days::new(1)).to_string(), "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
            "caps": {"per_customer": 1, "period_days": 1}, "budget": 10000, "offer_ttl_minutes": 600,
            "channels": channels,
            "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome to {store}: {coupon}"}}]
        });
        self.admin_call(Method::PUT, "/v1/admin/campaigns/welcome", campaign, 201)
            .await?;
        Ok(())
    }

    /// Registers a customer carrying `beacon` with a LINE account (LINE consent); its id.
    pub async fn line_customer(
        &self,
        beacon: Option<&str>,
        line_user: &str,
    ) -> anyhow::Result<String> {
        let beacons: Vec<&str> = beacon.into_iter().collect();
        let c = self
            .admin_call(
                Method::POST,
                "/v1/admin/customers",
                json!({"beacons": beacons, "line_user": line_user, "consent": {"line": true, "location": true}}),
                201,
            )
            .await?;
        Ok(c["id"].as_str().context("a customer id")?.to_owned())
    }

    /// Registers an app customer (push consent), carrying `beacon` if given, and its
    /// install; (customer id, install token).
    pub async fn app_customer(
        &self,
        member: &str,
        beacon: Option<&str>,
        push_token: &str,
    ) -> anyhow::Result<(String, String)> {
        let beacons: Vec<&str> = beacon.into_iter().collect();
        let c = self
            .admin_call(
                Method::POST,
                "/v1/admin/customers",
                json!({"member_id": member, "beacons": beacons, "consent": {"push": true, "location": true}}),
                201,
            )
            .await?;
        let mut install = CloudUnderTest::install_for_member("android", member);
        install["push_token"] = json!(push_token);
        let (status, b) = self
            .cloud
            .call(Method::POST, "/v1/app/installs", Some(install), None)
            .await?;
        ensure!(status == 201, "install: {status} {b}");
        Ok((
            c["id"].as_str().context("a customer id")?.to_owned(),
            b["token"].as_str().context("an install token")?.to_owned(),
        ))
    }

    /// Sends a LINE webhook of `events`, signed with the channel secret; must be accepted.
    pub async fn line_webhook(&self, events: Vec<Value>) -> anyhow::Result<()> {
        let body = json!({"destination": "Uomo", "events": events})
            .to_string()
            .into_bytes();
        let sig = omo_cloud::secrets::line_signature(crate::cloud::LINE_SECRET.as_bytes(), &body);
        let (status, r) = self
            .cloud
            .post_raw("/v1/line/webhook", body, &[("x-line-signature", sig)])
            .await?;
        ensure!(status == 200, "webhook: {status} {r}");
        Ok(())
    }

    /// The cloud's epochs of `gateway` (`GET /v1/admin/gateways/{id}`), by epoch.
    pub async fn epochs(&self, gateway: &str) -> anyhow::Result<BTreeMap<String, Value>> {
        let g = self
            .cloud
            .admin(&format!("/v1/admin/gateways/{gateway}"))
            .await?;
        Ok(g["epochs"]
            .as_array()
            .context("epochs")?
            .iter()
            .map(|e| {
                (
                    e["epoch"].as_str().unwrap_or_default().to_owned(),
                    e.clone(),
                )
            })
            .collect())
    }

    /// Checks that the cloud stored (or counted as dropped) every seq 1..=last of `epoch`
    /// and rejected none.
    pub async fn check_epoch_complete(
        &self,
        gateway: &str,
        epoch: &str,
        last: u64,
    ) -> anyhow::Result<()> {
        let epochs = self.epochs(gateway).await?;
        let e = epochs
            .get(epoch)
            .with_context(|| format!("{gateway}: the cloud has no epoch {epoch}: {epochs:?}"))?;
        let want = if last == 0 {
            json!([])
        } else {
            json!([[1, last]])
        };
        ensure!(
            e["stored"] == want && e["rejected"] == json!([]) && e["missing"] == json!(0),
            "{gateway} epoch {epoch}: the gateway wrote seqs 1..={last}, the cloud has {e}"
        );
        Ok(())
    }

    /// Waits until every gateway's outbox is empty: two heartbeats in a row (one could
    /// predate the last events) report it so.
    pub async fn wait_drained(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut first_empty: BTreeMap<String, Value> = BTreeMap::new();
        let mut drained = std::collections::BTreeSet::new();
        loop {
            let mut pending = Vec::new();
            for g in &self.gateways {
                let name = g.name();
                if drained.contains(&name) {
                    continue;
                }
                let v = self
                    .cloud
                    .admin(&format!("/v1/admin/gateways/{name}"))
                    .await?;
                let status = &v["runtime"]["last_status"];
                let empty =
                    v["runtime"]["online"] == json!(true) && status["outbox_depth"] == json!(0);
                match (empty, first_empty.get(&name)) {
                    (true, Some(ts)) if *ts != status["ts"] => {
                        drained.insert(name);
                        continue;
                    }
                    (true, Some(_)) => {}
                    (true, None) => {
                        first_empty.insert(name.clone(), status["ts"].clone());
                    }
                    (false, _) => {
                        first_empty.remove(&name);
                    }
                }
                pending.push(format!("{name}: {}", v["runtime"]));
            }
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "not drained after {timeout:?}: {pending:?}\ncloud log:\n{}",
                    self.cloud.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every gateway's replay has ended, what it writes after (exits past the
    /// exit timeout, the last minute's footfall) is written, and its outbox is empty: after
    /// this nothing is in flight, and a stop loses nothing.
    pub async fn wait_settled(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for g in &self.gateways {
            while !g.log().contains("scan source ended") {
                if tokio::time::Instant::now() > deadline {
                    bail!(
                        "{}: the replay did not end within {timeout:?}:\n{}",
                        g.name(),
                        g.log()
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        // Exit timeout (30 s) and a footfall minute, on the clock.
        let tail = Duration::from_secs(100) / self.speed.max(1);
        tokio::time::sleep(tail.max(Duration::from_millis(500))).await;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        self.wait_drained(left.max(Duration::from_secs(5))).await
    }

    /// Every delivery row, once each is final (none pending or sending) and there are `n`.
    pub async fn settled_deliveries(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let d: Vec<Value> = self.cloud.admin("/v1/admin/deliveries?limit=1000").await?["items"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let busy = d
                .iter()
                .filter(|d| matches!(d["status"].as_str(), Some("pending") | Some("sending")))
                .count();
            if d.len() >= n && busy == 0 {
                return Ok(d);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{} deliveries ({busy} not final) after {timeout:?}, expected {n}: {d:#?}",
                    d.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Every log line at info level or above of the cloud and the gateways.
    pub fn info_lines(&self) -> Vec<String> {
        let mut text = self.cloud.log();
        for g in &self.gateways {
            text += &g.log();
        }
        text.lines()
            .map(strip_ansi)
            .filter(|l| !(l.contains(" DEBUG ") || l.contains(" TRACE ")))
            .collect()
    }

    /// Fails if any of `secrets` appears in a log line at info level or above.
    pub fn check_logs_keep(&self, secrets: &[String]) -> anyhow::Result<()> {
        let lines = self.info_lines();
        let mut found = Vec::new();
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            if let Some(l) = lines.iter().find(|l| l.contains(s.as_str())) {
                found.push(format!("{s:?} in: {l}"));
            }
        }
        ensure!(
            found.is_empty(),
            "secrets or personal ids in the logs:\n{}",
            found.join("\n")
        );
        ensure!(
            lines.len() > 20,
            "too few log lines to mean anything: {}",
            lines.len()
        );
        Ok(())
    }

    /// The secrets of the system itself: passwords, signing keys, tokens.
    pub fn own_secrets(&self) -> Vec<String> {
        let mut out = vec![
            ADMIN_TOKEN.to_owned(),
            crate::cloud::ANALYST_TOKEN.to_owned(),
            crate::cloud::LINE_SECRET.to_owned(),
            crate::cloud::MEMBER_SECRET.to_owned(),
            LINE_TOKEN.to_owned(),
            CLOUD_PASSWORD.to_owned(),
        ];
        for g in &self.gateways {
            out.push(g.gut.password.clone());
            out.push(g.gut.key.to_hex());
        }
        out
    }
}

/// The fixture service account the fake FCM server signs tokens for.
pub fn fcm_key_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../simulators/fixtures/fcm-service-account.json")
}

/// `line` without its terminal colour codes (logs colour field names and values apart).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
