//! Presence engine tests on synthetic traces: RSSI from the log-distance model with Gaussian
//! noise and packet loss, seeded so every run is the same.

use super::*;
use omo_device_config::params::Smoothing;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const P1M: f64 = -59.0;

fn beacon() -> BeaconId {
    "line:016a4b2c3d".parse().unwrap()
}

/// Sightings of one beacon advertising every `interval_ms` from `start_ms` to `end_ms` at the
/// distance `distance(t)`, with noise σ and packet loss.
fn trace(
    seed: u64,
    (start_ms, end_ms, interval_ms): (i64, i64, i64),
    distance: impl Fn(i64) -> f64,
    sigma_db: f64,
    loss: f64,
) -> Vec<Sighting> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut t = start_ms;
    while t < end_ms {
        if rng.random::<f64>() >= loss {
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            let noise = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
            let rssi = P1M - 22.0 * distance(t).log10() + sigma_db * noise;
            out.push(Sighting {
                beacon: beacon(),
                rssi: rssi.round(),
                measured_power_1m: Some(P1M),
                at_ms: t,
            });
        }
        t += interval_ms;
    }
    out
}

/// Runs a trace through an engine, ticking every second like the daemon, until `end_ms`.
fn run(params: &PresenceParams, sightings: &[Sighting], end_ms: i64) -> Vec<Transition> {
    let mut engine = PresenceEngine::new(params);
    let mut out = Vec::new();
    let mut next_tick = 0;
    for s in sightings {
        while next_tick < s.at_ms {
            engine.advance(next_tick, &mut out);
            next_tick += 1000;
        }
        engine.observe(s, &mut out);
    }
    while next_tick <= end_ms {
        engine.advance(next_tick, &mut out);
        next_tick += 1000;
    }
    out
}

fn kinds(ts: &[Transition]) -> Vec<SightingKind> {
    ts.iter().map(|t| t.kind).collect()
}

#[test]
fn shopper_standing_at_3m_for_10_minutes() {
    for smoothing in [Smoothing::Kalman, Smoothing::Ema] {
        for seed in 0..20 {
            let params = PresenceParams {
                smoothing,
                ..PresenceParams::default()
            };
            let sightings = trace(seed, (0, 600_000, 1000), |_| 3.0, 6.0, 0.2);
            let out = run(&params, &sightings, 700_000);
            let enters: Vec<_> = out
                .iter()
                .filter(|t| t.kind == SightingKind::Enter)
                .collect();
            let exits: Vec<_> = out
                .iter()
                .filter(|t| t.kind == SightingKind::Exit)
                .collect();
            assert_eq!(
                (enters.len(), exits.len()),
                (1, 1),
                "{smoothing:?} seed {seed}: {:?}",
                kinds(&out)
            );
            let (enter, exit) = (enters[0], exits[0]);
            assert!(
                (10_000..=20_000).contains(&enter.at_ms),
                "enter at {}",
                enter.at_ms
            );
            let last_seen = sightings.last().unwrap().at_ms;
            assert_eq!(
                exit.at_ms,
                last_seen + 30_000,
                "exit by timeout after the last sighting"
            );
            assert_eq!(exit.seen_s, (last_seen - enter.at_ms) as f64 / 1000.0);
            // One stay every 60 s from enter until exit, none after.
            let stays: Vec<_> = out
                .iter()
                .filter(|t| t.kind == SightingKind::Stay)
                .collect();
            let expected = (exit.at_ms - enter.at_ms - 1) / 60_000;
            assert_eq!(stays.len() as i64, expected, "{smoothing:?} seed {seed}");
            for (i, s) in stays.iter().enumerate() {
                assert_eq!(s.at_ms, enter.at_ms + 60_000 * (i as i64 + 1));
                assert_eq!(s.seen_s, 60.0 * (i + 1) as f64);
            }
            assert!(
                out.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
                "time order"
            );
            assert!(
                (1.0..=9.0).contains(&stays[0].distance_m),
                "distance {}",
                stays[0].distance_m
            );
        }
    }
}

#[test]
fn walk_past_the_door_is_not_an_enter() {
    for seed in 0..50 {
        // In range for 8 s (passing within 2 m of the door), then gone.
        let sightings = trace(
            seed,
            (0, 8_000, 200),
            |t| 2.0 + (t as f64 / 1000.0 - 4.0).abs(),
            6.0,
            0.2,
        );
        let out = run(&PresenceParams::default(), &sightings, 60_000);
        assert!(out.is_empty(), "seed {seed}: {:?}", kinds(&out));
    }
}

#[test]
fn walking_away_exits_on_low_rssi_before_the_timeout() {
    // Close for 2 minutes, then 60 m away but still faintly heard.
    let sightings = trace(
        3,
        (0, 300_000, 1000),
        |t| if t < 120_000 { 2.0 } else { 60.0 },
        3.0,
        0.0,
    );
    let out = run(&PresenceParams::default(), &sightings, 300_000);
    assert_eq!(kinds(&out)[0], SightingKind::Enter);
    let exit = out
        .iter()
        .find(|t| t.kind == SightingKind::Exit)
        .expect("an exit");
    assert!(
        (120_000..170_000).contains(&exit.at_ms),
        "exit at {}",
        exit.at_ms
    );
    assert!(
        exit.seen_s < 150.0,
        "dwell ends when the signal faded: {}",
        exit.seen_s
    );
    assert_eq!(
        out.iter().filter(|t| t.kind == SightingKind::Enter).count(),
        1
    );
}

#[test]
fn coming_back_after_exit_is_a_new_presence() {
    let mut sightings = trace(5, (0, 60_000, 1000), |_| 2.0, 2.0, 0.0);
    sightings.extend(trace(6, (200_000, 260_000, 1000), |_| 2.0, 2.0, 0.0));
    let out = run(&PresenceParams::default(), &sightings, 400_000);
    assert_eq!(
        kinds(&out)
            .into_iter()
            .filter(|k| *k != SightingKind::Stay)
            .collect::<Vec<_>>(),
        [
            SightingKind::Enter,
            SightingKind::Exit,
            SightingKind::Enter,
            SightingKind::Exit
        ]
    );
}

#[test]
fn absent_beacons_are_forgotten() {
    let mut engine = PresenceEngine::new(&PresenceParams::default());
    let mut out = Vec::new();
    for i in 0..100u16 {
        let s = Sighting {
            beacon: BeaconId::Line {
                hwid: [0, 0, 0, (i >> 8) as u8, i as u8],
            },
            rssi: -95.0,
            measured_power_1m: None,
            at_ms: 0,
        };
        engine.observe(&s, &mut out);
    }
    assert_eq!(engine.tracked(), 100);
    engine.advance(31_000, &mut out);
    assert_eq!(engine.tracked(), 0);
    assert!(out.is_empty());
}

proptest! {
    /// Whatever the sightings, transitions alternate enter → (stay)* → exit per beacon, in
    /// time order, and the engine never panics.
    #[test]
    fn transitions_are_well_formed(
        steps in proptest::collection::vec((0i64..20_000, -120.0f64..0.0, 0u8..3), 1..200),
        smoothing in prop::sample::select(vec![Smoothing::Kalman, Smoothing::Ema]),
    ) {
        let params = PresenceParams { smoothing, enter_min_s: 2.0, stay_interval_s: 5, ..PresenceParams::default() };
        let mut engine = PresenceEngine::new(&params);
        let mut out = Vec::new();
        let mut t = 0;
        for (dt, rssi, which) in steps {
            t += dt;
            let s = Sighting { beacon: BeaconId::Line { hwid: [which; 5] }, rssi, measured_power_1m: None, at_ms: t };
            engine.observe(&s, &mut out);
            if dt % 3 == 0 { engine.advance(t + dt, &mut out); }
        }
        let before = out.len();
        engine.advance(t + 1_000_000, &mut out);
        prop_assert!(out[before..].windows(2).all(|w| w[0].at_ms <= w[1].at_ms), "advance emits in time order");
        for which in 0..3u8 {
            let id = BeaconId::Line { hwid: [which; 5] };
            let mine: Vec<_> = out.iter().filter(|x| x.beacon == id).collect();
            let mut present = false;
            for w in mine.windows(2) { prop_assert!(w[0].at_ms <= w[1].at_ms); }
            for x in &mine {
                match x.kind {
                    SightingKind::Enter => { prop_assert!(!present); present = true; }
                    SightingKind::Stay => prop_assert!(present),
                    SightingKind::Exit => { prop_assert!(present); present = false; }
                }
                prop_assert!(x.rssi.is_finite() && x.distance_m.is_finite() && x.seen_s >= 0.0);
            }
            prop_assert!(!present, "everyone has left at the end");
        }
        prop_assert_eq!(engine.tracked(), 0);
    }
}
