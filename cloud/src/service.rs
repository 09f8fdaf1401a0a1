//! `omo-cloud run`: opens the store, loads the registry, starts the broker (embedded or
//! external), the ingest writer, the pipeline stages and the HTTP server, and stops them on
//! SIGINT/SIGTERM after the last group is flushed.

use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use omo_device_config::Clock;
use tokio::sync::{mpsc, watch};

use crate::broker;
use crate::cluster::lease::{Assignment, Leases, Work};
use crate::config::{CloudConfig, Engine};
use crate::delivery;
use crate::http::{self, AppState};
use crate::identity::eid_resolver::EID_SKEW_S;
use crate::identity::{self, eid_resolver::EidResolver};
use crate::ingest::presence::TimeLimits;
use crate::ingest::{Limits, Writer};
use crate::registry::Registry;
use crate::stats;
use crate::store::barrier::BarrierStore;
use crate::store::postgres::PgStore;
use crate::store::sled_store::SledStore;
use crate::store::Store;
use crate::visits;

/// Opens the store `data.engine` names: the sled data dir (saying clearly when another
/// process holds it) or the PostgreSQL database (creating or migrating its schema).
pub fn open_store(config: &CloudConfig) -> anyhow::Result<Arc<dyn Store>> {
    match (config.data.engine, &config.data.postgres) {
        (Engine::Postgres, Some(pg)) => {
            let store = PgStore::open(pg).map_err(|e| anyhow::anyhow!("data.postgres: {e}"))?;
            Ok(Arc::new(store))
        }
        (Engine::Postgres, None) => anyhow::bail!("data.postgres: must be set"),
        (Engine::Sled, _) => Ok(Arc::new(open_sled(config)?)),
    }
}

/// Where the data lives, for the log (the PostgreSQL URL without its password).
pub fn data_desc(config: &CloudConfig) -> String {
    match (config.data.engine, &config.data.postgres) {
        (Engine::Postgres, Some(pg)) => format!("postgres {}", pg.url_for_logs()),
        _ => config.data.dir.display().to_string(),
    }
}

fn open_sled(config: &CloudConfig) -> anyhow::Result<SledStore> {
    SledStore::open(&config.data.dir, u64::from(config.data.cache_mb) << 20).map_err(|e| {
        let text = e.to_string();
        if text.contains("lock")
            || text.contains("WouldBlock")
            || text.contains("Resource temporarily unavailable")
        {
            anyhow::anyhow!(
                "data.dir {}: another process (a running omo-cloud?) holds it: {text}",
                config.data.dir.display()
            )
        } else {
            anyhow::anyhow!("data.dir {}: {text}", config.data.dir.display())
        }
    })
}

/// The visit rule that `exit_timeout_s` outlasts every gateway's stay interval, checked
/// against the configs stored for the gateways (the config file alone knows only the default
/// interval; a config pushed later is checked when it is pushed).
fn check_stay_intervals(
    visits: &visits::engine::VisitParams,
    registry: &Registry,
) -> anyhow::Result<()> {
    let problems = visits.problems("visits", registry.max_stay_interval_s());
    if problems.is_empty() {
        return Ok(());
    }
    let text: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
    anyhow::bail!("{}", text.join("; "))
}

/// Runs the service until a shutdown signal.
pub async fn run(config: CloudConfig, clock: Clock) -> anyhow::Result<()> {
    let instance = config.cluster.instance_name();
    let shared_db = config.data.engine == Engine::Postgres;
    let metrics = install_metrics(shared_db.then_some(instance.as_str()))?;
    let (store, registry, secret) = open_data(&config)?;
    if shared_db && config.mqtt.url.is_none() {
        let now = chrono::Utc::now().timestamp_millis();
        let others: Vec<String> = crate::cluster::lease::live_instances(store.as_ref(), now)?
            .into_iter()
            .filter(|i| *i != instance)
            .collect();
        if !others.is_empty() {
            anyhow::bail!(
                "mqtt.url: another instance ({}) runs on this database, and the embedded broker \
                 serves one instance: give every instance mqtt.url (a shared broker) and \
                 mqtt.share_group",
                others.join(", ")
            );
        }
    }
    let (mqtt_tx, mqtt_rx) = mpsc::channel(4096);
    let (outbound, broker_desc) = match &config.mqtt.url {
        None => (
            broker::start_embedded(config.mqtt.listen, registry.clone(), mqtt_tx)?,
            format!("embedded on {}", config.mqtt.listen),
        ),
        Some(url) => (
            broker::connect_external(&config.mqtt, url, mqtt_tx)?,
            format!("external {url}"),
        ),
    };
    let outbound = Arc::new(outbound);
    let (writer, shared) = Writer::open(
        store.clone(),
        registry.clone(),
        clock.clone(),
        outbound.clone(),
        ingest_limits(&config),
    )?;
    let (http_tx, http_rx) = mpsc::channel(1024);
    let writer_task = tokio::spawn(writer.run(mqtt_rx, http_rx));
    let stages = start_stages(
        &config,
        (&store, &registry, secret),
        (&clock, &instance),
        &shared,
    )?;
    let leases = stages.leases.clone();
    if store.shared() {
        tokio::spawn(refresh_shared(
            store.clone(),
            registry.clone(),
            stages.eids.clone(),
        ));
    }
    let state = AppState {
        store: store.clone(),
        registry,
        gateways: shared.gateways.clone(),
        clock,
        ingest: http_tx,
        outbound,
        config: Arc::new(config.clone()),
        metrics: Some(metrics),
        eids: stages.eids,
        erasures: stages.erasures.clone(),
        registry_writes: Arc::new(tokio::sync::Mutex::new(())),
        secret,
        live: shared.live.clone(),
    };
    let listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("http.listen {}: cannot listen", config.http.listen))?;
    tracing::info!(http = %config.http.listen, broker = %broker_desc, data = %data_desc(&config), "omo-cloud ready");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("HTTP server")?;
    writer_task.abort();
    if let Some(leases) = &leases {
        // Another instance takes this one's work at once, not after the lease time.
        let (s, l) = (store.clone(), leases.clone());
        match tokio::task::spawn_blocking(move || l.release_all(s.as_ref())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "leases not let go at the stop"),
            Err(e) => tracing::warn!(error = %e, "leases not let go at the stop"),
        }
    }
    store.flush()?;
    tracing::info!("stopped");
    Ok(())
}

/// The Prometheus recorder `/metrics` renders, with the offer latency's buckets.
/// The Prometheus recorder; each sample labelled `omo_instance` with this instance's name when
/// several may share the database (fleet figures come from the store).
fn install_metrics(
    instance: Option<&str>,
) -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    if let Some(name) = instance {
        builder = builder.add_global_label("omo_instance", name);
    }
    builder
        .set_buckets_for_metric(
            Matcher::Full("omo_event_to_offer_seconds".into()),
            &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0],
        )
        .context("the offer latency buckets")?
        .install_recorder()
        .context("installing the metrics recorder")
}

/// The store, the registry and the server secret.
type Data = (Arc<BarrierStore>, Arc<RwLock<Registry>>, [u8; 32]);

/// The store, the registry (its stay intervals checked) and the server secret, with the
/// report tallies filled before any writer starts (in a store written before they existed).
fn open_data(config: &CloudConfig) -> anyhow::Result<Data> {
    let store = Arc::new(BarrierStore::new(open_store(config)?));
    let registry = Arc::new(RwLock::new(
        Registry::load(store.as_ref()).context("loading the registry")?,
    ));
    check_stay_intervals(&config.visits, &registry.read().expect("registry lock"))?;
    let secret = crate::secrets::server_secret(store.as_ref())?;
    let partitions = crate::cluster::settle(store.as_ref(), config.cluster.partitions)?;
    tracing::debug!(partitions, "the visit and decision stages' partitions");
    let started = std::time::Instant::now();
    if let Some(hours) = crate::reports::tally::backfill(store.as_ref(), &secret)
        .context("filling the store reports' tallies")?
    {
        tracing::info!(
            hours,
            seconds = started.elapsed().as_secs_f64(),
            "store report tallies filled from the stored rows"
        );
    }
    Ok((store, registry, secret))
}

/// What ingest accepts: how far in the future or the past an event may be, a group's size,
/// a gateway clock's offset (`[ingest]`, seconds turned into ms).
fn ingest_limits(config: &CloudConfig) -> Limits {
    let ms = |s: u64| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX);
    Limits {
        times: TimeLimits {
            max_future_ms: ms(config.ingest.max_future_s),
            max_age_ms: ms(config.ingest.max_age_s),
        },
        max_group: config.ingest.max_group,
        max_clock_offset_ms: ms(config.ingest.max_clock_offset_s),
    }
}

/// What the HTTP API shares with the stages.
struct Stages {
    eids: Arc<Mutex<EidResolver>>,
    erasures: Arc<tokio::sync::Notify>,
    /// This instance's leases, let go at a clean stop (none: it runs everything).
    leases: Option<Arc<Leases>>,
}

/// How this instance learns its share of the pipeline's work: by leases on a database several
/// instances may share (unless `cluster.leases` is off), everything on sled (one process).
fn share_work(
    config: &CloudConfig,
    store: Arc<dyn Store>,
    instance: &str,
) -> anyhow::Result<(watch::Receiver<Assignment>, Option<Arc<Leases>>)> {
    let work = Work {
        partitioned: vec![visits::stage::CONSUMER, crate::campaigns::stage::CONSUMER],
        single: vec![stats::CONSUMER, crate::privacy::retention::NAME],
        count: crate::cluster::count(store.as_ref())?,
    };
    let shared = config.data.engine == Engine::Postgres && config.cluster.leases;
    let leases = shared.then(|| {
        Arc::new(Leases::new(
            instance.to_owned(),
            i64::from(config.cluster.lease_s) * 1000,
            work.clone(),
        ))
    });
    if let Some(l) = &leases {
        tracing::info!(instance = %l.me, partitions = work.count, "sharing the pipeline by leases");
    }
    let (tx, rx) = watch::channel(Assignment::default());
    tokio::spawn(crate::cluster::lease::keep(store, leases.clone(), work, tx));
    Ok((rx, leases))
}

/// Starts the consumers of the log — statistics, the visit stage, the decision stage — the
/// delivery worker and the retention sweeper.
fn start_stages(
    config: &CloudConfig,
    (store, registry, secret): (&Arc<BarrierStore>, &Arc<RwLock<Registry>>, [u8; 32]),
    (clock, instance): (&Clock, &str),
    shared: &crate::ingest::Shared,
) -> anyhow::Result<Stages> {
    let dyn_store: Arc<dyn Store> = store.clone();
    let (assignment, leases) = share_work(config, dyn_store.clone(), instance)?;
    tokio::spawn(stats::run(
        dyn_store.clone(),
        shared.log_end.clone(),
        assignment.clone(),
    ));
    let eids = Arc::new(Mutex::new(EidResolver::new(
        identity::all_eid_keys(store.as_ref())?,
        EID_SKEW_S,
    )));
    let visit_inputs = Arc::new(visits::stage::Inputs {
        registry: registry.clone(),
        eids: eids.clone(),
        params: config.visits,
        id_key: secret,
        profiles: config.profiles.clone(),
    });
    let erasures = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(visits::stage::run(
        dyn_store.clone(),
        visit_inputs,
        (shared.log_end.clone(), assignment.clone()),
        erasures.clone(),
        shared.live.clone(),
    ));
    let sent = Arc::new(tokio::sync::Notify::new());
    let decide_inputs = Arc::new(crate::campaigns::stage::Inputs {
        registry: registry.clone(),
        secret,
        sent: sent.clone(),
        link_base: config.delivery.link_base.clone(),
        profiles: config.profiles.clone(),
    });
    tokio::spawn(crate::campaigns::stage::run(
        dyn_store.clone(),
        decide_inputs,
        shared.log_end.clone(),
        assignment.clone(),
    ));
    let worker = Arc::new(
        delivery::worker::Worker::new(
            dyn_store,
            clock.clone(),
            config.delivery_senders()?,
            config.delivery_settings(clock),
        )
        .with_live(shared.live.clone()),
    );
    tokio::spawn(worker.run(sent));
    tokio::spawn(crate::privacy::retention::run(
        store.clone(),
        clock.clone(),
        config.retention,
        assignment,
    ));
    Ok(Stages {
        eids,
        erasures,
        leases,
    })
}

/// On a database several instances share: what another instance changed of the registry
/// (stores, gateways, zones) and of the enrolled EID keys is read again every 2 seconds.
async fn refresh_shared(
    store: Arc<BarrierStore>,
    registry: Arc<RwLock<Registry>>,
    eids: Arc<Mutex<EidResolver>>,
) {
    // What each was last read as: a digest of the registry's entries, and of the EID index
    // (its keys name the enrolled keys, so the customers are read only when it changed).
    let mut seen: (Option<u64>, Option<u64>) = (None, None);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let (s, r, e, mut last) = (store.clone(), registry.clone(), eids.clone(), seen);
        let refreshed = tokio::task::spawn_blocking(move || {
            use crate::store::{barrier::scan_prefix, Space};
            let registry_now = digest(&scan_prefix(s.as_ref(), Space::Registry, b"", usize::MAX)?);
            // The first pass applies too: a change between the start's load and it counts.
            if last.0 != Some(registry_now) {
                let fresh = Registry::load(s.as_ref())?;
                *r.write().expect("registry lock") = fresh;
                if last.0.is_some() {
                    tracing::info!("registry read again: another instance changed it");
                }
            }
            let eids_now = digest(&scan_prefix(
                s.as_ref(),
                Space::Identity,
                identity::keys::EIDS.as_bytes(),
                usize::MAX,
            )?);
            if last.1 != Some(eids_now) {
                let keys = identity::all_eid_keys(s.as_ref())?;
                e.lock().expect("eid resolver lock").set_keys(keys);
            }
            last = (Some(registry_now), Some(eids_now));
            Ok::<_, anyhow::Error>(last)
        })
        .await;
        match refreshed {
            Ok(Ok(now)) => seen = now,
            Ok(Err(e)) => tracing::warn!(error = %e, "registry and EID keys not read again"),
            Err(e) => tracing::warn!(error = %e, "registry and EID keys not read again"),
        }
    }
}

/// A digest of entries, to tell whether they changed since (in this process only).
fn digest(entries: &[crate::store::Entry]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    entries.hash(&mut h);
    h.finish()
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry;
    use crate::visits::engine::VisitParams;
    use omo_device_config::site::Site;

    /// A gateway config stored with a stay interval longer than the visit exit timeout (the
    /// timeout lowered in cloud.toml since) stops the start, naming the key.
    #[test]
    fn a_stored_stay_interval_the_exit_timeout_would_cut_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let site = Site::parse(
            include_str!("../../device-config/examples/site.toml"),
            false,
        )
        .unwrap();
        store
            .commit(registry::replace_site(&Registry::default(), &site).unwrap())
            .unwrap();
        let reg = Registry::load(&store).unwrap();
        let params = VisitParams::default();
        check_stay_intervals(&params, &reg).unwrap();
        let gw = site.gateways[0].id.clone();
        let config = r#"{"version":2,"presence":{"stay_interval_s":400}}"#;
        let (c, _) = registry::set_desired_config(&reg, &gw, config, 900).unwrap();
        store.commit(c).unwrap();
        let reg = Registry::load(&store).unwrap();
        assert_eq!(reg.max_stay_interval_s(), 400);
        let err = check_stay_intervals(&params, &reg).unwrap_err().to_string();
        assert!(err.contains("visits.exit_timeout_s"), "{err}");
        assert!(err.contains("(400 s)"), "{err}");
        let longer = VisitParams {
            exit_timeout_s: 900,
            ..params
        };
        check_stay_intervals(&longer, &reg).unwrap();
    }
}
