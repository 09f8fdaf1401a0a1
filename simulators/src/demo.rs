//! `omo-sim demo`: the whole system on one machine, on one clock. It starts the fake LINE and
//! FCM servers, imports the scenario's site into a fresh cloud and runs it (embedded broker),
//! starts one gateway per scenario gateway reading adverts from its stdin (the replay source),
//! registers the shoppers and the campaigns, then drives the day: adverts to the gateways, the
//! app's reports and the LINE platform's beacon webhooks, each when the clock reaches it. A
//! shopper who got an offer comes back with the scenario's `return_after_offer` probability,
//! any other with `return_without_offer` (the true effect), and some redeem their coupon at
//! the till. At the end it prints what the cloud reports and checks the scenario's
//! expectations.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use omo_device_config::Clock;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, Command};

use crate::procs::{
    bin_dir, binary, free_port, futures_unordered, import_site, keep_on_error, spawn,
    spawn_fake_line, wait_port, Api, Proc,
};
use crate::scenario::Scenario;
use crate::synth::{self, Phone, Shopper, Visit};
use crate::world;

/// The throwaway service-account key the demo's fake FCM trusts.
const FCM_KEY: &str = include_str!("../fixtures/fcm-service-account.json");
/// Share of shoppers who got an offer and came back that redeem its coupon.
const REDEEM_SHARE: f64 = 0.5;
/// Share of store visits that end with a purchase at the till.
const PURCHASE_SHARE: f64 = 0.35;
/// Of those purchases, the share the POS cannot name a customer for.
const ANONYMOUS_SHARE: f64 = 0.2;
/// Share of first visits followed later that day by an order in the online shop.
const ONLINE_SHARE: f64 = 0.12;
/// Share of app shoppers' visits with a QR check-in at the entrance.
const CHECKIN_SHARE: f64 = 0.15;
/// What the stores sell: (sku, category, least and most price in yen).
const GOODS: [(&str, &str, u32, u32); 6] = [
    ("latte-m", "coffee", 450, 650),
    ("drip-l", "coffee", 380, 520),
    ("scone", "bakery", 280, 420),
    ("beans-200g", "beans", 1200, 2400),
    ("tumbler", "goods", 2200, 4800),
    ("gift-box", "goods", 3000, 6000),
];

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub scenario: Scenario,
    /// The scenario file's text, as a run record keeps it.
    pub scenario_text: String,
    /// Leave the cloud running after the report (until interrupted).
    pub keep_running: bool,
    /// Where `omo-cloud` and `omo-gateway` are (default: beside this program).
    pub bin_dir: Option<PathBuf>,
    /// Write everything the driver hands the system, with its time, to this run record.
    pub record: Option<PathBuf>,
    /// Drive the day from this run record's actions (with their line numbers) instead of
    /// simulating shoppers' choices.
    pub replay: Option<Vec<(usize, Recorded)>>,
    /// Keep every process's log (and data dir) in a new directory under this one, with the
    /// cloud and the gateways logging at debug level.
    pub logs: Option<PathBuf>,
}

/// One line of a run record (NDJSON): the first line is the header, the rest what the driver
/// did at a clock time (Unix ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Recorded {
    /// The run's scenario (the file's text) and its length after `--hours`.
    Header {
        omo_run: u32,
        scenario: String,
        hours: f64,
    },
    /// A replay line written to a gateway's stdin.
    Advert {
        at: i64,
        gateway: String,
        line: String,
    },
    /// An app report of a shopper (by their number in the scenario's population).
    Report {
        at: i64,
        shopper: usize,
        body: String,
    },
    /// A LINE webhook event.
    Line { at: i64, event: String },
    /// A shopper came back (their visit's adverts and reports follow).
    Return { at: i64, shopper: usize },
    /// A shopper redeems the coupon of their offer at the till.
    Redeem {
        at: i64,
        shopper: usize,
        amount: u32,
    },
    /// The scenario's fault (by index) starts.
    Fault { at: i64, index: usize },
    /// A purchase sent by a store's POS or the online shop (the body of `POST /v1/purchases`).
    Purchase { at: i64, body: String },
    /// A shopper's app scans a store's QR code (by the store's id).
    Checkin {
        at: i64,
        shopper: usize,
        store: String,
    },
}

/// A run record as read: its scenario text and hours, and the actions with their line numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    pub scenario: String,
    pub hours: f64,
    pub actions: Vec<(usize, Recorded)>,
}

/// Reads a run record, naming the line of any problem.
pub fn read_record(path: &Path) -> anyhow::Result<RunRecord> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    let header = match lines.next() {
        Some((_, l)) => serde_json::from_str::<Recorded>(l)
            .with_context(|| format!("{} line 1: not a run record header", path.display()))?,
        None => bail!("{}: empty", path.display()),
    };
    let Recorded::Header {
        omo_run: 1,
        scenario,
        hours,
    } = header
    else {
        bail!(
            "{} line 1: not a version 1 run record header",
            path.display()
        );
    };
    let mut actions = Vec::new();
    for (i, l) in lines {
        let r: Recorded = serde_json::from_str(l)
            .with_context(|| format!("{} line {}", path.display(), i + 1))?;
        if matches!(r, Recorded::Header { .. }) {
            bail!("{} line {}: a second header", path.display(), i + 1);
        }
        actions.push((i + 1, r));
    }
    Ok(RunRecord {
        scenario,
        hours,
        actions,
    })
}

/// What the run found, and whether the expectations held.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub report: String,
    pub failures: Vec<String>,
}

/// What the driver did, for the report.
struct Driven {
    returns: usize,
    redeemed: usize,
    offers_by_channel: [(&'static str, usize); 2],
    lost: Lost,
    /// Scenario faults started at the fake servers (those after a shortened day never are).
    faults_started: usize,
    /// Driven from a run record: the shoppers' choices were made in another run, against other
    /// offers, so the lift is reported but not checked.
    replayed: bool,
    /// Recorded redemptions of shoppers with no offer in this run.
    redeem_skipped: usize,
}

/// What the driver could not hand over to the system.
#[derive(Debug, Default, Clone, Copy)]
struct Lost {
    adverts: u64,
    reports: u64,
    webhooks: u64,
    purchases: u64,
    checkins: u64,
}

/// A purchase as a POS or the online shop sends it: one to three lines of the stores' goods.
fn purchase_body(
    order_id: &str,
    store: Option<&str>,
    customer: Value,
    at_ms: i64,
    rng: &mut rand::rngs::StdRng,
) -> Value {
    let lines: Vec<Value> = (0..rng.random_range(1..=3))
        .map(|_| {
            let (sku, category, low, high) = GOODS[rng.random_range(0..GOODS.len())];
            let quantity = rng.random_range(1..=2u32);
            let amount = f64::from(rng.random_range(low..=high) / 10 * 10 * quantity);
            json!({"sku": sku, "category": category, "quantity": quantity, "amount": amount})
        })
        .collect();
    let mut body = json!({
        "order_id": order_id,
        "channel": if store.is_some() { "store" } else { "online" },
        "customer": customer,
        "at": synth::ts_text(at_ms),
        "currency": "JPY",
        "lines": lines,
    });
    if let Some(s) = store {
        body["store"] = json!(s);
    }
    body
}

/// The driver's action for a run record's line, checked against the record's scenario.
fn recorded_action(
    r: &Recorded,
    gateway_index: &HashMap<String, usize>,
    shoppers: usize,
    faults: usize,
    stores: &[String],
) -> anyhow::Result<(i64, Action)> {
    let known = |shopper: usize| -> anyhow::Result<usize> {
        anyhow::ensure!(
            shopper < shoppers,
            "shopper {shopper}: its scenario has {shoppers}"
        );
        Ok(shopper)
    };
    Ok(match r {
        Recorded::Header { .. } => bail!("a second header"),
        Recorded::Advert { at, gateway, line } => {
            let g = gateway_index
                .get(gateway)
                .with_context(|| format!("gateway {gateway} is not in its scenario"))?;
            (*at, Action::Advert(*g, line.clone()))
        }
        Recorded::Report { at, shopper, body } => {
            (*at, Action::Report(known(*shopper)?, body.clone()))
        }
        Recorded::Line { at, event } => (*at, Action::Line(event.clone())),
        Recorded::Return { at, shopper } => (
            *at,
            Action::Returned {
                shopper: known(*shopper)?,
            },
        ),
        Recorded::Redeem {
            at,
            shopper,
            amount,
        } => (
            *at,
            Action::Redeem {
                shopper: known(*shopper)?,
                amount: *amount,
            },
        ),
        Recorded::Fault { at, index } => {
            anyhow::ensure!(*index < faults, "faults[{index}] is not in its scenario");
            (*at, Action::Fault(*index))
        }
        Recorded::Purchase { at, body } => {
            serde_json::from_str::<Value>(body).context("a purchase body that is not JSON")?;
            (*at, Action::Purchase(body.clone()))
        }
        Recorded::Checkin { at, shopper, store } => {
            let store = stores
                .iter()
                .position(|s| s == store)
                .with_context(|| format!("store {store} is not in its scenario"))?;
            (
                *at,
                Action::Checkin {
                    shopper: known(*shopper)?,
                    store,
                },
            )
        }
    })
}

/// Something to do at a clock time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Action {
    /// A replay line for a gateway (by index).
    Advert(usize, String),
    /// An app report of a shopper.
    Report(usize, String),
    /// A LINE webhook event.
    Line(String),
    /// A shopper's visit ended: decide whether they come back, and whether they redeem.
    VisitEnd { shopper: usize, first: bool },
    /// The time a shopper would come back: they do if `draw` is below their return chance,
    /// which depends on whether an offer reached them by now (by then every offer of the
    /// first visit has long been delivered, so none is missed for being slow).
    MaybeReturn { shopper: usize, draw: u32 },
    /// The scenario's fault (by index) starts at its fake server.
    Fault(usize),
    /// A shopper redeems their offer's coupon at the till, paying `amount`.
    Redeem { shopper: usize, amount: u32 },
    /// A recorded return (counted; its adverts and reports are their own actions).
    Returned { shopper: usize },
    /// A purchase for the POS or the online shop to send (its JSON body).
    Purchase(String),
    /// A shopper's app scans the QR code of a store (by index).
    Checkin { shopper: usize, store: usize },
}

/// Runs the demo.
pub async fn run(opts: Options) -> anyhow::Result<Outcome> {
    let (_, end) = synth::window(&opts.scenario);
    if end - opts.scenario.run.start.timestamp_millis() < 3 * 3_600_000 {
        bail!("run.hours: the demo needs a day of at least 3 hours (first visits stop 2 hours before its end, so returns fit)");
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("omo-demo-");
    let dir = match &opts.logs {
        Some(parent) => {
            std::fs::create_dir_all(parent)?;
            builder.tempdir_in(parent)?
        }
        None => builder.tempdir()?,
    };
    let outcome = run_in(&opts, &dir).await;
    if opts.logs.is_some() {
        let kept = dir.keep();
        eprintln!("the processes' logs are in {}", kept.display());
        return outcome;
    }
    keep_on_error(dir, outcome)
}

async fn run_in(opts: &Options, dir: &tempfile::TempDir) -> anyhow::Result<Outcome> {
    let s = &opts.scenario;
    let bin_dir = bin_dir(opts.bin_dir.as_deref())?;
    let cloud_bin = binary(&bin_dir, "omo-cloud")?;
    let gateway_bin = binary(&bin_dir, "omo-gateway")?;
    let sim_bin = std::env::current_exe()?;
    let path = |n: &str| dir.path().join(n);
    let mut rng = synth::rng(s.run.seed, "demo");
    let (admin_token, line_secret, line_token, member_secret) = (
        synth::hex_of(&mut rng, 16),
        synth::hex_of(&mut rng, 16),
        synth::hex_of(&mut rng, 16),
        synth::hex_of(&mut rng, 16),
    );
    let (http_port, mqtt_port, line_port, fcm_port) =
        (free_port()?, free_port()?, free_port()?, free_port()?);
    std::fs::write(path("fcm-key.json"), FCM_KEY)?;
    let (site, logins) = world::site(s);
    std::fs::write(path("site.toml"), site)?;
    std::fs::write(
        path("cloud.toml"),
        format!(
            "[data]\ndir = {data:?}\ncache_mb = 64\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[mqtt]\nlisten = \"127.0.0.1:{mqtt_port}\"\n\
             [line]\napi_base = \"http://127.0.0.1:{line_port}\"\nrate_per_s = 2000\n\
             [app]\nfcm_base = \"http://127.0.0.1:{fcm_port}\"\nfcm_service_account_file = {key:?}\nfcm_token_url = \"http://127.0.0.1:{fcm_port}/token\"\n\
             [delivery]\nlink_base = \"http://127.0.0.1:{http_port}\"\n\
             [profiles]\ntime_zone = \"Asia/Tokyo\"\n\
             [dashboard]\ntime_zone = {tz:?}\n\
             [log]\nlevel = \"{level}\"\n",
            tz = s.stores.first().map_or("UTC", |st| st.time_zone.as_str()),
            level = if opts.logs.is_some() { "info,omo_cloud=debug" } else { "warn,omo_cloud=info" },
            data = path("data").display().to_string(),
            key = path("fcm-key.json").display().to_string(),
        ),
    )?;
    import_site(&cloud_bin, &path("site.toml"), &path("cloud.toml"))?;
    // Shoppers register on the day's clock running at ×1 an hour before the day starts, so
    // however long that takes, the day then starts on time; the cloud restarts for the day.
    let setup_clock = format!(
        "{}@1",
        (s.run.start - chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    let cloud_env = [
        ("OMO_CLOUD_ADMIN_TOKEN", admin_token.as_str()),
        ("OMO_CLOUD_LINE_CHANNEL_SECRET", line_secret.as_str()),
        ("OMO_CLOUD_LINE_CHANNEL_TOKEN", line_token.as_str()),
        ("OMO_CLOUD_MEMBER_LINK_SECRET", member_secret.as_str()),
    ];
    let cloud_config = path("cloud.toml").display().to_string();
    let mut procs = vec![
        spawn_fake_line(line_port, &line_token, &path("fake-line.log"))?,
        spawn(
            "fake FCM",
            &sim_bin,
            &[
                "fake-fcm",
                "--listen",
                &format!("127.0.0.1:{fcm_port}"),
                "--service-account",
                &path("fcm-key.json").display().to_string(),
            ],
            &[],
            &path("fake-fcm.log"),
        )?,
        spawn(
            "omo-cloud",
            &cloud_bin,
            &["run", "--config", &cloud_config, "--clock", &setup_clock],
            &cloud_env,
            &path("cloud-setup.log"),
        )?,
    ];
    for (port, what) in [
        (line_port, "the fake LINE server"),
        (fcm_port, "the fake FCM server"),
        (http_port, "the cloud's HTTP API"),
        (mqtt_port, "the cloud's broker"),
    ] {
        wait_port(port, what, &mut procs).await?;
    }
    let api = Arc::new(Api {
        http: omo_cloud::tls::http_client_builder()
            .timeout(Duration::from_secs(30))
            .build()?,
        base: format!("http://127.0.0.1:{http_port}"),
        admin: admin_token.clone(),
    });
    // Shoppers and campaigns.
    let shoppers = synth::shoppers(s);
    eprintln!(
        "omo-sim demo: {:?}: registering {} shoppers…",
        s.run.name,
        shoppers.len()
    );
    let registering = std::time::Instant::now();
    let mut customer_of = vec![String::new(); shoppers.len()];
    let mut install_token = vec![None::<String>; shoppers.len()];
    let registrations = futures_unordered(
        shoppers.iter().enumerate().map(|(i, sh)| {
            let api = api.clone();
            let member_secret = member_secret.clone();
            let sh = sh.clone();
            async move { register(&api, &sh, &member_secret).await.map(|r| (i, r)) }
        }),
        8,
    )
    .await?;
    for (i, (customer, token)) in registrations {
        customer_of[i] = customer;
        install_token[i] = token;
    }
    eprintln!(
        "omo-sim demo: registered in {:.1} s",
        registering.elapsed().as_secs_f64()
    );
    for c in &s.campaigns {
        let id = c["id"].as_str().unwrap_or_default();
        api.admin(
            reqwest::Method::PUT,
            &format!("/v1/admin/campaigns/{id}"),
            Some(c),
        )
        .await?;
    }
    let mut pos_keys = HashMap::new();
    for st in &s.stores {
        let k = api
            .admin(
                reqwest::Method::POST,
                &format!("/v1/admin/stores/{}/pos-keys", st.id),
                None,
            )
            .await?;
        pos_keys.insert(
            st.id.to_string(),
            k["key"].as_str().unwrap_or_default().to_owned(),
        );
    }
    let shop_key = api
        .admin(reqwest::Method::POST, "/v1/admin/ecommerce-keys", None)
        .await?["key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut qr_codes = Vec::new();
    for st in &s.stores {
        let q = api
            .admin(
                reqwest::Method::GET,
                &format!("/v1/admin/stores/{}/qr", st.id),
                None,
            )
            .await?;
        qr_codes.push(q["code"].as_str().unwrap_or_default().to_owned());
    }
    // The day: the cloud restarts on the day's clock, which starts in a few seconds.
    let mut cloud = procs.pop().context("the cloud process")?;
    // Gone for good (its store lock and ports with it) before the next one starts.
    cloud.child.kill().await?;
    let origin = Utc::now() + chrono::Duration::seconds(5);
    let clock_spec = format!(
        "{}@{}@{}",
        s.run.start.to_rfc3339_opts(SecondsFormat::Millis, true),
        s.run.speed,
        origin.to_rfc3339_opts(SecondsFormat::Millis, true)
    );
    let clock = Clock::from_spec(&clock_spec.parse().map_err(|e| anyhow::anyhow!("{e}"))?);
    // The killed process's store lock goes with it; the new one waits for it.
    procs.push(spawn(
        "omo-cloud",
        &cloud_bin,
        &["run", "--config", &cloud_config, "--clock", &clock_spec],
        &cloud_env,
        &path("cloud.log"),
    )?);
    for (port, what) in [
        (http_port, "the cloud's HTTP API"),
        (mqtt_port, "the cloud's broker"),
    ] {
        wait_port(port, what, &mut procs).await?;
    }
    // Gateways, reading adverts from stdin.
    let mut stdins: Vec<ChildStdin> = Vec::new();
    let mut gateway_index = HashMap::new();
    for (i, l) in logins.iter().enumerate() {
        let gdir = path(&format!("gw-{}", l.gateway));
        std::fs::create_dir_all(&gdir)?;
        let config = gdir.join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "[identity]\nstore = \"{}\"\ngateway = \"{}\"\n[broker]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\npassword = \"{}\"\nsigning_key = \"{}\"\n\
                 [scan]\nsource = \"replay\"\nreplay_file = \"-\"\n[data]\ndir = {:?}\n[log]\nlevel = \"{}\"\n",
                l.store, l.gateway, l.password, l.signing_key, gdir.join("data").display().to_string(),
                if opts.logs.is_some() { "info,omo_gateway=debug" } else { "warn" }
            ),
        )?;
        let log = std::fs::File::create(gdir.join("gateway.log"))?;
        // The gateway's own clock: off by its offset and running fast or slow by its drift.
        let g = s
            .stores
            .iter()
            .flat_map(|st| &st.gateways)
            .find(|g| g.id.as_str() == l.gateway)
            .context("a login without its gateway")?;
        let gateway_clock = format!(
            "{}@{}@{}",
            (s.run.start + chrono::Duration::milliseconds((g.clock_offset_s * 1000.0) as i64))
                .to_rfc3339_opts(SecondsFormat::Millis, true),
            s.run.speed * (1.0 + g.clock_drift_ppm / 1e6),
            origin.to_rfc3339_opts(SecondsFormat::Millis, true)
        );
        let mut child = Command::new(&gateway_bin)
            .args([
                "run",
                "--config",
                &config.display().to_string(),
                "--clock",
                &gateway_clock,
            ])
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", gateway_bin.display()))?;
        stdins.push(child.stdin.take().context("gateway stdin")?);
        gateway_index.insert(l.gateway.clone(), i);
        procs.push(Proc {
            name: format!("gateway {}", l.gateway),
            child,
        });
    }
    let (start, end) = synth::window(s);
    // The day: first visits until two hours before the end, so every return fits the day.
    let last_first = start.max(end - 2 * 3_600_000);
    let firsts = synth::arrivals_in(s, &shoppers, (start, last_first), true);
    let mut heap: BinaryHeap<Reverse<(i64, u64, Action)>> = BinaryHeap::new();
    let mut seq = 0u64;
    if opts.replay.is_none() {
        for (i, f) in s.faults.iter().enumerate() {
            let at = start + (f.at_minute * 60_000.0) as i64;
            // One after a shortened day's end never fires.
            if at < end {
                seq += 1;
                heap.push(Reverse((at, seq, Action::Fault(i))));
            }
        }
    }
    let mut faults_started = 0usize;
    let mut radio = synth::indoor_radio(s.run.seed, "radio");
    let mut sense = synth::rng(s.run.seed, "sensing");
    let mut recorder = match &opts.record {
        Some(path) => {
            let mut w = std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            writeln!(
                w,
                "{}",
                serde_json::to_string(&Recorded::Header {
                    omo_run: 1,
                    scenario: opts.scenario_text.clone(),
                    hours: s.run.hours,
                })?
            )?;
            Some(w)
        }
        None => None,
    };
    let mut shopping = synth::rng(s.run.seed, "shopping");
    let mut orders = 0u64;
    let mut push_visit = |heap: &mut BinaryHeap<Reverse<(i64, u64, Action)>>,
                          v: &Visit,
                          first: bool,
                          radio: &mut crate::radio::Radio,
                          sense: &mut rand::rngs::StdRng| {
        let sh = &shoppers[v.shopper];
        // A QR check-in at the entrance, a purchase at the till, an order online later.
        if sh.app && shopping.random_bool(CHECKIN_SHARE) {
            seq += 1;
            heap.push(Reverse((
                v.start_ms() + 60_000,
                seq,
                Action::Checkin {
                    shopper: v.shopper,
                    store: v.store,
                },
            )));
        }
        if shopping.random_bool(PURCHASE_SHARE) {
            orders += 1;
            let customer = if shopping.random_bool(ANONYMOUS_SHARE) {
                json!({})
            } else {
                json!({"member_id": sh.member_id})
            };
            let at = v.end_ms() - 60_000;
            let store = s.stores[v.store].id.to_string();
            let body = purchase_body(
                &format!("pos-{orders}"),
                Some(&store),
                customer,
                at,
                &mut shopping,
            );
            seq += 1;
            heap.push(Reverse((at, seq, Action::Purchase(body.to_string()))));
        }
        let online_at = v.end_ms() + shopping.random_range(30..=180) * 60_000;
        // Orders of the day only (the day ends when its last action is handed over).
        if first && shopping.random_bool(ONLINE_SHARE) && online_at < end {
            orders += 1;
            let at = online_at;
            let customer = match &sh.line_user {
                Some(u) if shopping.random_bool(0.5) => json!({"line_user": u}),
                _ => json!({"member_id": sh.member_id}),
            };
            let body = purchase_body(&format!("web-{orders}"), None, customer, at, &mut shopping);
            seq += 1;
            heap.push(Reverse((at, seq, Action::Purchase(body.to_string()))));
        }
        for h in synth::heard(s, sh, v, 2000, radio, sense) {
            if let Some(g) = gateway_index.get(&h.gateway) {
                seq += 1;
                heap.push(Reverse((h.ts_ms, seq, Action::Advert(*g, h.replay_line()))));
            }
        }
        for r in synth::app_reports(s, sh, v, 60_000, radio, sense) {
            let at = r["ts"]
                .as_str()
                .and_then(|t| t.parse::<omo_device_config::Timestamp>().ok())
                .map_or(v.start_ms(), |t| t.millis());
            seq += 1;
            heap.push(Reverse((at, seq, Action::Report(v.shopper, r.to_string()))));
        }
        for e in synth::line_beacon_events(s, sh, v, radio) {
            seq += 1;
            heap.push(Reverse((
                e["timestamp"].as_i64().unwrap_or(v.start_ms()),
                seq,
                Action::Line(e.to_string()),
            )));
        }
        seq += 1;
        heap.push(Reverse((
            v.end_ms(),
            seq,
            Action::VisitEnd {
                shopper: v.shopper,
                first,
            },
        )));
    };
    let store_ids: Vec<String> = s.stores.iter().map(|st| st.id.to_string()).collect();
    match &opts.replay {
        None => {
            for v in &firsts {
                push_visit(&mut heap, v, true, &mut radio, &mut sense);
            }
        }
        Some(actions) => {
            // The record's actions in its order, nothing simulated.
            for (i, (line_no, r)) in actions.iter().enumerate() {
                let (at, action) = recorded_action(
                    r,
                    &gateway_index,
                    shoppers.len(),
                    s.faults.len(),
                    &store_ids,
                )
                .with_context(|| format!("run record line {line_no}"))?;
                anyhow::ensure!(
                    (start - 3_600_000..=end + 3_600_000).contains(&at),
                    "run record line {line_no}: at {at} is not within an hour of its day"
                );
                heap.push(Reverse((at, i as u64, action)));
            }
        }
    }
    let by_line: HashMap<String, usize> = shoppers
        .iter()
        .enumerate()
        .filter_map(|(i, x)| Some((x.line_user.clone()?, i)))
        .collect();
    let by_token: HashMap<String, usize> = shoppers
        .iter()
        .enumerate()
        .filter_map(|(i, x)| Some((x.push_token.clone()?, i)))
        .collect();
    let mut offered: HashMap<usize, String> = HashMap::new();
    let mut store_of_visit: HashMap<usize, String> = HashMap::new();
    for v in &firsts {
        store_of_visit.insert(v.shopper, s.stores[v.store].id.to_string());
    }
    let mut returns = 0usize;
    let mut decision_seq = 1u64 << 62;
    // What the driver could not hand over (reported, never hidden).
    let mut lost = Lost::default();
    let failed_reports = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed_webhooks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed_purchases = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let failed_checkins = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let mut redeemed = 0usize;
    let mut redeem_skipped = 0usize;
    let mut outcome_rng = synth::rng(s.run.seed, "outcomes");
    let line_url = format!("http://127.0.0.1:{line_port}/fake/deliveries");
    let fcm_url = format!("http://127.0.0.1:{fcm_port}/fake/deliveries");
    match &opts.replay {
        None => eprintln!(
            "omo-sim demo: replaying {} first visits at ×{} …",
            firsts.len(),
            s.run.speed
        ),
        Some(actions) => eprintln!(
            "omo-sim demo: replaying a run record of {} actions at ×{} …",
            actions.len(),
            s.run.speed
        ),
    }
    let mut last_poll = std::time::Instant::now();
    let mut last_progress = -1i64;
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        let now = clock.now().timestamp_millis();
        if last_poll.elapsed() >= Duration::from_millis(500) {
            last_poll = std::time::Instant::now();
            poll_offers(
                &api.http,
                &line_url,
                &fcm_url,
                &by_line,
                &by_token,
                &mut offered,
            )
            .await;
            let pct = ((now - start) * 100 / (end - start).max(1)).clamp(0, 100);
            if pct != last_progress {
                last_progress = pct;
                let bar: String = (0..40)
                    .map(|i| if i * 100 / 40 < pct { '#' } else { '.' })
                    .collect();
                eprint!(
                    "\r[{bar}] {pct:3}% {}  offers {}  returns {returns}",
                    &synth::ts_text(now)[11..16],
                    offered.len()
                );
            }
        }
        while heap.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
            let Some(Reverse((at, _, action))) = heap.pop() else {
                break;
            };
            if let Some(w) = recorder.as_mut() {
                // When it was handed over (an action due earlier, such as a return's first outdoor
                // fix, goes when the clock gets to it), so a replay hands it over alike.
                let at = now;
                let r = match &action {
                    Action::Advert(g, line) => Some(Recorded::Advert {
                        at,
                        gateway: logins[*g].gateway.clone(),
                        line: line.clone(),
                    }),
                    Action::Report(shopper, body) => Some(Recorded::Report {
                        at,
                        shopper: *shopper,
                        body: body.clone(),
                    }),
                    Action::Line(event) => Some(Recorded::Line {
                        at,
                        event: event.clone(),
                    }),
                    Action::Fault(index) => Some(Recorded::Fault { at, index: *index }),
                    Action::Redeem { shopper, amount } => Some(Recorded::Redeem {
                        at,
                        shopper: *shopper,
                        amount: *amount,
                    }),
                    Action::Returned { shopper } => Some(Recorded::Return {
                        at,
                        shopper: *shopper,
                    }),
                    Action::Purchase(body) => Some(Recorded::Purchase {
                        at,
                        body: body.clone(),
                    }),
                    Action::Checkin { shopper, store } => Some(Recorded::Checkin {
                        at,
                        shopper: *shopper,
                        store: store_ids[*store].clone(),
                    }),
                    Action::VisitEnd { .. } | Action::MaybeReturn { .. } => None,
                };
                if let Some(r) = r {
                    writeln!(w, "{}", serde_json::to_string(&r)?)?;
                }
            }
            match action {
                Action::Fault(i) => {
                    let f = &s.faults[i];
                    let port = match f.service {
                        crate::scenario::FakeService::Line => line_port,
                        crate::scenario::FakeService::Fcm => fcm_port,
                    };
                    api.http
                        .post(format!("http://127.0.0.1:{port}/fake/faults"))
                        .json(&f.answer)
                        .send()
                        .await?
                        .error_for_status()
                        .with_context(|| format!("starting faults[{i}]"))?;
                    faults_started += 1;
                }
                Action::Advert(g, line) => {
                    // A stalled gateway must not stall the day: its line is dropped, counted.
                    let line = format!("{line}\n");
                    let write = stdins[g].write_all(line.as_bytes());
                    if !matches!(
                        tokio::time::timeout(Duration::from_secs(2), write).await,
                        Ok(Ok(()))
                    ) {
                        lost.adverts += 1;
                    }
                }
                Action::Report(i, body) => {
                    if let Some(token) = install_token[i].clone() {
                        let (api, permits, failed) =
                            (api.clone(), permits.clone(), failed_reports.clone());
                        inflight.spawn(async move {
                            let _permit = permits.acquire_owned().await;
                            let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                            let ok = matches!(
                                api.call(
                                    reqwest::Method::POST,
                                    "/v1/app/locations",
                                    Some(&body),
                                    Some(&token)
                                )
                                .await,
                                Ok((202, _))
                            );
                            if !ok {
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        });
                    }
                }
                Action::Line(event) => {
                    let body = format!("{{\"destination\":\"Udemo\",\"events\":[{event}]}}");
                    let sig =
                        omo_cloud::secrets::line_signature(line_secret.as_bytes(), body.as_bytes());
                    let (http, url) = (api.http.clone(), format!("{}/v1/line/webhook", api.base));
                    let (permits, failed) = (permits.clone(), failed_webhooks.clone());
                    inflight.spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        let sent = http
                            .post(url)
                            .header("X-Line-Signature", sig)
                            .header("Content-Type", "application/json")
                            .body(body)
                            .send()
                            .await;
                        if !sent.is_ok_and(|r| r.status().is_success()) {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                Action::Purchase(body) => {
                    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let key = match body["store"].as_str() {
                        Some(store) => pos_keys.get(store).cloned().unwrap_or_default(),
                        None => shop_key.clone(),
                    };
                    let (api, permits, failed) =
                        (api.clone(), permits.clone(), failed_purchases.clone());
                    inflight.spawn(async move {
                        let _permit = permits.acquire_owned().await;
                        let ok = matches!(
                            api.call(
                                reqwest::Method::POST,
                                "/v1/purchases",
                                Some(&body),
                                Some(&key)
                            )
                            .await,
                            Ok((200 | 201, _))
                        );
                        if !ok {
                            failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    });
                }
                Action::Checkin { shopper, store } => {
                    if let Some(token) = install_token[shopper].clone() {
                        let body = json!({"code": qr_codes[store], "ts": synth::ts_text(at),
                            "idempotency_key": format!("qr-{shopper}-{at}")});
                        let (api, permits, failed) =
                            (api.clone(), permits.clone(), failed_checkins.clone());
                        inflight.spawn(async move {
                            let _permit = permits.acquire_owned().await;
                            let ok = matches!(
                                api.call(
                                    reqwest::Method::POST,
                                    "/v1/app/checkins",
                                    Some(&body),
                                    Some(&token)
                                )
                                .await,
                                Ok((200 | 202, _))
                            );
                            if !ok {
                                failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        });
                    }
                }
                Action::MaybeReturn { shopper, draw } => {
                    let sh = &shoppers[shopper];
                    let effect = s.personas[sh.persona].effect;
                    let p = if offered.contains_key(&shopper) {
                        effect.return_after_offer
                    } else {
                        effect.return_without_offer
                    };
                    if f64::from(draw) < p * f64::from(u32::MAX) {
                        let store_id = store_of_visit.get(&shopper).cloned().unwrap_or_default();
                        let store = s
                            .stores
                            .iter()
                            .position(|x| x.id.as_str() == store_id)
                            .unwrap_or(0);
                        let v = synth::plan_visit(
                            s,
                            (shopper, sh.persona),
                            store,
                            at,
                            &mut outcome_rng,
                        );
                        decision_seq += 1;
                        heap.push(Reverse((at, decision_seq, Action::Returned { shopper })));
                        push_visit(&mut heap, &v, false, &mut radio, &mut sense);
                    }
                }
                Action::VisitEnd { shopper, first } => {
                    if first {
                        let back = at + outcome_rng.random_range(30..=90) * 60_000;
                        let draw = outcome_rng.random::<u32>();
                        // Tie-breakers apart from the visits' (the closure owns that counter).
                        decision_seq += 1;
                        heap.push(Reverse((
                            back,
                            decision_seq,
                            Action::MaybeReturn { shopper, draw },
                        )));
                    } else if offered.contains_key(&shopper)
                        && outcome_rng.random_bool(REDEEM_SHARE)
                    {
                        let amount = outcome_rng.random_range(5..60) * 100;
                        decision_seq += 1;
                        heap.push(Reverse((
                            at,
                            decision_seq,
                            Action::Redeem { shopper, amount },
                        )));
                    }
                }
                Action::Returned { .. } => returns += 1,
                Action::Redeem { shopper, amount } => {
                    if !offered.contains_key(&shopper) {
                        // Replayed: this run's cloud held this shopper out, or its offer has
                        // not arrived; counted, not hidden.
                        redeem_skipped += 1;
                    }
                    if let Some(code) = offered.get(&shopper) {
                        let store = store_of_visit.get(&shopper).cloned().unwrap_or_default();
                        let body = json!({"store": store, "code": code, "at": synth::ts_text(at), "amount": amount});
                        if let Some(key) = pos_keys.get(&store) {
                            if let Ok((201, _)) = api
                                .call(
                                    reqwest::Method::POST,
                                    "/v1/redemptions",
                                    Some(&body),
                                    Some(key),
                                )
                                .await
                            {
                                redeemed += 1;
                            }
                            // The till sends the sale too, naming the customer by the coupon:
                            // the purchase is attributed to the offer.
                            let sale = json!({"order_id": format!("till-{shopper}-{at}"),
                                "channel": "store", "store": store, "customer": {"coupon": code},
                                "at": synth::ts_text(at), "currency": "JPY",
                                "lines": [{"sku": "latte-m", "category": "coffee", "quantity": 1, "amount": f64::from(amount)}]});
                            if !matches!(
                                api.call(
                                    reqwest::Method::POST,
                                    "/v1/purchases",
                                    Some(&sale),
                                    Some(key)
                                )
                                .await,
                                Ok((200 | 201, _))
                            ) {
                                lost.purchases += 1;
                            }
                        }
                    }
                }
            }
        }
        while inflight.try_join_next().is_some() {}
        if heap.is_empty() && now >= end {
            break;
        }
        for p in procs.iter_mut() {
            if let Ok(Some(status)) = p.child.try_wait() {
                bail!(
                    "{} exited ({status}) during the run; logs in {}",
                    p.name,
                    dir.path().display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while inflight.join_next().await.is_some() {}
    if let Some(mut w) = recorder.take() {
        w.flush().context("writing the run record")?;
    }
    lost.reports = failed_reports.load(std::sync::atomic::Ordering::Relaxed);
    lost.webhooks = failed_webhooks.load(std::sync::atomic::Ordering::Relaxed);
    lost.purchases += failed_purchases.load(std::sync::atomic::Ordering::Relaxed);
    lost.checkins = failed_checkins.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!();
    // Let the visit stage catch up with the log (a busy machine leaves it behind: the report
    // would miss visits), then the last visits close (exit timeouts run on the clock).
    wait_caught_up(&api).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    poll_offers(
        &api.http,
        &line_url,
        &fcm_url,
        &by_line,
        &by_token,
        &mut offered,
    )
    .await;
    let count = |url: &str| {
        let (http, url) = (api.http.clone(), url.to_owned());
        async move {
            fetch(&http, &url)
                .await
                .ok()
                .and_then(|v| v["accepted"].as_array().map(Vec::len))
                .unwrap_or(0)
        }
    };
    let offers_by_channel = [
        ("LINE", count(&line_url).await),
        ("FCM (app push)", count(&fcm_url).await),
    ];
    let outcome = report(
        s,
        &api,
        &shoppers,
        &customer_of,
        (start, end),
        Driven {
            returns,
            redeemed,
            offers_by_channel,
            lost,
            faults_started,
            replayed: opts.replay.is_some(),
            redeem_skipped,
        },
    )
    .await?;
    if opts.keep_running {
        println!("{}", outcome.report);
        eprintln!(
            "omo-sim demo: the cloud keeps running at {} (admin token {admin_token}); Ctrl-C to stop. Logs: {}",
            api.base,
            dir.path().display()
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    drop(procs);
    Ok(outcome)
}

/// Waits (30 s at most) until the visit stage is within one batch of the log's end twice in a
/// row, as `/metrics` shows it (`omo_stage_lag_records{stage="visits"}`; ticks keep arriving
/// at the clock's speed, so it never reaches zero).
async fn wait_caught_up(api: &Api) {
    const CAUGHT_UP: f64 = 2000.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while std::time::Instant::now() < deadline && in_a_row < 2 {
        let lag = match api.http.get(format!("{}/metrics", api.base)).send().await {
            Ok(r) => r.text().await.ok().and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("omo_stage_lag_records{stage=\"visits\"}"))
                    .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            }),
            Err(_) => None,
        };
        in_a_row = if lag.is_some_and(|l| l <= CAUGHT_UP) {
            in_a_row + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Registers a shopper: the customer (member id, LINE user, consent) and, with the app, an
/// install; returns the customer id and the install's token.
async fn register(
    api: &Api,
    sh: &Shopper,
    member_secret: &str,
) -> anyhow::Result<(String, Option<String>)> {
    let body = json!({
        "member_id": sh.member_id,
        "line_user": sh.line_user,
        "consent": {"line": sh.consent_line, "push": sh.consent_push, "webhook": false, "location": true},
        "attributes": {"name": format!("Shopper {}", &sh.member_id[2..6])},
    });
    let c = api
        .admin(reqwest::Method::POST, "/v1/admin/customers", Some(&body))
        .await?;
    let id = c["id"].as_str().unwrap_or_default().to_owned();
    if !sh.app {
        return Ok((id, None));
    }
    let mut install = json!({
        "platform": if sh.phone == Phone::Ios { "ios" } else { "android" },
        "member_id": sh.member_id,
        "member_sig": omo_cloud::secrets::hmac_hex(member_secret.as_bytes(), sh.member_id.as_bytes()),
        "push_token": sh.push_token,
    });
    if let Some(k) = sh.eid_key {
        install["eid"] = json!({"identity_key": hex::encode(k), "exponent": synth::EID_EXPONENT});
    }
    let (status, b) = api
        .call(
            reqwest::Method::POST,
            "/v1/app/installs",
            Some(&install),
            None,
        )
        .await?;
    if status != 201 {
        bail!("registering an install: {status} {b}");
    }
    Ok((id, b["token"].as_str().map(str::to_owned)))
}

/// Reads what the fake LINE and FCM servers accepted: each offer's shopper and coupon.
async fn poll_offers(
    http: &reqwest::Client,
    line_url: &str,
    fcm_url: &str,
    by_line: &HashMap<String, usize>,
    by_token: &HashMap<String, usize>,
    offered: &mut HashMap<usize, String>,
) {
    if let Ok(v) = fetch(http, line_url).await {
        for a in v["accepted"].as_array().into_iter().flatten() {
            if let Some(i) = a["to"].as_str().and_then(|u| by_line.get(u)) {
                let code = a["texts"][0]
                    .as_str()
                    .and_then(|t| t.rsplit(' ').next())
                    .unwrap_or_default();
                offered.entry(*i).or_insert_with(|| code.to_owned());
            }
        }
    }
    if let Ok(v) = fetch(http, fcm_url).await {
        for a in v["accepted"].as_array().into_iter().flatten() {
            if let Some(i) = a["token"].as_str().and_then(|t| by_token.get(t)) {
                let code = a["coupon"].as_str().unwrap_or_default();
                offered.entry(*i).or_insert_with(|| code.to_owned());
            }
        }
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http.get(url).send().await?.json().await?)
}

/// Reads the cloud's view of the day, prints the report table and checks the expectations.
/// Stays: a shopper's visits to one store, where a visit entered before the previous one's
/// exit is a piece of the same stay. The cloud never enters a new visit before the last one's
/// exit time (last evidence + the exit timeout), so such a piece only comes from evidence
/// reaching the cloud after it had decided the exit: on a loaded machine at ×600 a second of
/// delay is ten clock minutes. Counting stays makes a run comparable with its replay.
fn stays(spans: HashMap<(String, String), Vec<(i64, i64)>>) -> usize {
    spans
        .into_values()
        .map(|mut v| {
            v.sort_unstable();
            let mut n = 0;
            let mut until = i64::MIN;
            for (entered, exited) in v {
                if entered >= until {
                    n += 1;
                }
                until = until.max(exited);
            }
            n
        })
        .sum()
}

async fn report(
    s: &Scenario,
    api: &Api,
    shoppers: &[Shopper],
    customer_of: &[String],
    (start, end): (i64, i64),
    driven: Driven,
) -> anyhow::Result<Outcome> {
    let Driven {
        returns,
        redeemed,
        offers_by_channel,
        lost,
        faults_started,
        replayed,
        redeem_skipped,
    } = driven;
    let phone_of: HashMap<&str, Phone> = customer_of
        .iter()
        .zip(shoppers)
        .map(|(c, s)| (c.as_str(), s.phone))
        .collect();
    // Store visits by source and platform, read per store (the API answers 1,000 at most).
    let mut by_source: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_phone: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut visitors: HashSet<String> = HashSet::new();
    // (customer, store) → every visit's (entered, exited) in ms, to count stays.
    let mut spans: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
    for st in &s.stores {
        // Window by window; a window that fills a page is read again as two halves.
        let mut windows = vec![(start, end + 3_600_000)];
        while let Some((from, to)) = windows.pop() {
            let v = api
                .admin(
                    reqwest::Method::GET,
                    &format!(
                        "/v1/admin/visits?store={}&from={}&to={}&limit=1000",
                        st.id,
                        synth::ts_text(from),
                        synth::ts_text(to)
                    ),
                    None,
                )
                .await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if items.len() >= 1000 && to - from > 60_000 {
                let mid = from + (to - from) / 2;
                windows.push((from, mid));
                windows.push((mid, to));
                continue;
            }
            for visit in &items {
                total += 1;
                if let Some(c) = visit["customer"].as_str() {
                    visitors.insert(c.to_owned());
                    let at = |field: &str| {
                        visit[field]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .map(|t| t.timestamp_millis())
                    };
                    if let Some(entered) = at("entered") {
                        spans
                            .entry((c.to_owned(), st.id.to_string()))
                            .or_default()
                            .push((entered, at("exited").unwrap_or(i64::MAX)));
                    }
                }
                let sources: Vec<String> = visit["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                *by_source.entry(sources.join("+")).or_default() += 1;
                let phone = match visit["customer"].as_str().and_then(|c| phone_of.get(c)) {
                    Some(Phone::Ios) => "ios",
                    Some(Phone::Android) => "android",
                    Some(Phone::Other) => "other",
                    None => "unknown",
                };
                *by_phone.entry(phone).or_default() += 1;
            }
        }
    }
    let mut out = String::new();
    let mut failures = Vec::new();
    out.push_str(&format!(
        "\n{}\n\nStore visits: {total}\nStore stays: {}\nStore visitors: {}\n",
        s.run.name,
        stays(spans),
        visitors.len()
    ));
    for (k, n) in &by_source {
        out.push_str(&format!("  by source   {k:<24} {n:>6}\n"));
    }
    for (k, n) in &by_phone {
        out.push_str(&format!("  by platform {k:<24} {n:>6}\n"));
    }
    if replayed {
        out.push_str(&format!(
            "Replayed from a run record: lift is shown, not checked; {redeem_skipped} recorded redemptions had no offer in this run\n"
        ));
    }
    out.push_str(&format!(
        "Return visits simulated: {returns}; redemptions at the till: {redeemed}\n"
    ));
    out.push_str(&format!(
        "Not handed over: {} adverts (a stalled gateway), {} app reports, {} LINE webhooks, {} purchases and {} QR check-ins refused or unanswered\n",
        lost.adverts, lost.reports, lost.webhooks, lost.purchases, lost.checkins
    ));
    if lost.adverts + lost.reports + lost.webhooks + lost.purchases + lost.checkins > 0 {
        failures.push("the driver could not hand everything over (see above)".into());
    }
    for (channel, n) in offers_by_channel {
        out.push_str(&format!("  offers accepted by {channel:<14} {n:>6}\n"));
    }
    out.push_str(&format!(
        "Faults injected at the fake servers: {faults_started} of {} scheduled\n",
        s.faults.len()
    ));
    // Every delivery row the cloud wrote, by store, channel and how it ended.
    let mut by_store: BTreeMap<(String, String), BTreeMap<String, u64>> = BTreeMap::new();
    let mut retried = 0u64;
    api.each_delivery(|d| {
        let key = (
            d["store"].as_str().unwrap_or("?").to_owned(),
            d["channel"].as_str().unwrap_or("?").to_owned(),
        );
        let status = d["status"].as_str().unwrap_or("?").to_owned();
        *by_store.entry(key).or_default().entry(status).or_default() += 1;
        if d["attempts"].as_u64().unwrap_or(0) > 1 {
            retried += 1;
        }
        true
    })
    .await?;
    out.push_str(&format!(
        "Deliveries by store and channel ({retried} needed more than one attempt):\n"
    ));
    for ((store, channel), statuses) in &by_store {
        let text: Vec<String> = statuses.iter().map(|(k, n)| format!("{n} {k}")).collect();
        out.push_str(&format!("  {store:<12} {channel:<8} {}\n", text.join(", ")));
    }
    // The cloud's store and tier reports for the day (local dates in each store's zone).
    out.push_str(&format!(
        "\nStores ({}):\n  {:<10} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>11} {:>11}\n",
        "the cloud's store reports for the day",
        "store",
        "visits",
        "visitors",
        "dwell",
        "offers",
        "clicked",
        "redeemed",
        "purchases",
        "revenue ¥",
        "by offers ¥"
    ));
    let mut reported_purchases = 0u64;
    let mut places: Vec<(String, String)> = s
        .stores
        .iter()
        .map(|st| (st.id.to_string(), st.time_zone.clone()))
        .collect();
    places.push(("online".into(), "Asia/Tokyo".into()));
    for (id, tz) in &places {
        let tz: chrono_tz::Tz = tz.parse().unwrap_or(chrono_tz::Tz::UTC);
        let local = |ms: i64| {
            chrono::DateTime::from_timestamp_millis(ms)
                .unwrap_or_default()
                .with_timezone(&tz)
                .date_naive()
        };
        let path = format!(
            "/v1/admin/reports/stores/{id}?from={}&to={}",
            local(start),
            local(end)
        );
        let r = api.admin(reqwest::Method::GET, &path, None).await?;
        // The tallies the report reads say what the stored rows say (read before and after,
        // so a figure still moving is read again).
        let mut agreed = false;
        for _ in 0..10 {
            let rows_path = format!("{path}&source=rows");
            let before = api.admin(reqwest::Method::GET, &rows_path, None).await?;
            let tallies = api.admin(reqwest::Method::GET, &path, None).await?;
            if before == tallies {
                agreed = true;
                break;
            }
            if before == api.admin(reqwest::Method::GET, &rows_path, None).await? {
                failures.push(format!(
                    "the store report of {id} differs from its stored rows:\n  tallies {tallies}\n  rows    {before}"
                ));
                agreed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !agreed {
            failures.push(format!(
                "the store report of {id} kept changing: its tallies were never compared with its rows"
            ));
        }
        let n = |v: &Value| v.as_u64().unwrap_or(0);
        let yen = |v: &Value| v["JPY"].as_f64().unwrap_or(0.0);
        reported_purchases += n(&r["purchases"]["count"]);
        out.push_str(&format!(
            "  {:<10} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>9} {:>11.0} {:>11.0}\n",
            id,
            n(&r["visits"]),
            n(&r["unique_visitors"]),
            r["median_dwell_min"]
                .as_f64()
                .map_or("-".to_owned(), |m| format!("{m:.0}min")),
            n(&r["offers"]["decided"]),
            n(&r["offers"]["clicked"]),
            n(&r["offers"]["redeemed"]),
            n(&r["purchases"]["count"]),
            yen(&r["purchases"]["revenue"]),
            yen(&r["purchases"]["revenue_attributed"]),
        ));
    }
    let day = chrono::DateTime::from_timestamp_millis(start)
        .unwrap_or_default()
        .with_timezone(&chrono_tz::Tz::Asia__Tokyo)
        .date_naive();
    let tiers = api
        .admin(
            reqwest::Method::GET,
            &format!("/v1/admin/reports/tiers?from={day}&to={day}"),
            None,
        )
        .await?;
    out.push_str(&format!(
        "Loyalty tiers at the day's end:\n  {:<10} {:>9} {:>14} {:>12} {:>18}\n",
        "tier", "customers", "spend to date ¥", "LTV avg ¥", "12-month proj. ¥"
    ));
    for t in tiers["tiers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<10} {:>9} {:>14.0} {:>12.0} {:>18.0}\n",
            t["tier"].as_str().unwrap_or(""),
            t["customers"].as_u64().unwrap_or(0),
            t["spend_to_date"].as_f64().unwrap_or(0.0),
            t["ltv_average"].as_f64().unwrap_or(0.0),
            t["projected_12m"].as_f64().unwrap_or(0.0),
        ));
    }
    if reported_purchases == 0 {
        failures.push("no purchase reached the store reports".into());
    }
    let mut delivered_total = 0u64;
    for c in &s.campaigns {
        let id = c["id"].as_str().unwrap_or_default();
        let r = api
            .admin(
                reqwest::Method::GET,
                &format!("/v1/admin/reports/campaigns/{id}"),
                None,
            )
            .await?;
        out.push_str(&format!(
            "\nCampaign {id}\n  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8}\n",
            "group", "customers", "sent", "delivered", "redeemed", "returned", "rate"
        ));
        for g in r["groups"].as_array().into_iter().flatten() {
            let f = |k: &str| g["funnel"][k].as_u64().unwrap_or(0);
            delivered_total += f("delivered");
            out.push_str(&format!(
                "  {:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7.1}%\n",
                g["group"].as_str().unwrap_or(""),
                g["customers"].as_u64().unwrap_or(0),
                f("sent"),
                f("delivered"),
                f("redeemed"),
                g["returned"].as_u64().unwrap_or(0),
                g["return_rate"].as_f64().unwrap_or(0.0) * 100.0
            ));
        }
        let truth = s
            .personas
            .first()
            .map(|p| p.effect.return_after_offer - p.effect.return_without_offer)
            .unwrap_or(0.0);
        let lifts = r["lift"].as_array().cloned().unwrap_or_default();
        let wants_lift = !replayed && (s.expect.lift_covers_truth || s.expect.lift_excludes_zero);
        if wants_lift && lifts.is_empty() {
            failures.push(format!(
                "campaign {id}: no lift to check (no variant measured)"
            ));
        }
        for l in &lifts {
            if wants_lift && l["too_small"] == true {
                failures.push(format!("campaign {id}: too few customers to read the lift"));
            }
            let (d, lo, hi) = (
                l["difference"].as_f64().unwrap_or(0.0),
                l["difference_ci95"]["low"].as_f64().unwrap_or(0.0),
                l["difference_ci95"]["high"].as_f64().unwrap_or(0.0),
            );
            out.push_str(&format!(
                "  lift of {} over holdout: {:+.1} points (95 % CI {:+.1} to {:+.1}); true effect {:+.1}{}\n",
                l["variant"].as_str().unwrap_or(""),
                d * 100.0,
                lo * 100.0,
                hi * 100.0,
                truth * 100.0,
                if l["too_small"] == true { " — too few customers to read" } else { "" }
            ));
            // The 95 % interval misses the truth one run in twenty by construction; the check
            // uses the 99.9 % interval (the same standard error), so a run fails only when the
            // measurement is off, not when it is merely unlucky.
            let se = (hi - lo) / (2.0 * 1.96);
            let (wide_lo, wide_hi) = (d - 3.29 * se, d + 3.29 * se);
            if wants_lift && s.expect.lift_covers_truth && !(wide_lo <= truth && truth <= wide_hi) {
                failures.push(format!("campaign {id}: the lift's 99.9 % interval [{wide_lo:.3}, {wide_hi:.3}] does not cover the true effect {truth:.3}"));
            }
            if wants_lift && s.expect.lift_excludes_zero && lo <= 0.0 && hi >= 0.0 {
                failures.push(format!(
                    "campaign {id}: the lift interval [{lo:.3}, {hi:.3}] includes zero"
                ));
            }
        }
    }
    if total < s.expect.min_visits {
        failures.push(format!(
            "{total} store visits, expected at least {}",
            s.expect.min_visits
        ));
    }
    if delivered_total < s.expect.min_offers {
        failures.push(format!(
            "{delivered_total} offers delivered, expected at least {}",
            s.expect.min_offers
        ));
    }
    if let (Some(tol), Some(p)) = (s.expect.platform_share_tolerance, s.personas.first()) {
        // Who the system can see: iPhones and Android phones through the app or LINE, other
        // phones through LINE only.
        let seen_app_or_line = 1.0 - (1.0 - p.app_share) * (1.0 - p.line_share);
        let weights = [
            ("ios", p.platforms.ios * seen_app_or_line),
            ("android", p.platforms.android * seen_app_or_line),
            ("other", p.platforms.other * p.line_share),
        ];
        let sum: f64 = weights.iter().map(|(_, w)| w).sum();
        let known: u64 = ["ios", "android", "other"]
            .iter()
            .map(|k| by_phone.get(k).copied().unwrap_or(0))
            .sum();
        for (k, w) in weights {
            let want = w / sum.max(1e-9);
            let got = by_phone.get(k).copied().unwrap_or(0) as f64 / known.max(1) as f64;
            out.push_str(&format!(
                "  {k:<8} share of visits {:.3} (scenario {:.3})\n",
                got, want
            ));
            if (got - want).abs() > tol {
                failures.push(format!("{k} visits are {got:.3} of all, the scenario gives {want:.3} (tolerance {tol})"));
            }
        }
    }
    if failures.is_empty() {
        out.push_str("\nEvery expectation held.\n");
    } else {
        out.push_str("\nExpectations that failed:\n");
        for f in &failures {
            out.push_str(&format!("  - {f}\n"));
        }
    }
    Ok(Outcome {
        report: out,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_visit_entered_before_the_last_exit_is_a_piece_of_the_same_stay() {
        let key = |c: &str, s: &str| (c.to_owned(), s.to_owned());
        let spans = HashMap::from([
            // Split by late evidence (the second piece entered before the first's exit),
            // then a return after the exit, then one still open with a piece inside it.
            (
                key("c1", "shibuya"),
                vec![
                    (0, 900),
                    (600, 2_000),
                    (2_000, 2_500),
                    (3_000, i64::MAX),
                    (4_000, 4_100),
                ],
            ),
            // The same shopper at another store is another stay.
            (key("c1", "umeda"), vec![(100, 200)]),
            (key("c2", "shibuya"), vec![(0, 10)]),
        ]);
        assert_eq!(stays(spans), 5);
    }

    #[test]
    fn a_run_record_reads_back_and_names_its_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.ndjson");
        let lines = [
            Recorded::Header {
                omo_run: 1,
                scenario: crate::scenario::SATURDAY.to_owned(),
                hours: 3.0,
            },
            Recorded::Advert {
                at: 1,
                gateway: "shibuya-g1".into(),
                line: "x".into(),
            },
            Recorded::Redeem {
                at: 2,
                shopper: 7,
                amount: 12,
            },
            Recorded::Fault { at: 3, index: 0 },
        ];
        let text: Vec<String> = lines
            .iter()
            .map(|l| serde_json::to_string(l).unwrap())
            .collect();
        std::fs::write(&path, text.join("\n")).unwrap();
        let RunRecord {
            scenario,
            hours,
            actions,
        } = read_record(&path).unwrap();
        assert_eq!(scenario, crate::scenario::SATURDAY);
        assert_eq!(hours, 3.0);
        let (numbers, read): (Vec<usize>, Vec<Recorded>) = actions.into_iter().unzip();
        assert_eq!(numbers, [2, 3, 4]);
        assert_eq!(read, lines[1..]);

        std::fs::write(
            &path,
            format!("{}\n{{\"kind\":\"advert\",\"at\":1}}", text[0]),
        )
        .unwrap();
        let e = format!("{:#}", read_record(&path).unwrap_err());
        assert!(e.contains("line 2"), "{e}");
        std::fs::write(&path, &text[1]).unwrap();
        let e = format!("{:#}", read_record(&path).unwrap_err());
        assert!(e.contains("line 1"), "{e}");
        std::fs::write(&path, format!("{}\n{}", text[0], text[0])).unwrap();
        let e = format!("{:#}", read_record(&path).unwrap_err());
        assert!(e.contains("line 2: a second header"), "{e}");
    }
}
