//! What the demo and the load generator share to run the system under test: child processes
//! killed when dropped, free loopback ports, waiting for a listener, the built binaries beside
//! this one, a small admin-API client, bounded concurrency, and a process's CPU time and peak
//! memory from /proc.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::process::{Child, Command};
use tokio::time::Duration;

use crate::world::GatewayLogin;

/// A child process killed when dropped.
pub struct Proc {
    pub name: String,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts `program` with its output in `log`.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> anyhow::Result<Proc> {
    let out = std::fs::File::create(log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    Ok(Proc {
        name: name.to_owned(),
        child,
    })
}

/// A free loopback TCP port.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Waits until something listens on `port` (30 s at most), failing early if a process exits.
pub async fn wait_port(port: u16, what: &str, procs: &mut [Proc]) -> anyhow::Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!("{} exited ({status}) before {what} was up", p.name);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{what} did not listen on port {port} within 30 s")
}

/// A built binary of the workspace in `dir`.
pub fn binary(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let p = dir.join(name);
    if p.exists() {
        Ok(p)
    } else {
        bail!(
            "{} not found: build the workspace first (cargo build --release)",
            p.display()
        )
    }
}

/// Finds the `mosquitto` broker (Debian installs it in /usr/sbin).
pub fn mosquitto_path() -> anyhow::Result<PathBuf> {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin"])
    {
        let p = Path::new(dir).join("mosquitto");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("mosquitto not found: install Debian's `mosquitto` package (.ci/run does)")
}

/// The cloud's HTTP API with an admin token: one instance, or several behind what would be a
/// load balancer (each call goes to the next in turn).
pub struct Api {
    pub http: reqwest::Client,
    /// The first instance's address.
    pub base: String,
    pub admin: String,
    /// The other instances' addresses.
    pub more: Vec<String>,
    turn: std::sync::atomic::AtomicUsize,
}

/// One HTTP call with an optional JSON body and bearer token, answering (status, JSON body
/// or null when the body is not JSON).
pub async fn call_json(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = http.request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await?;
    Ok((
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

/// `outcome`, deleting `dir` after a success; after a failure `dir` is kept, and the error
/// says where, for whoever reads the processes' logs.
pub fn keep_on_error<T>(dir: tempfile::TempDir, outcome: anyhow::Result<T>) -> anyhow::Result<T> {
    outcome.map_err(|e| {
        let kept = dir.keep();
        e.context(format!("the processes' logs are in {}", kept.display()))
    })
}

impl Api {
    /// The API of one instance at `base`.
    pub fn new(http: reqwest::Client, base: String, admin: String) -> Api {
        Api {
            http,
            base,
            admin,
            more: Vec::new(),
            turn: Default::default(),
        }
    }

    /// Every instance's address, the first first.
    pub fn bases(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.base.as_str()).chain(self.more.iter().map(String::as_str))
    }

    /// The address the next call goes to: the instances in turn.
    pub fn next_base(&self) -> &str {
        let i = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.bases()
            .nth(i % (1 + self.more.len()))
            .unwrap_or(&self.base)
    }

    /// A call answering (status, JSON body or null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        call_json(
            &self.http,
            method,
            &format!("{}{path}", self.next_base()),
            body,
            token,
        )
        .await
    }

    /// Every delivery row the cloud holds, page by page, to `each` until it answers false.
    pub async fn each_delivery(&self, mut each: impl FnMut(&Value) -> bool) -> anyhow::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/admin/deliveries?limit=1000&after={a}"),
                None => "/v1/admin/deliveries?limit=1000".to_owned(),
            };
            let page = self.admin(reqwest::Method::GET, &path, None).await?;
            for d in page["items"].as_array().into_iter().flatten() {
                if !each(d) {
                    return Ok(());
                }
            }
            match page["next"].as_str() {
                Some(n) => after = Some(n.to_owned()),
                None => return Ok(()),
            }
        }
    }

    /// An admin call; an error unless it answers 2xx.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, v) = self
            .call(method, path, body, Some(&self.admin.clone()))
            .await?;
        if !(200..300).contains(&status) {
            bail!("{path}: {status} {v}");
        }
        Ok(v)
    }
}

/// Runs `futures` with at most `n` at once, collecting their results (the first error stops).
pub async fn futures_unordered<T: Send + 'static>(
    futures: impl Iterator<Item = impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static>,
    n: usize,
) -> anyhow::Result<Vec<T>> {
    let mut set = tokio::task::JoinSet::new();
    let mut out = Vec::new();
    for f in futures {
        if set.len() >= n {
            if let Some(r) = set.join_next().await {
                out.push(r??);
            }
        }
        set.spawn(f);
    }
    while let Some(r) = set.join_next().await {
        out.push(r??);
    }
    Ok(out)
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11)
        .context("no utime in /proc stat")?
        .parse::<f64>()?
        + fields
            .get(12)
            .context("no stime in /proc stat")?
            .parse::<f64>()?;
    Ok(ticks / 100.0) // USER_HZ is 100 on Linux
}

/// `omo_stage_lag_records` of `stage` in a cloud's `metrics` (labelled with its instance or
/// not): what the partitions it holds have still to read, at most.
pub fn stage_lag(metrics: &str, stage: &str) -> Option<f64> {
    stage_metric(metrics, "omo_stage_lag_records", stage)
}

/// The sample of metric `name` labelled with `stage` in a cloud's `metrics`.
pub fn stage_metric(metrics: &str, name: &str, stage: &str) -> Option<f64> {
    let label = format!("stage=\"{stage}\"");
    let opening = format!("{name}{{");
    metrics
        .lines()
        .filter(|l| l.starts_with(&opening))
        .find(|l| {
            l.split_once('}')
                .is_some_and(|(labels, _)| labels.contains(&label))
        })
        .and_then(|l| l.rsplit(' ').next()?.trim().parse().ok())
}

/// CPU seconds (user + system) of every process on this machine named `name` (a local
/// database's server processes, say); those gone between reads are missed.
pub fn cpu_seconds_named(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .filter_map(|pid| cpu_seconds(pid).ok())
        .sum()
}

/// Peak resident set size of a process, kB.
pub fn peak_rss_kb(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmHWM:")
}

/// A process's resident set now, KiB.
pub fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    status_kb(pid, "VmRSS:")
}

fn status_kb(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("no value")?
        .parse()?)
}

/// Where the workspace's binaries are: `dir` if given, else beside this program.
pub fn bin_dir(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    match dir {
        Some(d) => Ok(d.to_path_buf()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("this program has no directory")?
            .to_path_buf()),
    }
}

/// `omo-cloud import SITE --config CONFIG`: the site into the cloud's fresh data dir.
pub fn import_site(cloud_bin: &Path, site: &Path, config: &Path) -> anyhow::Result<()> {
    let import = std::process::Command::new(cloud_bin)
        .args([
            "import",
            &site.display().to_string(),
            "--config",
            &config.display().to_string(),
        ])
        .output()?;
    if !import.status.success() {
        bail!(
            "omo-cloud import: {}",
            String::from_utf8_lossy(&import.stderr)
        );
    }
    Ok(())
}

/// `omo-sim fake-line` on `port` accepting `token`, logging to `log`.
pub fn spawn_fake_line(port: u16, token: &str, log: &Path) -> anyhow::Result<Proc> {
    spawn(
        "fake LINE",
        &std::env::current_exe()?,
        &[
            "fake-line",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--token",
            token,
        ],
        &[],
        log,
    )
}

/// The cloud's login at a Mosquitto [`start_mosquitto`] started (a throwaway on loopback).
const CLOUD_LOGIN: (&str, &str) = ("omo-cloud", "sim-cloud-password");

/// The `[mqtt]` lines of a cloud instance, MQTT client `client_id`, behind the Mosquitto
/// [`start_mosquitto`] started on `port`: its login, and the shared subscription's group.
pub fn shared_broker_mqtt(port: u16, client_id: &str) -> String {
    format!(
        "url = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"{client_id}\"\nshare_group = \"omo\"\nusername = \"{}\"\npassword = \"{}\"",
        CLOUD_LOGIN.0, CLOUD_LOGIN.1
    )
}

/// Starts Mosquitto on `port` with the cloud's and the gateways' logins and the ACL the cloud
/// generates for them (`omo-cloud broker-auth` writes the same), its files under `dir`.
pub fn start_mosquitto(dir: &Path, port: u16, logins: &[GatewayLogin]) -> anyhow::Result<Proc> {
    use omo_device_config::{GatewayId, StoreId};
    let dir = dir.join("mosquitto");
    std::fs::create_dir_all(&dir)?;
    let ids = logins
        .iter()
        .map(|l| Ok((StoreId::new(&l.store)?, GatewayId::new(&l.gateway)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (passwd, acl) = omo_device_config::broker_auth::broker_files(
        CLOUD_LOGIN,
        ids.iter()
            .zip(logins)
            .map(|((store, gateway), l)| (store, gateway, l.password.as_str())),
    );
    std::fs::write(dir.join("passwd"), passwd.join("\n") + "\n")?;
    std::fs::write(dir.join("acl"), acl)?;
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\nacl_file {}\npersistence false\nlog_dest stderr\n",
            dir.join("passwd").display(),
            dir.join("acl").display()
        ),
    )?;
    spawn(
        "Mosquitto",
        &mosquitto_path()?,
        &["-c", &conf.display().to_string()],
        &[],
        &dir.join("mosquitto.log"),
    )
}

#[cfg(test)]
mod tests {
    use super::stage_lag;

    #[test]
    fn a_stage_lag_is_read_with_or_without_the_instance_label() {
        let alone = "omo_stage_lag_records{stage=\"visits\"} 12\nomo_stage_lag_records{stage=\"decide\"} 3\n";
        assert_eq!(stage_lag(alone, "visits"), Some(12.0));
        assert_eq!(stage_lag(alone, "decide"), Some(3.0));
        let labelled = "omo_stage_lag_records{omo_instance=\"a\",stage=\"decide\"} 0\nomo_stage_lag_records{omo_instance=\"a\",stage=\"visits\"} 7\n";
        assert_eq!(stage_lag(labelled, "visits"), Some(7.0));
        assert_eq!(stage_lag(labelled, "stats"), None);
    }
}
