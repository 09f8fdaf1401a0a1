//! `omo-sim load`: N gateways and M customers against the real cloud at a target event rate.
//!
//! It starts the system under test on loopback — `omo-cloud run` with its embedded broker on a
//! fresh data dir (or a PostgreSQL database; with `--instances N`, N instances on it behind
//! Mosquitto with a shared subscription) holding a generated fleet (stores of ten gateways, one
//! gateway zone each), and the fake LINE server the cloud delivers to — registers M customers (a member id, a LINE
//! user, consent, a static beacon id), and a campaign that offers on every store entry at most
//! once a day. Then each gateway is an MQTT client speaking the gateway protocol: signed
//! presence batches, a bounded window of unacknowledged batches, resends of what the cloud did
//! not acknowledge, as the real outbox does.
//!
//! Customers cycle through visits: each visit is an enter, stays every `stay_s` and an exit,
//! `visit_s` long, at one gateway; the cycle's length follows from the target rate, and each
//! customer starts at their own phase of it, so the rate ramps up over the first visit (the
//! warm-up) and then holds. A customer's first visit is entered by the cloud once its evidence
//! spans the cloud's `enter_after_s`; the event that completes that span is the one the offer's
//! latency is measured from, to the offer's arrival at the fake LINE server.
//!
//! It prints the events/s offered and acknowledged over the measured window, the latency
//! percentiles, what was lost (events never acknowledged, offers that never arrived, offers sent
//! twice) and the CPU used by the load generator, the cloud and the fake LINE server apart.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::Utc;
use omo_device_config::payload::{Epoch, PresenceAck, PresenceEvent, Sighting, SightingKind};
use omo_device_config::{BeaconId, SeqRanges, SigningKey, Timestamp};
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::mqtt_gateway::{Creds, MqttGateway};
use crate::procs::{
    cpu_seconds, futures_unordered, keep_on_error, peak_rss_kb, rss_kb, stage_metric, Api,
};
use crate::world;

mod system;
use system::{fleet_lag, partitions_held, start_system, System};

/// Gateways per generated store.
const GATEWAYS_PER_STORE: usize = 10;
/// The cloud's visit timing for the run: a visit is entered after 20 s of evidence, and
/// evidence is applied once the log is 2 s past it (the latency floor).
const ENTER_AFTER_S: u32 = 20;
const REORDER_WINDOW_S: u32 = 2;
/// Events per presence batch at most (a batch stays well under the 8 KiB payload limit).
const MAX_BATCH: usize = 40;
/// How long after the last event the run waits for acknowledgements and offers.
const DRAIN: Duration = Duration::from_secs(90);

/// What to run (the `omo-sim load` flags).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    #[arg(long, default_value_t = 1000)]
    pub gateways: usize,
    #[arg(long, default_value_t = 100_000)]
    pub customers: usize,
    /// Presence events per second, all gateways together.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Seconds measured, after a warm-up of one visit.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// A present customer's stay interval, seconds.
    #[arg(long, default_value_t = 5)]
    pub stay_s: u32,
    /// A visit's length, seconds.
    #[arg(long, default_value_t = 60)]
    pub visit_s: u32,
    /// A gateway's batch interval, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub batch_ms: u64,
    /// Unacknowledged batches a gateway keeps in flight at most.
    #[arg(long, default_value_t = 8)]
    pub window: usize,
    /// Seconds before an unacknowledged batch is sent again.
    #[arg(long, default_value_t = 10)]
    pub resend_s: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the cloud's state in this (empty) PostgreSQL database instead of a fresh sled dir:
    /// a libpq URL, its password there or in OMO_CLOUD_PG_PASSWORD. The CPU of the local
    /// `postgres` processes is reported beside the cloud's.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Run the cloud as this many instances on the --postgres database, behind a Mosquitto
    /// broker the load starts (Debian's `mosquitto`) with a shared subscription; the API
    /// calls go to the instances in turn.
    #[arg(long, default_value_t = 1, requires = "postgres", value_parser = clap::value_parser!(u16).range(1..=8))]
    pub instances: u16,
    /// Where the omo-cloud binary is; default: beside this program.
    #[arg(skip)]
    pub bin_dir: Option<PathBuf>,
}

impl Options {
    /// Every problem with the options, by flag: the run is bounded in size and time.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut check = |ok: bool, m: String| {
            if !ok {
                p.push(m);
            }
        };
        check(
            (1..=5_000).contains(&self.gateways),
            format!("--gateways {}: must be within 1..=5000", self.gateways),
        );
        check(
            self.customers >= self.gateways && self.customers <= 1_000_000,
            format!(
                "--customers {}: must be at least the gateways and at most 1,000,000",
                self.customers
            ),
        );
        check(
            self.rate >= 1.0 && self.rate <= 100_000.0,
            format!("--rate {}: must be within 1..=100000 events/s", self.rate),
        );
        check(
            (5..=3_600).contains(&self.seconds),
            format!("--seconds {}: must be within 5..=3600", self.seconds),
        );
        check(
            (1..=60).contains(&self.stay_s),
            format!("--stay-s {}: must be within 1..=60", self.stay_s),
        );
        let stay = self.stay_s.clamp(1, 60);
        check(
            self.visit_s >= ENTER_AFTER_S + 2 * stay
                && self.visit_s <= 3_600
                && self.visit_s % stay == 0,
            format!(
                "--visit-s {}: must be a multiple of --stay-s, at least {} s (the cloud enters a visit once a stay comes {ENTER_AFTER_S} s after the enter, and a visit's last event is its exit) and at most 3600",
                self.visit_s,
                ENTER_AFTER_S + 2 * stay
            ),
        );
        check(
            (100..=10_000).contains(&self.batch_ms),
            format!("--batch-ms {}: must be within 100..=10000", self.batch_ms),
        );
        check(
            (1..=64).contains(&self.window),
            format!("--window {}: must be within 1..=64", self.window),
        );
        check(
            (1..=120).contains(&self.resend_s),
            format!("--resend-s {}: must be within 1..=120", self.resend_s),
        );
        if p.is_empty() {
            let plan = Plan::new(self);
            let most =
                self.customers as f64 * plan.steps as f64 / (f64::from(self.visit_s + self.stay_s));
            if plan.cycle_ms < u64::from(self.visit_s + self.stay_s) * 1000 {
                p.push(format!(
                    "--rate {}: {} customers with visits of {} s and a stay every {} s give at most {most:.0} events/s; raise --customers or lower --stay-s",
                    self.rate, self.customers, self.visit_s, self.stay_s
                ));
            }
        }
        p
    }
}

/// The visit cycle every customer follows, from the options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    /// Events per visit: an enter, stays, an exit.
    pub steps: u32,
    pub stay_ms: u64,
    /// One visit and the absence after it.
    pub cycle_ms: u64,
    /// The step whose evidence completes `ENTER_AFTER_S`: the cloud enters the visit on it.
    pub deciding_step: u32,
    /// Until every customer has started their first visit and the rate holds.
    pub warmup_ms: u64,
}

impl Plan {
    pub fn new(o: &Options) -> Plan {
        let steps = o.visit_s / o.stay_s;
        // M customers, `steps` events each per cycle: M·steps / cycle = rate.
        let cycle_ms = (o.customers as f64 * f64::from(steps) * 1000.0 / o.rate).round() as u64;
        Plan {
            steps,
            stay_ms: u64::from(o.stay_s) * 1000,
            cycle_ms,
            deciding_step: ENTER_AFTER_S.div_ceil(o.stay_s),
            warmup_ms: u64::from(o.visit_s) * 1000,
        }
    }

    /// The time, from the run's start, of a customer's `step` in `cycle`.
    pub fn due_ms(&self, phase_ms: u64, cycle: u64, step: u32) -> u64 {
        phase_ms + cycle * self.cycle_ms + u64::from(step) * self.stay_ms
    }

    /// The kind of event a step is.
    pub fn kind(&self, step: u32) -> SightingKind {
        if step == 0 {
            SightingKind::Enter
        } else if step + 1 == self.steps {
            SightingKind::Exit
        } else {
            SightingKind::Stay
        }
    }
}

/// A customer of the run.
#[derive(Debug, Clone)]
struct LoadCustomer {
    index: u32,
    beacon: BeaconId,
    phase_ms: u64,
}

/// A customer's static beacon id: an iBeacon of the run's UUID, numbered by the customer.
fn beacon_of(index: u32) -> BeaconId {
    format!(
        "ibeacon:0A0D0000-0000-4000-8000-00000000000A:{}:{}",
        index >> 16,
        index & 0xffff
    )
    .parse()
    .expect("a valid iBeacon id")
}

/// A customer's LINE user id; the customer's number is its last 8 hex digits.
fn line_user_of(index: u32) -> String {
    format!("U{:024x}{index:08x}", 0x0a0d_u128)
}

fn customer_of_line_user(to: &str) -> Option<u32> {
    u32::from_str_radix(to.get(25..33)?, 16).ok()
}

/// The counters every gateway task adds to.
#[derive(Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    resent: AtomicU64,
}

/// The run's time line, shared by the gateway tasks.
#[derive(Clone, Copy)]
struct Timeline {
    start: Instant,
    start_wall_ms: i64,
    /// No event is due after this.
    stop: Instant,
    /// Waiting for acknowledgements ends here.
    give_up: Instant,
}

/// What one gateway ended with.
#[derive(Default)]
struct GatewayEnd {
    /// Each first visit's deciding event that was sent: (customer, event time ms, wall time
    /// ms its batch was first published: its arrival at the cloud, on loopback).
    deciding: Vec<(u32, i64, i64)>,
    /// Events sent but never settled by an acknowledgement.
    unacked: u64,
    /// Events generated but never sent (the window stayed full until the run gave up).
    unsent: u64,
}

struct InFlight {
    last: u64,
    events: Vec<PresenceEvent>,
    sent: Instant,
}

/// One gateway: generates its customers' events when due, sends them in batches within the
/// window, resends what is not acknowledged in time, until every event is settled or the
/// run gives up.
#[allow(clippy::too_many_arguments)]
async fn drive(
    mut gw: MqttGateway,
    customers: Vec<LoadCustomer>,
    plan: Plan,
    opts: Options,
    time: Timeline,
    counters: Arc<Counters>,
    offset_ms: u64,
) -> anyhow::Result<GatewayEnd> {
    let mut g = Outbox::new(&customers, plan, Epoch::random());
    let resend_after = Duration::from_secs(opts.resend_s);
    let mut tick = tokio::time::interval_at(
        time.start + Duration::from_millis(offset_ms),
        Duration::from_millis(opts.batch_ms),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let elapsed = now.min(time.stop).duration_since(time.start).as_millis() as u64;
                g.generate(&customers, plan, (elapsed, time.start_wall_ms))?;
                g.resend(&gw, (now, resend_after, time.give_up), &counters).await?;
                g.send(&gw, (now, opts.window, time.give_up), &counters).await?;
                if now >= time.stop && g.pending.is_empty() && g.in_flight.is_empty() {
                    break;
                }
                if now >= time.give_up {
                    g.end.unacked = u64::try_from(g.outstanding.count())?;
                    g.end.unsent = g.pending.len() as u64;
                    break;
                }
            }
            ack = gw.next_ack(Duration::from_secs(3600)) => {
                let Some(ack) = ack? else { continue };
                g.acked(&ack, &counters)?;
            }
        }
    }
    Ok(g.end)
}

/// A load gateway's outbox: the events due next per customer, those generated but not sent,
/// the batches in flight and the seqs not yet settled.
struct Outbox {
    epoch: Epoch,
    /// (due ms into the run, customer index, cycle, step), earliest first.
    due: BinaryHeap<Reverse<(u64, usize, u64, u32)>>,
    next_seq: u64,
    pending: Vec<PresenceEvent>,
    in_flight: BTreeMap<u64, InFlight>,
    outstanding: SeqRanges,
    /// Deciding events not published yet, by seq: (customer, event time ms).
    deciding: HashMap<u64, (u32, i64)>,
    end: GatewayEnd,
}

impl Outbox {
    fn new(customers: &[LoadCustomer], plan: Plan, epoch: Epoch) -> Outbox {
        Outbox {
            epoch,
            due: customers
                .iter()
                .enumerate()
                .map(|(i, c)| Reverse((plan.due_ms(c.phase_ms, 0, 0), i, 0, 0)))
                .collect(),
            next_seq: 1,
            pending: Vec::new(),
            in_flight: BTreeMap::new(),
            outstanding: SeqRanges::new(),
            deciding: HashMap::new(),
            end: GatewayEnd::default(),
        }
    }

    /// Generates every event due by `elapsed` ms into the run (`start_wall_ms`: the run's
    /// start in wall time), noting the deciding event of each customer's first visit.
    fn generate(
        &mut self,
        customers: &[LoadCustomer],
        plan: Plan,
        (elapsed, start_wall_ms): (u64, i64),
    ) -> anyhow::Result<()> {
        while let Some(Reverse((at, i, cycle, step))) = self.due.peek().copied() {
            if at > elapsed {
                break;
            }
            self.due.pop();
            let c = &customers[i];
            let ts_ms = start_wall_ms + at as i64;
            if cycle == 0 && step == plan.deciding_step {
                self.deciding.insert(self.next_seq, (c.index, ts_ms));
            }
            self.pending.push(PresenceEvent::sighting(
                plan.kind(step),
                Sighting {
                    seq: self.next_seq,
                    ts: Timestamp::from_millis(ts_ms).context("event time out of range")?,
                    beacon: c.beacon,
                    rssi: -62.0 - f64::from(c.index % 20),
                    distance_m: 1.5 + f64::from(c.index % 10),
                    seen_s: f64::from(step) * plan.stay_ms as f64 / 1000.0,
                },
            ));
            self.next_seq += 1;
            let (cycle, step) = if step + 1 == plan.steps {
                (cycle + 1, 0)
            } else {
                (cycle, step + 1)
            };
            self.due.push(Reverse((
                plan.due_ms(c.phase_ms, cycle, step),
                i,
                cycle,
                step,
            )));
        }
        Ok(())
    }

    /// Sends again every batch in flight for `resend_after` without its acknowledgement.
    async fn resend(
        &mut self,
        gw: &MqttGateway,
        (now, resend_after, give_up): (Instant, Duration, Instant),
        counters: &Counters,
    ) -> anyhow::Result<()> {
        for f in self.in_flight.values_mut() {
            if now.duration_since(f.sent) >= resend_after {
                publish(gw, self.epoch, &f.events, give_up).await?;
                counters
                    .resent
                    .fetch_add(f.events.len() as u64, Ordering::Relaxed);
                f.sent = now;
            }
        }
        Ok(())
    }

    /// Sends the pending events in batches while the window has room.
    async fn send(
        &mut self,
        gw: &MqttGateway,
        (now, window, give_up): (Instant, usize, Instant),
        counters: &Counters,
    ) -> anyhow::Result<()> {
        while !self.pending.is_empty() && self.in_flight.len() < window {
            let rest = self.pending.split_off(self.pending.len().min(MAX_BATCH));
            let batch = std::mem::replace(&mut self.pending, rest);
            let (first, last) = (seq_of(&batch[0]), seq_of(&batch[batch.len() - 1]));
            publish(gw, self.epoch, &batch, give_up).await?;
            let sent_ms = Utc::now().timestamp_millis();
            for e in &batch {
                if let Some((c, ts_ms)) = self.deciding.remove(&seq_of(e)) {
                    self.end.deciding.push((c, ts_ms, sent_ms));
                }
            }
            counters
                .published
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            self.outstanding.insert_range(first, last);
            self.in_flight.insert(
                first,
                InFlight {
                    last,
                    events: batch,
                    sent: now,
                },
            );
        }
        Ok(())
    }

    /// Settles what an acknowledgement of this epoch stored or rejected; a batch leaves the
    /// window once none of its seqs is outstanding.
    fn acked(&mut self, ack: &PresenceAck, counters: &Counters) -> anyhow::Result<()> {
        if ack.epoch != self.epoch {
            return Ok(());
        }
        let stored = self.outstanding.intersection(&ack.seqs);
        let settled = self.outstanding.intersection(&ack.settled());
        counters
            .acked
            .fetch_add(u64::try_from(stored.count())?, Ordering::Relaxed);
        counters.rejected.fetch_add(
            u64::try_from(settled.count() - stored.count())?,
            Ordering::Relaxed,
        );
        self.outstanding = self.outstanding.difference(&settled);
        let outstanding = &self.outstanding;
        self.in_flight.retain(|first, f| {
            !outstanding
                .intersection(&SeqRanges::from_range(*first, f.last))
                .is_empty()
        });
        Ok(())
    }
}

/// Publishes a batch; a broker that stops taking requests (the client's queue stays full)
/// fails the gateway at the run's give-up time instead of hanging it.
async fn publish(
    gw: &MqttGateway,
    epoch: Epoch,
    events: &[PresenceEvent],
    give_up: Instant,
) -> anyhow::Result<()> {
    tokio::time::timeout_at(
        give_up,
        gw.publish_presence(epoch, events.to_vec(), SeqRanges::new()),
    )
    .await
    .context("the broker took no request until the run gave up")?
}

fn seq_of(e: &PresenceEvent) -> u64 {
    match e {
        PresenceEvent::Enter(s) | PresenceEvent::Stay(s) | PresenceEvent::Exit(s) => s.seq,
        PresenceEvent::Footfall(f) => f.seq,
    }
}

/// The generated fleet's site file and the gateways' logins.
fn fleet_site(gateways: usize, seed: u64) -> (String, Vec<world::GatewayLogin>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let stores = gateways.div_ceil(GATEWAYS_PER_STORE);
    let mut t = String::new();
    let mut logins = Vec::new();
    for s in 0..stores {
        let (lat, lon) = (
            35.60 + (s / 50) as f64 * 0.01,
            139.60 + (s % 50) as f64 * 0.01,
        );
        t.push_str(&format!(
            "[[stores]]\nid = \"st-{s:04}\"\nname = \"Load store {s}\"\ntime_zone = \"Asia/Tokyo\"\nlocation = {{ lat = {lat:.5}, lon = {lon:.5} }}\n\n"
        ));
    }
    for g in 0..gateways {
        let login = world::gateway_login(
            &mut rng,
            &format!("st-{:04}", g / GATEWAYS_PER_STORE),
            &format!("gw-{g:04}"),
        );
        t.push_str(&login.site_entry());
        logins.push(login);
    }
    for s in 0..stores {
        let ids: Vec<String> = logins
            .iter()
            .filter(|l| l.store == format!("st-{s:04}"))
            .map(|l| format!("\"{}\"", l.gateway))
            .collect();
        t.push_str(&format!(
            "[[gateway_zones]]\nid = \"st-{s:04}-floor\"\nstore = \"st-{s:04}\"\nname = \"Load store {s} (floor)\"\ngateways = [{}]\nmax_distance_m = 25.0\n\n",
            ids.join(", ")
        ));
    }
    (t, logins)
}

/// The campaign of the run: an offer on LINE at every store entry, once a day per customer.
fn campaign(stores: usize) -> Value {
    let today = Utc::now().date_naive();
    let ids: Vec<String> = (0..stores).map(|s| format!("st-{s:04}")).collect();
    json!({
        "id": "load-welcome",
        "name": "Load: welcome on entry",
        "trigger": {"kind": "enter"},
        "places": {"stores": ids},
        "schedule": {
            "from": (today - chrono::Days::new(1)).to_string(),
            "to": (today + chrono::Days::new(2)).to_string(),
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        },
        "caps": {"per_customer": 1, "period_days": 1},
        "budget": 10_000_000,
        "offer_ttl_minutes": 60,
        "channels": ["line"],
        "variants": [{"id": "a", "weight": 1, "template": {"text": "Welcome to {store}: {coupon}"}}]
    })
}

/// One point of a run's curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub at_s: u64,
    pub visit_lag: Option<f64>,
    pub decide_lag: Option<f64>,
    pub cloud_rss_mb: f64,
}

/// The figures of a run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub offered_per_s: f64,
    pub acked_per_s: f64,
    pub published: u64,
    pub acked: u64,
    pub rejected: u64,
    pub resent: u64,
    pub unacked: u64,
    /// Generated but never sent: the window stayed full until the run gave up.
    pub unsent: u64,
    pub stored_by_cloud: u64,
    /// Whether the cloud's statistics stage had read the whole log when it was asked.
    pub stats_caught_up: bool,
    /// Log records the visit stage had still to read when the window ended.
    pub visit_stage_lag: Option<f64>,
    pub offers_expected: u64,
    pub offers_received: u64,
    pub offers_missing: u64,
    pub offers_twice: u64,
    /// p50, p90, p99, max of the offers decided in the measured window, ms: from the deciding
    /// sighting's event time…
    pub latency_ms: [i64; 4],
    pub latency_samples: usize,
    /// …and from the moment the rules let the cloud act on it (the pipeline's own delay; see
    /// [`acting_allowed_at`]).
    pub pipeline_ms: [i64; 4],
    /// Every 10 s of the run: seconds since the start, the visit and decision stages' lag
    /// (records, transitions) and the cloud's resident set, MB.
    pub curve: Vec<Sample>,
    pub cpu_generator: f64,
    pub cpu_cloud: f64,
    pub cpu_fake_line: f64,
    /// The local PostgreSQL processes' (0 on sled).
    pub cpu_database: f64,
    /// Mosquitto's, with several instances (0: the embedded broker's work is the cloud's).
    pub cpu_broker: f64,
    /// The partitions of the visit and decision stages each instance held when the window
    /// ended, the first instance's first.
    pub partitions: Vec<(u64, u64)>,
    /// Steps of the visit and decision stages taken again because another instance had
    /// changed what they read, from the start until the window ended.
    pub step_conflicts: [f64; 2],
    pub cloud_peak_rss_mb: f64,
    pub generator_peak_rss_mb: f64,
}

impl Outcome {
    /// Nothing lost, nothing sent twice.
    pub fn lossless(&self) -> bool {
        self.unacked == 0
            && self.unsent == 0
            && self.rejected == 0
            && self.offers_missing == 0
            && self.offers_twice == 0
            && self.stored_by_cloud >= self.acked
    }
}

/// Runs the load; the logs stay in a kept directory when it fails.
pub async fn run(opts: Options) -> anyhow::Result<Outcome> {
    let problems = opts.problems();
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    let dir = tempfile::Builder::new().prefix("omo-load-").tempdir()?;
    let outcome = run_in(&opts, &dir).await;
    keep_on_error(dir, outcome)
}

/// When the rules let the cloud act on a deciding sighting (event time `ts_ms`, arrival
/// `arrived_ms`): the reorder window holds evidence until the log's time is the window past its
/// event time, and nothing can act on it before it arrives. The pipeline's own delay is what
/// comes after the later of the two.
fn acting_allowed_at(ts_ms: i64, arrived_ms: i64) -> i64 {
    arrived_ms.max(ts_ms + i64::from(REORDER_WINDOW_S) * 1000)
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// p50, p90, p99 and the maximum of `sorted` (0 when empty).
fn summary(sorted: &[i64]) -> [i64; 4] {
    [
        percentile(sorted, 0.50),
        percentile(sorted, 0.90),
        percentile(sorted, 0.99),
        sorted.last().copied().unwrap_or(0),
    ]
}

async fn run_in(opts: &Options, dir: &tempfile::TempDir) -> anyhow::Result<Outcome> {
    let plan = Plan::new(opts);
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed);
    let mut sys = start_system(opts, dir.path(), &mut rng).await?;
    let order = register(opts, &sys.api, sys.stores, &mut rng).await?;
    let clients = connect_gateways(opts, &plan, &sys).await?;

    // The run.
    let start = Instant::now() + Duration::from_secs(1);
    let start_wall_ms = Utc::now().timestamp_millis() + 1000;
    let measure_from = start + Duration::from_millis(plan.warmup_ms);
    let stop = measure_from + Duration::from_secs(opts.seconds);
    let time = Timeline {
        start,
        start_wall_ms,
        stop,
        give_up: stop + DRAIN,
    };
    let counters = Arc::new(Counters::default());
    let mut tasks = spawn_gateways(opts, plan, (time, &counters), clients, &order);
    let watched = watch(&mut sys, (measure_from, time), &counters).await?;
    let Some((p0, a0, c0, t0)) = watched.window_start else {
        bail!("the measured window never started");
    };
    let (p1, a1, c1, t1) = watched.window_end;
    let metrics = sys.metrics().await?;
    let visit_lag = fleet_lag(&metrics, "visits");
    let partitions = metrics
        .iter()
        .map(|m| (partitions_held(m, "visits"), partitions_held(m, "decide")))
        .collect();
    let conflicts = |stage: &str| -> f64 {
        metrics
            .iter()
            .filter_map(|m| stage_metric(m, "omo_stage_step_conflicts_total", stage))
            .fold(0.0, |a, b| a + b)
    };
    let step_conflicts = [conflicts("visits"), conflicts("decide")];
    eprintln!("omo-sim load: draining…");
    let drained = drain(&mut tasks, time, &mut sys.procs).await?;
    let (offers, stored_by_cloud, stats_caught_up) =
        collect_offers(&mut sys, &drained.deciding, watched.offers).await?;
    let mut cloud_rss = 0.0;
    for pid in &sys.cloud_pids {
        cloud_rss += peak_rss_kb(*pid)? as f64 / 1024.0;
    }
    let own_rss = peak_rss_kb(std::process::id())? as f64 / 1024.0;
    drop(sys);

    let seconds = t1.duration_since(t0).as_secs_f64();
    let measured_from_ms = start_wall_ms + plan.warmup_ms as i64;
    let measured_to_ms = measured_from_ms + (opts.seconds * 1000) as i64;
    let (latencies, own) = latencies(
        &drained.deciding,
        &offers,
        (measured_from_ms, measured_to_ms),
    );
    let deciding = &drained.deciding;
    Ok(Outcome {
        offered_per_s: (p1 - p0) as f64 / seconds,
        acked_per_s: (a1 - a0) as f64 / seconds,
        published: counters.published.load(Ordering::Relaxed),
        acked: counters.acked.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        resent: counters.resent.load(Ordering::Relaxed),
        unacked: drained.unacked,
        unsent: drained.unsent,
        stored_by_cloud,
        stats_caught_up,
        visit_stage_lag: visit_lag,
        offers_expected: deciding.len() as u64,
        offers_received: offers.len() as u64,
        offers_missing: deciding.keys().filter(|c| !offers.contains_key(c)).count() as u64,
        offers_twice: offers.values().filter(|r| r.len() > 1).count() as u64,
        latency_ms: summary(&latencies),
        latency_samples: latencies.len(),
        pipeline_ms: summary(&own),
        curve: watched.curve,
        cpu_generator: (c1[0] - c0[0]) / seconds,
        cpu_cloud: (c1[1] - c0[1]) / seconds,
        cpu_fake_line: (c1[2] - c0[2]) / seconds,
        cpu_database: (c1[3] - c0[3]) / seconds,
        cpu_broker: (c1[4] - c0[4]) / seconds,
        partitions,
        step_conflicts,
        cloud_peak_rss_mb: cloud_rss,
        generator_peak_rss_mb: own_rss,
    })
}

/// Registers the customers (64 at once) and the campaign; answers the customers in the
/// order their phases follow (shuffled by `rng`).
async fn register(
    opts: &Options,
    api: &Arc<Api>,
    stores: usize,
    rng: &mut rand::rngs::StdRng,
) -> anyhow::Result<Vec<u32>> {
    eprintln!(
        "omo-sim load: registering {} customers over {} gateways in {stores} stores…",
        opts.customers, opts.gateways
    );
    let registering = std::time::Instant::now();
    let mut order: Vec<u32> = (0..opts.customers as u32).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    futures_unordered(
        (0..opts.customers as u32).map(|i| {
            let api = api.clone();
            async move {
                api.admin(
                    reqwest::Method::POST,
                    "/v1/admin/customers",
                    Some(&json!({
                        "member_id": format!("load-{i}"),
                        "line_user": line_user_of(i),
                        "consent": {"line": true, "location": true},
                        "beacons": [beacon_of(i).to_string()],
                    })),
                )
                .await
                .map(|_| ())
            }
        }),
        64,
    )
    .await?;
    eprintln!(
        "omo-sim load: registered in {:.1} s",
        registering.elapsed().as_secs_f64()
    );
    api.admin(
        reqwest::Method::PUT,
        "/v1/admin/campaigns/load-welcome",
        Some(&campaign(stores)),
    )
    .await?;
    Ok(order)
}

/// Connects every gateway of the fleet (64 at once), in the fleet's order.
async fn connect_gateways(
    opts: &Options,
    plan: &Plan,
    sys: &System,
) -> anyhow::Result<Vec<(usize, MqttGateway)>> {
    let creds: Vec<Creds> = sys
        .logins
        .iter()
        .map(|l| {
            Ok(Creds {
                store: l.store.parse()?,
                gateway: l.gateway.parse()?,
                password: l.password.clone(),
                key: SigningKey::from_hex(&l.signing_key)?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    let connecting = std::time::Instant::now();
    let mqtt_port = sys.mqtt_port;
    let mut clients: Vec<(usize, MqttGateway)> = futures_unordered(
        creds.into_iter().enumerate().map(|(i, c)| async move {
            let password = c.password.clone();
            MqttGateway::connect(mqtt_port, &c, &password)
                .await
                .with_context(|| format!("gateway {}", c.gateway))
                .map(|g| (i, g))
        }),
        64,
    )
    .await?;
    clients.sort_by_key(|(i, _)| *i);
    eprintln!(
        "omo-sim load: {} gateways connected in {:.1} s; warm-up {} s, then {} s measured at {} events/s",
        clients.len(),
        connecting.elapsed().as_secs_f64(),
        plan.warmup_ms / 1000,
        opts.seconds,
        opts.rate
    );
    Ok(clients)
}

/// Starts a task per gateway driving its customers (`order`'s customers dealt over the
/// gateways, each at its phase of the cycle), its batches offset across the batch interval.
fn spawn_gateways(
    opts: &Options,
    plan: Plan,
    (time, counters): (Timeline, &Arc<Counters>),
    clients: Vec<(usize, MqttGateway)>,
    order: &[u32],
) -> tokio::task::JoinSet<anyhow::Result<GatewayEnd>> {
    let mut per_gateway: Vec<Vec<LoadCustomer>> = vec![Vec::new(); opts.gateways];
    for (slot, &i) in order.iter().enumerate() {
        per_gateway[i as usize % opts.gateways].push(LoadCustomer {
            index: i,
            beacon: beacon_of(i),
            phase_ms: slot as u64 * plan.cycle_ms / opts.customers as u64,
        });
    }
    let mut tasks = tokio::task::JoinSet::new();
    for ((i, gw), customers) in clients.into_iter().zip(per_gateway) {
        tasks.spawn(drive(
            gw,
            customers,
            plan,
            opts.clone(),
            time,
            counters.clone(),
            (i as u64 * opts.batch_ms) / opts.gateways as u64,
        ));
    }
    tasks
}

/// What watching the run saw: the counters and CPU times at the measured window's start and
/// end, the offers so far, and the curve sampled every 10 s.
struct Watched {
    window_start: Option<Measure>,
    window_end: Measure,
    offers: (usize, HashMap<u32, Vec<i64>>),
    curve: Vec<Sample>,
}

/// Events published and acknowledged, CPU seconds of (generator, the cloud's instances, fake
/// LINE, the local PostgreSQL processes, Mosquitto), when.
type Measure = (u64, u64, [f64; 5], Instant);

/// Watches the run until `time.stop`: the processes alive, the window's start measured at
/// `measure_from`, a sample of lags and memory every 10 s.
async fn watch(
    sys: &mut System,
    (measure_from, time): (Instant, Timeline),
    counters: &Counters,
) -> anyhow::Result<Watched> {
    let measure = |sys: &System| -> anyhow::Result<Measure> {
        let (cloud, broker) = sys.cpu_seconds()?;
        Ok((
            counters.published.load(Ordering::Relaxed),
            counters.acked.load(Ordering::Relaxed),
            [
                cpu_seconds(std::process::id())?,
                cloud,
                cpu_seconds(sys.fake_pid)?,
                crate::procs::cpu_seconds_named("postgres"),
                broker,
            ],
            Instant::now(),
        ))
    };
    let (start, stop) = (time.start, time.stop);
    let mut offers: HashMap<u32, Vec<i64>> = HashMap::new();
    let mut seen_offers = 0usize;
    let mut window_start = None;
    let mut next_report = start + Duration::from_secs(10);
    let mut curve: Vec<Sample> = Vec::new();
    while Instant::now() < stop {
        let now = Instant::now();
        exited(&mut sys.procs)?;
        if window_start.is_none() && now >= measure_from {
            window_start = Some(measure(sys)?);
        }
        if now >= next_report {
            seen_offers = poll_offers(&sys.api, sys.line_port, seen_offers, &mut offers).await?;
            let sample = sample(sys, now.duration_since(start).as_secs()).await?;
            eprintln!(
                "omo-sim load: {:>4} s: {} events sent, {} acknowledged, {} offers; lag: visit stage {}, decision stage {}; omo-cloud RSS {:.0} MB",
                sample.at_s,
                counters.published.load(Ordering::Relaxed),
                counters.acked.load(Ordering::Relaxed),
                seen_offers,
                lag_text(sample.visit_lag),
                lag_text(sample.decide_lag),
                sample.cloud_rss_mb,
            );
            curve.push(sample);
            next_report += Duration::from_secs(10);
        }
        tokio::time::sleep(Duration::from_millis(100).min(stop.saturating_duration_since(now)))
            .await;
    }
    Ok(Watched {
        window_start,
        window_end: measure(sys)?,
        offers: (seen_offers, offers),
        curve,
    })
}

/// The stages' lags and the cloud's memory (its instances together) `at_s` into the run.
async fn sample(sys: &System, at_s: u64) -> anyhow::Result<Sample> {
    let metrics = sys.metrics().await?;
    let mut rss_kb_all = 0;
    for pid in &sys.cloud_pids {
        rss_kb_all += rss_kb(*pid)?;
    }
    Ok(Sample {
        at_s,
        visit_lag: fleet_lag(&metrics, "visits"),
        decide_lag: fleet_lag(&metrics, "decide"),
        cloud_rss_mb: rss_kb_all as f64 / 1024.0,
    })
}

/// What the gateways ended with, together.
struct Drained {
    /// Each first visit's deciding event: customer → (event time, arrival at the cloud), ms.
    deciding: HashMap<u32, (i64, i64)>,
    unacked: u64,
    unsent: u64,
}

/// Waits for every gateway task to settle its events or give up (one stuck 30 s past that
/// is a bug, not a wait).
async fn drain(
    tasks: &mut tokio::task::JoinSet<anyhow::Result<GatewayEnd>>,
    time: Timeline,
    procs: &mut [crate::procs::Proc],
) -> anyhow::Result<Drained> {
    let mut drained = Drained {
        deciding: HashMap::new(),
        unacked: 0,
        unsent: 0,
    };
    while let Some(r) =
        tokio::time::timeout_at(time.give_up + Duration::from_secs(30), tasks.join_next())
            .await
            .context("gateway tasks still running 30 s after the run gave up")?
    {
        let end = r??;
        drained.unacked += end.unacked;
        drained.unsent += end.unsent;
        drained.deciding.extend(
            end.deciding
                .into_iter()
                .map(|(c, ts, sent)| (c, (ts, sent))),
        );
    }
    exited(procs)?;
    Ok(drained)
}

/// The offers of every decided first visit, or until they stop coming; then every delivery
/// row final, and the fake read once more, so a late second offer is counted too. Answers the
/// offers by customer, the events the cloud stored and whether its statistics caught up.
async fn collect_offers(
    sys: &mut System,
    deciding: &HashMap<u32, (i64, i64)>,
    (mut seen_offers, mut offers): (usize, HashMap<u32, Vec<i64>>),
) -> anyhow::Result<(HashMap<u32, Vec<i64>>, u64, bool)> {
    let offers_deadline = Instant::now() + DRAIN;
    let mut last_progress = Instant::now();
    loop {
        let before = seen_offers;
        seen_offers = poll_offers(&sys.api, sys.line_port, seen_offers, &mut offers).await?;
        if seen_offers != before {
            last_progress = Instant::now();
        }
        let all_final =
            deciding.keys().all(|c| offers.contains_key(c)) && deliveries_final(&sys.api).await?;
        if all_final
            || Instant::now() >= offers_deadline
            || last_progress.elapsed() > Duration::from_secs(20)
        {
            break;
        }
        exited(&mut sys.procs)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    poll_offers(&sys.api, sys.line_port, seen_offers, &mut offers).await?;
    let (stored_by_cloud, stats_caught_up) = stored_events(&sys.api).await?;
    Ok((offers, stored_by_cloud, stats_caught_up))
}

/// The offers' latencies (sorted) of the first visits decided in the measured window
/// `[from, to)` (ms): from the deciding event, and from when the rules let the cloud act.
fn latencies(
    deciding: &HashMap<u32, (i64, i64)>,
    offers: &HashMap<u32, Vec<i64>>,
    (from, to): (i64, i64),
) -> (Vec<i64>, Vec<i64>) {
    let measured: Vec<(i64, i64, i64)> = deciding
        .iter()
        .filter(|(_, (ts, _))| (from..to).contains(ts))
        .filter_map(|(c, (ts, sent))| {
            offers
                .get(c)
                .and_then(|r| r.first())
                .map(|r| (*ts, *sent, *r))
        })
        .collect();
    let mut latencies: Vec<i64> = measured.iter().map(|(ts, _, r)| r - ts).collect();
    latencies.sort_unstable();
    let mut own: Vec<i64> = measured
        .iter()
        .map(|(ts, sent, r)| r - acting_allowed_at(*ts, *sent))
        .collect();
    own.sort_unstable();
    (latencies, own)
}

/// Reads the fake LINE server's deliveries after the first `seen`; records each customer's
/// arrival times; returns how many it has read in all.
async fn poll_offers(
    api: &Api,
    line_port: u16,
    seen: usize,
    offers: &mut HashMap<u32, Vec<i64>>,
) -> anyhow::Result<usize> {
    let v: Value = api
        .http
        .get(format!(
            "http://127.0.0.1:{line_port}/fake/deliveries?since={seen}"
        ))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let accepted = v["accepted"].as_array().context("no accepted list")?;
    for a in accepted {
        let to = a["to"].as_str().unwrap_or_default();
        let c = customer_of_line_user(to)
            .with_context(|| format!("an offer to {to:?}, not a customer of the run"))?;
        offers
            .entry(c)
            .or_default()
            .push(a["received_ms"].as_i64().unwrap_or_default());
    }
    Ok(seen + accepted.len())
}

/// Events the cloud's statistics stage has counted, and whether it had read the whole log
/// (it is waited for two minutes at most).
async fn stored_events(api: &Api) -> anyhow::Result<(u64, bool)> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = api
            .admin(reqwest::Method::GET, "/v1/admin/stats", None)
            .await?;
        let total: u64 = v["stats"]
            .as_object()
            .map(|gws| {
                gws.values()
                    .map(|g| {
                        ["enter", "stay", "exit"]
                            .iter()
                            .map(|k| g[k].as_u64().unwrap_or(0))
                            .sum::<u64>()
                    })
                    .sum()
            })
            .unwrap_or(0);
        let caught_up = v["stats_position"] == v["log_end"];
        if caught_up || Instant::now() >= deadline {
            return Ok((total, caught_up));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn lag_text(lag: Option<f64>) -> String {
    lag.map_or_else(|| "?".to_owned(), |l| format!("{l:.0}"))
}

/// Whether every delivery row the cloud wrote has ended (none pending or sending).
async fn deliveries_final(api: &Api) -> anyhow::Result<bool> {
    let mut all_final = true;
    api.each_delivery(|d| {
        all_final = !matches!(d["status"].as_str(), Some("pending") | Some("sending"));
        all_final
    })
    .await?;
    Ok(all_final)
}

/// An error if a process of the system under test has exited.
fn exited(procs: &mut [crate::procs::Proc]) -> anyhow::Result<()> {
    for p in procs.iter_mut() {
        if let Ok(Some(status)) = p.child.try_wait() {
            bail!("{} exited ({status}) during the run", p.name);
        }
    }
    Ok(())
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "events/s over the measured window: {:.0} sent, {:.0} stored and acknowledged",
            self.offered_per_s, self.acked_per_s
        )?;
        writeln!(
            f,
            "events in all: {} sent, {} acknowledged, {} rejected, {} never acknowledged, {} never sent, {} resent; the cloud counted {} stored{}",
            self.published,
            self.acked,
            self.rejected,
            self.unacked,
            self.unsent,
            self.resent,
            self.stored_by_cloud,
            if self.stats_caught_up { "" } else { " (its statistics stage had not read the whole log)" }
        )?;
        writeln!(
            f,
            "offers: {} first visits entered, {} reached the fake LINE server, {} missing, {} customers offered twice",
            self.offers_expected, self.offers_received, self.offers_missing, self.offers_twice
        )?;
        writeln!(
            f,
            "event → offer at the fake LINE server ({} offers decided in the window): p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (the cloud waits {REORDER_WINDOW_S} s of reorder window by design)",
            self.latency_samples, self.latency_ms[0], self.latency_ms[1], self.latency_ms[2], self.latency_ms[3]
        )?;
        writeln!(
            f,
            "the pipeline's own delay: from the later of the sighting's arrival and its event time plus the {REORDER_WINDOW_S} s reorder window, to the offer: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms (target: p99 ≤ 1000, p50 ≤ 250)",
            self.pipeline_ms[0], self.pipeline_ms[1], self.pipeline_ms[2], self.pipeline_ms[3]
        )?;
        if !self.curve.is_empty() {
            let points = |f: &dyn Fn(&Sample) -> String| {
                self.curve
                    .iter()
                    .map(|s| format!("{}s {}", s.at_s, f(s)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            writeln!(
                f,
                "visit stage lag, records: {}",
                points(&|s| lag_text(s.visit_lag))
            )?;
            writeln!(
                f,
                "decision stage lag, transitions: {}",
                points(&|s| lag_text(s.decide_lag))
            )?;
            writeln!(
                f,
                "omo-cloud RSS, MB: {}",
                points(&|s| format!("{:.0}", s.cloud_rss_mb))
            )?;
        }
        if let Some(lag) = self.visit_stage_lag {
            writeln!(
                f,
                "the visit stage was {lag:.0} log records behind when the window ended"
            )?;
        }
        if self.partitions.len() > 1 {
            let held = |f: &dyn Fn(&(u64, u64)) -> u64| {
                self.partitions
                    .iter()
                    .map(|p| f(p).to_string())
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            writeln!(
                f,
                "{} instances behind Mosquitto; partitions held when the window ended: visit stage {}, decision stage {}; steps taken again after a conflict with another instance: visit stage {:.0}, decision stage {:.0}",
                self.partitions.len(),
                held(&|p| p.0),
                held(&|p| p.1),
                self.step_conflicts[0],
                self.step_conflicts[1]
            )?;
        }
        writeln!(
            f,
            "CPU, cores over the window: load generator {:.2}, omo-cloud {:.2}{}, fake LINE {:.2}, PostgreSQL (local) {:.2}, Mosquitto {:.2}",
            self.cpu_generator,
            self.cpu_cloud,
            if self.partitions.len() > 1 { " (its instances together)" } else { "" },
            self.cpu_fake_line,
            self.cpu_database,
            self.cpu_broker
        )?;
        if self.acked_per_s > 0.0 {
            let per = |cores: f64| cores * 1e6 / self.acked_per_s;
            writeln!(
                f,
                "CPU per 1,000 stored events, ms: omo-cloud {:.0}, PostgreSQL {:.0}, Mosquitto {:.0}; together {:.0}",
                per(self.cpu_cloud),
                per(self.cpu_database),
                per(self.cpu_broker),
                per(self.cpu_cloud + self.cpu_database + self.cpu_broker)
            )?;
        }
        write!(
            f,
            "peak RSS: omo-cloud {:.0} MB, load generator {:.0} MB",
            self.cloud_peak_rss_mb, self.generator_peak_rss_mb
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options {
            gateways: 1000,
            customers: 100_000,
            rate: 10_000.0,
            seconds: 60,
            stay_s: 5,
            visit_s: 60,
            batch_ms: 1000,
            window: 8,
            resend_s: 10,
            seed: 1,
            postgres: None,
            instances: 1,
            bin_dir: None,
        }
    }

    #[test]
    fn the_plan_gives_the_target_rate() {
        let p = Plan::new(&opts());
        assert_eq!(p.steps, 12);
        // 100,000 customers × 12 events per 120 s cycle = 10,000 events/s.
        assert_eq!(p.cycle_ms, 120_000);
        assert_eq!(p.deciding_step, 4);
        assert_eq!(p.kind(0), SightingKind::Enter);
        assert_eq!(p.kind(5), SightingKind::Stay);
        assert_eq!(p.kind(11), SightingKind::Exit);
        assert_eq!(p.due_ms(500, 1, 2), 500 + 120_000 + 10_000);
        assert!(opts().problems().is_empty());
    }

    #[test]
    fn a_rate_the_customers_cannot_make_is_refused_by_flag() {
        let o = Options {
            customers: 10_000,
            ..opts()
        };
        let p = o.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("--rate 10000"), "{p:?}");
        let o = Options {
            visit_s: 25,
            ..opts()
        };
        for stay_s in [0, u32::MAX] {
            let p = Options { stay_s, ..opts() }.problems();
            assert!(p[0].starts_with(&format!("--stay-s {stay_s}")), "{p:?}");
        }
        // The stay 20 s after the enter would be the exit, which enters nothing.
        assert!(
            o.problems()[0].starts_with("--visit-s 25"),
            "{:?}",
            o.problems()
        );
        let o = Options {
            gateways: 0,
            seconds: 1,
            visit_s: 62,
            ..opts()
        };
        let p = o.problems();
        assert!(p.iter().any(|m| m.starts_with("--gateways 0")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("--seconds 1")), "{p:?}");
        assert!(p.iter().any(|m| m.starts_with("--visit-s 62")), "{p:?}");
    }

    #[test]
    fn line_users_and_beacons_name_their_customer() {
        for i in [0u32, 1, 99_999, u32::MAX] {
            let u = line_user_of(i);
            assert_eq!(u.len(), 33);
            assert_eq!(customer_of_line_user(&u), Some(i));
        }
        assert_ne!(beacon_of(65_536), beacon_of(0));
        assert_eq!(customer_of_line_user("U12"), None);
    }

    #[test]
    fn the_fleet_site_is_valid_and_zones_every_store() {
        let (site, logins) = fleet_site(25, 7);
        assert_eq!(logins.len(), 25);
        let parsed = omo_device_config::site::Site::parse(&site, false).expect("a valid site");
        assert_eq!(parsed.gateways.len(), 25);
        assert_eq!(site.matches("[[stores]]").count(), 3);
        assert_eq!(site.matches("[[gateway_zones]]").count(), 3);
        assert_eq!(logins[24].store, "st-0002");
    }

    #[test]
    fn the_own_delay_starts_when_the_reorder_window_and_the_arrival_both_allow() {
        let window = i64::from(REORDER_WINDOW_S) * 1000;
        // Sent within the batch interval: the window past the event time comes later.
        assert_eq!(acting_allowed_at(10_000, 10_800), 10_000 + window);
        // A backlog arriving after its window: from the arrival.
        assert_eq!(acting_allowed_at(10_000, 60_000), 60_000);
    }

    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.99), 7);
    }
}
