//! `omo-cloud-load [--seconds 20] [--gateways 20] [--window 8] [--batch 20]`: end-to-end ingest
//! benchmark. Starts the real `omo-cloud run` (embedded broker, fresh data dir), connects
//! `gateways` MQTT clients that act as gateways (provisioned credentials, signed batches of
//! `batch` events, at most `window` unacknowledged batches each, as the real outbox does), and
//! counts events whose signed `presence/ack` came back — stored, flushed and acked. Prints
//! events/s, and the cloud's CPU apart from the load generator's own. Target: ≥ 20,000 events/s.
//!
//! `--expired N` runs it twice: once as above (the baseline), then on a cloud whose event log
//! already holds N observations 40 days old, which the retention sweeper deletes while the load
//! runs; it prints the ingest rate while the sweep ran against the baseline's, and how long the
//! sweep took. Target: within 20 % with N = 1,000,000.
//!
//! `--engine postgres` keeps the cloud's state in a throwaway local PostgreSQL cluster instead
//! of sled, and prints the database's CPU beside the cloud's.
//!
//! Build first: `cargo build --release -p omo-cloud --features failpoints -p omo-tests`, then run
//! `target/release/omo-cloud-load`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use omo_cloud::store::postgres::cluster::LocalCluster;
use omo_device_config::payload::{Epoch, PresenceEvent, Sighting};
use omo_device_config::{SeqRanges, Timestamp};
use omo_tests::cloud::{CloudUnderTest, Creds, MqttGateway, Outbound};
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
    stopped: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    let epoch = Epoch::random();
    let mut next = 1u64;
    let mut outstanding = SeqRanges::new();
    while Instant::now() < stop && !stopped.load(Ordering::Relaxed) {
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

/// Fills the stopped cloud's event log with `n` gateway sightings received 40 days ago, already
/// read by every log consumer: what the retention sweeper finds expired.
fn prefill(cloud: &CloudUnderTest, creds: &Creds, n: u64) -> anyhow::Result<()> {
    use omo_cloud::ingest::record::{GatewayEvent, Record};
    use omo_cloud::store::event_log::{advance, position, EventLog};
    use omo_cloud::store::sled_store::SledStore;
    use omo_cloud::store::{Commit, Store};
    let store = SledStore::open(&cloud.dir.path().join("data"), 64 << 20)?;
    let mut log = EventLog::open(&store)?;
    let received = Timestamp::new(chrono::Utc::now() - chrono::Days::new(40));
    let epoch = Epoch::random();
    let mut written = 0;
    while written < n {
        let mut c = Commit::new();
        let chunk = (n - written).min(10_000);
        for event in batch(written + 1, chunk, 0) {
            let record = Record::Gateway(GatewayEvent {
                gateway: creds.gateway.clone(),
                store: creds.store.clone(),
                epoch,
                event,
                event_ts: received,
                received,
            });
            log.append(&mut c, &record.encode());
        }
        store.commit(c)?;
        written += chunk;
    }
    let mut c = Commit::new();
    for consumer in [
        omo_cloud::visits::stage::CONSUMER,
        omo_cloud::stats::CONSUMER,
    ] {
        advance(
            &mut c,
            consumer,
            position(&store, consumer)?,
            log.next_offset(),
        );
    }
    store.commit(c)?;
    store.flush()?;
    Ok(())
}

/// What one run measured.
struct Measured {
    rate: f64,
    events: u64,
    seconds: f64,
    cloud_cpu: f64,
    /// The database's CPU (PostgreSQL only).
    db_cpu: Option<f64>,
    self_cpu: f64,
    rss_mb: f64,
    stored: u64,
    /// Observations the sweeper deleted, and how long it took from the first deletion seen.
    swept: Option<(f64, f64)>,
}

fn deleted_observations(metrics: &str) -> f64 {
    omo_tests::cloud::metric(
        metrics,
        "omo_retention_deleted_total",
        &["kind=\"observations\""],
    )
}

/// Runs the load on a fresh cloud (with `expired` old observations in its log) for `seconds`
/// after a warm-up; with `expired` > 0, measures while the sweeper deletes them instead.
async fn run(
    creds: &[Creds],
    (seconds, window, size): (u64, u64, u64),
    expired: u64,
    postgres: Option<&LocalCluster>,
) -> anyhow::Result<Measured> {
    let mut cloud = match postgres {
        None => CloudUnderTest::new(creds.to_vec(), None)?,
        Some(cluster) => {
            let db = format!(
                "load{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis()
            );
            cluster.create_database(&db).map_err(anyhow::Error::msg)?;
            CloudUnderTest::on_postgres(creds.to_vec(), &cluster.url(&db), cluster.password())?
        }
    };
    cloud.set_outbound(Outbound {
        sections: "[retention]\nsweep_interval_s = 5\n".into(),
        ..Outbound::default()
    })?;
    if expired > 0 {
        prefill(&cloud, &creds[0], expired)?;
    }
    cloud.start()?;
    let pid = cloud.process().pid();
    let mut clients = Vec::new();
    for c in creds {
        clients.push(MqttGateway::connect(cloud.mqtt_port, c, &c.password).await?);
    }
    let acked = Arc::new(AtomicU64::new(0));
    let warmup = Duration::from_secs(2);
    let limit = Duration::from_secs(if expired > 0 { 300 } else { seconds });
    let stop = Instant::now() + warmup + limit + Duration::from_secs(1);
    let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (i, gw) in clients.into_iter().enumerate() {
        let stopped = stopped.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            drive(gw, i, window, size, acked, stop, &stopped).await
        }));
    }
    tokio::time::sleep(warmup).await;
    let db_cpu = || -> f64 {
        postgres.map_or(0.0, |c| {
            c.processes()
                .into_iter()
                .filter_map(|p| cpu_seconds(p).ok())
                .sum()
        })
    };
    let snapshot = || -> anyhow::Result<(u64, f64, f64, Instant, f64)> {
        Ok((
            acked.load(Ordering::Relaxed),
            cpu_seconds(pid)?,
            cpu_seconds(std::process::id())?,
            Instant::now(),
            db_cpu(),
        ))
    };
    // Both runs read /metrics every 100 ms, so they load the cloud alike.
    let (mut from, mut swept) = (snapshot()?, None);
    let mut sweep_started: Option<Instant> = None;
    let to = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let deleted = deleted_observations(&cloud.metrics().await?);
        if expired == 0 {
            if from.3.elapsed() >= limit {
                break snapshot()?;
            }
            continue;
        }
        if deleted > 0.0 && sweep_started.is_none() {
            // The sweep began: measure from here.
            sweep_started = Some(Instant::now());
            from = snapshot()?;
        }
        if deleted >= expired as f64 {
            let started = sweep_started.unwrap_or(from.3);
            swept = Some((deleted, started.elapsed().as_secs_f64()));
            break snapshot()?;
        }
        anyhow::ensure!(
            from.3.elapsed() < limit,
            "the sweeper deleted {deleted} of {expired} in {limit:?}"
        );
    };
    stopped.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    let rss = peak_rss_kb(pid)?;
    let stored = cloud.stored_events(creds[0].gateway.as_str()).await?;
    cloud.stop()?;
    let seconds = to.3.duration_since(from.3).as_secs_f64();
    Ok(Measured {
        rate: (to.0 - from.0) as f64 / seconds,
        events: to.0 - from.0,
        seconds,
        cloud_cpu: 100.0 * (to.1 - from.1) / seconds,
        db_cpu: postgres.map(|_| 100.0 * (to.4 - from.4) / seconds),
        self_cpu: 100.0 * (to.2 - from.2) / seconds,
        rss_mb: rss as f64 / 1024.0,
        stored,
        swept,
    })
}

fn print(label: &str, m: &Measured) {
    println!(
        "{label}: stored and acked {:.0} events/s ({} events in {:.1} s); omo-cloud CPU {:.0} % of one core, peak RSS {:.1} MB; load generator CPU {:.0} %",
        m.rate, m.events, m.seconds, m.cloud_cpu, m.rss_mb, m.self_cpu
    );
    if let Some(db) = m.db_cpu {
        println!("  PostgreSQL CPU {db:.0} % of one core");
    }
    if let Some((deleted, seconds)) = m.swept {
        println!(
            "  the sweeper deleted {deleted:.0} expired observations in {seconds:.1} s ({:.0}/s)",
            deleted / seconds.max(1e-9)
        );
    }
    println!(
        "  (gateway load-0's events counted by the stats stage: {})",
        m.stored
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let seconds = arg("--seconds", 20)?;
    let gateways = arg("--gateways", 20)? as usize;
    let window = arg("--window", 8)?;
    let size = arg("--batch", 20)?;
    let expired = arg("--expired", 0)?;
    let engine = std::env::args()
        .skip_while(|a| a != "--engine")
        .nth(1)
        .unwrap_or_else(|| "sled".into());
    let cluster = match engine.as_str() {
        "sled" => None,
        "postgres" if expired > 0 => anyhow::bail!("--expired runs on sled only"),
        "postgres" => Some(LocalCluster::start().map_err(anyhow::Error::msg)?),
        other => anyhow::bail!("--engine: {other:?} is not sled or postgres"),
    };
    let creds: Vec<Creds> = (0..gateways)
        .map(|i| Creds::new(&format!("s{}", i % 4), &format!("load-{i}")))
        .collect::<Result<_, _>>()?;
    println!(
        "gateways {gateways}, batches of {size}, window {window}, measured after a 2 s warm-up"
    );
    let base = run(&creds, (seconds, window, size), 0, cluster.as_ref()).await?;
    print(&format!("ingest alone ({engine})"), &base);
    if expired > 0 {
        let swept = run(&creds, (seconds, window, size), expired, None).await?;
        print(
            &format!("ingest while the retention sweeper deletes {expired} expired observations"),
            &swept,
        );
        println!(
            "ingest rate while sweeping: {:.1} % of the rate alone (target: at least 80 %)",
            100.0 * swept.rate / base.rate.max(1e-9)
        );
    }
    Ok(())
}
