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

use crate::delivery::{self, Delivery};
use crate::ingest::keys::processed_id_value;
use crate::store::event_log;
use crate::store::{scan_prefix_from, Commit, Space, Store, StoreError};
use crate::tallies::hours as tally;
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
    /// Commits one batch, counts what it deleted at `/metrics` (so a long sweep shows its
    /// progress), and pauses.
    fn commit(&mut self, c: Commit, deleted: &[(&'static str, u64)]) -> Result<(), StoreError> {
        if !c.is_empty() {
            self.store.commit(c)?;
            for (kind, n) in deleted {
                metrics::counter!("omo_retention_deleted_total", "kind" => *kind).increment(*n);
            }
            (self.pause)();
        }
        Ok(())
    }

    fn cutoff(&self, days: u32) -> i64 {
        self.now_ms.saturating_sub(i64::from(days) * DAY_MS)
    }

    /// Runs every kind once; `cursors` carries the unordered scans over to the next sweep.
    pub fn run(&mut self, cursors: &mut Cursors) -> Result<Swept, StoreError> {
        let mut s = Swept::default();
        self.event_log(&mut s)?;
        self.transitions(&mut s)?;
        s.visits = self.visits()?;
        s.tally_visitors = self.tally_visitors()?;
        // history/{customer}/{ms:016x}/{campaign}
        s.caps_history = self.time_ordered(
            (
                "caps_history",
                Space::Campaigns,
                crate::campaigns::keys::HISTORY,
            ),
            1,
            self.cutoff(self.config.deliveries_days.max(CAPS_HISTORY_DAYS)),
            |_, _| Ok(true),
        )?;
        // hourly/{hour_ms:016x}/{channel}/{status}: kept as long as deliveries.
        s.delivery_hours = self.time_ordered(
            ("delivery_hours", Space::Campaigns, delivery::keys::HOURLY),
            0,
            self.cutoff(self.config.deliveries_days),
            |_, _| Ok(true),
        )?;
        self.decisions(&mut s, &mut cursors.decisions)?;
        self.deliveries(&mut s, &mut cursors.deliveries)?;
        self.processed_ids(&mut s, &mut cursors.processed_ids)?;
        s.line_nonces = self.line_nonces(&mut cursors.line_nonces)?;
        s.profile_details = self.profile_details(&mut cursors.profiles)?;
        Ok(s)
    }

    /// Event-log records received before the cutoff, oldest first, never past a consumer's
    /// position nor the newest record.
    fn event_log(&mut self, s: &mut Swept) -> Result<(), StoreError> {
        let cutoff = self.cutoff(self.config.observations_days);
        let next = event_log::EventLog::open(self.store)?.next_offset();
        if next == event_log::FIRST_OFFSET {
            return Ok(());
        }
        let newest = next - 1;
        let upper = [crate::visits::stage::CONSUMER, crate::stats::CONSUMER]
            .into_iter()
            .map(|c| event_log::position(self.store, c))
            .collect::<Result<Vec<u64>, _>>()?
            .into_iter()
            .min()
            .unwrap_or(0)
            .min(newest);
        loop {
            let page = event_log::read_entries(self.store, 0, self.config.batch)?;
            let (ticks, observations) = (s.ticks, s.observations);
            let mut c = Commit::new();
            let records: usize = page.iter().map(|(_, r)| r.len()).sum();
            let mut done = records < self.config.batch;
            // An entry (the records one commit appended) goes once all of its records may.
            'entries: for (first, records) in &page {
                let (mut entry_ticks, mut entry_observations) = (0, 0);
                for (offset, bytes) in records {
                    if *offset >= upper {
                        done = true;
                        break 'entries;
                    }
                    // Every record has its log time; one that cannot be read holds nothing a
                    // consumer could use and is older than the records after it.
                    let head: Option<RecordHead> = serde_json::from_slice(bytes).ok();
                    if head.as_ref().is_some_and(|h| h.received.millis() >= cutoff) {
                        done = true;
                        break 'entries;
                    }
                    if head.is_some_and(|h| h.source == "tick") {
                        entry_ticks += 1;
                    } else {
                        entry_observations += 1;
                    }
                }
                s.ticks += entry_ticks;
                s.observations += entry_observations;
                c.delete(Space::EventLog, first.to_be_bytes().to_vec());
            }
            let empty = c.is_empty();
            self.commit(
                c,
                &[
                    ("ticks", s.ticks - ticks),
                    ("observations", s.observations - observations),
                ],
            )?;
            if done || empty {
                return Ok(());
            }
        }
    }

    /// Transitions decided before the visits' cutoff, in order, never past the decision
    /// stage's position nor the newest one.
    fn transitions(&mut self, s: &mut Swept) -> Result<(), StoreError> {
        let cutoff = self.cutoff(self.config.visits_days);
        // Transitions are numbered from 1; a malformed key is an error, not seq 0.
        let newest = crate::visits::stage::transitions_end(self.store)? - 1;
        if newest == 0 {
            return Ok(());
        }
        let upper = event_log::position(self.store, crate::campaigns::stage::CONSUMER)?.min(newest);
        loop {
            let page = self
                .store
                .scan(Space::Transitions, &[], self.config.batch)?;
            let before = s.transitions;
            let mut c = Commit::new();
            let mut done = page.len() < self.config.batch;
            for (k, v) in &page {
                let seq = u64::from_be_bytes(k.as_slice().try_into().unwrap_or([0xff; 8]));
                if seq >= upper {
                    done = true;
                    break;
                }
                // An erased one is empty: nothing to keep.
                let decided = serde_json::from_slice::<TransitionHead>(v)
                    .map(|t| t.decided_ms)
                    .unwrap_or(i64::MIN);
                if decided >= cutoff {
                    done = true;
                    break;
                }
                c.delete(Space::Transitions, k.clone());
                s.transitions += 1;
            }
            let empty = c.is_empty();
            self.commit(c, &[("transitions", s.transitions - before)])?;
            if done || empty {
                return Ok(());
            }
        }
    }

    /// Finished visits that began before the cutoff, with their indexes (the scope index is in
    /// time order per scope).
    fn visits(&mut self) -> Result<u64, StoreError> {
        let cutoff = self.cutoff(self.config.visits_days);
        let store = self.store;
        // by-scope/{kind}/{id}/{ms:016x}/{visit}
        self.time_ordered(
            ("visits", Space::Visits, crate::visits::keys::SCOPE_INDEX),
            2,
            cutoff,
            |visit, c| {
                let row = crate::visits::keys::visit(visit);
                if let Some(b) = store.get(Space::Visits, row.as_bytes())? {
                    // One that cannot be read goes with its index: nothing could show it.
                    if let Ok(v) = serde_json::from_slice::<crate::visits::stage::VisitRecord>(&b) {
                        if v.exited.is_none() {
                            // Still open (its stage may yet extend it): a later sweep.
                            return Ok(false);
                        }
                        c.delete(
                            Space::Visits,
                            crate::visits::keys::of_customer(&v.customer, visit),
                        );
                    }
                    c.delete(Space::Visits, row);
                }
                Ok(true)
            },
        )
    }

    /// Drops the visitor hashes of the store report tallies of hours that ended before the
    /// visits' cutoff, store by store from where the last sweep stopped
    /// (`tally-visitors-dropped/{store}`: the hour before which they are gone).
    fn tally_visitors(&mut self) -> Result<u64, StoreError> {
        let cutoff = tally::hour_of(self.cutoff(self.config.visits_days));
        let mut n = 0;
        let mut next = tally::TALLIES.as_bytes().to_vec();
        // Each store with tallies, from its first key.
        while let Some((first, _)) = scan_prefix_from(
            self.store,
            Space::Visits,
            tally::TALLIES.as_bytes(),
            &next,
            1,
        )?
        .pop()
        {
            let text = String::from_utf8_lossy(&first[tally::TALLIES.len()..]).into_owned();
            let Some((place, _)) = text.split_once('/') else {
                break;
            };
            next = tally::place_prefix(place).into_bytes();
            next.push(0xff);
            let done_key = tally::visitors_dropped_key(place);
            let done = match self.store.get(Space::Visits, done_key.as_bytes())? {
                Some(b) => <[u8; 8]>::try_from(b.as_slice()).map_or(0, i64::from_be_bytes),
                None => 0,
            };
            if done >= cutoff {
                continue;
            }
            let mut from = tally::visits_key(place, done).into_bytes();
            let to = tally::visits_key(place, cutoff).into_bytes();
            loop {
                let page = self
                    .store
                    .scan_range(Space::Visits, &from, &to, self.config.batch)?;
                let before = n;
                let mut c = Commit::new();
                for (k, v) in &page {
                    let key = String::from_utf8_lossy(k);
                    let mut hour: tally::VisitHour = tally::read_tally(&key, Some(v));
                    if hour.visitors.is_empty() {
                        continue;
                    }
                    hour.visitors.clear();
                    c.expect(Space::Visits, k.clone(), Some(v.clone()));
                    c.put(
                        Space::Visits,
                        k.clone(),
                        serde_json::to_vec(&hour).expect("tallies serialise"),
                    );
                    n += 1;
                }
                let full = page.len() == self.config.batch;
                if !full {
                    c.put(
                        Space::Visits,
                        done_key.clone(),
                        cutoff.to_be_bytes().to_vec(),
                    );
                }
                self.commit(c, &[("tally_visitors", n - before)])?;
                match page.last() {
                    Some((k, _)) if full => {
                        from = k.clone();
                        from.push(0);
                    }
                    _ => break,
                }
            }
        }
        Ok(n)
    }

    /// Deletes the keys `{prefix}{group}/{ms:016x}/{rest}` of `space` (a group is
    /// `group_parts` `/`-separated parts) whose time is before `cutoff`. Each group is in time
    /// order, so it is read up to the cutoff and then skipped. `with(rest, commit)` adds what
    /// goes with a key, or answers `false` to keep it.
    fn time_ordered(
        &mut self,
        (kind, space, prefix): (&'static str, Space, &str),
        group_parts: usize,
        cutoff: i64,
        mut with: impl FnMut(&str, &mut Commit) -> Result<bool, StoreError>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut from = prefix.as_bytes().to_vec();
        loop {
            let page = scan_prefix_from(
                self.store,
                space,
                prefix.as_bytes(),
                &from,
                self.config.batch,
            )?;
            let Some((last, _)) = page.last() else {
                return Ok(n);
            };
            let full = page.len() == self.config.batch;
            from = last.clone();
            from.push(0);
            let mut skipped = false;
            let before = n;
            let mut c = Commit::new();
            for (k, _) in &page {
                let text = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
                let parts: Vec<&str> = text.splitn(group_parts + 2, '/').collect();
                let (Some(ms), Some(rest)) = (parts.get(group_parts), parts.get(group_parts + 1))
                else {
                    continue;
                };
                let Ok(at) = i64::from_str_radix(ms, 16) else {
                    continue;
                };
                if at >= cutoff && group_parts == 0 {
                    // One time order under the whole prefix: everything after is newer.
                    self.commit(c, &[(kind, n - before)])?;
                    return Ok(n);
                }
                if at >= cutoff {
                    // The rest of this group is newer: on to the next group.
                    from = format!("{prefix}{}/", parts[..group_parts].join("/")).into_bytes();
                    from.push(0xff);
                    skipped = true;
                    break;
                }
                if with(rest, &mut c)? {
                    c.delete(space, k.clone());
                    n += 1;
                }
            }
            self.commit(c, &[(kind, n - before)])?;
            if !full && !skipped {
                return Ok(n);
            }
        }
    }

    /// Reads up to `scan_per_sweep` rows of `space` under `prefix` from `cursor` (wrapping to
    /// the start at the end) and deletes, batch by batch, those `expired` picks; `expired`
    /// gives the extra keys to delete with a row.
    fn rolling(
        &mut self,
        (kind, space, prefix): (&'static str, Space, &str),
        cursor: &mut Vec<u8>,
        mut expired: impl FnMut(&[u8], &[u8]) -> Option<Vec<Vec<u8>>>,
    ) -> Result<u64, StoreError> {
        let mut n = 0;
        let mut read = 0;
        if !cursor.starts_with(prefix.as_bytes()) {
            *cursor = prefix.as_bytes().to_vec();
        }
        while read < self.config.scan_per_sweep {
            let page = scan_prefix_from(
                self.store,
                space,
                prefix.as_bytes(),
                cursor,
                self.config.batch,
            )?;
            read += page.len().max(1);
            let Some((last, _)) = page.last() else {
                *cursor = prefix.as_bytes().to_vec();
                return Ok(n);
            };
            *cursor = last.clone();
            cursor.push(0);
            let before = n;
            let mut c = Commit::new();
            for (k, v) in &page {
                if let Some(extra) = expired(k, v) {
                    c.delete(space, k.clone());
                    for e in extra {
                        c.delete(space, e);
                    }
                    n += 1;
                }
            }
            self.commit(c, &[(kind, n - before)])?;
            if page.len() < self.config.batch {
                *cursor = prefix.as_bytes().to_vec();
                return Ok(n);
            }
        }
        Ok(n)
    }

    fn decisions(&mut self, s: &mut Swept, cursor: &mut Vec<u8>) -> Result<(), StoreError> {
        let cutoff = self.cutoff(self.config.deliveries_days);
        s.decisions = self.rolling(
            (
                "decisions",
                Space::Campaigns,
                crate::campaigns::keys::DECISIONS,
            ),
            cursor,
            |_, v| {
                let at = serde_json::from_slice::<DecisionHead>(v).ok()?.at_ms;
                (at < cutoff).then(Vec::new)
            },
        )?;
        Ok(())
    }

    /// Finished deliveries decided before the cutoff, with their coupon keys (a pending one
    /// stays until the worker settles it).
    fn deliveries(&mut self, s: &mut Swept, cursor: &mut Vec<u8>) -> Result<(), StoreError> {
        let cutoff = self.cutoff(self.config.deliveries_days);
        s.deliveries = self.rolling(
            ("deliveries", Space::Campaigns, delivery::keys::DELIVERIES),
            cursor,
            |_, v| {
                let d: Delivery = serde_json::from_slice(v).ok()?;
                (d.status.is_final() && d.decided_ms < cutoff).then(|| {
                    let mut with = vec![
                        delivery::coupon_key(&d.coupon).into_bytes(),
                        delivery::clicked_key(&d.id).into_bytes(),
                        delivery::store_index_key(&d.store, d.decided_ms, &d.id).into_bytes(),
                    ];
                    with.extend(
                        d.click
                            .as_deref()
                            .map(|t| delivery::click_key(t).into_bytes()),
                    );
                    with
                })
            },
        )?;
        Ok(())
    }

    /// The detail profiles keep (each visit's and purchase's store and time) older than the
    /// visits' period: a profile no new data trimmed is rewritten without it. The visit stage
    /// writes profiles too; a page it changed meanwhile conflicts and waits for the next sweep.
    fn profile_details(&mut self, cursor: &mut Vec<u8>) -> Result<u64, StoreError> {
        let cutoff = self.cutoff(self.config.visits_days);
        let prefix = crate::profiles::keys::PROFILES.as_bytes();
        if !cursor.starts_with(prefix) {
            *cursor = prefix.to_vec();
        }
        let (mut n, mut read) = (0, 0);
        while read < self.config.scan_per_sweep {
            let page = scan_prefix_from(
                self.store,
                Space::Profiles,
                prefix,
                cursor,
                self.config.batch,
            )?;
            read += page.len().max(1);
            let Some((last, _)) = page.last() else {
                *cursor = prefix.to_vec();
                return Ok(n);
            };
            *cursor = last.clone();
            cursor.push(0);
            let mut c = Commit::new();
            let mut dropped = 0;
            for (k, v) in &page {
                let Ok(mut p) = serde_json::from_slice::<crate::profiles::Profile>(v) else {
                    continue;
                };
                let before = p.recent_visits.len() + p.recent_purchases.len();
                p.recent_visits.retain(|x| x.at_ms >= cutoff);
                p.recent_purchases.retain(|x| x.at_ms >= cutoff);
                let gone = before - p.recent_visits.len() - p.recent_purchases.len();
                if gone > 0 {
                    c.expect(Space::Profiles, k.clone(), Some(v.clone()));
                    c.put(
                        Space::Profiles,
                        k.clone(),
                        serde_json::to_vec(&p).expect("profiles serialise"),
                    );
                    dropped += gone as u64;
                }
            }
            match self.commit(c, &[("profile_details", dropped)]) {
                Ok(()) => n += dropped,
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
            if page.len() < self.config.batch {
                *cursor = prefix.to_vec();
                return Ok(n);
            }
        }
        Ok(n)
    }

    /// LINE account-link nonces past their expiry.
    fn line_nonces(&mut self, cursor: &mut Vec<u8>) -> Result<u64, StoreError> {
        let now_ms = self.now_ms;
        self.rolling(
            (
                "line_nonces",
                Space::Identity,
                crate::identity::keys::LINE_NONCES,
            ),
            cursor,
            |_, v| {
                let expires = serde_json::from_slice::<serde_json::Value>(v)
                    .ok()?
                    .get("expires_ms")?
                    .as_i64()?;
                (expires < now_ms).then(Vec::new)
            },
        )
    }

    /// Processed-event ids written before the cutoff; ids without a time get one now.
    fn processed_ids(&mut self, s: &mut Swept, cursor: &mut Vec<u8>) -> Result<(), StoreError> {
        let cutoff = self.cutoff(self.config.processed_ids_days);
        let now_ms = self.now_ms;
        let mut unstamped = Vec::new();
        s.processed_ids = self.rolling(("processed_ids", Space::Dedup, ""), cursor, |k, v| {
            let value: serde_json::Value = serde_json::from_slice(v).unwrap_or_default();
            match value.get("at").and_then(serde_json::Value::as_i64) {
                Some(at) => (at < cutoff).then(Vec::new),
                None => {
                    unstamped.push((k.to_vec(), v.to_vec(), value));
                    None
                }
            }
        })?;
        for chunk in unstamped.chunks(self.config.batch) {
            let mut c = Commit::new();
            for (k, old, value) in chunk {
                let value = if value.is_object() {
                    value.clone()
                } else {
                    serde_json::json!({})
                };
                c.expect(Space::Dedup, k.clone(), Some(old.clone()));
                c.put(Space::Dedup, k.clone(), processed_id_value(value, now_ms));
            }
            match self.commit(c, &[]) {
                Ok(()) => s.stamped_ids += chunk.len() as u64,
                // Taken again meanwhile: stamped on a later sweep.
                Err(StoreError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct RecordHead {
    source: String,
    received: omo_device_config::Timestamp,
}

#[derive(Deserialize)]
struct TransitionHead {
    decided_ms: i64,
}

#[derive(Deserialize)]
struct DecisionHead {
    at_ms: i64,
}

/// Runs the sweeper every `sweep_interval_s` (the first one an interval after the start, once
/// the stages have caught up) until the process ends.
pub async fn run(store: std::sync::Arc<dyn Store>, clock: Clock, config: Retention) {
    let mut cursors = Cursors::default();
    let period = Duration::from_secs(u64::from(config.sweep_interval_s));
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
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
            Err(e) => tracing::error!(error = %e, "retention sweep task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Status;
    use crate::ingest::record::{AppReport, GpsFix, Record};
    use crate::store::event_log::{advance, EventLog};
    use crate::store::sled_store::SledStore;
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

    fn sweep(store: &SledStore, config: Retention, cursors: &mut Cursors) -> Swept {
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

    fn keys(store: &SledStore, space: Space) -> Vec<Vec<u8>> {
        crate::store::barrier::scan_all(store, space)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    /// Event-log records 40 days old (offsets 1..=6: ticks and app reports), then 2 of today,
    /// each appended by a commit of its own; both log consumers have read up to offset 5.
    fn log_store(dir: &std::path::Path) -> SledStore {
        let store = SledStore::open(dir, 1 << 20).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let store = log_store(dir.path());
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
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
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

    fn sweep_total(store: &SledStore, config: Retention, cursors: &mut Cursors) -> u64 {
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
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
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
        use crate::tallies::hours::{self as tally, VisitHour};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let hour = |visitor: u32| {
            let mut h = VisitHour::default();
            h.change(visitor, None, Some(600));
            serde_json::to_vec(&h).unwrap()
        };
        let old = NOW - 400 * DAY_MS;
        let mut c = Commit::new();
        for s in ["s1", "s2"] {
            c.put(Space::Visits, tally::visits_key(s, old), hour(1));
            c.put(
                Space::Visits,
                tally::visits_key(s, old + 3_600_000),
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
        }
        // The next sweep starts where this one stopped: nothing to do.
        assert_eq!(sweep_quiet(&store).tally_visitors, 0);
    }

    fn sweep_quiet(store: &SledStore) -> Swept {
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
