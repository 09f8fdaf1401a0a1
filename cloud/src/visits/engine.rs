//! The visit state machine (DESIGN.md, "Presence is evidence; visits are decided once"): per
//! customer and scope (a zone, and the zone's store) it turns evidence into enter, dwell
//! milestones and exit. Pure: fed with evidence and the log's time, it returns transitions.
//!
//! Rules (every duration in [`VisitParams`]):
//! - Evidence is held in a reorder buffer and applied in event-time order once the log's time
//!   has passed its event time by `reorder_window_s`, so events out of order within the window
//!   give exactly the transitions they would in order. Evidence older than that is applied at
//!   once.
//! - *Inside* evidence opens a candidate; the visit is entered once inside evidence spans
//!   `enter_after_s` without a silence longer than `exit_timeout_s` (a walk-by never does).
//!   The enter's time is the first evidence's; the visit id is derived from the log offset of
//!   that evidence, so a replay derives the same id.
//! - Each `dwell_milestones_min` is fired once when the watermark passes entered + milestone
//!   while the visit is open.
//! - The visit exits when the watermark passes the last inside evidence + `exit_timeout_s`,
//!   or last + `exit_grace_s` after *outside* evidence newer than the last inside one.
//!   Outside evidence drops a candidate at once (unless older than its last inside evidence).
//! - Buffered evidence is also released by each evidence record: its log time less the window
//!   releases what it passed, so an enter is decided by the record that lets it, not by the
//!   next tick. Before evidence is applied, its own key's deadlines before its time fire, so
//!   every key sees its evidence and deadlines in event-time order as a tick would give them.
//!   Evidence that comes later than the window but after the last tick is applied as it
//!   comes, in log order.
//! - Other deadlines fire only on ticks. A backlog received between two ticks extends its
//!   visits before any of them can time out, unless newer evidence of the same visit, released
//!   first, found its deadline due. A backlog received over several ticks (a gateway's outbox
//!   after an outage, sent batch by batch) can therefore exit a visit before the evidence that
//!   would have kept it open arrives. An exited visit is remembered until `max_lateness_s`
//!   of log time after its exit was decided: inside evidence from before the exit that
//!   arrives in that time starts a *resumed* piece, every transition of which is late, so
//!   campaigns never act twice on one stay. (Reports see the pieces as separate visits.)
//! - A transition is late when the log time it is emitted at is more than
//!   `max_lateness_s` after its own time; campaigns skip late transitions.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Where a visit is: a zone, or the store the zone belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum Scope {
    Zone(String),
    Store(String),
    /// The brand's online shop (purchase transitions only: no visit is ever online).
    Online,
}

/// Which kind of source saw the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Gateway,
    App,
    Line,
    /// A check-in: the customer's app scanned the store's (or zone's) QR code. Certain on its
    /// own: it opens a visit at once.
    Qr,
}

/// What one observation says about one customer in one scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub customer: String,
    pub scope: Scope,
    /// Corrected event time, ms.
    pub at_ms: i64,
    /// The log offset of the record it came from (orders ties; derives visit ids).
    pub offset: u64,
    pub source: Source,
    pub inside: bool,
}

/// The engine's timing (the `[visits]` section of `cloud.toml`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VisitParams {
    /// Inside evidence must span this long before a visit is entered (walk-bys never are).
    pub enter_after_s: u32,
    /// A visit exits this long after its last inside evidence; longer than every gateway's
    /// stay interval, or a present customer would be exited between two stays.
    pub exit_timeout_s: u32,
    /// After evidence of being outside, the visit exits unless inside evidence comes within this.
    pub exit_grace_s: u32,
    /// Evidence is applied in event-time order once the log is this far past it.
    pub reorder_window_s: u32,
    /// A transition decided more than this after it happened is late (campaigns skip it).
    pub max_lateness_s: u32,
    /// Dwell milestones fired once each, minutes, ascending.
    pub dwell_milestones_min: [u32; 4],
    /// GPS fixes less accurate than this decide nothing (zone matching).
    pub max_gps_accuracy_m: f64,
    /// An app report listing at least this many beacons, none of a beacon zone's, is evidence
    /// of being outside that zone (0: an app's beacon list is never outside evidence).
    pub beacon_outside_min_others: u32,
}

impl VisitParams {
    /// Every problem, by key under `prefix`; `max_stay_interval_s` is the longest stay interval
    /// any gateway uses.
    pub fn problems(&self, prefix: &str, max_stay_interval_s: u32) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                p.push((format!("{prefix}.{key}"), message));
            }
        };
        check(
            self.exit_timeout_s > max_stay_interval_s,
            "exit_timeout_s",
            format!(
                "{} s must be longer than the gateways' stay interval ({max_stay_interval_s} s)",
                self.exit_timeout_s
            ),
        );
        check(
            self.enter_after_s < self.exit_timeout_s,
            "enter_after_s",
            "must be shorter than exit_timeout_s".into(),
        );
        check(
            (1..=300).contains(&self.reorder_window_s),
            "reorder_window_s",
            "must be within 1..=300".into(),
        );
        check(
            self.max_lateness_s > 0,
            "max_lateness_s",
            "must be at least 1".into(),
        );
        check(
            self.dwell_milestones_min.windows(2).all(|w| w[0] < w[1])
                && self.dwell_milestones_min[0] > 0,
            "dwell_milestones_min",
            "must be four ascending numbers of minutes".into(),
        );
        check(
            self.max_gps_accuracy_m.is_finite() && self.max_gps_accuracy_m > 0.0,
            "max_gps_accuracy_m",
            "must be a positive number of metres".into(),
        );
        p
    }
}

impl VisitParams {
    /// What zone matching takes from these.
    pub fn match_rules(&self) -> crate::zones::MatchRules {
        crate::zones::MatchRules {
            max_gps_accuracy_m: self.max_gps_accuracy_m,
            beacon_outside_min_others: self.beacon_outside_min_others,
        }
    }
}

impl Default for VisitParams {
    fn default() -> VisitParams {
        VisitParams {
            enter_after_s: 20,
            exit_timeout_s: 300,
            exit_grace_s: 90,
            reorder_window_s: 10,
            max_lateness_s: 600,
            dwell_milestones_min: [5, 10, 20, 30],
            max_gps_accuracy_m: 100.0,
            beacon_outside_min_others: 1,
        }
    }
}

/// A decided change of a visit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub visit: String,
    pub customer: String,
    pub scope: Scope,
    pub kind: TransitionKind,
    /// The transition's own time (event time), ms.
    pub at_ms: i64,
    /// The log time it was decided at, ms.
    pub decided_ms: i64,
    pub late: bool,
    pub sources: BTreeSet<Source>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransitionKind {
    Enter,
    Dwell {
        minutes: u32,
    },
    Exit {
        dwell_s: u64,
    },
    /// A purchase by the customer (the transition's `visit` is the purchase id, its scope the
    /// store or [`Scope::Online`]); not part of any visit.
    Purchase {
        total: f64,
        currency: String,
        categories: BTreeSet<String>,
    },
}

impl Transition {
    /// Late as well when it belongs to a resumed visit (see the module's rules).
    fn resumed(mut self, resumed: bool) -> Transition {
        self.late |= resumed;
        self
    }
}

/// One customer × scope's state (opaque outside the engine; stored by the stage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum State {
    Candidate {
        first_ms: i64,
        last_ms: i64,
        opener: u64,
        sources: BTreeSet<Source>,
        /// It continues a visit exited before this evidence arrived (see the module's rules).
        #[serde(default)]
        resumed: bool,
    },
    Open {
        visit: String,
        entered_ms: i64,
        last_ms: i64,
        outside_ms: Option<i64>,
        milestones: u8,
        sources: BTreeSet<Source>,
        /// Every transition of a resumed visit is late.
        #[serde(default)]
        resumed: bool,
    },
    /// A visit exited at `exit_ms`, remembered until the watermark reaches `until_ms`
    /// (`max_lateness_s` after the log time the exit was decided at).
    Closed { exit_ms: i64, until_ms: i64 },
}

/// A customer and a scope.
pub type Key = (String, Scope);

/// A state and the deadline queued for it (later queue entries for the key are stale).
#[derive(Debug, Clone)]
struct Tracked {
    state: State,
    scheduled_ms: i64,
}

/// The engine: every customer × scope state, the reorder buffer and the deadlines.
#[derive(Debug, Default, Clone)]
pub struct VisitEngine {
    params: VisitParams,
    /// Keys the visit ids.
    id_key: [u8; 32],
    states: HashMap<Key, Tracked>,
    /// How many of `states` are open visits (kept by [`VisitEngine::put`] and
    /// [`VisitEngine::take`], so counting them is no scan).
    open: usize,
    /// The scopes each customer has a candidate or an open visit in (a view of `states`, so
    /// restored with them): what an app report is also judged against, since a report from
    /// outside names none of the zones it left.
    live: HashMap<String, BTreeSet<Scope>>,
    buffer: BinaryHeap<Reverse<(i64, u64, usize)>>,
    pending: HashMap<usize, Evidence>,
    next_pending: usize,
    deadlines: BinaryHeap<Reverse<(i64, Key)>>,
    /// Deadlines up to this event time have fired: the last tick's log time less the window.
    watermark_ms: i64,
    /// Keys whose state changed since [`VisitEngine::take_changes`].
    dirty: HashSet<Key>,
    /// Buffered evidence the stage has not stored yet (indexes into `pending`), and what it
    /// stored that has left the buffer since: [`VisitEngine::take_buffer_changes`].
    unstored: HashSet<usize>,
    left_buffer: Vec<EvidenceId>,
}

/// A buffered evidence's identity: one record's evidence is about one customer, once per
/// scope, so its log offset and scope name it.
pub type EvidenceId = (u64, Scope);

impl Evidence {
    pub fn id(&self) -> EvidenceId {
        (self.offset, self.scope.clone())
    }
}

/// What the stage stores besides the per-key states: the watermark and the evidence still in
/// the reorder buffer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Buffered {
    pub watermark_ms: i64,
    pub evidence: Vec<Evidence>,
}

/// A visit id: a keyed hash (HMAC-SHA256 with the server's secret) of the opening evidence
/// (customer, scope, log offset), so it is the same on every replay and does not lead back
/// to the customer without the secret (DESIGN.md, "Derived ids").
pub fn visit_id(key: &[u8; 32], customer: &str, scope: &Scope, offset: u64) -> String {
    let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes 32-byte keys");
    h.update(customer.as_bytes());
    h.update(&[0]);
    h.update(&serde_json::to_vec(scope).expect("scopes serialise"));
    h.update(&offset.to_be_bytes());
    format!("v_{}", hex::encode(&h.finalize().into_bytes()[..10]))
}

impl VisitEngine {
    pub fn new(params: VisitParams, id_key: [u8; 32]) -> VisitEngine {
        VisitEngine {
            params,
            id_key,
            watermark_ms: i64::MIN,
            ..VisitEngine::default()
        }
    }

    /// Open visits and candidates held.
    pub fn tracked(&self) -> usize {
        self.states
            .values()
            .filter(|t| !matches!(t.state, State::Closed { .. }))
            .count()
    }

    /// Visits open now (entered, not exited).
    pub fn open(&self) -> usize {
        self.open
    }

    /// Removes a key's state (without unlisting it: see [`VisitEngine::put`]).
    fn take(&mut self, key: &Key) -> Option<Tracked> {
        let t = self.states.remove(key)?;
        if matches!(t.state, State::Open { .. }) {
            self.open -= 1;
        }
        Some(t)
    }

    /// The scopes `customer` has a candidate or an open visit in now (evidence still in the
    /// reorder buffer not yet applied), ascending.
    pub fn live_scopes(&self, customer: &str) -> impl Iterator<Item = &Scope> {
        self.live.get(customer).into_iter().flatten()
    }

    /// Sets a key's state (keeping `live` in step); a key whose state is dropped instead is
    /// [`VisitEngine::unlist`]ed.
    fn put(&mut self, key: Key, tracked: Tracked) {
        if matches!(tracked.state, State::Closed { .. }) {
            self.unlist(&key);
        } else {
            // Most puts change a state already live: no allocation then.
            match self.live.get_mut(&key.0) {
                Some(scopes) if scopes.contains(&key.1) => {}
                Some(scopes) => {
                    scopes.insert(key.1.clone());
                }
                None => {
                    self.live
                        .insert(key.0.clone(), BTreeSet::from([key.1.clone()]));
                }
            }
        }
        if matches!(tracked.state, State::Open { .. }) {
            self.open += 1;
        }
        if let Some(old) = self.states.insert(key, tracked) {
            if matches!(old.state, State::Open { .. }) {
                self.open -= 1;
            }
        }
    }

    fn unlist(&mut self, (customer, scope): &Key) {
        if let Some(scopes) = self.live.get_mut(customer) {
            scopes.remove(scope);
            if scopes.is_empty() {
                self.live.remove(customer);
            }
        }
    }

    /// The states changed since the last call (`None`: the key is gone), for the stage to
    /// commit with its offset.
    pub fn take_changes(&mut self) -> Vec<(Key, Option<State>)> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut out: Vec<(Key, Option<State>)> = dirty
            .into_iter()
            .map(|k| {
                let state = self.states.get(&k).map(|t| t.state.clone());
                (k, state)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Deadlines up to this event time have fired, and evidence at or before it is late (a
    /// backlog); the last tick's log time less the reorder window.
    pub fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Every state and the reorder buffer, in a stable order (tests compare engines).
    #[cfg(test)]
    pub(crate) fn snapshot(&self) -> (Vec<(Key, State)>, Buffered) {
        let mut states: Vec<(Key, State)> = self
            .states
            .iter()
            .map(|(k, t)| (k.clone(), t.state.clone()))
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        (states, self.buffered())
    }

    /// A key's state now.
    pub fn state(&self, key: &Key) -> Option<&State> {
        self.states.get(key).map(|t| &t.state)
    }

    /// The evidence buffered since the last call and still buffered, and the ids of evidence
    /// stored before that has left the buffer since (applied or forgotten), for the stage to
    /// commit; ordered as [`VisitEngine::buffered`] orders them.
    pub fn take_buffer_changes(&mut self) -> (Vec<Evidence>, Vec<EvidenceId>) {
        let mut added: Vec<Evidence> = std::mem::take(&mut self.unstored)
            .into_iter()
            .filter_map(|i| self.pending.get(&i).cloned())
            .collect();
        added.sort_by(Self::buffer_order);
        (added, std::mem::take(&mut self.left_buffer))
    }

    /// Treats the whole buffer as not stored yet (restored from a format the stage replaces).
    pub fn unstore_buffer(&mut self) {
        self.unstored = self.pending.keys().copied().collect();
        self.left_buffer.clear();
    }

    /// Takes evidence `i` out of the buffer, noting it for the stage if it was stored.
    fn unbuffer(&mut self, i: usize) -> Option<Evidence> {
        let e = self.pending.remove(&i)?;
        if !self.unstored.remove(&i) {
            self.left_buffer.push(e.id());
        }
        Some(e)
    }

    /// The order evidence tied on time and offset (one record's evidence for a zone and its
    /// store) is applied in: customer, then scope, as it was buffered.
    fn buffer_order(a: &Evidence, b: &Evidence) -> std::cmp::Ordering {
        (a.at_ms, a.offset, &a.customer, &a.scope).cmp(&(b.at_ms, b.offset, &b.customer, &b.scope))
    }

    /// The reorder buffer and watermark, for the stage to commit.
    pub fn buffered(&self) -> Buffered {
        let mut evidence: Vec<Evidence> = self.pending.values().cloned().collect();
        evidence.sort_by(Self::buffer_order);
        Buffered {
            watermark_ms: self.watermark_ms,
            evidence,
        }
    }

    /// An engine as a stage committed it: its states and buffer (the buffer in any order;
    /// all of it counts as stored).
    pub fn restore(
        params: VisitParams,
        id_key: [u8; 32],
        states: Vec<(Key, State)>,
        buffered: Buffered,
    ) -> VisitEngine {
        let mut engine = VisitEngine::new(params, id_key);
        engine.watermark_ms = buffered.watermark_ms;
        for (key, state) in states {
            let d = engine.deadline(&state);
            engine.deadlines.push(Reverse((d, key.clone())));
            engine.put(
                key,
                Tracked {
                    state,
                    scheduled_ms: d,
                },
            );
        }
        let mut evidence = buffered.evidence;
        evidence.sort_by(Self::buffer_order);
        for e in evidence {
            let i = engine.next_pending;
            engine.next_pending += 1;
            engine.buffer.push(Reverse((e.at_ms, e.offset, i)));
            engine.pending.insert(i, e);
        }
        engine
    }

    /// Forgets a customer (an erasure): their states and the evidence about them still in the
    /// reorder buffer; returns how many of each. The states' removal shows in the next
    /// [`VisitEngine::take_changes`].
    pub fn forget(&mut self, customer: &str) -> (usize, usize) {
        let keys: Vec<Key> = self
            .states
            .keys()
            .filter(|(c, _)| c == customer)
            .cloned()
            .collect();
        for k in &keys {
            self.take(k);
            self.unlist(k);
            self.dirty.insert(k.clone());
        }
        self.deadlines.retain(|Reverse((_, (c, _)))| c != customer);
        let theirs: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, e)| e.customer == customer)
            .map(|(i, _)| *i)
            .collect();
        for i in &theirs {
            self.unbuffer(*i);
        }
        let pending = &self.pending;
        self.buffer
            .retain(|Reverse((_, _, i))| pending.contains_key(i));
        (keys.len(), theirs.len())
    }

    /// Takes evidence seen in the log at `log_ms`; returns what it decided at once: buffered
    /// evidence the window has now passed, then this evidence if the window (or the last
    /// tick) has passed it too. What is applied depends only on this record, the buffer and
    /// the tick watermark, all of which the stage commits, so a replay after a crash decides
    /// the same even where log times step back (records stamped before they were queued).
    pub fn observe(&mut self, evidence: Evidence, log_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        let passed = log_ms - i64::from(self.params.reorder_window_s) * 1000;
        self.release(passed, log_ms, &mut out);
        if evidence.at_ms <= passed.max(self.watermark_ms) {
            // The window has passed it: everything buffered before it was released above, so
            // it comes in event-time order. Behind the last tick (a replayed backlog), it is
            // applied in log order and its visit's overdue deadline waits for the next tick.
            self.apply(evidence, log_ms, &mut out);
        } else {
            let i = self.next_pending;
            self.next_pending += 1;
            self.buffer
                .push(Reverse((evidence.at_ms, evidence.offset, i)));
            self.pending.insert(i, evidence);
            self.unstored.insert(i);
        }
        out
    }

    /// The log's time passed `log_ms` (a tick record): applies buffered evidence and fires
    /// deadlines up to the watermark, in event-time order.
    pub fn tick(&mut self, log_ms: i64) -> Vec<Transition> {
        let mut out = Vec::new();
        self.advance(log_ms, &mut out);
        out
    }

    /// A record at `log_ms`: applies the buffered evidence up to `to` (its log time less the
    /// reorder window), in event-time order.
    fn release(&mut self, to: i64, log_ms: i64, out: &mut Vec<Transition>) {
        while let Some(&Reverse((at_ms, _, i))) = self.buffer.peek() {
            if at_ms > to {
                break;
            }
            self.buffer.pop();
            let evidence = self.unbuffer(i).expect("every buffered index is pending");
            self.apply(evidence, log_ms, out);
        }
    }

    fn advance(&mut self, log_ms: i64, out: &mut Vec<Transition>) {
        let watermark = log_ms - i64::from(self.params.reorder_window_s) * 1000;
        if watermark <= self.watermark_ms {
            return;
        }
        // Evidence and deadlines in event-time order up to the watermark.
        loop {
            let next_evidence = self
                .buffer
                .peek()
                .map(|Reverse((t, _, _))| *t)
                .filter(|t| *t <= watermark);
            let next_deadline = self
                .deadlines
                .peek()
                .map(|Reverse((t, _))| *t)
                .filter(|t| *t <= watermark);
            match (next_evidence, next_deadline) {
                (Some(e), d) if d.is_none_or(|d| e <= d) => {
                    let Reverse((_, _, i)) = self.buffer.pop().expect("peeked");
                    let evidence = self.unbuffer(i).expect("every buffered index is pending");
                    self.watermark_ms = self.watermark_ms.max(evidence.at_ms);
                    self.apply(evidence, log_ms, out);
                }
                (_, Some(d)) => {
                    let Reverse((_, key)) = self.deadlines.pop().expect("peeked");
                    self.watermark_ms = self.watermark_ms.max(d);
                    self.fire(&key, d, log_ms, out);
                }
                _ => break,
            }
        }
        self.watermark_ms = watermark;
    }

    fn transition(
        &self,
        key: &Key,
        visit: &str,
        kind: TransitionKind,
        at_ms: i64,
        log_ms: i64,
        sources: &BTreeSet<Source>,
    ) -> Transition {
        Transition {
            visit: visit.to_owned(),
            customer: key.0.clone(),
            scope: key.1.clone(),
            kind,
            at_ms,
            decided_ms: log_ms,
            late: log_ms - at_ms > i64::from(self.params.max_lateness_s) * 1000,
            sources: sources.clone(),
        }
    }

    /// Applies one evidence. Ahead of the tick watermark, its own key's deadlines before its
    /// time fire first (keys are independent, so each still sees its evidence and deadlines
    /// in event-time order, evidence first on a tie as on a tick; the other keys' deadlines
    /// wait for the tick). Behind it (a backlog, or a tick's own interleaving), it is applied
    /// as it comes.
    fn apply(&mut self, e: Evidence, log_ms: i64, out: &mut Vec<Transition>) {
        let p = self.params;
        let key: Key = (e.customer, e.scope);
        let timeout = i64::from(p.exit_timeout_s) * 1000;
        self.dirty.insert(key.clone());
        let mut tracked = self.take(&key);
        // Rarely due: put back, fired where it lives, taken again.
        while let Some(due) = tracked
            .as_ref()
            .map(|t| t.scheduled_ms)
            .filter(|d| *d < e.at_ms && e.at_ms > self.watermark_ms)
        {
            let t = tracked.take().expect("checked above");
            self.put(key.clone(), t);
            self.fire(&key, due, log_ms, out);
            tracked = self.take(&key);
        }
        let scheduled = tracked.as_ref().map(|t| t.scheduled_ms);
        let next = match (tracked.map(|t| t.state), e.inside) {
            (None, false) => None,
            (Some(closed @ State::Closed { .. }), false) => Some(closed),
            (previous @ (None | Some(State::Closed { .. })), true) => {
                // Evidence from before a remembered exit continues the exited visit.
                let resumed = matches!(
                    previous,
                    Some(State::Closed { exit_ms, .. }) if e.at_ms < exit_ms
                );
                let sources = BTreeSet::from([e.source]);
                if e.source == Source::Qr {
                    let visit = visit_id(&self.id_key, &key.0, &key.1, e.offset);
                    out.push(
                        self.transition(
                            &key,
                            &visit,
                            TransitionKind::Enter,
                            e.at_ms,
                            log_ms,
                            &sources,
                        )
                        .resumed(resumed),
                    );
                    Some(State::Open {
                        visit,
                        entered_ms: e.at_ms,
                        last_ms: e.at_ms,
                        outside_ms: None,
                        milestones: 0,
                        sources,
                        resumed,
                    })
                } else {
                    Some(State::Candidate {
                        first_ms: e.at_ms,
                        last_ms: e.at_ms,
                        opener: e.offset,
                        sources,
                        resumed,
                    })
                }
            }
            // Outside evidence drops a candidate, unless older than its last inside evidence
            // (a phone's late upload of reports it queued).
            (Some(State::Candidate { last_ms, .. }), false) if e.at_ms >= last_ms => None,
            (Some(candidate @ State::Candidate { .. }), false) => Some(candidate),
            (
                Some(State::Candidate {
                    first_ms,
                    last_ms,
                    opener,
                    mut sources,
                    resumed,
                }),
                true,
            ) => {
                let (first_ms, opener, resumed) = if e.at_ms - last_ms > timeout {
                    (e.at_ms, e.offset, false)
                } else {
                    (first_ms, opener, resumed)
                };
                let last_ms = last_ms.max(e.at_ms);
                sources.insert(e.source);
                if last_ms - first_ms >= i64::from(p.enter_after_s) * 1000 || e.source == Source::Qr
                {
                    let visit = visit_id(&self.id_key, &key.0, &key.1, opener);
                    out.push(
                        self.transition(
                            &key,
                            &visit,
                            TransitionKind::Enter,
                            first_ms,
                            log_ms,
                            &sources,
                        )
                        .resumed(resumed),
                    );
                    Some(State::Open {
                        visit,
                        entered_ms: first_ms,
                        last_ms,
                        outside_ms: None,
                        milestones: 0,
                        sources,
                        resumed,
                    })
                } else {
                    Some(State::Candidate {
                        first_ms,
                        last_ms,
                        opener,
                        sources,
                        resumed,
                    })
                }
            }
            (
                Some(State::Open {
                    visit,
                    entered_ms,
                    last_ms,
                    outside_ms,
                    milestones,
                    mut sources,
                    resumed,
                }),
                inside,
            ) => {
                sources.insert(e.source);
                let (last_ms, outside_ms) = if inside {
                    (last_ms.max(e.at_ms), outside_ms.filter(|o| *o > e.at_ms))
                } else if e.at_ms >= last_ms {
                    (
                        last_ms,
                        Some(outside_ms.map_or(e.at_ms, |o| o.min(e.at_ms))),
                    )
                } else {
                    (last_ms, outside_ms)
                };
                Some(State::Open {
                    visit,
                    entered_ms,
                    last_ms,
                    outside_ms,
                    milestones,
                    sources,
                    resumed,
                })
            }
        };
        if let Some(state) = next {
            let d = self.deadline(&state);
            // An earlier queued deadline re-checks the state when it fires; only an earlier
            // one than that needs queueing.
            let scheduled_ms = match scheduled {
                Some(s) if s <= d => s,
                _ => {
                    self.deadlines.push(Reverse((d, key.clone())));
                    d
                }
            };
            self.put(
                key,
                Tracked {
                    state,
                    scheduled_ms,
                },
            );
        } else {
            self.unlist(&key);
        }
    }

    /// When this state next needs the clock: its exit or next milestone, or a candidate's expiry.
    fn deadline(&self, state: &State) -> i64 {
        let p = self.params;
        match state {
            State::Candidate { last_ms, .. } => last_ms + i64::from(p.exit_timeout_s) * 1000,
            State::Open {
                entered_ms,
                last_ms,
                outside_ms,
                milestones,
                ..
            } => {
                let exit = self.exit_at(*last_ms, *outside_ms);
                let milestone = p
                    .dwell_milestones_min
                    .get(usize::from(*milestones))
                    .map(|m| entered_ms + i64::from(*m) * 60_000);
                milestone.map_or(exit, |m| m.min(exit))
            }
            State::Closed { until_ms, .. } => *until_ms,
        }
    }

    fn exit_at(&self, last_ms: i64, outside_ms: Option<i64>) -> i64 {
        let p = self.params;
        let timeout = last_ms + i64::from(p.exit_timeout_s) * 1000;
        match outside_ms {
            Some(o) => timeout.min(o + i64::from(p.exit_grace_s) * 1000),
            None => timeout,
        }
    }

    fn fire(&mut self, key: &Key, due_ms: i64, log_ms: i64, out: &mut Vec<Transition>) {
        match self.states.get(key) {
            Some(t) if t.scheduled_ms == due_ms => {}
            // A stale queue entry: the state has another deadline queued.
            _ => return,
        }
        self.dirty.insert(key.clone());
        let state = self.take(key).expect("checked above").state;
        let next = match state {
            State::Candidate { last_ms, .. }
                if last_ms + i64::from(self.params.exit_timeout_s) * 1000 <= due_ms =>
            {
                None
            }
            State::Closed { until_ms, .. } if until_ms <= due_ms => None,
            State::Open {
                visit,
                entered_ms,
                last_ms,
                outside_ms,
                mut milestones,
                sources,
                resumed,
            } => {
                let exit = self.exit_at(last_ms, outside_ms);
                while let Some(m) = self
                    .params
                    .dwell_milestones_min
                    .get(usize::from(milestones))
                {
                    let at = entered_ms + i64::from(*m) * 60_000;
                    if at > due_ms || at >= exit {
                        break;
                    }
                    out.push(
                        self.transition(
                            key,
                            &visit,
                            TransitionKind::Dwell { minutes: *m },
                            at,
                            log_ms,
                            &sources,
                        )
                        .resumed(resumed),
                    );
                    milestones += 1;
                }
                if exit <= due_ms {
                    let dwell_s = u64::try_from((last_ms - entered_ms) / 1000).unwrap_or(0);
                    out.push(
                        self.transition(
                            key,
                            &visit,
                            TransitionKind::Exit { dwell_s },
                            exit,
                            log_ms,
                            &sources,
                        )
                        .resumed(resumed),
                    );
                    // Remembered, so a backlog's evidence from before the exit is known to
                    // continue this visit.
                    Some(State::Closed {
                        exit_ms: exit,
                        until_ms: log_ms + i64::from(self.params.max_lateness_s) * 1000,
                    })
                } else {
                    Some(State::Open {
                        visit,
                        entered_ms,
                        last_ms,
                        outside_ms,
                        milestones,
                        sources,
                        resumed,
                    })
                }
            }
            other => Some(other),
        };
        if let Some(state) = next {
            let d = self.deadline(&state).max(due_ms + 1);
            self.deadlines.push(Reverse((d, key.clone())));
            self.put(
                key.clone(),
                Tracked {
                    state,
                    scheduled_ms: d,
                },
            );
        } else {
            self.unlist(key);
        }
    }
}

#[cfg(test)]
mod tests;
