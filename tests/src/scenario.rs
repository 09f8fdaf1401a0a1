//! A gateway scenario for end-to-end tests: credentials, a replay file of store visits, a
//! gateway config on a broker, and the real `omo-gateway` process, restartable on the same data
//! dir and clock timeline.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use omo_device_config::broker_auth::{cloud_acl, gateway_acl, password_line, PasswordHash};
use omo_device_config::envelope::SigningKey;
use omo_device_config::{GatewayId, StoreId, Timestamp};
use omo_gateway::frames::{encode, Frame, LineBeacon};

use crate::cloud_stub::{CloudStub, Seen};
use crate::{gateway_binary, Broker, BrokerKind, Process};

/// The simulated time every scenario starts at.
pub const START: &str = "2026-11-23T09:00:00Z";
pub const CLOUD_USER: &str = "omo-cloud";
pub const CLOUD_PASSWORD: &str = "cloud-password-for-tests";

/// One store visit in a replay: beacon `n` heard every second from `from_s` to `to_s`.
#[derive(Debug, Clone, Copy)]
pub struct Visit {
    pub beacon: u8,
    pub from_s: i64,
    pub to_s: i64,
}

/// The LINE Beacon hwid of carrier `n`.
pub fn hwid(n: u8) -> [u8; 5] {
    [0x01, 0x6a, 0x4b, 0x2c, n]
}

/// Writes a replay file of `visits` (time 0 is [`START`]); returns its number of lines.
pub fn write_replay(path: &Path, visits: &[Visit]) -> anyhow::Result<usize> {
    let start = chrono::DateTime::parse_from_rfc3339(START)?.timestamp_millis();
    let end = visits.iter().map(|v| v.to_s).max().unwrap_or(0);
    let mut lines = String::new();
    for t in 0..end {
        for v in visits.iter().filter(|v| t >= v.from_s && t < v.to_s) {
            let adv = encode(&[Frame::Line(LineBeacon::new(hwid(v.beacon), -59, &[]))]);
            let ts = Timestamp::from_millis(start + t * 1000).expect("scenario times are in range");
            lines += &format!(
                "{{\"ts\":\"{ts}\",\"addr\":\"02:00:00:00:00:{:02x}\",\"rssi\":-62,\"adv\":\"{}\"}}\n",
                v.beacon,
                hex::encode(adv)
            );
        }
    }
    std::fs::write(path, &lines)?;
    Ok(lines.lines().count())
}

/// One gateway under test.
pub struct GatewayUnderTest {
    pub store: StoreId,
    pub gateway: GatewayId,
    pub password: String,
    pub key: SigningKey,
    pub dir: tempfile::TempDir,
    /// `--clock` for every process of the scenario (anchored, so restarts share the timeline).
    pub clock: String,
}

impl GatewayUnderTest {
    pub fn new(store: &str, gateway: &str, speed: u32) -> anyhow::Result<GatewayUnderTest> {
        let origin = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        Ok(GatewayUnderTest {
            store: StoreId::new(store)?,
            gateway: GatewayId::new(gateway)?,
            password: format!("{gateway}-password-for-tests"),
            key: SigningKey::generate(),
            dir: tempfile::tempdir()?,
            clock: format!("{START}@{speed}@{origin}"),
        })
    }

    /// Password lines for the broker: this gateway and the cloud.
    pub fn password_lines(&self) -> Vec<String> {
        vec![
            password_line(self.gateway.as_str(), &PasswordHash::new(&self.password)),
            password_line(CLOUD_USER, &PasswordHash::new(CLOUD_PASSWORD)),
        ]
    }

    /// The Mosquitto ACL for this gateway and the cloud.
    pub fn acl(&self) -> String {
        format!(
            "{}\n{}",
            gateway_acl(&self.store, &self.gateway),
            cloud_acl(CLOUD_USER)
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Writes the gateway config for a broker on `port`, replaying `replay`.
    pub fn write_config(&self, port: u16, replay: &Path) -> anyhow::Result<PathBuf> {
        self.write_config_with_password(port, replay, &self.password)
    }

    /// Like [`GatewayUnderTest::write_config`], logging in with `password`.
    pub fn write_config_with_password(
        &self,
        port: u16,
        replay: &Path,
        password: &str,
    ) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                r#"[identity]
store = "{store}"
gateway = "{gateway}"
[broker]
url = "mqtt://127.0.0.1:{port}"
password = "{password}"
signing_key = "{key}"
keep_alive_s = 5
[scan]
source = "replay"
replay_file = {replay:?}
[status]
heartbeat_s = 30
[outbox]
resend_interval_s = 10
resend_backoff_max_s = 60
[data]
dir = {data:?}
[log]
level = "info,omo_gateway=debug"
"#,
                store = self.store,
                gateway = self.gateway,
                key = self.key.to_hex(),
                replay = replay.display().to_string(),
                data = self.data_dir().display().to_string(),
            ),
        )?;
        Ok(path)
    }

    /// Starts `omo-gateway run` with the scenario's clock.
    pub fn start(&self, config: &Path) -> anyhow::Result<Process> {
        self.start_with_env(config, &[])
    }

    /// Starts `omo-gateway run` with extra environment (`FAILPOINTS`, say).
    pub fn start_with_env(&self, config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Process> {
        let config = config.display().to_string();
        Process::start(
            &gateway_binary()?,
            &["run", "--config", &config, "--clock", &self.clock],
            env,
        )
    }
}

/// A broker of `kind` set up for `gut` (its and the cloud's logins and ACL) and a cloud
/// stand-in connected to it that knows `gut`'s key.
pub async fn broker_and_cloud(
    gut: &GatewayUnderTest,
    kind: BrokerKind,
) -> anyhow::Result<(Broker, CloudStub)> {
    let broker = Broker::start(kind, &gut.password_lines(), &gut.acl())?;
    let keys = std::collections::HashMap::from([(gut.gateway.to_string(), gut.key.clone())]);
    let cloud = CloudStub::start(broker.port, CLOUD_USER, CLOUD_PASSWORD, keys).await?;
    Ok((broker, cloud))
}

/// Polls `cond` every 100 ms until it holds, or fails after `timeout` with `what` and `context()`.
pub async fn wait_until(
    timeout: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
    context: impl Fn() -> String,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            bail!(
                "timed out after {timeout:?} waiting for {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Whether `gateway`'s last two heartbeats both report an empty outbox (one could predate
/// the last events).
pub fn drained(seen: &Seen, gateway: &str) -> bool {
    seen.statuses
        .get(gateway)
        .is_some_and(|v| v.len() >= 2 && v[v.len() - 2..].iter().all(|s| s.outbox_depth == 0))
}

/// The line a gateway logged when it last stopped (epoch, last seq, outbox depth).
pub fn stop_line(log: &str) -> Option<&str> {
    log.lines()
        .rev()
        .find(|l| l.contains("stopped") && l.contains("last_seq="))
}

/// The (epoch, last seq) a gateway logged when it stopped.
pub fn stopped_at(log: &str) -> Option<(String, u64)> {
    let line = stop_line(log)?;
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_owned)
    };
    Some((field("epoch=")?, field("last_seq=")?.parse().ok()?))
}

/// Stops the gateway and checks that the cloud stored every seq up to the last one it wrote.
pub fn check_nothing_missing(seen: &Seen, gateway: &str, gw: &mut Process) -> anyhow::Result<()> {
    gw.terminate(Duration::from_secs(10))?;
    let log = gw.log_text();
    let Some((epoch, last)) = stopped_at(&log) else {
        bail!("the gateway did not log where it stopped:\n{log}");
    };
    let stored = seen
        .events
        .keys()
        .filter(|id| id.starts_with(&format!("{gateway}:{epoch}:")))
        .count() as u64;
    let dropped = seen
        .dropped
        .get(&format!("{gateway}:{epoch}"))
        .map_or(0, |d| d.count() as u64);
    if stored + dropped != last {
        bail!("epoch {epoch}: the gateway wrote {last} seqs, the cloud has {stored} (+{dropped} dropped)");
    }
    Ok(())
}

/// The stored seqs of each epoch of `gateway`, checking that each epoch's seqs run from 1
/// with no gap; returns (epoch, count) pairs.
pub fn check_no_gaps(seen: &Seen, gateway: &str) -> anyhow::Result<Vec<(String, u64)>> {
    let mut epochs: std::collections::BTreeMap<String, BTreeSet<u64>> = Default::default();
    for id in seen.events.keys() {
        let mut parts = id.split(':');
        let (Some(g), Some(epoch), Some(seq)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("malformed event id {id}");
        };
        if g == gateway {
            epochs
                .entry(epoch.to_owned())
                .or_default()
                .insert(seq.parse()?);
        }
    }
    if seen.conflicts > 0 {
        bail!(
            "{} ids arrived again with different content (a seq was reused)",
            seen.conflicts
        );
    }
    for (epoch, dropped) in &seen.dropped {
        if !dropped.is_empty() {
            bail!("{epoch}: events were dropped: {:?}", dropped.ranges());
        }
    }
    let mut out = Vec::new();
    for (epoch, seqs) in epochs {
        let n = seqs.len() as u64;
        if seqs.first() != Some(&1) || seqs.last() != Some(&n) {
            let missing: Vec<u64> = (1..=seqs.last().copied().unwrap_or(0))
                .filter(|s| !seqs.contains(s))
                .take(20)
                .collect();
            bail!("epoch {epoch}: seqs have gaps; missing {missing:?}");
        }
        out.push((epoch, n));
    }
    Ok(out)
}
