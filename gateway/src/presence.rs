//! The presence engine: per beacon id, turns timestamped sightings into `enter`, `stay` and
//! `exit` transitions with hysteresis, so walk-bys and RSSI noise stay off the wire.
//!
//! - **enter** when the smoothed RSSI has stayed at or above `enter_rssi_dbm` for
//!   `enter_min_s` (a shopper walking past the door for a few seconds never enters);
//! - **stay** every `stay_interval_s` after enter, with the dwell so far;
//! - **exit** when nothing is heard for `exit_timeout_s`, or the smoothed RSSI stays below
//!   `exit_rssi_dbm` (at least 3 dB under the enter threshold) for `exit_below_s`.
//!
//! Pure: time comes only from the sightings and from [`PresenceEngine::advance`], so replays and
//! tests are deterministic. Transitions carry the time they happened, which for timeouts is the
//! moment the timeout expired, not the moment `advance` noticed it.

use std::collections::HashMap;

use omo_device_config::params::PresenceParams;
use omo_device_config::payload::SightingKind;
use omo_device_config::BeaconId;

use crate::rssi::{distance_m, RssiFilter, Smoother};

/// One reception of a beacon frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sighting {
    pub beacon: BeaconId,
    /// Received signal strength, dBm.
    pub rssi: f64,
    /// Power at 1 m the frame announced, if any.
    pub measured_power_1m: Option<f64>,
    /// When it was heard, milliseconds since the Unix epoch (the process clock).
    pub at_ms: i64,
}

/// A presence transition to report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub kind: SightingKind,
    pub beacon: BeaconId,
    pub at_ms: i64,
    /// Smoothed RSSI at the transition, dBm.
    pub rssi: f64,
    pub distance_m: f64,
    /// 0 at enter; dwell since enter at stay and exit (at exit: until last heard).
    pub seen_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Not present; also the state of a track about to be forgotten.
    Absent,
    /// Above the enter threshold since `since_ms`, not yet long enough.
    Candidate { since_ms: i64 },
    Present {
        entered_ms: i64,
        next_stay_ms: i64,
        /// Below the exit threshold since then, if it is.
        below_since_ms: Option<i64>,
    },
}

#[derive(Debug, Clone)]
struct Track {
    filter: RssiFilter,
    phase: Phase,
    last_seen_ms: i64,
    measured_power: f64,
}

/// Timing and thresholds in the units the engine uses.
#[derive(Debug, Clone, Copy)]
struct Rules {
    smoother: Smoother,
    enter_rssi: f64,
    enter_min_ms: i64,
    exit_rssi: f64,
    exit_below_ms: i64,
    timeout_ms: i64,
    stay_ms: i64,
    exponent: f64,
    default_power: f64,
}

impl Rules {
    fn new(p: &PresenceParams) -> Rules {
        let ms = |s: f64| (s * 1000.0).round() as i64;
        Rules {
            smoother: Smoother::from_params(p),
            enter_rssi: p.enter_rssi_dbm,
            enter_min_ms: ms(p.enter_min_s),
            exit_rssi: p.exit_rssi_dbm,
            exit_below_ms: ms(p.exit_below_s),
            timeout_ms: ms(p.exit_timeout_s),
            stay_ms: i64::from(p.stay_interval_s.max(1)) * 1000,
            exponent: p.path_loss_exponent,
            default_power: p.default_measured_power_dbm,
        }
    }
}

/// Presence state for every beacon a gateway hears.
#[derive(Debug, Clone)]
pub struct PresenceEngine {
    rules: Rules,
    tracks: HashMap<BeaconId, Track>,
    /// The latest time seen; a sighting stamped earlier is taken as happening now, so time
    /// never runs backwards inside the engine.
    now_ms: i64,
}

impl PresenceEngine {
    /// An engine with validated parameters (see `PresenceParams::validate`).
    pub fn new(params: &PresenceParams) -> PresenceEngine {
        PresenceEngine {
            rules: Rules::new(params),
            tracks: HashMap::new(),
            now_ms: i64::MIN,
        }
    }

    /// Applies new parameters without forgetting who is present.
    pub fn set_params(&mut self, params: &PresenceParams) {
        self.rules = Rules::new(params);
    }

    /// Feeds one sighting; transitions it causes (including timeouts that expired before it)
    /// are appended to `out` in time order.
    pub fn observe(&mut self, s: &Sighting, out: &mut Vec<Transition>) {
        let rules = self.rules;
        self.now_ms = self.now_ms.max(s.at_ms);
        let at = self.now_ms;
        let (track, level) = self.smoothed(s, at, out);
        step(&rules, s.beacon, track, level, at, out);
    }

    /// The sighting's beacon's track, brought to `at` (emitting what fell due before it), and
    /// the smoothed signal level with this sighting in it.
    fn smoothed(&mut self, s: &Sighting, at: i64, out: &mut Vec<Transition>) -> (&mut Track, f64) {
        let rules = self.rules;
        let mut created = false;
        let track = self.tracks.entry(s.beacon).or_insert_with(|| {
            created = true;
            Track {
                filter: RssiFilter::new(rules.smoother, s.rssi, at),
                phase: Phase::Absent,
                last_seen_ms: at,
                measured_power: s.measured_power_1m.unwrap_or(rules.default_power),
            }
        });
        advance_track(&rules, &s.beacon, track, at, out);
        if let Some(p) = s.measured_power_1m {
            track.measured_power = p;
        }
        // A beacon back after a timeout starts a new presence with a fresh filter.
        let stale = track.phase == Phase::Absent && at - track.last_seen_ms >= rules.timeout_ms;
        let level = if created {
            s.rssi
        } else if stale {
            track.filter = RssiFilter::new(rules.smoother, s.rssi, at);
            s.rssi
        } else {
            track.filter.update(rules.smoother, s.rssi, at)
        };
        track.last_seen_ms = at;
        (track, level)
    }
}

/// Moves `beacon`'s track one step on a sighting at `at` whose smoothed level is `level`:
/// a candidate enters once it has stayed above the enter level long enough, a present beacon
/// exits once it has stayed below the exit level long enough.
fn step(
    rules: &Rules,
    beacon: BeaconId,
    track: &mut Track,
    level: f64,
    at: i64,
    out: &mut Vec<Transition>,
) {
    let power = track.measured_power;
    let emit = |kind, at_ms, seen_s, out: &mut Vec<Transition>| {
        out.push(Transition {
            kind,
            beacon,
            at_ms,
            rssi: level,
            distance_m: distance_m(level, power, rules.exponent),
            seen_s,
        })
    };
    match track.phase {
        Phase::Absent | Phase::Candidate { .. } if level < rules.enter_rssi => {
            track.phase = Phase::Absent;
        }
        Phase::Absent | Phase::Candidate { .. } => {
            let since_ms = match track.phase {
                Phase::Candidate { since_ms } => since_ms,
                _ => at,
            };
            if at - since_ms >= rules.enter_min_ms {
                emit(SightingKind::Enter, at, 0.0, out);
                track.phase = Phase::Present {
                    entered_ms: at,
                    next_stay_ms: at + rules.stay_ms,
                    below_since_ms: None,
                };
            } else {
                track.phase = Phase::Candidate { since_ms };
            }
        }
        Phase::Present {
            entered_ms,
            next_stay_ms,
            below_since_ms,
        } => {
            let below_since_ms = (level < rules.exit_rssi).then(|| below_since_ms.unwrap_or(at));
            match below_since_ms {
                Some(since) if at - since >= rules.exit_below_ms => {
                    emit(SightingKind::Exit, at, secs(since - entered_ms), out);
                    track.phase = Phase::Absent;
                }
                _ => {
                    track.phase = Phase::Present {
                        entered_ms,
                        next_stay_ms,
                        below_since_ms,
                    }
                }
            }
        }
    }
}

impl PresenceEngine {
    /// Moves time to `now_ms` with no new sightings: emits the stays and exits that fall due,
    /// ordered by time then beacon id (so a replay numbers them the same way), and forgets
    /// beacons that are absent and timed out (bounding memory to what is in range).
    pub fn advance(&mut self, now_ms: i64, out: &mut Vec<Transition>) {
        let rules = self.rules;
        self.now_ms = self.now_ms.max(now_ms);
        let now_ms = self.now_ms;
        let start = out.len();
        self.tracks.retain(|beacon, track| {
            advance_track(&rules, beacon, track, now_ms, out);
            !(track.phase == Phase::Absent && now_ms - track.last_seen_ms >= rules.timeout_ms)
        });
        out[start..].sort_by_key(|t| (t.at_ms, t.beacon));
    }

    /// Beacons present now.
    pub fn present(&self) -> impl Iterator<Item = &BeaconId> {
        self.tracks
            .iter()
            .filter(|(_, t)| matches!(t.phase, Phase::Present { .. }))
            .map(|(b, _)| b)
    }

    /// Beacons being tracked (present, candidates, or recently heard).
    pub fn tracked(&self) -> usize {
        self.tracks.len()
    }
}

fn secs(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

/// Emits what falls due on one track up to `now_ms`, in time order.
fn advance_track(
    rules: &Rules,
    beacon: &BeaconId,
    track: &mut Track,
    now_ms: i64,
    out: &mut Vec<Transition>,
) {
    let level = track.filter.level();
    let transition = |kind, at_ms, seen_s| Transition {
        kind,
        beacon: *beacon,
        at_ms,
        rssi: level,
        distance_m: distance_m(level, track.measured_power, rules.exponent),
        seen_s,
    };
    loop {
        match track.phase {
            Phase::Absent => return,
            Phase::Candidate { .. } => {
                if now_ms - track.last_seen_ms >= rules.timeout_ms {
                    track.phase = Phase::Absent;
                }
                return;
            }
            Phase::Present {
                entered_ms,
                next_stay_ms,
                below_since_ms,
            } => {
                let timeout_at = track.last_seen_ms + rules.timeout_ms;
                let below_at = below_since_ms.map(|b| b + rules.exit_below_ms);
                let (exit_at, dwell_end) = match below_at {
                    Some(b) if b < timeout_at => (b, below_since_ms.unwrap_or(b)),
                    _ => (timeout_at, track.last_seen_ms),
                };
                if exit_at <= now_ms && exit_at <= next_stay_ms {
                    out.push(transition(
                        SightingKind::Exit,
                        exit_at,
                        secs(dwell_end - entered_ms),
                    ));
                    track.phase = Phase::Absent;
                    return;
                }
                if next_stay_ms > now_ms {
                    return;
                }
                out.push(transition(
                    SightingKind::Stay,
                    next_stay_ms,
                    secs(next_stay_ms - entered_ms),
                ));
                track.phase = Phase::Present {
                    entered_ms,
                    next_stay_ms: next_stay_ms + rules.stay_ms,
                    below_since_ms,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests;
