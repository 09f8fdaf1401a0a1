//! `omo-sim`: the simulators' command line. `fake-line`, `fake-fcm` and `fake-webhook` run the
//! fake LINE Messaging API, FCM HTTP v1 and a brand webhook receiver on loopback (see
//! `omo_sim::fake_line`, `omo_sim::fake_fcm`, `omo_sim::fake_webhook`) until interrupted.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "omo-sim", version, about = "omo simulators")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
// The command names are the contract (`omo-sim fake-line`, `fake-fcm`, …); `demo` and the
// drivers join them with the simulators issue.
#[allow(clippy::enum_variant_names)]
enum Command {
    /// Run a fake LINE Messaging API push endpoint (checks requests as LINE does, records what
    /// it accepts at GET /fake/deliveries, injects faults posted to /fake/faults).
    FakeLine {
        #[arg(long, default_value = "127.0.0.1:8091")]
        listen: SocketAddr,
        /// The channel access token it accepts.
        #[arg(long)]
        token: String,
    },
    /// Run a fake FCM HTTP v1 (token endpoint at /token checking RS256 JWT grants, then
    /// messages:send with the bearer; records at GET /fake/deliveries; faults at /fake/faults;
    /// POST /fake/unregistered {"token": …} makes a token UNREGISTERED).
    FakeFcm {
        #[arg(long, default_value = "127.0.0.1:8092")]
        listen: SocketAddr,
        /// The service-account key file whose grants it accepts.
        #[arg(long)]
        service_account: PathBuf,
        /// How long the bearers it issues live, seconds.
        #[arg(long, default_value_t = 3600)]
        token_ttl_s: u64,
    },
    /// Run the whole system on one clock: the fake LINE and FCM servers, the cloud (embedded
    /// broker, fresh data dir, the scenario's site), one gateway per scenario gateway, and the
    /// scenario's day replayed at its speed; prints the report and exits 0 only if the
    /// scenario's expectations hold.
    Demo {
        /// The scenario (TOML); default: the bundled "a Saturday at two stores".
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Leave the cloud running after the report, until interrupted.
        #[arg(long)]
        keep_running: bool,
        /// Shorten the day to this many hours.
        #[arg(long)]
        hours: Option<f64>,
        /// Write a run record: the scenario and every advert, app report, LINE webhook, return,
        /// redemption and fault the driver hands the system, with its time (NDJSON).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Replay a run record instead of simulating: the same scenario and the same inputs at
        /// the same times (shoppers' choices are in the record, so lift is not checked).
        #[arg(long, conflicts_with_all = ["scenario", "hours"])]
        replay: Option<PathBuf>,
        /// Keep every process's log in a new directory under DIR, the cloud and the gateways
        /// logging at debug level (for a log review; the report is unchanged).
        #[arg(long, value_name = "DIR")]
        logs: Option<PathBuf>,
        /// Keep the cloud's state in this (empty) PostgreSQL database instead of a fresh sled
        /// dir: a libpq URL; its password there or in OMO_CLOUD_PG_PASSWORD.
        #[arg(long, value_name = "URL")]
        postgres: Option<String>,
        /// Run the cloud as this many instances on the --postgres database, behind a Mosquitto
        /// broker the demo starts (Debian's `mosquitto`).
        #[arg(long, default_value_t = 1, requires = "postgres", value_parser = clap::value_parser!(u16).range(1..=8))]
        instances: u16,
    },
    /// Load the system: start the cloud (embedded broker, fresh data dir, a generated fleet of
    /// stores with ten gateways each) and the fake LINE server on loopback, register the
    /// customers and a campaign, then act as the gateways at the target event rate; prints
    /// events/s, event → offer latency, loss and each process's CPU; exits 1 if anything was
    /// lost or sent twice.
    Load(omo_sim::load::Options),
    /// Check a scenario file; prints each problem with its key, or a summary.
    Check {
        /// The scenario (TOML); `-` for the bundled "a Saturday at two stores".
        scenario: PathBuf,
    },
    /// Generate a run's files from a scenario: the site to import, the gateways' logins, the
    /// shoppers, one replay file per gateway, the app's reports and the LINE webhook events.
    Generate {
        /// The scenario (TOML); `-` for the bundled "a Saturday at two stores".
        scenario: PathBuf,
        /// The directory to write into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run a fake brand webhook receiver at /hook (checks X-Omo-Signature and Idempotency-Key;
    /// lists what it kept at GET /fake/deliveries).
    FakeWebhook {
        #[arg(long, default_value = "127.0.0.1:8093")]
        listen: SocketAddr,
        /// The signing secret.
        #[arg(long)]
        secret: String,
    },
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::FakeLine { listen, token } => fake_line(listen, &token),
        Command::FakeFcm {
            listen,
            service_account,
            token_ttl_s,
        } => serve(async move {
            let fake =
                omo_sim::fake_fcm::FakeFcm::start(listen, &service_account, token_ttl_s).await?;
            eprintln!(
                "fake FCM listening on {} (token endpoint {})",
                fake.base_url(),
                fake.token_url()
            );
            fake.serve_forever().await;
            Ok(())
        }),
        Command::Check { scenario } => check(&scenario).map(|_| ()),
        Command::Demo {
            scenario,
            keep_running,
            hours,
            record,
            replay,
            logs,
            postgres,
            instances,
        } => {
            let postgres = postgres.map(|url| omo_sim::demo::OnPostgres { url, instances });
            return demo(
                scenario,
                keep_running,
                hours,
                (record, replay),
                (logs, postgres),
            );
        }
        Command::Load(opts) => return load(opts),
        Command::Generate { scenario, out } => check(&scenario).and_then(|s| {
            let g = omo_sim::world::generate(&s, &out)?;
            println!(
                "{}: {} visits, {} adverts heard, {} app reports, {} LINE events",
                out.display(),
                g.visits,
                g.adverts,
                g.app_reports,
                g.line_events
            );
            Ok(())
        }),
        Command::FakeWebhook { listen, secret } => serve(async move {
            let fake = omo_sim::fake_webhook::FakeWebhook::start(listen, &secret).await?;
            eprintln!("fake webhook listening on {}", fake.url());
            fake.serve_forever().await;
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omo-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// A scenario file's text; `-` is the bundled "a Saturday at two stores".
fn scenario_text(path: &std::path::Path) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        Ok(omo_sim::scenario::SATURDAY.to_owned())
    } else {
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

fn check(path: &std::path::Path) -> anyhow::Result<omo_sim::scenario::Scenario> {
    let text = scenario_text(path)?;
    let s = omo_sim::scenario::Scenario::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}:\n{e}", path.display()))?;
    println!(
        "{}: {:?}, {} stores, {} gateways, {} personas, {} campaigns",
        path.display(),
        s.run.name,
        s.stores.len(),
        s.stores.iter().map(|s| s.gateways.len()).sum::<usize>(),
        s.personas.len(),
        s.campaigns.len()
    );
    Ok(s)
}

fn demo(
    scenario: Option<PathBuf>,
    keep_running: bool,
    hours: Option<f64>,
    (record, replay): (Option<PathBuf>, Option<PathBuf>),
    (logs, postgres): (Option<PathBuf>, Option<omo_sim::demo::OnPostgres>),
) -> ExitCode {
    let run = || -> anyhow::Result<omo_sim::demo::Outcome> {
        let (text, hours, actions) = match &replay {
            Some(path) => {
                let r = omo_sim::demo::read_record(path)?;
                (r.scenario, Some(r.hours), Some(r.actions))
            }
            None => (
                scenario_text(scenario.as_deref().unwrap_or(std::path::Path::new("-")))?,
                hours,
                None,
            ),
        };
        let source = match (&replay, &scenario) {
            (Some(p), _) => format!("{} (its scenario)", p.display()),
            (None, Some(p)) => p.display().to_string(),
            (None, None) => "the bundled scenario".to_owned(),
        };
        let mut s = omo_sim::scenario::Scenario::parse(&text)
            .map_err(|e| anyhow::anyhow!("{source}:\n{e}"))?;
        if let Some(h) = hours {
            s.run.hours = h;
            s = s.checked().map_err(|e| anyhow::anyhow!("--hours: {e}"))?;
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(interruptible(omo_sim::demo::run(omo_sim::demo::Options {
            scenario: s,
            scenario_text: text,
            keep_running,
            bin_dir: None,
            record,
            replay: actions,
            logs,
            postgres,
        })))
    };
    match run() {
        Ok(outcome) => {
            if !keep_running {
                println!("{}", outcome.report);
            }
            if outcome.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("omo-sim demo: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(opts: omo_sim::load::Options) -> ExitCode {
    let run = || -> anyhow::Result<omo_sim::load::Outcome> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(interruptible(omo_sim::load::run(opts)))
    };
    match run() {
        Ok(outcome) => {
            println!("{outcome}");
            if outcome.lossless() {
                ExitCode::SUCCESS
            } else {
                eprintln!("omo-sim load: something was lost or sent twice");
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("omo-sim load: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs `run` until it ends, or fails it on SIGINT or SIGTERM: dropping it stops every child
/// process it started, so none outlives an interrupted run.
async fn interruptible<T>(
    run: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        // The run first: `demo --keep-running` ends its own wait on Ctrl-C, successfully.
        biased;
        r = run => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

/// Runs `server` until it ends or the process is interrupted.
fn serve(server: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        tokio::select! {
            r = server => r,
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}

fn fake_line(listen: SocketAddr, token: &str) -> anyhow::Result<()> {
    let token = token.to_owned();
    serve(async move {
        let fake = omo_sim::fake_line::FakeLine::start(listen, &token).await?;
        eprintln!("fake LINE listening on {}", fake.base_url());
        fake.serve_forever().await;
        Ok(())
    })
}
