//! The replay source: JSON Lines of sightings, one per line —
//! `{"ts":"2026-11-23T10:00:00.250Z","addr":"AA:BB:CC:DD:EE:FF","rssi":-67,"adv":"0201…"}` —
//! from a file or stdin. It is how simulators drive real gateways and how end-to-end tests run
//! without a Bluetooth adapter.
//!
//! Replay is paced by the file's `ts` at the speed of the process clock (`--clock`) and each
//! advert is stamped with that clock, not with the file's `ts`. A malformed line is reported
//! with its line number and skipped; the rest goes on.

use serde::Deserialize;

use super::{parse_addr, Advert};
use crate::decode_cli::parse_hex;

#[derive(Deserialize)]
struct Line {
    ts: omo_device_config::Timestamp,
    addr: String,
    rssi: i16,
    adv: String,
}

/// One replay record: the file's time, and the advert (its `at_ms` still the file's time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub file_ts_ms: i64,
    pub advert: Advert,
}

/// A malformed replay line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replay line {line}: {reason}")]
pub struct ReplayError {
    pub line: u64,
    pub reason: String,
}

/// Parses line number `line` of a replay file.
pub fn parse_line(text: &str, line: u64) -> Result<Record, ReplayError> {
    let err = |reason: String| ReplayError { line, reason };
    let de = &mut serde_json::Deserializer::from_str(text.trim());
    let l: Line = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        err(if path == "." || path == "?" {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        })
    })?;
    let addr = parse_addr(&l.addr).ok_or_else(|| {
        err(format!(
            "addr {:?} is not an address like AA:BB:CC:DD:EE:FF",
            l.addr
        ))
    })?;
    if !(-127..=20).contains(&l.rssi) {
        return Err(err(format!("rssi {} is not in -127..=20", l.rssi)));
    }
    let data = parse_hex(l.adv.as_bytes()).map_err(|e| err(format!("adv: {e}")))?;
    Ok(Record {
        file_ts_ms: l.ts.millis(),
        advert: Advert {
            addr,
            rssi: l.rssi,
            data,
            at_ms: l.ts.millis(),
        },
    })
}

/// Maps the file's timeline onto the process clock: the first record plays at the clock's
/// time when replay started, each later one `ts - first ts` clock-milliseconds after it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pacer {
    origin: Option<(i64, i64)>,
}

/// A record more than this far from where the timeline expects it (an hour) re-anchors the
/// timeline instead of stalling the replay for days or rushing it.
pub const MAX_JUMP_MS: i64 = 3_600_000;

impl Pacer {
    /// The clock time (ms) at which a record with file time `file_ts_ms` is due, given the
    /// clock reads `now_ms`, and whether the timeline had to be re-anchored at this record.
    /// Records slightly out of order are due at once.
    pub fn due_at(&mut self, file_ts_ms: i64, now_ms: i64) -> (i64, bool) {
        let (file0, clock0) = *self.origin.get_or_insert((file_ts_ms, now_ms));
        let due = clock0.saturating_add(file_ts_ms.saturating_sub(file0).max(0));
        let behind = file_ts_ms.saturating_sub(file0) < -MAX_JUMP_MS;
        if due.saturating_sub(now_ms) > MAX_JUMP_MS || behind {
            self.origin = Some((file_ts_ms, now_ms));
            return (now_ms, true);
        }
        (due, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINE: &str =
        r#"{"ts":"2026-11-23T10:00:00.250Z","addr":"aa:bb:cc:dd:ee:ff","rssi":-67,"adv":"020106"}"#;

    #[test]
    fn parses_a_line() {
        let r = parse_line(LINE, 1).unwrap();
        assert_eq!(r.advert.addr, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
        assert_eq!(
            (r.advert.rssi, r.advert.data.as_slice()),
            (-67, &[2u8, 1, 6][..])
        );
        assert_eq!(r.file_ts_ms, 1_795_428_000_250);
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_field() {
        let cases = [
            ("{", "replay line 7: EOF while parsing"),
            (
                r#"{"ts":"2026-11-23T10:00:00Z","addr":"x","rssi":-60,"adv":""}"#,
                "replay line 7: addr \"x\" is not an address",
            ),
            (
                r#"{"ts":"2026-11-23T10:00:00Z","addr":"aa:bb:cc:dd:ee:ff","rssi":-60,"adv":"0g"}"#,
                "replay line 7: adv: 'g' at character 1 (byte 0)",
            ),
            (
                r#"{"ts":"yesterday","addr":"aa:bb:cc:dd:ee:ff","rssi":-60,"adv":""}"#,
                "replay line 7: ts: \"yesterday\" is not an RFC 3339 time",
            ),
            (
                r#"{"ts":"2026-11-23T10:00:00Z","addr":"aa:bb:cc:dd:ee:ff","adv":""}"#,
                "replay line 7: missing field `rssi`",
            ),
            (
                r#"{"ts":"2026-11-23T10:00:00Z","addr":"aa:bb:cc:dd:ee:ff","rssi":60,"adv":""}"#,
                "replay line 7: rssi 60 is not in -127..=20",
            ),
        ];
        for (text, want) in cases {
            let got = parse_line(text, 7).unwrap_err().to_string();
            assert!(got.starts_with(want), "{text}\n got {got}\nwant {want}");
        }
    }

    #[test]
    fn pacer_keeps_the_files_spacing_on_the_clock() {
        let mut p = Pacer::default();
        assert_eq!(p.due_at(10_000, 500), (500, false));
        assert_eq!(p.due_at(12_500, 900), (3_000, false));
        assert_eq!(
            p.due_at(9_000, 4_000),
            (500, false),
            "out of order: due at once"
        );
        // A record a day ahead re-anchors rather than stalling the replay for a day.
        assert_eq!(p.due_at(86_400_000, 5_000), (5_000, true));
        assert_eq!(p.due_at(86_401_000, 5_000), (6_000, false));
        // A record from long ago re-anchors too.
        assert_eq!(p.due_at(0, 7_000), (7_000, true));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = parse_line(&s, 1);
        }
    }
}
