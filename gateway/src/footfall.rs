//! Footfall: how many distinct devices were in range during each minute, counted from every
//! advertisement heard (beacon or not). Addresses stay in memory for the current minute only
//! and never leave the gateway; only the count is published, as a `footfall` event.

use std::collections::HashSet;

/// Minimum RSSI for a device to count as "in range" is the filter's business; this counts
/// whatever it is given.
#[derive(Debug, Default)]
pub struct FootfallCounter {
    minute_ms: Option<i64>,
    seen: HashSet<[u8; 6]>,
    /// The last minute reported: a late advert never reopens it (one event per minute).
    closed_ms: Option<i64>,
}

const MINUTE_MS: i64 = 60_000;

fn minute_of(at_ms: i64) -> i64 {
    at_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

impl FootfallCounter {
    /// Counts `addr` in the minute of `at_ms`; returns the finished previous minute
    /// (start ms, devices) when this advert opens a new one.
    pub fn observe(&mut self, addr: [u8; 6], at_ms: i64) -> Option<(i64, u32)> {
        let done = self.roll(at_ms);
        let earliest = self.closed_ms.map_or(i64::MIN, |c| c + MINUTE_MS);
        self.minute_ms.get_or_insert(minute_of(at_ms).max(earliest));
        self.seen.insert(addr);
        done
    }

    /// Closes the current minute if `now_ms` is past it: returns (start ms, devices).
    pub fn roll(&mut self, now_ms: i64) -> Option<(i64, u32)> {
        let start = self.minute_ms?;
        if minute_of(now_ms) <= start {
            return None;
        }
        let devices = u32::try_from(self.seen.len()).unwrap_or(u32::MAX);
        self.seen.clear();
        self.minute_ms = None;
        self.closed_ms = Some(start);
        Some((start, devices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_distinct_devices_per_minute() {
        let mut f = FootfallCounter::default();
        assert_eq!(f.observe([1; 6], 60_000), None);
        assert_eq!(f.observe([1; 6], 70_000), None);
        assert_eq!(f.observe([2; 6], 119_999), None);
        assert_eq!(f.observe([3; 6], 120_000), Some((60_000, 2)));
        assert_eq!(f.roll(150_000), None);
        assert_eq!(f.roll(180_000), Some((120_000, 1)));
        assert_eq!(f.roll(999_999), None, "an empty minute is not reported");
    }

    #[test]
    fn a_late_advert_does_not_reopen_a_reported_minute() {
        let mut f = FootfallCounter::default();
        f.observe([1; 6], 60_000);
        assert_eq!(f.roll(120_500), Some((60_000, 1)));
        assert_eq!(
            f.observe([2; 6], 119_000),
            None,
            "late: counted in the next minute"
        );
        assert_eq!(f.roll(180_000), Some((120_000, 1)));
    }
}
