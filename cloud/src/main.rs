//! `omo-cloud`: the cloud service's command line.
//!
//! `run` serves; `import` loads a site file into a stopped service's data dir; `backup` asks a
//! running service for a snapshot; `restore` builds a fresh data dir from one.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use omo_cloud::config::{CloudConfig, Engine, ADMIN_TOKEN_ENV};
use omo_cloud::registry::{replace_site, Registry};
use omo_cloud::store::postgres::PgStore;
use omo_device_config::gateway_config::LogFormat;
use omo_device_config::site::Site;
use omo_device_config::{Clock, ClockSpec};

/// jemalloc rather than glibc's malloc: under `omo-sim load` glibc's arenas kept freed memory
/// from the stages' churn (the store's node copies, the journal's maps) and the cloud levelled
/// off at 2.4 GB; with jemalloc at 1.1 GB, and the stages kept up on less CPU.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(name = "omo-cloud", version, about = "omo cloud service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: broker, ingest, pipeline, HTTP API.
    Run {
        /// The service's TOML config (see cloud/examples/cloud.toml).
        #[arg(long)]
        config: PathBuf,
        /// The process clock: `wall`, or START@SPEED (an RFC 3339 start and a speed factor).
        #[arg(long, default_value = "wall")]
        clock: ClockSpec,
    },
    /// Load a site file (stores, gateways, beacons, zones) into the data dir of a stopped
    /// service; a running one takes it at PUT /v1/admin/site.
    Import {
        /// The site file (TOML, or JSON when it ends in .json).
        file: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask a running service for a consistent snapshot and write it to DIR.
    Backup {
        dir: PathBuf,
        /// The service's base URL.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// An operator token (default: the OMO_CLOUD_ADMIN_TOKEN environment variable).
        #[arg(long)]
        token: Option<String>,
    },
    /// Zone tools.
    Zones {
        #[command(subcommand)]
        command: ZonesCommand,
    },
    /// Fill an empty store (a fresh data.dir, or an empty PostgreSQL database with
    /// data.engine = "postgres") from the snapshot in DIR, offline, and compare every entry.
    Restore {
        dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
    /// Copy a stopped service's sled data dir into the empty PostgreSQL database of --config
    /// (data.engine = "postgres"), then compare every entry.
    Migrate {
        /// The sled data dir to copy (left as it was).
        #[arg(long)]
        from_dir: PathBuf,
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ZonesCommand {
    /// For every `lon,lat` line of POINTS, print the ids of the geofences of ZONES (a GeoJSON
    /// FeatureCollection) that cover it, sorted and comma-separated; timings on stderr.
    Match { zones: PathBuf, points: PathBuf },
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let result = match Cli::parse().command {
        Command::Run { config, clock } => run(&config, clock),
        Command::Import { file, config } => import(&file, &config),
        Command::Backup { dir, url, token } => backup(&dir, &url, token),
        Command::Restore { dir, config } => restore(&dir, &config),
        Command::Migrate { from_dir, config } => migrate(&from_dir, &config),
        Command::Zones {
            command: ZonesCommand::Match { zones, points },
        } => zones_match(&zones, &points),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omo-cloud: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_config(path: &Path) -> anyhow::Result<CloudConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    CloudConfig::from_toml(&text, |k| std::env::var(k).ok()).map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("{}: {p}", path.display()))
            .collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })
}

fn run(path: &Path, clock: ClockSpec) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let clock = Clock::from_spec(&clock);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(omo_cloud::service::run(config, clock))
}

fn import(file: &Path, config: &Path) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let site = Site::load(file).map_err(|p| anyhow::anyhow!("{p}"))?;
    let store = omo_cloud::service::open_store(&config)?;
    let current = Registry::load(store.as_ref())?;
    store.commit(replace_site(&current, &site)?)?;
    store.flush()?;
    println!(
        "imported {}: {} stores, {} gateways, {} beacons, {} zones",
        file.display(),
        site.stores.len(),
        site.gateways.len(),
        site.beacons.len(),
        site.beacon_zones.len()
            + site.gateway_zones.len()
            + site.wifi_zones.len()
            + site.geofences.len()
    );
    Ok(())
}

fn backup(dir: &Path, url: &str, token: Option<String>) -> anyhow::Result<()> {
    let token = token
        .or_else(|| std::env::var(ADMIN_TOKEN_ENV).ok())
        .with_context(|| format!("an operator token is needed: --token or {ADMIN_TOKEN_ENV}"))?;
    let client = http_client()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = runtime.block_on(async {
        let response = client
            .post(format!("{}/v1/admin/backup", url.trim_end_matches('/')))
            .bearer_auth(&token)
            .send()
            .await
            .with_context(|| format!("asking {url} for a snapshot"))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            anyhow::bail!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    })?;
    let counts = omo_cloud::backup::write_snapshot(dir, &body)?;
    println!(
        "backed up to {}: {counts:?}",
        dir.join(omo_cloud::backup::FILE).display()
    );
    Ok(())
}

fn zones_match(zones: &Path, points: &Path) -> anyhow::Result<()> {
    let zones_file =
        std::fs::read(zones).with_context(|| format!("reading {}", zones.display()))?;
    let file =
        std::fs::File::open(points).with_context(|| format!("reading {}", points.display()))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let s = omo_cloud::zones::match_file::run(
        &zones_file[..],
        std::io::BufReader::new(file),
        &points.display().to_string(),
        &mut out,
    )
    .map_err(|e| match e {
        omo_cloud::zones::match_file::MatchError::Zones(problems) => anyhow::anyhow!(
            "{}",
            problems
                .iter()
                .map(|p| format!("{}: {p}", zones.display()))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        other => other.into(),
    })?;
    eprintln!(
        "zones {} points {} read_zones_s {:.3} index_build_s {:.3} read_points_s {:.3} match_s {:.3} points_per_s {:.0}",
        s.zones,
        s.points,
        s.read_zones_s,
        s.build_s,
        s.read_points_s,
        s.match_s,
        s.points_per_s()
    );
    Ok(())
}

fn restore(dir: &Path, config: &Path) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let counts = match config.data.engine {
        Engine::Sled => omo_cloud::backup::restore(
            dir,
            &config.data.dir,
            u64::from(config.data.cache_mb) << 20,
        )?,
        Engine::Postgres => {
            let pg = config
                .data
                .postgres
                .as_ref()
                .context("data.postgres: must be set")?;
            let store = PgStore::open_to_fill(pg, "restore")
                .map_err(|e| anyhow::anyhow!("data.postgres: {e}"))?;
            let counts = omo_cloud::backup::restore_into(dir, &store)?;
            store.finish_fill()?;
            counts
        }
    };
    println!(
        "restored {} into {}: {counts:?}",
        dir.display(),
        omo_cloud::service::data_desc(&config)
    );
    Ok(())
}

fn migrate(from_dir: &Path, config: &Path) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let (Engine::Postgres, Some(pg)) = (config.data.engine, &config.data.postgres) else {
        anyhow::bail!(
            "data.engine: must be \"postgres\" in the config migrate copies into (with \
             [data.postgres])"
        );
    };
    // sled makes a data dir of any directory it opens: ask for one it wrote.
    if !(from_dir.join("conf").is_file() && from_dir.join("db").is_file()) {
        anyhow::bail!(
            "--from-dir {}: not a sled data dir (no conf and db files in it)",
            from_dir.display()
        );
    }
    let from = omo_cloud::store::sled_store::SledStore::open(
        from_dir,
        u64::from(config.data.cache_mb) << 20,
    )
    .map_err(|e| anyhow::anyhow!("--from-dir {}: {e}", from_dir.display()))?;
    let to =
        PgStore::open_to_fill(pg, "migrate").map_err(|e| anyhow::anyhow!("data.postgres: {e}"))?;
    let counts = omo_cloud::backup::copy_into(&from, &to)?;
    to.finish_fill()?;
    println!(
        "migrated {} into {}, every entry compared: {counts:?}",
        from_dir.display(),
        omo_cloud::service::data_desc(&config)
    );
    Ok(())
}

/// An HTTP client on ring (the tree's one TLS provider) with the system roots.
fn http_client() -> anyhow::Result<reqwest::Client> {
    Ok(omo_cloud::tls::http_client_builder()
        .timeout(std::time::Duration::from_secs(300))
        .build()?)
}
