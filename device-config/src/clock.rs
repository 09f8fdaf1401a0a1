//! The one clock every binary reads (DESIGN.md, "One clock for every binary"):
//! `--clock START@SPEED` runs time from START at SPEED times the wall clock, so a store day
//! replays in a minute; the default is the wall clock. Tests use a manual clock they advance.
//! Only network timeouts stay on wall time; everything else asks this clock.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// A cheap-to-clone handle to the process's clock.
#[derive(Clone)]
/// The second field is a deliberate offset in milliseconds (see [`Clock::skewed`]).
pub struct Clock(Arc<Source>, i64);

enum Source {
    Wall,
    Scaled {
        start: DateTime<Utc>,
        speed: f64,
        origin: Instant,
    },
    /// START at a shared wall-clock ORIGIN: every process given the same value agrees,
    /// however late it starts (restarts included).
    Anchored {
        start: DateTime<Utc>,
        speed: f64,
        origin: DateTime<Utc>,
    },
    Manual(Mutex<DateTime<Utc>>),
}

impl Clock {
    /// The system's wall clock at ×1.
    pub fn wall() -> Clock {
        Clock(Arc::new(Source::Wall), 0)
    }

    /// Starts at `start` now and runs `speed` times faster than the wall clock.
    pub fn scaled(start: DateTime<Utc>, speed: f64) -> Result<Clock, ClockSpecError> {
        if !(speed.is_finite() && speed > 0.0) {
            return Err(ClockSpecError::Speed(speed.to_string()));
        }
        Ok(Clock(
            Arc::new(Source::Scaled {
                start,
                speed,
                origin: Instant::now(),
            }),
            0,
        ))
    }

    /// A clock that moves only when [`Clock::advance`] or [`Clock::set`] is called.
    pub fn manual(start: DateTime<Utc>) -> Clock {
        Clock(Arc::new(Source::Manual(Mutex::new(start))), 0)
    }

    /// Builds the clock a `--clock` value describes.
    pub fn from_spec(spec: &ClockSpec) -> Clock {
        match *spec {
            ClockSpec::Wall => Clock::wall(),
            ClockSpec::Scaled {
                start,
                speed,
                origin: None,
            } => Clock(
                Arc::new(Source::Scaled {
                    start,
                    speed,
                    origin: Instant::now(),
                }),
                0,
            ),
            ClockSpec::Scaled {
                start,
                speed,
                origin: Some(origin),
            } => Clock(
                Arc::new(Source::Anchored {
                    start,
                    speed,
                    origin,
                }),
                0,
            ),
        }
    }

    /// This clock moved `skew_ms` milliseconds off (ahead when positive): a gateway whose
    /// clock has drifted, for fault tests. A skewed clock says it is not synchronised.
    pub fn skewed(&self, skew_ms: i64) -> Clock {
        Clock(self.0.clone(), self.1.saturating_add(skew_ms))
    }

    /// How far this clock was deliberately moved off (see [`Clock::skewed`]), milliseconds.
    pub fn skew_ms(&self) -> i64 {
        self.1
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        let now = self.source_now();
        if self.1 == 0 {
            return now;
        }
        chrono::Duration::try_milliseconds(self.1)
            .and_then(|skew| now.checked_add_signed(skew))
            .unwrap_or(now)
    }

    fn source_now(&self) -> DateTime<Utc> {
        match &*self.0 {
            Source::Wall => Utc::now(),
            Source::Scaled {
                start,
                speed,
                origin,
            } => scale(*start, origin.elapsed().as_secs_f64(), *speed),
            Source::Anchored {
                start,
                speed,
                origin,
            } => {
                let wall = (Utc::now() - *origin).num_microseconds().unwrap_or(0) as f64 / 1e6;
                scale(*start, wall, *speed)
            }
            Source::Manual(now) => *lock(now),
        }
    }

    /// How many times faster than the wall clock this clock runs (0 for a manual clock).
    pub fn speed(&self) -> f64 {
        match &*self.0 {
            Source::Wall => 1.0,
            Source::Scaled { speed, .. } | Source::Anchored { speed, .. } => *speed,
            Source::Manual(_) => 0.0,
        }
    }

    /// The wall time to wait for `clock_time` to pass on this clock; a manual clock never
    /// passes time by itself, so callers that sleep on one get `None` and must poll it.
    pub fn wall_duration(&self, clock_time: Duration) -> Option<Duration> {
        match self.speed() {
            // A tiny speed makes the quotient overflow Duration: wait "for ever" then.
            s if s > 0.0 => Some(
                Duration::try_from_secs_f64(clock_time.as_secs_f64() / s).unwrap_or(Duration::MAX),
            ),
            _ => None,
        }
    }

    /// Moves a manual clock forward; returns false (and does nothing) on any other clock.
    pub fn advance(&self, by: Duration) -> bool {
        match &*self.0 {
            Source::Manual(now) => {
                let mut now = lock(now);
                let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
                *now = now
                    .checked_add_signed(by)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                true
            }
            _ => false,
        }
    }

    /// Sets a manual clock; returns false (and does nothing) on any other clock.
    pub fn set(&self, to: DateTime<Utc>) -> bool {
        match &*self.0 {
            Source::Manual(now) => {
                *lock(now) = to;
                true
            }
            _ => false,
        }
    }
}

/// `start` plus `wall_s` wall seconds run at `speed`.
fn scale(start: DateTime<Utc>, wall_s: f64, speed: f64) -> DateTime<Utc> {
    let nanos = (wall_s * speed * 1e9).clamp(i64::MIN as f64, i64::MAX as f64) as i64;
    start
        .checked_add_signed(chrono::Duration::nanoseconds(nanos))
        .unwrap_or(start)
}

fn lock(m: &Mutex<DateTime<Utc>>) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
    // A DateTime cannot be left half-written, so a poisoned lock still holds a valid time.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.0 {
            Source::Wall => f.write_str("Clock(wall)"),
            Source::Scaled { start, speed, .. } => write!(f, "Clock({start}@{speed})"),
            Source::Anchored {
                start,
                speed,
                origin,
            } => write!(f, "Clock({start}@{speed}@{origin})"),
            Source::Manual(now) => write!(f, "Clock(manual {})", *lock(now)),
        }
    }
}

/// A parsed `--clock` value: `wall`; `START@SPEED` (START an RFC 3339 time), which starts
/// at START when the process starts; or `START@SPEED@ORIGIN`, which reads START at the
/// wall-clock time ORIGIN (RFC 3339), so processes started at different moments — a restarted
/// gateway, say — share one timeline. Launchers of several processes pick ORIGIN once.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum ClockSpec {
    #[default]
    Wall,
    Scaled {
        start: DateTime<Utc>,
        speed: f64,
        origin: Option<DateTime<Utc>>,
    },
}

/// Why a `--clock` value is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockSpecError {
    #[error("--clock {0:?}: expected wall, START@SPEED or START@SPEED@ORIGIN (RFC 3339 times)")]
    Shape(String),
    #[error("--clock time {start:?} is not an RFC 3339 time: {reason}")]
    Start { start: String, reason: String },
    #[error("--clock speed {0:?} is not a positive number")]
    Speed(String),
}

impl FromStr for ClockSpec {
    type Err = ClockSpecError;

    fn from_str(s: &str) -> Result<ClockSpec, ClockSpecError> {
        if s == "wall" {
            return Ok(ClockSpec::Wall);
        }
        let parts: Vec<&str> = s.split('@').collect();
        let (start, speed, origin) = match parts[..] {
            [start, speed] => (start, speed, None),
            [start, speed, origin] => (start, speed, Some(origin)),
            _ => return Err(ClockSpecError::Shape(s.chars().take(80).collect())),
        };
        let speed_value: f64 = speed
            .parse()
            .map_err(|_| ClockSpecError::Speed(speed.chars().take(40).collect()))?;
        if !(speed_value.is_finite() && speed_value > 0.0) {
            return Err(ClockSpecError::Speed(speed.chars().take(40).collect()));
        }
        let time = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| ClockSpecError::Start {
                    start: t.chars().take(60).collect(),
                    reason: e.to_string(),
                })
        };
        Ok(ClockSpec::Scaled {
            start: time(start)?,
            speed: speed_value,
            origin: origin.map(time).transpose()?,
        })
    }
}

impl fmt::Display for ClockSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClockSpec::Wall => f.write_str("wall"),
            ClockSpec::Scaled {
                start,
                speed,
                origin,
            } => {
                let text =
                    |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                write!(f, "{}@{speed}", text(start))?;
                match origin {
                    Some(o) => write!(f, "@{}", text(o)),
                    None => Ok(()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn parses_specs() {
        assert_eq!("wall".parse::<ClockSpec>().unwrap(), ClockSpec::Wall);
        assert_eq!(
            "2026-11-23T09:00:00+09:00@60".parse::<ClockSpec>().unwrap(),
            ClockSpec::Scaled {
                start: t("2026-11-23T00:00:00Z"),
                speed: 60.0,
                origin: None,
            }
        );
        assert_eq!(
            "2026-11-23T09:00:00Z@60@2026-11-23T20:00:00Z"
                .parse::<ClockSpec>()
                .unwrap(),
            ClockSpec::Scaled {
                start: t("2026-11-23T09:00:00Z"),
                speed: 60.0,
                origin: Some(t("2026-11-23T20:00:00Z")),
            }
        );
        for (bad, want) in [
            ("2026-11-23T09:00:00Z", "expected wall"),
            ("2026-11-23@60", "not an RFC 3339 time"),
            ("now@60", "not an RFC 3339 time"),
            ("2026-11-23T00:00:00Z@0", "not a positive number"),
            ("2026-11-23T00:00:00Z@-2", "not a positive number"),
            ("2026-11-23T00:00:00Z@inf", "not a positive number"),
            ("2026-11-23T00:00:00Z@fast", "not a positive number"),
        ] {
            let err = bad.parse::<ClockSpec>().unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn spec_display_round_trips() {
        for s in [
            "wall",
            "2026-11-23T00:00:00Z@1440",
            "2026-11-23T09:00:00.5+09:00@0.5",
        ] {
            let spec: ClockSpec = s.parse().unwrap();
            assert_eq!(spec.to_string().parse::<ClockSpec>().unwrap(), spec);
        }
    }

    #[test]
    fn anchored_clocks_agree_whenever_they_start() {
        let origin = Utc::now() - chrono::Duration::seconds(10);
        let spec = ClockSpec::Scaled {
            start: t("2026-11-23T09:00:00Z"),
            speed: 60.0,
            origin: Some(origin),
        };
        let a = Clock::from_spec(&spec);
        std::thread::sleep(Duration::from_millis(20));
        let b = Clock::from_spec(&spec);
        let (na, nb) = (a.now(), b.now());
        // 10 s of wall time at ×60 is 10 minutes; both read the same timeline.
        assert!(
            na >= t("2026-11-23T09:10:00Z") && na < t("2026-11-23T09:11:00Z"),
            "{na}"
        );
        assert!((nb - na).num_milliseconds().abs() < 5_000, "{na} vs {nb}");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = Clock::manual(t("2026-11-23T00:00:00Z"));
        assert_eq!(c.now(), t("2026-11-23T00:00:00Z"));
        assert!(c.advance(Duration::from_secs(90)));
        assert_eq!(c.clone().now(), t("2026-11-23T00:01:30Z"));
        assert!(c.set(t("2027-01-01T00:00:00Z")));
        assert_eq!(c.now(), t("2027-01-01T00:00:00Z"));
        assert_eq!(c.wall_duration(Duration::from_secs(1)), None);
        assert!(!Clock::wall().advance(Duration::from_secs(1)));
    }

    #[test]
    fn scaled_clock_starts_at_start_and_scales_waits() {
        let start = t("2026-11-23T00:00:00Z");
        let c = Clock::scaled(start, 3600.0).unwrap();
        let now = c.now();
        assert!(now >= start, "{now}");
        assert_eq!(
            c.wall_duration(Duration::from_secs(3600)),
            Some(Duration::from_secs(1))
        );
        assert!(Clock::scaled(start, 0.0).is_err());
    }

    #[test]
    fn a_skewed_clock_reads_its_source_plus_the_skew() {
        let c = Clock::manual(t("2026-11-23T09:00:00Z"));
        let ahead = c.skewed(600_000);
        let behind = c.skewed(-600_000);
        assert_eq!(ahead.now(), t("2026-11-23T09:10:00Z"));
        assert_eq!(behind.now(), t("2026-11-23T08:50:00Z"));
        assert_eq!(
            (ahead.skew_ms(), behind.skew_ms(), c.skew_ms()),
            (600_000, -600_000, 0)
        );
        // The skewed clock shares its source: advancing one moves both.
        c.advance(Duration::from_secs(60));
        assert_eq!(ahead.now(), t("2026-11-23T09:11:00Z"));
        assert_eq!(ahead.speed(), c.speed());
        // A skew beyond what a time can hold reads the source, never panics.
        assert_eq!(c.skewed(i64::MIN).now(), c.now());
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,60}") {
            let _ = s.parse::<ClockSpec>();
        }
    }
}
