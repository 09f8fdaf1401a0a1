//! The system under load: the fake LINE server and `omo-cloud run` — one instance with its
//! embedded broker on a fresh sled dir or a PostgreSQL database, or several instances on one
//! PostgreSQL database behind a Mosquitto broker with a shared subscription — and what the run
//! reads of it (each instance's metrics, the processes' CPU and memory).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{fleet_site, Options, ENTER_AFTER_S, GATEWAYS_PER_STORE, REORDER_WINDOW_S};
use crate::procs::{
    bin_dir, binary, cpu_seconds, free_port, import_site, shared_broker_mqtt, spawn,
    spawn_fake_line, stage_lag, stage_metric, start_mosquitto, wait_port, Api, Proc,
};
use crate::world;

/// The system under test and what the run needs of it.
pub(super) struct System {
    pub procs: Vec<Proc>,
    pub api: Arc<Api>,
    /// The generated fleet: its gateways' logins and how many stores they are in.
    pub logins: Vec<world::GatewayLogin>,
    pub stores: usize,
    pub mqtt_port: u16,
    pub line_port: u16,
    /// Each cloud instance's process id, the first's first.
    pub cloud_pids: Vec<u32>,
    pub fake_pid: u32,
    /// Mosquitto's, when the instances share one.
    pub broker_pid: Option<u32>,
}

/// Writes the generated fleet and each instance's config into `dir` and starts the fake LINE
/// server, Mosquitto when there are several instances, and the instances (their secrets
/// drawn from `rng`), waiting for their ports.
pub(super) async fn start_system(
    opts: &Options,
    dir: &std::path::Path,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<System> {
    let bin_dir = bin_dir(opts.bin_dir.as_deref())?;
    let cloud_bin = binary(&bin_dir, "omo-cloud")?;
    let path = |n: &str| dir.join(n);
    let (admin_token, line_secret, line_token) = (
        crate::synth::hex_of(rng, 16),
        crate::synth::hex_of(rng, 16),
        crate::synth::hex_of(rng, 16),
    );
    let (mqtt_port, line_port) = (free_port()?, free_port()?);
    let http_ports = (0..opts.instances.max(1))
        .map(|_| free_port())
        .collect::<anyhow::Result<Vec<u16>>>()?;
    let (site, logins) = fleet_site(opts.gateways, opts.seed);
    let stores = opts.gateways.div_ceil(GATEWAYS_PER_STORE);
    std::fs::write(path("site.toml"), site)?;
    let shared = http_ports.len() > 1;
    let mut configs = Vec::new();
    for (i, http_port) in http_ports.iter().enumerate() {
        let n = i + 1;
        let config = path(&format!("cloud-{n}.toml"));
        let mqtt = if shared {
            shared_broker_mqtt(mqtt_port, &format!("omo-load-{n}"))
        } else {
            format!("listen = \"127.0.0.1:{mqtt_port}\"")
        };
        std::fs::write(
            &config,
            format!(
                "[data]\n{data}\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[mqtt]\n{mqtt}\n\
                 [line]\napi_base = \"http://127.0.0.1:{line_port}\"\nrate_per_s = 20000\n\
                 [delivery]\nconcurrency = 64\nbatch = 512\n\
                 [visits]\nenter_after_s = {ENTER_AFTER_S}\nreorder_window_s = {REORDER_WINDOW_S}\n\
                 [cluster]\ninstance = \"load-{n}\"\n\
                 [log]\nlevel = \"warn,omo_cloud=info\"\n",
                data = match &opts.postgres {
                    None => format!("dir = {:?}", path("data").display().to_string()),
                    Some(url) => format!(
                        "engine = \"postgres\"\n[data.postgres]\nurl = {url:?}\npool_size = 16"
                    ),
                },
            ),
        )?;
        configs.push(config.display().to_string());
    }
    import_site(
        &cloud_bin,
        &path("site.toml"),
        std::path::Path::new(&configs[0]),
    )?;
    let mut procs = vec![spawn_fake_line(
        line_port,
        &line_token,
        &path("fake-line.log"),
    )?];
    wait_port(line_port, "the fake LINE server", &mut procs).await?;
    let mut broker_pid = None;
    if shared {
        procs.push(start_mosquitto(dir, mqtt_port, &logins)?);
        wait_port(mqtt_port, "Mosquitto", &mut procs).await?;
        broker_pid = procs.last().and_then(|p| p.child.id());
    }
    let mut cloud_pids = Vec::new();
    for (i, (config, http_port)) in configs.iter().zip(&http_ports).enumerate() {
        let name = format!("omo-cloud {}", i + 1);
        procs.push(spawn(
            &name,
            &cloud_bin,
            &["run", "--config", config],
            &[
                ("OMO_CLOUD_ADMIN_TOKEN", admin_token.as_str()),
                ("OMO_CLOUD_LINE_CHANNEL_SECRET", line_secret.as_str()),
                ("OMO_CLOUD_LINE_CHANNEL_TOKEN", line_token.as_str()),
            ],
            &path(&format!("cloud-{}.log", i + 1)),
        )?);
        cloud_pids.push(
            procs
                .last()
                .and_then(|p| p.child.id())
                .with_context(|| format!("{name}'s pid"))?,
        );
        wait_port(*http_port, "the cloud's HTTP API", &mut procs).await?;
    }
    if !shared {
        wait_port(mqtt_port, "the cloud's broker", &mut procs).await?;
    }
    let fake_pid = procs[0].child.id().context("the fake LINE server's pid")?;
    let mut api = Api::new(
        omo_cloud::tls::http_client_builder()
            .timeout(Duration::from_secs(60))
            .build()?,
        format!("http://127.0.0.1:{}", http_ports[0]),
        admin_token,
    );
    api.more = http_ports[1..]
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    Ok(System {
        procs,
        api: Arc::new(api),
        logins,
        stores,
        mqtt_port,
        line_port,
        cloud_pids,
        fake_pid,
        broker_pid,
    })
}

impl System {
    /// Each instance's `/metrics` text, the first's first.
    pub async fn metrics(&self) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        for base in self.api.bases() {
            out.push(
                self.api
                    .http
                    .get(format!("{base}/metrics"))
                    .send()
                    .await?
                    .error_for_status()?
                    .text()
                    .await?,
            );
        }
        Ok(out)
    }

    /// CPU seconds so far of the instances together, and of Mosquitto (0 with the embedded
    /// broker, whose work is the cloud's).
    pub fn cpu_seconds(&self) -> anyhow::Result<(f64, f64)> {
        let mut cloud = 0.0;
        for pid in &self.cloud_pids {
            cloud += cpu_seconds(*pid)?;
        }
        let broker = match self.broker_pid {
            Some(pid) => cpu_seconds(pid)?,
            None => 0.0,
        };
        Ok((cloud, broker))
    }
}

/// What the partitions of `stage` the instances hold have still to read, all together (each
/// instance reports its own partitions'); `None` when no instance reports it.
pub(super) fn fleet_lag(metrics: &[String], stage: &str) -> Option<f64> {
    metrics
        .iter()
        .filter_map(|m| stage_lag(m, stage))
        .reduce(|a, b| a + b)
}

/// How many partitions of `stage` an instance's `metrics` say it holds.
pub(super) fn partitions_held(metrics: &str, stage: &str) -> u64 {
    stage_metric(metrics, "omo_partitions_held", stage).map_or(0, |n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fleet_lag_adds_the_instances_and_partitions_are_read_by_stage() {
        let a = "omo_stage_lag_records{omo_instance=\"a\",stage=\"visits\"} 7\nomo_partitions_held{omo_instance=\"a\",stage=\"visits\"} 4\nomo_partitions_held{omo_instance=\"a\",stage=\"decide\"} 3\n";
        let b = "omo_stage_lag_records{omo_instance=\"b\",stage=\"visits\"} 5\n";
        let both = [a.to_owned(), b.to_owned()];
        assert_eq!(fleet_lag(&both, "visits"), Some(12.0));
        assert_eq!(fleet_lag(&both, "decide"), None);
        assert_eq!(partitions_held(a, "visits"), 4);
        assert_eq!(partitions_held(a, "decide"), 3);
        assert_eq!(partitions_held(b, "visits"), 0);
    }
}
