//! Retention (DESIGN.md, "Privacy by design": location history has a retention period): a
//! background sweeper that deletes what is older than the configured periods — raw
//! observations (event-log records), visits and their transitions, decisions and finished
//! deliveries with the caps history, processed-event ids — in bounded batches, each its own
//! commit with a pause after it, so ingest and the stages never wait long behind it. What it
//! deleted is counted at `/metrics` (`omo_retention_deleted_total{kind}`).
//!
//! Aggregates are never swept: campaign funnels and analysis rows (reports keep their totals),
//! the store report tallies (only their visitor hashes go, with the visits' period), footfall,
//! ingest statistics.
//!
//! Two rules keep the pipeline whole: the newest event-log record and the newest transition are
//! never deleted (their writers take the next key from the last one), and nothing a consumer
//! has still to read is deleted (the visit and statistics stages' log positions, the decision
//! stage's transition position).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::event_log;
use crate::store::sweep::Sweeper;
use crate::store::{Store, StoreError};
use crate::{campaigns, delivery, identity, ingest, profiles, tallies, visits};
use omo_device_config::Clock;

const DAY_MS: i64 = 86_400_000;

/// `[retention]` in `cloud.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Raw observations (the event log: gateway sightings, app reports, LINE events), days
    /// after the cloud received them.
    pub observations_days: u32,
    /// Visits (and the transitions the visit stage decided), days after they began; at least
    /// the 365 days an Nth-visit trigger counts back.
    pub visits_days: u32,
    /// Decisions, finished deliveries and the frequency-cap history, days after the decision;
    /// at least the 62 days caps look back.
    pub deliveries_days: u32,
    /// Processed-event ids (app report idempotency keys, LINE webhook event ids), days; at
    /// least `ingest.max_age_s`, or a late redelivery would be stored twice.
    pub processed_ids_days: u32,
    /// Seconds between two sweeps (wall time).
    pub sweep_interval_s: u32,
    /// Rows deleted per commit at most.
    pub batch: usize,
    /// Pause after each batch, ms: the sweeper's commits take turns with ingest's.
    pub pause_ms: u64,
    /// Rows read per sweep at most in the spaces without a time order (decisions, deliveries,
    /// processed-event ids): each sweep goes on where the last one stopped.
    pub scan_per_sweep: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            observations_days: 30,
            visits_days: 395,
            deliveries_days: 395,
            processed_ids_days: 14,
            sweep_interval_s: 300,
            batch: 1000,
            pause_ms: 5,
            scan_per_sweep: 200_000,
        }
    }
}

/// How far back frequency caps read a customer's sends (the decision stage's horizon).
pub const CAPS_HISTORY_DAYS: u32 = 62;
/// The longest window an Nth-visit trigger counts visits in.
pub const NTH_VISIT_DAYS: u32 = 365;

impl Retention {
    /// Problems by key (`prefix.field`); `max_age_s` is `ingest.max_age_s`.
    pub fn problems(&self, prefix: &str, max_age_s: u64) -> Vec<(String, String)> {
        let mut p = Vec::new();
        for (key, days) in [
            ("observations_days", self.observations_days),
            ("visits_days", self.visits_days),
            ("deliveries_days", self.deliveries_days),
            ("processed_ids_days", self.processed_ids_days),
        ] {
            if days == 0 {
                p.push((format!("{prefix}.{key}"), "must be at least 1".into()));
            }
        }
        if self.visits_days < NTH_VISIT_DAYS {
            p.push((
                format!("{prefix}.visits_days"),
                format!("must be at least {NTH_VISIT_DAYS}: Nth-visit triggers count visits that far back"),
            ));
        }
        if self.deliveries_days < CAPS_HISTORY_DAYS {
            p.push((
                format!("{prefix}.deliveries_days"),
                format!("must be at least {CAPS_HISTORY_DAYS}: frequency caps read that far back"),
            ));
        }
        if u64::from(self.processed_ids_days) * 86_400 < max_age_s {
            p.push((
                format!("{prefix}.processed_ids_days"),
                format!("must cover ingest.max_age_s ({max_age_s} s): a late redelivery would be stored twice"),
            ));
        }
        if self.sweep_interval_s == 0 {
            p.push((
                format!("{prefix}.sweep_interval_s"),
                "must be at least 1".into(),
            ));
        }
        if !(1..=100_000).contains(&self.batch) {
            p.push((format!("{prefix}.batch"), "must be 1..=100000".into()));
        }
        if self.scan_per_sweep < self.batch {
            p.push((
                format!("{prefix}.scan_per_sweep"),
                "must be at least batch".into(),
            ));
        }
        p
    }
}

/// What one sweep deleted (or stamped), by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Swept {
    /// Event-log records holding an observation (gateway, app, LINE, erased).
    pub observations: u64,
    /// Event-log tick records.
    pub ticks: u64,
    pub transitions: u64,
    pub visits: u64,
    pub decisions: u64,
    pub deliveries: u64,
    pub caps_history: u64,
    /// The overview's hourly delivery counters.
    pub delivery_hours: u64,
    pub processed_ids: u64,
    /// LINE account-link nonces past their expiry, never used.
    pub line_nonces: u64,
    /// Visits and purchases a profile kept in detail past the visits' period (its counts and
    /// spend stay).
    pub profile_details: u64,
    /// Processed-event ids written before they carried a time, stamped now (so they expire a
    /// period from now).
    pub stamped_ids: u64,
    /// Store report tallies of hours past the visits' period that lost their visitor hashes
    /// (their counts stay).
    pub tally_visitors: u64,
}

impl Swept {
    fn kinds(&self) -> [(&'static str, u64); 12] {
        [
            ("observations", self.observations),
            ("ticks", self.ticks),
            ("transitions", self.transitions),
            ("visits", self.visits),
            ("decisions", self.decisions),
            ("deliveries", self.deliveries),
            ("caps_history", self.caps_history),
            ("delivery_hours", self.delivery_hours),
            ("processed_ids", self.processed_ids),
            ("line_nonces", self.line_nonces),
            ("profile_details", self.profile_details),
            ("tally_visitors", self.tally_visitors),
        ]
    }

    pub fn total(&self) -> u64 {
        self.kinds().iter().map(|(_, n)| n).sum()
    }
}

/// Where the unordered scans stopped (kept between sweeps, in memory).
#[derive(Debug, Default, Clone)]
pub struct Cursors {
    decisions: Vec<u8>,
    deliveries: Vec<u8>,
    processed_ids: Vec<u8>,
    line_nonces: Vec<u8>,
    profiles: Vec<u8>,
}

/// The sweeper's limits and what it calls between batches.
pub struct Sweep<'a> {
    pub store: &'a dyn Store,
    pub config: Retention,
    pub now_ms: i64,
    /// Called after every commit (sleeps in the service; nothing in tests).
    pub pause: &'a mut dyn FnMut(),
}

impl Sweep<'_> {
    fn cutoff(&self, days: u32) -> i64 {
        self.now_ms.saturating_sub(i64::from(days) * DAY_MS)
    }

    /// Runs every kind once, each by the operation of the module that owns it; `cursors`
    /// carries the unordered walks over to the next sweep.
    pub fn run(&mut self, cursors: &mut Cursors) -> Result<Swept, StoreError> {
        let config = self.config;
        let observations = self.cutoff(config.observations_days);
        let visits = self.cutoff(config.visits_days);
        let caps = self.cutoff(config.deliveries_days.max(CAPS_HISTORY_DAYS));
        let deliveries = self.cutoff(config.deliveries_days);
        let processed_ids = self.cutoff(config.processed_ids_days);
        let (store, now_ms) = (self.store, self.now_ms);
        let pause = &mut *self.pause;
        // Each commit is counted at `/metrics` (so a long sweep shows its progress), then
        // the sweeper pauses.
        let mut after_commit = |done: &[(&'static str, u64)]| {
            for (kind, n) in done {
                metrics::counter!("omo_retention_deleted_total", "kind" => *kind).increment(*n);
            }
            pause();
        };
        let sw = &mut Sweeper {
            store,
            batch: config.batch,
            scan_per_sweep: config.scan_per_sweep,
            after_commit: &mut after_commit,
        };
        let mut s = Swept::default();
        if let Some(upper) = log_upper(store)? {
            let log = ingest::expire_log(sw, observations, upper)?;
            (s.ticks, s.observations) = (log.ticks, log.observations);
        }
        let decided = crate::cluster::positions(store, campaigns::stage::CONSUMER)?;
        s.transitions = visits::expire_transitions(sw, visits, &decided)?;
        s.visits = visits::expire(sw, visits)?;
        s.tally_visitors = tallies::hours::drop_visitors(sw, tallies::hours::hour_of(visits))?;
        s.caps_history = campaigns::expire_caps_history(sw, caps)?;
        // Kept as long as deliveries.
        s.delivery_hours = delivery::expire_hours(sw, deliveries)?;
        s.decisions = campaigns::expire_decisions(sw, &mut cursors.decisions, deliveries)?;
        s.deliveries = delivery::expire(sw, &mut cursors.deliveries, deliveries)?;
        (s.processed_ids, s.stamped_ids) =
            ingest::expire_processed_ids(sw, &mut cursors.processed_ids, processed_ids, now_ms)?;
        s.line_nonces = identity::expire_line_nonces(sw, &mut cursors.line_nonces, now_ms)?;
        s.profile_details = profiles::trim_details(sw, &mut cursors.profiles, visits)?;
        Ok(s)
    }
}

/// Where the event log's expiry stops (`None`: the log is empty): no record the log's
/// consumers (the visit and statistics stages) have still to read, nor the newest one (its
/// writer takes the next offset from it).
fn log_upper(store: &dyn Store) -> Result<Option<u64>, StoreError> {
    let next = event_log::EventLog::open(store)?.next_offset();
    if next == event_log::FIRST_OFFSET {
        return Ok(None);
    }
    let mut read = crate::cluster::positions(store, visits::stage::CONSUMER)?;
    read.push(event_log::position(store, crate::stats::CONSUMER)?);
    Ok(Some(read.into_iter().min().unwrap_or(0).min(next - 1)))
}

/// The sweeper's name in leases.
pub const NAME: &str = "retention";

/// Runs the sweeper every `sweep_interval_s` (the first one an interval after the start, once
/// the stages have caught up) until the process ends.
pub async fn run(
    store: std::sync::Arc<dyn Store>,
    clock: Clock,
    config: Retention,
    assignment: tokio::sync::watch::Receiver<crate::cluster::lease::Assignment>,
) {
    let mut cursors = Cursors::default();
    let period = Duration::from_secs(u64::from(config.sweep_interval_s));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        // One instance sweeps: the one holding the sweeper's lease.
        if !assignment.borrow().single.contains(NAME) {
            continue;
        }
        let (s, c) = (store.clone(), clock.clone());
        let mut carried = std::mem::take(&mut cursors);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || {
            let mut pause = || std::thread::sleep(Duration::from_millis(config.pause_ms));
            let swept = Sweep {
                store: s.as_ref(),
                config,
                now_ms: c.now().timestamp_millis(),
                pause: &mut pause,
            }
            .run(&mut carried);
            // Erasures an asker left under way are finished here too.
            match super::finish_waiting_erasures(s.as_ref(), c.now().timestamp_millis()) {
                Ok(0) => {}
                Ok(n) => tracing::info!(erasures = n, "finished erasures left under way"),
                Err(e) => tracing::warn!(error = %e, "erasures left under way not finished yet"),
            }
            (swept, carried)
        })
        .await;
        metrics::counter!("omo_retention_sweeps_total").increment(1);
        metrics::gauge!("omo_retention_last_sweep_seconds").set(started.elapsed().as_secs_f64());
        match result {
            Ok((Ok(swept), carried)) => {
                cursors = carried;
                metrics::counter!("omo_retention_stamped_ids_total").increment(swept.stamped_ids);
                if swept.total() > 0 {
                    tracing::info!(
                        observations = swept.observations,
                        ticks = swept.ticks,
                        transitions = swept.transitions,
                        visits = swept.visits,
                        decisions = swept.decisions,
                        deliveries = swept.deliveries,
                        caps_history = swept.caps_history,
                        processed_ids = swept.processed_ids,
                        seconds = started.elapsed().as_secs_f64(),
                        "retention sweep deleted expired rows"
                    );
                }
            }
            Ok((Err(e), carried)) => {
                cursors = carried;
                tracing::error!(error = %e, "retention sweep failed; trying again next time");
            }
            // The runtime is shutting down.
            Err(e) if e.is_cancelled() => return,
            Err(e) => tracing::error!(error = %e, "retention sweep task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Delivery;
    use crate::delivery::Status;
    use crate::ingest::keys::processed_id_value;
    use crate::ingest::record::{AppReport, GpsFix, Record};
    use crate::store::event_log::{advance, EventLog};
    use crate::store::testing::{places, Place, TestStore};
    use crate::store::{Commit, Space};
    use omo_device_config::Timestamp;
    use serde_json::json;

    const NOW: i64 = 1_795_000_000_000;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms).unwrap()
    }

    fn app(received_ms: i64) -> Vec<u8> {
        Record::App(AppReport {
            install: "i_1".into(),
            customer: "c_1".into(),
            event_ts: ts(received_ms),
            received: ts(received_ms),
            gps: Some(GpsFix {
                lat: 35.6,
                lon: 139.7,
                accuracy_m: 10.0,
            }),
            wifi: Vec::new(),
            beacons: Vec::new(),
        })
        .encode()
    }

    fn sweep(store: &TestStore, config: Retention, cursors: &mut Cursors) -> Swept {
        let mut commits = 0;
        let mut pause = || commits += 1;
        let swept = Sweep {
            store,
            config,
            now_ms: NOW,
            pause: &mut pause,
        }
        .run(cursors)
        .unwrap();
        assert!(commits >= 1);
        swept
    }

    fn keys(store: &TestStore, space: Space) -> Vec<Vec<u8>> {
        crate::store::barrier::scan_all(store, space)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Event-log records 40 days old (offsets 1..=6: ticks and app reports), then 2 of today,
    /// each appended by a commit of its own; both log consumers have read up to offset 5.
    fn log_store(place: &Place) -> TestStore {
        let store = place.open();
        let mut log = EventLog::open(&store).unwrap();
        let old = NOW - 40 * DAY_MS;
        let mut records: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                if i % 2 == 0 {
                    Record::Tick {
                        received: ts(old + i),
                    }
                    .encode()
                } else {
                    app(old + i)
                }
            })
            .collect();
        records.push(app(NOW - 1000));
        records.push(app(NOW - 500));
        for r in records {
            let mut c = Commit::new();
            log.append(&mut c, &r);
            store.commit(c).unwrap();
        }
        let mut c = Commit::new();
        for consumer in [crate::visits::stage::CONSUMER, crate::stats::CONSUMER] {
            advance(&mut c, consumer, event_log::FIRST_OFFSET, 5);
        }
        store.commit(c).unwrap();
        store
    }

    #[test]
    fn old_observations_go_in_batches_but_never_past_a_consumer() {
        for place in places() {
            old_observations_go_in_batches_but_never_past_a_consumer_on(&place);
        }
    }

    fn old_observations_go_in_batches_but_never_past_a_consumer_on(place: &Place) {
        let store = log_store(place);
        let config = Retention {
            batch: 2,
            scan_per_sweep: 2,
            ..Retention::default()
        };
        let s = sweep(&store, config, &mut Cursors::default());
        // Offsets 1..=4 are read by both stages; 5 and 6 are old but not read yet.
        assert_eq!((s.ticks, s.observations), (2, 2));
        let left: Vec<u64> = keys(&store, Space::EventLog)
            .iter()
            .map(|k| u64::from_be_bytes(k.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(left, [5, 6, 7, 8]);
        // Once read, they go too; today's records stay.
        let mut c = Commit::new();
        for consumer in [crate::visits::stage::CONSUMER, crate::stats::CONSUMER] {
            advance(&mut c, consumer, 5, 9);
        }
        store.commit(c).unwrap();
        let s = sweep(&store, config, &mut Cursors::default());
        assert_eq!((s.ticks, s.observations), (1, 1));
        assert_eq!(keys(&store, Space::EventLog).len(), 2);
        // The writer still picks up after the newest record.
        assert_eq!(EventLog::open(&store).unwrap().next_offset(), 9);
    }

    /// The records one commit appended share an entry: it goes once all of them are old and
    /// read, and stays whole until then.
    #[test]
    fn an_entry_of_several_records_goes_once_all_of_them_may() {
        for place in places() {
            an_entry_of_several_records_goes_once_all_of_them_may_on(&place);
        }
    }

    fn an_entry_of_several_records_goes_once_all_of_them_may_on(place: &Place) {
        let store = place.open();
        let mut log = EventLog::open(&store).unwrap();
        let old = NOW - 40 * DAY_MS;
        for records in [
            vec![app(old), app(old + 1), app(old + 2)],
            vec![app(old + 3), app(NOW - 10)],
            vec![app(NOW - 5)],
        ] {
            let mut c = Commit::new();
            for r in &records {
                log.append(&mut c, r);
            }
            store.commit(c).unwrap();
        }
        let mut c = Commit::new();
        for consumer in [crate::visits::stage::CONSUMER, crate::stats::CONSUMER] {
            advance(&mut c, consumer, event_log::FIRST_OFFSET, 7);
        }
        store.commit(c).unwrap();
        let s = sweep(&store, Retention::default(), &mut Cursors::default());
        // The first entry went; the second holds a record of today, so it stays whole.
        assert_eq!(s.observations, 3);
        let left: Vec<u64> = event_log::read(&store, 0, 10)
            .unwrap()
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(left, [4, 5, 6]);
    }

    #[test]
    fn the_newest_record_and_transition_stay_however_old() {
        for place in places() {
            the_newest_record_and_transition_stay_however_old_on(&place);
        }
    }

    fn the_newest_record_and_transition_stay_however_old_on(place: &Place) {
        let store = place.open();
        let mut log = EventLog::open(&store).unwrap();
        let mut c = Commit::new();
        let old = NOW - 400 * DAY_MS;
        log.append(&mut c, &app(old));
        store.commit(c).unwrap();
        let mut c = Commit::new();
        log.append(&mut c, &app(old + 1));
        for consumer in [crate::visits::stage::CONSUMER, crate::stats::CONSUMER] {
            advance(&mut c, consumer, event_log::FIRST_OFFSET, 3);
        }
        for seq in 1..=3u64 {
            c.put(
                Space::Transitions,
                seq.to_be_bytes().to_vec(),
                serde_json::to_vec(&json!({"decided_ms": old, "customer": "c_1"})).unwrap(),
            );
        }
        advance(&mut c, crate::campaigns::stage::CONSUMER, 1, 4);
        store.commit(c).unwrap();
        let s = sweep(&store, Retention::default(), &mut Cursors::default());
        assert_eq!((s.observations, s.transitions), (1, 2));
        assert_eq!(keys(&store, Space::EventLog), [2u64.to_be_bytes().to_vec()]);
        assert_eq!(
            keys(&store, Space::Transitions),
            [3u64.to_be_bytes().to_vec()]
        );
    }

    #[test]
    fn visits_caps_decisions_deliveries_and_processed_ids_expire_by_their_periods() {
        for place in places() {
            visits_caps_decisions_deliveries_and_processed_ids_expire_by_their_periods_on(&place);
        }
    }

    fn visits_caps_decisions_deliveries_and_processed_ids_expire_by_their_periods_on(
        place: &Place,
    ) {
        let store = place.open();
        let config = Retention {
            visits_days: 100,
            deliveries_days: 100,
            processed_ids_days: 14,
            batch: 2,
            scan_per_sweep: 1000,
            ..Retention::default()
        };
        let old = NOW - 120 * DAY_MS;
        let recent = NOW - 3 * DAY_MS;
        let mut c = Commit::new();
        // Visits: an old finished one in two scopes' indexes, an old one still open, a recent one.
        for (id, entered, exited, scope) in [
            ("v_old", old, true, "store/s1"),
            ("v_open", old + 1, false, "store/s1"),
            ("v_new", recent, true, "store/s1"),
            ("v_zone", old, true, "zone/z1"),
        ] {
            let v = json!({"id": id, "customer": "c_1", "scope": {"kind": "store", "id": "s1"},
                "entered": ts(entered), "exited": exited.then(|| ts(entered + 60_000)),
                "dwell_s": 60, "milestones_min": [], "sources": ["app"], "late": false});
            c.put(
                Space::Visits,
                format!("visit/{id}"),
                serde_json::to_vec(&v).unwrap(),
            );
            c.put(Space::Visits, format!("by-customer/c_1/{id}"), Vec::new());
            c.put(
                Space::Visits,
                format!("by-scope/{scope}/{entered:016x}/{id}"),
                Vec::new(),
            );
        }
        c.put(
            Space::Visits,
            "footfall/store/s1/0000000000000000",
            b"{}".to_vec(),
        );
        // Caps history: old and recent sends of two customers.
        for (customer, at) in [("c_1", old), ("c_1", recent), ("c_2", old)] {
            c.put(
                Space::Campaigns,
                format!("history/{customer}/{at:016x}/welcome"),
                Vec::new(),
            );
        }
        // The overview's hourly delivery counters: an old hour and a recent one.
        for at in [old, recent] {
            c.put(
                Space::Campaigns,
                delivery::hourly_key(delivery::hour_of(at), "line", "delivered"),
                1u64.to_be_bytes().to_vec(),
            );
        }
        // Decisions.
        for (key, at) in [("d1", old), ("d2", recent)] {
            c.put(
                Space::Campaigns,
                format!("decision/{key}"),
                serde_json::to_vec(&json!({"at_ms": at, "customer": "c_1"})).unwrap(),
            );
        }
        // Deliveries: an old delivered one, an old one still pending, a recent one.
        for (id, decided, status) in [
            ("a", old, Status::Delivered),
            ("b", old, Status::Pending),
            ("c", recent, Status::Delivered),
        ] {
            let d = Delivery {
                id: id.into(),
                trigger_key: "t".into(),
                retry_key: "r".into(),
                campaign: "welcome".into(),
                variant: "a".into(),
                channel: crate::delivery::DeliveryChannel::Line,
                customer: "c_1".into(),
                store: "s1".into(),
                text: "hi".into(),
                flex: None,
                coupon: format!("CODE{id}"),
                decided_ms: decided,
                expires_ms: decided + 1,
                status,
                attempts: 1,
                first_attempt_ms: None,
                last_attempt_ms: None,
                done_ms: None,
                reason: None,
                link: None,
                click: None,
                test: false,
            };
            delivery::put(&mut c, &d, None);
            c.put(Space::Campaigns, delivery::coupon_key(&d.coupon), id);
        }
        c.put(
            Space::Campaigns,
            "funnel/welcome/a/sent",
            3u64.to_be_bytes().to_vec(),
        );
        // Processed ids: old, recent, and one from before they carried a time.
        c.put(
            Space::Dedup,
            "line/old",
            processed_id_value(json!({}), NOW - 20 * DAY_MS),
        );
        c.put(
            Space::Dedup,
            "line/new",
            processed_id_value(json!({}), recent),
        );
        c.put(Space::Dedup, "app/i_1/k", b"{\"accepted\":true}".to_vec());
        // LINE account-link nonces: one expired, one still waiting.
        for (nonce, expires) in [("n-old", NOW - 1), ("n-new", NOW + 60_000)] {
            c.put(
                Space::Identity,
                format!("line-nonce/{nonce}"),
                serde_json::to_vec(&json!({"member_id": "m1", "expires_ms": expires})).unwrap(),
            );
        }
        store.commit(c).unwrap();

        let mut cursors = Cursors::default();
        let s = sweep(&store, config, &mut cursors);
        assert_eq!(
            (s.visits, s.caps_history, s.decisions, s.deliveries),
            (2, 2, 1, 1),
            "{s:?}"
        );
        assert_eq!((s.processed_ids, s.stamped_ids, s.line_nonces), (1, 1, 1));
        assert_eq!(s.delivery_hours, 1, "{s:?}");
        assert_eq!(
            keys(&store, Space::Identity),
            [b"line-nonce/n-new".to_vec()]
        );
        let text = |space| -> Vec<String> {
            keys(&store, space)
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(
            text(Space::Visits),
            [
                "by-customer/c_1/v_new",
                "by-customer/c_1/v_open",
                &format!("by-scope/store/s1/{:016x}/v_open", old + 1),
                &format!("by-scope/store/s1/{recent:016x}/v_new"),
                "footfall/store/s1/0000000000000000",
                "visit/v_new",
                "visit/v_open",
            ]
        );
        assert_eq!(
            text(Space::Campaigns),
            [
                "coupon/CODEb",
                "coupon/CODEc",
                "decision/d2",
                "delivery/b",
                "delivery/c",
                "funnel/welcome/a/sent",
                &format!("history/c_1/{recent:016x}/welcome"),
                &delivery::hourly_key(delivery::hour_of(recent), "line", "delivered"),
            ]
        );
        assert_eq!(text(Space::Dedup), ["app/i_1/k", "line/new"]);
        let stamped: serde_json::Value =
            serde_json::from_slice(&store.get(Space::Dedup, b"app/i_1/k").unwrap().unwrap())
                .unwrap();
        assert_eq!(stamped, json!({"accepted": true, "at": NOW}));
        // Nothing more to do on the next sweep.
        assert_eq!(sweep_total(&store, config, &mut cursors), 0);
    }

    fn sweep_total(store: &TestStore, config: Retention, cursors: &mut Cursors) -> u64 {
        let mut pause = || {};
        Sweep {
            store,
            config,
            now_ms: NOW,
            pause: &mut pause,
        }
        .run(cursors)
        .unwrap()
        .total()
    }

    #[test]
    fn profiles_lose_detail_older_than_the_visits_period_but_keep_their_counts() {
        for place in places() {
            profiles_lose_detail_older_than_the_visits_period_but_keep_their_counts_on(&place);
        }
    }

    fn profiles_lose_detail_older_than_the_visits_period_but_keep_their_counts_on(place: &Place) {
        let store = place.open();
        let mut p = crate::profiles::Profile::new("c_1");
        p.add_visit("s1", NOW - 400 * DAY_MS, 10_000);
        p.add_visit("s1", NOW - 10 * DAY_MS, 10_000);
        let mut c = Commit::new();
        c.put(
            Space::Profiles,
            crate::profiles::profile_key("c_1"),
            serde_json::to_vec(&p).unwrap(),
        );
        store.commit(c).unwrap();
        let swept = sweep(&store, Retention::default(), &mut Cursors::default());
        assert_eq!(swept.profile_details, 1);
        let p = crate::profiles::read(&store, "c_1").unwrap().unwrap();
        assert_eq!(p.recent_visits.len(), 1);
        assert_eq!((p.visits, p.first_visit_ms), (2, Some(NOW - 400 * DAY_MS)));
        // Nothing left to trim: the next sweep writes nothing.
        let again = sweep_quiet(&store);
        assert_eq!(again.profile_details, 0);
    }

    #[test]
    fn store_report_tallies_lose_their_visitors_past_the_visits_period_but_keep_their_counts() {
        for place in places() {
            store_report_tallies_lose_their_visitors_past_the_visits_period_but_keep_their_counts_on(&place);
        }
    }

    fn store_report_tallies_lose_their_visitors_past_the_visits_period_but_keep_their_counts_on(
        place: &Place,
    ) {
        use crate::tallies::hours::{self as tally, VisitHour};
        let store = place.open();
        let hour = |visitor: u32| {
            let mut h = VisitHour::default();
            h.change(visitor, None, Some(600));
            serde_json::to_vec(&h).unwrap()
        };
        let old = NOW - 400 * DAY_MS;
        let mut c = Commit::new();
        for s in ["s1", "s2"] {
            c.put(Space::Visits, tally::visits_key(s, old), hour(1));
            // A partition's row is swept alike.
            c.put(
                Space::Visits,
                tally::visits_shard_key(s, old + 3_600_000, 5),
                hour(2),
            );
            c.put(Space::Visits, tally::visits_key(s, NOW - DAY_MS), hour(3));
        }
        store.commit(c).unwrap();
        let swept = sweep(&store, Retention::default(), &mut Cursors::default());
        assert_eq!(swept.tally_visitors, 4);
        let read = |s: &str, at: i64| {
            let key = tally::visits_key(s, at);
            tally::read_tally::<VisitHour>(
                &key,
                store.get(Space::Visits, key.as_bytes()).unwrap().as_deref(),
            )
        };
        for s in ["s1", "s2"] {
            let gone = read(s, old);
            assert_eq!((gone.visits, gone.visitors.len()), (1, 0));
            assert_eq!(gone.dwell_min, std::collections::BTreeMap::from([(10, 1)]));
            assert_eq!(read(s, NOW - DAY_MS).visitors, vec![3]);
            let key = tally::visits_shard_key(s, old + 3_600_000, 5);
            let shard = tally::read_tally::<VisitHour>(
                &key,
                store.get(Space::Visits, key.as_bytes()).unwrap().as_deref(),
            );
            assert_eq!((shard.visits, shard.visitors.len()), (1, 0));
        }
        // The next sweep starts where this one stopped: nothing to do.
        assert_eq!(sweep_quiet(&store).tally_visitors, 0);
    }

    fn sweep_quiet(store: &TestStore) -> Swept {
        let mut pause = || {};
        Sweep {
            store,
            config: Retention::default(),
            now_ms: NOW,
            pause: &mut pause,
        }
        .run(&mut Cursors::default())
        .unwrap()
    }

    #[test]
    fn periods_are_checked_by_key() {
        let bad = Retention {
            observations_days: 0,
            visits_days: 100,
            deliveries_days: 30,
            processed_ids_days: 1,
            batch: 0,
            ..Retention::default()
        };
        let keys: Vec<String> = bad
            .problems("retention", 8 * 86_400)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "retention.observations_days",
                "retention.visits_days",
                "retention.deliveries_days",
                "retention.processed_ids_days",
                "retention.batch",
            ]
        );
        assert!(Retention::default()
            .problems("retention", 8 * 86_400)
            .is_empty());
    }
}
