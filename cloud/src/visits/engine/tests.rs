use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const S: i64 = 1000;
const T0: i64 = 1_790_000_000_000;

fn ev(
    customer: &str,
    scope: &Scope,
    at_s: i64,
    offset: u64,
    source: Source,
    inside: bool,
) -> Evidence {
    Evidence {
        customer: customer.into(),
        scope: scope.clone(),
        at_ms: T0 + at_s * S,
        offset,
        source,
        inside,
    }
}

fn zone(z: &str) -> Scope {
    Scope::Zone(z.into())
}

/// Feeds evidence (each received 1 s after its time) with ticks every second until `until_s`.
fn run(
    engine: &mut VisitEngine,
    mut evidence: Vec<(i64, Evidence)>,
    until_s: i64,
) -> Vec<Transition> {
    evidence.sort_by_key(|(received, e)| (*received, e.offset));
    let mut out = Vec::new();
    let mut it = evidence.into_iter().peekable();
    for s in 0..=until_s {
        let now = T0 + s * S;
        while let Some((received, _)) = it.peek() {
            if *received > now {
                break;
            }
            let (received, e) = it.next().expect("peeked");
            out.extend(engine.observe(e, received));
        }
        out.extend(engine.tick(now));
    }
    out
}

/// The enters among `ts`.
fn enters(ts: &[Transition]) -> Vec<&Transition> {
    ts.iter()
        .filter(|t| t.kind == TransitionKind::Enter)
        .collect()
}

/// `evidence` all received at `at_s` (a backlog arriving at once).
fn received_at(evidence: Vec<(i64, Evidence)>, at_s: i64) -> impl Iterator<Item = (i64, Evidence)> {
    evidence.into_iter().map(move |(_, e)| (T0 + at_s * S, e))
}

fn kinds(ts: &[Transition]) -> Vec<(String, TransitionKind)> {
    ts.iter()
        .map(|t| (format!("{:?}", t.scope), t.kind.clone()))
        .collect()
}

/// Evidence every `every_s` from `from_s` to `to_s`, received 1 s later.
fn stream(
    customer: &str,
    scope: &Scope,
    from_s: i64,
    to_s: i64,
    every_s: i64,
    source: Source,
    first_offset: u64,
) -> Vec<(i64, Evidence)> {
    (0..)
        .map(|i| from_s + i * every_s)
        .take_while(|t| *t <= to_s)
        .enumerate()
        .map(|(i, t)| {
            (
                T0 + (t + 1) * S,
                ev(customer, scope, t, first_offset + i as u64, source, true),
            )
        })
        .collect()
}

#[test]
fn a_shopper_walking_past_the_door_makes_no_visit() {
    let door = zone("door");
    let mut e = VisitEngine::new(VisitParams::default(), [7; 32]);
    let mut evidence = stream("c1", &door, 0, 8, 4, Source::Gateway, 1);
    // The gateway's exit when it stops hearing the phone.
    evidence.push((T0 + 9 * S, ev("c1", &door, 8, 10, Source::Gateway, false)));
    let out = run(&mut e, evidence, 900);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(e.tracked(), 0);
}

#[test]
fn a_customer_seen_by_a_gateway_and_by_gps_at_once_gets_one_visit() {
    let store = Scope::Store("s1".into());
    let mut e = VisitEngine::new(VisitParams::default(), [7; 32]);
    let mut evidence = stream("c1", &store, 0, 120, 10, Source::Gateway, 1);
    evidence.extend(stream("c1", &store, 5, 125, 20, Source::App, 100));
    let out = run(&mut e, evidence, 1000);
    let enters = enters(&out);
    assert_eq!(enters.len(), 1, "{out:?}");
    let exit = out
        .iter()
        .find(|t| matches!(t.kind, TransitionKind::Exit { .. }))
        .expect("exit");
    assert_eq!(exit.sources, BTreeSet::from([Source::Gateway, Source::App]));
    assert_eq!(exit.visit, enters[0].visit);
}

#[test]
fn an_eid_rotation_in_a_40_minute_stay_gives_one_visit_of_40_minutes() {
    // Identity resolution maps the old and the new EID to one customer before the engine.
    let z = zone("floor");
    let mut e = VisitEngine::new(VisitParams::default(), [7; 32]);
    let evidence = stream("c1", &z, 0, 2400, 30, Source::Gateway, 1);
    let out = run(&mut e, evidence, 3000);
    assert_eq!(
        kinds(&out),
        vec![
            (format!("{z:?}"), TransitionKind::Enter),
            (format!("{z:?}"), TransitionKind::Dwell { minutes: 5 }),
            (format!("{z:?}"), TransitionKind::Dwell { minutes: 10 }),
            (format!("{z:?}"), TransitionKind::Dwell { minutes: 20 }),
            (format!("{z:?}"), TransitionKind::Dwell { minutes: 30 }),
            (format!("{z:?}"), TransitionKind::Exit { dwell_s: 2400 }),
        ]
    );
    assert!(out.iter().all(|t| t.visit == out[0].visit && !t.late));
    assert_eq!(out[0].at_ms, T0, "the visit began with the first evidence");
}

#[test]
fn two_gateways_hearing_one_phone_give_one_visit() {
    let z = zone("floor");
    let mut e = VisitEngine::new(VisitParams::default(), [7; 32]);
    let mut evidence = stream("c1", &z, 0, 300, 15, Source::Gateway, 1);
    evidence.extend(stream("c1", &z, 7, 307, 15, Source::Gateway, 1000));
    let out = run(&mut e, evidence, 1000);
    assert_eq!(enters(&out).len(), 1);
    assert_eq!(
        out.iter()
            .filter(|t| matches!(t.kind, TransitionKind::Exit { .. }))
            .count(),
        1
    );
}

#[test]
fn outside_evidence_ends_a_visit_after_the_grace_period() {
    let z = zone("geo");
    let p = VisitParams::default();
    let mut e = VisitEngine::new(p, [7; 32]);
    let mut evidence = stream("c1", &z, 0, 100, 10, Source::App, 1);
    evidence.push((T0 + 111 * S, ev("c1", &z, 110, 50, Source::App, false)));
    let out = run(&mut e, evidence, 1000);
    let exit = out.last().expect("an exit");
    assert!(
        matches!(exit.kind, TransitionKind::Exit { dwell_s: 100 }),
        "{exit:?}"
    );
    assert_eq!(exit.at_ms, T0 + (110 + i64::from(p.exit_grace_s)) * S);
}

#[test]
fn a_replayed_backlog_is_late_and_derives_the_same_ids() {
    let z = zone("floor");
    let make = || stream("c1", &z, 0, 600, 30, Source::Gateway, 1);
    let mut live = VisitEngine::new(VisitParams::default(), [7; 32]);
    let on_time = run(&mut live, make(), 1500);
    // The same events received an hour later, all at once (an outage replayed).
    let mut replay = VisitEngine::new(VisitParams::default(), [7; 32]);
    let late: Vec<_> = received_at(make(), 3600).collect();
    let out = run(&mut replay, late, 4000);
    assert_eq!(kinds(&out), kinds(&on_time));
    assert!(out.iter().all(|t| t.late), "{out:?}");
    assert!(on_time.iter().all(|t| !t.late));
    assert!(out
        .iter()
        .zip(&on_time)
        .all(|(a, b)| a.visit == b.visit && a.at_ms == b.at_ms));
}

proptest! {
    /// Events out of order within the reorder window give the same transitions as in order.
    #[test]
    fn out_of_order_events_within_the_window_change_nothing(delays in proptest::collection::vec(0i64..9, 40), gap_at in 5usize..35, gap_s in 0i64..700) {
        let z = zone("floor");
        let mut base = Vec::new();
        let mut t = 0;
        for i in 0..40u64 {
            t += if i as usize == gap_at { gap_s } else { 20 };
            base.push(ev("c1", &z, t, i + 1, Source::Gateway, true));
        }
        let in_order: Vec<_> = base.iter().map(|e| (e.at_ms + S, e.clone())).collect();
        let shuffled: Vec<_> = base.iter().zip(&delays).map(|(e, d)| (e.at_ms + S + d * S, e.clone())).collect();
        let end = t + 2000;
        let a = run(&mut VisitEngine::new(VisitParams::default(), [7; 32]), in_order, end);
        let b = run(&mut VisitEngine::new(VisitParams::default(), [7; 32]), shuffled, end);
        let strip = |v: Vec<Transition>| v.into_iter().map(|t| (t.visit, t.kind, t.at_ms)).collect::<Vec<_>>();
        prop_assert_eq!(strip(a), strip(b));
    }
}

#[test]
fn an_engine_restored_mid_visit_decides_as_if_it_never_stopped() {
    let z = zone("floor");
    let evidence = stream("c1", &z, 0, 900, 30, Source::Gateway, 1);
    let whole = run(
        &mut VisitEngine::new(VisitParams::default(), [7; 32]),
        evidence.clone(),
        2000,
    );
    // Stop after 400 s of log time: keep only what the stage would have committed.
    let mut first = VisitEngine::new(VisitParams::default(), [7; 32]);
    let (before, after): (Vec<_>, Vec<_>) =
        evidence.into_iter().partition(|(r, _)| *r <= T0 + 400 * S);
    let mut out = run(&mut first, before, 400);
    let states: Vec<(Key, State)> = first
        .take_changes()
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
    let mut second =
        VisitEngine::restore(VisitParams::default(), [7; 32], states, first.buffered());
    let mut it = after.into_iter().peekable();
    for s in 401..=2000 {
        let now = T0 + s * S;
        while it.peek().is_some_and(|(r, _)| *r <= now) {
            let (r, e) = it.next().unwrap();
            out.extend(second.observe(e, r));
        }
        out.extend(second.tick(now));
    }
    assert_eq!(out, whole);
}

#[test]
fn a_forgotten_customer_leaves_nothing_and_the_others_go_on_as_before() {
    let z = zone("floor");
    let mut both = stream("c1", &z, 0, 900, 30, Source::Gateway, 1);
    both.extend(stream("c2", &z, 0, 900, 30, Source::App, 1000));
    let alone = run(
        &mut VisitEngine::new(VisitParams::default(), [7; 32]),
        stream("c2", &z, 0, 900, 30, Source::App, 1000),
        2000,
    );
    // c1 is erased mid-visit, with evidence about them still in the reorder buffer.
    let mut engine = VisitEngine::new(VisitParams::default(), [7; 32]);
    let (before, after): (Vec<_>, Vec<_>) = both.into_iter().partition(|(r, _)| *r <= T0 + 400 * S);
    let mut out = run(&mut engine, before, 400);
    engine.observe(ev("c1", &z, 399, 999, Source::Gateway, true), T0 + 400 * S);
    engine.take_changes();
    let (states, evidence) = engine.forget("c1");
    assert!(
        states >= 1 && evidence >= 1,
        "{states} states, {evidence} evidence"
    );
    assert!(engine
        .take_changes()
        .iter()
        .all(|((c, _), s)| c == "c1" && s.is_none()));
    assert!(engine
        .buffered()
        .evidence
        .iter()
        .all(|e| e.customer != "c1"));
    out.retain(|t| t.customer == "c2");
    let after: Vec<_> = after
        .into_iter()
        .filter(|(_, e)| e.customer == "c2")
        .collect();
    let mut it = after.into_iter().peekable();
    for s in 401..=2000 {
        let now = T0 + s * S;
        while it.peek().is_some_and(|(r, _)| *r <= now) {
            let (r, e) = it.next().unwrap();
            out.extend(engine.observe(e, r));
        }
        out.extend(engine.tick(now));
    }
    assert_eq!(out, alone);
    assert_eq!(engine.tracked(), 0);
}

#[test]
fn a_qr_check_in_opens_a_visit_at_once_and_it_exits_after_the_timeout() {
    let z = Scope::Store("s1".into());
    let mut engine = VisitEngine::new(VisitParams::default(), [7; 32]);
    let out = run(
        &mut engine,
        vec![(T0 + 2 * S, ev("c1", &z, 1, 1, Source::Qr, true))],
        1000,
    );
    let kinds = kinds(&out);
    assert_eq!(kinds[0].1, TransitionKind::Enter, "{out:?}");
    assert_eq!(out[0].at_ms, T0 + S);
    assert!(out[0].sources.contains(&Source::Qr));
    let exit_s = i64::from(VisitParams::default().exit_timeout_s);
    assert!(
        matches!(kinds.last(), Some((_, TransitionKind::Exit { .. }))),
        "{out:?}"
    );
    assert_eq!(
        out.last().unwrap().at_ms,
        T0 + S + exit_s * S,
        "exits an exit timeout after the check-in"
    );
    // A gateway's single sighting does not open one.
    let mut engine = VisitEngine::new(VisitParams::default(), [7; 32]);
    let out = run(
        &mut engine,
        vec![(T0 + 2 * S, ev("c1", &z, 1, 1, Source::Gateway, true))],
        1000,
    );
    assert!(out.is_empty(), "{out:?}");
}

/// A gateway's outbox after an outage arrives batch by batch, with ticks between: a tick can
/// exit the visit before the next batch shows the customer was still there. The piece that
/// batch starts is late however recent it is, so a campaign acts once on the whole stay.
#[test]
fn a_backlog_received_over_several_ticks_never_gives_a_second_timely_enter() {
    let z = zone("floor");
    let params = VisitParams::default();
    // Present from 0 s to 1800 s; the cloud is up until 100 s and back at 1800 s, when the
    // gateway's backlog (100..1800 s) arrives in six batches, one a second.
    let all = stream("c1", &z, 0, 1800, 30, Source::Gateway, 1);
    let (live, backlog): (Vec<_>, Vec<_>) = all.into_iter().partition(|(r, _)| *r <= T0 + 100 * S);
    let mut engine = VisitEngine::new(params, [7; 32]);
    let mut out = run(&mut engine, live, 100);
    let batches = backlog.chunks(backlog.len().div_ceil(6));
    for (i, batch) in batches.enumerate() {
        let now = T0 + (1800 + i as i64) * S;
        for (_, e) in batch {
            out.extend(engine.observe(e.clone(), now));
        }
        out.extend(engine.tick(now + S / 2));
    }
    for s in 1806..=3000 {
        out.extend(engine.tick(T0 + s * S));
    }
    let enters = enters(&out);
    assert!(
        enters.len() > 1,
        "the backlog did not split the visit: {out:?}"
    );
    // The last pieces started within max_lateness_s of their decision: late only as resumed.
    assert!(
        enters
            .iter()
            .any(|t| t.decided_ms - t.at_ms <= i64::from(params.max_lateness_s) * S),
        "{enters:?}"
    );
    // Only the live enter is timely: every transition decided from the backlog is late.
    let timely: Vec<Transition> = out.iter().filter(|t| !t.late).cloned().collect();
    assert_eq!(kinds(&timely), kinds(&out[..1]), "{out:?}");
    // An exit is remembered only until max_lateness_s after it.
    assert_eq!(engine.tracked(), 0);
    assert!(engine.states.is_empty(), "{:?}", engine.states);
}

/// A customer who really leaves and comes back after the exit gets a new, timely visit.
#[test]
fn a_return_after_the_exit_is_a_new_visit() {
    let z = zone("floor");
    let mut evidence = stream("c1", &z, 0, 120, 30, Source::Gateway, 1);
    evidence.extend(stream("c1", &z, 800, 900, 30, Source::Gateway, 100));
    let out = run(
        &mut VisitEngine::new(VisitParams::default(), [7; 32]),
        evidence,
        2000,
    );
    let enters = enters(&out);
    assert_eq!(enters.len(), 2, "{out:?}");
    assert!(out.iter().all(|t| !t.late), "{out:?}");
}

/// The live scopes are the candidates and open visits, whatever happened since: gone when a
/// visit exits or a candidate lapses, and the same in an engine restored from the states.
#[test]
fn live_scopes_follow_candidates_and_open_visits() {
    let p = VisitParams::default();
    let mut engine = VisitEngine::new(p, [7; 32]);
    let live = |e: &VisitEngine, c: &str| e.live_scopes(c).cloned().collect::<Vec<_>>();
    let store = Scope::Store("s1".into());
    let mut evidence = stream("c1", &zone("a"), 0, 500, 10, Source::App, 0);
    evidence.extend(stream("c1", &store, 0, 500, 10, Source::App, 0));
    evidence.push((
        T0 + 501 * S,
        ev("c2", &zone("b"), 500, 900, Source::App, true),
    ));
    run(&mut engine, evidence, 510);
    assert_eq!(live(&engine, "c1"), [zone("a"), store.clone()]);
    assert_eq!(live(&engine, "c2"), [zone("b")]);
    let states: Vec<(Key, State)> = engine
        .take_changes()
        .into_iter()
        .filter_map(|(k, s)| s.map(|s| (k, s)))
        .collect();
    let mut restored = VisitEngine::restore(p, [7; 32], states, engine.buffered());
    assert_eq!(live(&restored, "c1"), [zone("a"), store]);
    assert_eq!(live(&restored, "c2"), [zone("b")]);
    // c1 exits (timeout after its last evidence), c2's candidate lapses: nothing is live.
    for s in 511..=1200 {
        restored.tick(T0 + s * S);
    }
    assert!(live(&restored, "c1").is_empty() && live(&restored, "c2").is_empty());
    assert!(restored.live.is_empty(), "{:?}", restored.live);
}

/// What `live` must always be: the keys whose state is a candidate or an open visit.
fn live_from_states(engine: &VisitEngine) -> HashMap<String, BTreeSet<Scope>> {
    let mut out: HashMap<String, BTreeSet<Scope>> = HashMap::default();
    for ((customer, scope), t) in &engine.states {
        if !matches!(t.state, State::Closed { .. }) {
            out.entry(customer.clone())
                .or_default()
                .insert(scope.clone());
        }
    }
    out
}

proptest! {
    /// Whatever evidence arrives (three customers, two scopes, inside and outside, at any
    /// time), the live scopes are at every tick exactly the candidates and open visits, and
    /// the open count is the open visits.
    #[test]
    fn live_scopes_are_always_the_candidates_and_open_visits(
        evidence in proptest::collection::vec((0usize..3, 0usize..2, 0i64..1500, any::<bool>()), 1..60),
    ) {
        let customers = ["c1", "c2", "c3"];
        let scopes = [zone("a"), Scope::Store("s1".into())];
        let mut engine = VisitEngine::new(VisitParams::default(), [7; 32]);
        let mut evidence: Vec<(i64, Evidence)> = evidence
            .into_iter()
            .enumerate()
            .map(|(i, (c, z, at, inside))| {
                (T0 + (at + 1) * S, ev(customers[c], &scopes[z], at, i as u64, Source::App, inside))
            })
            .collect();
        evidence.sort_by_key(|(r, e)| (*r, e.offset));
        let mut it = evidence.into_iter().peekable();
        for s in 0..=2500 {
            let now = T0 + s * S;
            while it.peek().is_some_and(|(r, _)| *r <= now) {
                let (r, e) = it.next().expect("peeked");
                engine.observe(e, r);
            }
            engine.tick(now);
            prop_assert_eq!(&engine.live, &live_from_states(&engine));
            let open = engine.states.values().filter(|t| matches!(t.state, State::Open { .. })).count();
            prop_assert_eq!(engine.open(), open);
        }
    }
}

/// A phone uploading reports it queued: outside evidence older than a candidate's last inside
/// evidence does not drop it (newer outside evidence does).
#[test]
fn old_outside_evidence_does_not_drop_a_newer_candidate() {
    let z = zone("wifi");
    let p = VisitParams::default();
    let mut evidence = stream("c1", &z, 1000, 1060, 10, Source::App, 0);
    // Received late (well past the reorder window), from before the candidate began.
    evidence.push((T0 + 1015 * S, ev("c1", &z, 500, 100, Source::App, false)));
    let out = run(&mut VisitEngine::new(p, [7; 32]), evidence.clone(), 1100);
    assert_eq!(
        kinds(&out),
        [(format!("{z:?}"), TransitionKind::Enter)],
        "the candidate went on to enter"
    );
    assert_eq!(out[0].at_ms, T0 + 1000 * S, "entered at its first evidence");
    // Outside evidence after the candidate's last inside one drops it.
    let mut dropped = stream("c1", &z, 1000, 1010, 10, Source::App, 0);
    dropped.push((T0 + 1016 * S, ev("c1", &z, 1015, 100, Source::App, false)));
    dropped.extend(stream("c1", &z, 1020, 1030, 10, Source::App, 10));
    let out = run(&mut VisitEngine::new(p, [7; 32]), dropped, 1100);
    assert!(out.is_empty(), "{out:?}");
}

/// A gateway back from a broker outage sends what it sees live at once and its backlog only
/// when the backlog's first send (lost while nobody was subscribed) is resent: the newer
/// evidence opens a candidate first, and the older evidence that follows moves the candidate's
/// start back to it, so the stay is entered at its beginning (not missed, as it was when a
/// candidate only ever grew forwards).
#[test]
fn a_backlog_received_after_newer_evidence_still_enters_the_stay_at_its_start() {
    let store = Scope::Store("s2".into());
    let p = VisitParams::default();
    // Seen live at 410 s (received at 411 s), then the backlog 110..350 s, received at 470 s.
    let mut evidence = vec![(
        T0 + 411 * S,
        ev("c1", &store, 410, 50, Source::Gateway, true),
    )];
    evidence.extend(received_at(
        stream("c1", &store, 110, 350, 60, Source::Gateway, 60),
        470,
    ));
    let out = run(&mut VisitEngine::new(p, [7; 32]), evidence, 1200);
    let enters = enters(&out);
    assert_eq!(enters.len(), 1, "{out:?}");
    assert_eq!(
        enters[0].at_ms,
        T0 + 110 * S,
        "entered at its earliest evidence"
    );
    assert_eq!(enters[0].decided_ms, T0 + 470 * S);
    assert!(!enters[0].late, "{out:?}");
    // Exited the timeout after the last evidence (410 s), with the dwell from 110 s.
    assert_eq!(
        out.last().map(|t| (t.kind.clone(), t.at_ms)),
        Some((TransitionKind::Exit { dwell_s: 300 }, T0 + 710 * S)),
        "{out:?}"
    );
    // A backlog reaching further back than the exit timeout before the live evidence starts
    // where it comes within it (its older pieces arrive while the candidate starts at 410 s).
    let mut longer = vec![(
        T0 + 411 * S,
        ev("c1", &store, 410, 50, Source::Gateway, true),
    )];
    longer.extend(received_at(
        stream("c1", &store, 50, 350, 60, Source::Gateway, 60),
        470,
    ));
    let out = run(&mut VisitEngine::new(p, [7; 32]), longer, 1200);
    assert_eq!(out[0].kind, TransitionKind::Enter, "{out:?}");
    assert_eq!(out[0].at_ms, T0 + 110 * S, "{out:?}");
    // Older evidence past a silence longer than the exit timeout is no part of the candidate.
    let mut far = vec![(
        T0 + 1001 * S,
        ev("c1", &store, 1000, 50, Source::Gateway, true),
    )];
    far.push((
        T0 + 1002 * S,
        ev("c1", &store, 600, 51, Source::Gateway, true),
    ));
    let out = run(&mut VisitEngine::new(p, [7; 32]), far, 1400);
    assert!(out.is_empty(), "{out:?}");
}

/// A visit exited during an outage, live evidence after the exit, then the backlog from
/// before it: the backlog moves the new candidate's start back into the exited visit, so what
/// it enters is a resumed piece (late), never a second timely enter for one stay.
#[test]
fn a_backlog_from_before_a_remembered_exit_moves_a_candidate_back_only_as_a_resumed_piece() {
    let store = Scope::Store("s1".into());
    let p = VisitParams::default();
    // Entered live (0..100 s); the outage exits it at 400 s; live again at 450 s; then the
    // backlog 160..440 s, received at 510 s.
    let mut evidence = stream("c1", &store, 0, 100, 10, Source::Gateway, 1);
    evidence.push((
        T0 + 451 * S,
        ev("c1", &store, 450, 50, Source::Gateway, true),
    ));
    evidence.extend(received_at(
        stream("c1", &store, 160, 440, 20, Source::Gateway, 60),
        510,
    ));
    let out = run(&mut VisitEngine::new(p, [7; 32]), evidence, 1500);
    let enters = enters(&out);
    assert_eq!(enters.len(), 2, "{out:?}");
    assert!(!enters[0].late && enters[0].at_ms == T0, "{out:?}");
    assert_eq!(enters[1].at_ms, T0 + 160 * S, "{out:?}");
    assert!(
        enters[1].late,
        "a second timely enter for one stay: {out:?}"
    );
}

/// An enter is decided by the first record whose log time is the reorder window past the
/// evidence that completes `enter_after_s`, not by the next tick.
#[test]
fn the_record_that_passes_the_window_decides_the_enter() {
    let z = zone("floor");
    let p = VisitParams::default();
    let window = i64::from(p.reorder_window_s) * S;
    let mut engine = VisitEngine::new(p, [7; 32]);
    assert!(engine.tick(T0).is_empty());
    // Inside evidence at 0 s and 20 s (enter_after_s), received at once.
    assert!(engine
        .observe(ev("c1", &z, 0, 1, Source::Gateway, true), T0)
        .is_empty());
    assert!(engine
        .observe(ev("c1", &z, 20, 2, Source::Gateway, true), T0 + 20 * S)
        .is_empty());
    // Another customer's record 300 ms after the window passed 20 s: no tick since 0 s.
    let decided_ms = T0 + 20 * S + window + 300;
    let out = engine.observe(ev("c2", &z, 30, 3, Source::Gateway, true), decided_ms);
    assert_eq!(kinds(&out), [(format!("{z:?}"), TransitionKind::Enter)]);
    assert_eq!((out[0].at_ms, out[0].decided_ms), (T0, decided_ms));
    assert!(!out[0].late);
}

/// A key's own deadline fires before its newer evidence, however long since the last tick:
/// a silence longer than `exit_timeout_s` ends the visit and the next evidence starts a
/// candidate for a new one.
#[test]
fn evidence_after_a_due_exit_waits_for_that_exit_without_a_tick() {
    let z = zone("floor");
    let p = VisitParams::default();
    let mut engine = VisitEngine::new(p, [7; 32]);
    let mut out = run(
        &mut engine,
        stream("c1", &z, 0, 60, 10, Source::Gateway, 1),
        100,
    );
    // No tick after 100 s; the shopper comes back at 1000 s (exit due at 60 + 300 s).
    let back = T0 + 1000 * S;
    let window = i64::from(p.reorder_window_s) * S;
    out.extend(engine.observe(ev("c1", &z, 1000, 50, Source::Gateway, true), back));
    out.extend(engine.observe(ev("c2", &z, 1000, 51, Source::Gateway, true), back + window));
    assert_eq!(
        kinds(&out),
        [
            (format!("{z:?}"), TransitionKind::Enter),
            (format!("{z:?}"), TransitionKind::Dwell { minutes: 5 }),
            (format!("{z:?}"), TransitionKind::Exit { dwell_s: 60 }),
        ],
        "{out:?}"
    );
    assert_eq!(out[2].at_ms, T0 + 360 * S);
    assert!(matches!(
        engine.state(&("c1".into(), z.clone())),
        Some(State::Candidate { first_ms, .. }) if *first_ms == back
    ));
}

/// A transition as one key sees it: visit, kind and time.
type KeyTransition = (String, TransitionKind, i64);

/// Feeds records in received order, ticking every `tick_s`; `per_record` false holds evidence
/// back until the tick (as if released only there): the schedule before records moved the
/// engine's time.
fn run_records(
    evidence: &[(i64, Evidence)],
    until_s: i64,
    tick_s: i64,
    per_record: bool,
) -> Vec<Transition> {
    let mut engine = VisitEngine::new(VisitParams::default(), [7; 32]);
    let mut out = Vec::new();
    let mut it = evidence.iter().peekable();
    let mut last_tick = T0 - S;
    for s in (0..=until_s).step_by(usize::try_from(tick_s).expect("positive")) {
        let now = T0 + s * S;
        while let Some((received, e)) = it.next_if(|(r, _)| *r <= now) {
            let log_ms = if per_record { *received } else { last_tick };
            out.extend(engine.observe(e.clone(), log_ms));
        }
        out.extend(engine.tick(now));
        last_tick = now;
    }
    out
}

proptest! {
    /// Releasing evidence record by record gives every key the transitions (visit, kind, time)
    /// it would get with evidence released only on ticks, and as with no reordering at all:
    /// three customers, two scopes, inside and outside evidence with silences past the exit
    /// timeout, each received up to 9.9 s after its time at any millisecond; ticks every
    /// second or, as when the log's writer lags, up to a minute apart.
    #[test]
    fn releasing_on_records_decides_what_ticks_alone_would(
        evidence in proptest::collection::vec((0usize..3, 0usize..2, 1i64..120, 0u8..10, 0i64..9_900), 1..80),
        tick_s in prop_oneof![Just(1i64), 2i64..60],
    ) {
        let customers = ["c1", "c2", "c3"];
        let scopes = [zone("a"), Scope::Store("s1".into())];
        let mut at = [0i64; 3];
        let mut records = Vec::new();
        let mut in_order = Vec::new();
        for (i, (c, z, gap_s, kind, delay_ms)) in evidence.into_iter().enumerate() {
            // Mostly short gaps; one in ten a silence past exit_timeout_s; one in five outside.
            at[c] += if kind == 0 { 400 + gap_s } else { gap_s / 4 + 1 };
            let e = ev(customers[c], &scopes[z], at[c], i as u64, Source::App, kind % 5 != 1);
            in_order.push((e.at_ms, e.clone()));
            records.push((e.at_ms + delay_ms, e));
        }
        records.sort_by_key(|(r, e)| (*r, e.offset));
        in_order.sort_by_key(|(r, e)| (*r, e.offset));
        let until = at.iter().max().copied().unwrap_or(0) + 2000;
        let by_key = |v: Vec<Transition>| {
            let mut m: BTreeMap<(String, String), Vec<KeyTransition>> = BTreeMap::new();
            for t in v {
                m.entry((t.customer, format!("{:?}", t.scope))).or_default().push((t.visit, t.kind, t.at_ms));
            }
            m
        };
        let on_records = by_key(run_records(&records, until, tick_s, true));
        prop_assert_eq!(&on_records, &by_key(run_records(&records, until, tick_s, false)));
        prop_assert_eq!(&on_records, &by_key(run_records(&in_order, until, 1, true)));
    }
}

/// One record of the log: evidence at its log time, or a tick.
#[derive(Debug, Clone)]
enum Logged {
    Seen(Evidence, i64),
    Tick(i64),
}

fn feed(engine: &mut VisitEngine, log: &[Logged]) -> Vec<Transition> {
    let mut out = Vec::new();
    for r in log {
        out.extend(match r {
            Logged::Seen(e, log_ms) => engine.observe(e.clone(), *log_ms),
            Logged::Tick(log_ms) => engine.tick(*log_ms),
        });
    }
    out
}

proptest! {
    /// An engine stopped after any record and restored from what the stage commits (its
    /// states, buffer and watermark) decides exactly what one that never stopped decides, even
    /// where log times step back (app records are stamped before they are queued) and
    /// evidence comes later than the window.
    #[test]
    fn a_restore_after_any_record_changes_nothing_even_where_log_times_step_back(
        evidence in proptest::collection::vec((0usize..2, 0usize..2, 1i64..60, any::<bool>(), 0i64..14_000, 0i64..3_000), 1..60),
        stop_at in 0usize..200,
    ) {
        let customers = ["c1", "c2"];
        let scopes = [zone("a"), Scope::Store("s1".into())];
        let mut at = [0i64; 2];
        // (position in the log, record): evidence logged at its time plus a delay, placed in
        // the log as if queued `queued` ms later; ticks every second.
        let mut log: Vec<(i64, Logged)> = Vec::new();
        for (i, (c, z, gap_s, inside, delay_ms, queued_ms)) in evidence.into_iter().enumerate() {
            at[c] += gap_s * if gap_s > 50 { 10 } else { 1 };
            let e = ev(customers[c], &scopes[z], at[c], i as u64, Source::App, inside || gap_s % 7 != 0);
            let log_ms = e.at_ms + delay_ms;
            log.push((log_ms + queued_ms, Logged::Seen(e, log_ms)));
        }
        let end = at.iter().max().copied().unwrap_or(0) + 1000;
        for s in 0..=end {
            log.push((T0 + s * S, Logged::Tick(T0 + s * S)));
        }
        log.sort_by_key(|(position, r)| (*position, matches!(r, Logged::Tick(_))));
        let log: Vec<Logged> = log.into_iter().map(|(_, r)| r).collect();
        let params = VisitParams::default();
        let whole = feed(&mut VisitEngine::new(params, [7; 32]), &log);
        let stop = stop_at.min(log.len());
        let mut first = VisitEngine::new(params, [7; 32]);
        let mut out = feed(&mut first, &log[..stop]);
        let (states, buffered) = first.snapshot();
        let mut second = VisitEngine::restore(params, [7; 32], states, buffered);
        out.extend(feed(&mut second, &log[stop..]));
        prop_assert_eq!(out, whole);
    }
}
