//! The dashboard overview's first render: the overview document computed from the store, the
//! registry, the gateways' run-time states and the live figures, then the page's HTML
//! rendered — with 1,000 gateways (800 online) in 100 stores and 100,000 customers, on sled.
//! Prints the server time per render (median, 95th percentile, worst). Target: under 200 ms.
//!
//! `cargo bench -p omo-cloud --bench dashboard` (`-- --gateways N --customers N --renders N`).

mod common;

use common::arg;
use std::time::{Duration, Instant};

use omo_cloud::config::Role;
use omo_cloud::delivery::hour_of;
use omo_cloud::delivery::keys::hourly_counter;
use omo_cloud::http::dashboard::render_overview;
use omo_cloud::identity::{new_customer, save_customer};
use omo_cloud::ingest::gateways::GatewayStates;
use omo_cloud::live::Live;
use omo_cloud::registry::{replace_site, Registry};
use omo_cloud::reports::overview;
use omo_cloud::store::sled_store::SledStore;
use omo_cloud::store::{Commit, Store};
use omo_cloud::tallies::funnel::Counts;
use omo_device_config::broker_auth::PasswordHash;
use omo_device_config::payload::{GatewayState, Status};
use omo_device_config::site::Site;
use omo_device_config::{SigningKey, Timestamp};

fn main() -> anyhow::Result<()> {
    let gateways = arg("--gateways", 1000) as usize;
    let customers = arg("--customers", 100_000) as usize;
    let renders = arg("--renders", 200) as usize;
    let dir = tempfile::tempdir()?;
    let store = SledStore::open(dir.path(), 256 << 20)?;
    let stores = gateways.div_ceil(10).max(1);
    let hash = PasswordHash::new("bench-password").to_string();
    let key = SigningKey::generate().to_hex();
    let mut text = String::new();
    for s in 0..stores {
        text += &format!(
            "[[stores]]\nid = \"s{s}\"\nname = \"Store {s}\"\ntime_zone = \"Asia/Tokyo\"\nlocation = {{ lat = 35.6, lon = 139.7 }}\n\n"
        );
    }
    for g in 0..gateways {
        text += &format!(
            "[[gateways]]\nid = \"g{g}\"\nstore = \"s{}\"\npassword_hash = \"{hash}\"\nsigning_key = \"{key}\"\n\n",
            g % stores
        );
    }
    let site = Site::parse(&text, false).map_err(|p| anyhow::anyhow!("{p:?}"))?;
    store.commit(replace_site(&Registry::default(), &site)?)?;
    let registry = Registry::load(&store)?;
    let created: Timestamp = "2026-11-01T00:00:00.000Z".parse()?;
    for _ in 0..customers / 1000 {
        let mut c = Commit::new();
        for _ in 0..1000 {
            let mut customer = new_customer(created);
            customer.consent.line = true;
            c.extend(save_customer(&store, None, &customer)?);
        }
        store.commit(c)?;
    }
    // A busy day's delivery counters, every hour so far.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut counts = Counts::default();
    for h in 0..24 {
        for channel in ["line", "push", "webhook"] {
            for outcome in ["delivered", "failed", "expired"] {
                counts.add_counter(hourly_counter(
                    hour_of(now_ms) - h * 3_600_000,
                    channel,
                    outcome,
                ));
            }
        }
    }
    let mut c = Commit::new();
    counts.write(&store, &mut c)?;
    store.commit(c)?;
    store.flush()?;
    let mut states = GatewayStates::default();
    let live = Live::new();
    for g in registry.gateways().take(gateways * 8 / 10) {
        let status = Status {
            state: GatewayState::Online,
            ts: Timestamp::new(chrono::Utc::now()),
            uptime_s: 100,
            outbox_depth: 0,
            adverts_per_s: 20.0,
            config_version: 1,
            dropped: 1,
            sw_version: "bench".into(),
            accepts_v: vec![1],
            clock_synced: true,
            epoch: None,
            last_seq: None,
        };
        states.on_status(
            &g.record.id,
            status,
            Timestamp::new(chrono::Utc::now()),
            60_000,
        );
        live.outbox_dropped(g.record.id.as_str(), 1, now_ms);
        live.events("gateway", 50);
    }
    let tz: chrono_tz::Tz = "Asia/Tokyo".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut times = Vec::with_capacity(renders);
    let mut bytes = 0;
    for _ in 0..renders {
        let t = Instant::now();
        let o = overview::overview(&store, &registry, &states, &live, tz, now_ms)?;
        let page = render_overview(o, "csrf".into(), Role::Analyst)?;
        times.push(t.elapsed());
        bytes = page.len();
    }
    let first = times[0];
    times.sort();
    let at = |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "overview render, {gateways} gateways, {customers} customers: first {:.2} ms; over {renders} renders median {:.2} ms, p95 {:.2} ms, worst {:.2} ms ({bytes} bytes of HTML; target < 200 ms)",
        ms(first),
        ms(at(0.5)),
        ms(at(0.95)),
        ms(at(1.0))
    );
    Ok(())
}
