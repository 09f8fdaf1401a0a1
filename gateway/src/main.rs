//! `omo-gateway`: the store gateway's command line.
//!
//! `decode HEX` prints one JSON object per beacon frame (exit 0), exits 1 when the
//! advertisement holds none, and 2 with one line on stderr when the input is malformed.
//! `decode -` decodes one advertisement per stdin line (exit 0 unless I/O fails, then 3).

use std::io::{BufWriter, Write};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use omo_device_config::gateway_config::{GatewayConfig, LogFormat};
use omo_device_config::{Clock, ClockSpec};
use omo_gateway::decode_cli::{decode_hex, decode_lines};
use omo_gateway::frames::Frame;

#[derive(Parser)]
#[command(name = "omo-gateway", version, about = "omo store gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: scan, detect presence, forward it to the cloud.
    Run {
        /// The gateway's TOML config (see device-config/examples/gateway.toml).
        #[arg(long)]
        config: std::path::PathBuf,
        /// The process clock: `wall`, or START@SPEED (an RFC 3339 start and a speed factor).
        #[arg(long, default_value = "wall")]
        clock: ClockSpec,
        /// Runs this gateway's clock SECONDS off `--clock` (negative: behind) and reports it as
        /// not synchronised: a drifting gateway clock, for fault tests and demos.
        #[arg(
            long,
            value_name = "SECONDS",
            default_value_t = 0,
            allow_negative_numbers = true,
            value_parser = clap::value_parser!(i64).range(-31_536_000..=31_536_000)
        )]
        clock_skew_s: i64,
    },
    /// Print what the configured scan source hears (one JSON line per beacon advert), for
    /// installers; addresses are not printed.
    Scan {
        #[arg(long)]
        config: std::path::PathBuf,
        #[arg(long, default_value = "wall")]
        clock: ClockSpec,
    },
    /// Decode one advertisement's AD structures given as hex, or `-` for one per stdin line.
    Decode {
        /// The AD structures as on air (length, type, value…), in hex; `-` reads stdin.
        hex: String,
    },
}

fn main() -> ExitCode {
    // Crash tests name failpoints in FAILPOINTS; only builds with the feature read it.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    match Cli::parse().command {
        Command::Run {
            config,
            clock,
            clock_skew_s,
        } => run(&config, clock, clock_skew_s, false),
        Command::Scan { config, clock } => run(&config, clock, 0, true),
        Command::Decode { hex } if hex == "-" => {
            let stdin = std::io::stdin().lock();
            let stdout = BufWriter::new(std::io::stdout().lock());
            match decode_lines(stdin, stdout) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("omo-gateway decode: {e}");
                    ExitCode::from(3)
                }
            }
        }
        Command::Decode { hex } => match decode_hex(hex.as_bytes()) {
            Ok(frames) if frames.is_empty() => {
                eprintln!("omo-gateway decode: no beacon frame in this advertisement");
                ExitCode::from(1)
            }
            Ok(frames) => print_frames(&frames),
            Err(e) => {
                eprintln!("omo-gateway decode: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn print_frames(frames: &[Frame]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for f in frames {
        if writeln!(out, "{}", f.to_json()).is_err() {
            return ExitCode::from(3);
        }
    }
    ExitCode::SUCCESS
}

fn run(path: &std::path::Path, clock: ClockSpec, skew_s: i64, scan_only: bool) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("omo-gateway: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let config = match GatewayConfig::from_toml(&text, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(problems) => {
            for p in problems {
                eprintln!("{}:{p}", path.display());
            }
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("omo-gateway: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let clock = Clock::from_spec(&clock).skewed(skew_s.saturating_mul(1000));
    let result = if scan_only {
        runtime.block_on(omo_gateway::daemon::scan(config, clock))
    } else {
        runtime.block_on(omo_gateway::daemon::run(config, clock))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omo-gateway: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(config: &GatewayConfig) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
