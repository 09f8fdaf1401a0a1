//! `omo-gateway-load [--seconds 60] [--rate 2000] [--devices 500]`: drives a real
//! `omo-gateway run` (replay source, real Mosquitto, a cloud stand-in that acks) with `rate`
//! advertisements per second from `devices` simulated devices, and prints the gateway's CPU use
//! and peak RSS (from /proc). Targets: under 5 % of one core, under 30 MB.
//!
//! Build first: `cargo build --release -p omo-gateway -p omo-tests`, then run
//! `target/release/omo-gateway-load`.

use std::time::{Duration, Instant};

use anyhow::Context;
use omo_device_config::Timestamp;
use omo_gateway::frames::{encode, Eddystone, EddystoneEid, Frame, LineBeacon};
use omo_tests::load::{arg, cpu_seconds, peak_rss_kb};
use omo_tests::scenario::{broker_and_cloud, GatewayUnderTest};
use omo_tests::BrokerKind;

/// Devices: a third phones advertising an Eddystone-EID (fixed here: rotation does not change
/// the load), a third LINE Beacon tags, a third phones that advertise no beacon (counted only for
/// footfall).
fn advert(device: u64) -> Vec<u8> {
    let b = device.to_be_bytes();
    match device % 3 {
        0 => encode(&[Frame::Eddystone(Eddystone::Eid(EddystoneEid {
            tx_power: -20,
            eid: b,
        }))]),
        1 => encode(&[Frame::Line(LineBeacon::new(
            [1, b[4], b[5], b[6], b[7]],
            -59,
            &[],
        ))]),
        _ => vec![
            0x02, 0x01, 0x1a, 0x0a, 0xff, 0x4c, 0x00, 0x10, 0x05, 0x03, 0x1c, 0x0e, 0x5a, b[7],
        ],
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds = arg("--seconds", 60)?;
    let rate = arg("--rate", 2000)?;
    let devices = arg("--devices", 500)?.max(1);
    let gut = GatewayUnderTest::new("s1", "g1", 1)?;
    let (broker, cloud) = broker_and_cloud(&gut, BrokerKind::Mosquitto).await?;

    let replay = gut.dir.path().join("load.jsonl");
    let start = chrono::Utc::now().timestamp_millis();
    let total = seconds * rate;
    let mut text = String::with_capacity(total as usize * 120);
    for i in 0..total {
        let device = i % devices;
        let ts = Timestamp::from_millis(start + (i * 1000 / rate) as i64).context("time")?;
        let rssi = -55 - (device % 35) as i64;
        text += &format!(
            "{{\"ts\":\"{ts}\",\"addr\":\"02:00:00:00:{:02x}:{:02x}\",\"rssi\":{rssi},\"adv\":\"{}\"}}\n",
            device >> 8,
            device & 0xff,
            hex::encode(advert(device))
        );
    }
    std::fs::write(&replay, text)?;
    let config = gut.write_config(broker.port, &replay)?;
    // Measure the gateway, not its debug logging.
    let text = std::fs::read_to_string(&config)?
        .replace("level = \"info,omo_gateway=debug\"", "level = \"warn\"");
    std::fs::write(&config, text)?;
    // The replay clock at ×1 with no ORIGIN: the gateway paces the file in real time.
    let gateway = omo_tests::Process::start(
        &omo_tests::binary("omo-gateway", "omo-gateway")?,
        &["run", "--config", &config.display().to_string()],
        &[],
    )?;
    let pid = gateway.pid();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    let cpu0 = cpu_seconds(pid)?;
    let w0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu = cpu_seconds(pid)? - cpu0;
    let wall = w0.elapsed().as_secs_f64();
    let rss = peak_rss_kb(pid)?;
    let (events, batches, rate_seen) = cloud.with(|s| {
        let statuses = s.statuses.get("g1");
        let best = statuses.map_or(0.0, |v| {
            v.iter().map(|st| st.adverts_per_s).fold(0.0, f64::max)
        });
        (s.events.len(), s.batches, best)
    });
    println!("adverts: {total} over {seconds} s ({rate}/s from {devices} devices)");
    println!(
        "gateway CPU: {:.2} % of one core ({cpu:.2} s over {wall:.1} s)",
        100.0 * cpu / wall
    );
    println!("gateway peak RSS: {:.1} MB", rss as f64 / 1024.0);
    println!("gateway reported up to {rate_seen:.0} adverts/s in its heartbeats (it keeps up if ≈ {rate})");
    println!("cloud stand-in stored {events} events from {batches} payloads");
    Ok(())
}
