//! What the bench binaries share (each uses part of it).
#![allow(dead_code)]

pub mod counted;

/// The value after `name` on the command line (`-- --rate 5000`), or `default`.
pub fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The text after `name` on the command line (`-- --time-zone Asia/Kolkata`), or `default`.
pub fn arg_text(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

/// Runs a stage's `step` until it reads nothing; returns how many records it read in all.
pub fn until_caught_up<E>(mut step: impl FnMut() -> Result<usize, E>) -> Result<usize, E> {
    let mut read = 0;
    loop {
        match step()? {
            0 => return Ok(read),
            n => read += n,
        }
    }
}

/// A time from ms since the epoch.
pub fn ts(ms: i64) -> omo_device_config::Timestamp {
    omo_device_config::Timestamp::from_millis(ms).expect("a time")
}
