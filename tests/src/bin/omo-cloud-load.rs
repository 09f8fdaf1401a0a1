//! `omo-cloud-load [--seconds 20] [--gateways 20] [--window 8] [--batch 20]`: end-to-end ingest
//! benchmark. Starts the real `omo-cloud run` (embedded broker, fresh data dir), connects
//! `gateways` MQTT clients that act as gateways (provisioned credentials, signed batches of
//! `batch` events, at most `window` unacknowledged batches each, as the real outbox does), and
//! counts events whose signed `presence/ack` came back — stored, flushed and acked. Prints
//! events/s, and the cloud's CPU apart from the load generator's own. Target: ≥ 20,000 events/s.
//!
//! Build first: `cargo build --release -p omo-cloud --features failpoints -p omo-tests`, then run
//! `target/release/omo-cloud-load`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::{SeqRanges, Timestamp};
use omo_tests::cloud::{CloudUnderTest, Creds, MqttGateway};
use omo_tests::load::{arg, cpu_seconds, peak_rss_kb};

fn batch(first: u64, n: u64, gateway: usize) -> Vec<PresenceEvent> {
    let at = Timestamp::new(chrono::Utc::now());
    (first..first + n)
        .map(|seq| {
            PresenceEvent::Stay(Sighting {
                seq,
                ts: at,
                beacon: format!("line:{:010x}", (gateway as u64) << 16 | (seq % 500))
                    .parse()
                    .expect("a valid LINE beacon id"),
                rssi: -65.5,
                distance_m: 3.2,
                seen_s: 42.0,
            })
        })
        .collect()
}

/// One simulated gateway: keeps `window` batches in flight until `stop`, counting acked events.
async fn drive(
    mut gw: MqttGateway,
    index: usize,
    window: u64,
    size: u64,
    acked: Arc<AtomicU64>,
    stop: Instant,
) -> anyhow::Result<()> {
    let epoch = Epoch::random();
    let mut next = 1u64;
    let mut outstanding = SeqRanges::new();
    while Instant::now() < stop {
        while outstanding.count() < u128::from(window * size) {
            gw.publish_presence(epoch, batch(next, size, index), SeqRanges::new())
                .await?;
            outstanding.insert_range(next, next + size - 1);
            next += size;
        }
        match gw.next_ack(Duration::from_secs(5)).await? {
            Some(ack) => {
                let settled = outstanding.intersection(&ack.seqs);
                acked.fetch_add(u64::try_from(settled.count())?, Ordering::Relaxed);
                outstanding = outstanding.difference(&ack.seqs);
            }
            None => anyhow::bail!("gateway {index}: no ack within 5 s"),
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds = arg("--seconds", 20)?;
    let gateways = arg("--gateways", 20)? as usize;
    let window = arg("--window", 8)?;
    let size = arg("--batch", 20)?;
    let creds: Vec<Creds> = (0..gateways)
        .map(|i| Creds::new(&format!("s{}", i % 4), &format!("load-{i}")))
        .collect::<Result<_, _>>()?;
    let mut cloud = CloudUnderTest::new(creds.clone(), None)?;
    cloud.start()?;
    let pid = cloud.process().pid();
    let mut clients = Vec::new();
    for c in &creds {
        clients.push(MqttGateway::connect(cloud.mqtt_port, c, &c.password).await?);
    }
    let acked = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let start = Instant::now();
    let stop = start + warmup + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, gw) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(drive(
            gw,
            i,
            window,
            size,
            acked.clone(),
            stop,
        )));
    }
    tokio::time::sleep(warmup).await;
    let (acked0, cloud0, self0) = (
        acked.load(Ordering::Relaxed),
        cpu_seconds(pid)?,
        cpu_seconds(std::process::id())?,
    );
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let (acked1, cloud1, self1) = (
        acked.load(Ordering::Relaxed),
        cpu_seconds(pid)?,
        cpu_seconds(std::process::id())?,
    );
    for t in tasks {
        t.await??;
    }
    let rss = peak_rss_kb(pid)?;
    let stored = cloud.stored_events(creds[0].gateway.as_str()).await?;
    cloud.stop()?;
    let rate = (acked1 - acked0) as f64 / elapsed;
    println!("gateways {gateways}, batches of {size}, window {window}, {seconds} s measured after {} s warm-up", warmup.as_secs());
    println!(
        "stored and acked: {rate:.0} events/s ({} events)",
        acked1 - acked0
    );
    println!(
        "omo-cloud CPU: {:.0} % of one core; peak RSS {:.1} MB",
        100.0 * (cloud1 - cloud0) / elapsed,
        rss as f64 / 1024.0
    );
    println!(
        "load generator CPU: {:.0} % of one core",
        100.0 * (self1 - self0) / elapsed
    );
    println!("(gateway load-0's events counted by the stats stage: {stored})");
    Ok(())
}
