//! `omo-sim`: the simulators' command line. `fake-line` runs the fake LINE Messaging API on
//! loopback (see `omo_sim::fake_line`) until interrupted.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "omo-sim", version, about = "omo simulators")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::FakeLine { listen, token } => fake_line(listen, &token),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omo-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn fake_line(listen: SocketAddr, token: &str) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let fake = omo_sim::fake_line::FakeLine::start(listen, token).await?;
        eprintln!("fake LINE listening on {}", fake.base_url());
        tokio::select! {
            _ = fake.serve_forever() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}
