//! The overview's figures (`GET /v1/admin/overview`, and the dashboard's first page, which
//! renders the same document): events per second by source, gateways online and offline,
//! visits open now, offers delivered today per channel and the deliveries that failed or
//! expired today, and the last alerts. Reads counters and in-memory state only, so its cost
//! does not grow with customers or deliveries: one pass over the registry's gateways and at
//! most 25 hours × 3 channels × 4 outcomes counters.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use omo_device_config::Timestamp;
use serde::Serialize;

use crate::delivery::{hour_of, hourly_key};
use crate::ingest::gateways::GatewayStates;
use crate::live::{Alert, Live};
use crate::registry::Registry;
use crate::store::{Space, Store, StoreError};

/// The channels and outcomes the overview counts.
pub const CHANNELS: [&str; 3] = ["line", "push", "webhook"];
const OUTCOMES: [&str; 4] = ["delivered", "failed", "expired", "cancelled"];
/// Alerts the overview shows.
pub const ALERTS_SHOWN: usize = 20;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    /// When it was computed (the cloud's clock).
    pub at: Option<Timestamp>,
    pub events_per_s: BTreeMap<&'static str, f64>,
    pub gateways: GatewayCounts,
    pub open_visits: u64,
    pub today: Today,
    pub alerts: Vec<Alert>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GatewayCounts {
    pub total: u64,
    /// Its last heartbeat said online.
    pub online: u64,
    /// Offline by its last heartbeat (a clean stop or its last will), or never seen since the
    /// cloud started.
    pub offline: u64,
}

/// Deliveries that ended since local midnight in `[dashboard] time_zone`.
#[derive(Debug, Clone, Serialize)]
pub struct Today {
    pub time_zone: String,
    /// Local midnight.
    pub since: Option<Timestamp>,
    /// Per channel: outcome → count.
    pub channels: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    /// Offers the channels accepted, all channels.
    pub offers_delivered: u64,
    /// Deliveries that failed or expired, all channels.
    pub delivery_failures: u64,
}

/// Local midnight of `now_ms` in `tz`, as ms.
pub fn local_midnight(tz: Tz, now_ms: i64) -> i64 {
    let now = Utc
        .timestamp_millis_opt(now_ms)
        .single()
        .unwrap_or_default();
    let date = now.with_timezone(&tz).date_naive();
    date.and_hms_opt(0, 0, 0)
        .and_then(|t| tz.from_local_datetime(&t).earliest())
        .map_or(now_ms - now_ms.rem_euclid(86_400_000), |t| {
            t.timestamp_millis()
        })
}

/// Computes the overview at `now_ms` (the cloud's clock).
pub fn overview(
    store: &dyn Store,
    registry: &Registry,
    states: &GatewayStates,
    live: &Live,
    tz: Tz,
    now_ms: i64,
) -> Result<Overview, StoreError> {
    let mut gateways = GatewayCounts::default();
    for g in registry.gateways() {
        gateways.total += 1;
        if states.get(&g.record.id).is_some_and(|s| s.online) {
            gateways.online += 1;
        } else {
            gateways.offline += 1;
        }
    }
    let since = local_midnight(tz, now_ms);
    // Whole hours from the one local midnight falls in (a zone offset by a half hour counts
    // the half hour before midnight too).
    let (from, to) = (hour_of(since), hour_of(now_ms) + 3_600_000);
    let mut channels: BTreeMap<&'static str, BTreeMap<&'static str, u64>> = CHANNELS
        .iter()
        .map(|c| (*c, OUTCOMES.iter().map(|o| (*o, 0)).collect()))
        .collect();
    let rows = store.scan_range(
        Space::Campaigns,
        hourly_key(from, "", "").trim_end_matches('/').as_bytes(),
        hourly_key(to, "", "").trim_end_matches('/').as_bytes(),
        usize::MAX,
    )?;
    for (k, v) in rows {
        let key = String::from_utf8_lossy(&k);
        // hourly/{hour:016x}/[@{shard:04x}/]{channel}/{outcome}
        let rest = key.splitn(3, '/').nth(2).unwrap_or_default();
        let mut parts = crate::tallies::funnel::unsharded(rest).split('/');
        let (Some(channel), Some(outcome)) = (parts.next(), parts.next()) else {
            continue;
        };
        let n = <[u8; 8]>::try_from(v.as_slice()).map_or(0, u64::from_be_bytes);
        if let Some(count) = channels.get_mut(channel).and_then(|c| c.get_mut(outcome)) {
            *count += n;
        }
    }
    let sum = |outcomes: &[&str]| -> u64 {
        channels
            .values()
            .flat_map(|c| outcomes.iter().filter_map(|o| c.get(o)))
            .sum()
    };
    let today = Today {
        time_zone: tz.name().to_owned(),
        since: Timestamp::from_millis(since),
        offers_delivered: sum(&["delivered"]),
        delivery_failures: sum(&["failed", "expired"]),
        channels,
    };
    Ok(Overview {
        at: Timestamp::from_millis(now_ms),
        events_per_s: live.events_per_s(),
        gateways,
        open_visits: live.open_visits(),
        today,
        alerts: live.alerts(ALERTS_SHOWN),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sled_store::SledStore;
    use crate::store::Commit;
    use crate::tallies::funnel::Counts;

    #[test]
    fn today_counts_the_hours_since_local_midnight_per_channel() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path(), 1 << 20).unwrap();
        let tz: Tz = "Asia/Tokyo".parse().unwrap();
        // 2026-11-24 10:30 in Tokyo = 01:30 UTC; midnight there = 2026-11-23 15:00 UTC.
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-24T01:30:00Z")
            .unwrap()
            .timestamp_millis();
        let midnight = local_midnight(tz, now);
        assert_eq!(
            midnight,
            chrono::DateTime::parse_from_rfc3339("2026-11-23T15:00:00Z")
                .unwrap()
                .timestamp_millis()
        );
        let mut counts = Counts::default();
        for (at, channel, outcome) in [
            (midnight - 1, "line", "delivered"), // yesterday
            (midnight, "line", "delivered"),
            (now, "line", "delivered"),
            (now, "push", "failed"),
            (now, "push", "expired"),
            (now, "webhook", "cancelled"),
        ] {
            counts.add_counter(crate::delivery::keys::hourly_counter(
                hour_of(at),
                channel,
                outcome,
            ));
        }
        let mut c = Commit::new();
        counts.write(&store, &mut c).unwrap();
        // Another instance's worker's shard adds up.
        let mut counts = Counts::in_shard(9);
        counts.add_counter(crate::delivery::keys::hourly_counter(
            hour_of(now),
            "line",
            "delivered",
        ));
        counts.write(&store, &mut c).unwrap();
        store.commit(c).unwrap();
        let registry = Registry::default();
        let o = overview(
            &store,
            &registry,
            &GatewayStates::default(),
            &Live::new(),
            tz,
            now,
        )
        .unwrap();
        assert_eq!(o.today.channels["line"]["delivered"], 3);
        assert_eq!(o.today.channels["push"]["failed"], 1);
        assert_eq!(o.today.offers_delivered, 3);
        assert_eq!(o.today.delivery_failures, 2);
        assert_eq!(o.gateways.total, 0);
    }
}
