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
//!   The enter's time is the first evidence's; evidence older than that, arriving later but
//!   within `exit_timeout_s` of it, moves the start back (a gateway back from an outage sends
//!   what it sees live before its resent backlog). The visit id is derived from the log offset
//!   of the evidence it starts at, so a replay derives the same id.
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

mod kept;
mod params;
mod values;

pub use params::VisitParams;
pub use values::{
    visit_id, Buffered, Evidence, EvidenceId, Key, Scope, Source, State, Transition, TransitionKind,
};

/// A state and the deadline queued for it (later queue entries for the key are stale).
#[derive(Debug, Clone)]
struct Tracked {
    state: State,
    scheduled_ms: i64,
}

/// What an evidence says once its key is taken from it.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ms: i64,
    inside: bool,
    source: Source,
    offset: u64,
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
        let seen = Seen {
            at_ms: e.at_ms,
            inside: e.inside,
            source: e.source,
            offset: e.offset,
        };
        let key: Key = (e.customer, e.scope);
        self.dirty.insert(key.clone());
        let tracked = self.take_firing_own(&key, seen.at_ms, log_ms, out);
        let scheduled = tracked.as_ref().map(|t| t.scheduled_ms);
        match self.on_evidence(&key, tracked.map(|t| t.state), seen, log_ms, out) {
            Some(state) => self.keep(key, state, scheduled),
            None => self.unlist(&key),
        }
    }

    /// Takes `key`'s state, first firing its own deadlines before `at_ms` when that is ahead
    /// of the tick watermark (rarely due: put back, fired where it lives, taken again).
    fn take_firing_own(
        &mut self,
        key: &Key,
        at_ms: i64,
        log_ms: i64,
        out: &mut Vec<Transition>,
    ) -> Option<Tracked> {
        let mut tracked = self.take(key);
        while let Some(due) = tracked
            .as_ref()
            .map(|t| t.scheduled_ms)
            .filter(|d| *d < at_ms && at_ms > self.watermark_ms)
        {
            let t = tracked.take().expect("checked above");
            self.put(key.clone(), t);
            self.fire(key, due, log_ms, out);
            tracked = self.take(key);
        }
        tracked
    }

    /// The state after evidence `e` on `previous` (`None`: nothing is tracked), with the
    /// transition it decides.
    fn on_evidence(
        &self,
        key: &Key,
        previous: Option<State>,
        e: Seen,
        log_ms: i64,
        out: &mut Vec<Transition>,
    ) -> Option<State> {
        let p = self.params;
        let timeout = i64::from(p.exit_timeout_s) * 1000;
        match (previous, e.inside) {
            (None, false) => None,
            (Some(closed @ State::Closed { .. }), false) => Some(closed),
            (previous @ (None | Some(State::Closed { .. })), true) => {
                // Evidence from before a remembered exit continues the exited visit.
                let exit_ms = match previous {
                    Some(State::Closed { exit_ms, .. }) => Some(exit_ms),
                    _ => None,
                };
                let resumed = exit_ms.is_some_and(|x| e.at_ms < x);
                let sources = BTreeSet::from([e.source]);
                if e.source == Source::Qr {
                    let opened = (e.offset, e.at_ms, e.at_ms);
                    Some(self.enter(key, opened, (sources, resumed), log_ms, out))
                } else {
                    Some(State::Candidate {
                        first_ms: e.at_ms,
                        last_ms: e.at_ms,
                        opener: e.offset,
                        sources,
                        resumed,
                        after_exit_ms: exit_ms.filter(|_| !resumed),
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
                    after_exit_ms,
                }),
                true,
            ) => {
                let (first_ms, opener, resumed) = if e.at_ms - last_ms > timeout {
                    (e.at_ms, e.offset, false)
                } else if e.at_ms < first_ms && first_ms - e.at_ms <= timeout {
                    // Older evidence received after newer (a gateway's backlog resent after
                    // what it sent live since it reconnected): the candidate began then —
                    // within a visit exited meanwhile if from before that exit.
                    let before_exit = after_exit_ms.is_some_and(|x| e.at_ms < x);
                    (e.at_ms, e.offset, resumed || before_exit)
                } else {
                    (first_ms, opener, resumed)
                };
                let last_ms = last_ms.max(e.at_ms);
                sources.insert(e.source);
                if last_ms - first_ms >= i64::from(p.enter_after_s) * 1000 || e.source == Source::Qr
                {
                    let opened = (opener, first_ms, last_ms);
                    Some(self.enter(key, opened, (sources, resumed), log_ms, out))
                } else {
                    Some(State::Candidate {
                        first_ms,
                        last_ms,
                        opener,
                        sources,
                        resumed,
                        after_exit_ms,
                    })
                }
            }
            (Some(open @ State::Open { .. }), _) => Some(open_seen(open, e)),
        }
    }

    /// Opens a visit entered at `entered_ms` with its last inside evidence at `last_ms` (its
    /// id from the evidence at log offset `opener`), deciding its enter.
    fn enter(
        &self,
        key: &Key,
        (opener, entered_ms, last_ms): (u64, i64, i64),
        (sources, resumed): (BTreeSet<Source>, bool),
        log_ms: i64,
        out: &mut Vec<Transition>,
    ) -> State {
        let visit = visit_id(&self.id_key, &key.0, &key.1, opener);
        let enter = self.transition(
            key,
            &visit,
            TransitionKind::Enter,
            entered_ms,
            log_ms,
            &sources,
        );
        out.push(enter.resumed(resumed));
        State::Open {
            visit,
            entered_ms,
            last_ms,
            outside_ms: None,
            milestones: 0,
            sources,
            resumed,
        }
    }

    /// Keeps `state` for `key`, queueing its deadline unless the one already queued
    /// (`scheduled`) comes first: an earlier queued deadline re-checks the state when it
    /// fires.
    fn keep(&mut self, key: Key, state: State, scheduled: Option<i64>) {
        let d = self.deadline(&state);
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
            open @ State::Open { .. } => Some(self.open_due(key, open, (due_ms, log_ms), out)),
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

    /// An open visit at its deadline `due_ms`: the dwell milestones reached by then, and its
    /// exit if that is due (then it is remembered as closed).
    fn open_due(
        &self,
        key: &Key,
        open: State,
        (due_ms, log_ms): (i64, i64),
        out: &mut Vec<Transition>,
    ) -> State {
        let State::Open {
            visit,
            entered_ms,
            last_ms,
            outside_ms,
            mut milestones,
            sources,
            resumed,
        } = open
        else {
            return open;
        };
        let exit = self.exit_at(last_ms, outside_ms);
        let decided = |kind, at_ms| {
            self.transition(key, &visit, kind, at_ms, log_ms, &sources)
                .resumed(resumed)
        };
        while let Some(m) = self
            .params
            .dwell_milestones_min
            .get(usize::from(milestones))
        {
            let at = entered_ms + i64::from(*m) * 60_000;
            if at > due_ms || at >= exit {
                break;
            }
            out.push(decided(TransitionKind::Dwell { minutes: *m }, at));
            milestones += 1;
        }
        if exit <= due_ms {
            let dwell_s = u64::try_from((last_ms - entered_ms) / 1000).unwrap_or(0);
            out.push(decided(TransitionKind::Exit { dwell_s }, exit));
            // Remembered, so a backlog's evidence from before the exit is known to continue
            // this visit.
            return State::Closed {
                exit_ms: exit,
                until_ms: log_ms + i64::from(self.params.max_lateness_s) * 1000,
            };
        }
        State::Open {
            visit,
            entered_ms,
            last_ms,
            outside_ms,
            milestones,
            sources,
            resumed,
        }
    }
}

/// An open visit seen again: inside evidence moves its last inside time (and drops an outside
/// mark it is newer than); outside evidence newer than that marks when it was first seen
/// outside.
fn open_seen(open: State, e: Seen) -> State {
    let State::Open {
        visit,
        entered_ms,
        last_ms,
        outside_ms,
        milestones,
        mut sources,
        resumed,
    } = open
    else {
        return open;
    };
    sources.insert(e.source);
    let (last_ms, outside_ms) = if e.inside {
        (last_ms.max(e.at_ms), outside_ms.filter(|o| *o > e.at_ms))
    } else if e.at_ms >= last_ms {
        (
            last_ms,
            Some(outside_ms.map_or(e.at_ms, |o| o.min(e.at_ms))),
        )
    } else {
        (last_ms, outside_ms)
    };
    State::Open {
        visit,
        entered_ms,
        last_ms,
        outside_ms,
        milestones,
        sources,
        resumed,
    }
}

#[cfg(test)]
mod tests;
