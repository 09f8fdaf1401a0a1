//! `omo-gateway run`: the thin I/O shell around the pure parts. One task owns the state and
//! reacts to three inputs — advertisements from the scan source, what the MQTT connection
//! reports, and a one-second tick on the process clock — plus the shutdown signal.
//!
//! advert → decode → filter → presence engine → outbox (seq, durable on the next flush)
//! tick → timeouts and stays → flush → publish what the uplink window allows → heartbeat
//! presence/ack (signed) → outbox settles → window shrinks; config (signed) → validate, apply,
//! persist, config/ack. Anything unsigned or badly signed is counted, logged and ignored.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use omo_device_config::envelope::{open, open_raw, seal, SigningKey, ACCEPTED_VERSIONS};
use omo_device_config::gateway_config::{GatewayConfig, ScanSource};
use omo_device_config::payload::presence::{seal_batches, MAX_PRESENCE_BYTES};
use omo_device_config::payload::{
    ConfigAck, Footfall, GatewayState, PresenceAck, PresenceEvent, RemoteConfig,
    Sighting as SightingBody, Status,
};
use omo_device_config::{Channel, Clock, SeqRanges, Timestamp, Topic};
use rumqttc::{AsyncClient, QoS};
use tokio::sync::mpsc;

use crate::filter::FrameFilter;
use crate::footfall::FootfallCounter;
use crate::frames::decode_each;
use crate::mqtt::{self, Link};
use crate::outbox::{Outbox, OutboxLimits};
use crate::presence::{PresenceEngine, Sighting, Transition};
use crate::scan::replay::{parse_line, Pacer};
use crate::scan::Advert;
use crate::uplink::{Next, Uplink, UplinkParams};

/// A named crash point for crash tests (DESIGN.md, "Crash tests use the fail crate"): with the
/// `failpoints` feature and `FAILPOINTS=NAME=return`, the process aborts right here — no
/// unwinding, no flush — after saying which point fired. Without the feature it is nothing.
macro_rules! crash_point {
    ($name:literal) => {
        fail::fail_point!($name, |_| {
            eprintln!("failpoint {} fired: aborting", $name);
            std::process::abort()
        })
    };
}

/// Events read from the outbox per new batch: about one 8 KiB payload's worth.
const EVENTS_PER_BATCH: usize = 40;
const REMOTE_CONFIG_FILE: &str = "remote-config.json";
/// Longest replay line read; a real one is about 150 bytes.
const MAX_REPLAY_LINE: usize = 64 * 1024;

struct Topics {
    presence: String,
    ack: String,
    status: String,
    config: String,
    config_ack: String,
}

/// Counters shared with the scan task.
#[derive(Default)]
pub struct Counters {
    pub adverts: AtomicU64,
    pub scan_restarts: AtomicU64,
    pub malformed_adverts: AtomicU64,
    pub rejected_messages: AtomicU64,
}

struct Daemon {
    config: GatewayConfig,
    clock: Clock,
    key: SigningKey,
    topics: Topics,
    client: AsyncClient,
    outbox: Outbox,
    engine: PresenceEngine,
    filter: FrameFilter,
    footfall: FootfallCounter,
    uplink: Uplink,
    counters: Arc<Counters>,
    /// The parameters in force: the last applied remote config, or the local file's as
    /// version 0 until the cloud sends one.
    params: RemoteConfig,
    /// Highest seq published this session (None: resend everything in the outbox first).
    sent_upto: Option<u64>,
    /// Highest seq a completed flush covers: only these may be published.
    durable_upto: u64,
    dirty: bool,
    connected: bool,
    started_ms: i64,
    next_heartbeat_ms: i64,
    adverts_at_last_heartbeat: (u64, i64),
    last_link_error: Option<String>,
    counters_logged: [u64; 3],
}

/// Runs the gateway until SIGTERM or SIGINT.
pub async fn run(config: GatewayConfig, clock: Clock) -> anyhow::Result<()> {
    let counters = Arc::new(Counters::default());
    let key = config
        .signing_key()
        .context("broker.signing_key is not a valid key")?;
    let topics = Topics::of(&config);
    let outbox = open_outbox(&config)?;
    let params = load_remote_config(&config.data.dir).unwrap_or_else(|| RemoteConfig {
        version: 0,
        presence: config.presence.clone(),
        filters: config.filters.clone(),
        status: config.status.clone(),
    });
    let now_ms = clock.now().timestamp_millis();
    let offline = status_payload(
        &topics.status,
        &key,
        GatewayState::Offline,
        (now_ms, now_ms),
        &outbox,
        params.version,
        0.0,
        &clock,
    );
    let options = mqtt::options(&config, offline)?;
    let (client, eventloop) = AsyncClient::new(options, 256);
    let (link_tx, link_rx) = mpsc::channel(256);
    let connection = mqtt::Connection::spawn(eventloop, link_tx, clock.clone());
    let (advert_tx, advert_rx) = mpsc::channel::<Advert>(4096);
    start_scan(&config, clock.clone(), advert_tx, counters.clone()).await?;

    tracing::info!(
        store = %config.identity.store,
        gateway = %config.identity.gateway,
        epoch = %outbox.epoch(),
        outbox_depth = outbox.depth(),
        "gateway started"
    );
    let mut d = Daemon {
        engine: PresenceEngine::new(&params.presence),
        filter: FrameFilter::new(&params.filters),
        footfall: FootfallCounter::default(),
        uplink: Uplink::new(UplinkParams::from_config(&config.outbox), rand::random()),
        durable_upto: outbox.next_seq().saturating_sub(1),
        outbox,
        config,
        clock,
        key,
        topics,
        client,
        counters,
        params,
        sent_upto: None,
        dirty: false,
        connected: false,
        started_ms: now_ms,
        next_heartbeat_ms: now_ms,
        adverts_at_last_heartbeat: (0, now_ms),
        last_link_error: None,
        counters_logged: [0; 3],
    };
    d.serve(advert_rx, link_rx).await?;
    d.shut_down(connection).await
}

impl Topics {
    fn of(config: &GatewayConfig) -> Topics {
        let topic = |c| {
            Topic::new(
                config.identity.store.clone(),
                config.identity.gateway.clone(),
                c,
            )
            .to_string()
        };
        Topics {
            presence: topic(Channel::Presence),
            ack: topic(Channel::PresenceAck),
            status: topic(Channel::Status),
            config: topic(Channel::Config),
            config_ack: topic(Channel::ConfigAck),
        }
    }
}

/// Creates the data dir if needed and opens the outbox in it.
fn open_outbox(config: &GatewayConfig) -> anyhow::Result<Outbox> {
    std::fs::create_dir_all(&config.data.dir)
        .with_context(|| format!("creating data.dir {}", config.data.dir.display()))?;
    Outbox::open(
        &config.data.dir.join("outbox"),
        OutboxLimits::from_config(&config.outbox),
    )
    .with_context(|| format!("opening the outbox in {}", config.data.dir.display()))
}

impl Daemon {
    /// Handles adverts, link events and clock ticks until SIGTERM or SIGINT.
    async fn serve(
        &mut self,
        mut advert_rx: mpsc::Receiver<Advert>,
        mut link_rx: mpsc::Receiver<Link>,
    ) -> anyhow::Result<()> {
        let tick = self
            .clock
            .wall_duration(Duration::from_secs(1))
            .unwrap_or(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scan_open = true;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                advert = advert_rx.recv(), if scan_open => match advert {
                    Some(a) => self.on_advert(&a)?,
                    None => {
                        scan_open = false;
                        tracing::info!("scan source ended; still forwarding the outbox");
                    }
                },
                Some(link) = link_rx.recv() => self.on_link(link).await?,
                _ = ticker.tick() => self.on_tick().await?,
                _ = &mut shutdown => return Ok(()),
            }
        }
    }
}

impl Daemon {
    fn now_ms(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    fn on_advert(&mut self, a: &Advert) -> anyhow::Result<()> {
        self.counters.adverts.fetch_add(1, Ordering::Relaxed);
        if self.params.presence.footfall && f64::from(a.rssi) >= self.params.filters.min_rssi_dbm {
            if let Some((minute, devices)) = self.footfall.observe(a.addr, a.at_ms) {
                self.push_footfall(minute, devices)?;
            }
        }
        let mut transitions = Vec::new();
        let (engine, filter) = (&mut self.engine, &self.filter);
        let rssi = f64::from(a.rssi);
        let decoded = decode_each(&a.data, |frame| {
            if !filter.admits(&frame, rssi) {
                return;
            }
            if let Some(beacon) = frame.beacon_id() {
                let s = Sighting {
                    beacon,
                    rssi,
                    measured_power_1m: frame.measured_power_1m(),
                    at_ms: a.at_ms,
                };
                engine.observe(&s, &mut transitions);
            }
        });
        if decoded.is_err() {
            self.counters
                .malformed_adverts
                .fetch_add(1, Ordering::Relaxed);
        }
        self.push_transitions(&transitions)
    }

    fn push_transitions(&mut self, transitions: &[Transition]) -> anyhow::Result<()> {
        for t in transitions {
            let ts = Timestamp::from_millis(t.at_ms).context("transition time out of range")?;
            self.outbox.push(|seq| {
                PresenceEvent::sighting(
                    t.kind,
                    SightingBody {
                        seq,
                        ts,
                        beacon: t.beacon,
                        rssi: round(t.rssi, 10.0),
                        distance_m: round(t.distance_m, 100.0),
                        seen_s: round(t.seen_s, 1000.0),
                    },
                )
            })?;
            self.dirty = true;
        }
        Ok(())
    }

    fn push_footfall(&mut self, minute_ms: i64, devices: u32) -> anyhow::Result<()> {
        let ts = Timestamp::from_millis(minute_ms).context("minute out of range")?;
        self.outbox
            .push(|seq| PresenceEvent::Footfall(Footfall { seq, ts, devices }))?;
        self.dirty = true;
        Ok(())
    }

    async fn on_tick(&mut self) -> anyhow::Result<()> {
        let now = self.now_ms();
        let mut transitions = Vec::new();
        self.engine.advance(now, &mut transitions);
        self.push_transitions(&transitions)?;
        if let Some((minute, devices)) = self.footfall.roll(now) {
            self.push_footfall(minute, devices)?;
        }
        let dropped = self.outbox.enforce_limits(now)?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "outbox full: dropped the oldest events (reported to the cloud)"
            );
            self.dirty = true;
        }
        if self.dirty {
            crash_point!("outbox.after_push_before_flush");
            // Only what a completed flush covers may leave the gateway.
            let upto = self.outbox.next_seq().saturating_sub(1);
            self.outbox.flush().await?;
            self.durable_upto = upto;
            self.dirty = false;
            crash_point!("outbox.after_flush_before_publish");
        }
        self.publish_pending(now).await?;
        if now >= self.next_heartbeat_ms {
            self.log_counters();
            if self.connected {
                self.publish_status(GatewayState::Online, now).await?;
            }
            self.next_heartbeat_ms = now + i64::from(self.params.status.heartbeat_s) * 1000;
        }
        Ok(())
    }

    /// Publishes resends and new batches while the uplink window allows.
    async fn publish_pending(&mut self, now: i64) -> anyhow::Result<()> {
        loop {
            let has_new = self
                .sent_upto
                .map_or(self.outbox.depth() > 0, |s| s < self.durable_upto)
                || !self.unsent_dropped().is_empty();
            match self.uplink.next(now, has_new) {
                None => return Ok(()),
                Some(Next::Resend(seqs)) => {
                    let events = self.outbox.events_in(&seqs)?;
                    let dropped = self.outbox.pending_dropped().intersection(&seqs);
                    if events.is_empty() && dropped.is_empty() {
                        self.uplink.forget(&seqs);
                        continue;
                    }
                    self.publish_batches(&events, &dropped).await?;
                    self.uplink.resent(&seqs, now);
                }
                Some(Next::New) => {
                    let events: Vec<_> = self
                        .outbox
                        .events_after(self.sent_upto, EVENTS_PER_BATCH)?
                        .into_iter()
                        .filter(|e| e.seq() <= self.durable_upto)
                        .collect();
                    let dropped = self.unsent_dropped();
                    // Past the last event read; with none, past everything durable (the
                    // seqs between were settled or dropped without being sent).
                    self.sent_upto = Some(events.last().map_or(self.durable_upto, |e| e.seq()));
                    if events.is_empty() && dropped.is_empty() {
                        return Ok(());
                    }
                    for seqs in self.publish_batches(&events, &dropped).await? {
                        self.uplink.sent(seqs, now);
                    }
                }
            }
        }
    }

    /// Dropped ranges not in any batch in flight.
    fn unsent_dropped(&self) -> SeqRanges {
        self.outbox
            .pending_dropped()
            .difference(&self.uplink.seqs_in_flight())
    }

    async fn publish_batches(
        &mut self,
        events: &[PresenceEvent],
        dropped: &SeqRanges,
    ) -> anyhow::Result<Vec<SeqRanges>> {
        let header = (
            &self.config.identity.gateway,
            &self.config.identity.store,
            self.outbox.epoch(),
        );
        let sealed = seal_batches(
            &self.topics.presence,
            &self.key,
            header,
            events,
            dropped,
            MAX_PRESENCE_BYTES,
        )?;
        let mut seqs = Vec::with_capacity(sealed.len());
        for b in sealed {
            self.client
                .publish(&self.topics.presence, QoS::AtLeastOnce, false, b.payload)
                .await?;
            seqs.push(b.seqs);
            crash_point!("uplink.after_publish_before_ack");
        }
        Ok(seqs)
    }

    async fn on_link(&mut self, link: Link) -> anyhow::Result<()> {
        match link {
            Link::Connected => {
                tracing::info!(
                    outbox_depth = self.outbox.depth(),
                    "connected to the broker"
                );
                self.connected = true;
                self.last_link_error = None;
                self.client
                    .subscribe(&self.topics.config, QoS::AtLeastOnce)
                    .await?;
                self.client
                    .subscribe(&self.topics.ack, QoS::AtLeastOnce)
                    .await?;
                let now = self.now_ms();
                self.publish_status(GatewayState::Online, now).await?;
                self.uplink.connected(now);
                self.publish_pending(now).await?;
            }
            Link::Disconnected(reason) => {
                if self.last_link_error.as_ref() != Some(&reason) {
                    tracing::warn!("{reason}; retrying with backoff, events stay in the outbox");
                    self.last_link_error = Some(reason);
                }
                self.connected = false;
                self.uplink.disconnected();
            }
            Link::Publish { topic, payload } if topic == self.topics.ack => {
                match open::<PresenceAck>(&topic, &self.key, &payload) {
                    Ok(ack) if ack.epoch != self.outbox.epoch() => {
                        // A stale ack (an old outbox's, kept by a persistent session) must not
                        // touch the window: its seqs are this epoch's too.
                        tracing::debug!(epoch = %ack.epoch, "ignored an ack for another epoch");
                    }
                    Ok(ack) => {
                        let settled = ack.settled();
                        let removed = self.outbox.settle(&ack)?;
                        crash_point!("outbox.after_settle_before_flush");
                        self.uplink.acked(&settled);
                        for r in &ack.rejected {
                            tracing::warn!(reason = %r.reason, count = %r.seqs.count(), "cloud rejected events");
                        }
                        tracing::debug!(removed, depth = self.outbox.depth(), "ack settled events");
                    }
                    Err(e) => self.refuse(&topic, &e),
                }
            }
            Link::Publish { topic, payload } if topic == self.topics.config => {
                self.on_config(&topic, &payload).await?;
            }
            Link::Publish { topic, .. } => {
                tracing::debug!(%topic, "ignored a message on an unexpected topic")
            }
        }
        Ok(())
    }

    /// Logs the fault counters when any has moved since the last heartbeat.
    fn log_counters(&mut self) {
        let now = [
            self.counters.rejected_messages.load(Ordering::Relaxed),
            self.counters.malformed_adverts.load(Ordering::Relaxed),
            self.counters.scan_restarts.load(Ordering::Relaxed),
        ];
        if now != self.counters_logged {
            tracing::info!(
                rejected_messages = now[0],
                malformed_adverts = now[1],
                scan_restarts = now[2],
                outbox_depth = self.outbox.depth(),
                dropped = self.outbox.dropped_total(),
                "counters"
            );
            self.counters_logged = now;
        }
    }

    fn refuse(&self, topic: &str, e: &dyn std::fmt::Display) {
        self.counters
            .rejected_messages
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%topic, error = %e, "refused a message");
    }

    async fn on_config(&mut self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        let raw = match open_raw(topic, &self.key, payload) {
            Ok(raw) => raw.get().to_owned(),
            Err(e) => {
                self.refuse(topic, &e);
                return Ok(());
            }
        };
        let current = self.params.version;
        let ack = match RemoteConfig::read(&raw) {
            Ok(read) if read.config.version < current => {
                tracing::info!(
                    version = read.config.version,
                    current,
                    "ignored an older config"
                );
                return Ok(());
            }
            Ok(read) => {
                if read.config.version == current {
                    ConfigAck::applied(&read)
                } else if let Err(e) = persist_remote_config(&self.config.data.dir, &raw) {
                    // Not applied: a config that would be forgotten at the next restart is
                    // refused, and the cloud sends it again once the disk is fixed.
                    tracing::error!(error = %format!("{e:#}"), "cannot save the remote config");
                    let problem = omo_device_config::problems::Problem::new(
                        "",
                        format!("cannot save the config on the gateway: {e:#}"),
                    );
                    ConfigAck::refused(read.config.version, &[problem])
                } else {
                    self.engine.set_params(&read.config.presence);
                    self.filter = FrameFilter::new(&read.config.filters);
                    tracing::info!(
                        version = read.config.version,
                        warnings = read.warnings.len(),
                        "applied remote config"
                    );
                    self.params = read.config.clone();
                    ConfigAck::applied(&read)
                }
            }
            Err(problems) => {
                let version = serde_json::from_str::<serde_json::Value>(&raw)
                    .ok()
                    .and_then(|v| v.get("version").and_then(|v| v.as_u64()))
                    .unwrap_or(0);
                tracing::warn!(
                    version,
                    problems = problems.len(),
                    "refused a remote config"
                );
                ConfigAck::refused(version, &problems)
            }
        };
        let payload = seal(&self.topics.config_ack, &self.key, &ack)?;
        self.client
            .publish(&self.topics.config_ack, QoS::AtLeastOnce, false, payload)
            .await?;
        let now = self.now_ms();
        self.publish_status(GatewayState::Online, now).await
    }

    async fn publish_status(&mut self, state: GatewayState, now: i64) -> anyhow::Result<()> {
        let payload = self.status_now(state, now);
        self.client
            .publish(&self.topics.status, QoS::AtLeastOnce, true, payload)
            .await?;
        Ok(())
    }

    /// A sealed status as of `now`, which starts the next heartbeat's advert rate.
    fn status_now(&mut self, state: GatewayState, now: i64) -> Vec<u8> {
        let (count0, t0) = self.adverts_at_last_heartbeat;
        let count = self.counters.adverts.load(Ordering::Relaxed);
        let secs = ((now - t0) as f64 / 1000.0).max(0.001);
        let rate = round((count - count0) as f64 / secs, 10.0);
        self.adverts_at_last_heartbeat = (count, now);
        status_payload(
            &self.topics.status,
            &self.key,
            state,
            (now, self.started_ms),
            &self.outbox,
            self.params.version,
            rate,
            &self.clock,
        )
    }

    /// Stops cleanly: stops reconnecting, flushes the outbox, says `offline` with what it
    /// still holds (the heartbeat the cloud reads an epoch's clean end from) and disconnects
    /// on the link if it is up, so that nothing follows: not a reconnect, not the last will.
    async fn shut_down(mut self, connection: mqtt::Connection) -> anyhow::Result<()> {
        tracing::info!("shutting down");
        connection.stop_reconnecting();
        self.outbox.flush().await?;
        let now = self.now_ms();
        // Queued whether or not the link looks up: a connect under way, or a ConnAck not yet
        // read, still carries the goodbye; a link that is down drops it with the event loop.
        let status = self.status_now(GatewayState::Offline, now);
        let goodbye_queued = self
            .client
            .try_publish(&self.topics.status, QoS::AtLeastOnce, true, status)
            .and_then(|()| self.client.try_disconnect())
            .is_ok();
        // Wall time: the last packets are a network write, whatever the clock's speed.
        connection
            .close(goodbye_queued, Duration::from_secs(3))
            .await;
        self.outbox.flush().await?;
        tracing::info!(
            epoch = %self.outbox.epoch(),
            last_seq = self.outbox.next_seq().saturating_sub(1),
            outbox_depth = self.outbox.depth(),
            "stopped"
        );
        Ok(())
    }
}

/// A sealed status message; `times` is (now, start) on the clock, in ms.
#[allow(clippy::too_many_arguments)]
fn status_payload(
    topic: &str,
    key: &SigningKey,
    state: GatewayState,
    (now, started_ms): (i64, i64),
    outbox: &Outbox,
    config_version: u64,
    adverts_per_s: f64,
    clock: &Clock,
) -> Vec<u8> {
    let status = Status {
        state,
        ts: Timestamp::from_millis(now).unwrap_or_else(|| Timestamp::new(chrono::Utc::now())),
        uptime_s: u64::try_from((now - started_ms) / 1000).unwrap_or(0),
        outbox_depth: outbox.depth(),
        adverts_per_s,
        config_version,
        dropped: outbox.dropped_total(),
        sw_version: env!("CARGO_PKG_VERSION").to_owned(),
        accepts_v: ACCEPTED_VERSIONS.to_vec(),
        clock_synced: clock_synced(clock),
        epoch: Some(outbox.epoch()),
        last_seq: Some(outbox.next_seq().saturating_sub(1)),
    };
    // A Status has no float that can be NaN here, so sealing cannot fail.
    seal(topic, key, &status).unwrap_or_default()
}

/// Whether the clock can be trusted: a deliberately skewed one never is; a shared simulated
/// clock always is; the wall clock is when the kernel says an NTP daemon (chrony,
/// systemd-timesyncd, ntpd) keeps it synchronised.
fn clock_synced(clock: &Clock) -> bool {
    if clock.skew_ms() != 0 {
        return false;
    }
    if clock.speed() != 1.0 {
        return true;
    }
    kernel_clock_synced()
}

#[cfg(target_os = "linux")]
fn kernel_clock_synced() -> bool {
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into a zeroed,
    // properly sized struct owned by this frame.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state >= 0 && state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

#[cfg(not(target_os = "linux"))]
fn kernel_clock_synced() -> bool {
    false
}

fn round(x: f64, scale: f64) -> f64 {
    (x * scale).round() / scale
}

fn remote_config_path(dir: &Path) -> PathBuf {
    dir.join(REMOTE_CONFIG_FILE)
}

/// The last good remote config, if one was saved and still validates.
fn load_remote_config(dir: &Path) -> Option<RemoteConfig> {
    let path = remote_config_path(dir);
    let text = std::fs::read_to_string(&path).ok()?;
    match RemoteConfig::read(&text) {
        Ok(read) => Some(read.config),
        Err(problems) => {
            tracing::warn!(path = %path.display(), problems = problems.len(), "ignoring an invalid saved remote config");
            None
        }
    }
}

/// Saves the config document atomically (write, fsync, rename).
fn persist_remote_config(dir: &Path, raw: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let path = remote_config_path(dir);
    let tmp = path.with_extension("json.tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(raw.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

async fn start_scan(
    config: &GatewayConfig,
    clock: Clock,
    tx: mpsc::Sender<Advert>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    match config.scan.source {
        ScanSource::Replay => {
            let path = config
                .scan
                .replay_file
                .clone()
                .context("scan.replay_file is required for the replay source")?;
            let pace = config.scan.replay_pace;
            // Opened here, so a missing file stops the gateway at start with its name.
            let reader = open_replay(&path).await?;
            tokio::spawn(async move {
                if let Err(e) = replay(reader, clock, pace, tx).await {
                    tracing::error!(error = %format!("{e:#}"), "replay stopped");
                }
            });
            Ok(())
        }
        ScanSource::Bluez => start_bluez(config, clock, tx, counters).await,
    }
}

#[cfg(feature = "bluetooth")]
async fn start_bluez(
    config: &GatewayConfig,
    clock: Clock,
    tx: mpsc::Sender<Advert>,
    counters: Arc<Counters>,
) -> anyhow::Result<()> {
    use crate::scan::bluez;
    // No BlueZ at start is a configuration problem: say so and exit.
    let first = bluez::adapter(&config.scan.adapter).await?;
    let name = config.scan.adapter.clone();
    let silence = Duration::from_secs(u64::from(config.scan.silence_restart_s));
    tokio::spawn(async move {
        let restarted = || {
            counters.scan_restarts.fetch_add(1, Ordering::Relaxed);
        };
        let mut adapter = Some(first);
        let mut failures = 0u32;
        // Later failures (bluetoothd restarting, an adapter reset) are retried for ever.
        loop {
            let a = match adapter.take() {
                Some(a) => a,
                None => match bluez::adapter(&name).await {
                    Ok(a) => a,
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        tracing::warn!(error = %e, "BlueZ unavailable; retrying");
                        tokio::time::sleep(Duration::from_secs(1 << failures.min(6))).await;
                        continue;
                    }
                },
            };
            match bluez::run(&a, &clock, silence, &tx, &restarted).await {
                Ok(()) => return,
                Err(e) => {
                    restarted();
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "BlueZ scan failed; restarting it");
                    tokio::time::sleep(Duration::from_secs(1 << failures.min(6))).await;
                }
            }
        }
    });
    Ok(())
}

#[cfg(not(feature = "bluetooth"))]
async fn start_bluez(
    _: &GatewayConfig,
    _: Clock,
    _: mpsc::Sender<Advert>,
    _: Arc<Counters>,
) -> anyhow::Result<()> {
    anyhow::bail!("this build has no Bluetooth support (the `bluetooth` feature); set scan.source = \"replay\"")
}

type ReplayReader = Box<dyn tokio::io::AsyncRead + Unpin + Send>;

/// Opens a replay file, or stdin for `-`.
async fn open_replay(path: &Path) -> anyhow::Result<ReplayReader> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(tokio::io::stdin()));
    }
    let file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("opening scan.replay_file {}", path.display()))?;
    Ok(Box::new(file))
}

/// Replays sightings from `reader`, paced by their `ts` on the clock.
async fn replay(
    reader: ReplayReader,
    clock: Clock,
    pace: bool,
    tx: mpsc::Sender<Advert>,
) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut reader = tokio::io::BufReader::new(reader);
    let mut pacer = Pacer::default();
    let mut n = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Bounded: a file with no newline cannot take all the memory.
        let read = (&mut reader)
            .take(MAX_REPLAY_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .await?;
        if read == 0 {
            break;
        }
        n += 1;
        if buf.len() > MAX_REPLAY_LINE && buf.last() != Some(&b'\n') {
            tracing::warn!("replay line {n}: longer than {MAX_REPLAY_LINE} bytes; skipped");
            // Skip the rest of the over-long line.
            loop {
                buf.clear();
                let r = (&mut reader)
                    .take(MAX_REPLAY_LINE as u64)
                    .read_until(b'\n', &mut buf)
                    .await?;
                if r == 0 || buf.last() == Some(&b'\n') {
                    break;
                }
            }
            continue;
        }
        let Ok(line) = std::str::from_utf8(&buf) else {
            tracing::warn!("replay line {n}: not UTF-8 text; skipped");
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let record = match parse_line(line, n) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e}; skipped");
                continue;
            }
        };
        let now = clock.now().timestamp_millis();
        if pace {
            let (due, jumped) = pacer.due_at(record.file_ts_ms, now);
            if jumped {
                tracing::warn!(
                    "replay line {n}: ts jumps more than an hour; replay continues from here"
                );
            }
            if due > now {
                let wait = clock
                    .wall_duration(Duration::from_millis((due - now) as u64))
                    .unwrap_or_default();
                tokio::time::sleep(wait).await;
            }
        }
        let mut advert = record.advert;
        advert.at_ms = clock.now().timestamp_millis();
        if tx.send(advert).await.is_err() {
            break;
        }
    }
    tracing::info!(lines = n, "replay finished");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}

/// `omo-gateway scan`: prints what the scan source hears, one JSON line per advertisement that
/// carries beacon frames (time, RSSI, frames) — for installers placing gateways and beacons.
/// Addresses are not printed. Runs until SIGTERM/SIGINT or the end of a replay.
pub async fn scan(config: GatewayConfig, clock: Clock) -> anyhow::Result<()> {
    use std::io::Write;
    let (tx, mut rx) = mpsc::channel::<Advert>(4096);
    start_scan(&config, clock, tx, Arc::new(Counters::default())).await?;
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let mut out = std::io::stdout().lock();
    loop {
        tokio::select! {
            advert = rx.recv() => {
                let Some(a) = advert else { return Ok(()) };
                let Ok(frames) = crate::frames::decode(&a.data) else { continue };
                if frames.is_empty() {
                    continue;
                }
                let line = serde_json::json!({
                    "ts": Timestamp::from_millis(a.at_ms).map(|t| t.to_string()),
                    "rssi": a.rssi,
                    "frames": frames.iter().map(crate::frames::Frame::to_json).collect::<Vec<_>>(),
                });
                writeln!(out, "{line}")?;
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}
