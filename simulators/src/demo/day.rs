//! The demo's day: what each shopper does and when — visits heard by the gateways and seen
//! by the app and LINE, QR check-ins, purchases at the till and online, returns and coupon
//! redemptions — handed to the system when the clock gets to it, or taken from a run record.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use super::actions::{purchase_body, recorded, recorded_action, start_record, Action};
use super::system::System;
use super::{Options, Recorded};
use crate::procs::Api;
use crate::scenario::Scenario;
use crate::synth::{self, Shopper, Visit};

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

/// What the driver did, for the report.
pub(super) struct Driven {
    pub returns: usize,
    pub redeemed: usize,
    pub offers_by_channel: [(&'static str, usize); 2],
    pub lost: Lost,
    /// Scenario faults started at the fake servers (those after a shortened day never are).
    pub faults_started: usize,
    /// Driven from a run record: the shoppers' choices were made in another run, against other
    /// offers, so the lift is reported but not checked.
    pub replayed: bool,
    /// Recorded redemptions of shoppers with no offer in this run.
    pub redeem_skipped: usize,
}

/// What the driver could not hand over to the system.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Lost {
    pub adverts: u64,
    pub reports: u64,
    pub webhooks: u64,
    pub purchases: u64,
    pub checkins: u64,
}

/// The actions waiting for their time, in time order (ties in the order they were pushed).
type Queue = BinaryHeap<Reverse<(i64, u64, Action)>>;

/// What the driver could not hand over, counted by the calls in flight.
#[derive(Default)]
struct Failed {
    reports: Arc<AtomicU64>,
    webhooks: Arc<AtomicU64>,
    purchases: Arc<AtomicU64>,
    checkins: Arc<AtomicU64>,
}

/// The driver of the day.
pub(super) struct Day<'a> {
    s: &'a Scenario,
    shoppers: &'a [Shopper],
    sys: &'a mut System,
    /// The day's first and last ms.
    window: (i64, i64),
    queue: Queue,
    /// Tie-breakers of the actions at one time: of the faults and the visits' actions (in
    /// the order they were pushed)…
    seq: u64,
    /// …and, counted apart from 1 << 62 on, of the shoppers' choices.
    decision_seq: u64,
    radio: crate::radio::Radio,
    sense: rand::rngs::StdRng,
    shopping: rand::rngs::StdRng,
    outcomes: rand::rngs::StdRng,
    orders: u64,
    recorder: Option<std::io::BufWriter<std::fs::File>>,
    gateway_index: HashMap<String, usize>,
    store_ids: Vec<String>,
    /// Shoppers by LINE user and by push token (to read who an offer reached).
    by_line: HashMap<String, usize>,
    by_token: HashMap<String, usize>,
    /// The coupon of each shopper's offer, once the fake servers accepted it.
    offered: HashMap<usize, String>,
    /// The store of each shopper's first visit (where they come back to).
    store_of_visit: HashMap<usize, String>,
    returns: usize,
    redeemed: usize,
    redeem_skipped: usize,
    faults_started: usize,
    lost: Lost,
    failed: Failed,
    permits: Arc<tokio::sync::Semaphore>,
    inflight: tokio::task::JoinSet<()>,
    /// Driven from a run record.
    replayed: bool,
}

impl<'a> Day<'a> {
    /// The day of `opts`' scenario for `shoppers` on the running system: its first visits
    /// and faults, or the actions of the run record it replays.
    pub(super) fn new(
        opts: &'a Options,
        shoppers: &'a [Shopper],
        sys: &'a mut System,
    ) -> anyhow::Result<Day<'a>> {
        let s = &opts.scenario;
        let (start, end) = synth::window(s);
        let recorder = match &opts.record {
            Some(path) => Some(start_record(path, opts)?),
            None => None,
        };
        let gateway_index = sys
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (g.clone(), i))
            .collect();
        let mut day = Day {
            s,
            shoppers,
            sys,
            window: (start, end),
            queue: Queue::new(),
            seq: 0,
            decision_seq: 1u64 << 62,
            radio: synth::indoor_radio(s.run.seed, "radio"),
            sense: synth::rng(s.run.seed, "sensing"),
            shopping: synth::rng(s.run.seed, "shopping"),
            outcomes: synth::rng(s.run.seed, "outcomes"),
            orders: 0,
            recorder,
            gateway_index,
            store_ids: s.stores.iter().map(|st| st.id.to_string()).collect(),
            by_line: shoppers
                .iter()
                .enumerate()
                .filter_map(|(i, x)| Some((x.line_user.clone()?, i)))
                .collect(),
            by_token: shoppers
                .iter()
                .enumerate()
                .filter_map(|(i, x)| Some((x.push_token.clone()?, i)))
                .collect(),
            offered: HashMap::new(),
            store_of_visit: HashMap::new(),
            returns: 0,
            redeemed: 0,
            redeem_skipped: 0,
            faults_started: 0,
            lost: Lost::default(),
            failed: Failed::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(64)),
            inflight: tokio::task::JoinSet::new(),
            replayed: opts.replay.is_some(),
        };
        day.schedule_start(opts)?;
        Ok(day)
    }

    /// Schedules the day's first visits and faults, or the actions of the run record it
    /// replays.
    fn schedule_start(&mut self, opts: &Options) -> anyhow::Result<()> {
        // The day: first visits until two hours before the end, so every return fits the day.
        let (s, shoppers) = (self.s, self.shoppers);
        let (start, end) = self.window;
        let last_first = start.max(end - 2 * 3_600_000);
        let firsts = synth::arrivals_in(s, shoppers, (start, last_first), true);
        match &opts.replay {
            None => {
                self.schedule_faults();
                for v in &firsts {
                    self.push_visit(v, true);
                }
                eprintln!(
                    "omo-sim demo: replaying {} first visits at ×{} …",
                    firsts.len(),
                    s.run.speed
                );
            }
            Some(actions) => {
                self.schedule_recorded(actions)?;
                eprintln!(
                    "omo-sim demo: replaying a run record of {} actions at ×{} …",
                    actions.len(),
                    s.run.speed
                );
            }
        }
        for v in &firsts {
            self.store_of_visit
                .insert(v.shopper, s.stores[v.store].id.to_string());
        }
        Ok(())
    }

    fn push(&mut self, at: i64, action: Action) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq, action)));
    }

    /// A shopper's choice, ordered apart from the visits' actions at the same time.
    fn push_decided(&mut self, at: i64, action: Action) {
        self.decision_seq += 1;
        self.queue.push(Reverse((at, self.decision_seq, action)));
    }

    /// The scenario's faults (one after a shortened day's end never fires).
    fn schedule_faults(&mut self) {
        let (start, end) = self.window;
        for (i, f) in self.s.faults.iter().enumerate() {
            let at = start + (f.at_minute * 60_000.0) as i64;
            if at < end {
                self.push(at, Action::Fault(i));
            }
        }
    }

    /// The record's actions in its order, nothing simulated.
    fn schedule_recorded(&mut self, actions: &[(usize, Recorded)]) -> anyhow::Result<()> {
        let (start, end) = self.window;
        for (i, (line_no, r)) in actions.iter().enumerate() {
            let (at, action) = recorded_action(
                r,
                &self.gateway_index,
                self.shoppers.len(),
                self.s.faults.len(),
                &self.store_ids,
            )
            .with_context(|| format!("run record line {line_no}"))?;
            anyhow::ensure!(
                (start - 3_600_000..=end + 3_600_000).contains(&at),
                "run record line {line_no}: at {at} is not within an hour of its day"
            );
            self.queue.push(Reverse((at, i as u64, action)));
        }
        Ok(())
    }

    /// Everything a visit brings: a QR check-in at the entrance, a purchase at the till, an
    /// order online later (after a first visit), the adverts the gateways hear, the app's
    /// reports, LINE's beacon events, and its end.
    fn push_visit(&mut self, v: &Visit, first: bool) {
        let (s, shoppers, end) = (self.s, self.shoppers, self.window.1);
        let sh = &shoppers[v.shopper];
        if sh.app && self.shopping.random_bool(CHECKIN_SHARE) {
            let checkin = Action::Checkin {
                shopper: v.shopper,
                store: v.store,
            };
            self.push(v.start_ms() + 60_000, checkin);
        }
        if self.shopping.random_bool(PURCHASE_SHARE) {
            self.orders += 1;
            let customer = if self.shopping.random_bool(ANONYMOUS_SHARE) {
                json!({})
            } else {
                json!({"member_id": sh.member_id})
            };
            let at = v.end_ms() - 60_000;
            let store = s.stores[v.store].id.to_string();
            let order = format!("pos-{}", self.orders);
            let body = purchase_body(&order, Some(&store), customer, at, &mut self.shopping);
            self.push(at, Action::Purchase(body.to_string()));
        }
        let online_at = v.end_ms() + self.shopping.random_range(30..=180) * 60_000;
        // Orders of the day only (the day ends when its last action is handed over).
        if first && self.shopping.random_bool(ONLINE_SHARE) && online_at < end {
            self.orders += 1;
            let customer = match &sh.line_user {
                Some(u) if self.shopping.random_bool(0.5) => json!({"line_user": u}),
                _ => json!({"member_id": sh.member_id}),
            };
            let order = format!("web-{}", self.orders);
            let body = purchase_body(&order, None, customer, online_at, &mut self.shopping);
            self.push(online_at, Action::Purchase(body.to_string()));
        }
        for h in synth::heard(s, sh, v, 2000, &mut self.radio, &mut self.sense) {
            if let Some(g) = self.gateway_index.get(&h.gateway).copied() {
                self.push(h.ts_ms, Action::Advert(g, h.replay_line()));
            }
        }
        for r in synth::app_reports(s, sh, v, 60_000, &mut self.radio, &mut self.sense) {
            let at = r["ts"]
                .as_str()
                .and_then(|t| t.parse::<omo_device_config::Timestamp>().ok())
                .map_or(v.start_ms(), |t| t.millis());
            self.push(at, Action::Report(v.shopper, r.to_string()));
        }
        for e in synth::line_beacon_events(s, sh, v, &mut self.radio) {
            let at = e["timestamp"].as_i64().unwrap_or(v.start_ms());
            self.push(at, Action::Line(e.to_string()));
        }
        let visit_end = Action::VisitEnd {
            shopper: v.shopper,
            first,
        };
        self.push(v.end_ms(), visit_end);
    }

    /// Drives the day to its end: each action when the clock gets to it, what the fake servers
    /// accepted read every half second (with a progress bar), the processes watched; then
    /// waits for the cloud to catch up. Answers what the driver did.
    pub(super) async fn drive(mut self) -> anyhow::Result<Driven> {
        let (start, end) = self.window;
        let mut last_poll = std::time::Instant::now();
        let mut last_progress = -1i64;
        loop {
            let now = self.sys.clock.now().timestamp_millis();
            if last_poll.elapsed() >= Duration::from_millis(500) {
                last_poll = std::time::Instant::now();
                self.poll_offers().await;
                let pct = ((now - start) * 100 / (end - start).max(1)).clamp(0, 100);
                if pct != last_progress {
                    last_progress = pct;
                    self.show_progress(now, pct);
                }
            }
            while self
                .queue
                .peek()
                .is_some_and(|Reverse((at, _, _))| *at <= now)
            {
                let Some(Reverse((at, _, action))) = self.queue.pop() else {
                    break;
                };
                // When it was handed over (an action due earlier, such as a return's first
                // outdoor fix, goes when the clock gets to it), so a replay hands it over alike.
                if let Some(w) = self.recorder.as_mut() {
                    if let Some(r) = recorded(&action, now, &self.sys.gateways, &self.store_ids) {
                        writeln!(w, "{}", serde_json::to_string(&r)?)?;
                    }
                }
                self.hand_over(at, action).await?;
            }
            while self.inflight.try_join_next().is_some() {}
            if self.queue.is_empty() && now >= end {
                break;
            }
            for p in self.sys.procs.iter_mut() {
                if let Ok(Some(status)) = p.child.try_wait() {
                    let logs = self.sys.dir.display();
                    bail!(
                        "{} exited ({status}) during the run; logs in {logs}",
                        p.name
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.finish().await
    }

    fn show_progress(&self, now: i64, pct: i64) {
        let bar: String = (0..40)
            .map(|i| if i * 100 / 40 < pct { '#' } else { '.' })
            .collect();
        eprint!(
            "\r[{bar}] {pct:3}% {}  offers {}  returns {}",
            &synth::ts_text(now)[11..16],
            self.offered.len(),
            self.returns
        );
    }

    /// After the last action: the calls in flight end, the run record is written, the visit
    /// stage catches up and the last visits close; what the driver did.
    async fn finish(mut self) -> anyhow::Result<Driven> {
        while self.inflight.join_next().await.is_some() {}
        if let Some(mut w) = self.recorder.take() {
            w.flush().context("writing the run record")?;
        }
        self.lost.reports = self.failed.reports.load(Relaxed);
        self.lost.webhooks = self.failed.webhooks.load(Relaxed);
        self.lost.purchases += self.failed.purchases.load(Relaxed);
        self.lost.checkins = self.failed.checkins.load(Relaxed);
        eprintln!();
        // Let the visit stage catch up with the log (a busy machine leaves it behind: the
        // report would miss visits), then the last visits close (exit timeouts run on the
        // clock).
        wait_caught_up(&self.sys.api).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        wait_deliveries_ended(&self.sys.api).await;
        self.poll_offers().await;
        let offers_by_channel = [
            ("LINE", self.accepted(self.sys.ports.line).await),
            ("FCM (app push)", self.accepted(self.sys.ports.fcm).await),
        ];
        Ok(Driven {
            returns: self.returns,
            redeemed: self.redeemed,
            offers_by_channel,
            lost: self.lost,
            faults_started: self.faults_started,
            replayed: self.replayed,
            redeem_skipped: self.redeem_skipped,
        })
    }

    /// Hands `action`, due at `at`, to the system.
    async fn hand_over(&mut self, at: i64, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Fault(i) => self.start_fault(i).await?,
            Action::Advert(g, line) => self.advert(g, line).await,
            Action::Report(i, body) => {
                if let Some(token) = self.sys.install_token[i].clone() {
                    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                    let failed = self.failed.reports.clone();
                    self.spawn_call(("/v1/app/locations", body, token), &[202], failed);
                }
            }
            Action::Line(event) => self.line_webhook(&event),
            Action::Purchase(body) => {
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                let key = match body["store"].as_str() {
                    Some(store) => self.sys.pos_keys.get(store).cloned().unwrap_or_default(),
                    None => self.sys.shop_key.clone(),
                };
                let failed = self.failed.purchases.clone();
                self.spawn_call(("/v1/purchases", body, key), &[200, 201], failed);
            }
            Action::Checkin { shopper, store } => {
                if let Some(token) = self.sys.install_token[shopper].clone() {
                    let body = json!({"code": self.sys.qr_codes[store], "ts": synth::ts_text(at),
                        "idempotency_key": format!("qr-{shopper}-{at}")});
                    let failed = self.failed.checkins.clone();
                    self.spawn_call(("/v1/app/checkins", body, token), &[200, 202], failed);
                }
            }
            Action::MaybeReturn { shopper, draw } => self.maybe_return(shopper, draw, at),
            Action::VisitEnd { shopper, first } => self.visit_end(shopper, first, at),
            Action::Returned { .. } => self.returns += 1,
            Action::Redeem { shopper, amount } => self.redeem(shopper, amount, at).await,
        }
        Ok(())
    }

    /// Starts the scenario's fault `i` at its fake server.
    async fn start_fault(&mut self, i: usize) -> anyhow::Result<()> {
        let f = &self.s.faults[i];
        let port = match f.service {
            crate::scenario::FakeService::Line => self.sys.ports.line,
            crate::scenario::FakeService::Fcm => self.sys.ports.fcm,
        };
        self.sys
            .api
            .http
            .post(format!("http://127.0.0.1:{port}/fake/faults"))
            .json(&f.answer)
            .send()
            .await?
            .error_for_status()
            .with_context(|| format!("starting faults[{i}]"))?;
        self.faults_started += 1;
        Ok(())
    }

    /// Writes a replay line to gateway `g`'s stdin. A stalled gateway must not stall the
    /// day: its line is dropped, counted.
    async fn advert(&mut self, g: usize, line: String) {
        let line = format!("{line}\n");
        let write = self.sys.stdins[g].write_all(line.as_bytes());
        if !matches!(
            tokio::time::timeout(Duration::from_secs(2), write).await,
            Ok(Ok(()))
        ) {
            self.lost.adverts += 1;
        }
    }

    /// Posts `body` to `path` with `token` in the background (64 at once at most); an answer
    /// other than one of `ok` counts in `failed`.
    fn spawn_call(
        &mut self,
        (path, body, token): (&'static str, Value, String),
        ok: &'static [u16],
        failed: Arc<AtomicU64>,
    ) {
        let (api, permits) = (self.sys.api.clone(), self.permits.clone());
        self.inflight.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let answer = api
                .call(reqwest::Method::POST, path, Some(&body), Some(&token))
                .await;
            let refused = match &answer {
                Ok((status, _)) if ok.contains(status) => None,
                Ok((status, body)) => Some(format!("{status} {body}")),
                Err(e) => Some(format!("{e:#}")),
            };
            if let Some(why) = refused {
                if failed.fetch_add(1, Relaxed) < REFUSALS_SHOWN {
                    eprintln!("\nomo-sim demo: {path} was refused: {why}");
                }
            }
        });
    }

    /// Sends a LINE webhook with `event`, signed as LINE signs it, in the background.
    fn line_webhook(&mut self, event: &str) {
        let body = format!("{{\"destination\":\"Udemo\",\"events\":[{event}]}}");
        let sig =
            omo_cloud::secrets::line_signature(self.sys.line_secret.as_bytes(), body.as_bytes());
        let api = &self.sys.api;
        let (http, url) = (
            api.http.clone(),
            format!("{}/v1/line/webhook", api.next_base()),
        );
        let (permits, failed) = (self.permits.clone(), self.failed.webhooks.clone());
        self.inflight.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let sent = http
                .post(url)
                .header("X-Line-Signature", sig)
                .header("Content-Type", "application/json")
                .body(body)
                .send()
                .await;
            let refused = match sent {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!(
                    "{} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                )),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = refused {
                if failed.fetch_add(1, Relaxed) < REFUSALS_SHOWN {
                    eprintln!("\nomo-sim demo: a LINE webhook was refused: {why}");
                }
            }
        });
    }

    /// The time a shopper would come back: they do if `draw` is below their return chance,
    /// which depends on whether an offer reached them by now.
    fn maybe_return(&mut self, shopper: usize, draw: u32, at: i64) {
        let s = self.s;
        let sh = &self.shoppers[shopper];
        let effect = s.personas[sh.persona].effect;
        let p = if self.offered.contains_key(&shopper) {
            effect.return_after_offer
        } else {
            effect.return_without_offer
        };
        if f64::from(draw) < p * f64::from(u32::MAX) {
            let store_id = self
                .store_of_visit
                .get(&shopper)
                .cloned()
                .unwrap_or_default();
            let store = s
                .stores
                .iter()
                .position(|x| x.id.as_str() == store_id)
                .unwrap_or(0);
            let v = synth::plan_visit(s, (shopper, sh.persona), store, at, &mut self.outcomes);
            self.push_decided(at, Action::Returned { shopper });
            self.push_visit(&v, false);
        }
    }

    /// A visit ended: after a first one, when the shopper would come back; after a return
    /// with an offer, whether they redeem it.
    fn visit_end(&mut self, shopper: usize, first: bool, at: i64) {
        if first {
            let back = at + self.outcomes.random_range(30..=90) * 60_000;
            let draw = self.outcomes.random::<u32>();
            self.push_decided(back, Action::MaybeReturn { shopper, draw });
        } else if self.offered.contains_key(&shopper) && self.outcomes.random_bool(REDEEM_SHARE) {
            let amount = self.outcomes.random_range(5..60) * 100;
            self.push_decided(at, Action::Redeem { shopper, amount });
        }
    }

    /// A shopper redeems their offer's coupon at the till, and the till sends the sale.
    async fn redeem(&mut self, shopper: usize, amount: u32, at: i64) {
        let Some(code) = self.offered.get(&shopper) else {
            // Replayed: this run's cloud held this shopper out, or its offer has not
            // arrived; counted, not hidden.
            self.redeem_skipped += 1;
            return;
        };
        let store = self
            .store_of_visit
            .get(&shopper)
            .cloned()
            .unwrap_or_default();
        let Some(key) = self.sys.pos_keys.get(&store) else {
            return;
        };
        let api = &self.sys.api;
        let body =
            json!({"store": store, "code": code, "at": synth::ts_text(at), "amount": amount});
        if let Ok((201, _)) = api
            .call(
                reqwest::Method::POST,
                "/v1/redemptions",
                Some(&body),
                Some(key),
            )
            .await
        {
            self.redeemed += 1;
        }
        // The till sends the sale too, naming the customer by the coupon: the purchase is
        // attributed to the offer.
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
            self.lost.purchases += 1;
        }
    }

    fn fake_url(&self, port: u16) -> String {
        format!("http://127.0.0.1:{port}/fake/deliveries")
    }

    /// Reads what the fake LINE and FCM servers accepted: each offer's shopper and coupon.
    async fn poll_offers(&mut self) {
        let http = &self.sys.api.http;
        if let Ok(v) = fetch(http, &self.fake_url(self.sys.ports.line)).await {
            for a in v["accepted"].as_array().into_iter().flatten() {
                if let Some(i) = a["to"].as_str().and_then(|u| self.by_line.get(u)) {
                    let code = a["texts"][0]
                        .as_str()
                        .and_then(|t| t.rsplit(' ').next())
                        .unwrap_or_default();
                    self.offered.entry(*i).or_insert_with(|| code.to_owned());
                }
            }
        }
        if let Ok(v) = fetch(http, &self.fake_url(self.sys.ports.fcm)).await {
            for a in v["accepted"].as_array().into_iter().flatten() {
                if let Some(i) = a["token"].as_str().and_then(|t| self.by_token.get(t)) {
                    let code = a["coupon"].as_str().unwrap_or_default();
                    self.offered.entry(*i).or_insert_with(|| code.to_owned());
                }
            }
        }
    }

    /// How many offers the fake server at `port` accepted.
    async fn accepted(&self, port: u16) -> usize {
        fetch(&self.sys.api.http, &self.fake_url(port))
            .await
            .ok()
            .and_then(|v| v["accepted"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

/// Refusals of each kind of call shown as they happen (the report counts them all).
const REFUSALS_SHOWN: u64 = 3;

/// Waits (30 s at most) until the visit stage is within one batch of the log's end twice in a
/// row on every instance, as `/metrics` shows it (`omo_stage_lag_records{stage="visits"}`, of
/// the partitions each holds; ticks keep arriving at the clock's speed, so it never reaches
/// zero).
async fn wait_caught_up(api: &Api) {
    const CAUGHT_UP: f64 = 2000.0;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut in_a_row = 0;
    while std::time::Instant::now() < deadline && in_a_row < 2 {
        let mut caught_up = true;
        for base in api.bases() {
            let lag = match api.http.get(format!("{base}/metrics")).send().await {
                Ok(r) => r
                    .text()
                    .await
                    .ok()
                    .and_then(|t| crate::procs::stage_lag(&t, "visits")),
                Err(_) => None,
            };
            caught_up &= lag.is_some_and(|l| l <= CAUGHT_UP);
        }
        in_a_row = if caught_up { in_a_row + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits (30 s at most) until no delivery is waiting or being sent: the last offers of the day
/// (and one in its retry pause after a 429) end before the report reads them.
async fn wait_deliveries_ended(api: &Api) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let mut open = 0u64;
        let counted = api
            .each_delivery(|d| {
                open += u64::from(matches!(d["status"].as_str(), Some("pending" | "sending")));
                true
            })
            .await;
        if counted.is_ok() && open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn fetch(http: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    Ok(http.get(url).send().await?.json().await?)
}
