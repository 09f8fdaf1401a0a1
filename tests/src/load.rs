//! What the load benchmarks share: their command-line numbers, and (from the simulators) a
//! process's CPU time and peak memory from /proc.

use anyhow::Context;

pub use omo_sim::procs::{cpu_seconds, peak_rss_kb};

/// The number after `name` on the command line, or `default`.
pub fn arg(name: &str, default: u64) -> anyhow::Result<u64> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .context(format!("{name} needs a value"))?
            .parse()
            .context(format!("{name} must be a number")),
        None => Ok(default),
    }
}
